//! The IQ formats' tiled order for many tokens at once (AVX-512 VNNI).
//!
//! llama.cpp's tiled order (see [`crate::scalar::tiled`]) needs, per (row, token) and block,
//! only the block's exact integer total `S1 = Σ w·q` (`w` the block's integer weights, `q` the
//! token's Q8_K quants), then [`AccTiled::add_no_min`](crate::scalar::tiled::AccTiled)'s
//! `acc = fma(S1 · d_w, d_x, acc)`. For the lattice formats the expensive part is decoding a
//! block (grid and sign look-ups), not multiplying, and the one-token kernels decode each block
//! again for every token (or every four). Here a block is decoded once per tile of tokens into
//! [`BlockWeights`] (256 × i16, by the scalar decoders the oracles are made of), each token's
//! quants are widened to i16 once per product (block-major, so a block's tokens are one
//! stream), and `vpmaddwd` forms `S1` for four rows × one token at a time, the token's block in
//! registers and the rows' decoded blocks in L1 (the products' pair sums and the running totals
//! stay far inside i32: `|w| < 2^12`; `vpdpwssd` measured the same here). Any order of an exact
//! integer sum gives the same `S1`, so the results are the scalar tiled references' bits, which
//! the exactness sweep's IQ lines check against llama.cpp.
//!
//! Measured (AMD EPYC Zen 4, 2 threads, `matmul` 4096², criterion): IQ2_XXS 64 / 512 tokens
//! 11.2 / 64.4 ms (the per-token kernels: 22.1 / 177).
//! The decoders are the oracles' scalar ones compiled for AVX-512 (LLVM vectorizes them; per
//! format SIMD decoders would cut the 64-token case further).
//!
//! IQ4_XS, whose quants are bytes, takes the 8-bit kernel of [`super::tiles_x86`] instead.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::{OutRows, SimdLevel};
use crate::blocks::view;
use crate::blocks::{
    BlockIQ1_M, BlockIQ1_S, BlockIQ2_S, BlockIQ2_XS, BlockIQ2_XXS, BlockIQ3_S, BlockIQ3_XXS,
};
use crate::scalar::tiled::BlockWeights;
use crate::scalar::{iq1, iq2, iq3};

/// A format's block decoder: one block's bytes to its [`BlockWeights`].
type Decode = fn(&[u8]) -> BlockWeights;

/// One token's Q8_K block widened: the quants as i16, 64-byte aligned, and the scale.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Acts16 {
    q: [i16; 256],
    d: f32,
}

/// The many-token tiled kernel of one IQ format, with the activations of a product laid out
/// once ([`IqTiles::prepare`]).
pub(crate) struct IqTiles {
    decode: Decode,
    /// `nb` blocks × `n` tokens, block-major (a block's tokens are read in turn).
    acts: Vec<Acts16>,
    nb: usize,
    n: usize,
}

/// The decoder of `ty`'s blocks, where `ty` is an IQ format of the tiled order.
fn decoder(ty: GgmlType) -> Option<Decode> {
    /// A decoder compiled for AVX-512 (the scalar decoding vectorizes), handed out only where
    /// `IqTiles::prepare` found it.
    macro_rules! decode {
        ($block:ty, $f:path) => {{
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,bmi2")]
            fn d(bytes: &[u8]) -> BlockWeights {
                $f(&view::<$block>(bytes).expect("one whole block")[0])
            }
            // SAFETY: (of the call through the pointer) `IqTiles` exists only where the CPU
            // has these features.
            (|b| unsafe { d(b) }) as Decode
        }};
    }
    Some(match ty {
        GgmlType::IQ2_XXS => decode!(BlockIQ2_XXS, iq2::iq2_xxs_weights),
        GgmlType::IQ2_XS => decode!(BlockIQ2_XS, iq2::iq2_xs_weights),
        GgmlType::IQ2_S => decode!(BlockIQ2_S, iq2::iq2_s_weights),
        GgmlType::IQ3_XXS => decode!(BlockIQ3_XXS, iq3::iq3_xxs_weights),
        GgmlType::IQ3_S => decode!(BlockIQ3_S, iq3::iq3_s_weights),
        GgmlType::IQ1_S => decode!(BlockIQ1_S, iq1::iq1_s_weights),
        GgmlType::IQ1_M => decode!(BlockIQ1_M, iq1::iq1_m_weights),
        _ => return None,
    })
}

impl IqTiles {
    /// The kernel for `n` tokens of `ty` weights (`xrow(t)`: token `t`'s Q8_K row of `nb`
    /// blocks) at most at `level`, where there is one: AVX-512 and an IQ1/IQ2/IQ3 format.
    pub(crate) fn prepare<'x>(
        level: SimdLevel,
        ty: GgmlType,
        n: usize,
        nb: usize,
        xrow: impl Fn(usize) -> &'x [u8],
    ) -> Option<IqTiles> {
        if level < SimdLevel::Avx512 || !SimdLevel::Avx512.is_available() {
            return None;
        }
        let decode = decoder(ty)?;
        let rows = super::tiles_x86::token_rows(n, nb, &xrow);
        let acts = (0..nb * n)
            .map(|k| {
                let a = &rows[k % n][k / n];
                Acts16 {
                    q: a.qs.map(i16::from),
                    d: a.d(),
                }
            })
            .collect();
        Some(IqTiles {
            decode,
            acts,
            nb,
            n,
        })
    }

    /// `out[t][r] = W[r] · x[t]` in the tiled order for every row `r` of `w` (rows of
    /// `row_bytes`) and every token `t` in `out`'s tokens.
    ///
    /// Per group of up to [`SUB`] rows and per block: the rows' blocks are decoded once, then
    /// each token's block meets all of them from registers, so the activations pass once per
    /// group (not once per row).
    pub(crate) fn run(&self, w: &[u8], row_bytes: usize, out: &mut OutRows) {
        let rows = out.rows();
        let tokens = out.tokens();
        let bs = row_bytes / self.nb;
        assert!(w.len() >= rows * row_bytes, "weight tile holds {rows} rows");
        assert!(tokens.end <= self.n, "tokens were prepared");
        let empty = BlockWeights {
            w: [0; 256],
            d: 0.0,
        };
        let mut dec = vec![empty; SUB];
        let mut acc = vec![0f32; tokens.len() * SUB];
        let mut r0 = 0;
        while r0 < rows {
            let k = (rows - r0).min(SUB);
            // Rows past the last to a multiple of four repeat it (their results are dropped).
            let k4 = k.next_multiple_of(4);
            acc.fill(0.0);
            for i in 0..self.nb {
                for (j, d) in dec[..k4].iter_mut().enumerate() {
                    let at = (r0 + j.min(k - 1)) * row_bytes + i * bs;
                    *d = (self.decode)(&w[at..at + bs]);
                }
                // SAFETY: `IqTiles` exists only where `prepare` found AVX-512 F/BW/VNNI and
                // AVX2/FMA (`SimdLevel::Avx512`); every token's block `i` was prepared.
                unsafe {
                    block_tokens(
                        &dec[..k4],
                        &self.acts[i * self.n..(i + 1) * self.n],
                        tokens.clone(),
                        &mut acc,
                    )
                };
            }
            for (j, t) in tokens.clone().enumerate() {
                out.write(t, r0, &acc[j * SUB..j * SUB + k]);
            }
            r0 += k;
        }
    }
}

/// Rows per group of [`IqTiles::run`]: their decoded blocks (16 KiB) stay in L1.
const SUB: usize = 32;

/// For each token `t` of `tokens` (its block `acts[t]` held in registers) and each row of
/// `dec` (a multiple of four), that row's block · the token's, added to `acc[(t −
/// tokens.start) · SUB + row]` in the tiled order.
///
/// # Safety
/// AVX-512 F/BW/VNNI and AVX2/FMA available; `acts` holds every token of `tokens`;
/// `dec.len()` is a multiple of four, at most [`SUB`], and `acc` has `SUB` floats per token.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn block_tokens(
    dec: &[BlockWeights],
    acts: &[Acts16],
    tokens: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    for (j, t) in tokens.enumerate() {
        let a = &acts[t];
        // SAFETY: 32 words at `32v` of the 256 in `a.q` (64-byte aligned).
        let y: [__m512i; 8] =
            std::array::from_fn(|v| unsafe { _mm512_load_si512(a.q.as_ptr().add(32 * v).cast()) });
        let dx = _mm_set1_ps(a.d);
        let acc = &mut acc[j * SUB..j * SUB + dec.len()];
        for (d4, acc) in dec.chunks_exact(4).zip(acc.chunks_exact_mut(4)) {
            let mut s = [_mm512_setzero_si512(); 4];
            for (v, &y) in y.iter().enumerate() {
                for (s, d) in s.iter_mut().zip(d4) {
                    // SAFETY: 32 words at `32v` of the 256 of `d.w` (64-byte aligned).
                    let wv = unsafe { _mm512_load_si512(d.w.as_ptr().add(32 * v).cast()) };
                    *s = _mm512_add_epi32(*s, _mm512_madd_epi16(y, wv));
                }
            }
            let s1 = super::iq4_xs_x86::totals4_512(s);
            let r = _mm_mul_ps(
                _mm_cvtepi32_ps(s1),
                _mm_setr_ps(d4[0].d, d4[1].d, d4[2].d, d4[3].d),
            );
            // SAFETY: reads and writes the four floats of `acc`.
            unsafe {
                let prev = _mm_loadu_ps(acc.as_ptr());
                _mm_storeu_ps(acc.as_mut_ptr(), _mm_fmadd_ps(r, dx, prev));
            }
        }
    }
}
