//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can go wrong reading, querying or writing a GGUF file.
///
/// Parse errors say what was being read and where: the byte `offset` in the file, and the
/// metadata key or tensor name involved. Match on variants, not on message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or its length not determined.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The path given to [`Gguf::open`](crate::Gguf::open).
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// An I/O error other than end of file while reading.
    #[error("I/O error at byte {offset} reading {what}: {source}")]
    Io {
        /// Byte offset of the read that failed.
        offset: u64,
        /// What was being read.
        what: String,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The file ends before a field that must be there.
    #[error("file truncated: {what} needs {needed} bytes at byte {offset}, but the file ends at byte {file_len}")]
    UnexpectedEof {
        /// What was being read.
        what: String,
        /// Byte offset where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The file does not start with the magic `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes of the file.
        found: [u8; 4],
    },
    /// The file is a big-endian GGUF file, which this crate does not read.
    #[error("big-endian GGUF file (version {version} read big-endian); only little-endian files are supported")]
    BigEndian {
        /// The version number as read big-endian.
        version: u32,
    },
    /// The GGUF version is not 2 or 3.
    #[error("unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version number in the header.
        version: u32,
    },
    /// A count or length in the file cannot fit in what is left of the file.
    #[error("{what} = {count} at byte {offset} is impossible: only {remaining} bytes remain in the file")]
    AbsurdCount {
        /// Which count (e.g. "tensor count", "length of string value of key `x`").
        what: String,
        /// The count as stored.
        count: u64,
        /// Byte offset of the count.
        offset: u64,
        /// Bytes remaining in the file after the count.
        remaining: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Byte offset of the string's bytes.
        offset: u64,
    },
    /// A metadata value type id is not one GGUF defines.
    #[error(
        "unknown metadata value type {id} for key `{}` at byte {offset}",
        esc(key)
    )]
    UnknownValueType {
        /// The type id as stored.
        id: u32,
        /// The key whose value has this type.
        key: String,
        /// Byte offset of the type id.
        offset: u64,
    },
    /// A boolean value is neither 0 nor 1.
    #[error("invalid bool {value} for key `{}` at byte {offset}", esc(key))]
    InvalidBool {
        /// The byte as stored.
        value: u8,
        /// The key.
        key: String,
        /// Byte offset of the value.
        offset: u64,
    },
    /// Arrays are nested deeper than [`MAX_ARRAY_DEPTH`](crate::MAX_ARRAY_DEPTH).
    #[error(
        "arrays nested deeper than {max} levels in key `{}` at byte {offset}",
        esc(key)
    )]
    NestingTooDeep {
        /// The key.
        key: String,
        /// Byte offset of the innermost array header.
        offset: u64,
        /// The depth limit.
        max: usize,
    },
    /// Parsing the header would take more memory than [`ReadOptions::max_memory`](crate::ReadOptions)
    /// allows.
    #[error("reading {what} at byte {offset} would take the parsed header past the memory limit of {limit} bytes")]
    MemoryLimit {
        /// What was being read.
        what: String,
        /// Byte offset of the field.
        offset: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A metadata key occurs twice.
    #[error("duplicate metadata key `{}` at byte {offset}", esc(key))]
    DuplicateKey {
        /// The key.
        key: String,
        /// Byte offset of the second occurrence.
        offset: u64,
    },
    /// A tensor name is longer than [`MAX_TENSOR_NAME`](crate::MAX_TENSOR_NAME) bytes.
    #[error("tensor name `{}` at byte {offset} is {len} bytes long (at most {max})", esc(name), max = crate::MAX_TENSOR_NAME)]
    TensorNameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// Byte offset of the name.
        offset: u64,
    },
    /// A tensor name occurs twice.
    #[error("duplicate tensor name `{}` at byte {offset}", esc(name))]
    DuplicateTensor {
        /// The tensor name.
        name: String,
        /// Byte offset of the second occurrence.
        offset: u64,
    },
    /// `general.alignment` is not a power of two, zero, or not a u32.
    #[error("invalid general.alignment: {reason}")]
    BadAlignment {
        /// Why it is invalid.
        reason: String,
    },
    /// A tensor has more than [`MAX_DIMS`](crate::MAX_DIMS) dimensions.
    #[error(
        "tensor `{}` at byte {offset} has {n_dims} dimensions (at most {max})",
        esc(name)
    )]
    TooManyDims {
        /// The tensor name.
        name: String,
        /// The number of dimensions as stored.
        n_dims: u32,
        /// Byte offset of the dimension count.
        offset: u64,
        /// The limit.
        max: usize,
    },
    /// A tensor's dimensions are negative (as i64) or their product overflows.
    #[error("tensor `{}` has invalid dimensions {dims:?}: {reason}", esc(name))]
    BadDims {
        /// The tensor name.
        name: String,
        /// The dimensions as stored.
        dims: Vec<u64>,
        /// Why they are invalid.
        reason: &'static str,
    },
    /// A tensor type id is not one llama.cpp defines.
    #[error(
        "tensor `{}` at byte {offset} has unknown ggml type id {id}",
        esc(name)
    )]
    UnknownGgmlType {
        /// The type id as stored.
        id: u32,
        /// The tensor name.
        name: String,
        /// Byte offset of the type id.
        offset: u64,
    },
    /// A tensor's row length is not a whole number of blocks of its type.
    #[error(
        "tensor `{name}`: row length {ne0} is not a multiple of the {ty} block size {block_size}"
    )]
    PartialBlock {
        /// The tensor name.
        name: String,
        /// The tensor type.
        ty: GgmlType,
        /// The row length (`dims[0]`).
        ne0: u64,
        /// Elements per block of `ty`.
        block_size: usize,
    },
    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error(
        "tensor `{}` offset {offset} is not a multiple of the alignment {alignment}",
        esc(name)
    )]
    MisalignedTensor {
        /// The tensor name.
        name: String,
        /// The offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's bytes lie (partly) outside the data section or the given buffer.
    #[error(
        "tensor `{}` bytes {start}..{end} lie outside the data ({len} bytes available)",
        esc(name)
    )]
    TensorOutOfBounds {
        /// The tensor name.
        name: String,
        /// Absolute start offset of its data.
        start: u64,
        /// Absolute end offset (exclusive), saturated at `u64::MAX`.
        end: u64,
        /// Bytes available: the file length or the buffer length.
        len: u64,
    },
    /// Two tensors' byte ranges overlap.
    #[error(
        "tensors `{}` and `{}` overlap in the data section (at offset {offset})",
        esc(first),
        esc(second)
    )]
    TensorOverlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
        /// The data-relative offset of `second`.
        offset: u64,
    },
    /// A metadata key is missing.
    #[error("metadata key `{}` is missing", esc(key))]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has another type than the getter asked for.
    #[error("metadata key `{}` is {actual}, expected {expected}", esc(key))]
    TypeMismatch {
        /// The key.
        key: String,
        /// What the getter accepts.
        expected: &'static str,
        /// The value's actual type, e.g. `"f32"` or `"array of string"`.
        actual: String,
    },
    /// A metadata integer does not fit the requested type.
    #[error("metadata key `{}` value {value} does not fit in {expected}", esc(key))]
    OutOfRange {
        /// The key.
        key: String,
        /// The value, formatted.
        value: String,
        /// The requested type.
        expected: &'static str,
    },
    /// Converting an array's elements failed (wrong element type, value out of range or
    /// invalid UTF-8); `key` is empty when the array was used without its key.
    #[error("array `{}`: element {index}: {reason}", esc(key))]
    ArrayElement {
        /// The key of the array (empty if unknown).
        key: String,
        /// Index of the offending element.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The writer was given something it cannot write.
    #[error("cannot write GGUF: {0}")]
    Write(String),
    /// An I/O error while writing.
    #[error("I/O error writing GGUF: {0}")]
    WriteIo(#[source] io::Error),
}

/// Makes a string read from a file safe to show in a one-line message: control characters
/// (newlines, escape sequences) are escaped and very long strings are shortened.
pub(crate) fn esc(s: &str) -> String {
    const MAX_CHARS: usize = 120;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str(&format!("…({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Error {
    /// Builds a [`Error::TypeMismatch`].
    pub(crate) fn mismatch(key: &str, expected: &'static str, actual: String) -> Error {
        Error::TypeMismatch {
            key: key.to_owned(),
            expected,
            actual,
        }
    }
}
