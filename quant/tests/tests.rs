//! Integration tests of strata-quant: one binary, one module per concern.

mod common;
mod exact;
mod exact_q0;
mod golden;
mod kquants;
mod products;
mod q4k;
mod roundtrip;
mod simd;
mod sweep;
