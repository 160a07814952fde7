//! Configuration: backend, budget, prefetch window and policy, from TOML and from flags.
//!
//! ```toml
//! [storage]
//! backend = "file"      # "mmap" | "file" | "arena"; unset: "mmap" when the budget covers
//!                       # the model, "file" when it is below the model's size
//! direct_io = true      # file and arena backends: O_DIRECT reads, page cache does not grow;
//!                       # unset: on exactly when the budget is below the model's size
//! io_threads = 4        # concurrent reads per layer load
//!
//! [cache]
//! budget = "1.5GiB"     # bytes ("1.5GiB", "800MB", 123456), "75%" of the file, "all" or "min"
//! prefetch = 2          # window w: layers streamed ahead
//! policy = "cyclic"     # "cyclic" | "lru"
//! expert_policy = "lfu" # mixture-of-experts models: "lfu" | "lru"
//! ```
//! A file is parsed into [`ConfigOverrides`] (every key optional); command-line flags build
//! another [`ConfigOverrides`]; [`ConfigOverrides::merge`] layers them, flags last, and
//! [`ConfigOverrides::resolve`] fills the keys left unset with the defaults for the model's
//! size ([`CacheConfig::for_budget`]): a budget below the model streams layers, and buffered
//! streaming under a memory limit thrashes (the cache's own buffers and the kernel's copies of
//! the same bytes compete for the limit), so then the default is the `file` backend with
//! O_DIRECT. [`CacheConfig::apply`] layers overrides over a complete
//! configuration instead, for callers that chose every key themselves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Where cached layer bytes live and how they get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// Memory map of the file, zero-copy; residency managed with madvise (feature `mmap`).
    /// The model file must not be modified or truncated while a cache maps it (bytes would
    /// change under borrows; touching a truncated page raises SIGBUS) — use `file` or `arena`
    /// where that cannot be promised.
    #[default]
    Mmap,
    /// Positioned reads into owned aligned buffers, optionally O_DIRECT (feature `file`).
    File,
    /// Positioned reads into one preallocated region of exactly the budget (feature `arena`).
    Arena,
}

/// What the layer cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Budget {
    /// At most this many bytes (globals plus layer slots); more than room for every layer is
    /// capped at that.
    Bytes(u64),
    /// This percentage (0–100] of the model file's size.
    Percent(f64),
    /// Enough for every layer: nothing is streamed twice.
    #[default]
    All,
    /// The smallest budget the model allows: the pinned globals (without the row globals,
    /// [`CacheConfig::row_globals`]) + (window + 1) × largest layer, or room for everything
    /// where that is less.
    Min,
}

impl Budget {
    /// Whether this budget is below the size of a model file of `file_len` bytes, so that
    /// some layers must be streamed: [`Budget::Min`] always, [`Budget::All`] never, a
    /// percentage below 100, a byte count below `file_len`.
    pub fn is_below(&self, file_len: u64) -> bool {
        match *self {
            Budget::Bytes(b) => b < file_len,
            Budget::Percent(p) => p < 100.0,
            Budget::All => false,
            Budget::Min => true,
        }
    }
}

/// Which layers stay resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Optimal for the per-token cyclic scan: as many layers resident for good as fit beside
    /// w streaming slots, the rest streamed through those slots.
    #[default]
    Cyclic,
    /// A plain demand-paged LRU cache over K slots, without background prefetch (kept as the
    /// baseline for comparison: on a cyclic scan larger than the cache it never hits).
    Lru,
}

/// Which experts stay resident in the expert slots of a mixture-of-experts model (the dense
/// parts of its layers follow [`Policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpertPolicy {
    /// Evict the expert used least often, counting uses with aging: every use adds one to the
    /// expert's count, and every `16 ×` (experts in the model) uses all counts are halved, so
    /// the cache follows a drift in the routing within a few hundred tokens. Ties go to the
    /// least recently used. The default: on skewed (Zipf-like) routing it keeps the popular
    /// experts that LRU lets a burst of rare ones push out. Simulated (24 layers, 64 experts,
    /// 8 routed, 2000 tokens, Zipf 1.0; `expert_policy_table` in `cache::experts` tests),
    /// expert hit rates LRU → LFU: 31.5% → 45.6% with slots for 12.5% of the experts, 45.4% →
    /// 62.7% at 25%, 72.5% → 80.3% at 50%, 88.8% → 91.2% at 75%; with the routing redrawn
    /// halfway, 45.4% → 61.0% at 25%.
    #[default]
    Lfu,
    /// Evict the least recently used expert.
    Lru,
}

/// Everything the cache needs to know, after defaults, file and flags are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Storage backend.
    pub backend: Backend,
    /// O_DIRECT reads (file and arena backends).
    pub direct_io: bool,
    /// Memory budget.
    pub budget: Budget,
    /// Prefetch window w (layers read ahead in the background). 0 = no background reads.
    pub prefetch: usize,
    /// Residency policy.
    pub policy: Policy,
    /// Residency policy of the expert slots (mixture-of-experts models only).
    pub expert_policy: ExpertPolicy,
    /// Concurrent reads per layer load (a layer is split into this many pieces).
    pub io_threads: usize,
    /// Global tensors the caller reads only a row at a time, never whole (an engine's
    /// `token_embd.weight` when the model has a separate `output.weight`). Where the budget
    /// cannot hold the whole model they stay in storage, outside the budget, and
    /// [`LayerCache::read_global`](crate::LayerCache::read_global) reads the rows asked for:
    /// their bytes go to resident layers instead, which every token reads whole. Names the
    /// file lacks are ignored. Not a file or flag setting: the caller that knows how it uses
    /// the tensors sets it.
    pub row_globals: Vec<String>,
}

impl Default for CacheConfig {
    /// mmap, budget all, prefetch 2, cyclic, LFU experts, 4 reads in flight, no row globals.
    fn default() -> CacheConfig {
        CacheConfig {
            backend: Backend::Mmap,
            direct_io: false,
            budget: Budget::All,
            prefetch: 2,
            policy: Policy::Cyclic,
            expert_policy: ExpertPolicy::Lfu,
            io_threads: 4,
            row_globals: Vec::new(),
        }
    }
}

/// The largest accepted prefetch window.
pub const MAX_PREFETCH: usize = 64;
/// The largest accepted `io_threads`.
pub const MAX_IO_THREADS: usize = 64;

/// `[storage]` section: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `backend = "mmap" | "file" | "arena"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// `direct_io = true | false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_io: Option<bool>,
    /// `io_threads = 1..=64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads: Option<usize>,
}

/// `[cache]` section: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// `budget = "1.5GiB" | "75%" | "all" | "min" | <bytes>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// `prefetch = 0..=64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// `policy = "cyclic" | "lru"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// `expert_policy = "lfu" | "lru"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_policy: Option<ExpertPolicy>,
}

/// A partial configuration: what a file or a set of flags says. Unset keys keep the value
/// underneath.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageSection,
    /// `[cache]`.
    #[serde(default)]
    pub cache: CacheSection,
}

impl ConfigOverrides {
    /// Parse a TOML document holding only `[storage]` and `[cache]`; unknown sections, keys and
    /// bad values are errors naming the key and the accepted values.
    pub fn from_toml_str(text: &str) -> Result<ConfigOverrides, Error> {
        let overrides: ConfigOverrides = toml::from_str(text)?;
        overrides.validate()?;
        Ok(overrides)
    }

    /// Render as TOML (only the keys that are set).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), Error> {
        if let Some(w) = self.cache.prefetch {
            if w > MAX_PREFETCH {
                return Err(config_error(
                    "cache.prefetch",
                    w,
                    &format!("an integer 0..={MAX_PREFETCH}"),
                ));
            }
        }
        if let Some(t) = self.storage.io_threads {
            if t == 0 || t > MAX_IO_THREADS {
                return Err(config_error(
                    "storage.io_threads",
                    t,
                    &format!("an integer 1..={MAX_IO_THREADS}"),
                ));
            }
        }
        Ok(())
    }
}

impl ConfigOverrides {
    /// `self` with every key set in `later` replaced (a config file, then the flags).
    pub fn merge(&self, later: &ConfigOverrides) -> ConfigOverrides {
        let (s, l) = (&self.storage, &later.storage);
        let (c, m) = (&self.cache, &later.cache);
        ConfigOverrides {
            storage: StorageSection {
                backend: l.backend.or(s.backend),
                direct_io: l.direct_io.or(s.direct_io),
                io_threads: l.io_threads.or(s.io_threads),
            },
            cache: CacheSection {
                budget: m.budget.or(c.budget),
                prefetch: m.prefetch.or(c.prefetch),
                policy: m.policy.or(c.policy),
                expert_policy: m.expert_policy.or(c.expert_policy),
            },
        }
    }

    /// The complete configuration for a model file of `file_len` bytes: every key set here,
    /// and for the others the defaults of [`CacheConfig::for_budget`] with this budget (or
    /// [`Budget::All`]). Where only one of `backend` and `direct_io` is set the other follows
    /// it: `direct_io = true` alone picks the `file` backend (mmap cannot bypass the page
    /// cache), `backend = "mmap"` alone keeps buffered reads, and `backend = "file"` or
    /// `"arena"` alone gets O_DIRECT exactly when the budget is below the model's size.
    pub fn resolve(&self, file_len: u64) -> CacheConfig {
        let budget = self.cache.budget.unwrap_or_default();
        let defaults = CacheConfig::for_budget(budget, file_len);
        let streams = budget.is_below(file_len);
        let (backend, direct_io) = match (self.storage.backend, self.storage.direct_io) {
            (Some(b), Some(d)) => (b, d),
            (Some(Backend::Mmap), None) => (Backend::Mmap, false),
            (Some(b), None) => (b, streams),
            (None, Some(true)) if defaults.backend == Backend::Mmap => (Backend::File, true),
            (None, Some(d)) => (defaults.backend, d),
            (None, None) => (defaults.backend, defaults.direct_io),
        };
        CacheConfig {
            backend,
            direct_io,
            ..defaults.apply(self)
        }
    }
}

impl CacheConfig {
    /// The defaults for `budget` over a model file of `file_len` bytes. A budget that covers
    /// the model ([`Budget::is_below`] false): the zero-copy `mmap` backend, buffered, exactly
    /// [`CacheConfig::default`]. A budget below it: the `file` backend with O_DIRECT, so that
    /// streamed layers are read from the device straight into the cache's own buffers and the
    /// page cache does not grow. Measured on a 7B Q4_K at a 25% budget in a cgroup of budget +
    /// 300 MiB, cold: buffered file reads fill the page cache and the limit thrashes (0.22
    /// tok/s), mmap (pages released on eviction) holds up (0.41–0.44), O_DIRECT is fastest
    /// (0.46–0.51).
    pub fn for_budget(budget: Budget, file_len: u64) -> CacheConfig {
        let streams = budget.is_below(file_len);
        CacheConfig {
            backend: if streams {
                Backend::File
            } else {
                Backend::Mmap
            },
            direct_io: streams,
            budget,
            ..CacheConfig::default()
        }
    }

    /// Defaults overridden by a TOML document (see [`ConfigOverrides::from_toml_str`]).
    pub fn from_toml_str(text: &str) -> Result<CacheConfig, Error> {
        Ok(CacheConfig::default().apply(&ConfigOverrides::from_toml_str(text)?))
    }

    /// `self` with every key set in `overrides` replaced. Apply the file first, then the flags.
    pub fn apply(&self, overrides: &ConfigOverrides) -> CacheConfig {
        let s = &overrides.storage;
        let c = &overrides.cache;
        CacheConfig {
            backend: s.backend.unwrap_or(self.backend),
            direct_io: s.direct_io.unwrap_or(self.direct_io),
            io_threads: s.io_threads.unwrap_or(self.io_threads),
            budget: c.budget.unwrap_or(self.budget),
            prefetch: c.prefetch.unwrap_or(self.prefetch),
            policy: c.policy.unwrap_or(self.policy),
            expert_policy: c.expert_policy.unwrap_or(self.expert_policy),
            row_globals: self.row_globals.clone(),
        }
    }

    /// This configuration as a complete [`ConfigOverrides`] (for writing a config file).
    pub fn to_overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            storage: StorageSection {
                backend: Some(self.backend),
                direct_io: Some(self.direct_io),
                io_threads: Some(self.io_threads),
            },
            cache: CacheSection {
                budget: Some(self.budget),
                prefetch: Some(self.prefetch),
                policy: Some(self.policy),
                expert_policy: Some(self.expert_policy),
            },
        }
    }
}

fn config_error(key: &str, value: impl fmt::Display, accepted: &str) -> Error {
    Error::Config {
        key: key.to_string(),
        value: value.to_string(),
        accepted: accepted.to_string(),
    }
}

const BACKEND_ACCEPTED: &str = "\"mmap\", \"file\", \"arena\"";
const POLICY_ACCEPTED: &str = "\"cyclic\", \"lru\"";
const EXPERT_POLICY_ACCEPTED: &str = "\"lfu\", \"lru\"";
const BUDGET_ACCEPTED: &str =
    "a size such as \"1.5GiB\", \"800MB\", \"4096\" (units B, KB, MB, GB, TB, \
     KiB, MiB, GiB, TiB), a percentage of the model file such as \"75%\", \"all\" or \"min\"";

impl FromStr for Backend {
    type Err = Error;

    /// `"mmap"`, `"file"` or `"arena"`; errors name `storage.backend`.
    fn from_str(s: &str) -> Result<Backend, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mmap" => Ok(Backend::Mmap),
            "file" => Ok(Backend::File),
            "arena" => Ok(Backend::Arena),
            _ => Err(config_error("storage.backend", s, BACKEND_ACCEPTED)),
        }
    }
}

impl Backend {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mmap => "mmap",
            Backend::File => "file",
            Backend::Arena => "arena",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = Error;

    /// `"cyclic"` or `"lru"`; errors name `cache.policy`.
    fn from_str(s: &str) -> Result<Policy, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cyclic" => Ok(Policy::Cyclic),
            "lru" => Ok(Policy::Lru),
            _ => Err(config_error("cache.policy", s, POLICY_ACCEPTED)),
        }
    }
}

impl Policy {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Cyclic => "cyclic",
            Policy::Lru => "lru",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExpertPolicy {
    type Err = Error;

    /// `"lfu"` or `"lru"`; errors name `cache.expert_policy`.
    fn from_str(s: &str) -> Result<ExpertPolicy, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lfu" => Ok(ExpertPolicy::Lfu),
            "lru" => Ok(ExpertPolicy::Lru),
            _ => Err(config_error(
                "cache.expert_policy",
                s,
                EXPERT_POLICY_ACCEPTED,
            )),
        }
    }
}

impl ExpertPolicy {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            ExpertPolicy::Lfu => "lfu",
            ExpertPolicy::Lru => "lru",
        }
    }
}

impl fmt::Display for ExpertPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Budget {
    type Err = Error;

    /// `"1.5GiB"`, `"800MB"`, `"4096"`, `"75%"`, `"all"`, `"min"`; errors name `cache.budget`.
    fn from_str(s: &str) -> Result<Budget, Error> {
        let bad = || config_error("cache.budget", s, BUDGET_ACCEPTED);
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "all" => return Ok(Budget::All),
            "min" => return Ok(Budget::Min),
            _ => {}
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return if p.is_finite() && p > 0.0 && p <= 100.0 {
                Ok(Budget::Percent(p))
            } else {
                Err(bad())
            };
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "tb" | "t" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        let bytes = if num.contains('.') {
            let v: f64 = num.parse().map_err(|_| bad())?;
            let b = v * multiplier as f64;
            if !b.is_finite() || b >= u64::MAX as f64 {
                return Err(bad());
            }
            b.round() as u64
        } else {
            let v: u64 = num.parse().map_err(|_| bad())?;
            v.checked_mul(multiplier).ok_or_else(bad)?
        };
        if bytes == 0 {
            return Err(bad());
        }
        Ok(Budget::Bytes(bytes))
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Bytes(b) => write!(f, "{b}"),
            Budget::Percent(p) => write!(f, "{p}%"),
            Budget::All => f.write_str("all"),
            Budget::Min => f.write_str("min"),
        }
    }
}

macro_rules! serde_via_str {
    ($ty:ty, $expecting:expr) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(|e: Error| E::custom(e))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        v.to_string().parse().map_err(|e: Error| E::custom(e))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        v.to_string().parse().map_err(|e: Error| E::custom(e))
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$ty, E> {
                        v.to_string().parse().map_err(|e: Error| E::custom(e))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

serde_via_str!(Backend, BACKEND_ACCEPTED);
serde_via_str!(Policy, POLICY_ACCEPTED);
serde_via_str!(ExpertPolicy, EXPERT_POLICY_ACCEPTED);
serde_via_str!(Budget, BUDGET_ACCEPTED);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_parses_every_form() {
        assert_eq!("1.5GiB".parse::<Budget>().unwrap(), Budget::Bytes(3 << 29));
        assert_eq!(
            "800MB".parse::<Budget>().unwrap(),
            Budget::Bytes(800_000_000)
        );
        assert_eq!("4096".parse::<Budget>().unwrap(), Budget::Bytes(4096));
        assert_eq!("75%".parse::<Budget>().unwrap(), Budget::Percent(75.0));
        assert_eq!("ALL".parse::<Budget>().unwrap(), Budget::All);
        assert_eq!("min".parse::<Budget>().unwrap(), Budget::Min);
        for bad in ["", "GiB", "1.5XB", "0", "150%", "-1", "abc"] {
            match bad.parse::<Budget>() {
                Err(Error::Config { key, .. }) => assert_eq!(key, "cache.budget"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn toml_file_then_flags() {
        let file = ConfigOverrides::from_toml_str(
            "[storage]\nbackend = \"file\"\ndirect_io = true\n[cache]\nbudget = \"75%\"\nprefetch = 3\npolicy = \"lru\"\n",
        )
        .unwrap();
        let flags = ConfigOverrides {
            cache: CacheSection {
                budget: Some(Budget::Min),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = CacheConfig::default().apply(&file).apply(&flags);
        assert_eq!(c.backend, Backend::File);
        assert!(c.direct_io);
        assert_eq!(c.budget, Budget::Min);
        assert_eq!(c.prefetch, 3);
        assert_eq!(c.policy, Policy::Lru);
        // Round trip.
        let again = ConfigOverrides::from_toml_str(&c.to_overrides().to_toml_string()).unwrap();
        assert_eq!(CacheConfig::default().apply(&again), c);
    }

    #[test]
    fn errors_name_key_and_accepted_values() {
        let e = ConfigOverrides::from_toml_str("[storage]\nbackend = \"floppy\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.backend") && e.contains("\"arena\""),
            "{e}"
        );
        let e = ConfigOverrides::from_toml_str("[cache]\npolicy = \"fifo\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.policy") && e.contains("\"lru\""), "{e}");
        let e = ConfigOverrides::from_toml_str("[cache]\nbudget = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.budget") && e.contains("min"), "{e}");
        let e = ConfigOverrides::from_toml_str("[cache]\nbudgte = \"1GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budgte") && e.contains("budget") && e.contains("policy"),
            "{e}"
        );
        let e = ConfigOverrides::from_toml_str("[cache]\nprefetch = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.prefetch") && e.contains("0..=64"), "{e}");
        let e = ConfigOverrides::from_toml_str("[disk]\nx = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("disk") && e.contains("storage"), "{e}");
        // Integer budgets are bytes.
        let c = CacheConfig::from_toml_str("[cache]\nbudget = 123456\n").unwrap();
        assert_eq!(c.budget, Budget::Bytes(123456));
    }

    fn overrides(toml: &str) -> ConfigOverrides {
        ConfigOverrides::from_toml_str(toml).unwrap()
    }

    #[test]
    fn direct_io_and_the_file_backend_are_the_default_exactly_below_the_model_size() {
        const LEN: u64 = 4_000_000_000;
        for (budget, streams) in [
            ("25%", true),
            ("99.9%", true),
            ("100%", false),
            ("all", false),
            ("min", true),
            ("3999999999", true),
            ("4000000000", false),
            ("8GB", false),
        ] {
            let c = overrides(&format!("[cache]\nbudget = \"{budget}\"\n")).resolve(LEN);
            let (backend, direct) = if streams {
                (Backend::File, true)
            } else {
                (Backend::Mmap, false)
            };
            assert_eq!(
                (c.backend, c.direct_io),
                (backend, direct),
                "budget {budget}"
            );
            assert_eq!(c.budget, budget.parse().unwrap());
            assert_eq!(c, CacheConfig::for_budget(c.budget, LEN));
        }
        // Nothing set: budget all, the zero-copy default.
        assert_eq!(
            ConfigOverrides::default().resolve(LEN),
            CacheConfig::default()
        );
    }

    #[test]
    fn explicit_storage_keys_are_honoured_and_the_other_follows() {
        const LEN: u64 = 1 << 30;
        let r = |toml: &str| {
            let c = overrides(toml).resolve(LEN);
            (c.backend, c.direct_io)
        };
        // An explicit `direct_io = false` wins over the streaming default.
        assert_eq!(
            r("[storage]\ndirect_io = false\n[cache]\nbudget = \"25%\"\n"),
            (Backend::File, false)
        );
        assert_eq!(
            r("[storage]\nbackend = \"arena\"\ndirect_io = false\n[cache]\nbudget = \"25%\"\n"),
            (Backend::Arena, false)
        );
        // A backend alone: O_DIRECT follows the budget (never for mmap).
        assert_eq!(
            r("[storage]\nbackend = \"arena\"\n[cache]\nbudget = \"25%\"\n"),
            (Backend::Arena, true)
        );
        assert_eq!(
            r("[storage]\nbackend = \"arena\"\n"),
            (Backend::Arena, false)
        );
        assert_eq!(
            r("[storage]\nbackend = \"mmap\"\n[cache]\nbudget = \"25%\"\n"),
            (Backend::Mmap, false)
        );
        // `direct_io = true` alone over a budget that covers the model needs a reading backend.
        assert_eq!(r("[storage]\ndirect_io = true\n"), (Backend::File, true));
        // The other keys pass through.
        let c = overrides("[storage]\nio_threads = 7\n[cache]\nprefetch = 3\npolicy = \"lru\"\n")
            .resolve(LEN);
        assert_eq!((c.io_threads, c.prefetch, c.policy), (7, 3, Policy::Lru));
        assert_eq!(c.expert_policy, ExpertPolicy::Lfu);
        let c = overrides("[cache]\nexpert_policy = \"LRU\"\n").resolve(LEN);
        assert_eq!(c.expert_policy, ExpertPolicy::Lru);
        assert_eq!(
            ConfigOverrides::from_toml_str(&c.to_overrides().to_toml_string())
                .unwrap()
                .resolve(LEN),
            c
        );
        let err =
            ConfigOverrides::from_toml_str("[cache]\nexpert_policy = \"fifo\"\n").unwrap_err();
        assert!(err.to_string().contains("cache.expert_policy"), "{err}");
        assert!(err.to_string().contains("fifo"), "{err}");
    }

    #[test]
    fn flags_merge_over_the_file() {
        let file =
            overrides("[storage]\ndirect_io = false\nio_threads = 2\n[cache]\nbudget = \"25%\"\n");
        let flags = overrides("[storage]\nbackend = \"arena\"\n[cache]\nbudget = \"50%\"\n");
        let m = file.merge(&flags);
        assert_eq!(m.storage.backend, Some(Backend::Arena));
        assert_eq!(m.storage.direct_io, Some(false));
        assert_eq!(m.storage.io_threads, Some(2));
        assert_eq!(m.cache.budget, Some(Budget::Percent(50.0)));
        assert_eq!(m.cache.prefetch, None);
        assert_eq!(ConfigOverrides::default().merge(&file), file);
        assert_eq!(file.merge(&ConfigOverrides::default()), file);
    }
}
