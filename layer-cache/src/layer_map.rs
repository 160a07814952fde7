//! [`LayerMap`]: the GGUF tensor table split into globals and per-block layers.
//!
//! A tensor named `blk.N.rest` belongs to layer N under the short name `rest`; every other tensor
//! (token embeddings, output head, final norm, rope tables…) is a global, kept under its full
//! name. A layer's *extent* is the smallest file range covering all its tensors.
//!
//! Mixture-of-experts layers hold *expert tensors* (`ffn_gate_exps.weight`, `ffn_up_exps.weight`,
//! `ffn_down_exps.weight`...: a short name whose first component ends in `_exps`), each the
//! stack of all experts' matrices along its last dimension. They are not part of the layer's
//! *dense part*: [`LayerInfo::tensors`] lists the dense tensors only, [`LayerInfo::experts`] the
//! expert tensors, and [`LayerInfo::dense`] the file ranges the cache reads for the dense part —
//! the maximal runs of the layer's dense tensors, in file order, that no expert tensor of the
//! layer interrupts (runs less than [`READ_ALIGN`] apart are merged, since
//! their aligned reads would touch anyway). A layer without expert tensors has one run, its
//! extent: the cache reads it with one read, rounded out to `READ_ALIGN`, as before experts.

use std::ops::Range;

use strata_gguf::{GgmlType, Gguf};

use crate::{Error, READ_ALIGN};

/// One tensor of a layer or of the globals.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Name inside its scope: without `blk.N.` for layers, the full name for globals.
    pub name: String,
    /// Element type.
    pub ty: GgmlType,
    /// Dimensions in ggml order (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Size in bytes.
    pub n_bytes: u64,
}

/// One `blk.N` layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Its dense tensors (every tensor but the expert tensors), sorted by name.
    pub tensors: Vec<TensorEntry>,
    /// Its expert tensors (`*_exps.*`), sorted by name; empty for a dense layer.
    pub experts: Vec<ExpertTensor>,
    /// Absolute file range covering all its tensors, experts included.
    pub extent: Range<u64>,
    /// The file ranges of the dense part, ascending and disjoint: one per maximal run of dense
    /// tensors (expert tensors cut the runs; runs less than [`READ_ALIGN`] apart merge);
    /// `[extent]` for a layer without experts.
    pub dense: Vec<Range<u64>>,
}

impl LayerInfo {
    /// Number of experts (0 for a dense layer; every expert tensor of a layer has the same).
    pub fn n_experts(&self) -> usize {
        self.experts.first().map_or(0, |t| t.n_experts)
    }

    /// Bytes of one expert: its slices of all the layer's expert tensors together (exact).
    pub fn expert_bytes(&self) -> u64 {
        self.experts.iter().map(|t| t.expert_bytes).sum()
    }

    /// Bytes of the dense part (exact, the sum of the runs' lengths).
    pub fn dense_bytes(&self) -> u64 {
        self.dense.iter().map(|r| r.end - r.start).sum()
    }

    /// The expert tensor `name` (short name, such as `ffn_up_exps.weight`), or `None`.
    pub fn expert_tensor(&self, name: &str) -> Option<&ExpertTensor> {
        self.experts.iter().find(|t| t.entry.name == name)
    }
}

/// One expert tensor of a layer: the matrices of all its experts stacked along the last
/// dimension (ggml order), so expert `e`'s bytes are the contiguous range
/// `offset + e * expert_bytes .. + expert_bytes`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertTensor {
    /// The whole tensor (short name, type, full dims `[.., n_experts]`, offset, bytes).
    pub entry: TensorEntry,
    /// Number of experts (the last dimension).
    pub n_experts: usize,
    /// Bytes of one expert's slice (the tensor's bytes / `n_experts`).
    pub expert_bytes: u64,
}

impl ExpertTensor {
    /// Dimensions of one expert's slice: the tensor's dims without the last (ggml order, so
    /// `[cols, rows]` for a matrix).
    pub fn expert_dims(&self) -> &[u64] {
        &self.entry.dims[..self.entry.dims.len() - 1]
    }

    /// Absolute file range of expert `e`'s slice (`e < n_experts`).
    pub fn expert_range(&self, e: usize) -> Range<u64> {
        let start = self.entry.offset + e as u64 * self.expert_bytes;
        start..start + self.expert_bytes
    }

    /// Check the stacking and describe it: at least two dims, the last the expert count, and
    /// the bytes exactly `n_experts` rows-of-rows of the type. `layer` names the layer in errors.
    fn new(entry: TensorEntry, layer: usize) -> Result<ExpertTensor, Error> {
        let bad = |why: String| {
            Error::Layout(format!(
                "expert tensor `blk.{layer}.{}` ({} {:?}, {} bytes): {why}",
                entry.name, entry.ty, entry.dims, entry.n_bytes
            ))
        };
        let (&n, rest) = entry
            .dims
            .split_last()
            .filter(|(_, rest)| !rest.is_empty())
            .ok_or_else(|| {
                bad(String::from(
                    "needs at least 2 dims, the last the expert count",
                ))
            })?;
        let n_experts = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("expert count {n} is not a positive usize")))?;
        let expert_bytes = (|| {
            rest[1..]
                .iter()
                .try_fold(entry.ty.row_size(rest[0])?, |acc, &d| acc.checked_mul(d))
        })()
        .ok_or_else(|| {
            bad(format!(
                "rows of {} elements do not form whole blocks",
                rest[0]
            ))
        })?;
        if expert_bytes.checked_mul(n) != Some(entry.n_bytes) {
            return Err(bad(format!(
                "{n} experts of {expert_bytes} bytes do not make its {} bytes",
                entry.n_bytes
            )));
        }
        Ok(ExpertTensor {
            entry,
            n_experts,
            expert_bytes,
        })
    }
}

/// Whether a layer tensor's short name is an expert tensor: its first component ends in `_exps`
/// (`ffn_up_exps.weight`; not the router `ffn_gate_inp.weight` or a shared expert `*_shexp`).
pub fn is_expert_tensor(short_name: &str) -> bool {
    short_name
        .split('.')
        .next()
        .is_some_and(|first| first.ends_with("_exps"))
}

/// The dense runs of a layer: its tensors in file order, cut at each expert tensor, runs less
/// than [`READ_ALIGN`] apart merged.
fn dense_runs(dense: &[TensorEntry], experts: &[ExpertTensor]) -> Vec<Range<u64>> {
    let mut all: Vec<(u64, u64, bool)> = dense
        .iter()
        .map(|t| (t.offset, t.offset + t.n_bytes, true))
        .chain(
            experts
                .iter()
                .map(|t| (t.entry.offset, t.entry.offset + t.entry.n_bytes, false)),
        )
        .collect();
    all.sort_unstable();
    let mut runs: Vec<Range<u64>> = Vec::new();
    let mut open = false;
    for (start, end, is_dense) in all {
        if !is_dense {
            open = false;
            continue;
        }
        match runs.last_mut() {
            Some(last) if open || start <= last.end + READ_ALIGN => {
                last.end = last.end.max(end);
            }
            _ => runs.push(start..end),
        }
        open = true;
    }
    runs
}

/// An aligned read covering some file range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    /// Absolute offset of the read (a multiple of [`READ_ALIGN`]).
    pub offset: u64,
    /// Bytes to read (a multiple of [`READ_ALIGN`] unless the read ends at the end of the file).
    pub len: u64,
    /// Where the wanted range starts inside the read.
    pub head: u64,
}

impl ReadRange {
    /// The aligned read covering `range` in a file of `file_len` bytes.
    pub fn covering(range: &Range<u64>, file_len: u64) -> ReadRange {
        let offset = range.start / READ_ALIGN * READ_ALIGN;
        let end = range
            .end
            .div_ceil(READ_ALIGN)
            .saturating_mul(READ_ALIGN)
            .min(file_len.max(range.end));
        ReadRange {
            offset,
            len: end - offset,
            head: range.start - offset,
        }
    }

    /// Memory a buffer for this read takes, rounded up to [`READ_ALIGN`] so the next buffer in a
    /// region stays aligned.
    pub fn footprint(&self) -> u64 {
        self.len.div_ceil(READ_ALIGN) * READ_ALIGN
    }
}

/// Globals and layers of a model, with byte extents.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMap {
    globals: Vec<TensorEntry>,
    layers: Vec<LayerInfo>,
}

/// Parse `blk.N.rest` into `(N, rest)`.
fn split_block_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let dot = rest.find('.')?;
    let (num, tail) = rest.split_at(dot);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.len() > 9 {
        return None;
    }
    Some((num.parse().ok()?, &tail[1..]))
}

impl LayerMap {
    /// Split `gguf`'s tensor table; every tensor must lie inside a file of `file_len` bytes.
    pub fn from_gguf(gguf: &Gguf, file_len: u64) -> Result<LayerMap, Error> {
        let data_offset = gguf.data_offset();
        let tensors = gguf.tensors();
        let mut max_layer: Option<usize> = None;
        let mut entries = Vec::with_capacity(tensors.len());
        for t in tensors {
            let offset = data_offset.checked_add(t.offset).ok_or_else(|| {
                Error::Layout(format!(
                    "tensor `{}`: offset {} overflows",
                    t.name, t.offset
                ))
            })?;
            let end = offset.checked_add(t.n_bytes).filter(|&e| e <= file_len).ok_or_else(|| {
                Error::Layout(format!(
                    "tensor `{}`: bytes {offset}..{offset}+{} lie outside the file of {file_len} bytes",
                    t.name, t.n_bytes
                ))
            })?;
            let _ = end;
            let block = split_block_name(&t.name);
            if let Some((n, _)) = block {
                max_layer = Some(max_layer.map_or(n, |m| m.max(n)));
            }
            entries.push((block.map(|(n, rest)| (n, rest.to_string())), t, offset));
        }
        // Each layer needs at least one tensor, so a layer count above the tensor count is a gap
        // (and refusing it early bounds the allocation below by the table's size).
        let n_layers = max_layer.map_or(0, |m| m + 1);
        if n_layers > tensors.len() {
            return Err(Error::Layout(format!(
                "block numbers go up to {} but there are only {} tensors",
                n_layers - 1,
                tensors.len()
            )));
        }
        let mut globals = Vec::new();
        let mut per_layer: Vec<Vec<TensorEntry>> = vec![Vec::new(); n_layers];
        for (block, t, offset) in entries {
            let entry = |name: String| TensorEntry {
                name,
                ty: t.ty,
                dims: t.dims.clone(),
                offset,
                n_bytes: t.n_bytes,
            };
            match block {
                Some((n, rest)) => per_layer[n].push(entry(rest)),
                None => globals.push(entry(t.name.clone())),
            }
        }
        let mut layers = Vec::with_capacity(n_layers);
        for (i, mut tensors) in per_layer.into_iter().enumerate() {
            if tensors.is_empty() {
                return Err(Error::Layout(format!(
                    "layer {i} has no tensors (blk.{i}.* missing)"
                )));
            }
            tensors.sort_by(|a, b| a.name.cmp(&b.name));
            let start = tensors.iter().map(|t| t.offset).min().unwrap_or(0);
            let end = tensors
                .iter()
                .map(|t| t.offset + t.n_bytes)
                .max()
                .unwrap_or(start);
            let (expert_entries, tensors): (Vec<_>, Vec<_>) =
                tensors.into_iter().partition(|t| is_expert_tensor(&t.name));
            let experts = expert_entries
                .into_iter()
                .map(|t| ExpertTensor::new(t, i))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(t) = experts.iter().find(|t| t.n_experts != experts[0].n_experts) {
                return Err(Error::Layout(format!(
                    "layer {i}: expert tensor `{}` has {} experts, `{}` has {}",
                    t.entry.name, t.n_experts, experts[0].entry.name, experts[0].n_experts
                )));
            }
            let dense = if experts.is_empty() {
                std::iter::once(start..end).collect()
            } else {
                dense_runs(&tensors, &experts)
            };
            layers.push(LayerInfo {
                tensors,
                experts,
                extent: start..end,
                dense,
            });
        }
        globals.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(LayerMap { globals, layers })
    }

    /// Number of `blk.N` layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `i`.
    pub fn layer(&self, i: usize) -> Option<&LayerInfo> {
        self.layers.get(i)
    }

    /// All layers in order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// The global tensors, sorted by name.
    pub fn globals(&self) -> &[TensorEntry] {
        &self.globals
    }

    /// Bytes of the global tensors (exact, without alignment padding).
    pub fn globals_bytes(&self) -> u64 {
        self.globals.iter().map(|t| t.n_bytes).sum()
    }

    /// Whether any layer has expert tensors.
    pub fn has_experts(&self) -> bool {
        self.layers.iter().any(|l| !l.experts.is_empty())
    }

    /// Bytes of the largest layer extent.
    pub fn largest_layer_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.extent.end - l.extent.start)
            .max()
            .unwrap_or(0)
    }

    /// Bytes of all layer extents together.
    pub fn layers_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.extent.end - l.extent.start)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names() {
        assert_eq!(
            split_block_name("blk.12.attn_q.weight"),
            Some((12, "attn_q.weight"))
        );
        assert_eq!(
            split_block_name("blk.0.ffn_up.weight"),
            Some((0, "ffn_up.weight"))
        );
        assert_eq!(split_block_name("blk..x"), None);
        assert_eq!(split_block_name("blk.1x.y"), None);
        assert_eq!(split_block_name("token_embd.weight"), None);
        assert_eq!(split_block_name("blk.99999999999.y"), None);
    }

    #[test]
    fn expert_tensors_are_split_from_the_dense_part() {
        use crate::testing::{moe_model, N_EXPERT};
        let bytes = moe_model(3);
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        let map = LayerMap::from_gguf(&gguf, bytes.len() as u64).unwrap();
        assert!(map.has_experts());
        for (i, l) in map.layers().iter().enumerate() {
            let names: Vec<&str> = l.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "attn_norm.weight",
                    "attn_q.weight",
                    "ffn_gate_inp.weight",
                    "ffn_norm.weight"
                ]
            );
            let experts: Vec<&str> = l.experts.iter().map(|t| t.entry.name.as_str()).collect();
            assert_eq!(
                experts,
                [
                    "ffn_down_exps.weight",
                    "ffn_gate_exps.weight",
                    "ffn_up_exps.weight"
                ]
            );
            assert_eq!(l.n_experts(), N_EXPERT);
            assert_eq!(l.expert_bytes(), 3 * 5120);
            // Each dense tensor lies between two expert tensors: four runs, one per tensor.
            let mut runs: Vec<Range<u64>> = l
                .tensors
                .iter()
                .map(|t| t.offset..t.offset + t.n_bytes)
                .collect();
            runs.sort_by_key(|r| r.start);
            assert_eq!(l.dense, runs, "layer {i}");
            for t in &l.experts {
                let info = gguf.tensor(&format!("blk.{i}.{}", t.entry.name)).unwrap();
                let all = gguf.tensor_data(&bytes, info).unwrap();
                assert_eq!(t.expert_dims(), &info.dims[..2]);
                let r = t.expert_range(5);
                let start = (r.start - t.entry.offset) as usize;
                assert_eq!(start, 5 * 5120);
                assert_eq!(r.end - r.start, 5120);
                assert_eq!(all.len(), N_EXPERT * 5120);
            }
            assert!(l
                .dense
                .iter()
                .all(|r| l.experts.iter().all(
                    |t| r.end <= t.entry.offset || r.start >= t.entry.offset + t.entry.n_bytes
                )));
        }
        assert!(is_expert_tensor("ffn_up_exps.weight"));
        assert!(is_expert_tensor("ffn_gate_up_exps.bias"));
        assert!(!is_expert_tensor("ffn_gate_inp.weight"));
        assert!(!is_expert_tensor("ffn_up_shexp.weight"));
        assert!(!is_expert_tensor("exps.weight.x_exps"));
    }

    #[test]
    fn a_badly_stacked_expert_tensor_is_refused_with_its_name() {
        let mut w = strata_gguf::GgufWriter::new();
        // One dim: no expert dimension to slice.
        w.add_tensor("blk.0.ffn_up_exps.weight", GgmlType::F32, &[4], vec![0; 16])
            .unwrap();
        let bytes = w.to_vec().unwrap();
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        let err = LayerMap::from_gguf(&gguf, bytes.len() as u64).unwrap_err();
        assert!(
            matches!(&err, Error::Layout(m) if m.contains("blk.0.ffn_up_exps.weight") && m.contains("at least 2 dims")),
            "{err}"
        );
    }

    #[test]
    fn aligned_reads_cover_the_range() {
        let r = ReadRange::covering(&(5000..9000), 1 << 20);
        assert_eq!(
            r,
            ReadRange {
                offset: 4096,
                len: 8192,
                head: 904
            }
        );
        // Clipped at the end of the file.
        let r = ReadRange::covering(&(5000..10_000), 10_000);
        assert_eq!(
            r,
            ReadRange {
                offset: 4096,
                len: 5904,
                head: 904
            }
        );
        assert_eq!(r.footprint(), 8192);
    }
}
