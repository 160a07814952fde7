//! Integration tests of strata-quant: one binary, one module per concern.

mod common;
mod exact;
mod exact_q0;
mod golden;
mod iq1;
mod iq2;
mod iq3;
mod iq4_xs;
mod kquants;
mod mxfp4;
mod products;
mod q4k;
mod roundtrip;
mod simd;
mod sweep;
mod tq;
