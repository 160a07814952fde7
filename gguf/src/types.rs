//! The ggml tensor element types: ids, names, block sizes and bytes per block.
//!
//! These are format facts, checked against `type_traits` in llama.cpp's `ggml/src/ggml.c`
//! (the `blck_size` and `sizeof(block_*)` of each type). This crate knows how big a block
//! is, not how to compute with it; that is `strata-quant`'s job.

use std::fmt;

/// Declares [`GgmlType`] and its per-type table in one place so that id, name, block size
/// and bytes per block can never drift apart.
macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $blck:literal, $size:literal; )*) => {
        /// A ggml tensor element type, as stored in a GGUF tensor table.
        ///
        /// Every type llama.cpp defines in `enum ggml_type` is here, with llama.cpp's id.
        /// A block is the unit of quantization: `block_size()` elements stored in
        /// `type_size()` bytes (for plain types a block is one element).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum GgmlType {
            $( $(#[$doc])* $variant, )*
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( GgmlType::$variant, )* ];

            /// The type with llama.cpp id `id`, or `None` for an id llama.cpp does not define
            /// (or has removed, such as the old Q4_2 = 4 or the repacked Q4_0_4_4 = 31).
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// llama.cpp's numeric id of this type (the value stored in a GGUF tensor table).
            pub fn id(self) -> u32 {
                match self {
                    $( GgmlType::$variant => $id, )*
                }
            }

            /// llama.cpp's name of this type, e.g. `"Q4_K"`, `"F32"`, `"IQ2_XXS"`.
            pub fn name(self) -> &'static str {
                match self {
                    $( GgmlType::$variant => $name, )*
                }
            }

            /// Elements per block (1 for the plain types F32, F16, BF16, F64 and I8…I64).
            pub fn block_size(self) -> usize {
                match self {
                    $( GgmlType::$variant => $blck, )*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self {
                    $( GgmlType::$variant => $size, )*
                }
            }
        }
    };
}

ggml_types! {
    /// 32-bit IEEE float.
    F32 = 0, "F32", 1, 4;
    /// 16-bit IEEE half float.
    F16 = 1, "F16", 1, 2;
    /// 4-bit, blocks of 32 with an f16 scale (4.5 bits per weight).
    Q4_0 = 2, "Q4_0", 32, 18;
    /// 4-bit, blocks of 32 with f16 scale and min (5 bits per weight).
    Q4_1 = 3, "Q4_1", 32, 20;
    /// 5-bit, blocks of 32 with an f16 scale (5.5 bits per weight).
    Q5_0 = 6, "Q5_0", 32, 22;
    /// 5-bit, blocks of 32 with f16 scale and min (6 bits per weight).
    Q5_1 = 7, "Q5_1", 32, 24;
    /// 8-bit, blocks of 32 with an f16 scale (8.5 bits per weight).
    Q8_0 = 8, "Q8_0", 32, 34;
    /// 8-bit, blocks of 32 with f16 scale and f16 sum (used for activations).
    ///
    /// 36 bytes as in ggml's `block_q8_1`; note that gguf-py's `GGML_QUANT_SIZES` says 40.
    Q8_1 = 9, "Q8_1", 32, 36;
    /// 2-bit K-quant, super-blocks of 256 (2.625 bits per weight).
    Q2_K = 10, "Q2_K", 256, 84;
    /// 3-bit K-quant, super-blocks of 256 (3.4375 bits per weight).
    Q3_K = 11, "Q3_K", 256, 110;
    /// 4-bit K-quant, super-blocks of 256 (4.5 bits per weight).
    Q4_K = 12, "Q4_K", 256, 144;
    /// 5-bit K-quant, super-blocks of 256 (5.5 bits per weight).
    Q5_K = 13, "Q5_K", 256, 176;
    /// 6-bit K-quant, super-blocks of 256 (6.5625 bits per weight).
    Q6_K = 14, "Q6_K", 256, 210;
    /// 8-bit K-quant with f32 scale and block sums (used for activations).
    Q8_K = 15, "Q8_K", 256, 292;
    /// 2.0625-bit importance quant.
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    /// 2.3125-bit importance quant.
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    /// 3.0625-bit importance quant.
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    /// 1.5625-bit importance quant.
    IQ1_S = 19, "IQ1_S", 256, 50;
    /// 4-bit non-linear quant, blocks of 32.
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    /// 3.4375-bit importance quant.
    IQ3_S = 21, "IQ3_S", 256, 110;
    /// 2.5625-bit importance quant.
    IQ2_S = 22, "IQ2_S", 256, 82;
    /// 4.25-bit non-linear quant, super-blocks of 256.
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    /// 8-bit signed integer.
    I8 = 24, "I8", 1, 1;
    /// 16-bit signed integer.
    I16 = 25, "I16", 1, 2;
    /// 32-bit signed integer.
    I32 = 26, "I32", 1, 4;
    /// 64-bit signed integer.
    I64 = 27, "I64", 1, 8;
    /// 64-bit IEEE float.
    F64 = 28, "F64", 1, 8;
    /// 1.75-bit importance quant.
    IQ1_M = 29, "IQ1_M", 256, 56;
    /// bfloat16.
    BF16 = 30, "BF16", 1, 2;
    /// Ternary quant, 1.6875 bits per weight.
    TQ1_0 = 34, "TQ1_0", 256, 54;
    /// Ternary quant, 2.0625 bits per weight.
    TQ2_0 = 35, "TQ2_0", 256, 66;
    /// Microscaling FP4: 32 E2M1 values with a shared E8M0 exponent.
    MXFP4 = 39, "MXFP4", 32, 17;
    /// NVIDIA FP4: 64 E2M1 values in four groups of 16, each with an E4M3 scale.
    NVFP4 = 40, "NVFP4", 64, 36;
    /// 1-bit quant: 128 sign bits with an f16 scale (1.125 bits per weight).
    Q1_0 = 41, "Q1_0", 128, 18;
}

impl GgmlType {
    /// Bytes taken by `n_elements` elements of this type, or `None` when `n_elements` is not a
    /// whole number of blocks or the size overflows `u64`.
    pub fn row_size(self, n_elements: u64) -> Option<u64> {
        let blck = self.block_size() as u64;
        if n_elements % blck != 0 {
            return None;
        }
        (n_elements / blck).checked_mul(self.type_size() as u64)
    }

    /// Whether this is a block-quantized type (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

/// llama.cpp's name of a `general.file_type` value (`enum llama_ftype`), e.g. 15 → `"Q4_K_M"`.
///
/// The file type describes the quantization mix a model was made with (most tensors in
/// that type; norms and some others in other types). `None` for ids llama.cpp does not define.
pub fn file_type_name(ftype: u32) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        _ => return None,
    })
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for GgmlType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
