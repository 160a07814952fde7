//! ggml type ids, names and block sizes.

use strata_gguf::{file_type_name, GgmlType};

/// (id, name, elements per block, bytes per block), from `type_traits` in llama.cpp's
/// ggml/src/ggml.c (`blck_size`, `sizeof(block_*)`).
const TABLE: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

#[test]
fn every_type_matches_ggml() {
    assert_eq!(GgmlType::ALL.len(), TABLE.len());
    for &(id, name, blck, size) in TABLE {
        let ty = GgmlType::from_id(id).unwrap_or_else(|| panic!("id {id} unknown"));
        assert_eq!(
            (ty.id(), ty.name(), ty.block_size(), ty.type_size()),
            (id, name, blck, size)
        );
        assert_eq!(ty.to_string(), name);
    }
}

#[test]
fn removed_and_unknown_ids() {
    for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
        assert_eq!(GgmlType::from_id(id), None, "id {id}");
    }
}

#[test]
fn row_size() {
    assert_eq!(GgmlType::Q4_K.row_size(640 * 1024), Some(640 * 4 * 144));
    assert_eq!(GgmlType::F32.row_size(3), Some(12));
    assert_eq!(GgmlType::Q8_0.row_size(33), None);
    assert_eq!(GgmlType::F64.row_size(u64::MAX), None);
    assert_eq!(GgmlType::Q4_0.row_size(0), Some(0));
}

#[test]
fn file_types() {
    assert_eq!(file_type_name(15), Some("Q4_K_M"));
    assert_eq!(file_type_name(0), Some("F32"));
    assert_eq!(file_type_name(4), None);
}
