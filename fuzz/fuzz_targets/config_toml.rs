//! The layer cache's TOML configuration (`--config FILE`) from arbitrary text: an error or a
//! configuration that serializes and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_layer_cache::{CacheConfig, ConfigOverrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = CacheConfig::from_toml_str(text) {
        let toml = c.to_overrides().to_toml_string();
        let again = CacheConfig::from_toml_str(&toml).expect("round trip parses");
        assert_eq!(again, c, "{toml}");
    }
    if let Ok(o) = ConfigOverrides::from_toml_str(text) {
        let again = ConfigOverrides::from_toml_str(&o.to_toml_string()).expect("round trip");
        assert_eq!(again, o);
    }
});
