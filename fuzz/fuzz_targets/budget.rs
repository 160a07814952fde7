//! The `--budget`, `--backend` and `--policy` parsers on arbitrary text: an error, or a value
//! whose printed form parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_layer_cache::{Backend, Budget, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = text.parse::<Budget>() {
        let again: Budget = b.to_string().parse().expect("a printed budget parses");
        assert_eq!(again, b, "{text:?} -> {b}");
    }
    if let Ok(b) = text.parse::<Backend>() {
        assert_eq!(b.to_string().parse::<Backend>().ok(), Some(b));
    }
    if let Ok(p) = text.parse::<Policy>() {
        assert_eq!(p.to_string().parse::<Policy>().ok(), Some(p));
    }
});
