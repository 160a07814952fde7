//! Kernel throughput against the machine's memory bandwidth, measured in the same run.
//!
//! - `bandwidth/read_1GiB/{1,2}t`: sum of a 1 GiB buffer (AVX2 u64 adds where available, 1 and
//!   2 threads), GB/s.
//! - `matvec/{TYPE}/{1024,4096,8192}/{1,2}t`: `y = W·x` on an n × n weight matrix, GB/s of
//!   weight bytes (activations quantized outside the timed loop, as the engine does); 1024 fits
//!   in L2, so it shows the kernels' compute ceiling.
//! - `matvec_cold/{TYPE}/8192/{1,2}t`: the same over ≥ 1 GiB of distinct weight copies, one
//!   per call, so the weights come from DRAM (an 8192² matrix alone can sit in a large L3); for
//!   Q4_K, Q8_0, Q6_K, Q5_0 and every IQ, ternary and MXFP4 format (plus output-head shapes).
//! - `matmul/{TYPE}/4096/b{64,512}`: `Y = W·X` for a batch, in G elements/s = GOP/s
//!   (one multiply-add = 2 operations: the element count is 2 · rows · cols · batch), 2 threads.
//!
//! Quick run of one size: `cargo bench -p strata-quant --bench matvec -- 8192`.
//! `STRATA_SIMD=avx2|scalar` measures the lower kernel levels.

#![allow(missing_docs)] // `criterion_group!` generates an undocumented `pub fn`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata_gguf::GgmlType;
use strata_quant::{matmul_q, matvec_q, quantize_acts, vec_dot_type, QuantizedActs};

const TYPES: &[GgmlType] = &[
    GgmlType::Q4_K,
    GgmlType::Q8_0,
    GgmlType::Q6_K,
    GgmlType::Q5_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q5_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
    GgmlType::IQ4_XS,
    GgmlType::IQ3_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ2_S,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_XXS,
    GgmlType::IQ1_M,
    GgmlType::IQ1_S,
];

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Fast deterministic fill: random quant bytes, small finite f16 scales, finite floats.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = ty.row_size((rows * cols) as u64).unwrap() as usize;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut v: Vec<u8> = Vec::with_capacity(n);
    for _ in 0..n.div_ceil(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(n);
    let small = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    let fields: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::IQ4_XS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ3_XXS
        | GgmlType::IQ3_S
        | GgmlType::IQ1_S => &[0],
        GgmlType::TQ1_0 => &[52],
        GgmlType::TQ2_0 => &[64],
        // IQ1_M's f16 scale is the top nibbles of its four scale words: 0x2000 (≈ 0.0078).
        GgmlType::IQ1_M => {
            for b in v.chunks_exact_mut(ty.type_size()) {
                for k in 0..4 {
                    b[48 + 2 * k + 1] =
                        (b[48 + 2 * k + 1] & 0x0F) | ((0x2000u16 >> (4 * k)) as u8 & 0x0F) << 4;
                }
            }
            &[]
        }
        // MXFP4's scale is an E8M0 exponent: 2^(121 − 128).
        GgmlType::MXFP4 => {
            for b in v.chunks_exact_mut(ty.type_size()) {
                b[0] = 121;
            }
            &[]
        }
        // Floats in ±1 (random bits would include subnormals, whose slow microcode paths would
        // measure the data, not the kernel).
        GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => {
            let es = ty.type_size();
            for c in v.chunks_exact_mut(es) {
                let r = u16::from_le_bytes([c[0], c[1]]);
                let f = (r % 2001) as f32 / 1000.0 - 1.0;
                match ty {
                    GgmlType::F16 => {
                        c.copy_from_slice(&half::f16::from_f32(f).to_bits().to_le_bytes())
                    }
                    GgmlType::BF16 => {
                        c.copy_from_slice(&half::bf16::from_f32(f).to_bits().to_le_bytes())
                    }
                    _ => c.copy_from_slice(&f.to_le_bytes()),
                }
            }
            &[]
        }
        _ => &[],
    };
    if !fields.is_empty() {
        for b in v.chunks_exact_mut(ty.type_size()) {
            for &o in fields {
                b[o..o + 2].copy_from_slice(&small);
            }
        }
    }
    v
}

fn acts(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// Sum of `c` (wrapping), as fast as the loads allow: AVX2 with four independent 256-bit
/// accumulators where the CPU has it (baseline x86-64 code would be add-bound, not load-bound).
fn sum_u64(c: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { sum_u64_avx2(c) };
    }
    let mut s = [0u64; 4];
    for q in c.chunks_exact(4) {
        for k in 0..4 {
            s[k] = s[k].wrapping_add(q[k]);
        }
    }
    s.iter().fold(0, |a, &b| a.wrapping_add(b))
}

/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_u64_avx2(c: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let blocks = c.chunks_exact(16);
    let rest: u64 = blocks.remainder().iter().fold(0, |a, &b| a.wrapping_add(b));
    for q in blocks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `q` has 16 u64s; this reads 4 of them at 4k.
            let v = unsafe { _mm256_loadu_si256(q.as_ptr().add(4 * k).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut out = [0u64; 4];
    let t = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: writes 32 bytes into the 32-byte `out`.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), t) };
    out.iter().fold(rest, |a, &b| a.wrapping_add(b))
}

fn bandwidth(c: &mut Criterion) {
    let mut g = c.benchmark_group("bandwidth");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect(); // 1 GiB
    g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    for threads in [1usize, 2] {
        let p = pool(threads);
        g.bench_function(BenchmarkId::new("read_1GiB", format!("{threads}t")), |b| {
            b.iter(|| {
                p.install(|| {
                    use rayon::prelude::*;
                    let sum: u64 = buf
                        .par_chunks(buf.len() / threads)
                        .map(sum_u64)
                        .reduce(|| 0, u64::wrapping_add);
                    black_box(sum)
                })
            })
        });
    }
    g.finish();
}

/// Weights and activations for one (type, size), made on first use so that a filtered run
/// (`-- 8192`) only builds what it measures.
struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    batch: usize,
    data: Option<(Vec<u8>, QuantizedActs)>,
}

impl Case {
    fn new(ty: GgmlType, rows: usize, cols: usize, batch: usize) -> Case {
        Case {
            ty,
            rows,
            cols,
            batch,
            data: None,
        }
    }
    fn get(&mut self) -> &(Vec<u8>, QuantizedActs) {
        let (ty, rows, cols, batch) = (self.ty, self.rows, self.cols, self.batch);
        self.data.get_or_insert_with(|| {
            let x =
                quantize_acts(vec_dot_type(ty).unwrap(), &acts(cols * batch), batch, cols).unwrap();
            (weights(ty, rows, cols), x)
        })
    }
}

fn matvec(c: &mut Criterion) {
    let mut g = c.benchmark_group("matvec");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &ty in TYPES {
        for n in [1024usize, 4096, 8192] {
            let mut case = Case::new(ty, n, n, 1);
            let mut y = vec![0f32; n];
            g.throughput(Throughput::Bytes(ty.row_size((n * n) as u64).unwrap()));
            for threads in [1usize, 2] {
                let p = pool(threads);
                g.bench_function(
                    BenchmarkId::new(format!("{ty}/{n}"), format!("{threads}t")),
                    |b| {
                        let (w, x) = case.get();
                        p.install(|| {
                            b.iter(|| matvec_q(ty, black_box(w), n, n, x, &mut y).unwrap())
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// matvec over several distinct copies of the weights, ≥ 1 GiB in all, one copy per call, so
/// every call streams its weights from DRAM (an 8192² matrix alone fits in a large L3).
fn matvec_cold(c: &mut Criterion) {
    let mut g = c.benchmark_group("matvec_cold");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // 8192² matrices, then the shape of an output head (short rows, many of them); the id
    // names the square ones by their side.
    let square = [
        GgmlType::Q4_K,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::IQ4_XS,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
        GgmlType::IQ1_S,
        GgmlType::IQ1_M,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ]
    .map(|ty| (ty, 8192usize, 8192usize, format!("{ty}/8192")));
    let head =
        [GgmlType::Q8_0, GgmlType::Q5_0].map(|ty| (ty, 65536, 640, format!("{ty}/65536x640")));
    for (ty, rows, cols, id) in square.into_iter().chain(head) {
        let size = ty.row_size((rows * cols) as u64).unwrap() as usize;
        let copies = (1usize << 30).div_ceil(size);
        let mut case = Case::new(ty, rows * copies, cols, 1);
        let mut y = vec![0f32; rows];
        g.throughput(Throughput::Bytes(size as u64));
        for threads in [1usize, 2] {
            let p = pool(threads);
            g.bench_function(BenchmarkId::new(&id, format!("{threads}t")), |b| {
                let (w, x) = case.get();
                let mut k = 0;
                p.install(|| {
                    b.iter(|| {
                        k = (k + 1) % copies;
                        let wk = &w[k * size..(k + 1) * size];
                        matvec_q(ty, black_box(wk), rows, cols, x, &mut y).unwrap()
                    })
                })
            });
        }
        drop(case);
    }
    g.finish();
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let n = 4096usize;
    let p = pool(2);
    for &ty in TYPES {
        for batch in [64usize, 512] {
            let mut case = Case::new(ty, n, n, batch);
            let mut y = vec![0f32; n * batch];
            g.throughput(Throughput::Elements((2 * n * n * batch) as u64));
            g.bench_function(
                BenchmarkId::new(format!("{ty}/{n}"), format!("b{batch}")),
                |b| {
                    let (w, x) = case.get();
                    b.iter(|| p.install(|| matmul_q(ty, black_box(w), n, n, x, &mut y).unwrap()))
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bandwidth, matvec, matvec_cold, matmul);
criterion_main!(benches);
