//! Every token count against llama.cpp: `matmul` on seeded data equals llama.cpp's
//! `GGML_OP_MUL_MAT` (CPU backend, 2 threads, weights placed as its model loader places them)
//! bit for bit, for every supported weight type, on shapes that take each of its kernel paths,
//! for n = 1..=600 (and sparser lists on the larger shapes).
//!
//! `data/mulmat_sweep.txt` holds one 32-bit hash of llama.cpp's output bits per (type, shape, n),
//! written by `xtask/tools/mulmat_sweep.cpp` (see the README there); the inputs are regenerated
//! here with the same PRNG and drawing order. The weights are PRNG bytes with sane f16 scale
//! fields (no quantizer needed on either side); the activations include Gemma-like outliers up
//! to 1e5.

use strata_gguf::GgmlType;
use strata_quant::{matmul, matmul_q_part, quantize_acts, vec_dot_type, Part};

use crate::common::{draw_half_elements, f16_fields};

const FIXTURE: &str = include_str!("data/mulmat_sweep.txt");

/// splitmix64, as in the harness.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1), in f32 arithmetic.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0
    }
}

/// The fixture's type names, with ggml's type ids (the seed uses them).
fn type_info(name: &str) -> (GgmlType, u64) {
    use GgmlType::*;
    match name {
        "q4_0" => (Q4_0, 2),
        "q4_1" => (Q4_1, 3),
        "q5_0" => (Q5_0, 6),
        "q5_1" => (Q5_1, 7),
        "q8_0" => (Q8_0, 8),
        "q2_k" => (Q2_K, 10),
        "q3_k" => (Q3_K, 11),
        "q4_k" => (Q4_K, 12),
        "q5_k" => (Q5_K, 13),
        "q6_k" => (Q6_K, 14),
        "iq4_nl" => (IQ4_NL, 20),
        "f16" => (F16, 1),
        "bf16" => (BF16, 30),
        "iq4_xs" => (IQ4_XS, 23),
        "iq2_xxs" => (IQ2_XXS, 16),
        "iq2_xs" => (IQ2_XS, 17),
        "iq2_s" => (IQ2_S, 22),
        "iq3_xxs" => (IQ3_XXS, 18),
        "iq3_s" => (IQ3_S, 21),
        "iq1_s" => (IQ1_S, 19),
        "iq1_m" => (IQ1_M, 29),
        "tq1_0" => (TQ1_0, 34),
        "tq2_0" => (TQ2_0, 35),
        "mxfp4" => (MXFP4, 39),
        _ => panic!("unknown type {name} in the sweep fixture"),
    }
}

/// Weight bytes: one draw per byte (its top byte), then per block each f16 scale field (a
/// magnitude draw in [0x1000, 0x2800), then a sign draw); IQ1_M draws its f16 scale the same way
/// (spread over its scale words' top nibbles), MXFP4 its E8M0 byte as `119 + (r >> 40) % 16`;
/// Q8_0 quant bytes 0x80 become 0x81.
/// F16 elements: [0x2000, 0x4400) and a sign draw; BF16: [0x3c00, 0x4000) and a sign draw.
fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut SplitMix) -> Vec<u8> {
    let rb = ty.row_size(cols as u64).expect("whole blocks") as usize;
    let mut w: Vec<u8> = (0..rb * rows).map(|_| (rng.next() >> 56) as u8).collect();
    if matches!(ty, GgmlType::F16 | GgmlType::BF16) {
        draw_half_elements(ty, &mut w, || rng.next());
        return w;
    }
    for b in w.chunks_exact_mut(ty.type_size()) {
        for &f in f16_fields(ty) {
            let mut h = (0x1000 + (rng.next() >> 40) % 0x1800) as u16;
            if rng.next() & 1 == 1 {
                h |= 0x8000;
            }
            b[f..f + 2].copy_from_slice(&h.to_le_bytes());
        }
        if ty == GgmlType::IQ1_M {
            // The f16 scale, nibble k in the top nibble of scale word k (bytes 48..56).
            let mut h = (0x1000 + (rng.next() >> 40) % 0x1800) as u16;
            if rng.next() & 1 == 1 {
                h |= 0x8000;
            }
            for k in 0..4 {
                let hi = &mut b[48 + 2 * k + 1];
                *hi = (*hi & 0x0F) | ((((h >> (4 * k)) & 0x0F) as u8) << 4);
            }
        }
        if ty == GgmlType::MXFP4 {
            b[0] = (119 + (rng.next() >> 40) % 16) as u8; // E8M0 scale 2^-9 .. 2^6
        }
        if ty == GgmlType::Q8_0 {
            for q in &mut b[2..] {
                if *q == 0x80 {
                    *q = 0x81;
                }
            }
        }
    }
    w
}

/// Activations, token-major: `u` in [-1, 1); every 97th element (offset 5) times 40; every
/// 389th (offset 11) an outlier `sign(u)·(1000 + |u|·99000)`, halved for F16 weights.
fn acts(ty: GgmlType, len: usize, rng: &mut SplitMix) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let mut u = rng.unit();
            if i % 97 == 5 {
                u *= 40.0;
            }
            if i % 389 == 11 {
                let mut m = 1000.0 + u.abs() * 99000.0;
                if ty == GgmlType::F16 {
                    m *= 0.5;
                }
                u = if u < 0.0 { -m } else { m };
            }
            u
        })
        .collect()
}

/// FNV-1a 64 of the output's little-endian bytes, folded to 32 bits.
fn hash(y: &[f32]) -> u32 {
    let h = y
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    (h ^ (h >> 32)) as u32
}

/// "a-b,c,d-e" → the token counts.
fn parse_nspec(spec: &str) -> Vec<usize> {
    spec.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (usize, usize) = (a.parse().expect("n"), b.parse().expect("n"));
            a..=b
        })
        .collect()
}

/// How the product is computed: in one call, or in slices of at most `len` tokens (each
/// quantized and multiplied alone, told its place in the batch), only for the token counts
/// `keep` accepts.
#[derive(Clone, Copy)]
enum Mode {
    Whole,
    Slices { len: usize, keep: fn(usize) -> bool },
}

/// `y` (`n × rows`) = W · the first `n` tokens of `x`, as `mode` says.
fn product(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    mode: Mode,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * n];
    match mode {
        Mode::Whole => matmul(ty, w, rows, cols, &x[..cols * n], n, &mut y).unwrap(),
        Mode::Slices { len, .. } => {
            let mut first = 0;
            while first < n {
                let m = len.min(n - first);
                let acts = quantize_acts(
                    vec_dot_type(ty).unwrap(),
                    &x[first * cols..(first + m) * cols],
                    m,
                    cols,
                )
                .unwrap();
                let part = Part { first, batch: n };
                let out = &mut y[first * rows..(first + m) * rows];
                matmul_q_part(ty, w, rows, cols, &acts, part, out).unwrap();
                first += m;
            }
        }
    }
    y
}

/// Checks every line of `fixture` of type `name` (every line when `None`); panics naming the
/// first (type, shape, n) whose hash differs and how many differ in all.
fn check(fixture: &str, name: Option<&str>, mode: Mode) {
    let mut lines = 0;
    let mut failed: Vec<String> = Vec::new();
    let mut checked = 0;
    for line in fixture.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "malformed fixture line: {line}");
        if name.is_some_and(|name| f[0] != name) {
            continue;
        }
        lines += 1;
        let name = f[0];
        let (ty, id) = type_info(name);
        let (rows, cols): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        let ns = parse_nspec(f[3]);
        let want = f[4];
        assert_eq!(want.len(), 8 * ns.len(), "{name} {rows}x{cols}: hash count");
        let mut rng = SplitMix(id * 1_000_003 + rows as u64 * 10_007 + cols as u64);
        let w = weights(ty, rows, cols, &mut rng);
        let n_max = *ns.last().expect("token counts");
        let x = acts(ty, cols * n_max, &mut rng);
        for (k, &n) in ns.iter().enumerate() {
            if let Mode::Slices { keep, .. } = mode {
                if !keep(n) {
                    continue;
                }
            }
            let got = format!("{:08x}", hash(&product(ty, &w, rows, cols, &x, n, mode)));
            checked += 1;
            if got != want[8 * k..8 * k + 8] {
                failed.push(format!("{name} {rows}x{cols} n={n}"));
            }
        }
    }
    assert!(lines > 0, "no fixture lines for {name:?}");
    assert!(
        failed.is_empty(),
        "{} of {checked} products differ from llama.cpp's; first: {} (all: {})",
        failed.len(),
        failed[0],
        failed.join(", ")
    );
}

/// Token counts checked in slices: past one and two slices of 32 (an output head's), and
/// the ubatch boundary.
fn sliced_n(n: usize) -> bool {
    n <= 80 || (505..=520).contains(&n)
}

macro_rules! sweep_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check(FIXTURE, Some($name), Mode::Whole);
                // Slices of 32 tokens, as the engine computes its output head, and of 7 (slices
                // that start inside llama.cpp's groups of four).
                for len in [32, 7] {
                    check(FIXTURE, Some($name), Mode::Slices { len, keep: sliced_n });
                }
            }
        )*
    };
}

/// Another output of the harness (say, for a model's real shapes), named by the environment
/// variable `STRATA_SWEEP_FIXTURE`: `cargo test -p strata-quant --test tests sweep_external --
/// --ignored`.
#[test]
#[ignore = "needs STRATA_SWEEP_FIXTURE (a mulmat_sweep output file)"]
fn sweep_external_fixture() {
    let path = std::env::var("STRATA_SWEEP_FIXTURE").expect("STRATA_SWEEP_FIXTURE is not set");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    check(&text, None, Mode::Whole);
}

sweep_tests! {
    sweep_q4_0 => "q4_0",
    sweep_q4_1 => "q4_1",
    sweep_q5_0 => "q5_0",
    sweep_q5_1 => "q5_1",
    sweep_q8_0 => "q8_0",
    sweep_q2_k => "q2_k",
    sweep_q3_k => "q3_k",
    sweep_q4_k => "q4_k",
    sweep_q5_k => "q5_k",
    sweep_q6_k => "q6_k",
    sweep_iq4_nl => "iq4_nl",
    sweep_f16 => "f16",
    sweep_bf16 => "bf16",
    sweep_iq4_xs => "iq4_xs",
    sweep_iq2_xxs => "iq2_xxs",
    sweep_iq2_xs => "iq2_xs",
    sweep_iq2_s => "iq2_s",
    sweep_iq3_xxs => "iq3_xxs",
    sweep_iq3_s => "iq3_s",
    sweep_iq1_s => "iq1_s",
    sweep_iq1_m => "iq1_m",
    sweep_tq1_0 => "tq1_0",
    sweep_tq2_0 => "tq2_0",
    sweep_mxfp4 => "mxfp4",
}

/// A slice that does not fit in its batch is refused, naming the sizes.
#[test]
fn part_outside_the_batch_is_refused() {
    let ty = GgmlType::Q6_K;
    let (rows, cols) = (8, 256);
    let w = vec![0u8; rows * 210];
    let acts = quantize_acts(GgmlType::Q8_K, &vec![0.5; 3 * cols], 3, cols).unwrap();
    let mut y = vec![0f32; 3 * rows];
    let err = matmul_q_part(
        ty,
        &w,
        rows,
        cols,
        &acts,
        Part { first: 6, batch: 8 },
        &mut y,
    );
    assert!(
        matches!(
            err,
            Err(strata_quant::QuantError::SizeMismatch {
                expected: 8,
                got: 9,
                ..
            })
        ),
        "{err:?}"
    );
    matmul_q_part(
        ty,
        &w,
        rows,
        cols,
        &acts,
        Part { first: 5, batch: 8 },
        &mut y,
    )
    .unwrap();
}
