//! Metadata values: the thirteen GGUF value types, scalar values and arrays.
//!
//! Arrays keep their elements in compact form rather than as one Rust value per element: the
//! 262 144-entry token list of a Gemma 3 vocabulary is one byte blob plus an end-offset table,
//! and numeric arrays are their little-endian bytes. Elements are decoded on access.

use std::fmt;

use crate::Error;

/// The type of a metadata value, with its GGUF id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `u8` (id 0).
    U8,
    /// `i8` (id 1).
    I8,
    /// `u16` (id 2).
    U16,
    /// `i16` (id 3).
    I16,
    /// `u32` (id 4).
    U32,
    /// `i32` (id 5).
    I32,
    /// `f32` (id 6).
    F32,
    /// `bool`, one byte 0 or 1 (id 7).
    Bool,
    /// UTF-8 string: u64 length, then bytes (id 8).
    String,
    /// Array: element type id, u64 count, then elements (id 9).
    Array,
    /// `u64` (id 10).
    U64,
    /// `i64` (id 11).
    I64,
    /// `f64` (id 12).
    F64,
}

impl ValueType {
    /// The type with GGUF id `id`, if it is one.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The GGUF id of this type.
    pub fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::String => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// Lower-case name: `"u32"`, `"f32"`, `"string"`, `"array"`, ...
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// Size in bytes of one value of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// The fewest bytes one value of this type takes in a file (a string's or an array's
    /// header). Used to reject counts that cannot fit in the rest of a file.
    pub fn min_encoded_size(self) -> u64 {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1) as u64,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array (possibly of arrays).
    Array(Array),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// A description of the type for messages: `"u32"`, `"array of string"`, ...
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(a) => a.type_description(),
            v => v.value_type().name().to_owned(),
        }
    }

    /// The value as an `i128` if it is an integer of any width (not bool, not float).
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The string if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array if this is an array value.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl From<u8> for Value {
    fn from(v: u8) -> Value {
        Value::U8(v)
    }
}
impl From<i8> for Value {
    fn from(v: i8) -> Value {
        Value::I8(v)
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Value {
        Value::U16(v)
    }
}
impl From<i16> for Value {
    fn from(v: i16) -> Value {
        Value::I16(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::U32(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::I32(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::U64(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::I64(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::F32(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::String(v)
    }
}
impl From<Array> for Value {
    fn from(v: Array) -> Value {
        Value::Array(v)
    }
}

/// Compact storage of an array's elements.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ArrayData {
    /// Fixed-size elements (numbers, bools) as their little-endian bytes.
    Fixed(Vec<u8>),
    /// Strings: all bytes concatenated, and the end offset of each string in `blob`.
    Strings { blob: Vec<u8>, ends: Vec<usize> },
    /// Arrays of arrays.
    Nested(Vec<Array>),
}

/// A metadata array: an element type and its elements, stored compactly.
///
/// Numeric arrays are kept as their little-endian bytes, string arrays as one byte blob plus
/// an offset table, so a 262k-entry vocabulary costs two allocations, not 262k. Elements
/// are decoded on access ([`Array::get`], [`Array::iter`], [`Array::iter_str`], the `to_*_vec`
/// conversions).
#[derive(Clone, PartialEq)]
pub struct Array {
    elem_type: ValueType,
    data: ArrayData,
}

/// One element of an [`Array`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Element<'a> {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A string's bytes (UTF-8 unless the file is malformed; see [`Array::iter_str`]).
    String(&'a [u8]),
    /// A nested array.
    Array(&'a Array),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl Element<'_> {
    /// The element as an `i128` if it is an integer of any width.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Element::U8(v) => v.into(),
            Element::I8(v) => v.into(),
            Element::U16(v) => v.into(),
            Element::I16(v) => v.into(),
            Element::U32(v) => v.into(),
            Element::I32(v) => v.into(),
            Element::U64(v) => v.into(),
            Element::I64(v) => v.into(),
            _ => return None,
        })
    }
}

fn le<const N: usize>(bytes: &[u8], i: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[i * N..(i + 1) * N]);
    out
}

impl Array {
    /// Internal constructor; `data` must match `elem_type`.
    pub(crate) fn from_parts(elem_type: ValueType, data: ArrayData) -> Array {
        Array { elem_type, data }
    }

    pub(crate) fn data(&self) -> &ArrayData {
        &self.data
    }

    /// An array of strings.
    pub fn from_strings<I, S>(items: I) -> Array
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut blob = Vec::new();
        let mut ends = Vec::new();
        for s in items {
            blob.extend_from_slice(s.as_ref().as_bytes());
            ends.push(blob.len());
        }
        Array::from_parts(ValueType::String, ArrayData::Strings { blob, ends })
    }

    /// An array of arrays.
    pub fn from_arrays(items: Vec<Array>) -> Array {
        Array::from_parts(ValueType::Array, ArrayData::Nested(items))
    }

    /// An array of `f32`.
    pub fn from_f32(items: &[f32]) -> Array {
        Array::fixed(ValueType::F32, items.iter().flat_map(|v| v.to_le_bytes()))
    }

    /// An array of `i32`.
    pub fn from_i32(items: &[i32]) -> Array {
        Array::fixed(ValueType::I32, items.iter().flat_map(|v| v.to_le_bytes()))
    }

    /// An array of `u32`.
    pub fn from_u32(items: &[u32]) -> Array {
        Array::fixed(ValueType::U32, items.iter().flat_map(|v| v.to_le_bytes()))
    }

    /// An array of `u64`.
    pub fn from_u64(items: &[u64]) -> Array {
        Array::fixed(ValueType::U64, items.iter().flat_map(|v| v.to_le_bytes()))
    }

    /// An array of `i64`.
    pub fn from_i64(items: &[i64]) -> Array {
        Array::fixed(ValueType::I64, items.iter().flat_map(|v| v.to_le_bytes()))
    }

    /// An array of `f64`.
    pub fn from_f64(items: &[f64]) -> Array {
        Array::fixed(ValueType::F64, items.iter().flat_map(|v| v.to_le_bytes()))
    }

    /// An array of `u8`.
    pub fn from_u8(items: &[u8]) -> Array {
        Array::fixed(ValueType::U8, items.iter().copied())
    }

    /// An array of `bool`.
    pub fn from_bools(items: &[bool]) -> Array {
        Array::fixed(ValueType::Bool, items.iter().map(|&b| u8::from(b)))
    }

    /// An array of fixed-size elements from their little-endian bytes.
    ///
    /// Errors if `elem_type` is a string or array type, if `bytes.len()` is not a multiple
    /// of the element size, or if a bool byte is neither 0 nor 1.
    pub fn from_le_bytes(elem_type: ValueType, bytes: Vec<u8>) -> Result<Array, Error> {
        let Some(size) = elem_type.fixed_size() else {
            return Err(Error::Write(format!(
                "from_le_bytes needs a fixed-size element type, got {elem_type}"
            )));
        };
        if bytes.len() % size != 0 {
            return Err(Error::Write(format!(
                "{} bytes is not a whole number of {elem_type} elements",
                bytes.len()
            )));
        }
        if elem_type == ValueType::Bool {
            if let Some(i) = bytes.iter().position(|&b| b > 1) {
                return Err(Error::ArrayElement {
                    key: String::new(),
                    index: i as u64,
                    reason: format!("bool byte {} is neither 0 nor 1", bytes[i]),
                });
            }
        }
        Ok(Array::from_parts(elem_type, ArrayData::Fixed(bytes)))
    }

    fn fixed(elem_type: ValueType, bytes: impl Iterator<Item = u8>) -> Array {
        Array::from_parts(elem_type, ArrayData::Fixed(bytes.collect()))
    }

    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem_type
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            ArrayData::Fixed(b) => b.len() / self.elem_type.fixed_size().unwrap_or(1),
            ArrayData::Strings { ends, .. } => ends.len(),
            ArrayData::Nested(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A description of the type for messages: `"array of string"`, `"array of array of u8"`.
    pub fn type_description(&self) -> String {
        match &self.data {
            ArrayData::Nested(v) => match v.first() {
                Some(inner) => format!("array of {}", inner.type_description()),
                None => "array of array".to_owned(),
            },
            _ => format!("array of {}", self.elem_type),
        }
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<Element<'_>> {
        if i >= self.len() {
            return None;
        }
        Some(match &self.data {
            ArrayData::Fixed(b) => match self.elem_type {
                ValueType::U8 => Element::U8(b[i]),
                ValueType::I8 => Element::I8(b[i] as i8),
                ValueType::Bool => Element::Bool(b[i] != 0),
                ValueType::U16 => Element::U16(u16::from_le_bytes(le(b, i))),
                ValueType::I16 => Element::I16(i16::from_le_bytes(le(b, i))),
                ValueType::U32 => Element::U32(u32::from_le_bytes(le(b, i))),
                ValueType::I32 => Element::I32(i32::from_le_bytes(le(b, i))),
                ValueType::F32 => Element::F32(f32::from_le_bytes(le(b, i))),
                ValueType::U64 => Element::U64(u64::from_le_bytes(le(b, i))),
                ValueType::I64 => Element::I64(i64::from_le_bytes(le(b, i))),
                ValueType::F64 => Element::F64(f64::from_le_bytes(le(b, i))),
                ValueType::String | ValueType::Array => return None,
            },
            ArrayData::Strings { .. } => Element::String(self.bytes_at(i)?),
            ArrayData::Nested(v) => Element::Array(&v[i]),
        })
    }

    /// Iterates over all elements.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Element<'_>> + '_ {
        (0..self.len()).map(move |i| self.get(i).expect("index is below len"))
    }

    /// Bytes of string element `i`; `None` past the end or if this is not a string array.
    pub fn bytes_at(&self, i: usize) -> Option<&[u8]> {
        match &self.data {
            ArrayData::Strings { blob, ends } => {
                let end = *ends.get(i)?;
                let start = if i == 0 { 0 } else { ends[i - 1] };
                blob.get(start..end)
            }
            _ => None,
        }
    }

    /// String element `i` as `&str`; `None` past the end or if this is not a string array,
    /// `Some(Err)` if its bytes are not UTF-8.
    pub fn str_at(&self, i: usize) -> Option<Result<&str, Error>> {
        let bytes = self.bytes_at(i)?;
        Some(std::str::from_utf8(bytes).map_err(|e| Error::ArrayElement {
            key: String::new(),
            index: i as u64,
            reason: format!("string is not valid UTF-8: {e}"),
        }))
    }

    /// Iterates over the bytes of each string; empty if this is not a string array.
    pub fn iter_bytes(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let n = if self.elem_type == ValueType::String {
            self.len()
        } else {
            0
        };
        (0..n).map(move |i| self.bytes_at(i).unwrap_or_default())
    }

    /// Iterates over the strings; each item is an error if its bytes are not UTF-8.
    /// Empty if this is not a string array (check [`Array::elem_type`]).
    pub fn iter_str(&self) -> impl ExactSizeIterator<Item = Result<&str, Error>> + '_ {
        self.iter_bytes().enumerate().map(|(i, b)| {
            std::str::from_utf8(b).map_err(|e| Error::ArrayElement {
                key: String::new(),
                index: i as u64,
                reason: format!("string is not valid UTF-8: {e}"),
            })
        })
    }

    /// The raw little-endian bytes of a numeric or bool array; `None` for strings/arrays.
    pub fn as_le_bytes(&self) -> Option<&[u8]> {
        match &self.data {
            ArrayData::Fixed(b) => Some(b),
            _ => None,
        }
    }

    /// The elements as `f32`: accepts `f32` arrays, and `f64` arrays (rounded to nearest).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, Error> {
        self.iter()
            .enumerate()
            .map(|(i, e)| match e {
                Element::F32(v) => Ok(v),
                Element::F64(v) => Ok(v as f32),
                other => Err(elem_error(i, "f32", &other)),
            })
            .collect()
    }

    /// The elements as `i32`: accepts any integer array whose values all fit.
    pub fn to_i32_vec(&self) -> Result<Vec<i32>, Error> {
        self.to_int_vec("i32")
    }

    /// The elements as `u32`: accepts any integer array whose values all fit.
    pub fn to_u32_vec(&self) -> Result<Vec<u32>, Error> {
        self.to_int_vec("u32")
    }

    /// The elements as `u64`: accepts any integer array whose values all fit.
    pub fn to_u64_vec(&self) -> Result<Vec<u64>, Error> {
        self.to_int_vec("u64")
    }

    /// The elements as `i64`: accepts any integer array whose values all fit.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, Error> {
        self.to_int_vec("i64")
    }

    fn to_int_vec<T: TryFrom<i128>>(&self, name: &'static str) -> Result<Vec<T>, Error> {
        self.iter()
            .enumerate()
            .map(|(i, e)| {
                let v = e.as_integer().ok_or_else(|| elem_error(i, name, &e))?;
                T::try_from(v).map_err(|_| Error::ArrayElement {
                    key: String::new(),
                    index: i as u64,
                    reason: format!("value {v} does not fit in {name}"),
                })
            })
            .collect()
    }

    /// Number of bytes this array's elements take in memory (for reporting).
    pub fn heap_bytes(&self) -> usize {
        match &self.data {
            ArrayData::Fixed(b) => b.len(),
            ArrayData::Strings { blob, ends } => blob.len() + ends.len() * size_of::<usize>(),
            ArrayData::Nested(v) => v.iter().map(Array::heap_bytes).sum(),
        }
    }
}

/// Shows the element type, the length and the first few elements, so that debug-printing a
/// header with a 262k-entry vocabulary stays readable.
impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        struct Items<'a>(&'a Array);
        impl fmt::Debug for Items<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for e in self.0.iter().take(SHOWN) {
                    match e {
                        Element::String(b) => list.entry(&String::from_utf8_lossy(b)),
                        e => list.entry(&e),
                    };
                }
                if self.0.len() > SHOWN {
                    list.entry(&format_args!("…"));
                }
                list.finish()
            }
        }
        f.debug_struct("Array")
            .field("elem_type", &self.elem_type)
            .field("len", &self.len())
            .field("items", &Items(self))
            .finish()
    }
}

fn elem_error(i: usize, expected: &str, actual: &Element<'_>) -> Error {
    let actual = match actual {
        Element::U8(_) => "u8",
        Element::I8(_) => "i8",
        Element::U16(_) => "u16",
        Element::I16(_) => "i16",
        Element::U32(_) => "u32",
        Element::I32(_) => "i32",
        Element::F32(_) => "f32",
        Element::Bool(_) => "bool",
        Element::String(_) => "string",
        Element::Array(_) => "array",
        Element::U64(_) => "u64",
        Element::I64(_) => "i64",
        Element::F64(_) => "f64",
    };
    Error::ArrayElement {
        key: String::new(),
        index: i as u64,
        reason: format!("is {actual}, expected {expected}"),
    }
}

#[cfg(feature = "serde")]
mod ser {
    use serde::ser::{Serialize, SerializeSeq, Serializer};

    use super::{Array, Element, Value, ValueType};

    impl Serialize for ValueType {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }

    impl Serialize for Value {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Value::U8(v) => s.serialize_u8(*v),
                Value::I8(v) => s.serialize_i8(*v),
                Value::U16(v) => s.serialize_u16(*v),
                Value::I16(v) => s.serialize_i16(*v),
                Value::U32(v) => s.serialize_u32(*v),
                Value::I32(v) => s.serialize_i32(*v),
                Value::F32(v) => s.serialize_f32(*v),
                Value::Bool(v) => s.serialize_bool(*v),
                Value::String(v) => s.serialize_str(v),
                Value::Array(a) => a.serialize(s),
                Value::U64(v) => s.serialize_u64(*v),
                Value::I64(v) => s.serialize_i64(*v),
                Value::F64(v) => s.serialize_f64(*v),
            }
        }
    }

    impl Serialize for Element<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match *self {
                Element::U8(v) => s.serialize_u8(v),
                Element::I8(v) => s.serialize_i8(v),
                Element::U16(v) => s.serialize_u16(v),
                Element::I16(v) => s.serialize_i16(v),
                Element::U32(v) => s.serialize_u32(v),
                Element::I32(v) => s.serialize_i32(v),
                Element::F32(v) => s.serialize_f32(v),
                Element::Bool(v) => s.serialize_bool(v),
                // Invalid UTF-8 (a malformed file) is shown with replacement characters.
                Element::String(b) => s.serialize_str(&String::from_utf8_lossy(b)),
                Element::Array(a) => a.serialize(s),
                Element::U64(v) => s.serialize_u64(v),
                Element::I64(v) => s.serialize_i64(v),
                Element::F64(v) => s.serialize_f64(v),
            }
        }
    }

    /// Serializes as a sequence of its elements.
    impl Serialize for Array {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.len()))?;
            for e in self.iter() {
                seq.serialize_element(&e)?;
            }
            seq.end()
        }
    }
}
