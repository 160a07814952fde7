//! Helpers shared by the test modules.

use std::path::PathBuf;

use strata_gguf::{Array, GgmlType, GgufWriter};

/// Path of the real model: `$STRATA_MODEL` or `<workspace>/models/gemma-3-270m-q4_k_m.gguf`.
/// Panics (fails the test) with instructions when the file is missing.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("STRATA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "real model not found at {}: run `cargo xtask fetch-model` (or set STRATA_MODEL)",
        path.display()
    );
    path
}

/// A small valid file with every metadata value type, nested arrays and a few tensors.
pub fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_metadata("general.alignment", 32u32).unwrap();
    w.add_metadata("u8", 7u8).unwrap();
    w.add_metadata("i8", -7i8).unwrap();
    w.add_metadata("u16", 700u16).unwrap();
    w.add_metadata("i16", -700i16).unwrap();
    w.add_metadata("u32", 70_000u32).unwrap();
    w.add_metadata("i32", -70_000i32).unwrap();
    w.add_metadata("f32", 1.5f32).unwrap();
    w.add_metadata("bool", true).unwrap();
    w.add_metadata("u64", 1u64 << 40).unwrap();
    w.add_metadata("i64", -(1i64 << 40)).unwrap();
    w.add_metadata("f64", -2.25f64).unwrap();
    w.add_metadata("tokens", Array::from_strings(["a", "bc", "", "déf"]))
        .unwrap();
    w.add_metadata("scores", Array::from_f32(&[0.5, -1.0]))
        .unwrap();
    w.add_metadata(
        "nested",
        Array::from_arrays(vec![Array::from_i32(&[1, 2]), Array::from_strings(["x"])]),
    )
    .unwrap();
    w.add_tensor("a", GgmlType::F32, &[4, 2], (0u8..32).collect::<Vec<_>>())
        .unwrap();
    w.add_tensor("b", GgmlType::Q8_0, &[32], vec![1u8; 34])
        .unwrap();
    w.add_tensor("c", GgmlType::Q4_K, &[256, 1, 1, 1], vec![2u8; 144])
        .unwrap();
    w.to_vec().unwrap()
}

/// Builds GGUF bytes field by field, for hand-made (and deliberately broken) files.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// A header: magic, version, tensor count, kv count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Raw {
        self.bytes(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A `u32` metadata pair.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor-table entry.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `align`, then `n` data bytes.
    pub fn data(&mut self, align: usize, n: usize) -> &mut Raw {
        while self.0.len() % align != 0 {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0xAB);
        self
    }
}
