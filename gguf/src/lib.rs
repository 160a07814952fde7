//! A standalone reader and writer for GGUF, llama.cpp's model file format.
//!
//! - [`Gguf`] is a parsed header: version, [`Metadata`], the tensor table ([`TensorInfo`]),
//!   alignment and the data section offset. Open it from a path ([`Gguf::open`]), any
//!   `Read + Seek` ([`Gguf::read`]) or a byte slice such as an mmap ([`Gguf::from_bytes`]).
//!   Only the header is read; tensor data is sliced out of the caller's bytes on demand with
//!   [`Gguf::tensor_data`] (zero-copy).
//! - [`GgmlType`] knows every ggml tensor type id with its block size and bytes per block.
//! - [`Value`] and [`Array`] hold metadata values; large arrays (a 262k-entry vocabulary) are
//!   stored compactly, not as one Rust value per element.
//! - [`GgufWriter`] writes a file llama.cpp accepts; reading a file and writing it back with
//!   [`GgufWriter::from_gguf`] reproduces it byte for byte.
//!
//! Untrusted input is expected: parsing never panics, never allocates more than the file's
//! remaining length because a count in the file says so, and fails with an [`Error`] that says
//! what is wrong and where (byte offset, key or tensor name).
//!
//! ```
//! use strata_gguf::{GgmlType, Gguf, GgufWriter};
//!
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", "llama")?;
//! w.add_metadata("llama.block_count", 1u32)?;
//! w.add_tensor("x", GgmlType::F32, &[2], vec![0u8; 8])?;
//! let bytes = w.to_vec()?;
//!
//! let g = Gguf::from_bytes(&bytes)?;
//! assert_eq!(g.metadata().get_str("general.architecture")?, "llama");
//! assert_eq!(g.metadata().get_u64("llama.block_count")?, 1);
//! let t = g.tensor("x").unwrap();
//! assert_eq!((t.ty, t.n_elements(), t.n_bytes), (GgmlType::F32, 2, 8));
//! assert_eq!(g.tensor_data(&bytes, t)?, &[0u8; 8]);
//! # Ok::<(), strata_gguf::Error>(())
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

mod error;
mod metadata;
mod reader;
mod types;
mod value;
mod writer;

pub use error::Error;
pub use metadata::Metadata;
pub use types::{file_type_name, GgmlType};
pub use value::{Array, Element, Value, ValueType};
pub use writer::GgufWriter;

/// The metadata key holding the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Longest tensor name in bytes: ggml keeps names in a 64-byte buffer with a terminating NUL
/// (`GGML_MAX_NAME`), and llama.cpp rejects files with longer names.
pub const MAX_TENSOR_NAME: usize = 63;
/// Deepest nesting of arrays in metadata the reader accepts (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Default for [`ReadOptions::max_memory`]: 1 GiB, two orders of magnitude above the headers
/// of real models (Gemma 3's 262k-token vocabulary makes a 6.5 MB header).
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

/// Options for reading a header.
///
/// ```
/// use strata_gguf::{Gguf, ReadOptions};
/// let opts = ReadOptions::new().max_memory(64 << 20);
/// assert!(Gguf::from_bytes_with(b"GGUF", &opts).is_err()); // truncated
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReadOptions {
    /// Most heap memory (estimated, in bytes) the parsed header may take: keys, strings,
    /// arrays and the tensor table. Past it, parsing fails with [`Error::MemoryLimit`].
    /// Bounds what a hostile file can make a reader allocate, whatever the file's size.
    pub max_memory: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

impl ReadOptions {
    /// The defaults ([`DEFAULT_MAX_MEMORY`]).
    pub fn new() -> ReadOptions {
        ReadOptions::default()
    }

    /// Sets [`ReadOptions::max_memory`].
    pub fn max_memory(mut self, bytes: u64) -> ReadOptions {
        self.max_memory = bytes;
        self
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (ne0), the fastest-varying index.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section ([`Gguf::data_offset`]).
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of `dims`; 1 for a zero-dimensional tensor).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Absolute file offset of the data: `data_offset + offset`.
    pub fn abs_offset(&self, data_offset: u64) -> u64 {
        data_offset + self.offset
    }
}

/// A parsed GGUF header: everything in the file except the tensor data.
///
/// Owned and cheap to share by reference; tensor bytes are borrowed from the caller's buffer
/// in [`Gguf::tensor_data`].
#[derive(Clone, Debug)]
pub struct Gguf {
    pub(crate) version: u32,
    pub(crate) alignment: u64,
    pub(crate) data_offset: u64,
    pub(crate) header_len: u64,
    pub(crate) file_len: u64,
    pub(crate) metadata: Metadata,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) index: HashMap<String, usize>,
}

impl Gguf {
    /// Opens the file at `path` and parses its header. Reads only the header and the tensor
    /// table, never the tensor data.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, Error> {
        Gguf::open_with(path, &ReadOptions::default())
    }

    /// [`Gguf::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, options: &ReadOptions) -> Result<Gguf, Error> {
        let path = path.as_ref();
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        reader::parse(BufReader::with_capacity(1 << 16, file), len, options)
    }

    /// Parses a header from a reader positioned at the start of a GGUF file. The file is
    /// taken to end where the stream ends; offsets are relative to the starting position.
    pub fn read<R: Read + Seek>(r: R) -> Result<Gguf, Error> {
        Gguf::read_with(r, &ReadOptions::default())
    }

    /// [`Gguf::read`] with options.
    pub fn read_with<R: Read + Seek>(mut r: R, options: &ReadOptions) -> Result<Gguf, Error> {
        let io = |source| Error::Io {
            offset: 0,
            what: "stream length".to_owned(),
            source,
        };
        let start = r.stream_position().map_err(io)?;
        let end = r.seek(SeekFrom::End(0)).map_err(io)?;
        r.seek(SeekFrom::Start(start)).map_err(io)?;
        let len = end.saturating_sub(start);
        reader::parse(BufReader::with_capacity(1 << 16, r), len, options)
    }

    /// Parses a header from the bytes of a whole GGUF file (or at least its header; tensor
    /// ranges are checked against `bytes.len()`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Gguf, Error> {
        Gguf::from_bytes_with(bytes, &ReadOptions::default())
    }

    /// [`Gguf::from_bytes`] with options.
    pub fn from_bytes_with(bytes: &[u8], options: &ReadOptions) -> Result<Gguf, Error> {
        reader::parse(bytes, bytes.len() as u64, options)
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Length in bytes of the header and tensor table (before alignment padding).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Length of the file as seen when it was parsed.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The metadata key-value pairs.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute byte range of a tensor's data in the file (checked at parse time for the
    /// tensors of this file).
    pub fn tensor_range(&self, t: &TensorInfo) -> Range<u64> {
        let start = self.data_offset.saturating_add(t.offset);
        start..start.saturating_add(t.n_bytes)
    }

    /// The data of tensor `t`, borrowed from `file_bytes` (the whole file, e.g. an mmap).
    /// Errors if `file_bytes` is too short to hold it.
    pub fn tensor_data<'a>(&self, file_bytes: &'a [u8], t: &TensorInfo) -> Result<&'a [u8], Error> {
        let start = self.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        let range = start
            .zip(end)
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range
            .and_then(|r| file_bytes.get(r))
            .ok_or_else(|| Error::TensorOutOfBounds {
                name: t.name.clone(),
                start: start.unwrap_or(u64::MAX),
                end: end.unwrap_or(u64::MAX),
                len: file_bytes.len() as u64,
            })
    }
}

/// Runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
