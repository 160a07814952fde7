//! Integration tests of strata-quant: one binary, one module per concern.

mod common;
mod products;
mod roundtrip;
mod simd;
