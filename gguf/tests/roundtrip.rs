//! Reading a file and writing it back reproduces it byte for byte.

use strata_gguf::{Gguf, GgufWriter};

use crate::common::{model_path, small_file};

#[test]
fn real_model_round_trip_is_byte_identical() {
    let bytes = std::fs::read(model_path()).unwrap();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let w = GgufWriter::from_gguf_with_data(&g, &bytes).unwrap();
    let out = w.to_vec().unwrap();
    assert_eq!(out.len(), bytes.len());
    assert!(out == bytes, "round trip differs");
}

#[test]
fn small_file_round_trip() {
    let bytes = small_file();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let out = GgufWriter::from_gguf_with_data(&g, &bytes)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(out, bytes);
}
