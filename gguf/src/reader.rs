//! Parsing the GGUF header: magic, version, metadata and the tensor table.
//!
//! The parser reads the file front to back exactly once and never seeks. It knows the total
//! length of the file up front, so every count and length read from the file is checked
//! against the bytes that remain *before* anything is allocated for it: a hostile file cannot
//! make the parser allocate more than (a small constant times) its own size. On top of that,
//! the estimated memory of everything parsed is charged against [`ReadOptions::max_memory`],
//! and collections grow with the data actually read rather than with what a count claims.

use std::collections::HashMap;
use std::io::{self, BufRead};

use crate::error::esc;
use crate::metadata::Metadata;
use crate::value::{Array, ArrayData, Value, ValueType};
use crate::{
    Error, GgmlType, Gguf, ReadOptions, TensorInfo, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS,
    MAX_TENSOR_NAME,
};

/// The element count of a tensor with dimensions `dims`: their product, or `None` where it
/// overflows int64 (ggml stores the count as int64).
pub(crate) fn element_count(dims: &[u64]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
}

/// The byte size of tensor `name` (type `ty`, dimensions `dims`, `n_elements` in all): an
/// error if its rows are not whole blocks or the size overflows u64.
pub(crate) fn tensor_bytes(
    name: &str,
    ty: GgmlType,
    dims: &[u64],
    n_elements: u64,
) -> Result<u64, Error> {
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % ty.block_size() as u64 != 0 {
        return Err(Error::PartialBlock {
            name: name.to_owned(),
            ty,
            ne0,
            block_size: ty.block_size(),
        });
    }
    ty.row_size(n_elements).ok_or_else(|| Error::BadDims {
        name: name.to_owned(),
        dims: dims.to_vec(),
        reason: "the byte size overflows u64",
    })
}

/// The four bytes every GGUF file starts with.
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";

/// Smallest encoding of one metadata pair: key length (8), value type (4), a 1-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor-table entry: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_SIZE: u64 = 8 + 4 + 4 + 8;

/// Largest single allocation step for bytes read from the file.
const CHUNK: usize = 1 << 20;
/// Most items preallocated for a count read from the file; beyond it, collections grow as items
/// are actually read, so memory follows the data rather than what a count claims.
const MAX_PREALLOC: u64 = 1 << 16;

/// Capacity to preallocate for `count` items (already checked against the file length).
fn prealloc(count: u64) -> usize {
    count.min(MAX_PREALLOC) as usize
}

/// A byte source with a known total length and a running position.
struct Src<R> {
    r: R,
    pos: u64,
    len: u64,
    /// Estimated heap bytes of what has been parsed so far.
    mem: u64,
    /// Limit for `mem` ([`ReadOptions::max_memory`]).
    mem_limit: u64,
}

impl<R: BufRead> Src<R> {
    /// Accounts for `n` more bytes of memory held by the parsed header.
    fn charge(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<(), Error> {
        self.mem = self.mem.saturating_add(n);
        if self.mem > self.mem_limit {
            return Err(Error::MemoryLimit {
                what: what(),
                offset: self.pos,
                limit: self.mem_limit,
            });
        }
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Errors unless `n` more bytes are in the file.
    fn need(&self, n: u64, what: &dyn Fn() -> String) -> Result<(), Error> {
        if n > self.remaining() {
            return Err(Error::UnexpectedEof {
                what: what(),
                offset: self.pos,
                needed: n,
                file_len: self.len,
            });
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<(), Error> {
        self.need(buf.len() as u64, what)?;
        self.r.read_exact(buf).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                // The file is shorter than its length said (it shrank while we read).
                Error::UnexpectedEof {
                    what: what(),
                    offset: self.pos,
                    needed: buf.len() as u64,
                    file_len: self.len,
                }
            } else {
                Error::Io {
                    offset: self.pos,
                    what: what(),
                    source,
                }
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads `n` bytes into a new vector, after checking that the file holds them.
    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, Error> {
        let mut v = Vec::new();
        self.append(&mut v, n, what)?;
        Ok(v)
    }

    /// Appends `n` bytes to `out`, after checking that the file holds them.
    fn append(
        &mut self,
        out: &mut Vec<u8>,
        n: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(), Error> {
        self.need(n, what)?;
        self.charge(n, what)?;
        let n = usize::try_from(n).map_err(|_| self.absurd(n, what))?;
        // Grow by at most CHUNK at a time: memory follows the bytes actually read, even when
        // the stated length is backed only by a (sparse) file's length.
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK);
            let start = out.len();
            out.resize(start + k, 0);
            self.fill(&mut out[start..], what)?;
            left -= k;
        }
        Ok(())
    }

    fn absurd(&self, count: u64, what: &dyn Fn() -> String) -> Error {
        Error::AbsurdCount {
            what: what(),
            count,
            offset: self.pos.saturating_sub(8),
            remaining: self.remaining(),
        }
    }

    /// Fast path for one string of a string array: when its length and bytes are already in
    /// the read buffer, appends the bytes to `blob` straight from it and returns `true`;
    /// otherwise consumes nothing and returns `false` (the caller takes the general path,
    /// which reports errors). A vocabulary of 262k tokens is read this way.
    fn buffered_string(
        &mut self,
        blob: &mut Vec<u8>,
        what: &dyn Fn() -> String,
    ) -> Result<bool, Error> {
        let remaining = self.remaining();
        let (pos, mem, mem_limit) = (self.pos, self.mem, self.mem_limit);
        let buf = match self.r.fill_buf() {
            Ok(buf) => buf,
            // Let the general path read again and report the error with its context.
            Err(_) => return Ok(false),
        };
        let Some(len_bytes) = buf.get(..8) else {
            return Ok(false);
        };
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0xff; 8]));
        // The buffer holds no more than what remains of the file, so a string that is
        // entirely in it is inside the file.
        let end = usize::try_from(len).ok().and_then(|n| n.checked_add(8));
        let Some(bytes) = end.and_then(|end| buf.get(8..end)) else {
            return Ok(false);
        };
        let total = 8 + len;
        if total > remaining {
            return Ok(false);
        }
        let mem = mem.saturating_add(size_of::<usize>() as u64 + len);
        if mem > mem_limit {
            return Err(Error::MemoryLimit {
                what: what(),
                offset: pos,
                limit: mem_limit,
            });
        }
        blob.extend_from_slice(bytes);
        self.r.consume(total as usize);
        self.pos += total;
        self.mem = mem;
        Ok(true)
    }

    /// Reads a count and checks that `count` items of at least `min_size` bytes each fit in
    /// the rest of the file.
    fn count(&mut self, min_size: u64, what: &dyn Fn() -> String) -> Result<u64, Error> {
        let count = self.u64(what)?;
        if count
            .checked_mul(min_size)
            .is_none_or(|n| n > self.remaining())
        {
            return Err(self.absurd(count, what));
        }
        Ok(count)
    }

    /// Reads a GGUF string (u64 length, bytes) that must be UTF-8.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, Error> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let at = self.pos;
        if len > self.remaining() {
            return Err(self.absurd(len, &|| format!("length of {}", what())));
        }
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 {
            what: what(),
            offset: at,
        })
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, Error> {
        let at = self.pos;
        let id = self.u32(&|| format!("value type of key `{}`", esc(key)))?;
        ValueType::from_id(id).ok_or_else(|| Error::UnknownValueType {
            id,
            key: key.to_owned(),
            offset: at,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, Error> {
        let what = || format!("value of key `{}`", esc(key));
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(&what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => {
                let at = self.pos;
                let [b] = self.array(&what)?;
                Value::Bool(check_bool(b, key, at)?)
            }
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::Array => Value::Array(self.array_value(key, 1)?),
        })
    }

    /// Reads an array body (element type, count, elements); `depth` is 1 for a top-level array.
    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, Error> {
        let header_at = self.pos;
        if depth > MAX_ARRAY_DEPTH {
            return Err(Error::NestingTooDeep {
                key: key.to_owned(),
                offset: header_at,
                max: MAX_ARRAY_DEPTH,
            });
        }
        let elem = self.value_type(key)?;
        let count = self.count(elem.min_encoded_size(), &|| {
            format!("element count of array `{}`", esc(key))
        })?;
        let what = || format!("elements of array `{}`", esc(key));
        let data = match elem {
            ValueType::String => {
                // count * 8 <= remaining: the offset table is no bigger than the file.
                let mut ends = Vec::with_capacity(prealloc(count));
                let mut blob = Vec::new();
                for i in 0..count {
                    let what = || format!("string {i} of array `{}`", esc(key));
                    if !self.buffered_string(&mut blob, &what)? {
                        let len = self.u64(&|| format!("length of {}", what()))?;
                        self.charge(size_of::<usize>() as u64, &what)?;
                        self.append(&mut blob, len, &what)?;
                    }
                    ends.push(blob.len());
                }
                // Strings are kept as bytes; invalid UTF-8 is reported on access.
                blob.shrink_to_fit();
                ArrayData::Strings { blob, ends }
            }
            ValueType::Array => {
                let mut items = Vec::with_capacity(prealloc(count));
                for _ in 0..count {
                    self.charge(size_of::<Array>() as u64, &what)?;
                    items.push(self.array_value(key, depth + 1)?);
                }
                ArrayData::Nested(items)
            }
            fixed => {
                let size = fixed.fixed_size().unwrap_or(1) as u64;
                let at = self.pos;
                // `count` checked above: count * size <= remaining.
                let bytes = self.bytes(count * size, &what)?;
                if fixed == ValueType::Bool {
                    if let Some(i) = bytes.iter().position(|&b| b > 1) {
                        return Err(Error::InvalidBool {
                            value: bytes[i],
                            key: key.to_owned(),
                            offset: at + i as u64,
                        });
                    }
                }
                ArrayData::Fixed(bytes)
            }
        };
        Ok(Array::from_parts(elem, data))
    }
}

fn check_bool(b: u8, key: &str, offset: u64) -> Result<bool, Error> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(Error::InvalidBool {
            value,
            key: key.to_owned(),
            offset,
        }),
    }
}

/// Parses a GGUF header from `r`, which holds `len` bytes from the start of the file.
pub(crate) fn parse<R: BufRead>(r: R, len: u64, options: &ReadOptions) -> Result<Gguf, Error> {
    let mut src = Src {
        r,
        pos: 0,
        len,
        mem: 0,
        mem_limit: options.max_memory,
    };

    let magic: [u8; 4] = src.array(&|| "magic".to_owned())?;
    if magic != MAGIC {
        return Err(Error::BadMagic { found: magic });
    }
    let version = src.u32(&|| "version".to_owned())?;
    if version != 2 && version != 3 {
        let swapped = version.swap_bytes();
        if version & 0xFFFF == 0 && (1..=3).contains(&swapped) {
            return Err(Error::BigEndian { version: swapped });
        }
        return Err(Error::UnsupportedVersion { version });
    }

    let n_tensors = src.count(MIN_TENSOR_SIZE, &|| "tensor count".to_owned())?;
    let n_kv = src.count(MIN_KV_SIZE, &|| "metadata pair count".to_owned())?;
    // Both tables follow: together they must fit too.
    let table_min = n_tensors * MIN_TENSOR_SIZE + n_kv * MIN_KV_SIZE;
    if table_min > src.remaining() {
        return Err(Error::AbsurdCount {
            what: format!("tensor count {n_tensors} with metadata pair count"),
            count: n_kv,
            offset: src.pos - 8,
            remaining: src.remaining(),
        });
    }

    let mut metadata = Metadata::with_capacity(prealloc(n_kv));
    for i in 0..n_kv {
        let key_at = src.pos;
        let key = src.string(&|| format!("key of metadata pair {i}"))?;
        if metadata.contains_key(&key) {
            return Err(Error::DuplicateKey {
                key,
                offset: key_at,
            });
        }
        // The pair, its index entry and the key's second copy.
        let entry = size_of::<(String, Value)>() + size_of::<(String, usize)>() + 2 * key.len();
        src.charge(entry as u64 + 32, &|| format!("metadata pair {i}"))?;
        let ty = src.value_type(&key)?;
        let value = src.value(ty, &key)?;
        metadata.insert(key, value)?;
    }

    let alignment = match metadata.get(crate::ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(v) => {
            return Err(Error::BadAlignment {
                reason: format!("it is {}, must be u32", v.type_description()),
            })
        }
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(Error::BadAlignment {
            reason: format!("{alignment} is not a power of two"),
        });
    }

    let mut tensors = Vec::with_capacity(prealloc(n_tensors));
    let mut index = HashMap::with_capacity(prealloc(n_tensors));
    for i in 0..n_tensors {
        let name_at = src.pos;
        let name = src.string(&|| format!("name of tensor {i}"))?;
        if name.len() > MAX_TENSOR_NAME {
            return Err(Error::TensorNameTooLong {
                len: name.len(),
                name,
                offset: name_at,
            });
        }
        if index.contains_key(&name) {
            return Err(Error::DuplicateTensor {
                name,
                offset: name_at,
            });
        }
        let entry = size_of::<TensorInfo>() + size_of::<(String, usize)>() + 2 * name.len();
        src.charge(entry as u64 + 32 + 8 * MAX_DIMS as u64, &|| {
            format!("tensor {i}")
        })?;
        let tensor = read_tensor_info(&mut src, name, alignment)?;
        index.insert(tensor.name.clone(), tensors.len());
        tensors.push(tensor);
    }

    let header_len = src.pos;
    let data_offset = header_len
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| Error::BadAlignment {
            reason: format!("data section offset overflows for alignment {alignment}"),
        })?;

    check_layout(&tensors, data_offset, len)?;

    Ok(Gguf {
        version,
        alignment,
        data_offset,
        header_len,
        file_len: len,
        metadata,
        tensors,
        index,
    })
}

fn read_tensor_info<R: BufRead>(
    src: &mut Src<R>,
    name: String,
    alignment: u64,
) -> Result<TensorInfo, Error> {
    let dims_at = src.pos;
    let n_dims = src.u32(&|| format!("dimension count of tensor `{}`", esc(&name)))?;
    if n_dims as usize > MAX_DIMS {
        return Err(Error::TooManyDims {
            name,
            n_dims,
            offset: dims_at,
            max: MAX_DIMS,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(src.u64(&|| format!("dimension {d} of tensor `{}`", esc(&name)))?);
    }
    let type_at = src.pos;
    let type_id = src.u32(&|| format!("type of tensor `{}`", esc(&name)))?;
    let offset = src.u64(&|| format!("data offset of tensor `{}`", esc(&name)))?;

    // ggml stores dimensions as int64: each must be non-negative and so must their product.
    if dims.iter().any(|&d| d > i64::MAX as u64) {
        return Err(Error::BadDims {
            name,
            dims,
            reason: "a dimension is negative as int64",
        });
    }
    let Some(n_elements) = element_count(&dims) else {
        return Err(Error::BadDims {
            name,
            dims,
            reason: "the element count overflows int64",
        });
    };
    let Some(ty) = GgmlType::from_id(type_id) else {
        return Err(Error::UnknownGgmlType {
            id: type_id,
            name,
            offset: type_at,
        });
    };
    let n_bytes = tensor_bytes(&name, ty, &dims, n_elements)?;
    if offset % alignment != 0 {
        return Err(Error::MisalignedTensor {
            name,
            offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_bytes,
    })
}

/// Checks that every tensor lies inside the file and that no two overlap.
fn check_layout(tensors: &[TensorInfo], data_offset: u64, file_len: u64) -> Result<(), Error> {
    for t in tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(Error::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len: file_len,
                })
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Bounds were checked above, so the addition cannot overflow.
        if a.offset + a.n_bytes > b.offset {
            return Err(Error::TensorOverlap {
                first: a.name.clone(),
                second: b.name.clone(),
                offset: b.offset,
            });
        }
    }
    Ok(())
}
