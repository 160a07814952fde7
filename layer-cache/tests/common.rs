//! Synthetic models and a fault-injecting storage for the test suite.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use strata_gguf::{GgmlType, Gguf, GgufWriter};
use strata_layer_cache::{Budget, CacheConfig, Error, LayerCache, MemStorage, Storage};

/// Deterministic xorshift bytes.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A model file: globals at both ends, `n_layers` blocks of varied tensor sizes, random bytes.
pub struct TestModel {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub gguf: Gguf,
}

impl TestModel {
    /// Write a model with `n_layers` layers under a unique temp path named after `tag`.
    pub fn new(tag: &str, n_layers: usize) -> TestModel {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "test".to_string())
            .unwrap();
        let mut seed = 1u64;
        let mut add = |w: &mut GgufWriter<'_>, name: String, ty: GgmlType, dims: &[u64]| {
            let n: u64 = dims.iter().product();
            let bytes = ty.row_size(n).unwrap() as usize;
            seed += 1;
            w.add_tensor(name, ty, dims, random_bytes(seed, bytes))
                .unwrap();
        };
        add(
            &mut w,
            "token_embd.weight".into(),
            GgmlType::Q8_0,
            &[256, 300],
        );
        for i in 0..n_layers {
            // Layer sizes vary a little so the largest layer matters.
            let rows = 64 + 16 * (i as u64 % 3);
            add(
                &mut w,
                format!("blk.{i}.attn_norm.weight"),
                GgmlType::F32,
                &[256],
            );
            add(
                &mut w,
                format!("blk.{i}.attn_q.weight"),
                GgmlType::Q8_0,
                &[256, rows],
            );
            add(
                &mut w,
                format!("blk.{i}.attn_q.bias"),
                GgmlType::F32,
                &[rows],
            );
            add(
                &mut w,
                format!("blk.{i}.ffn_up.weight"),
                GgmlType::F16,
                &[256, rows * 2],
            );
            add(
                &mut w,
                format!("blk.{i}.ffn_down.weight"),
                GgmlType::Q4_K,
                &[512, 40],
            );
        }
        add(&mut w, "output_norm.weight".into(), GgmlType::F32, &[256]);
        add(&mut w, "output.weight".into(), GgmlType::Q8_0, &[256, 300]);
        let bytes = w.to_vec().unwrap();
        let path =
            std::env::temp_dir().join(format!("strata-lc-{}-{tag}.gguf", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let gguf = Gguf::from_bytes(&bytes).unwrap();
        TestModel { path, bytes, gguf }
    }

    /// The bytes of tensor `name` read straight from the file.
    pub fn tensor_bytes(&self, name: &str) -> &[u8] {
        let t = self.gguf.tensor(name).unwrap();
        self.gguf.tensor_data(&self.bytes, t).unwrap()
    }

    /// A copy of the file under another name (for tests that damage it).
    pub fn copy_to(&self, tag: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("strata-lc-{}-{tag}.gguf", std::process::id()));
        std::fs::write(&path, &self.bytes).unwrap();
        path
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Wraps a storage and fails exactly its `fail_at`-th read (counting from 1).
pub struct FaultyStorage {
    pub inner: Arc<dyn Storage>,
    pub fail_at: usize,
    pub reads: AtomicUsize,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>, fail_at: usize) -> FaultyStorage {
        FaultyStorage {
            inner,
            fail_at,
            reads: AtomicUsize::new(0),
        }
    }
}

impl Storage for FaultyStorage {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at {
            return Err(Error::Io {
                what: "faulty storage".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other(format!("injected failure on read {n}")),
            });
        }
        self.inner.read_at(offset, buf)
    }

    fn describe(&self) -> String {
        "faulty storage".into()
    }
}

/// Wraps a storage and fails every read while `failing` is set.
pub struct SwitchedStorage {
    pub inner: Arc<dyn Storage>,
    pub failing: AtomicBool,
}

impl Storage for SwitchedStorage {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Io {
                what: "switched storage".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other("injected failure"),
            });
        }
        self.inner.read_at(offset, buf)
    }

    fn describe(&self) -> String {
        "switched storage".into()
    }
}

/// In-memory storage of a model's bytes.
pub fn mem_storage(model: &TestModel) -> Arc<dyn Storage> {
    Arc::new(MemStorage::new(model.bytes.clone()))
}

/// The plan's budget for "room for `k` layers".
pub fn budget_for(model: &TestModel, k: u64) -> Budget {
    let probe = LayerCache::open_path(
        model.path(),
        &CacheConfig {
            budget: Budget::Min,
            ..CacheConfig::default()
        },
    )
    .unwrap();
    Budget::Bytes(probe.plan().globals_bytes + k * probe.plan().slot_bytes)
}
