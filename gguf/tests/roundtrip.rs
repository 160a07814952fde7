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

#[test]
fn version_2_and_custom_alignment_round_trip() {
    let mut w = GgufWriter::new();
    w.set_version(2).unwrap();
    w.add_metadata("general.alignment", 64u32).unwrap();
    w.add_metadata("empty", strata_gguf::Array::from_arrays(vec![]))
        .unwrap();
    w.add_tensor("a", strata_gguf::GgmlType::F16, &[3], vec![1u8; 6])
        .unwrap();
    w.add_tensor("b", strata_gguf::GgmlType::I8, &[5, 1], vec![2u8; 5])
        .unwrap();
    let bytes = w.to_vec().unwrap();
    let g = Gguf::from_bytes(&bytes).unwrap();
    assert_eq!((g.version(), g.alignment()), (2, 64));
    assert_eq!(g.data_offset() % 64, 0);
    assert_eq!(g.tensor("b").unwrap().offset, 64);
    assert_eq!(bytes.len() as u64, g.data_offset() + 128);
    assert_eq!(
        g.tensor_data(&bytes, g.tensor("b").unwrap()).unwrap(),
        &[2u8; 5]
    );
    assert_eq!(g.metadata().get_array("empty").unwrap().len(), 0);
    let again = GgufWriter::from_gguf_with_data(&g, &bytes)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(again, bytes);
}
