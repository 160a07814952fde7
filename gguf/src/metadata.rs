//! The metadata key-value table and its typed getters.

use std::collections::HashMap;

use crate::value::{Array, Value};
use crate::Error;

/// The metadata of a GGUF file: key-value pairs in file order, with lookup by key.
///
/// Typed getters name the key and the actual type in their errors:
/// ```
/// # use strata_gguf::{Metadata, Value};
/// let mut md = Metadata::new();
/// md.insert("gemma3.block_count", Value::U32(18)).unwrap();
/// assert_eq!(md.get_u32("gemma3.block_count").unwrap(), 18);
/// assert_eq!(md.get_u64("gemma3.block_count").unwrap(), 18);
/// let err = md.get_str("gemma3.block_count").unwrap_err();
/// assert_eq!(err.to_string(), "metadata key `gemma3.block_count` is u32, expected string");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

macro_rules! int_getter {
    ($(#[$doc:meta])* $fn:ident, $t:ty, $name:literal) => {
        $(#[$doc])*
        pub fn $fn(&self, key: &str) -> Result<$t, Error> {
            let v = self.require(key)?;
            let i = v
                .as_integer()
                .ok_or_else(|| Error::mismatch(key, $name, v.type_description()))?;
            <$t>::try_from(i).map_err(|_| Error::OutOfRange {
                key: key.to_owned(),
                value: i.to_string(),
                expected: $name,
            })
        }
    };
}

impl Metadata {
    /// An empty table.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// An empty table with room for `n` entries.
    pub(crate) fn with_capacity(n: usize) -> Metadata {
        Metadata {
            entries: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    /// Appends a pair; errors with [`Error::DuplicateKey`] (offset 0) if `key` is present.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<(), Error> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(Error::DuplicateKey { key, offset: 0 });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Iterates over the pairs in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Iterates over the keys in file order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The value of `key`, or [`Error::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&Value, Error> {
        self.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_owned(),
        })
    }

    int_getter!(
        /// `key` as a `u8`; accepts any integer type whose value fits.
        get_u8, u8, "u8"
    );
    int_getter!(
        /// `key` as a `u16`; accepts any integer type whose value fits.
        get_u16, u16, "u16"
    );
    int_getter!(
        /// `key` as a `u32`; accepts any integer type whose value fits.
        get_u32, u32, "u32"
    );
    int_getter!(
        /// `key` as a `u64`; accepts any integer type whose value fits.
        get_u64, u64, "u64"
    );
    int_getter!(
        /// `key` as an `i32`; accepts any integer type whose value fits.
        get_i32, i32, "i32"
    );
    int_getter!(
        /// `key` as an `i64`; accepts any integer type whose value fits.
        get_i64, i64, "i64"
    );

    /// `key` as an `f32`; accepts `f32` and `f64` (rounded to nearest).
    pub fn get_f32(&self, key: &str) -> Result<f32, Error> {
        match self.require(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            v => Err(Error::mismatch(key, "f32", v.type_description())),
        }
    }

    /// `key` as an `f64`; accepts `f32` and `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64, Error> {
        match self.require(key)? {
            Value::F32(v) => Ok(f64::from(*v)),
            Value::F64(v) => Ok(*v),
            v => Err(Error::mismatch(key, "f64", v.type_description())),
        }
    }

    /// `key` as a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, Error> {
        match self.require(key)? {
            Value::Bool(v) => Ok(*v),
            v => Err(Error::mismatch(key, "bool", v.type_description())),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, Error> {
        match self.require(key)? {
            Value::String(v) => Ok(v),
            v => Err(Error::mismatch(key, "string", v.type_description())),
        }
    }

    /// `key` as an array.
    pub fn get_array(&self, key: &str) -> Result<&Array, Error> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(Error::mismatch(key, "array", v.type_description())),
        }
    }

    /// `key` as a vector of `f32` (see [`Array::to_f32_vec`]); errors name the key.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, Error> {
        self.get_array(key)?
            .to_f32_vec()
            .map_err(|e| with_key(e, key))
    }

    /// `key` as a vector of `i32` (see [`Array::to_i32_vec`]); errors name the key.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, Error> {
        self.get_array(key)?
            .to_i32_vec()
            .map_err(|e| with_key(e, key))
    }

    /// `key` as a vector of `u32` (see [`Array::to_u32_vec`]); errors name the key.
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>, Error> {
        self.get_array(key)?
            .to_u32_vec()
            .map_err(|e| with_key(e, key))
    }

    /// `Ok(None)` if `key` is absent, otherwise the getter's result. For optional keys:
    /// `md.optional("x", Metadata::get_u32)?`.
    pub fn optional<'a, T>(
        &'a self,
        key: &str,
        getter: impl FnOnce(&'a Metadata, &str) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.contains_key(key) {
            getter(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Fills in the key of an [`Error::ArrayElement`] raised without one.
pub(crate) fn with_key(e: Error, key: &str) -> Error {
    match e {
        Error::ArrayElement { index, reason, .. } => Error::ArrayElement {
            key: key.to_owned(),
            index,
            reason,
        },
        e => e,
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Metadata {
    /// Serializes as a map from key to value, in file order.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}
