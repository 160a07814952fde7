//! Writing GGUF files.
//!
//! Layout written (little-endian, as llama.cpp's `gguf_write_to_file` and gguf-py lay it out):
//! magic, version, tensor count, metadata count, the metadata pairs in insertion order, the
//! tensor table in insertion order, zero padding up to the alignment, then each tensor's data
//! followed by zero padding up to the alignment. Tensor offsets are assigned in table order.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::metadata::Metadata;
use crate::reader::{element_count, tensor_bytes, MAGIC};
use crate::value::{Array, ArrayData, Value};
use crate::{
    Error, GgmlType, Gguf, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME,
};

/// Builds a GGUF file from metadata and tensors, then writes it.
///
/// Tensor data is borrowed (`&'a [u8]`, e.g. from an mmap of another file) or owned
/// (`Vec<u8>`), so rewriting a multi-GB model does not copy it in memory.
///
/// ```
/// use strata_gguf::{GgmlType, Gguf, GgufWriter};
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.alignment", 64u32)?;
/// w.add_tensor("a", GgmlType::Q8_0, &[32, 2], vec![0u8; 68])?;
/// w.add_tensor("b", GgmlType::F16, &[3], vec![0u8; 6])?;
/// let bytes = w.to_vec()?;
/// let g = Gguf::from_bytes(&bytes)?;
/// assert_eq!(g.alignment(), 64);
/// assert_eq!(g.tensor("b").unwrap().offset, 128);
/// # Ok::<(), strata_gguf::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct GgufWriter<'a> {
    version: u32,
    alignment: u64,
    metadata: Metadata,
    tensors: Vec<(TensorInfo, Cow<'a, [u8]>)>,
    names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty version-3 file with the default alignment (32).
    pub fn new() -> GgufWriter<'a> {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Metadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// A writer with `g`'s version and metadata (alignment included) and no tensors.
    pub fn from_gguf(g: &Gguf) -> GgufWriter<'a> {
        GgufWriter {
            version: g.version(),
            alignment: g.alignment(),
            metadata: g.metadata().clone(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// A writer that reproduces the file `g` was parsed from: its version, metadata and all
    /// its tensors, with data borrowed from `file_bytes` (the whole file).
    pub fn from_gguf_with_data(g: &Gguf, file_bytes: &'a [u8]) -> Result<GgufWriter<'a>, Error> {
        let mut w = GgufWriter::from_gguf(g);
        for t in g.tensors() {
            w.add_tensor(&t.name, t.ty, &t.dims, g.tensor_data(file_bytes, t)?)?;
        }
        Ok(w)
    }

    /// Sets the GGUF version to write (2 or 3; the layout is the same).
    pub fn set_version(&mut self, version: u32) -> Result<(), Error> {
        if version != 2 && version != 3 {
            return Err(Error::Write(format!(
                "version {version} cannot be written (2 or 3)"
            )));
        }
        self.version = version;
        Ok(())
    }

    /// The metadata added so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The alignment that will be used (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Appends a metadata pair. `general.alignment` must be a power-of-two `u32`; it sets the
    /// alignment of the data. Errors on a duplicate key.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), Error> {
        let key = key.into();
        let value = value.into();
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() => self.alignment = u64::from(a),
                ref v => {
                    return Err(Error::BadAlignment {
                        reason: format!("{v:?} is not a power-of-two u32"),
                    })
                }
            }
        }
        check_array_depth(&value, &key)?;
        self.metadata.insert(key, value)
    }

    /// Appends a tensor. `dims` is in ggml order (`dims[0]` = row length); `data` must be
    /// exactly the tensor's byte size for `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), Error> {
        let name = name.into();
        let data = data.into();
        if name.len() > MAX_TENSOR_NAME {
            return Err(Error::TensorNameTooLong {
                len: name.len(),
                name,
                offset: 0,
            });
        }
        if self.names.contains(&name) {
            return Err(Error::DuplicateTensor { name, offset: 0 });
        }
        if dims.len() > MAX_DIMS {
            return Err(Error::TooManyDims {
                name,
                n_dims: dims.len() as u32,
                offset: 0,
                max: MAX_DIMS,
            });
        }
        let Some(n_elements) = element_count(dims) else {
            return Err(Error::BadDims {
                name,
                dims: dims.to_vec(),
                reason: "the element count overflows int64",
            });
        };
        let n_bytes = tensor_bytes(&name, ty, dims, n_elements)?;
        if data.len() as u64 != n_bytes {
            return Err(Error::Write(format!(
                "tensor `{name}` ({ty}, dims {dims:?}) needs {n_bytes} bytes, got {}",
                data.len()
            )));
        }
        self.names.insert(name.clone());
        let info = TensorInfo {
            name,
            dims: dims.to_vec(),
            ty,
            offset: 0, // assigned when writing
            n_bytes,
        };
        self.tensors.push((info, data));
        Ok(())
    }

    /// The tensor table as it will be written, with offsets assigned.
    pub fn tensor_infos(&self) -> Vec<TensorInfo> {
        let mut offset = 0u64;
        self.tensors
            .iter()
            .map(|(t, _)| {
                let info = TensorInfo {
                    offset,
                    ..t.clone()
                };
                offset = (offset + t.n_bytes).next_multiple_of(self.alignment);
                info
            })
            .collect()
    }

    /// Writes the file to `out`; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, out: W) -> Result<u64, Error> {
        let mut w = Counter {
            w: BufWriter::with_capacity(1 << 20, out),
            n: 0,
        };
        w.put(&MAGIC)?;
        w.put(&self.version.to_le_bytes())?;
        w.put(&(self.tensors.len() as u64).to_le_bytes())?;
        w.put(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in self.metadata.iter() {
            w.string(key.as_bytes())?;
            w.put(&value.value_type().id().to_le_bytes())?;
            write_value(&mut w, value)?;
        }
        let infos = self.tensor_infos();
        for t in &infos {
            w.string(t.name.as_bytes())?;
            w.put(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.put(&d.to_le_bytes())?;
            }
            w.put(&t.ty.id().to_le_bytes())?;
            w.put(&t.offset.to_le_bytes())?;
        }
        w.pad(self.alignment)?;
        for (_, data) in &self.tensors {
            w.put(data)?;
            w.pad(self.alignment)?;
        }
        w.w.flush().map_err(Error::WriteIo)?;
        Ok(w.n)
    }

    /// Writes the file into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// Creates (or truncates) the file at `path` and writes to it; returns the bytes written.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<u64, Error> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let n = self.write_to(&file)?;
        file.sync_all().map_err(Error::WriteIo)?;
        Ok(n)
    }
}

fn check_array_depth(value: &Value, key: &str) -> Result<(), Error> {
    fn depth(a: &Array) -> usize {
        match a.data() {
            ArrayData::Nested(v) => 1 + v.iter().map(depth).max().unwrap_or(0),
            _ => 1,
        }
    }
    if let Value::Array(a) = value {
        if depth(a) > crate::MAX_ARRAY_DEPTH {
            return Err(Error::NestingTooDeep {
                key: key.to_owned(),
                offset: 0,
                max: crate::MAX_ARRAY_DEPTH,
            });
        }
    }
    Ok(())
}

/// A writer that counts bytes (for padding).
struct Counter<W: Write> {
    w: W,
    n: u64,
}

impl<W: Write> Counter<W> {
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        self.w.write_all(b).map_err(Error::WriteIo)?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn string(&mut self, s: &[u8]) -> Result<(), Error> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s)
    }

    fn pad(&mut self, alignment: u64) -> Result<(), Error> {
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = self.n.next_multiple_of(alignment) - self.n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64);
            self.put(&ZEROS[..k as usize])?;
            left -= k;
        }
        Ok(())
    }
}

fn write_value<W: Write>(w: &mut Counter<W>, v: &Value) -> Result<(), Error> {
    match v {
        Value::U8(x) => w.put(&x.to_le_bytes()),
        Value::I8(x) => w.put(&x.to_le_bytes()),
        Value::U16(x) => w.put(&x.to_le_bytes()),
        Value::I16(x) => w.put(&x.to_le_bytes()),
        Value::U32(x) => w.put(&x.to_le_bytes()),
        Value::I32(x) => w.put(&x.to_le_bytes()),
        Value::F32(x) => w.put(&x.to_le_bytes()),
        Value::Bool(x) => w.put(&[u8::from(*x)]),
        Value::String(s) => w.string(s.as_bytes()),
        Value::Array(a) => write_array(w, a),
        Value::U64(x) => w.put(&x.to_le_bytes()),
        Value::I64(x) => w.put(&x.to_le_bytes()),
        Value::F64(x) => w.put(&x.to_le_bytes()),
    }
}

fn write_array<W: Write>(w: &mut Counter<W>, a: &Array) -> Result<(), Error> {
    w.put(&a.elem_type().id().to_le_bytes())?;
    w.put(&(a.len() as u64).to_le_bytes())?;
    match a.data() {
        ArrayData::Fixed(bytes) => w.put(bytes),
        ArrayData::Strings { .. } => {
            for s in a.iter_bytes() {
                w.string(s)?;
            }
            Ok(())
        }
        ArrayData::Nested(items) => {
            for item in items {
                write_array(w, item)?;
            }
            Ok(())
        }
    }
}
