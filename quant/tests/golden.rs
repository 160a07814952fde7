//! Golden vectors from gguf-py's numpy reference (`cargo xtask golden` regenerates
//! `tests/data/*.bin`): dequantize must be bit-identical for every format and block, and
//! quantize bit-identical where the reference quantizes that format.

use std::path::PathBuf;

use strata_gguf::GgmlType;
use strata_quant::{dequantize, quantize};

struct Golden {
    ty: GgmlType,
    blocks: Vec<u8>,
    dequant: Vec<f32>,
    /// (input, reference quantization), when the reference quantizes this format.
    quant: Option<(Vec<f32>, Vec<u8>)>,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(self.0.len() >= n, "golden file truncated");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn load(name: &str) -> Golden {
    let path = data_dir().join(format!("{name}.bin"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask golden`)", path.display()));
    let mut r = Reader(&bytes);
    assert_eq!(r.take(4), b"SQGV", "{name}: magic");
    assert_eq!(r.u32(), 1, "{name}: version");
    let ty = GgmlType::from_id(r.u32()).expect("known type id");
    let n = r.u32() as usize;
    let blocks = r.take(ty.row_size(n as u64).unwrap() as usize).to_vec();
    let dequant = r.f32s(n);
    let m = r.u32() as usize;
    let quant = (m > 0).then(|| {
        let x = r.f32s(m);
        let q = r.take(ty.row_size(m as u64).unwrap() as usize).to_vec();
        (x, q)
    });
    assert!(r.0.is_empty(), "{name}: trailing bytes");
    Golden {
        ty,
        blocks,
        dequant,
        quant,
    }
}

const FORMATS: &[(&str, GgmlType)] = &[
    ("f32", GgmlType::F32),
    ("f16", GgmlType::F16),
    ("bf16", GgmlType::BF16),
    ("q4_0", GgmlType::Q4_0),
    ("q4_1", GgmlType::Q4_1),
    ("q5_0", GgmlType::Q5_0),
    ("q5_1", GgmlType::Q5_1),
    ("q8_0", GgmlType::Q8_0),
    ("q8_1", GgmlType::Q8_1),
    ("q2_k", GgmlType::Q2_K),
    ("q3_k", GgmlType::Q3_K),
    ("q4_k", GgmlType::Q4_K),
    ("q5_k", GgmlType::Q5_K),
    ("q6_k", GgmlType::Q6_K),
    ("q8_k", GgmlType::Q8_K),
];

/// Checks `dequantize` of golden file `name` against gguf-py's, bit for bit.
fn check_dequant(name: &str, ty: GgmlType) {
    let g = load(name);
    assert_eq!(g.ty, ty, "{name}");
    let mut out = vec![0f32; g.dequant.len()];
    dequantize(ty, &g.blocks, &mut out).unwrap();
    let bs = ty.block_size();
    for (i, (a, b)) in out.iter().zip(&g.dequant).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{ty} block {} element {}: ours {a:e}, gguf-py {b:e}",
            i / bs,
            i % bs
        );
    }
}

#[test]
fn dequantize_is_bit_identical_to_gguf_py() {
    for &(name, ty) in FORMATS {
        check_dequant(name, ty);
    }
}

// The IQ, ternary and MXFP4 formats, one test each.
macro_rules! golden_dequant {
    ($($test:ident => $name:literal, $ty:ident;)*) => {
        $(
            #[test]
            fn $test() {
                check_dequant($name, GgmlType::$ty);
            }
        )*
    };
}

golden_dequant! {
    dequantize_iq4_nl => "iq4_nl", IQ4_NL;
    dequantize_iq4_xs => "iq4_xs", IQ4_XS;
    dequantize_iq2_xxs => "iq2_xxs", IQ2_XXS;
    dequantize_iq2_xs => "iq2_xs", IQ2_XS;
    dequantize_iq2_s => "iq2_s", IQ2_S;
    dequantize_iq3_xxs => "iq3_xxs", IQ3_XXS;
    dequantize_iq3_s => "iq3_s", IQ3_S;
    dequantize_iq1_s => "iq1_s", IQ1_S;
    dequantize_iq1_m => "iq1_m", IQ1_M;
    dequantize_tq1_0 => "tq1_0", TQ1_0;
    dequantize_tq2_0 => "tq2_0", TQ2_0;
    dequantize_mxfp4 => "mxfp4", MXFP4;
}

#[test]
fn quantize_is_bit_identical_to_reference() {
    let mut checked = Vec::new();
    for &(name, ty) in FORMATS {
        let Some((x, want)) = load(name).quant else {
            continue;
        };
        let got = quantize(ty, &x).unwrap();
        let ts = ty.type_size();
        for (b, (g, w)) in got.chunks(ts).zip(want.chunks(ts)).enumerate() {
            assert_eq!(
                g,
                w,
                "{ty} block {b}: input {:?}",
                &x[b * ty.block_size()..(b + 1) * ty.block_size()]
            );
        }
        checked.push(ty);
    }
    // The formats the reference quantizes (gguf-py, plus the ported ggml Q8_1/Q8_K reference).
    assert_eq!(checked.len(), 9, "{checked:?}");
}
