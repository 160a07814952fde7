//! [`LayerMap`]: the GGUF tensor table split into globals and per-block layers.
//!
//! A tensor named `blk.N.rest` belongs to layer N under the short name `rest`; every other tensor
//! (token embeddings, output head, final norm, rope tables…) is a global, kept under its full
//! name. A layer's *extent* is the smallest file range covering all its tensors; the cache reads
//! a layer with one read of its extent (rounded out to [`READ_ALIGN`](crate::READ_ALIGN)).

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
    /// Its tensors, sorted by name.
    pub tensors: Vec<TensorEntry>,
    /// Absolute file range covering all its tensors.
    pub extent: Range<u64>,
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
            layers.push(LayerInfo {
                tensors,
                extent: start..end,
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
