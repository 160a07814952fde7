//! The expert cache: mixture-of-experts layers streamed expert by expert.
//!
//! A mixture-of-experts layer stacks its experts in `*_exps` tensors; a token uses only the K
//! experts its router picks. The layer slots hold the dense parts ([`super::DenseLayout`]);
//! the experts live in *expert slots*, each holding one expert of one layer: its slices of all
//! that layer's expert tensors, one aligned read per slice, placed one after another at
//! [`READ_ALIGN`]-aligned offsets (see [`expert_reads`]), so O_DIRECT reads go straight from the
//! device into the slot. [`LayerCache::experts`](super::LayerCache::experts) pins the experts a
//! token was routed to, reading the missing ones with `io_threads` reads in flight.
//!
//! # Protocol
//! The expert slots follow the layer slots' protocol ([`Status`]), under the same mutex:
//!
//! - **Claim**: a call takes, under the mutex and all at once, a pin on each wanted expert
//!   that is `Ready` and a victim slot (`Empty`, or `Ready` with no pins) for each missing one,
//!   set to `Loading`. If a wanted expert is `Loading` (another call reads it), or there are
//!   not enough victims, it takes nothing and waits on the condvar — never holding pins while
//!   it waits, so two calls cannot each hold what the other waits for.
//! - **Write**: a `Loading` slot's bytes are written only by the call that claimed it (and its
//!   scoped reader threads, each writing disjoint pieces, joined before the call takes the
//!   mutex again to publish). A `Loading` slot has no pins, so no [`ExpertSet`] covers it.
//! - **Read**: an expert slot's bytes are read only through an [`ExpertSet`] pinning it, made
//!   while it is `Ready`; a pinned slot is never picked as a victim, so its bytes do not change
//!   until the last pin drops (under the mutex).
//! - **Happens-before**: as for layers: writes → join → mutex (Ready) → mutex (pin) → reads;
//!   reads → mutex (unpin) → mutex (claim) → next writes.
//!
//! # Policy
//! Victims are the unpinned slots ranked by [`ExpertPolicy`]: LRU (oldest use first) or LFU
//! (fewest uses first, counts halved every [`AGING`] × experts-in-the-model uses, ties by age).
//! Empty slots go first. The counts are kept for every expert of the model, resident or not,
//! so an expert evicted and asked for again keeps its history. [`Replacement`] holds that
//! state; the simulation in the tests runs the same ranking over a synthetic routing trace.

use std::sync::Arc;

use strata_gguf::Gguf;

use super::{populate_range, release_range, Memory, Shared, State, Status, TensorView};
use crate::clock::Clock;
use crate::config::ExpertPolicy;
use crate::layer_map::{LayerInfo, LayerMap, ReadRange};
use crate::storage::PIECE;
use crate::{Error, READ_ALIGN};

/// LFU aging: every `AGING` × (experts in the model) uses, every count is halved.
pub(crate) const AGING: u64 = 16;

/// The aligned reads of expert `e` of layer `info`, one per expert tensor (in
/// `info.experts` order), with the offset in the expert slot each read starts at; the last
/// item's end is the expert's footprint.
pub(super) fn expert_reads(
    info: &LayerInfo,
    e: usize,
    file_len: u64,
) -> impl Iterator<Item = (ReadRange, u64)> + '_ {
    info.experts.iter().scan(0u64, move |at, t| {
        let r = ReadRange::covering(&t.expert_range(e), file_len);
        let here = *at;
        *at += r.footprint();
        Some((r, here))
    })
}

/// What the budget split needs to know of a model's experts.
pub(super) struct ExpertsPlan {
    /// K: experts routed per token and layer (0 without experts).
    pub used: usize,
    /// Size of one expert slot: the largest expert footprint of the model.
    pub slot_bytes: u64,
    /// Experts in the model (all layers).
    pub total: usize,
}

impl ExpertsPlan {
    /// K from `<general.architecture>.expert_used_count`, and the expert slot size. A model
    /// without expert tensors needs neither key.
    pub fn new(gguf: &Gguf, map: &LayerMap, file_len: u64) -> Result<ExpertsPlan, Error> {
        if !map.has_experts() {
            return Ok(ExpertsPlan {
                used: 0,
                slot_bytes: 0,
                total: 0,
            });
        }
        let md = gguf.metadata();
        let arch = md.get_str("general.architecture")?;
        let key = format!("{arch}.expert_used_count");
        let used = md.get_u64(&key)?;
        let fewest = map
            .layers()
            .iter()
            .map(LayerInfo::n_experts)
            .filter(|&n| n > 0)
            .min()
            .unwrap_or(0);
        let used = usize::try_from(used)
            .ok()
            .filter(|&k| k >= 1 && k <= fewest)
            .ok_or_else(|| {
                Error::Layout(format!(
                    "metadata `{key}` = {used}: must be 1..={fewest} (the fewest experts of a \
                     layer)"
                ))
            })?;
        let mut slot_bytes = 0;
        let mut total = 0;
        for info in map.layers() {
            for e in 0..info.n_experts() {
                let end = expert_reads(info, e, file_len)
                    .last()
                    .map_or(0, |(r, at)| at + r.footprint());
                slot_bytes = slot_bytes.max(end);
            }
            total += info.n_experts();
        }
        Ok(ExpertsPlan {
            used,
            slot_bytes,
            total,
        })
    }
}

/// The replacement state of an expert cache: use counts (LFU) per expert of the model.
#[derive(Debug, Clone)]
pub(crate) struct Replacement {
    policy: ExpertPolicy,
    /// Uses per expert (flat index), halved every `period` uses (LFU only).
    counts: Vec<u32>,
    uses: u64,
    period: u64,
}

impl Replacement {
    /// For `n_keys` experts in all.
    pub fn new(policy: ExpertPolicy, n_keys: usize) -> Replacement {
        Replacement {
            policy,
            counts: vec![0; n_keys],
            uses: 0,
            period: AGING * n_keys.max(1) as u64,
        }
    }

    /// Record a use of expert `key`.
    pub fn touch(&mut self, key: usize) {
        if self.policy != ExpertPolicy::Lfu {
            return;
        }
        self.counts[key] = self.counts[key].saturating_add(1);
        self.uses += 1;
        if self.uses >= self.period {
            self.uses = 0;
            for c in &mut self.counts {
                *c /= 2;
            }
        }
    }

    /// Eviction rank of a slot holding `key` (`None`: empty), last used at `last_use`: the
    /// smallest rank is evicted first.
    pub fn rank(&self, key: Option<usize>, last_use: u64) -> (u8, u32, u64) {
        match key {
            None => (0, 0, 0),
            Some(k) => match self.policy {
                ExpertPolicy::Lfu => (1, self.counts[k], last_use),
                ExpertPolicy::Lru => (1, 0, last_use),
            },
        }
    }

    /// The `m` slots of smallest rank among `candidates` (slot, rank), or `None` if fewer.
    pub fn victims(mut candidates: Vec<(usize, (u8, u32, u64))>, m: usize) -> Option<Vec<usize>> {
        if candidates.len() < m {
            return None;
        }
        if m > 0 && m < candidates.len() {
            candidates.select_nth_unstable_by_key(m - 1, |&(_, r)| r);
        }
        Some(candidates[..m].iter().map(|&(s, _)| s).collect())
    }
}

/// A load claimed by `try_claim`: `expert` into `slot`, which held `evicted` (layer, expert).
#[derive(Debug, Clone, Copy)]
struct Load {
    expert: usize,
    slot: usize,
    evicted: Option<(usize, usize)>,
}

/// Pinned experts: (expert id, slot).
type Pins = Vec<(usize, usize)>;

/// A failed piece: (job index, error).
type PieceError = (usize, Error);

/// One expert slot's entry (behind the cache's mutex). `pins > 0` only while `Ready`.
#[derive(Debug)]
struct ExpertSlot {
    /// (layer, expert) loaded or being loaded here.
    key: Option<(usize, usize)>,
    status: Status,
    pins: usize,
    last_use: u64,
    /// Bytes counted as resident for this slot.
    bytes: u64,
}

/// The expert slot table, part of the cache's [`State`].
pub(super) struct ExpertState {
    slots: Vec<ExpertSlot>,
    /// Flat index of expert 0 of each layer.
    first: Vec<usize>,
    /// Per flat expert index: its slot.
    index: Vec<Option<usize>>,
    replacement: Replacement,
    tick: u64,
}

impl ExpertState {
    /// `n_slots` empty expert slots for the experts of `map`.
    pub fn new(map: &LayerMap, n_slots: usize, policy: ExpertPolicy) -> ExpertState {
        let mut first = Vec::with_capacity(map.n_layers());
        let mut total = 0;
        for l in map.layers() {
            first.push(total);
            total += l.n_experts();
        }
        ExpertState {
            slots: (0..n_slots)
                .map(|_| ExpertSlot {
                    key: None,
                    status: Status::Empty,
                    pins: 0,
                    last_use: 0,
                    bytes: 0,
                })
                .collect(),
            first,
            index: vec![None; total],
            replacement: Replacement::new(policy, total),
            tick: 0,
        }
    }

    fn flat(&self, layer: usize, e: usize) -> usize {
        self.first[layer] + e
    }
}

/// Pinned experts of one layer: what [`LayerCache::experts`](super::LayerCache::experts)
/// returns. Cheap to clone; the experts stay resident (and their bytes unchanged) while any
/// clone lives.
#[derive(Clone)]
pub struct ExpertSet {
    inner: Arc<ExpertPins>,
}

/// The pins of an [`ExpertSet`] (the read step of the protocol): one per expert, made under
/// the mutex while its slot was Ready, dropped together under the mutex.
struct ExpertPins {
    shared: Arc<Shared>,
    layer: usize,
    /// (expert id, slot), sorted by id, ids distinct.
    pinned: Vec<(usize, usize)>,
}

impl Drop for ExpertPins {
    fn drop(&mut self) {
        if self.pinned.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        for &(_, s) in &self.pinned {
            st.experts.slots[s].pins -= 1;
        }
        drop(st);
        self.shared.cond.notify_all();
    }
}

impl std::fmt::Debug for ExpertSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertSet")
            .field("layer", &self.inner.layer)
            .field("experts", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

impl ExpertSet {
    /// The layer.
    pub fn layer(&self) -> usize {
        self.inner.layer
    }

    /// The pinned expert ids, ascending (the ids asked for, without duplicates).
    pub fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.inner.pinned.iter().map(|&(id, _)| id)
    }

    /// Expert `id`'s slice of the expert tensor `name` (short name, `ffn_up_exps.weight`):
    /// its own type, the tensor's dims without the expert dimension (`[cols, rows]`), and
    /// exactly the file's bytes of that expert. `None` if `id` is not pinned here or the layer
    /// has no such expert tensor.
    pub fn get(&self, id: usize, name: &str) -> Option<TensorView<'_>> {
        let inner = &self.inner;
        let i = inner.pinned.binary_search_by_key(&id, |&(e, _)| e).ok()?;
        let slot = inner.pinned[i].1;
        let shared = &inner.shared;
        let info = &shared.map.layers()[inner.layer];
        let ti = info.experts.iter().position(|t| t.entry.name == name)?;
        let t = &info.experts[ti];
        let len = t.expert_bytes as usize;
        let ptr = match shared.memory {
            Memory::Mapped { base } => base.wrapping_add(t.expert_range(id).start as usize),
            _ => {
                let (r, at) = expert_reads(info, id, shared.plan.file_len)
                    .nth(ti)
                    .expect("one read per expert tensor");
                assert!(
                    at + r.head + t.expert_bytes <= shared.plan.expert_bytes,
                    "an expert's reads fit its slot (the slot is the largest expert's size)"
                );
                shared
                    .memory
                    .expert_ptr(slot)
                    .wrapping_add((at + r.head) as usize) as *const u8
            }
        };
        // SAFETY: `ptr..ptr + len` is expert `id`'s slice: inside the mapping (LayerMap checked
        // the tensor lies in the file) or inside expert slot `slot` (asserted above). Read
        // step of the protocol (module docs): `self` pins `slot`, made Ready under the mutex
        // after the writes of its load, and a pinned slot is never claimed, so the bytes stay
        // unchanged while `self` lives, which bounds the returned lifetime; `Shared`, which
        // owns the memory, lives as long.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        Some(TensorView {
            name: &t.entry.name,
            ty: t.entry.ty,
            dims: t.expert_dims(),
            bytes,
        })
    }

    /// [`ExpertSet::get`], or [`Error::NoSuchTensor`] naming the layer and expert.
    pub fn tensor(&self, id: usize, name: &str) -> Result<TensorView<'_>, Error> {
        self.get(id, name).ok_or_else(|| Error::NoSuchTensor {
            name: name.to_string(),
            scope: format!(
                "expert {id} of layer {} (pinned: {self:?})",
                self.inner.layer
            ),
        })
    }
}

impl Shared {
    /// The body of [`LayerCache::experts`](super::LayerCache::experts).
    pub(super) fn experts(
        self: &Arc<Self>,
        layer: usize,
        ids: &[usize],
    ) -> Result<ExpertSet, Error> {
        let n = self.map.n_layers();
        let info = self
            .map
            .layer(layer)
            .ok_or(Error::NoSuchLayer { layer, n_layers: n })?;
        let n_experts = info.n_experts();
        let mut want: Vec<usize> = ids.to_vec();
        want.sort_unstable();
        want.dedup();
        if let Some(&expert) = want.iter().find(|&&e| e >= n_experts) {
            return Err(Error::NoSuchExpert {
                layer,
                expert,
                n_experts,
            });
        }
        if want.len() > self.plan.expert_slots {
            return Err(Error::TooManyExperts {
                layer,
                asked: want.len(),
                slots: self.plan.expert_slots,
            });
        }
        let clock = Clock::now();
        let mut st = self.lock();
        let mut waited = false;
        // Claim step: everything at once, or nothing and wait.
        let (mut set, jobs) = loop {
            match self.try_claim(&mut st, layer, &want) {
                Some(claimed) => break claimed,
                None => {
                    waited = true;
                    st = self.wait(st);
                }
            }
        };
        let ex = &mut st.experts;
        for &e in &want {
            let key = ex.flat(layer, e);
            ex.replacement.touch(key);
        }
        st.stats.expert_hits += set.len() as u64;
        st.stats.expert_loads += jobs.len() as u64;
        // Evicted experts' pages (mapping) are released outside the lock.
        let evicted: Vec<(usize, usize)> = jobs.iter().filter_map(|j| j.evicted).collect();
        drop(st);
        for (l, e) in evicted {
            self.release_expert(l, e);
        }
        if jobs.is_empty() {
            if waited {
                self.lock().stats.expert_stall += clock.elapsed();
            }
            return Ok(self.expert_set(layer, set));
        }
        let read_clock = Clock::now();
        let results = self.read_experts(layer, &jobs);
        let read_time = read_clock.elapsed();
        let mut st = self.lock();
        st.stats.read_time += read_time;
        let mut first_error = None;
        for (
            &Load {
                expert: e, slot: s, ..
            },
            result,
        ) in jobs.iter().zip(results)
        {
            match result {
                Ok(()) => {
                    let bytes = st.experts.slots[s].bytes;
                    st.stats.bytes_read += bytes;
                    st.stats.expert_bytes_read += bytes;
                    let slot = &mut st.experts.slots[s];
                    slot.status = Status::Ready;
                    slot.pins += 1;
                    set.push((e, s));
                }
                Err(err) => {
                    st.stats.read_errors += 1;
                    self.clear_expert(&mut st, s);
                    first_error.get_or_insert(Error::Expert {
                        layer,
                        expert: e,
                        source: Box::new(err),
                    });
                }
            }
        }
        st.stats.expert_stall += clock.elapsed();
        drop(st);
        self.cond.notify_all();
        set.sort_unstable();
        // On an error the pins taken are dropped with `set` (the experts read stay resident).
        let set = self.expert_set(layer, set);
        match first_error {
            Some(e) => Err(e),
            None => Ok(set),
        }
    }

    fn expert_set(self: &Arc<Self>, layer: usize, pinned: Vec<(usize, usize)>) -> ExpertSet {
        ExpertSet {
            inner: Arc::new(ExpertPins {
                shared: self.clone(),
                layer,
                pinned,
            }),
        }
    }

    /// Under the mutex: pin the wanted experts that are Ready and claim a victim slot for each
    /// missing one — or, if one is being loaded by another call or there are too few victims,
    /// change nothing and return `None`. Returns the pins (expert, slot) and the loads
    /// (expert, slot, evicted (layer, expert)).
    fn try_claim(&self, st: &mut State, layer: usize, want: &[usize]) -> Option<(Pins, Vec<Load>)> {
        let ex = &mut st.experts;
        let mut hits = Vec::with_capacity(want.len());
        let mut misses = Vec::new();
        for &e in want {
            match ex.index[ex.flat(layer, e)] {
                Some(s) => match ex.slots[s].status {
                    Status::Ready => hits.push((e, s)),
                    Status::Loading => return None,
                    // Never left in an index entry: failed loads are cleared.
                    Status::Empty | Status::Failed => misses.push(e),
                },
                None => misses.push(e),
            }
        }
        let candidates: Vec<(usize, (u8, u32, u64))> = ex
            .slots
            .iter()
            .enumerate()
            .filter(|(s, slot)| {
                slot.pins == 0
                    && !matches!(slot.status, Status::Loading)
                    && !hits.iter().any(|&(_, h)| h == *s)
            })
            .map(|(s, slot)| {
                let key = slot.key.map(|(l, e)| ex.flat(l, e));
                (s, ex.replacement.rank(key, slot.last_use))
            })
            .collect();
        let victims = Replacement::victims(candidates, misses.len())?;
        ex.tick += 1;
        let tick = ex.tick;
        for &(_, s) in &hits {
            ex.slots[s].pins += 1;
            ex.slots[s].last_use = tick;
        }
        let mut jobs = Vec::with_capacity(misses.len());
        let mut bytes_delta: i128 = 0;
        let mut evictions = 0;
        for (&e, &s) in misses.iter().zip(&victims) {
            let bytes = self.expert_footprint(layer, e);
            let slot = &mut ex.slots[s];
            let old = slot.key.take();
            let was_ready = matches!(slot.status, Status::Ready);
            bytes_delta += i128::from(bytes) - i128::from(slot.bytes);
            *slot = ExpertSlot {
                key: Some((layer, e)),
                status: Status::Loading,
                pins: 0,
                last_use: tick,
                bytes,
            };
            if let Some((l, oe)) = old {
                let k = ex.flat(l, oe);
                ex.index[k] = None;
                if was_ready {
                    evictions += 1;
                }
            }
            let k = ex.flat(layer, e);
            ex.index[k] = Some(s);
            jobs.push(Load {
                expert: e,
                slot: s,
                evicted: old,
            });
        }
        let stats = &mut st.stats;
        stats.expert_evictions += evictions;
        stats.resident_bytes = (i128::from(stats.resident_bytes) + bytes_delta) as u64;
        stats.peak_resident_bytes = stats.peak_resident_bytes.max(stats.resident_bytes);
        Some((hits, jobs))
    }

    /// Empty expert slot `s` (after a failed load).
    fn clear_expert(&self, st: &mut State, s: usize) {
        let ex = &mut st.experts;
        let slot = &mut ex.slots[s];
        if let Some((l, e)) = slot.key.take() {
            let k = ex.first[l] + e;
            ex.index[k] = None;
        }
        st.stats.resident_bytes -= slot.bytes;
        slot.bytes = 0;
        slot.status = Status::Empty;
    }

    /// Memory accounted for expert `e` of `layer`: the bytes its reads fetch, or with the
    /// mapping, its exact bytes.
    fn expert_footprint(&self, layer: usize, e: usize) -> u64 {
        let info = &self.map.layers()[layer];
        match self.memory {
            Memory::Mapped { .. } => info.expert_bytes(),
            _ => expert_reads(info, e, self.plan.file_len)
                .map(|(r, _)| r.len)
                .sum(),
        }
    }

    /// Release the pages of an evicted expert (mapping only).
    fn release_expert(&self, layer: usize, e: usize) {
        if let Memory::Mapped { .. } = self.memory {
            for t in &self.map.layers()[layer].experts {
                release_range(self.storage.as_ref(), &t.expert_range(e));
            }
        }
    }

    /// Load step for the claimed `jobs` (expert, slot, _) of `layer`, every slot `Loading`:
    /// one result per job. Owned memory: every expert's reads cut into [`PIECE`]-sized,
    /// [`READ_ALIGN`]-aligned pieces that `io_threads` scoped threads take in turn; mapping:
    /// each slice populated.
    fn read_experts(&self, layer: usize, jobs: &[Load]) -> Vec<Result<(), Error>> {
        let info = &self.map.layers()[layer];
        let file_len = self.plan.file_len;
        if let Memory::Mapped { base } = self.memory {
            return jobs
                .iter()
                .map(|&Load { expert: e, .. }| {
                    info.experts.iter().try_for_each(|t| {
                        populate_range(self.storage.as_ref(), base, &t.expert_range(e))
                    })
                })
                .collect();
        }
        let mut results: Vec<Result<(), Error>> = jobs.iter().map(|_| Ok(())).collect();
        // (job, file offset, offset in the expert slot, length).
        let mut pieces = Vec::new();
        for (j, &Load { expert: e, .. }) in jobs.iter().enumerate() {
            for (r, at) in expert_reads(info, e, file_len) {
                if at + r.len > self.plan.expert_bytes {
                    results[j] = Err(Error::Layout(format!(
                        "a read ending at byte {} does not fit an expert slot of {} bytes",
                        at + r.len,
                        self.plan.expert_bytes
                    )));
                }
                let mut done = 0;
                while done < r.len {
                    let len = (r.len - done).min(PIECE as u64);
                    pieces.push((j, r.offset + done, at + done, len as usize));
                    done += len;
                }
            }
        }
        pieces.retain(|p| results[p.0].is_ok());
        let read = |&(j, file_at, slot_at, len): &(usize, u64, u64, usize)| {
            let s = jobs[j].slot;
            // SAFETY: `slot_at + len` lies inside expert slot `s` (every read of the job was
            // checked against the slot size above; pieces of a job with a read that does not
            // fit were dropped). Write step of the protocol (module docs): `s` was claimed
            // (Loading, no pins) by this call, so no ExpertSet covers it and no other call
            // writes it; pieces are disjoint, so no two threads write the same byte; the
            // caller publishes `s` as Ready under the mutex only after every reader thread
            // has been joined.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.memory.expert_ptr(s).add(slot_at as usize), len)
            };
            self.storage.read_at(file_at, dst).map_err(|e| (j, e))
        };
        let errors = read_pieces(&pieces, jobs.len(), self.plan.io_threads, &read);
        for (j, e) in errors {
            if results[j].is_ok() {
                results[j] = Err(e);
            }
        }
        results
    }
}

/// Run `read` on every piece with up to `threads` scoped threads taking pieces in order (one
/// thread, or the `threads` feature off: in turn here); returns the errors (job, error). A
/// panicking thread may have left pieces of any of the `n_jobs` jobs unread: then every job
/// fails. Every thread is joined before it returns.
fn read_pieces<P: Sync>(
    pieces: &[P],
    n_jobs: usize,
    threads: usize,
    read: &(dyn Fn(&P) -> Result<(), PieceError> + Sync),
) -> Vec<PieceError> {
    #[cfg(feature = "threads")]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let workers = threads.min(pieces.len());
        if workers > 1 {
            let next = AtomicUsize::new(0);
            return std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut errors = Vec::new();
                            while let Some(p) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
                                if let Err(e) = read(p) {
                                    errors.push(e);
                                }
                            }
                            errors
                        })
                    })
                    .collect();
                let mut errors = Vec::new();
                for h in handles {
                    match h.join() {
                        Ok(e) => errors.extend(e),
                        Err(_) => {
                            errors.extend((0..n_jobs).map(|j| {
                                (j, Error::Layout(String::from("a read thread panicked")))
                            }))
                        }
                    }
                }
                errors
            });
        }
    }
    let _ = (threads, n_jobs);
    pieces.iter().filter_map(|p| read(p).err()).collect()
}

// Pieces start at aligned offsets of aligned reads, so O_DIRECT alignment survives the split.
const _: () = assert!(PIECE as u64 % READ_ALIGN == 0);

#[cfg(test)]
mod tests {
    //! Expert slots over in-memory models. The concurrent ones are small enough for Miri
    //! (`cargo xtask miri` runs `cache::` tests: these are `cache::experts::tests`).

    use super::*;
    use crate::config::{Backend, Budget, CacheConfig};
    use crate::storage::{MemStorage, Storage};
    use crate::testing::{moe_model, Switched, N_EXPERT, N_USED};
    use crate::LayerCache;

    const EXPS: [&str; 3] = [
        "ffn_down_exps.weight",
        "ffn_gate_exps.weight",
        "ffn_up_exps.weight",
    ];

    fn open(bytes: &[u8], backend: Backend, budget: Budget) -> LayerCache {
        open_over(
            Arc::new(MemStorage::new(bytes.to_vec())),
            bytes,
            backend,
            budget,
        )
    }

    fn open_over(
        storage: Arc<dyn Storage>,
        bytes: &[u8],
        backend: Backend,
        budget: Budget,
    ) -> LayerCache {
        let gguf = Gguf::from_bytes(bytes).unwrap();
        let config = CacheConfig {
            backend,
            budget,
            prefetch: 1,
            io_threads: 2,
            ..CacheConfig::default()
        };
        LayerCache::open(storage, gguf, &config).unwrap()
    }

    /// Every pinned expert of `set` has the file's bytes, type and 2-D dims.
    fn check(bytes: &[u8], set: &ExpertSet) {
        let gguf = Gguf::from_bytes(bytes).unwrap();
        for id in set.ids() {
            for name in EXPS {
                let t = gguf.tensor(&format!("blk.{}.{name}", set.layer())).unwrap();
                let all = gguf.tensor_data(bytes, t).unwrap();
                let per = all.len() / N_EXPERT;
                let v = set.tensor(id, name).unwrap();
                assert_eq!(
                    v.bytes,
                    &all[id * per..(id + 1) * per],
                    "layer {} expert {id} {name}",
                    set.layer()
                );
                assert_eq!(v.dims, &t.dims[..2]);
                assert_eq!(v.ty, t.ty);
                assert_eq!(v.name, name);
            }
        }
    }

    #[test]
    fn expert_views_are_the_files_slices_and_repeats_are_hits() {
        let bytes = moe_model(3);
        for backend in [Backend::Arena, Backend::File, Backend::Mmap] {
            let cache = open(&bytes, backend, Budget::Min);
            let plan = cache.plan().clone();
            assert_eq!(plan.experts_used, N_USED);
            assert!(
                plan.expert_slots >= N_USED && plan.expert_slots < 2 * N_USED,
                "{plan:?}"
            );
            let set = cache.experts(0, &[5, 1]).unwrap();
            assert_eq!(set.ids().collect::<Vec<_>>(), [1, 5]);
            check(&bytes, &set);
            assert!(set.get(1, "ffn_gate_inp.weight").is_none());
            assert!(
                set.get(2, "ffn_up_exps.weight").is_none(),
                "expert 2 is not pinned"
            );
            assert!(matches!(
                set.tensor(2, "ffn_up_exps.weight"),
                Err(Error::NoSuchTensor { .. })
            ));
            drop(set);
            let s = cache.stats();
            assert_eq!((s.expert_hits, s.expert_loads), (0, 2), "{backend:?}");
            let again = cache.experts(0, &[1, 5, 5]).unwrap();
            check(&bytes, &again);
            let s = cache.stats();
            assert_eq!((s.expert_hits, s.expert_loads), (2, 2), "{backend:?}");
            let info = &cache.layer_map().layers()[0];
            let one = match backend {
                Backend::Mmap => info.expert_bytes(),
                _ => expert_reads(info, 1, bytes.len() as u64)
                    .map(|(r, _)| r.len)
                    .sum::<u64>(),
            };
            assert!(s.expert_bytes_read >= 2 * one - 2 * 3 * READ_ALIGN, "{s}");
            assert!(s.expert_bytes_read <= 2 * (one + 3 * READ_ALIGN), "{s}");
            assert!(
                s.summary().contains("experts: hits 2 (50.0%) | loads 2"),
                "{s}"
            );
            // Other layers evict: the dense slot of layer 1 and its experts fit the budget.
            drop(again);
            for layer in 0..3 {
                let _dense = cache.get(layer).unwrap();
                check(&bytes, &cache.experts(layer, &[layer, 7]).unwrap());
            }
            let s = cache.stats();
            assert!(s.peak_resident_bytes <= s.budget_bytes, "{s}");
            assert!(s.expert_evictions > 0, "{s}");
        }
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let bytes = moe_model(3);
        let cache = open(&bytes, Backend::Arena, Budget::Min);
        assert!(matches!(
            cache.experts(1, &[8]),
            Err(Error::NoSuchExpert {
                layer: 1,
                expert: 8,
                n_experts: 8
            })
        ));
        assert!(matches!(
            cache.experts(3, &[0]),
            Err(Error::NoSuchLayer { .. })
        ));
        let slots = cache.plan().expert_slots;
        let all: Vec<usize> = (0..N_EXPERT).collect();
        match cache.experts(0, &all) {
            Err(Error::TooManyExperts {
                layer: 0,
                asked: 8,
                slots: s,
            }) => assert_eq!(s, slots),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_minimum_counts_the_routed_experts_of_one_layer() {
        let bytes = moe_model(3);
        let min = open(&bytes, Backend::Arena, Budget::Min).plan().clone();
        let x = min.expert_bytes;
        assert!(
            (3 * 5120..=3 * (5120 + 2 * READ_ALIGN)).contains(&x),
            "{min:?}"
        );
        assert_eq!(
            min.minimum_bytes,
            min.globals_bytes + 2 * min.slot_bytes + N_USED as u64 * x
        );
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        let config = CacheConfig {
            backend: Backend::Arena,
            budget: Budget::Bytes(min.minimum_bytes - 1),
            prefetch: 1,
            ..CacheConfig::default()
        };
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.clone()));
        match LayerCache::open(storage, gguf, &config) {
            Err(Error::BudgetTooSmall {
                minimum,
                experts_used,
                expert_bytes,
                ..
            }) => {
                assert_eq!(
                    (minimum, experts_used, expert_bytes),
                    (min.minimum_bytes, 2, x)
                );
            }
            other => panic!("{other:?}"),
        }
        // Budget all: every expert of the model has a slot, the second pass only hits.
        let cache = open(&bytes, Backend::File, Budget::All);
        assert_eq!(cache.plan().expert_slots, 3 * N_EXPERT);
        for _ in 0..2 {
            for layer in 0..3 {
                for e in 0..N_EXPERT / 2 {
                    check(&bytes, &cache.experts(layer, &[2 * e, 2 * e + 1]).unwrap());
                }
            }
        }
        let s = cache.stats();
        assert_eq!(
            (s.expert_loads, s.expert_hits, s.expert_evictions),
            (24, 24, 0)
        );
        // Budgets in between: dense first, the rest to expert slots, never over the budget.
        for extra in [0, x, 5 * x, 9 * x + 7] {
            let cache = open(
                &bytes,
                Backend::Arena,
                Budget::Bytes(min.minimum_bytes + extra),
            );
            let p = cache.plan();
            let dense: u64 = p.resident_bytes + p.streaming_slots as u64 * p.stream_slot_bytes;
            assert!(
                p.globals_bytes + dense + p.expert_slots as u64 * x <= p.budget_bytes,
                "{p:?}"
            );
            assert!(p.budget_bytes - (p.globals_bytes + dense + p.expert_slots as u64 * x) < x);
        }
    }

    #[test]
    fn a_model_without_experts_plans_as_before() {
        let mut w = strata_gguf::GgufWriter::new();
        for i in 0..3 {
            w.add_tensor(
                format!("blk.{i}.w"),
                strata_gguf::GgmlType::F32,
                &[2048],
                vec![i as u8; 8192],
            )
            .unwrap();
        }
        let bytes = w.to_vec().unwrap();
        let cache = open(&bytes, Backend::Arena, Budget::Min);
        let p = cache.plan();
        assert_eq!((p.experts_used, p.expert_bytes, p.expert_slots), (0, 0, 0));
        assert_eq!(p.minimum_bytes, p.globals_bytes + 2 * p.slot_bytes);
        assert!(matches!(
            cache.experts(0, &[0]),
            Err(Error::NoSuchExpert { n_experts: 0, .. })
        ));
    }

    #[test]
    fn pinned_experts_are_not_evicted_and_a_full_cache_waits_for_a_drop() {
        let bytes = moe_model(3);
        let cache = open(&bytes, Backend::Arena, Budget::Min);
        let slots = cache.plan().expert_slots;
        // Pin every slot: layer 0's first `slots` experts.
        let ids: Vec<usize> = (0..slots).collect();
        let held = cache.experts(0, &ids).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let cache = &cache;
            let bytes = &bytes;
            s.spawn(move || {
                let other = cache.experts(1, &[6, 7]).unwrap();
                check(bytes, &other);
                tx.send(()).unwrap();
            });
            for _ in 0..20 {
                std::thread::yield_now();
            }
            // Nothing could be evicted: the waiting call has not finished, the pins are intact.
            assert!(rx.try_recv().is_err());
            check(bytes, &held);
            drop(held);
            rx.recv().unwrap();
        });
        let s = cache.stats();
        assert!(s.peak_resident_bytes <= s.budget_bytes, "{s}");
        assert_eq!(s.expert_evictions, 2);
    }

    #[test]
    fn threads_routing_to_overlapping_experts_read_exact_bytes() {
        let bytes = moe_model(3);
        let rounds = if cfg!(miri) { 2 } else { 30 };
        for backend in [Backend::Arena, Backend::File, Backend::Mmap] {
            let cache = open(&bytes, backend, Budget::Min);
            std::thread::scope(|s| {
                for t in 0..3 {
                    let (cache, bytes) = (&cache, &bytes);
                    s.spawn(move || {
                        for i in 0..rounds {
                            let layer = (t + i) % 3;
                            let a = (t * 3 + i) % N_EXPERT;
                            // Each thread pins one expert at a time, so three threads never
                            // need more than the slots there are.
                            let set = cache.experts(layer, &[a]).unwrap();
                            check(bytes, &set);
                            let dense = cache.get(layer).unwrap();
                            assert!(dense.get("attn_q.weight").is_some());
                        }
                    });
                }
            });
            let s = cache.stats();
            assert!(s.peak_resident_bytes <= s.budget_bytes, "{backend:?} {s}");
            assert_eq!(s.expert_hits + s.expert_loads, 3 * rounds as u64, "{s}");
        }
    }

    #[test]
    fn a_failed_expert_read_is_an_error_and_read_again_next_time() {
        use std::sync::atomic::Ordering::SeqCst;
        let bytes = moe_model(3);
        let storage = Arc::new(Switched {
            inner: MemStorage::new(bytes.clone()),
            failing: false.into(),
        });
        let cache = open_over(storage.clone(), &bytes, Backend::Arena, Budget::Min);
        storage.failing.store(true, SeqCst);
        match cache.experts(2, &[3, 4]) {
            Err(Error::Expert {
                layer: 2, expert, ..
            }) => assert!(expert == 3 || expert == 4),
            other => panic!("{other:?}"),
        }
        storage.failing.store(false, SeqCst);
        // Nothing stayed pinned or half-loaded: every slot can be pinned again, with good bytes.
        let slots = cache.plan().expert_slots;
        let ids: Vec<usize> = (0..slots).collect();
        check(&bytes, &cache.experts(2, &ids).unwrap());
        let s = cache.stats();
        assert!(s.read_errors >= 1, "{s}");
    }

    /// A synthetic routing trace: `layers` layers of `experts` experts, `used` routed per
    /// token and layer, expert popularity Zipf-like with exponent `skew` (expert of rank r
    /// weighs 1 / (r + 1)^skew) in a random order per layer; with `drift`, the order is drawn
    /// again halfway through (the routing changes topic).
    struct Trace {
        layers: usize,
        experts: usize,
        used: usize,
        tokens: usize,
        skew: f64,
        drift: bool,
        seed: u64,
    }

    impl Trace {
        /// Per token, per layer, the routed experts.
        fn routes(&self) -> Vec<Vec<Vec<usize>>> {
            let mut s = self.seed | 1;
            let mut rand = move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64
            };
            let weights: Vec<f64> = (0..self.experts)
                .map(|r| 1.0 / ((r + 1) as f64).powf(self.skew))
                .collect();
            let order = |rand: &mut dyn FnMut() -> f64| -> Vec<Vec<usize>> {
                (0..self.layers)
                    .map(|_| {
                        let mut o: Vec<usize> = (0..self.experts).collect();
                        for i in (1..o.len()).rev() {
                            o.swap(i, (rand() * (i + 1) as f64) as usize % (i + 1));
                        }
                        o
                    })
                    .collect()
            };
            let mut perm = order(&mut rand);
            let total: f64 = weights.iter().sum();
            (0..self.tokens)
                .map(|t| {
                    if self.drift && t == self.tokens / 2 {
                        perm = order(&mut rand);
                    }
                    (0..self.layers)
                        .map(|l| {
                            let mut picked = Vec::with_capacity(self.used);
                            while picked.len() < self.used {
                                let mut x = rand() * total;
                                let mut r = 0;
                                while r + 1 < self.experts && x >= weights[r] {
                                    x -= weights[r];
                                    r += 1;
                                }
                                let e = perm[l][r];
                                if !picked.contains(&e) {
                                    picked.push(e);
                                }
                            }
                            picked
                        })
                        .collect()
                })
                .collect()
        }
    }

    /// Expert hit rate of `policy` with `capacity` expert slots over `routes`, ranking
    /// victims exactly as `try_claim` does (the experts of the current call are never
    /// victims, empty slots go first).
    fn simulate(
        policy: ExpertPolicy,
        capacity: usize,
        experts: usize,
        routes: &[Vec<Vec<usize>>],
    ) -> f64 {
        let layers = routes[0].len();
        let mut replacement = Replacement::new(policy, layers * experts);
        let mut slots: Vec<(Option<usize>, u64)> = vec![(None, 0); capacity];
        let mut index = vec![None; layers * experts];
        let (mut hits, mut asked, mut tick) = (0u64, 0u64, 0u64);
        for token in routes {
            for (l, ids) in token.iter().enumerate() {
                tick += 1;
                let keys: Vec<usize> = ids.iter().map(|&e| l * experts + e).collect();
                let hit_slots: Vec<usize> = keys.iter().filter_map(|&k| index[k]).collect();
                let misses: Vec<usize> = keys
                    .iter()
                    .copied()
                    .filter(|&k| index[k].is_none())
                    .collect();
                let candidates = slots
                    .iter()
                    .enumerate()
                    .filter(|(s, _)| !hit_slots.contains(s))
                    .map(|(s, &(key, last))| (s, replacement.rank(key, last)))
                    .collect();
                let victims = Replacement::victims(candidates, misses.len()).unwrap();
                for &s in &hit_slots {
                    slots[s].1 = tick;
                }
                for (&k, &s) in misses.iter().zip(&victims) {
                    if let Some(old) = slots[s].0 {
                        index[old] = None;
                    }
                    slots[s] = (Some(k), tick);
                    index[k] = Some(s);
                }
                for &k in &keys {
                    replacement.touch(k);
                }
                hits += hit_slots.len() as u64;
                asked += keys.len() as u64;
            }
        }
        hits as f64 / asked as f64
    }

    /// Hit rates (LRU, LFU) at each budget fraction of all experts.
    fn compare(trace: &Trace, fractions: &[f64]) -> Vec<(f64, f64, f64)> {
        let routes = trace.routes();
        fractions
            .iter()
            .map(|&f| {
                let total = trace.layers * trace.experts;
                let capacity = ((total as f64 * f) as usize).max(trace.used);
                (
                    f,
                    simulate(ExpertPolicy::Lru, capacity, trace.experts, &routes),
                    simulate(ExpertPolicy::Lfu, capacity, trace.experts, &routes),
                )
            })
            .collect()
    }

    #[cfg(not(miri))]
    #[test]
    fn lfu_beats_lru_on_skewed_routing() {
        let trace = Trace {
            layers: 8,
            experts: 32,
            used: 4,
            tokens: 300,
            skew: 1.0,
            drift: false,
            seed: 7,
        };
        for (f, lru, lfu) in compare(&trace, &[0.125, 0.25, 0.5]) {
            assert!(lfu > lru, "budget {f}: LRU {lru:.3} vs LFU {lfu:.3}");
        }
        // With everything resident both hit on every repeat.
        let all = compare(&trace, &[1.0])[0];
        assert!((all.1 - all.2).abs() < 1e-9);
    }

    /// The table behind the default: `cargo test -p strata-layer-cache --lib --release
    /// expert_policy_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn expert_policy_table() {
        for (skew, drift) in [(0.8, false), (1.0, false), (1.2, false), (1.0, true)] {
            let trace = Trace {
                layers: 24,
                experts: 64,
                used: 8,
                tokens: 2000,
                skew,
                drift,
                seed: 11,
            };
            for (f, lru, lfu) in compare(&trace, &[0.125, 0.25, 0.5, 0.75]) {
                println!(
                    "L 24 E 64 K 8, 2000 tokens, zipf {skew}{}: budget {:>4.1}% of experts: \
                     LRU {:.1}% LFU {:.1}%",
                    if drift { " drifting" } else { "" },
                    100.0 * f,
                    100.0 * lru,
                    100.0 * lfu
                );
            }
        }
    }

    #[cfg(all(feature = "file", not(miri)))]
    #[test]
    fn o_direct_reads_of_dense_runs_and_experts_are_aligned() {
        let bytes = moe_model(3);
        let path = std::env::temp_dir().join(format!("strata-experts-{}.gguf", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let storage = match crate::FileStorage::open(&path, true) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: this filesystem refuses O_DIRECT ({e})");
                std::fs::remove_file(&path).unwrap();
                return;
            }
        };
        // Every read the cache issues must be aligned: the storage would otherwise go through
        // its bounce buffer, so check the cache's reads directly.
        struct Aligned(crate::FileStorage);
        impl Storage for Aligned {
            fn len(&self) -> u64 {
                self.0.len()
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
                let end_of_file = offset + buf.len() as u64 == self.0.len();
                assert_eq!(offset % READ_ALIGN, 0, "read at {offset}");
                assert!(
                    end_of_file || buf.len() as u64 % READ_ALIGN == 0,
                    "read of {}",
                    buf.len()
                );
                assert_eq!(buf.as_ptr() as u64 % READ_ALIGN, 0, "buffer address");
                self.0.read_at(offset, buf)
            }
        }
        for backend in [Backend::File, Backend::Arena] {
            let storage = Arc::new(Aligned(crate::FileStorage::open(&path, true).unwrap()));
            let cache = open_over(storage, &bytes, backend, Budget::Min);
            for layer in 0..3 {
                let l = cache.get(layer).unwrap();
                let gguf = cache.gguf();
                let t = gguf.tensor(&format!("blk.{layer}.attn_q.weight")).unwrap();
                assert_eq!(
                    l.tensor("attn_q.weight").unwrap().bytes,
                    gguf.tensor_data(&bytes, t).unwrap()
                );
                check(&bytes, &cache.experts(layer, &[layer + 1, 6]).unwrap());
            }
        }
        drop(storage);
        std::fs::remove_file(&path).unwrap();
    }
}
