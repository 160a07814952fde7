//! The fixed addition trees in which SIMD lanes are summed: the bottom of the scalar reference,
//! shared by every per-format order (`scalar` and its `q2k` … `q5k`) and by kernels that keep
//! their lanes in arrays.

/// Adds eight lanes in the fixed tree the SIMD reductions use.
#[inline(always)]
pub(crate) fn reduce8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Adds 16 lanes as `_mm512_reduce_add_ps` does (GCC): lane `i` + lane `i + 8`, then
/// [`reduce8`]'s tree.
#[inline(always)]
pub(crate) fn reduce16(a: [f32; 16]) -> f32 {
    reduce8(std::array::from_fn(|i| a[i] + a[i + 8]))
}
