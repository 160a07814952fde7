//! `sinf`, `cosf`, `powf`, `expf` and `tanhf` bit for bit as llama.cpp's reference build gets them:
//! glibc's single-precision functions (x86-64, the FMA variant where there is one), on every
//! platform.
//!
//! RoPE's angles go through `powf` (the frequency ratio) and `cosf`/`sinf`. Natively Rust calls the C library's; on WebAssembly
//! without one, Rust's own port of musl's, which differs in the last bit for about 2% of RoPE
//! angles — enough, through the f16 KV cache and the 8-bit activation quantization, to change
//! logits by tenths after a few hundred positions. So the engine computes them itself, with the
//! algorithm glibc uses (ARM's optimized-routines, `math/sinf.c`, `cosf.c`, `sincosf.h`,
//! `sincosf_data.c`, MIT OR Apache-2.0 WITH LLVM-exception): the argument in double precision,
//! reduced to ±π/4 (multiples of π/2 for |x| < 120, a 192-bit table of 4/π beyond), and
//! degree-8/7 polynomials; `powf` (`math/powf.c`, `powf_log2_data.c`, `exp2f_data.c`) as
//! `exp2(y · log2 x)` in double precision with 16- and 32-entry tables. glibc's x86-64 FMA build contracts every `a + b·c` of that C into one
//! fused multiply-add; the `mul_add`s below are exactly those, so the results equal glibc's on a
//! CPU with FMA (sine and cosine checked over every f32 input by
//! `mathf_matches_the_c_library_exhaustively`, `powf` over RoPE's inputs and a random sample).
//!
//! `expf` (the softmax's and SwiGLU's scalar tails, where llama.cpp's loops call `expf`) is the
//! same optimized-routines family (`math/expf.c` with `exp2f_data.c`'s table, scaled for
//! `x·32/ln 2`): `e^x = 2^(k/32)·2^(r/32)` in double precision, with glibc's FMA variant's
//! contractions; checked over every f32 input by `expf_matches_the_c_library_exhaustively`.
//! (Rust's own `f32::exp` on WebAssembly, the `libm` crate's port of fdlibm's `e_expf.c`, is
//! another algorithm, with other last bits.)
//!
//! `tanhf` (Gemma 2's attention and final-logit soft-capping, llama.cpp's `ggml_tanh`) is glibc
//! 2.36's `sysdeps/ieee754/flt-32/s_tanhf.c` with its `__expm1f`, the single-precision ports of
//! Sun's fdlibm (freely redistributable with its notice; written here from the algorithm):
//! plain single-precision operations, as glibc's x86-64 build has no FMA variant of them, checked
//! over every f32 input against the C library by `tanhf_matches_the_c_library_exhaustively`.
//! (Recent glibc releases replace it with CORE-MATH's correctly rounded `tanhf`, which differs in
//! the last bit for some inputs; the tests compare only with a glibc older than 2.41.)

/// Coefficients of one quadrant pair (`sincos_t` of optimized-routines).
struct SinCos {
    /// Sign of the sine in quadrants 0..3.
    sign: [f64; 4],
    /// 2/π × 2^24 (the quadrant lands in bits 24..31 of the product).
    hpi_inv: f64,
    /// π/2.
    hpi: f64,
    /// Cosine polynomial.
    c: [f64; 5],
    /// Sine polynomial.
    s: [f64; 3],
}

/// Quadrants 0/1, and 2/3 (whose cosine polynomial is negated).
const TABLE: [SinCos; 2] = [
    SinCos {
        sign: [1.0, -1.0, -1.0, 1.0],
        hpi_inv: f64::from_bits(0x4164_5f30_6dc9_c883), // 0x1.45F306DC9C883p+23
        hpi: f64::from_bits(0x3ff9_21fb_5444_2d18),     // 0x1.921FB54442D18p0
        c: [
            1.0,
            f64::from_bits(0xbfdf_ffff_fd0c_621c), // -0x1.ffffffd0c621cp-2
            f64::from_bits(0x3fa5_5553_e106_8f19), // 0x1.55553e1068f19p-5
            f64::from_bits(0xbf56_c087_e89a_359d), // -0x1.6c087e89a359dp-10
            f64::from_bits(0x3ef9_9343_027b_f8c3), // 0x1.99343027bf8c3p-16
        ],
        s: [
            f64::from_bits(0xbfc5_5554_5995_a603), // -0x1.555545995a603p-3
            f64::from_bits(0x3f81_1076_0523_0bc4), // 0x1.1107605230bc4p-7
            f64::from_bits(0xbf29_94eb_3774_cf24), // -0x1.994eb3774cf24p-13
        ],
    },
    SinCos {
        sign: [1.0, -1.0, -1.0, 1.0],
        hpi_inv: f64::from_bits(0x4164_5f30_6dc9_c883),
        hpi: f64::from_bits(0x3ff9_21fb_5444_2d18),
        c: [
            -1.0,
            f64::from_bits(0x3fdf_ffff_fd0c_621c),
            f64::from_bits(0xbfa5_5553_e106_8f19),
            f64::from_bits(0x3f56_c087_e89a_359d),
            f64::from_bits(0xbef9_9343_027b_f8c3),
        ],
        s: [
            f64::from_bits(0xbfc5_5554_5995_a603),
            f64::from_bits(0x3f81_1076_0523_0bc4),
            f64::from_bits(0xbf29_94eb_3774_cf24),
        ],
    },
];

/// 4/π in 192 bits, as overlapping 32-bit words (entry `i` holds bits `8i..8i+32`).
const INV_PIO4: [u32; 24] = [
    0xa2, 0xa2f9, 0xa2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529, 0x441529fc,
    0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0, 0x34ddc0db,
    0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
];

/// π × 2^-62.
const PI63: f64 = f64::from_bits(0x3c19_21fb_5444_2d18); // 0x1.921FB54442D18p-62
/// π/4 as the f32 just above it.
const PIO4F: f32 = f32::from_bits(0x3f49_0fdb);

/// The top 12 bits of `x`'s magnitude (exponent and first mantissa bits) for range tests.
fn abstop12(x: f32) -> u32 {
    (x.to_bits() >> 20) & 0x7ff
}

/// The sine (`n` even) or cosine (`n` odd) polynomial at `x` (reduced), `x2 = x²`.
fn poly(x: f64, x2: f64, p: &SinCos, n: i32) -> f32 {
    if n & 1 == 0 {
        let x3 = x * x2;
        let s1 = x2.mul_add(p.s[2], p.s[1]);
        let x7 = x3 * x2;
        let s = x3.mul_add(p.s[0], x);
        x7.mul_add(s1, s) as f32
    } else {
        let x4 = x2 * x2;
        let c2 = x2.mul_add(p.c[4], p.c[3]);
        let c1 = x2.mul_add(p.c[1], p.c[0]);
        let x6 = x4 * x2;
        let c = x4.mul_add(p.c[2], c1);
        x6.mul_add(c2, c) as f32
    }
}

/// `x` (|x| < 120) reduced to ±π/4 and its quadrant.
fn reduce_fast(x: f64, p: &SinCos) -> (f64, i32) {
    let r = x * p.hpi_inv;
    let n = ((r as i32).wrapping_add(0x80_0000)) >> 24;
    ((-f64::from(n)).mul_add(p.hpi, x), n)
}

/// The float with bits `xi` (|x| ≥ 120, finite; the sign is ignored) reduced to ±π/4 with the
/// 192-bit 4/π, and its quadrant.
fn reduce_large(xi: u32) -> (f64, i32) {
    let arr = &INV_PIO4[((xi >> 26) & 15) as usize..];
    let shift = (xi >> 23) & 7;
    let xi = ((xi & 0xff_ffff) | 0x80_0000) << shift;
    let res0 = u64::from(xi.wrapping_mul(arr[0]));
    let res1 = u64::from(xi) * u64::from(arr[4]);
    let res2 = u64::from(xi) * u64::from(arr[8]);
    let res0 = ((res2 >> 32) | (res0 << 32)).wrapping_add(res1);
    let n = (res0.wrapping_add(1 << 61)) >> 62;
    let res0 = res0.wrapping_sub(n << 62);
    ((res0 as i64) as f64 * PI63, n as i32)
}

/// Shared body of [`sinf`] (`cos = false`) and [`cosf`].
fn sin_or_cos(y: f32, cos: bool) -> f32 {
    let x = f64::from(y);
    let flip = i32::from(cos);
    let top = abstop12(y);
    if top < abstop12(PIO4F) {
        if top < abstop12(f32::from_bits(0x3980_0000)) {
            // |y| < 2^-12: sin y = y and cos y = 1 in single precision.
            return if cos { 1.0 } else { y };
        }
        return poly(x, x * x, &TABLE[0], flip);
    }
    let (r, n, sign) = if top < abstop12(120.0) {
        let (r, n) = reduce_fast(x, &TABLE[0]);
        (r, n, 0)
    } else if top < abstop12(f32::INFINITY) {
        let xi = y.to_bits();
        let (r, n) = reduce_large(xi);
        (r, n, (xi >> 31) as i32)
    } else {
        return f32::NAN; // for ±∞ and NaN
    };
    let q = n.wrapping_add(sign);
    let s = TABLE[0].sign[(q & 3) as usize];
    let p = &TABLE[usize::from(q & 2 != 0)];
    poly(r * s, r * r, p, n ^ flip)
}

/// `sin(y)`, bit-identical to glibc's `sinf` on x86-64 with FMA.
pub fn sinf(y: f32) -> f32 {
    sin_or_cos(y, false)
}

/// `cos(y)`, bit-identical to glibc's `cosf` on x86-64 with FMA.
pub fn cosf(y: f32) -> f32 {
    sin_or_cos(y, true)
}

/// `(1/c, log2 c)` for the 16 subintervals of [0x1.66p-1, 0x1.66p0) that `log2_inline` splits
/// its argument into (optimized-routines' `__powf_log2_data.tab`, hex floats in the comments).
const LOG2_TAB: [(f64, f64); 16] = [
    (
        f64::from_bits(0x3ff661ec79f8f3be),
        f64::from_bits(0xbfdefec65b963019),
    ), // 0x1.661ec79f8f3bep+0, -0x1.efec65b963019p-2
    (
        f64::from_bits(0x3ff571ed4aaf883d),
        f64::from_bits(0xbfdb0b6832d4fca4),
    ), // 0x1.571ed4aaf883dp+0, -0x1.b0b6832d4fca4p-2
    (
        f64::from_bits(0x3ff49539f0f010b0),
        f64::from_bits(0xbfd7418b0a1fb77b),
    ), // 0x1.49539f0f010bp+0, -0x1.7418b0a1fb77bp-2
    (
        f64::from_bits(0x3ff3c995b0b80385),
        f64::from_bits(0xbfd39de91a6dcf7b),
    ), // 0x1.3c995b0b80385p+0, -0x1.39de91a6dcf7bp-2
    (
        f64::from_bits(0x3ff30d190c8864a5),
        f64::from_bits(0xbfd01d9bf3f2b631),
    ), // 0x1.30d190c8864a5p+0, -0x1.01d9bf3f2b631p-2
    (
        f64::from_bits(0x3ff25e227b0b8ea0),
        f64::from_bits(0xbfc97c1d1b3b7af0),
    ), // 0x1.25e227b0b8eap+0, -0x1.97c1d1b3b7afp-3
    (
        f64::from_bits(0x3ff1bb4a4a1a343f),
        f64::from_bits(0xbfc2f9e393af3c9f),
    ), // 0x1.1bb4a4a1a343fp+0, -0x1.2f9e393af3c9fp-3
    (
        f64::from_bits(0x3ff12358f08ae5ba),
        f64::from_bits(0xbfb960cbbf788d5c),
    ), // 0x1.12358f08ae5bap+0, -0x1.960cbbf788d5cp-4
    (
        f64::from_bits(0x3ff0953f419900a7),
        f64::from_bits(0xbfaa6f9db6475fce),
    ), // 0x1.0953f419900a7p+0, -0x1.a6f9db6475fcep-5
    (
        f64::from_bits(0x3ff0000000000000),
        f64::from_bits(0x0000000000000000),
    ), // 0x1p+0, 0x0p+0
    (
        f64::from_bits(0x3fee608cfd9a47ac),
        f64::from_bits(0x3fb338ca9f24f53d),
    ), // 0x1.e608cfd9a47acp-1, 0x1.338ca9f24f53dp-4
    (
        f64::from_bits(0x3feca4b31f026aa0),
        f64::from_bits(0x3fc476a9543891ba),
    ), // 0x1.ca4b31f026aap-1, 0x1.476a9543891bap-3
    (
        f64::from_bits(0x3feb2036576afce6),
        f64::from_bits(0x3fce840b4ac4e4d2),
    ), // 0x1.b2036576afce6p-1, 0x1.e840b4ac4e4d2p-3
    (
        f64::from_bits(0x3fe9c2d163a1aa2d),
        f64::from_bits(0x3fd40645f0c6651c),
    ), // 0x1.9c2d163a1aa2dp-1, 0x1.40645f0c6651cp-2
    (
        f64::from_bits(0x3fe886e6037841ed),
        f64::from_bits(0x3fd88e9c2c1b9ff8),
    ), // 0x1.886e6037841edp-1, 0x1.88e9c2c1b9ff8p-2
    (
        f64::from_bits(0x3fe767dcf5534862),
        f64::from_bits(0x3fdce0a44eb17bcc),
    ), // 0x1.767dcf5534862p-1, 0x1.ce0a44eb17bccp-2
];

/// `log1p(r)/ln 2` ≈ `A0·r⁵ + A1·r⁴ + A2·r³ + A3·r² + A4·r`.
const LOG2_POLY: [f64; 5] = [
    f64::from_bits(0x3fd27616c9496e0b), // 0x1.27616c9496e0bp-2
    f64::from_bits(0xbfd71969a075c67a), // -0x1.71969a075c67ap-2
    f64::from_bits(0x3fdec70a6ca7badd), // 0x1.ec70a6ca7baddp-2
    f64::from_bits(0xbfe7154748bef6c8), // -0x1.7154748bef6c8p-1
    f64::from_bits(0x3ff71547652ab82b), // 0x1.71547652ab82bp0
];

/// `2^r` ≈ `C0·r³ + C1·r² + C2·r + 1` for |r| ≤ 1/64.
const EXP2_POLY: [f64; 3] = [
    f64::from_bits(0x3fac6af84b912394), // 0x1.c6af84b912394p-5
    f64::from_bits(0x3fcebfce50fac4f3), // 0x1.ebfce50fac4f3p-3
    f64::from_bits(0x3fe62e42ff0c52d6), // 0x1.62e42ff0c52d6p-1
];

/// `bits(2^(i/32)) − (i << 47)`: adding `k << 47` for `k ≡ i (mod 32)` gives `2^(k/32)`
/// (each entry the double nearest to `2^(i/32)`; checked by `exp2_table_is_two_to_the_i_over_32`).
const EXP2_TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `log2(x)` for the bits `ix` of a positive normal f32.
fn log2_inline(ix: u32) -> f64 {
    const OFF: u32 = 0x3f33_0000;
    let tmp = ix.wrapping_sub(OFF);
    let i = ((tmp >> 19) % 16) as usize;
    let top = tmp & 0xff80_0000;
    let iz = ix.wrapping_sub(top);
    let k = (top as i32) >> 23;
    let (invc, logc) = LOG2_TAB[i];
    let z = f64::from(f32::from_bits(iz));
    let r = z.mul_add(invc, -1.0);
    let y0 = logc + f64::from(k);
    let a = &LOG2_POLY;
    let r2 = r * r;
    let y = a[0].mul_add(r, a[1]);
    let p = a[2].mul_add(r, a[3]);
    let r4 = r2 * r2;
    let q = a[4].mul_add(r, y0);
    let q = p.mul_add(r2, q);
    y.mul_add(r4, q)
}

/// `2^xd` rounded to f32, for |xd| < 150.
fn exp2_inline(xd: f64) -> f32 {
    const SHIFT: f64 = f64::from_bits(0x42e8_0000_0000_0000); // 0x1.8p+52 / 32 = 0x1.8p+47
    let kd = xd + SHIFT;
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = xd - kd;
    let t = EXP2_TAB[(ki % 32) as usize].wrapping_add(ki << 47);
    let s = f64::from_bits(t);
    let c = &EXP2_POLY;
    let z = c[0].mul_add(r, c[1]);
    let r2 = r * r;
    let y = c[2].mul_add(r, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

/// `x^y` for a positive, finite, normal `x` and a finite `y` (RoPE's frequency ratio),
/// bit-identical to glibc's `powf` on x86-64 with FMA; results beyond the f32 range are 0 and
/// +∞. Other inputs give NaN: no caller has them (a model's RoPE base is checked at load).
pub fn powf(x: f32, y: f32) -> f32 {
    let ix = x.to_bits();
    if !(x.is_normal() && x > 0.0 && y.is_finite()) {
        return f32::NAN;
    }
    if y == 0.0 || ix == 0x3f80_0000 {
        return 1.0;
    }
    let ylogx = f64::from(y) * log2_inline(ix);
    if ylogx.abs() >= 126.0 {
        // Out of the fast path: the exact boundaries of glibc's overflow and underflow.
        if ylogx <= -150.0 {
            return 0.0;
        }
        if ylogx > f64::from_bits(0x405f_ffff_ffa3_aae2) {
            // 0x1.fffffffa3aae2p+6: |x^y| rounds past the largest finite f32.
            return f32::INFINITY;
        }
    }
    exp2_inline(ylogx)
}

/// `32/ln 2` (`invln2_scaled` of optimized-routines' `__exp2f_data`: 0x1.71547652b82fep+0 × 32).
const EXPF_INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// 0x1.8p+52: adding it rounds a double of magnitude below 2^51 to an integer, which lands in
/// the low mantissa bits.
const EXPF_SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// [`EXP2_POLY`] scaled for `r` in units of 1/32: `2^(r/32)` ≈ `C0·r³ + C1·r² + C2·r + 1`
/// (`poly_scaled`: the coefficients divided by 32³, 32², 32, which is exact).
const EXPF_POLY: [f64; 3] = [
    EXP2_POLY[0] / 32768.0, // 0x1.c6af84b912394p-20
    EXP2_POLY[1] / 1024.0,  // 0x1.ebfce50fac4f3p-13
    EXP2_POLY[2] / 32.0,    // 0x1.62e42ff0c52d6p-6
];

/// `e^x`, bit-identical to glibc's `expf` on x86-64 with FMA, for the softmax and SwiGLU (where
/// llama.cpp's scalar loops call `expf`).
///
/// The algorithm of optimized-routines' `math/expf.c` (glibc's
/// `sysdeps/ieee754/flt-32/e_expf.c`, MIT OR Apache-2.0 WITH LLVM-exception; written here from
/// its description): in double precision `z = x·32/ln 2 = k + r` with `k` an integer (rounded
/// to nearest by adding and subtracting 0x1.8p+52) and |r| ≤ 1/2; then
/// `e^x = 2^(k/32) · 2^(r/32)`, `2^(k/32)` from the table `EXP2_TAB` with `k/32`'s integer
/// part added to the exponent field, `2^(r/32)` a cubic; one rounding to f32 at the end.
/// glibc's FMA variant (`e_expf-fma.c`) contracts `x·32/ln 2` into both of its uses (the rounding
/// `z + shift` and `r = z − k`), and the polynomial's `a + b·c`; those `mul_add`s are the ones
/// here. The reduction's matter: with `z` rounded first, two inputs (32.564632 among them)
/// differ in the last bit — glibc's non-FMA variant, which a CPU without FMA gets, does that.
/// (The polynomial's contractions change no result.) Checked over every f32 input against
/// the C library by `expf_matches_the_c_library_exhaustively`.
///
/// From ln(f32::MAX) ≈ 88.72 on the result is +∞, below ln(2^-150) ≈ -103.97 it is 0 (the
/// results between are subnormal, correctly through the double), `expf(−∞) = 0`, NaN gives NaN.
pub fn expf(x: f32) -> f32 {
    let abstop = abstop12(x);
    if abstop >= abstop12(88.0) {
        // |x| ≥ 88, or NaN.
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        if abstop >= abstop12(f32::INFINITY) {
            return x + x; // +∞ or NaN
        }
        if x > f32::from_bits(0x42b1_7217) {
            // 0x1.62e42ep6 ≈ ln 2^128.
            return f32::INFINITY;
        }
        if x < f32::from_bits(0xc2cf_f1b4) {
            // -0x1.9fe368p6 ≈ ln 2^-150.
            return 0.0;
        }
    }
    let xd = f64::from(x);
    let kd = EXPF_INV_LN2_N.mul_add(xd, EXPF_SHIFT);
    let ki = kd.to_bits();
    let kd = kd - EXPF_SHIFT;
    let r = EXPF_INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(EXP2_TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let c = &EXPF_POLY;
    let z = c[0].mul_add(r, c[1]);
    let r2 = r * r;
    let y = c[2].mul_add(r, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

/// `e^x − 1` in single precision, glibc's `__expm1f` (`sysdeps/ieee754/flt-32/s_expm1f.c`, the
/// single-precision port of fdlibm's `s_expm1.c`), for [`tanhf`].
///
/// `x = k·ln 2 + r` with |r| ≤ ln2/2 (`ln 2` split into `LN2_HI`, whose products with `k` are
/// exact, and `LN2_LO`; `c` the rounding error of `r = hi − lo`); on [0, ln2/2] `r·coth(r/2)/2`
/// ≈ `R1(r²/2) = 1 + Q1·hxs + … + Q5·hxs⁵`, from which `expm1(r) = r + r²/2 + r³/2·E` with
/// `E = (R1 − t)/(6 − r·t)`, `t = 3 − R1·r/2`; then `expm1(x) = 2^k·(expm1(r) + 1 − 2^-k)`
/// arranged per `k` to keep the last bit. Every operation is a separate single-precision one:
/// glibc's x86-64 build has no FMA variant of `expm1f` or `tanhf` (with GCC's `mul_add`
/// contractions `tanhf` differs from it for about 150 000 inputs, as written for none).
fn expm1f(x: f32) -> f32 {
    const HUGE: f32 = 1.0e30;
    const TINY: f32 = 1.0e-30;
    /// 128·`LN2_HI` (0x1.62e3p+6), just below ln(f32::MAX) = 88.7228….
    const O_THRESHOLD: f32 = f32::from_bits(0x42b1_7180);
    const LN2_HI: f32 = f32::from_bits(0x3f31_7180); // 0x1.62e3p-1
    const LN2_LO: f32 = f32::from_bits(0x3717_f7d1); // 0x1.2fefa2p-17
    const INVLN2: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
    const Q1: f32 = f32::from_bits(0xbd08_8889); // -0x1.111112p-5
    const Q2: f32 = f32::from_bits(0x3ad0_0d01); // 0x1.a01a02p-10
    const Q3: f32 = f32::from_bits(0xb8a6_70cd); // -0x1.4ce19ap-14
    const Q4: f32 = f32::from_bits(0x3686_7e54); // 0x1.0cfca8p-18
    const Q5: f32 = f32::from_bits(0xb457_edbb); // -0x1.afdb76p-23
    let bits = x.to_bits();
    let neg = bits >> 31 != 0;
    let hx = bits & 0x7fff_ffff;
    if hx >= 0x4195_b844 {
        // |x| ≥ 27·ln 2.
        if hx >= 0x42b1_7218 {
            // |x| ≥ ln(f32::MAX), or not finite.
            if hx > 0x7f80_0000 {
                return x + x; // NaN
            }
            if hx == 0x7f80_0000 {
                return if neg { -1.0 } else { x };
            }
            if x > O_THRESHOLD {
                return HUGE * HUGE; // +∞
            }
        }
        if neg {
            return TINY - 1.0; // -1
        }
    }
    let (x, c, k) = if hx > 0x3eb1_7218 {
        // |x| > ln2/2: reduce.
        let (hi, lo, k) = if hx < 0x3f85_1592 {
            // |x| < 3·ln2/2: k = ±1.
            if neg {
                (x + LN2_HI, -LN2_LO, -1)
            } else {
                (x - LN2_HI, LN2_LO, 1)
            }
        } else {
            let k = (INVLN2 * x + if neg { -0.5 } else { 0.5 }) as i32;
            let t = k as f32;
            (x - t * LN2_HI, t * LN2_LO, k)
        };
        let r = hi - lo;
        (r, (hi - r) - lo, k)
    } else if hx < 0x3300_0000 {
        return x; // |x| < 2^-25
    } else {
        (x, 0.0, 0)
    };
    let hfx = 0.5 * x;
    let hxs = x * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e = hxs * ((r1 - t) / (6.0 - x * t));
    if k == 0 {
        return x - (x * e - hxs);
    }
    let e = (x * (e - c) - c) - hxs;
    match k {
        -1 => return 0.5 * (x - e) - 0.5,
        1 if x < -0.25 => return -2.0 * (e - (x + 0.5)),
        1 => return 1.0 + 2.0 * (x - e),
        _ => {}
    }
    // Multiplies by 2^k by adding k to the exponent field.
    let scale = |y: f32| f32::from_bits(y.to_bits().wrapping_add((k << 23) as u32));
    if k <= -2 || k > 56 {
        let y = 1.0 - (e - x);
        let y = if k == 128 {
            y * 2.0 * f32::from_bits(0x7f00_0000) // 2^127
        } else {
            scale(y)
        };
        y - 1.0
    } else if k < 23 {
        let t = f32::from_bits(0x3f80_0000 - (0x100_0000 >> k)); // 1 − 2^-k
        scale(t - (e - x))
    } else {
        let t = f32::from_bits(((0x7f - k) << 23) as u32); // 2^-k
        scale((x - (e + t)) + 1.0)
    }
}

/// `tanh(x)`, bit-identical to glibc 2.36's `tanhf` on x86-64 (on every CPU: it has no FMA
/// variant), for Gemma 2's logit soft-capping, which llama.cpp computes with `tanhf`.
///
/// The algorithm of glibc's `sysdeps/ieee754/flt-32/s_tanhf.c`, the single-precision port of
/// fdlibm's `s_tanh.c` (Sun Microsystems' fdlibm, "Permission to use, copy, modify, and
/// distribute this software is freely granted, provided that this notice is preserved"; written
/// here from its description, not copied): for 1 ≤ |x| < 22,
/// `tanh |x| = 1 − 2/(expm1(2|x|) + 2)`; for 2^-55 ≤ |x| < 1, `tanh |x| = −t/(t + 2)` with
/// `t = expm1(−2|x|)`; below 2^-55 `x·(1 + x)` (= x), from 22 on ±1; all in single precision,
/// with glibc's `__expm1f` (`expm1f` here). Checked over every f32 input against the C library
/// by `tanhf_matches_the_c_library_exhaustively` (and every 97th by
/// `tanhf_matches_the_c_library_on_a_sample`).
pub fn tanhf(x: f32) -> f32 {
    let jx = x.to_bits();
    let ix = jx & 0x7fff_ffff;
    let neg = jx >> 31 != 0;
    if ix >= 0x7f80_0000 {
        // ±∞ → ±1, NaN → NaN.
        return if neg { 1.0 / x - 1.0 } else { 1.0 / x + 1.0 };
    }
    let z = if ix < 0x41b0_0000 {
        // |x| < 22.
        if ix == 0 {
            return x; // ±0
        }
        if ix < 0x2400_0000 {
            return x * (1.0 + x); // |x| < 2^-55
        }
        if ix >= 0x3f80_0000 {
            let t = expm1f(2.0 * x.abs());
            1.0 - 2.0 / (t + 2.0)
        } else {
            let t = expm1f(-2.0 * x.abs());
            -t / (t + 2.0)
        }
    } else {
        1.0
    };
    if neg {
        -z
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th f32 (and the values around the range boundaries) against the C library.
    /// An input with our and the C library's sine, then cosine.
    type Mismatch = (f32, f32, f32, f32, f32);

    fn compare(step: usize) -> (u64, Vec<Mismatch>) {
        let mut bad = Vec::new();
        let mut n = 0u64;
        for b in (0..=u32::MAX).step_by(step).chain(0x3f49_0fd0..0x3f49_0fe0) {
            let y = f32::from_bits(b);
            n += 1;
            let (s, c) = (sinf(y), cosf(y));
            // black_box: the C library's result, not one LLVM folded or rewrote.
            let yb = std::hint::black_box(y);
            let (es, ec) = (yb.sin(), yb.cos());
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            if !same(s, es) || !same(c, ec) {
                bad.push((y, s, es, c, ec));
            }
        }
        (n, bad)
    }

    /// Rust's `sin`/`cos` for f32 are glibc's on x86-64 Linux; elsewhere there is nothing to
    /// compare with (on wasm the point is to not use the platform's).
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn mathf_matches_the_c_library_on_a_sample() {
        if !std::arch::is_x86_feature_detected!("fma") {
            return; // glibc then takes its non-FMA variant, with other last bits.
        }
        let (n, bad) = compare(4099);
        assert!(
            bad.is_empty(),
            "{} of {n} differ, first {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    /// All 2^32 inputs (about a minute in release): `cargo test -p strata-engine --release
    /// mathf -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn mathf_matches_the_c_library_exhaustively() {
        assert!(
            std::arch::is_x86_feature_detected!("fma"),
            "needs a CPU with FMA"
        );
        let (n, bad) = compare(1);
        assert!(
            bad.is_empty(),
            "{} of {n} differ, first {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn powf_matches_the_c_library() {
        if !std::arch::is_x86_feature_detected!("fma") {
            return;
        }
        let mut bad = Vec::new();
        let mut check = |x: f32, y: f32| {
            // black_box: LLVM rewrites `powf(x, -1.0)` as `1.0 / x` when it can see the -1
            // (as in the unrolled first RoPE width); the C library's result is wanted.
            let want = std::hint::black_box(x).powf(std::hint::black_box(y));
            if powf(x, y).to_bits() != want.to_bits() {
                bad.push((x, y, powf(x, y), want));
            }
        };
        // RoPE: base^(−2/n_rot) for every base a model might have and every rotary width.
        for base in (1..=2000)
            .map(|i| i as f32 * 1000.0)
            .chain([1e4, 5e5, 1e6, 8e6, 1e7, 1e8])
        {
            for n_rot in (2..=512).step_by(2) {
                check(base, -2.0 / n_rot as f32);
            }
        }
        // A pseudo-random sample of positive normal x and moderate y.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = f32::from_bits(0x0080_0000 + (s as u32) % (0x7f00_0000 - 0x0080_0000));
            let y = f32::from_bits((s >> 32) as u32 & 0x7fff_ffff) % 64.0
                * if s & (1 << 40) != 0 { -1.0 } else { 1.0 };
            if y.is_finite() {
                check(x, y);
            }
        }
        assert!(
            bad.is_empty(),
            "{} differ, first {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    #[test]
    fn exp2_table_is_two_to_the_i_over_32() {
        for (i, &t) in EXP2_TAB.iter().enumerate() {
            let v = f64::from_bits(t + ((i as u64) << 47));
            let want = 2f64.powf(i as f64 / 32.0);
            assert!(
                (v - want).abs() <= want * f64::EPSILON,
                "entry {i}: {v} vs {want}"
            );
        }
    }

    #[test]
    fn special_values() {
        assert!(sinf(f32::NAN).is_nan() && cosf(f32::INFINITY).is_nan());
        assert_eq!(sinf(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(sinf(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(cosf(0.0), 1.0);
        assert!((sinf(1.0) - 0.841_470_96).abs() < 1e-7);
        assert!((cosf(1000.0) - 0.562_379_8).abs() < 1e-6);
        assert!(tanhf(f32::NAN).is_nan());
        assert_eq!(tanhf(f32::INFINITY), 1.0);
        assert_eq!(tanhf(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanhf(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanhf(1e-30), 1e-30);
        assert_eq!(tanhf(30.0), 1.0);
        assert!((tanhf(0.5) - 0.462_117_16).abs() < 1e-7);
        assert!((tanhf(-2.0) + 0.964_027_6).abs() < 1e-7);
        assert!(expf(f32::NAN).is_nan());
        assert_eq!(expf(f32::INFINITY), f32::INFINITY);
        assert_eq!(expf(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(-0.0), 1.0);
        assert_eq!(expf(88.8), f32::INFINITY);
        assert!(expf(88.72).is_finite() && expf(88.72) > 3.39e38);
        assert_eq!(expf(-104.0).to_bits(), 0);
        assert_eq!(expf(-103.9).to_bits(), 1); // the smallest subnormal
        assert!((expf(1.0) - std::f32::consts::E).abs() < 1e-6);
        assert!((expf(-1.0) - 0.367_879_44).abs() < 1e-7);
    }

    /// Whether the C library's `tanhf`/`expm1f` are glibc's fdlibm-derived ones: recent releases
    /// (taken here as 2.41 on) have CORE-MATH's correctly rounded ones, which differ in the last
    /// bit.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn glibc_has_fdlibm_tanhf() -> bool {
        extern "C" {
            fn gnu_get_libc_version() -> *const std::ffi::c_char;
        }
        // SAFETY: glibc returns a pointer to a static NUL-terminated string such as "2.36".
        let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
        let mut parts = version.to_str().unwrap_or("").split('.');
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        matches!((next(), next()), (Some(2), Some(minor)) if minor < 41)
    }

    /// Inputs in `0..=u32::MAX` (as bits) at `start, start + step, …` where `ours` differs from
    /// `theirs` (the C library's): the count and the first few as (input, ours, theirs) bits.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn mismatches(
        start: u32,
        step: u32,
        ours: fn(f32) -> f32,
        theirs: fn(f32) -> f32,
    ) -> (u64, Vec<(u32, u32, u32)>) {
        let mut count = 0;
        let mut first = Vec::new();
        let mut b = start;
        loop {
            let x = f32::from_bits(b);
            // black_box: the C library's result, not one LLVM folded.
            let (o, t) = (ours(x), theirs(std::hint::black_box(x)));
            if o.to_bits() != t.to_bits() && !(o.is_nan() && t.is_nan()) {
                count += 1;
                if first.len() < 5 {
                    first.push((b, o.to_bits(), t.to_bits()));
                }
            }
            match b.checked_add(step) {
                Some(next) => b = next,
                None => return (count, first),
            }
        }
    }

    /// [`mismatches`] over all 2^32 inputs, split over all cores.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn all_mismatches(ours: fn(f32) -> f32, theirs: fn(f32) -> f32) -> (u64, Vec<(u32, u32, u32)>) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || mismatches(t, threads, ours, theirs)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let n: u64 = results.iter().map(|r| r.0).sum();
        let first = results.into_iter().flat_map(|r| r.1).take(5).collect();
        (n, first)
    }

    /// Every 97th f32 (about 44 million, under a second) against glibc's `tanhf`.
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn tanhf_matches_the_c_library_on_a_sample() {
        if !glibc_has_fdlibm_tanhf() {
            eprintln!("skipped: this glibc's tanhf is not the fdlibm one");
            return;
        }
        let (n, first) = mismatches(0, 97, tanhf, f32::tanh);
        assert_eq!(n, 0, "{n} differ, first (x, ours, glibc's) {first:08x?}");
    }

    /// All 2^32 inputs of `tanhf` and of `expm1f` (the latter reaches the branches `tanhf`
    /// never takes), on all cores (about 30 s each on two): `cargo test -p strata-engine mathf
    /// -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn tanhf_matches_the_c_library_exhaustively() {
        assert!(
            glibc_has_fdlibm_tanhf(),
            "needs glibc before 2.41 (fdlibm's tanhf)"
        );
        for (name, ours, theirs) in [
            (
                "tanhf",
                tanhf as fn(f32) -> f32,
                f32::tanh as fn(f32) -> f32,
            ),
            ("expm1f", expm1f, f32::exp_m1),
        ] {
            let (n, first) = all_mismatches(ours, theirs);
            assert_eq!(
                n, 0,
                "{name}: {n} differ, first (x, ours, glibc's) {first:08x?}"
            );
        }
    }

    /// Every 97th f32 (about 44 million, under a second in release) and the two inputs where
    /// the reduction's FMA matters against glibc's `expf` (Rust's `f32::exp` on x86-64 Linux).
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn expf_matches_the_c_library_on_a_sample() {
        if !std::arch::is_x86_feature_detected!("fma") {
            return; // glibc then takes its non-FMA variant, with other last bits.
        }
        let (n, first) = mismatches(0, 97, expf, f32::exp);
        assert_eq!(n, 0, "{n} differ, first (x, ours, glibc's) {first:08x?}");
        let x = f32::from_bits(0x4202_422f); // 32.564632
        let want = std::hint::black_box(x).exp();
        assert_eq!(expf(x).to_bits(), want.to_bits(), "expf({x})");
    }

    /// All 2^32 inputs of `expf`, on all cores (about 55 s on two): `cargo test -p
    /// strata-engine --release expf -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    fn expf_matches_the_c_library_exhaustively() {
        assert!(
            std::arch::is_x86_feature_detected!("fma"),
            "needs a CPU with FMA"
        );
        let (n, first) = all_mismatches(expf, f32::exp);
        assert_eq!(n, 0, "{n} differ, first (x, ours, glibc's) {first:08x?}");
    }
}
