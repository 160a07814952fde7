//! Integration tests of `strata-gguf`: one binary, one module per topic.

mod common;
mod hostile;
mod metadata;
mod real_model;
mod roundtrip;
#[cfg(feature = "serde")]
mod serde;
mod types;
