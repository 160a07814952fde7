//! [`LayerCache`]: a budgeted cache of layers with background prefetch.
//!
//! # Slots
//! The budget is cut into the pinned globals and *slots* of one layer each. With the cyclic
//! policy, when every layer fits each has a slot of its own size; otherwise layers `0..R` stay
//! resident for good, each in a slot of exactly its aligned read size, and the other layers
//! stream in turn through `w` slots sized for the largest of them, with R as large as the
//! budget allows: globals + the R resident layers + w × the largest streamed layer ≤ budget
//! (see [`cyclic_split`]); what that leaves keeps the first tensors of layer R resident (its
//! *head*, [`CachePlan::head_bytes`]) so that each token reads only the rest of it. With LRU
//! the budget is K slots of the largest layer, all one pool.
//! A layer's slot holds its *dense part* only: for a mixture-of-experts layer, every tensor but
//! the expert tensors, read as one aligned read per run of adjacent dense tensors
//! ([`DenseLayout`]). The experts live in *expert slots* of one expert each, managed by LRU or
//! LFU ([`experts`]); [`CachePlan`] says how the budget is split between the two.
//!
//! # Concurrency
//! One mutex guards the slot table; a condvar signals every change (a load finished, a
//! [`LayerRef`] dropped, the consumer moved on). A slot's memory is written only while its
//! status is `Loading` — no [`LayerRef`] can exist then — and read only while it is `Ready` and
//! pinned by at least one live [`LayerRef`], which keeps it from being reused. The background
//! prefetcher (feature `threads`, cyclic policy) loads the next w layers after the last one
//! asked for; without `threads`, and with the LRU policy (a plain demand-paged cache, kept as
//! the baseline), there is no background thread and `get` reads on demand.
//!
//! The bytes themselves are written and read through raw pointers into memory the cache owns
//! ([`Memory`]), outside the mutex; [`Status`] states the protocol that makes that sound (who
//! may write, who may read, and how the mutex orders the one before the other), and every
//! `unsafe` block names the step of it that it relies on.
//!
//! # Checked under Miri
//! The tests at the bottom of this file (arena, file-buffer and lent-bytes memory over
//! in-memory storage, several threads, the prefetcher, eviction, a preload racing gets, a
//! failed prefetch read again, the cache dropped with a load in flight) are small enough for
//! Miri, which checks every execution it runs for data races, use after free and aliasing
//! violations: `cargo +nightly miri test -p strata-layer-cache --no-default-features
//! --features arena,threads --lib cache::tests` (`cargo xtask miri`). Miri rather than loom:
//! loom would need std's `Mutex`, `Condvar`, `Arc` and threads swapped for its own under
//! `cfg(loom)` throughout the crate (and in `read_split`'s scoped threads, which loom does not
//! model) and explores only the atomics and locks, not the raw-pointer accesses themselves;
//! Miri runs the code as it is and checks exactly those accesses, one random schedule per
//! execution (preemption at every step with probability 0.01, different across runs with
//! `-Zmiri-many-seeds`), which the tests repeat.

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

mod experts;
pub use experts::ExpertSet;
use experts::{ExpertState, ExpertsPlan};

use strata_gguf::{GgmlType, Gguf};

use crate::aligned::AlignedBuf;
use crate::clock::Clock;
use crate::config::{Backend, Budget, CacheConfig, ExpertPolicy, Policy};
use crate::layer_map::{LayerInfo, LayerMap, ReadRange, TensorEntry};
use crate::stats::CacheStats;
use crate::storage::{read_split, Storage};
use crate::{Error, READ_ALIGN};

/// How the budget was divided at open.
///
/// # The split, for a mixture-of-experts model
/// `budget = globals + dense slots + expert_slots × expert_bytes`. The minimum is globals +
/// (w + 1) × the largest dense part + `experts_used` (K) × `expert_bytes` (or room for
/// everything, if less): one token's routed experts of one layer, never all experts. Above
/// it, the dense parts come first — every token reads every layer's dense part, while each
/// expert is read only when routed to, so a dense byte kept resident saves more reads than an
/// expert byte: K expert slots are reserved, the dense slots are planned by the dense policy
/// (cyclic: R resident + w streaming) over the rest, and whatever the dense slots leave goes
/// to expert slots, as many whole slots as fit, capped at every expert of the model. A model
/// without experts has K = 0 and `expert_bytes = expert_slots = 0`: the plan is the one it
/// always had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    /// Backend in use.
    pub backend: Backend,
    /// Policy in use.
    pub policy: Policy,
    /// The budget in bytes.
    pub budget_bytes: u64,
    /// The smallest budget this model and window allow.
    pub minimum_bytes: u64,
    /// Memory taken by the pinned globals.
    pub globals_bytes: u64,
    /// Bytes of the row globals ([`CacheConfig::row_globals`]) left in storage, read a row at
    /// a time by [`LayerCache::read_global`]; 0 when the budget holds the whole model (they
    /// are pinned with the other globals then) or there are none.
    pub row_globals_bytes: u64,
    /// The largest layer's aligned read size: the size of an LRU slot, and the unit of the
    /// minimum budget.
    pub slot_bytes: u64,
    /// Size of each streaming slot (cyclic: the largest layer that is streamed; LRU: equal to
    /// `slot_bytes`; 0 when nothing streams).
    pub stream_slot_bytes: u64,
    /// Number of layer slots (resident + streaming for cyclic, K for LRU).
    pub slots: usize,
    /// Layers resident for good (cyclic: as many as fit besides the streaming slots, or all;
    /// LRU: 0).
    pub resident_layers: usize,
    /// Memory of the resident layers' slots (the sum of their aligned read sizes).
    pub resident_bytes: u64,
    /// Memory of the *resident head* of layer R, the first streamed layer: its first tensors,
    /// kept for good in what the whole layers leave of the budget (less than a layer), so that
    /// each token reads only the rest of it. 0 when nothing is left, or with the mmap backend,
    /// the LRU policy or experts (whose slots take the leftover instead).
    pub head_bytes: u64,
    /// Slots shared by streamed layers (cyclic) or all slots (LRU).
    pub streaming_slots: usize,
    /// Prefetch window w.
    pub window: usize,
    /// Concurrent reads per load.
    pub io_threads: usize,
    /// Size of the model file.
    pub file_len: u64,
    /// Experts routed per token and layer (`<arch>.expert_used_count`); 0 for a model without
    /// expert tensors.
    pub experts_used: usize,
    /// Size of one expert slot: the largest expert's aligned reads (its slices of the layer's
    /// `*_exps` tensors, each rounded out to [`READ_ALIGN`]); 0 without experts.
    pub expert_bytes: u64,
    /// Expert slots the budget pays for (at least `experts_used`; every expert of the model
    /// when the budget covers them all).
    pub expert_slots: usize,
    /// Residency policy of the expert slots.
    pub expert_policy: ExpertPolicy,
}

impl CachePlan {
    /// The region read once at open and never evicted: the pinned globals, then the resident
    /// head of layer R.
    fn pinned_bytes(&self) -> u64 {
        self.globals_bytes + self.head_bytes
    }

    /// Slot index reserved for `layer`, if the policy gives it one of its own.
    fn dedicated_slot(&self, layer: usize) -> Option<usize> {
        (self.policy == Policy::Cyclic && layer < self.resident_layers).then_some(layer)
    }

    /// The slots any layer may be loaded into.
    fn pool(&self) -> Range<usize> {
        match self.policy {
            Policy::Cyclic => self.resident_layers..self.resident_layers + self.streaming_slots,
            Policy::Lru => 0..self.slots,
        }
    }
}

/// Where slot and globals bytes live.
///
/// The owned variants are written through the raw pointers of [`Memory::slot_ptr`] and
/// [`Memory::globals_ptr`] while the cache is shared (`&self`): never through a `&mut`, and
/// never while a shared slice covers the bytes written (see [`Status`] for when that holds).
/// The memory lives as long as [`Shared`], which every [`LayerRef`] and the prefetcher keep
/// alive through an `Arc`.
enum Memory {
    /// Bytes are lent by the storage (mmap); nothing is allocated.
    Mapped { base: *const u8 },
    /// One aligned buffer for the globals, one per slot, and one for all expert slots, each
    /// `expert_stride` bytes (file backend).
    Buffers {
        globals: AlignedBuf,
        slots: Vec<AlignedBuf>,
        experts: AlignedBuf,
        expert_stride: u64,
    },
    /// One region of exactly the budget: `[globals | slot 0 | slot 1 | ... | expert slots]`,
    /// u64 offsets.
    #[cfg_attr(not(feature = "arena"), allow(dead_code))]
    Arena {
        arena: AlignedBuf,
        /// Start of each slot in the arena (open checked every slot lies inside it).
        slot_offsets: Vec<u64>,
        /// Start of expert slot 0; slot i starts `i × expert_stride` later (checked as well).
        experts_at: u64,
        expert_stride: u64,
    },
}

impl Memory {
    /// Start of slot `s`'s memory (not used for `Mapped`).
    fn slot_ptr(&self, s: usize) -> *mut u8 {
        match self {
            Memory::Mapped { .. } => std::ptr::null_mut(),
            Memory::Buffers { slots, .. } => slots[s].as_ptr(),
            Memory::Arena {
                arena,
                slot_offsets,
                ..
            } => {
                // In bounds: open checked every slot's end against the arena's length.
                arena.as_ptr().wrapping_add(slot_offsets[s] as usize)
            }
        }
    }

    /// Start of expert slot `i`'s memory (not used for `Mapped`).
    fn expert_ptr(&self, i: usize) -> *mut u8 {
        match self {
            Memory::Mapped { .. } => std::ptr::null_mut(),
            Memory::Buffers {
                experts,
                expert_stride,
                ..
            } => experts.as_ptr().wrapping_add(i * *expert_stride as usize),
            Memory::Arena {
                arena,
                experts_at,
                expert_stride,
                ..
            } => {
                // In bounds: open checked the last expert slot's end against the arena's length.
                arena
                    .as_ptr()
                    .wrapping_add((*experts_at + i as u64 * *expert_stride) as usize)
            }
        }
    }

    /// Start of the globals region.
    fn globals_ptr(&self) -> *mut u8 {
        match self {
            Memory::Mapped { base } => *base as *mut u8,
            Memory::Buffers { globals, .. } => globals.as_ptr(),
            Memory::Arena { arena, .. } => arena.as_ptr(),
        }
    }
}

/// Where a slot is in its cycle, and so who may touch its bytes. The slot protocol:
///
/// - **Transitions**, each made under `Shared::state`'s mutex: `Empty`, `Failed`, or `Ready`
///   with no pins → `Loading` (`Shared::claim`, by the thread that will load it: a `get`, the
///   prefetcher, or `fill_parallel`), then `Loading` → `Ready`, `Failed` or `Empty`, by that
///   loader only; `Failed` → `Empty` by the `get` that reads the layer again.
/// - **Write**: a slot's bytes are written only while it is `Loading`, by the one loader that
///   claimed it (and, for that loader, by the reader threads of `read_split` or
///   `fill_parallel`, each writing its own disjoint piece and joined, or heard back from over a
///   channel, before the loader publishes). A `Loading` slot has no pins, so no [`LayerRef`],
///   and therefore no `&[u8]`, covers its bytes; no other loader can claim it.
/// - **Read**: a slot's bytes are read only through a [`LayerRef`] of it, made (`make_ref`,
///   pins + 1) while it is `Ready`. While pinned a slot is never claimed (`pick_slot` skips
///   pinned slots, and a dedicated slot is only claimed when `Empty`), so its bytes do not
///   change until the last [`LayerRef`] drops (pins − 1, under the mutex).
/// - **Happens-before**: the loader writes, then takes the mutex to set `Ready`; a reader takes
///   the same mutex, sees `Ready` and pins, then reads. The unlock after `Ready` synchronises
///   with that later lock, so every write happens before every read. The other way round, a
///   reader's last read is before its unpin under the mutex, and the next `claim` takes the
///   mutex and sees no pins, so the reads happen before the next load's writes.
/// - **Globals**: written by `open` before the [`Shared`] is shared (before any `Arc` clone or
///   the prefetcher's spawn, itself a synchronisation point), never written again, never freed
///   while a [`LayerRef`] lives.
#[derive(Debug)]
enum Status {
    /// No layer; the bytes mean nothing. No pins.
    Empty,
    /// Claimed by one loader, which alone writes the bytes (unlocked). No pins.
    Loading,
    /// Holds its layer's bytes, which do not change while any [`LayerRef`] pins the slot.
    Ready,
    /// A background load failed (its bytes mean nothing, no pins). Kept (not retried by the
    /// prefetcher, which would spin on a broken storage) until the next `get` of the layer,
    /// which reads it again itself.
    #[cfg_attr(not(feature = "threads"), allow(dead_code))]
    Failed,
}

/// One slot's entry in the table (behind the mutex). Invariant: `pins > 0` only while
/// `status` is `Ready` (see [`Status`] for the protocol).
#[derive(Debug)]
struct Slot {
    /// The layer loaded, being loaded or failed here (`layer_slot[layer] == Some(this slot)`).
    layer: Option<usize>,
    status: Status,
    /// Live [`LayerRef`]s of this slot (each `RefInner` counts once, however often cloned).
    pins: usize,
    last_use: u64,
    /// Loaded (or failed) by the prefetcher and not used since.
    fresh: bool,
    /// Bytes counted as resident for this slot.
    bytes: u64,
}

/// Everything mutable in the cache, behind `Shared::state`'s mutex: the slot table, which is
/// the only way to learn where a layer's bytes are and whether they may be read.
struct State {
    slots: Vec<Slot>,
    layer_slot: Vec<Option<usize>>,
    cursor: Option<usize>,
    tick: u64,
    stats: CacheStats,
    shutdown: bool,
    /// The expert slots (same mutex, same protocol as the layer slots).
    experts: ExpertState,
}

struct Shared {
    storage: Arc<dyn Storage>,
    gguf: Gguf,
    map: LayerMap,
    plan: CachePlan,
    memory: Memory,
    /// Capacity of each slot's memory (owned backends), in slot order.
    slot_sizes: Vec<u64>,
    /// Per layer: where its dense part's reads go in a slot.
    dense: Vec<DenseLayout>,
    /// Per global tensor (same order as `map.globals()`): offset from the globals base.
    globals_offsets: Vec<u64>,
    globals_len: usize,
    state: Mutex<State>,
    cond: Condvar,
}

// SAFETY: the raw pointers in `Memory` point into allocations owned by `Memory` itself or into
// the storage's lent bytes (owned through `storage`), so they stay valid wherever `Shared`
// goes; nothing in it is tied to a thread.
unsafe impl Send for Shared {}
// SAFETY: every mutable field is behind `state`'s mutex except the slot and globals bytes,
// which threads write and read through `Memory`'s raw pointers only as the slot protocol
// (`Status`) allows: one writer per `Loading` slot with no readers, readers only of pinned
// `Ready` slots, the mutex ordering each load's writes before the reads that follow it.
unsafe impl Sync for Shared {}

/// A model's layers behind a memory budget. See the [crate docs](crate).
pub struct LayerCache {
    shared: Arc<Shared>,
    globals: LayerRef,
    #[cfg(feature = "threads")]
    worker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LayerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerCache")
            .field("plan", &self.shared.plan)
            .finish_non_exhaustive()
    }
}

/// The offset of a global tensor that is not in the globals region: a row global left in
/// storage ([`CacheConfig::row_globals`]).
const NOT_PINNED: u64 = u64::MAX;

/// Global tensors grouped into runs that are read with one aligned read each.
struct GlobalsLayout {
    /// (file read, offset of the read's first byte in the globals region).
    runs: Vec<(ReadRange, u64)>,
    /// Per global tensor: offset from the globals base ([`NOT_PINNED`] for one left out).
    offsets: Vec<u64>,
    /// Bytes of the globals region.
    bytes: u64,
}

/// The layout of the global tensors not marked in `skip` (the row globals left in storage,
/// whose offset is [`NOT_PINNED`]).
fn plan_globals(globals: &[TensorEntry], skip: &[bool], file_len: u64) -> GlobalsLayout {
    let mut order: Vec<usize> = (0..globals.len()).filter(|&i| !skip[i]).collect();
    order.sort_by_key(|&i| globals[i].offset);
    let mut ranges: Vec<(Range<u64>, Vec<usize>)> = Vec::new();
    for i in order {
        let t = &globals[i];
        let r = t.offset..t.offset + t.n_bytes;
        match ranges.last_mut() {
            Some((last, members)) if r.start <= last.end + READ_ALIGN => {
                last.end = last.end.max(r.end);
                members.push(i);
            }
            _ => ranges.push((r, vec![i])),
        }
    }
    let mut offsets = vec![NOT_PINNED; globals.len()];
    let mut runs = Vec::with_capacity(ranges.len());
    let mut at = 0u64;
    for (range, members) in ranges {
        let read = ReadRange::covering(&range, file_len);
        for i in members {
            offsets[i] = at + read.head + (globals[i].offset - range.start);
        }
        runs.push((read, at));
        at += read.footprint();
    }
    GlobalsLayout {
        runs,
        offsets,
        bytes: at,
    }
}

/// Where a layer's dense part lies in a slot: one aligned read per dense run
/// ([`LayerInfo::dense`]), each placed at the next [`READ_ALIGN`]-aligned offset of the slot.
/// A layer without experts has one run, its extent: one read at offset 0, as before experts.
struct DenseLayout {
    /// (file read, offset of the read's first byte in the slot), in file order.
    reads: Vec<(ReadRange, u64)>,
    /// The resident head (layer R only, see [`CachePlan::head_bytes`]): its read and the
    /// offset of the read's first byte in the pinned region; `reads` is then the rest.
    head: Option<(ReadRange, u64)>,
    /// Slot bytes the reads take (the sum of their footprints): the layer's size in the plan.
    footprint: u64,
    /// Bytes the reads fetch (the sum of their lengths).
    read_bytes: u64,
}

impl DenseLayout {
    fn new(info: &LayerInfo, file_len: u64) -> DenseLayout {
        let mut reads = Vec::with_capacity(info.dense.len());
        let mut at = 0;
        let mut read_bytes = 0;
        for run in &info.dense {
            let r = ReadRange::covering(run, file_len);
            reads.push((r, at));
            at += r.footprint();
            read_bytes += r.len;
        }
        DenseLayout {
            reads,
            head: None,
            footprint: at,
            read_bytes,
        }
    }

    /// Where the file byte `offset` of a dense tensor of `len` bytes is: in the resident head
    /// (offset in the pinned region) or in the slot (offset in the slot).
    fn place(&self, offset: u64, len: u64) -> Option<Place> {
        let inside = |r: &ReadRange| offset >= r.offset && offset + len <= r.offset + r.len;
        if let Some((r, at)) = &self.head {
            if inside(r) {
                return Some(Place::Pinned(at + offset - r.offset));
            }
        }
        self.reads
            .iter()
            .find_map(|(r, at)| inside(r).then(|| Place::Slot(at + offset - r.offset)))
    }

    /// Keep the first tensors of this layer (one run, no experts: `tensors` are its dense
    /// tensors) resident at offset `at` of the pinned region, as many as an aligned read of
    /// at most `room` bytes holds, and read only the rest into its slot. Returns the head's
    /// footprint (0: nothing fits, or everything would, and the layer is left whole).
    fn split_head(&mut self, tensors: &[TensorEntry], room: u64, at: u64, file_len: u64) -> u64 {
        let [(whole, 0)] = self.reads[..] else {
            return 0;
        };
        let mut order: Vec<&TensorEntry> = tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        let start = whole.offset + whole.head;
        let end = whole.offset + whole.len;
        // The longest prefix of whole tensors whose read fits `room`, short of the whole layer.
        let mut cut = None;
        for (k, t) in order.iter().enumerate().take(order.len().saturating_sub(1)) {
            let head = ReadRange::covering(&(start..t.offset + t.n_bytes), file_len);
            if head.footprint() > room {
                break;
            }
            cut = Some((head, order[k + 1].offset));
        }
        let Some((head, rest_start)) = cut else {
            return 0;
        };
        let rest = ReadRange::covering(&(rest_start..end), file_len);
        self.head = Some((head, at));
        self.reads = vec![(rest, 0)];
        self.footprint = rest.footprint();
        self.read_bytes = rest.len;
        head.footprint()
    }
}

/// Where a layer tensor's bytes are (see [`DenseLayout::place`]).
enum Place {
    /// At this offset of the pinned region (the resident head).
    Pinned(u64),
    /// At this offset of the layer's slot.
    Slot(u64),
}

/// How the cyclic policy divides `budget` bytes, given each layer's aligned read size
/// (`footprints`, in layer order), the globals' bytes and `streaming` slots wanted: returns
/// (R, streaming slots, bytes per streaming slot). Every layer fits: (N, 0, 0). Otherwise R is
/// the largest count for which globals + the first R layers' own sizes + `streaming` × the
/// largest of the layers after them ≤ budget — whole layers, each costing what it really
/// takes, rather than counting every layer as large as the largest. R is 0 only where even
/// that fails for R = 1 (a budget below [`CachePlan::minimum_bytes`], refused before this).
fn cyclic_split(
    footprints: &[u64],
    globals: u64,
    budget: u64,
    streaming: usize,
) -> (usize, usize, u64) {
    let n = footprints.len();
    if globals + footprints.iter().sum::<u64>() <= budget {
        return (n, 0, 0);
    }
    // suffix_max[r] = the largest layer in r..n.
    let mut suffix_max = vec![0u64; n + 1];
    for r in (0..n).rev() {
        suffix_max[r] = suffix_max[r + 1].max(footprints[r]);
    }
    let mut best = 0;
    let mut prefix = 0u64;
    for r in 0..n {
        // r resident layers (prefix = their bytes), the rest streamed.
        let slots = streaming.min(n - r) as u64;
        if globals + prefix + slots * suffix_max[r] <= budget {
            best = r;
        }
        prefix += footprints[r];
    }
    (best, streaming.min(n - best), suffix_max[best])
}

impl LayerCache {
    /// Open the GGUF file at `path` with `config`'s backend, budget, window and policy.
    ///
    /// With the mmap backend the file must not be modified while the cache lives (see
    /// [`MmapStorage::open`](crate::MmapStorage::open)).
    #[cfg(feature = "file")]
    pub fn open_path(path: &std::path::Path, config: &CacheConfig) -> Result<LayerCache, Error> {
        let gguf = Gguf::open(path)?;
        LayerCache::open(LayerCache::open_storage(path, config)?, gguf, config)
    }

    /// The storage [`LayerCache::open_path`] reads `path` through for `config`'s backend: a
    /// memory map, or the file with or without O_DIRECT. For a caller that parses the header
    /// itself first (to choose [`CacheConfig::row_globals`], say) and then calls
    /// [`LayerCache::open`]. The same obligation as `open_path` holds for the mmap backend.
    #[cfg(feature = "file")]
    pub fn open_storage(
        path: &std::path::Path,
        config: &CacheConfig,
    ) -> Result<Arc<dyn Storage>, Error> {
        Ok(match config.backend {
            Backend::Mmap => {
                if config.direct_io {
                    return Err(Error::Config {
                        key: "storage.direct_io".into(),
                        value: "true".into(),
                        accepted:
                            "true only with backend \"file\" or \"arena\"; false with \"mmap\""
                                .into(),
                    });
                }
                #[cfg(feature = "mmap")]
                {
                    // SAFETY: model files are treated as immutable while a cache has them open;
                    // this obligation is stated on `open_path` and on `Backend::Mmap`.
                    Arc::new(unsafe { crate::MmapStorage::open(path) }?)
                }
                #[cfg(not(feature = "mmap"))]
                return Err(Error::BackendUnavailable {
                    backend: "mmap".into(),
                    reason: "built without the `mmap` feature".into(),
                });
            }
            Backend::File | Backend::Arena => {
                Arc::new(crate::FileStorage::open(path, config.direct_io)?)
            }
        })
    }

    /// Open over any storage; `gguf` is the storage's parsed header. The mmap backend needs a
    /// storage that lends its bytes ([`Storage::bytes`]).
    pub fn open(
        storage: Arc<dyn Storage>,
        gguf: Gguf,
        config: &CacheConfig,
    ) -> Result<LayerCache, Error> {
        let file_len = storage.len();
        let map = LayerMap::from_gguf(&gguf, file_len)?;
        let rows: Vec<bool> = map
            .globals()
            .iter()
            .map(|t| config.row_globals.contains(&t.name))
            .collect();
        let all_layout = plan_globals(map.globals(), &vec![false; rows.len()], file_len);
        let pinned_layout = plan_globals(map.globals(), &rows, file_len);
        let globals = GlobalsSizes {
            all: all_layout.bytes,
            pinned: pinned_layout.bytes,
            rows: (map.globals().iter().zip(&rows))
                .filter(|(_, &r)| r)
                .map(|(t, _)| t.n_bytes)
                .sum(),
        };
        let mut dense: Vec<DenseLayout> = map
            .layers()
            .iter()
            .map(|l| DenseLayout::new(l, file_len))
            .collect();
        let experts_plan = ExpertsPlan::new(&gguf, &map, file_len)?;
        let (mut plan, slot_sizes) =
            plan_slots(&map, &dense, &experts_plan, globals, file_len, config)?;
        let layout = match plan.row_globals_bytes {
            0 => all_layout,
            _ => pinned_layout,
        };
        // What the whole layers leave of the budget keeps the head of layer R resident.
        let r = plan.resident_layers;
        if plan.policy == Policy::Cyclic
            && plan.backend != Backend::Mmap
            && plan.expert_slots == 0
            && r < map.n_layers()
        {
            let used = plan.globals_bytes + slot_sizes.iter().sum::<u64>();
            let room = plan.budget_bytes.saturating_sub(used);
            plan.head_bytes =
                dense[r].split_head(&map.layers()[r].tensors, room, plan.globals_bytes, file_len);
        }
        let head = dense.get(r).and_then(|d| d.head);
        let memory = Memory::allocate(&plan, &slot_sizes, storage.as_ref())?;
        let clock = Clock::now();
        let (globals_offsets, globals_len, bytes_read) =
            read_globals(storage.as_ref(), &memory, &map, layout, head, &plan)?;
        let stats = CacheStats {
            bytes_read,
            read_time: clock.elapsed(),
            resident_bytes: plan.pinned_bytes(),
            peak_resident_bytes: plan.pinned_bytes(),
            budget_bytes: plan.budget_bytes,
            ..CacheStats::default()
        };
        let expert_state = ExpertState::new(&map, plan.expert_slots, plan.expert_policy);
        let state = State::new(slot_sizes.len(), map.n_layers(), stats, expert_state);
        let shared = Arc::new(Shared {
            storage,
            gguf,
            map,
            plan,
            memory,
            slot_sizes,
            dense,
            globals_offsets,
            globals_len,
            state: Mutex::new(state),
            cond: Condvar::new(),
        });
        let globals = LayerRef {
            inner: Arc::new(RefInner {
                base: shared.memory.globals_ptr(),
                len: shared.globals_len,
                layer: None,
                slot: None,
                shared: shared.clone(),
            }),
        };
        Ok(LayerCache {
            #[cfg(feature = "threads")]
            worker: spawn_prefetcher(&shared)?,
            shared,
            globals,
        })
    }

    /// The parsed GGUF header (metadata and tensor table).
    pub fn gguf(&self) -> &Gguf {
        &self.shared.gguf
    }

    /// The layer map.
    pub fn layer_map(&self) -> &LayerMap {
        &self.shared.map
    }

    /// How the budget was divided.
    pub fn plan(&self) -> &CachePlan {
        &self.shared.plan
    }

    /// The storage the cache reads from.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.shared.storage
    }

    /// Number of `blk.N` layers.
    pub fn n_layers(&self) -> usize {
        self.shared.map.n_layers()
    }

    /// The pinned global tensors (full names: `token_embd.weight`, `output_norm.weight`, ...).
    pub fn globals(&self) -> &LayerRef {
        &self.globals
    }

    /// Copies `out.len()` bytes of the global tensor `name`, from byte `offset` of the tensor
    /// on: from the pinned globals, or, for a row global left in storage
    /// ([`CachePlan::row_globals_bytes`]), read from storage now (counted in
    /// [`CacheStats::bytes_read`]). Meant for a few rows at a time (one token's embedding).
    /// Errors: [`Error::NoSuchTensor`], [`Error::OutOfBounds`] for a range past the tensor's
    /// end, and the storage's read errors.
    pub fn read_global(&self, name: &str, offset: u64, out: &mut [u8]) -> Result<(), Error> {
        let shared = &self.shared;
        let entries = shared.map.globals();
        let i = entries
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .map_err(|_| Error::NoSuchTensor {
                name: name.to_string(),
                scope: String::from("globals"),
            })?;
        let t = &entries[i];
        let len = out.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > t.n_bytes) {
            return Err(Error::OutOfBounds {
                what: format!("global tensor `{name}`"),
                offset,
                len,
                available: t.n_bytes,
            });
        }
        if self.globals.present(i) {
            let start = offset as usize;
            out.copy_from_slice(&self.globals.view(i).bytes[start..start + out.len()]);
            return Ok(());
        }
        let clock = Clock::now();
        shared.storage.read_at(t.offset + offset, out)?;
        let mut st = shared.lock();
        st.stats.bytes_read += len;
        st.stats.read_time += clock.elapsed();
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.shared.lock().stats.clone()
    }

    /// Layer `layer`'s tensors: blocks until the layer is resident, reading it here if nobody
    /// else is; then starts the prefetch of the next w layers. A read error is returned (and the
    /// next `get` of the layer tries again); bytes are never made up. A failed prefetch is not
    /// an error of its own: the `get` of that layer reads it again and reports that outcome.
    pub fn get(&self, layer: usize) -> Result<LayerRef, Error> {
        self.shared.get(layer)
    }

    /// The experts `ids` of `layer` (a mixture-of-experts layer), pinned: blocks until each is
    /// resident, reading the missing ones here, `io_threads` reads in flight (positioned,
    /// aligned reads straight into the expert slots). Ask for exactly the experts the router
    /// picked for this token; duplicates count once. Experts resident already are hits.
    ///
    /// The returned [`ExpertSet`] keeps them from being evicted until it drops. Holding
    /// [`ExpertSet`]s that pin more experts than there are expert slots makes the next call
    /// that needs a free slot wait until one is dropped. Errors: [`Error::NoSuchLayer`],
    /// [`Error::NoSuchExpert`] (also for a layer without experts), [`Error::TooManyExperts`]
    /// (more distinct ids than [`CachePlan::expert_slots`]), [`Error::Expert`] for a failed
    /// read (nothing stays pinned; the next call reads the expert again).
    pub fn experts(&self, layer: usize, ids: &[usize]) -> Result<ExpertSet, Error> {
        self.shared.experts(layer, ids)
    }

    /// Reads now every layer that stays resident for good (cyclic policy: the first R layers;
    /// none under LRU), so that the first token does not wait for them, calling
    /// `progress(done, total)` each time one more layer is in. Streaming layers are left to
    /// the prefetcher. Returns how many layers were loaded. A read error is returned as from
    /// [`LayerCache::get`]. How the reads are issued: [`LayerCache::preload_progress`].
    pub fn preload(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<usize, Error> {
        let mut last = 0;
        let done = self.preload_progress(&mut |p| {
            if p.layers != last {
                last = p.layers;
                progress(p.layers, p.total_layers);
            }
        })?;
        Ok(done.layers)
    }

    /// [`LayerCache::preload`], reporting bytes as well as layers after every read. With owned
    /// memory (file and arena backends) and the `threads` feature the resident layers are read
    /// as one queue of [`READ_ALIGN`]-aligned pieces of up to 8 MiB each, `io_threads` reads in
    /// flight at once across layer boundaries (so the device stays busy to the last piece, and
    /// with O_DIRECT every piece goes straight from the device into the layer's slot); a layer
    /// becomes usable as soon as its last piece is in. Layers the prefetcher is already reading
    /// are waited for. Otherwise (mmap, or no threads) the layers load one after another.
    pub fn preload_progress(
        &self,
        progress: &mut dyn FnMut(&PreloadProgress),
    ) -> Result<PreloadProgress, Error> {
        self.shared.fill_resident(progress)
    }
}

/// How far [`LayerCache::preload_progress`] has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreloadProgress {
    /// Bytes of resident layers read so far (aligned read sizes).
    pub bytes: u64,
    /// Bytes of all the layers it loads.
    pub total_bytes: u64,
    /// Layers complete.
    pub layers: usize,
    /// Layers it loads (the resident ones).
    pub total_layers: usize,
}

impl Drop for LayerCache {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.cond.notify_all();
        #[cfg(feature = "threads")]
        if let Some(worker) = self.worker.take() {
            // A panicking prefetcher has nothing left to report here.
            let _ = worker.join();
        }
    }
}

/// The globals region's size with every global pinned and without the row globals, and the
/// row globals' own bytes.
#[derive(Debug, Clone, Copy)]
struct GlobalsSizes {
    all: u64,
    pinned: u64,
    rows: u64,
}

/// Step 1 of [`LayerCache::open`]: the budget in bytes, checked against the minimum, and the
/// slots it pays for (sizes in slot order: cyclic `[resident 0..R | streaming]`, LRU `[K pool
/// slots]`). The row globals are pinned only when the budget holds everything; otherwise the
/// plan is made over the globals without them (and so is the minimum).
fn plan_slots(
    map: &LayerMap,
    dense: &[DenseLayout],
    experts: &ExpertsPlan,
    globals: GlobalsSizes,
    file_len: u64,
    config: &CacheConfig,
) -> Result<(CachePlan, Vec<u64>), Error> {
    let n = map.n_layers();
    let window = config.prefetch;
    let streaming = window.max(1);
    let footprints: Vec<u64> = dense.iter().map(|d| d.footprint).collect();
    let slot_bytes = footprints.iter().copied().max().unwrap_or(0);
    let g = globals.all;
    let min_slots = (streaming + 1).min(n) as u64;
    // The K routed experts of one layer, reserved before the dense split (see `CachePlan`).
    let reserve = experts.used as u64 * experts.slot_bytes;
    let all_experts = experts.total as u64 * experts.slot_bytes;
    let all = all_experts
        + match config.policy {
            Policy::Cyclic => g + footprints.iter().sum::<u64>(),
            Policy::Lru => g + n as u64 * slot_bytes,
        };
    // Room for every layer is always enough, even where (w + 1) × the largest layer is more
    // (few layers of uneven sizes).
    let minimum = (globals.pinned + min_slots * slot_bytes + reserve).min(all);
    let budget_bytes = match config.budget {
        Budget::Bytes(b) => b,
        Budget::Percent(p) => (file_len as f64 * p / 100.0).floor() as u64,
        Budget::All => all,
        Budget::Min => minimum,
    };
    if budget_bytes < minimum {
        return Err(Error::BudgetTooSmall {
            budget: budget_bytes,
            minimum,
            globals: globals.pinned,
            largest_layer: slot_bytes,
            slots: min_slots,
            experts_used: experts.used as u64,
            expert_bytes: experts.slot_bytes,
        });
    }
    // More than room for everything buys nothing (and would only grow the arena).
    let budget_bytes = budget_bytes.min(all);
    // Below room for everything, a byte of a resident layer saves a read every token, a byte of
    // a row global one only when its row is asked for: the row globals stay in storage.
    let (g, row_globals_bytes) = match budget_bytes < all {
        true => (globals.pinned, globals.rows),
        false => (globals.all, 0),
    };
    // The dense slots are planned over what the reserved experts leave.
    let dense_budget = budget_bytes - reserve;
    let (resident, streaming_slots, stream_slot_bytes, slot_sizes) = match config.policy {
        Policy::Cyclic => {
            let (r, w, bytes) = cyclic_split(&footprints, g, dense_budget, streaming);
            let mut sizes = footprints[..r].to_vec();
            sizes.extend(std::iter::repeat_n(bytes, w));
            (r, w, bytes, sizes)
        }
        Policy::Lru => {
            let k = (dense_budget - g)
                .checked_div(slot_bytes)
                .map_or(n, |k| usize::try_from(k).unwrap_or(usize::MAX).min(n));
            (0, k, slot_bytes, vec![slot_bytes; k])
        }
    };
    let dense_used = g + slot_sizes.iter().sum::<u64>();
    debug_assert!(dense_used <= dense_budget);
    // Every byte the dense slots leave goes to expert slots (at least the K reserved).
    let expert_slots = (budget_bytes - dense_used)
        .checked_div(experts.slot_bytes)
        .map_or(0, |k| usize::try_from(k).unwrap_or(usize::MAX))
        .min(experts.total);
    debug_assert!(expert_slots >= experts.used);
    debug_assert!(dense_used + expert_slots as u64 * experts.slot_bytes <= budget_bytes);
    let plan = CachePlan {
        backend: config.backend,
        policy: config.policy,
        budget_bytes,
        minimum_bytes: minimum,
        globals_bytes: g,
        row_globals_bytes,
        slot_bytes,
        stream_slot_bytes,
        slots: slot_sizes.len(),
        resident_layers: resident,
        resident_bytes: footprints[..resident].iter().sum(),
        head_bytes: 0,
        streaming_slots,
        window,
        io_threads: config.io_threads.max(1),
        file_len,
        experts_used: experts.used,
        expert_bytes: experts.slot_bytes,
        expert_slots,
        expert_policy: config.expert_policy,
    };
    Ok((plan, slot_sizes))
}

impl Memory {
    /// Step 2 of [`LayerCache::open`]: the backend's memory for the plan: the storage's own
    /// bytes (mmap), one buffer for the globals and one per slot (file), or one arena of
    /// exactly the budget with the slots at fixed offsets (arena).
    fn allocate(
        plan: &CachePlan,
        slot_sizes: &[u64],
        storage: &dyn Storage,
    ) -> Result<Memory, Error> {
        let g = plan.pinned_bytes();
        Ok(match plan.backend {
            Backend::Mmap => {
                let base =
                    storage
                        .bytes(0, plan.file_len)
                        .ok_or_else(|| Error::BackendUnavailable {
                            backend: "mmap".into(),
                            reason: format!(
                                "{} cannot lend its bytes without copying",
                                storage.describe()
                            ),
                        })?;
                Memory::Mapped {
                    base: base.as_ptr(),
                }
            }
            Backend::File => {
                let globals = AlignedBuf::new(g, "globals")?;
                let slots = slot_sizes
                    .iter()
                    .map(|&bytes| AlignedBuf::new(bytes, "layer slot"))
                    .collect::<Result<_, _>>()?;
                let experts =
                    AlignedBuf::new(plan.expert_slots as u64 * plan.expert_bytes, "expert slots")?;
                Memory::Buffers {
                    globals,
                    slots,
                    experts,
                    expert_stride: plan.expert_bytes,
                }
            }
            Backend::Arena => {
                #[cfg(not(feature = "arena"))]
                return Err(Error::BackendUnavailable {
                    backend: "arena".into(),
                    reason: "built without the `arena` feature".into(),
                });
                #[cfg(feature = "arena")]
                {
                    let budget_bytes = plan.budget_bytes;
                    let arena = AlignedBuf::new(budget_bytes, "arena")?;
                    let mut slot_offsets = Vec::with_capacity(slot_sizes.len());
                    let mut at = g;
                    for &bytes in slot_sizes {
                        slot_offsets.push(at);
                        at += bytes;
                    }
                    let experts_at = at;
                    at += plan.expert_slots as u64 * plan.expert_bytes;
                    if at > budget_bytes {
                        return Err(Error::Layout(format!(
                            "slots end at byte {at} of an arena of {budget_bytes}"
                        )));
                    }
                    Memory::Arena {
                        arena,
                        slot_offsets,
                        experts_at,
                        expert_stride: plan.expert_bytes,
                    }
                }
            }
        })
    }
}

/// Step 3 of [`LayerCache::open`]: the globals made resident, read run by run into owned
/// memory or faulted in from the mapping, and the resident head of layer R (`head`: its read
/// and offset in the pinned region, owned memory only). Returns each global tensor's offset
/// from the globals' base, the length of the pinned region, and the bytes read.
fn read_globals(
    storage: &dyn Storage,
    memory: &Memory,
    map: &LayerMap,
    layout: GlobalsLayout,
    head: Option<(ReadRange, u64)>,
    plan: &CachePlan,
) -> Result<(Vec<u64>, usize, u64), Error> {
    let g = plan.pinned_bytes();
    let globals_len = usize::try_from(match memory {
        Memory::Mapped { .. } => plan.file_len,
        _ => g,
    })
    .map_err(|_| Error::TooLarge {
        what: "globals",
        value: g,
    })?;
    let mut bytes_read = 0;
    let offsets = match memory {
        Memory::Mapped { base } => {
            for (run, _) in &layout.runs {
                storage.will_need(run.offset, run.len);
                // SAFETY: run lies inside the mapping (LayerMap checked every tensor against the
                // file length and ReadRange clips at it), which lives as long as `storage`.
                unsafe { touch_pages(base.wrapping_add(run.offset as usize), run.len as usize) };
                bytes_read += run.len;
            }
            // The mapping lends every global; the row globals left in storage are still read
            // through `read_global` (counted, not faulted in here).
            map.globals()
                .iter()
                .zip(&layout.offsets)
                .map(|(t, &at)| {
                    if at == NOT_PINNED {
                        NOT_PINNED
                    } else {
                        t.offset
                    }
                })
                .collect()
        }
        _ => {
            let base = memory.globals_ptr();
            for (run, at) in layout.runs.iter().chain(&head) {
                // SAFETY: the pinned region is `g` bytes, the sum of the globals runs' and the
                // head's footprints, each placed after the previous, so `at..at + len` is inside it. Globals step of the slot protocol (`Status`):
                // `open` has not shared the memory yet (no `Shared`, no `LayerRef`, no
                // prefetcher), so this is the only reference to those bytes, and the runs are
                // disjoint.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(base.add(*at as usize), run.len as usize)
                };
                read_split(storage, run.offset, dst, plan.io_threads)?;
                bytes_read += run.len;
            }
            layout.offsets
        }
    };
    Ok((offsets, globals_len, bytes_read))
}

impl State {
    /// Step 4 of [`LayerCache::open`]: `k` empty slots for `n` layers, and the empty expert
    /// slots.
    fn new(k: usize, n: usize, stats: CacheStats, experts: ExpertState) -> State {
        State {
            slots: (0..k)
                .map(|_| Slot {
                    layer: None,
                    status: Status::Empty,
                    pins: 0,
                    last_use: 0,
                    fresh: false,
                    bytes: 0,
                })
                .collect(),
            layer_slot: vec![None; n],
            cursor: None,
            tick: 0,
            stats,
            shutdown: false,
            experts,
        }
    }
}

/// Step 5 of [`LayerCache::open`]: the background prefetcher, for the cyclic policy with a
/// window (LRU is the baseline without prefetch).
#[cfg(feature = "threads")]
fn spawn_prefetcher(shared: &Arc<Shared>) -> Result<Option<std::thread::JoinHandle<()>>, Error> {
    let plan = &shared.plan;
    if plan.window == 0 || shared.map.n_layers() == 0 || plan.policy != Policy::Cyclic {
        return Ok(None);
    }
    let s = shared.clone();
    std::thread::Builder::new()
        .name("strata-prefetch".into())
        .spawn(move || s.prefetch_loop())
        .map(Some)
        .map_err(|source| Error::Io {
            what: "spawning the prefetch thread".into(),
            offset: 0,
            len: 0,
            source,
        })
}

/// Release the pages wholly inside `e` of a mapping (pages shared with neighbours are kept).
fn release_range(storage: &dyn Storage, e: &Range<u64>) {
    let start = e.start.div_ceil(READ_ALIGN) * READ_ALIGN;
    let end = e.end / READ_ALIGN * READ_ALIGN;
    if end > start {
        storage.dont_need(start, end - start);
    }
}

/// Make `e` of the mapping at `base` resident: WILLNEED, then one populate call (the kernel's
/// readahead then streams the whole range; measured faster than populating pieces from several
/// threads), or one touched byte per page where the storage cannot populate.
fn populate_range(storage: &dyn Storage, base: *const u8, e: &Range<u64>) -> Result<(), Error> {
    storage.will_need(e.start, e.end - e.start);
    match storage.populate(e.start, e.end - e.start) {
        Some(result) => result,
        None => {
            // SAFETY: callers pass ranges of tensors, which LayerMap checked lie inside the
            // file, hence inside the mapping at `base`, which lives as long as `storage`.
            unsafe {
                touch_pages(
                    base.wrapping_add(e.start as usize),
                    (e.end - e.start) as usize,
                )
            };
            Ok(())
        }
    }
}

/// Read one byte per page so a mapped range is really resident.
///
/// # Safety
/// `ptr..ptr + len` must be readable.
unsafe fn touch_pages(ptr: *const u8, len: usize) {
    let mut sum = 0u8;
    let mut off = 0;
    while off < len {
        // SAFETY: off < len, inside the readable range the caller promised.
        sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(ptr.add(off)) });
        off += 4096;
    }
    std::hint::black_box(sum);
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters at worst stale; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Memory accounted for a loaded layer (its dense part): the bytes its reads fetch, or
    /// with the mapping, the exact bytes of its dense runs.
    fn footprint(&self, layer: usize) -> u64 {
        match self.memory {
            Memory::Mapped { .. } => self.map.layers()[layer].dense_bytes(),
            _ => self.dense[layer].read_bytes,
        }
    }

    /// Check that the dense part of `layer` fits slot `s` (the plan sized it so).
    fn check_fits(&self, layer: usize, s: usize) -> Result<(), Error> {
        let d = &self.dense[layer];
        let end = d.reads.last().map_or(0, |(r, at)| at + r.len);
        if end > self.slot_sizes[s] {
            return Err(Error::Layer {
                layer,
                source: Box::new(Error::Layout(format!(
                    "reads ending at byte {end} do not fit slot {s} of {} bytes",
                    self.slot_sizes[s]
                ))),
            });
        }
        Ok(())
    }

    #[cfg(feature = "threads")]
    /// Whether `layer` is resident for good and already loaded (skipped by the window).
    fn is_settled(&self, st: &State, layer: usize) -> bool {
        self.plan.dedicated_slot(layer).is_some()
            && st.layer_slot[layer].is_some_and(|s| matches!(st.slots[s].status, Status::Ready))
    }

    #[cfg(feature = "threads")]
    /// The next w layers after the cursor (cyclic order) that the prefetcher should have ready.
    fn window(&self, st: &State) -> Vec<usize> {
        let n = self.map.n_layers();
        let w = self.plan.window;
        let mut out = Vec::with_capacity(w);
        let first = st.cursor.map_or(0, |c| c + 1);
        for step in 0..n {
            if out.len() == w {
                break;
            }
            let l = (first + step) % n;
            if Some(l) == st.cursor {
                break;
            }
            if !self.is_settled(st, l) {
                out.push(l);
            }
        }
        out
    }

    /// A slot `layer` may be loaded into now. Pinned and loading slots are never taken; with
    /// `spare_fresh`, neither are prefetched layers not used yet (the prefetcher must not undo
    /// its own work; the consumer takes one only when nothing else is free).
    ///
    /// Layers resident for good have their own slot. Otherwise the victim is the least recently
    /// used unpinned slot of the pool: for the cyclic policy that pool is the w streaming slots,
    /// through which the streamed layers pass in scan order (so a streamed layer never survives
    /// a full token and the hits per token are exactly the R resident layers); for LRU it is
    /// every slot.
    fn pick_slot(&self, st: &State, layer: usize, spare_fresh: bool) -> Option<usize> {
        if let Some(s) = self.plan.dedicated_slot(layer) {
            return matches!(st.slots[s].status, Status::Empty).then_some(s);
        }
        let mut best: Option<(usize, u64)> = None;
        for s in self.plan.pool() {
            let slot = &st.slots[s];
            if slot.pins > 0 || matches!(slot.status, Status::Loading) {
                continue;
            }
            if slot.layer.is_none() {
                return Some(s);
            }
            if spare_fresh && slot.fresh {
                continue;
            }
            if best.is_none_or(|(_, oldest)| slot.last_use < oldest) {
                best = Some((s, slot.last_use));
            }
        }
        best.map(|(s, _)| s)
    }

    /// Take slot `s` for `layer` (status Loading); returns the evicted layer, if any.
    fn claim(&self, st: &mut State, s: usize, layer: usize) -> Option<usize> {
        let slot = &mut st.slots[s];
        let old = slot.layer.take();
        let was_ready = matches!(slot.status, Status::Ready);
        let old_bytes = slot.bytes;
        let bytes = self.footprint(layer);
        *slot = Slot {
            layer: Some(layer),
            status: Status::Loading,
            pins: 0,
            last_use: st.tick,
            fresh: false,
            bytes,
        };
        if let Some(old) = old {
            st.layer_slot[old] = None;
            if was_ready {
                st.stats.evictions += 1;
            }
        }
        st.layer_slot[layer] = Some(s);
        st.stats.resident_bytes = st.stats.resident_bytes - old_bytes + bytes;
        st.stats.peak_resident_bytes = st.stats.peak_resident_bytes.max(st.stats.resident_bytes);
        old
    }

    /// Empty slot `s` (after a failed load).
    fn clear(&self, st: &mut State, s: usize) {
        let slot = &mut st.slots[s];
        if let Some(l) = slot.layer.take() {
            st.layer_slot[l] = None;
        }
        st.stats.resident_bytes -= slot.bytes;
        slot.bytes = 0;
        slot.status = Status::Empty;
        slot.fresh = false;
    }

    /// Release the pages of an evicted layer (mmap); pages shared with neighbours are kept.
    fn release(&self, layer: usize) {
        if let Memory::Mapped { .. } = self.memory {
            for e in &self.map.layers()[layer].dense {
                release_range(self.storage.as_ref(), e);
            }
        }
    }

    /// The body of [`LayerCache::preload_progress`].
    fn fill_resident(
        self: &Arc<Self>,
        progress: &mut dyn FnMut(&PreloadProgress),
    ) -> Result<PreloadProgress, Error> {
        let total_layers = match self.plan.policy {
            Policy::Cyclic => self.plan.resident_layers,
            Policy::Lru => 0,
        };
        let mut p = PreloadProgress {
            total_bytes: (0..total_layers).map(|l| self.footprint(l)).sum(),
            total_layers,
            ..PreloadProgress::default()
        };
        // Layers someone else is loading (the prefetcher) or has loaded: waited for at the end.
        let mut others = Vec::new();
        #[cfg(feature = "threads")]
        if !matches!(self.memory, Memory::Mapped { .. }) {
            let mut jobs = Vec::new();
            let mut st = self.lock();
            for layer in 0..total_layers {
                let s = self.plan.dedicated_slot(layer).unwrap_or(layer);
                if st.layer_slot[layer].is_none() && matches!(st.slots[s].status, Status::Empty) {
                    self.claim(&mut st, s, layer);
                    jobs.push((layer, s));
                } else {
                    others.push(layer);
                }
            }
            drop(st);
            self.fill_parallel(&jobs, &mut p, progress)?;
        } else {
            others.extend(0..total_layers);
        }
        #[cfg(not(feature = "threads"))]
        others.extend(0..total_layers);
        for layer in others {
            drop(self.get(layer)?);
            p.bytes += self.footprint(layer);
            p.layers += 1;
            progress(&p);
        }
        Ok(p)
    }

    /// Reads the layers of `jobs` (layer, slot; every slot claimed, status Loading) as one
    /// queue of pieces with `io_threads` reads in flight; publishes each layer as Ready when
    /// its last piece is in. On an error the unfinished slots are emptied and the first error
    /// is returned.
    #[cfg(feature = "threads")]
    fn fill_parallel(
        self: &Arc<Self>,
        jobs: &[(usize, usize)],
        p: &mut PreloadProgress,
        progress: &mut dyn FnMut(&PreloadProgress),
    ) -> Result<(), Error> {
        use crate::storage::PIECE;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        // (job, file offset, offset in the slot, length) in file order.
        let mut pieces = Vec::new();
        let mut remaining = Vec::with_capacity(jobs.len());
        let mut first_error = None;
        for (j, &(layer, s)) in jobs.iter().enumerate() {
            if let Err(e) = self.check_fits(layer, s) {
                first_error.get_or_insert(e);
            }
            let before = pieces.len();
            for &(r, slot_at) in &self.dense[layer].reads {
                let n = r.len.div_ceil(PIECE as u64);
                pieces.extend((0..n).map(|i| {
                    let at = i * PIECE as u64;
                    (
                        j,
                        r.offset + at,
                        slot_at + at,
                        (r.len - at).min(PIECE as u64) as usize,
                    )
                }));
            }
            remaining.push(pieces.len() - before);
        }
        let mut finished = vec![false; jobs.len()];
        let mut errors = 0;
        if first_error.is_none() {
            // A dense part without bytes (a layer of expert tensors only) has no piece to wait for.
            for (j, &(_, s)) in jobs.iter().enumerate() {
                if remaining[j] == 0 {
                    self.lock().slots[s].status = Status::Ready;
                    finished[j] = true;
                    p.layers += 1;
                }
            }
        }
        if first_error.is_none() && !pieces.is_empty() {
            let next = AtomicUsize::new(0);
            let failed = AtomicBool::new(false);
            let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, Result<(), Error>)>();
            let workers = self.plan.io_threads.clamp(1, pieces.len());
            let clock = Clock::now();
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    let (next, failed, pieces) = (&next, &failed, &pieces);
                    scope.spawn(move || loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(j, file_at, at, len)) = pieces.get(i) else {
                            return;
                        };
                        let s = jobs[j].1;
                        // SAFETY: slot `s` holds the layer's reads (`check_fits`, before any
                        // thread started) and this piece lies inside one of them. Write step of the slot
                        // protocol (`Status`): `s` was claimed (Loading, no pins) by this
                        // `fill_parallel`, so no LayerRef covers it and no other loader writes
                        // it; the pieces are disjoint, so no two threads write the same byte;
                        // and the loader publishes `s` as Ready only after receiving every
                        // piece's result over the channel, after this write.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                self.memory.slot_ptr(s).add(at as usize),
                                len,
                            )
                        };
                        let result = self.storage.read_at(file_at, dst);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        if tx.send((j, len, result)).is_err() {
                            return;
                        }
                    });
                }
                drop(tx);
                for (j, len, result) in rx {
                    match result {
                        Ok(()) => {
                            p.bytes += len as u64;
                            remaining[j] -= 1;
                            if remaining[j] == 0 {
                                let (layer, s) = jobs[j];
                                let mut st = self.lock();
                                st.stats.bytes_read += self.footprint(layer);
                                st.slots[s].status = Status::Ready;
                                drop(st);
                                self.cond.notify_all();
                                finished[j] = true;
                                p.layers += 1;
                            }
                            progress(p);
                        }
                        Err(e) => {
                            errors += 1;
                            if first_error.is_none() {
                                first_error = Some(Error::Layer {
                                    layer: jobs[j].0,
                                    source: Box::new(e),
                                });
                            }
                        }
                    }
                }
            });
            self.lock().stats.read_time += clock.elapsed();
        }
        let Some(e) = first_error else {
            return Ok(());
        };
        let mut st = self.lock();
        st.stats.read_errors += errors;
        for (j, &(_, s)) in jobs.iter().enumerate() {
            if !finished[j] {
                self.clear(&mut st, s);
            }
        }
        drop(st);
        self.cond.notify_all();
        Err(e)
    }

    /// Bring `layer` into slot `s` (called without the lock, slot in state Loading).
    fn load(&self, layer: usize, s: usize) -> Result<(), Error> {
        let wrap = |e: Error| Error::Layer {
            layer,
            source: Box::new(e),
        };
        match self.memory {
            Memory::Mapped { base } => {
                for e in &self.map.layers()[layer].dense {
                    populate_range(self.storage.as_ref(), base, e).map_err(wrap)?;
                }
                Ok(())
            }
            _ => {
                self.check_fits(layer, s)?;
                for &(r, at) in &self.dense[layer].reads {
                    // SAFETY: slot `s` holds `at + r.len` bytes (`check_fits` above; the reads
                    // are disjoint and in slot order). Write step of the slot protocol
                    // (`Status`): the caller claimed `s` (Loading, no pins), so no LayerRef
                    // covers its bytes and no other loader writes them until the caller
                    // publishes them as Ready under the mutex, after this returns (`read_split`
                    // joins its threads first).
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            self.memory.slot_ptr(s).add(at as usize),
                            r.len as usize,
                        )
                    };
                    read_split(self.storage.as_ref(), r.offset, dst, self.plan.io_threads)
                        .map_err(wrap)?;
                }
                Ok(())
            }
        }
    }

    /// A pinned reference to `layer` in ready slot `s`.
    fn make_ref(self: &Arc<Self>, st: &mut State, layer: usize, s: usize) -> LayerRef {
        st.slots[s].pins += 1;
        st.tick += 1;
        st.slots[s].last_use = st.tick;
        // Mapped: the whole mapping, tensors at their file offsets; owned: the slot's reads.
        let (base, len) = match self.memory {
            Memory::Mapped { base } => (base, self.plan.file_len as usize),
            _ => (
                self.memory.slot_ptr(s) as *const u8,
                self.dense[layer].footprint as usize,
            ),
        };
        LayerRef {
            inner: Arc::new(RefInner {
                shared: self.clone(),
                layer: Some(layer),
                slot: Some(s),
                base,
                len,
            }),
        }
    }

    fn get(self: &Arc<Self>, layer: usize) -> Result<LayerRef, Error> {
        let n = self.map.n_layers();
        if layer >= n {
            return Err(Error::NoSuchLayer { layer, n_layers: n });
        }
        let clock = Clock::now();
        let mut st = self.lock();
        st.stats.gets += 1;
        // `waited`: blocked at all (stall time); `waited_load`: blocked on this layer's load.
        let mut waited = false;
        let mut waited_load = false;
        loop {
            if let Some(s) = st.layer_slot[layer] {
                match &st.slots[s].status {
                    Status::Ready => {
                        if st.slots[s].fresh || waited_load {
                            st.stats.prefetch_hits += 1;
                        } else {
                            st.stats.hits += 1;
                        }
                        st.slots[s].fresh = false;
                        if waited {
                            st.stats.stall += clock.elapsed();
                        }
                        st.cursor = Some(layer);
                        let r = self.make_ref(&mut st, layer, s);
                        drop(st);
                        self.cond.notify_all();
                        return Ok(r);
                    }
                    Status::Loading => {
                        waited = true;
                        waited_load = true;
                        st = self.wait(st);
                        continue;
                    }
                    Status::Failed => {
                        // A speculative read failed (already counted in `read_errors`). Its
                        // error may be stale by now (the storage recovered), so the demand
                        // read below tries again and reports its own outcome.
                        self.clear(&mut st, s);
                        continue;
                    }
                    Status::Empty => unreachable!("a mapped layer's slot is never Empty"),
                }
            }
            let Some(s) = self
                .pick_slot(&st, layer, true)
                .or_else(|| self.pick_slot(&st, layer, false))
            else {
                waited = true;
                st = self.wait(st);
                continue;
            };
            let evicted = self.claim(&mut st, s, layer);
            st.cursor = Some(layer);
            drop(st);
            self.cond.notify_all();
            if let Some(old) = evicted {
                self.release(old);
            }
            let read_clock = Clock::now();
            let result = self.load(layer, s);
            let read_time = read_clock.elapsed();
            st = self.lock();
            st.stats.read_time += read_time;
            st.stats.stall += clock.elapsed();
            return match result {
                Ok(()) => {
                    st.stats.sync_loads += 1;
                    st.stats.bytes_read += self.read_range_len(layer);
                    st.slots[s].status = Status::Ready;
                    let r = self.make_ref(&mut st, layer, s);
                    drop(st);
                    self.cond.notify_all();
                    Ok(r)
                }
                Err(e) => {
                    st.stats.read_errors += 1;
                    self.clear(&mut st, s);
                    drop(st);
                    self.cond.notify_all();
                    Err(e)
                }
            };
        }
    }

    fn read_range_len(&self, layer: usize) -> u64 {
        self.footprint(layer)
    }

    /// The background prefetcher: load the first missing layer of the window, forever.
    #[cfg(feature = "threads")]
    fn prefetch_loop(self: Arc<Self>) {
        loop {
            let mut st = self.lock();
            let (layer, s) = loop {
                if st.shutdown {
                    return;
                }
                if let Some(job) = self.next_job(&st) {
                    break job;
                }
                st = self.wait(st);
            };
            let evicted = self.claim(&mut st, s, layer);
            st.stats.prefetch_loads += 1;
            drop(st);
            if let Some(old) = evicted {
                self.release(old);
            }
            let clock = Clock::now();
            let result = self.load(layer, s);
            let read_time = clock.elapsed();
            let mut st = self.lock();
            st.stats.read_time += read_time;
            match result {
                Ok(()) => {
                    st.stats.bytes_read += self.read_range_len(layer);
                    st.slots[s].status = Status::Ready;
                    st.slots[s].fresh = true;
                }
                Err(_) => {
                    st.stats.read_errors += 1;
                    st.slots[s].status = Status::Failed;
                    // Kept like an unused prefetch, so the prefetcher does not retry it.
                    st.slots[s].fresh = true;
                }
            }
            drop(st);
            self.cond.notify_all();
        }
    }

    #[cfg(feature = "threads")]
    fn next_job(&self, st: &State) -> Option<(usize, usize)> {
        let window = self.window(st);
        for &l in &window {
            if st.layer_slot[l].is_some() {
                continue;
            }
            return self.pick_slot(st, l, true).map(|s| (l, s));
        }
        None
    }
}

/// One pin of a slot (the read step of the slot protocol, [`Status`]): made by `make_ref`
/// under the mutex while the slot is Ready, unpinned when the last [`LayerRef`] clone drops.
struct RefInner {
    shared: Arc<Shared>,
    /// `None` for the globals.
    layer: Option<usize>,
    /// Pinned slot (`None` for the globals, which are never evicted).
    slot: Option<usize>,
    /// Layers: the slot's first byte (mapping: the mapping's first byte). Globals: the globals
    /// region's start.
    base: *const u8,
    len: usize,
}

// SAFETY: `base` points into memory owned by `shared` (kept alive by the Arc) or lent by its
// storage, which does not change while the slot is pinned by this RefInner (or ever, for the
// globals): the read step of the slot protocol (`Status`). Unpinning on drop takes the mutex,
// from whichever thread.
unsafe impl Send for RefInner {}
// SAFETY: as above; RefInner only hands out shared slices of those unchanging bytes.
unsafe impl Sync for RefInner {}

impl Drop for RefInner {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            self.shared.lock().slots[s].pins -= 1;
            self.shared.cond.notify_all();
        }
    }
}

/// A resident layer (or the globals): cheap to clone, keeps the bytes resident while alive.
///
/// Holding more [`LayerRef`]s of streamed layers than there are streaming slots makes the next
/// `get` of another streamed layer wait until one is dropped.
#[derive(Clone)]
pub struct LayerRef {
    inner: Arc<RefInner>,
}

impl std::fmt::Debug for LayerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerRef")
            .field("layer", &self.inner.layer)
            .field("bytes", &self.inner.len)
            .finish()
    }
}

/// One tensor's bytes as stored in the file (quantized blocks, never converted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    /// Name inside its scope (without `blk.N.` for layers).
    pub name: &'a str,
    /// Element type.
    pub ty: GgmlType,
    /// Dimensions in ggml order (`dims[0]` is the row length).
    pub dims: &'a [u64],
    /// The tensor's bytes.
    pub bytes: &'a [u8],
}

impl LayerRef {
    /// The layer number, or `None` for the globals.
    pub fn layer(&self) -> Option<usize> {
        self.inner.layer
    }

    fn entries(&self) -> &[TensorEntry] {
        match self.inner.layer {
            Some(l) => &self.inner.shared.map.layers()[l].tensors,
            None => self.inner.shared.map.globals(),
        }
    }

    fn view(&self, i: usize) -> TensorView<'_> {
        let entries = self.entries();
        let t = &entries[i];
        let shared = &self.inner.shared;
        let pinned = (shared.memory.globals_ptr() as *const u8, shared.globals_len);
        let here = (self.inner.base, self.inner.len);
        let ((base, base_len), off) = match self.inner.layer {
            Some(_) if matches!(shared.memory, Memory::Mapped { .. }) => (here, t.offset),
            Some(l) => match shared.dense[l].place(t.offset, t.n_bytes) {
                Some(Place::Slot(off)) => (here, off),
                Some(Place::Pinned(off)) => (pinned, off),
                None => unreachable!("a dense tensor lies inside one of its layer's reads"),
            },
            None => (here, shared.globals_offsets[i]),
        };
        let (off, len) = (off as usize, t.n_bytes as usize);
        assert!(
            off + len <= base_len,
            "tensor view inside its layer or the pinned region (checked at open)"
        );
        // SAFETY: `off + len <= base_len`, the bytes valid from `base` (this slot, or the pinned
        // region: the globals and the resident head, written only by `open` before any
        // LayerRef exists). Read step of the slot protocol (`Status`): `self` pins its slot,
        // made Ready under the mutex after its load's writes (happens-before), and no loader
        // claims a pinned slot, so the bytes stay unchanged while `self` lives, which bounds
        // the returned lifetime. `Shared`, which owns the memory, lives as long.
        let bytes = unsafe { std::slice::from_raw_parts(base.add(off), len) };
        TensorView {
            name: &t.name,
            ty: t.ty,
            dims: &t.dims,
            bytes,
        }
    }

    /// Whether entry `i` has bytes here: every layer tensor does; a global does unless it is a
    /// row global left in storage.
    fn present(&self, i: usize) -> bool {
        self.inner.layer.is_some() || self.inner.shared.globals_offsets[i] != NOT_PINNED
    }

    /// The tensor `name` (without `blk.N.` for layers, full name for globals), or `None` (also
    /// for a row global left in storage: read its rows with [`LayerCache::read_global`]).
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        let i = self
            .entries()
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()?;
        self.present(i).then(|| self.view(i))
    }

    /// The tensor `name`, or [`Error::NoSuchTensor`] ([`Error::NotPinned`] for a row global
    /// left in storage).
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, Error> {
        match self
            .entries()
            .binary_search_by(|t| t.name.as_str().cmp(name))
        {
            Ok(i) if self.present(i) => Ok(self.view(i)),
            Ok(_) => Err(Error::NotPinned {
                name: name.to_string(),
            }),
            Err(_) => Err(Error::NoSuchTensor {
                name: name.to_string(),
                scope: match self.inner.layer {
                    Some(l) => format!("layer {l}"),
                    None => String::from("globals"),
                },
            }),
        }
    }

    /// Every tensor with bytes here, sorted by name (the globals without the row globals left
    /// in storage).
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> + '_ {
        (0..self.entries().len())
            .filter(|&i| self.present(i))
            .map(|i| self.view(i))
    }
}

#[cfg(test)]
mod tests {
    //! The portable core on its own: the arena over in-memory bytes, with whatever features
    //! this build has (`cargo test --no-default-features --features arena --lib` runs it with
    //! no filesystem, no mmap and no threads).

    use super::*;
    use crate::MemStorage;
    use strata_gguf::GgufWriter;

    fn model(n_layers: usize) -> Vec<u8> {
        let mut w = GgufWriter::new();
        let mut fill = 0u8;
        let mut bytes = |n: usize| {
            fill = fill.wrapping_add(37);
            (0..n)
                .map(|i| fill.wrapping_add(i as u8))
                .collect::<Vec<u8>>()
        };
        w.add_tensor("token_embd.weight", GgmlType::F32, &[64, 10], bytes(2560))
            .unwrap();
        for i in 0..n_layers {
            w.add_tensor(
                format!("blk.{i}.a.weight"),
                GgmlType::F32,
                &[1000 + 100 * i as u64],
                bytes(4000 + 400 * i),
            )
            .unwrap();
            w.add_tensor(format!("blk.{i}.b.bias"), GgmlType::F16, &[8], bytes(16))
                .unwrap();
        }
        w.add_tensor("output_norm.weight", GgmlType::F32, &[64], bytes(256))
            .unwrap();
        w.to_vec().unwrap()
    }

    /// A cache over `bytes` in memory with the arena backend.
    fn open_arena(bytes: &[u8], config: CacheConfig) -> LayerCache {
        let gguf = Gguf::from_bytes(bytes).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.to_vec()));
        let config = CacheConfig {
            backend: Backend::Arena,
            ..config
        };
        LayerCache::open(storage, gguf, &config).unwrap()
    }

    #[test]
    fn arena_over_memory_serves_exact_bytes_within_the_budget() {
        let bytes = model(6);
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.clone()));
        let config = CacheConfig {
            backend: Backend::Arena,
            budget: Budget::Min,
            prefetch: 1,
            io_threads: 1,
            ..CacheConfig::default()
        };
        let cache = LayerCache::open(storage, gguf.clone(), &config).unwrap();
        assert_eq!(cache.plan().slots, 2);
        assert_eq!(cache.plan().resident_layers, 1);
        for _token in 0..3 {
            for layer in 0..6 {
                let l = cache.get(layer).unwrap();
                for (short, full) in [
                    ("a.weight", format!("blk.{layer}.a.weight")),
                    ("b.bias", format!("blk.{layer}.b.bias")),
                ] {
                    let t = gguf.tensor(&full).unwrap();
                    assert_eq!(
                        l.tensor(short).unwrap().bytes,
                        gguf.tensor_data(&bytes, t).unwrap()
                    );
                }
            }
        }
        let t = gguf.tensor("output_norm.weight").unwrap();
        assert_eq!(
            cache.globals().tensor("output_norm.weight").unwrap().bytes,
            gguf.tensor_data(&bytes, t).unwrap()
        );
        let s = cache.stats();
        assert!(s.peak_resident_bytes <= s.budget_bytes);
        assert_eq!(s.hits, 2, "layer 0 is resident: a hit in tokens 2 and 3");
        assert_eq!(
            s.budget_bytes,
            cache.plan().globals_bytes + 2 * cache.plan().slot_bytes
        );
    }

    #[test]
    fn the_leftover_keeps_the_head_of_the_first_streamed_layer() {
        // Layers of three tensors, two of them several aligned blocks long.
        let mut w = GgufWriter::new();
        w.add_tensor("token_embd.weight", GgmlType::F32, &[64, 10], vec![1; 2560])
            .unwrap();
        let names = ["a.weight", "b.weight", "c.bias"];
        for i in 0..4u8 {
            for (short, n) in names.iter().zip([5000u64, 4000, 8]) {
                let data: Vec<u8> = (0..4 * n).map(|k| (k as u8).wrapping_mul(7) ^ i).collect();
                w.add_tensor(format!("blk.{i}.{short}"), GgmlType::F32, &[n], data)
                    .unwrap();
            }
        }
        let bytes = w.to_vec().unwrap();
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        // No prefetcher: every read is made by the `get` that needs it, so the bytes read per
        // token are exact.
        let open = |budget| {
            let config = CacheConfig {
                budget,
                prefetch: 0,
                io_threads: 1,
                ..CacheConfig::default()
            };
            open_arena(&bytes, config)
        };
        let min = open(Budget::Min).plan().clone();
        let mut heads = 0;
        for extra in (0..2 * min.slot_bytes).step_by(2 * READ_ALIGN as usize) {
            let cache = open(Budget::Bytes(min.minimum_bytes + extra));
            let plan = cache.plan().clone();
            let r = plan.resident_layers;
            if plan.head_bytes > 0 {
                heads += 1;
                let d = &cache.shared.dense[r];
                assert!(
                    d.head.is_some() && d.read_bytes < min.slot_bytes,
                    "{plan:?}"
                );
            }
            assert!(plan.pinned_bytes() + plan.resident_bytes <= plan.budget_bytes);
            let mut per_token = Vec::new();
            for _token in 0..2 {
                let before = cache.stats().bytes_read;
                for layer in 0..4 {
                    let l = cache.get(layer).unwrap();
                    for short in names {
                        let t = gguf.tensor(&format!("blk.{layer}.{short}")).unwrap();
                        assert_eq!(
                            l.tensor(short).unwrap().bytes,
                            gguf.tensor_data(&bytes, t).unwrap(),
                            "layer {layer} {short}, {plan:?}"
                        );
                    }
                }
                per_token.push(cache.stats().bytes_read - before);
            }
            // The second token reads exactly the streamed layers' reads (layer R without its
            // head); the first read the resident layers as well.
            let streamed: u64 = (r..4).map(|l| cache.shared.dense[l].read_bytes).sum();
            assert_eq!(per_token[1], streamed, "{plan:?}");
            let s = cache.stats();
            assert!(s.peak_resident_bytes <= s.budget_bytes, "{s:?}");
        }
        assert!(heads > 0, "no budget between two slots kept a head");
    }

    #[test]
    fn row_globals_stay_in_storage_below_a_full_budget() {
        let bytes = model(6);
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        // No prefetcher, so that the counted reads are exactly the ones asked for.
        let open = |budget, rows: &[&str]| {
            let config = CacheConfig {
                budget,
                prefetch: 0,
                io_threads: 1,
                row_globals: rows.iter().map(|r| r.to_string()).collect(),
                ..CacheConfig::default()
            };
            open_arena(&bytes, config)
        };
        let embd = gguf.tensor("token_embd.weight").unwrap();
        let table = gguf.tensor_data(&bytes, embd).unwrap();
        let pinned = open(Budget::Min, &["not.in.the.file"]);
        let cache = open(Budget::Min, &["token_embd.weight", "not.in.the.file"]);
        assert_eq!(pinned.plan().row_globals_bytes, 0);
        assert_eq!(cache.plan().row_globals_bytes, embd.n_bytes);
        assert!(cache.plan().globals_bytes < pinned.plan().globals_bytes);
        assert!(cache.plan().minimum_bytes < pinned.plan().minimum_bytes);
        let g = cache.globals();
        assert!(g.get("token_embd.weight").is_none());
        assert!(matches!(
            g.tensor("token_embd.weight"),
            Err(Error::NotPinned { .. })
        ));
        assert!(matches!(
            g.tensor("no.such.weight"),
            Err(Error::NoSuchTensor { .. })
        ));
        let names: Vec<&str> = g.tensors().map(|t| t.name).collect();
        assert_eq!(names, ["output_norm.weight"]);
        // A row (256 bytes of F32 × 64) read from storage and counted; the other globals served.
        let before = cache.stats().bytes_read;
        let mut row = vec![0u8; 256];
        cache
            .read_global("token_embd.weight", 3 * 256, &mut row)
            .unwrap();
        assert_eq!(row, table[768..1024]);
        assert_eq!(cache.stats().bytes_read, before + 256);
        let norm = gguf.tensor("output_norm.weight").unwrap();
        let mut out = vec![0u8; 8];
        cache
            .read_global("output_norm.weight", 4, &mut out)
            .unwrap();
        assert_eq!(out, gguf.tensor_data(&bytes, norm).unwrap()[4..12]);
        assert_eq!(
            cache.stats().bytes_read,
            before + 256,
            "pinned: copied, not read"
        );
        assert!(matches!(
            cache.read_global("token_embd.weight", 9 * 256 + 1, &mut row),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            cache.read_global("no.such.weight", 0, &mut row),
            Err(Error::NoSuchTensor { .. })
        ));
        // The streamed layers still come whole.
        let t = gguf.tensor("blk.5.a.weight").unwrap();
        assert_eq!(
            cache.get(5).unwrap().tensor("a.weight").unwrap().bytes,
            gguf.tensor_data(&bytes, t).unwrap()
        );
        // Room for everything: the table is pinned with the other globals.
        let all = open(Budget::All, &["token_embd.weight"]);
        assert_eq!(all.plan().row_globals_bytes, 0);
        assert_eq!(
            all.globals().tensor("token_embd.weight").unwrap().bytes,
            table
        );
        let before = all.stats().bytes_read;
        all.read_global("token_embd.weight", 256, &mut row).unwrap();
        assert_eq!(row, table[256..512]);
        assert_eq!(all.stats().bytes_read, before);
    }

    #[cfg(feature = "threads")]
    mod concurrent {
        //! The slot hand-off between the prefetch thread, loaders and readers, in the shapes
        //! the engine uses it (and some it does not). Small enough to run under Miri, which
        //! checks the raw-pointer protocol for data races, use after free and aliasing
        //! violations: `cargo +nightly miri test -p strata-layer-cache --no-default-features
        //! --features arena,threads --lib cache::tests` (`cargo xtask miri`). Under Miri a
        //! load is split into one-page pieces (`storage::PIECE`), so these layers of two pages
        //! each are written by two threads at once.

        use super::*;
        use crate::testing::Switched;

        /// Every tensor of layer `layer` in `l` has the file's bytes.
        fn check(bytes: &[u8], gguf: &Gguf, layer: usize, l: &LayerRef) {
            for short in ["a.weight", "b.bias"] {
                let t = gguf.tensor(&format!("blk.{layer}.{short}")).unwrap();
                assert_eq!(
                    l.tensor(short).unwrap().bytes,
                    gguf.tensor_data(bytes, t).unwrap()
                );
            }
        }

        fn open_min(bytes: &[u8], prefetch: usize) -> LayerCache {
            open_with(bytes, Backend::Arena, Policy::Cyclic, Budget::Min, prefetch)
        }

        /// A cache over `bytes` in memory, with two reads in flight per load.
        fn open_with(
            bytes: &[u8],
            backend: Backend,
            policy: Policy,
            budget: Budget,
            prefetch: usize,
        ) -> LayerCache {
            let gguf = Gguf::from_bytes(bytes).unwrap();
            let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.to_vec()));
            let config = CacheConfig {
                backend,
                budget,
                policy,
                prefetch,
                io_threads: 2,
                ..CacheConfig::default()
            };
            LayerCache::open(storage, gguf, &config).unwrap()
        }

        #[test]
        fn threads_sharing_a_small_cache_read_exact_bytes_through_eviction() {
            let bytes = model(5);
            let gguf = Gguf::from_bytes(&bytes).unwrap();
            let rounds = if cfg!(miri) { 2 } else { 20 };
            // Every kind of memory: one arena, a buffer per slot, the storage's lent bytes; the LRU
            // policy has no prefetcher, its gets load and evict concurrently.
            for (backend, policy) in [
                (Backend::Arena, Policy::Cyclic),
                (Backend::File, Policy::Cyclic),
                (Backend::Mmap, Policy::Cyclic),
                (Backend::Arena, Policy::Lru),
            ] {
                let cache = open_with(&bytes, backend, policy, Budget::Min, 2);
                std::thread::scope(|s| {
                    for t in 0..3 {
                        let (cache, gguf, bytes) = (&cache, &gguf, &bytes);
                        s.spawn(move || {
                            for i in 0..rounds * 5 {
                                let layer = (t + i) % 5;
                                let l = cache.get(layer).unwrap();
                                check(bytes, gguf, layer, &l);
                            }
                        });
                    }
                });
                let st = cache.stats();
                assert!(
                    st.peak_resident_bytes <= st.budget_bytes,
                    "{backend:?} {policy:?} {st}"
                );
                assert!(st.evictions > 0, "{backend:?} {policy:?} {st}");
            }
        }

        #[test]
        fn a_get_racing_the_prefetch_of_its_layer_waits_for_it() {
            let bytes = model(4);
            let gguf = Gguf::from_bytes(&bytes).unwrap();
            for _ in 0..if cfg!(miri) { 2 } else { 50 } {
                let cache = open_min(&bytes, 1);
                // get(0) starts the prefetch of layer 1; the get of 1 meets it in flight or done.
                drop(cache.get(0).unwrap());
                let l = cache.get(1).unwrap();
                check(&bytes, &gguf, 1, &l);
            }
        }

        #[test]
        fn a_preload_races_gets_and_the_prefetcher() {
            let bytes = model(6);
            let gguf = Gguf::from_bytes(&bytes).unwrap();
            let min = open_min(&bytes, 2).plan().clone();
            let budget = Budget::Bytes(min.budget_bytes + 2 * READ_ALIGN);
            for _ in 0..if cfg!(miri) { 2 } else { 20 } {
                let cache = open_with(&bytes, Backend::Arena, Policy::Cyclic, budget, 2);
                let resident = cache.plan().resident_layers;
                assert!((2..6).contains(&resident), "{:?}", cache.plan());
                std::thread::scope(|s| {
                    let cache = &cache;
                    // The preload claims the resident layers' slots and fills them with two
                    // threads, piece by piece, while gets of the same layers wait for them.
                    s.spawn(move || {
                        let done = cache.preload_progress(&mut |_| {}).unwrap();
                        assert_eq!(done.layers, resident);
                    });
                    for layer in 0..6 {
                        check(&bytes, &gguf, layer, &cache.get(layer).unwrap());
                    }
                });
                for layer in 0..6 {
                    check(&bytes, &gguf, layer, &cache.get(layer).unwrap());
                }
                let st = cache.stats();
                assert!(st.peak_resident_bytes <= st.budget_bytes, "{st}");
            }
        }

        #[test]
        fn a_failed_prefetch_is_read_again_by_the_get_of_its_layer() {
            use std::sync::atomic::Ordering::SeqCst;
            let bytes = model(5);
            let gguf = Gguf::from_bytes(&bytes).unwrap();
            let storage = Arc::new(Switched {
                inner: MemStorage::new(bytes.clone()),
                failing: false.into(),
            });
            let config = CacheConfig {
                backend: Backend::Arena,
                budget: Budget::Min,
                prefetch: 2,
                io_threads: 2,
                ..CacheConfig::default()
            };
            let cache = LayerCache::open(storage.clone(), gguf.clone(), &config).unwrap();
            storage.failing.store(true, SeqCst);
            assert!(cache.get(3).is_err());
            // The get started the prefetch of layers 4 and 0: wait until one has failed.
            while cache.stats().read_errors < 2 {
                std::thread::yield_now();
            }
            storage.failing.store(false, SeqCst);
            // Failed slots are emptied and loaded again, racing the prefetcher's next loads.
            for layer in 0..5 {
                check(&bytes, &gguf, layer, &cache.get(layer).unwrap());
            }
        }

        #[test]
        fn the_cache_drops_with_a_prefetch_in_flight_and_refs_outliving_it() {
            let bytes = model(4);
            let gguf = Gguf::from_bytes(&bytes).unwrap();
            let cache = open_min(&bytes, 2);
            let l = cache.get(2).unwrap();
            let globals = cache.globals().clone();
            // Another thread holds a clone of the same pin and reads it after the drop.
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (l2, bytes2, gguf2) = (l.clone(), bytes.clone(), gguf.clone());
            let reader = std::thread::spawn(move || {
                rx.recv().unwrap();
                check(&bytes2, &gguf2, 2, &l2);
            });
            // The prefetch of layers 3 and 0 is under way: drop the cache now.
            drop(cache);
            tx.send(()).unwrap();
            check(&bytes, &gguf, 2, &l);
            drop(l);
            reader.join().unwrap();
            let t = gguf.tensor("output_norm.weight").unwrap();
            assert_eq!(
                globals.tensor("output_norm.weight").unwrap().bytes,
                gguf.tensor_data(&bytes, t).unwrap()
            );
        }
    }

    #[test]
    fn dense_slots_hold_only_the_dense_runs() {
        let bytes = crate::testing::moe_model(3);
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        for backend in [Backend::Arena, Backend::File, Backend::Mmap] {
            let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.clone()));
            // No prefetcher: every read below is a get's own.
            let config = CacheConfig {
                backend,
                budget: Budget::All,
                io_threads: 2,
                prefetch: 0,
                ..CacheConfig::default()
            };
            let cache = LayerCache::open(storage, gguf.clone(), &config).unwrap();
            let globals_read = cache.stats().bytes_read;
            let mut dense_reads = 0;
            for layer in 0..3 {
                let l = cache.get(layer).unwrap();
                let info = &cache.layer_map().layers()[layer];
                assert_eq!(info.dense.len(), 4);
                for t in &info.tensors {
                    let full = gguf.tensor(&format!("blk.{layer}.{}", t.name)).unwrap();
                    assert_eq!(
                        l.tensor(&t.name).unwrap().bytes,
                        gguf.tensor_data(&bytes, full).unwrap(),
                        "{backend:?} layer {layer} {}",
                        t.name
                    );
                }
                assert!(l.get("ffn_up_exps.weight").is_none());
                assert_eq!(l.tensors().count(), 4);
                dense_reads += match backend {
                    Backend::Mmap => info.dense_bytes(),
                    _ => info
                        .dense
                        .iter()
                        .map(|r| ReadRange::covering(r, bytes.len() as u64).len)
                        .sum::<u64>(),
                };
                // The reads skip every expert tensor (each 40 KiB, far more than the waste).
                assert!(dense_reads < 3 * info.expert_bytes() * 8);
            }
            let s = cache.stats();
            assert_eq!(s.bytes_read - globals_read, dense_reads, "{backend:?}");
            // Alignment waste is at most two blocks per run.
            for (l, info) in cache.layer_map().layers().iter().enumerate() {
                let fp = cache.shared.dense[l].footprint;
                assert!(
                    fp <= info.dense_bytes() + 4 * 2 * READ_ALIGN,
                    "layer {l}: {fp}"
                );
            }
        }
    }

    #[test]
    fn cyclic_split_packs_whole_layers_by_their_own_size() {
        // Everything fits: every layer resident, no streaming slot.
        assert_eq!(cyclic_split(&[10; 4], 5, 45, 2), (4, 0, 0));
        // Small layers first, two large ones last: 7 small layers + 2 slots of 40 = 150. The
        // old rule (K = 150 / 40 = 3 slots of the largest layer, K − w = 1 resident) read 9 of
        // 10 layers per token; this reads 3.
        let fp = [10, 10, 10, 10, 10, 10, 10, 10, 40, 40];
        assert_eq!(cyclic_split(&fp, 0, 150, 2), (7, 2, 40));
        assert_eq!(cyclic_split(&fp, 0, 159, 2), (7, 2, 40));
        // Large layer first: it is resident at its own size, the slots are sized for the small
        // ones that stream (the old rule: (100 − 0) / 40 − 2 = 0 resident).
        let fp = [40, 10, 10, 10, 10, 10, 10, 10, 10, 10];
        assert_eq!(cyclic_split(&fp, 0, 100, 2), (5, 2, 10));
        // Uniform layers: the same count as K − w.
        let fp = [100; 32];
        let g = 130;
        for budget in [g + 300, g + 1299, g + 1300, g + 3100, g + 3199] {
            let k = (budget - g) / 100;
            assert_eq!(cyclic_split(&fp, g, budget, 2), (k as usize - 2, 2, 100));
        }
        // Never more than the budget, never a whole-budget layer left out.
        let fp: Vec<u64> = (0..17).map(|i| 4096 * (1 + (i * 7 % 5))).collect();
        // From the minimum (3 × the largest layer) to just below everything.
        for budget in (3 * 5 * 4096..fp.iter().sum::<u64>()).step_by(1000) {
            let (r, w, slot) = cyclic_split(&fp, 0, budget, 2);
            let used = fp[..r].iter().sum::<u64>() + w as u64 * slot;
            assert!(used <= budget, "budget {budget}: {r} resident use {used}");
            assert_eq!(slot, *fp[r..].iter().max().unwrap());
            let one_more = fp[..=r].iter().sum::<u64>()
                + 2.min(fp.len() - r - 1) as u64 * fp[r + 1..].iter().max().unwrap_or(&0);
            assert!(one_more > budget, "budget {budget}: {} would fit", r + 1);
        }
    }

    /// A model whose layer `i` is one F32 tensor of `sizes[i]` bytes.
    fn model_of_sizes(sizes: &[usize]) -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_tensor("token_embd.weight", GgmlType::F32, &[1024], vec![7u8; 4096])
            .unwrap();
        for (i, &n) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..n).map(|b| (b * 31 + i) as u8).collect();
            w.add_tensor(format!("blk.{i}.w"), GgmlType::F32, &[n as u64 / 4], bytes)
                .unwrap();
        }
        w.to_vec().unwrap()
    }

    #[test]
    fn the_whole_budget_holds_small_layers_the_old_rule_left_out() {
        let mut sizes = vec![3 * 4096; 8];
        sizes.extend([12 * 4096, 12 * 4096]);
        let bytes = model_of_sizes(&sizes);
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        let open = |budget| {
            let config = CacheConfig {
                budget,
                prefetch: 2,
                io_threads: 2,
                ..CacheConfig::default()
            };
            open_arena(&bytes, config)
        };
        let probe = open(Budget::Min).plan().clone();
        let fp: Vec<u64> = (0..sizes.len())
            .map(|l| {
                let e = &open(Budget::All).layer_map().layers()[l].extent.clone();
                ReadRange::covering(e, bytes.len() as u64).footprint()
            })
            .collect();
        let budget = probe.globals_bytes + fp[..7].iter().sum::<u64>() + 2 * fp[9];
        let cache = open(Budget::Bytes(budget));
        let plan = cache.plan().clone();
        let old_rule = ((budget - plan.globals_bytes) / plan.slot_bytes) as usize - 2;
        assert_eq!(plan.resident_layers, 7, "{plan:?}");
        assert!(old_rule < 7, "the old rule kept {old_rule}");
        assert_eq!(plan.streaming_slots, 2);
        assert_eq!(plan.stream_slot_bytes, fp[9]);
        assert_eq!(plan.resident_bytes, fp[..7].iter().sum::<u64>());
        assert_eq!(plan.slots, 9);
        assert_eq!(cache.preload(&mut |_, _| {}).unwrap(), 7);
        for _token in 0..3 {
            for layer in 0..sizes.len() {
                let l = cache.get(layer).unwrap();
                let t = gguf.tensor(&format!("blk.{layer}.w")).unwrap();
                assert_eq!(
                    l.tensor("w").unwrap().bytes,
                    gguf.tensor_data(&bytes, t).unwrap()
                );
            }
        }
        let s = cache.stats();
        assert!(s.peak_resident_bytes <= s.budget_bytes, "{s}");
        assert_eq!(s.budget_bytes, budget);
        // Streamed per token: exactly the 3 layers after the resident ones.
        assert_eq!(s.hits, 7 * 3);
    }

    #[test]
    fn few_uneven_layers_open_with_budget_all_and_min() {
        // 3 layers, w = 2: (w + 1) × the largest is more than all three together.
        let bytes = model_of_sizes(&[4096, 3 * 4096, 4096]);
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        for (budget, policy) in [
            (Budget::All, Policy::Cyclic),
            (Budget::Min, Policy::Cyclic),
            (Budget::All, Policy::Lru),
            (Budget::Min, Policy::Lru),
        ] {
            let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.clone()));
            let config = CacheConfig {
                backend: Backend::Arena,
                budget,
                policy,
                ..CacheConfig::default()
            };
            let cache = LayerCache::open(storage, gguf.clone(), &config).unwrap();
            let plan = cache.plan();
            assert_eq!(
                plan.minimum_bytes, plan.budget_bytes,
                "{budget:?} {policy:?}"
            );
            if policy == Policy::Cyclic {
                assert_eq!(plan.resident_layers, 3);
                assert!(plan.budget_bytes < plan.globals_bytes + 3 * plan.slot_bytes);
            }
            for layer in 0..3 {
                cache.get(layer).unwrap();
            }
            let s = cache.stats();
            assert!(s.peak_resident_bytes <= s.budget_bytes, "{s}");
        }
    }
}
