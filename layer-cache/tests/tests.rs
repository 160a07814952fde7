//! The layer-cache test suite (one binary): a conformance suite run against every backend,
//! and the policy tests.

mod common;
mod conformance;
mod policy;
