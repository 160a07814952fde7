//! The ±1 sign tables shared by the IQ2 and IQ3 AVX2 kernels ([`super::iq2_x86`],
//! [`super::iq3_x86`]): a sign byte or a 7-bit sign index (ggml's `ksigns_iq2xs`) as eight
//! bytes of `±1`, computed at compile time.

/// `i` with bit 7 set when `i` has an odd number of bits: ggml's `ksigns_iq2xs` (the same
/// values as [`crate::grids::KSIGNS`], computed here so [`SIGN7`] can be a constant).
pub(super) const fn ksign(i: usize) -> u8 {
    (i as u8) | (((i as u32).count_ones() & 1) as u8) << 7
}

/// Sign byte `b` as eight bytes (little-endian u64): `−1` where bit `k` is set, else `1`.
pub(super) const SIGN8: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 8 {
            let byte: u64 = if (b >> k) & 1 != 0 { 0xFF } else { 0x01 };
            t[b] |= byte << (8 * k);
            k += 1;
        }
        b += 1;
    }
    t
};

/// A 7-bit sign index as eight ±1 bytes: `SIGN8[ksign(i)]`.
pub(super) const SIGN7: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = SIGN8[ksign(i) as usize];
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The sign tables computed here agree with ggml's `ksigns_iq2xs` ([`crate::grids::KSIGNS`]).
    #[test]
    fn sign_tables_match_ksigns() {
        for i in 0..128 {
            assert_eq!(ksign(i), crate::grids::KSIGNS[i], "ksigns {i}");
            let k = crate::grids::KSIGNS[i];
            let want: [u8; 8] = std::array::from_fn(|e| if k >> e & 1 != 0 { 0xFF } else { 1 });
            assert_eq!(SIGN7[i].to_le_bytes(), want, "signs {i}");
        }
    }

    /// The constant sign tables agree with the shared `KSIGNS`.
    #[test]
    fn sign7_matches_ksigns() {
        for (i, &k) in crate::grids::KSIGNS.iter().enumerate() {
            assert_eq!(ksign(i), k, "index {i}");
            assert_eq!(SIGN7[i], SIGN8[k as usize], "index {i}");
        }
    }
}
