//! Facts about the real model, Gemma 3 270M Q4_K_M.

use std::collections::BTreeMap;

use strata_gguf::{GgmlType, Gguf, ValueType};

use crate::common::model_path;

#[test]
fn header_facts() {
    let g = Gguf::open(model_path()).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata().len(), 33);
    assert_eq!(g.tensors().len(), 236);
    assert_eq!(g.alignment(), 32);
    let md = g.metadata();
    assert_eq!(md.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(md.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(md.get_u64("gemma3.block_count").unwrap(), 18);
    assert_eq!(md.get_u32("gemma3.embedding_length").unwrap(), 640);

    let mut hist = BTreeMap::new();
    for t in g.tensors() {
        *hist.entry(t.ty.name()).or_insert(0) += 1;
    }
    let expected: BTreeMap<_, _> = [
        ("F32", 109),
        ("Q5_0", 81),
        ("Q4_K", 27),
        ("Q8_0", 10),
        ("Q6_K", 9),
    ]
    .into();
    assert_eq!(hist, expected);

    // The last tensor ends exactly at the end of the file.
    let end = g
        .tensors()
        .iter()
        .map(|t| g.tensor_range(t).end)
        .max()
        .unwrap();
    assert_eq!(end, g.file_len());
    assert_eq!(g.data_offset() % 32, 0);
}

#[test]
fn vocabulary_is_compact_and_readable() {
    let g = Gguf::open(model_path()).unwrap();
    let md = g.metadata();
    let tokens = md.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.elem_type(), ValueType::String);
    assert_eq!(tokens.len(), 262_144);
    assert_eq!(tokens.iter_str().count(), 262_144);
    let bos = md.get_u32("tokenizer.ggml.bos_token_id").unwrap() as usize;
    assert_eq!(tokens.str_at(bos).unwrap().unwrap(), "<bos>");
    assert!(tokens.iter_str().all(|s| s.is_ok()));
    let scores = md.get_f32_array("tokenizer.ggml.scores").unwrap();
    assert_eq!(scores.len(), 262_144);
    let types = md.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.len(), 262_144);
    // Compact: about the size of the strings themselves, not 262k heap allocations.
    assert!(
        tokens.heap_bytes() < 8 * 1024 * 1024,
        "{}",
        tokens.heap_bytes()
    );
}

#[test]
fn open_read_and_from_bytes_agree() {
    let path = model_path();
    let bytes = std::fs::read(&path).unwrap();
    let a = Gguf::open(&path).unwrap();
    let b = Gguf::read(std::fs::File::open(&path).unwrap()).unwrap();
    let c = Gguf::from_bytes(&bytes).unwrap();
    for g in [&b, &c] {
        assert_eq!(g.tensors(), a.tensors());
        assert_eq!(g.metadata(), a.metadata());
        assert_eq!(g.data_offset(), a.data_offset());
    }
    let t = c.tensor("token_embd.weight").unwrap();
    assert_eq!(t.dims, vec![640, 262_144]);
    assert_eq!(t.ty, GgmlType::Q8_0);
    let data = c.tensor_data(&bytes, t).unwrap();
    assert_eq!(data.len() as u64, t.n_bytes);
    assert_eq!(
        data.as_ptr(),
        bytes[t.abs_offset(c.data_offset()) as usize..].as_ptr()
    );
}

/// A `Read + Seek` that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn reading_the_header_does_not_read_tensor_data() {
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let file = std::fs::File::open(model_path()).unwrap();
    let g = Gguf::read(Counting {
        inner: file,
        read: read.clone(),
    })
    .unwrap();
    // The header is 6.5 MB of a 253 MB file; allow one read-buffer (64 KiB) past it.
    assert!(
        read.get() <= g.data_offset() + 64 * 1024,
        "read {} bytes",
        read.get()
    );
    assert!(g.data_offset() < g.file_len() / 10);
}

#[test]
fn header_fits_a_small_memory_limit() {
    use strata_gguf::{Error, ReadOptions};
    let path = model_path();
    assert!(Gguf::open_with(&path, &ReadOptions::new().max_memory(16 << 20)).is_ok());
    let e = Gguf::open_with(&path, &ReadOptions::new().max_memory(1 << 20)).unwrap_err();
    assert!(matches!(e, Error::MemoryLimit { .. }), "{e}");
}
