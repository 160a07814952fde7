//! [`CacheStats`]: counters of a [`LayerCache`](crate::LayerCache).

use std::fmt;
use std::time::Duration;

/// Counters since the cache was opened. `hits + prefetch_hits + sync_loads == gets` for
/// successful gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Successful and failed `get` calls.
    pub gets: u64,
    /// Gets served by a layer that was already resident and had been used before.
    pub hits: u64,
    /// Gets served by a layer the prefetcher loaded (possibly after waiting for it to finish).
    pub prefetch_hits: u64,
    /// Gets that had to read the layer themselves (misses).
    pub sync_loads: u64,
    /// Layer loads issued by the prefetcher.
    pub prefetch_loads: u64,
    /// Bytes read from storage (layers and globals; with mmap, bytes faulted in).
    pub bytes_read: u64,
    /// Time spent reading (summed over loads, including background ones).
    pub read_time: Duration,
    /// Time `get` spent blocked: waiting for a prefetch or reading synchronously.
    pub stall: Duration,
    /// Resident layers dropped to make room.
    pub evictions: u64,
    /// Reads that failed.
    pub read_errors: u64,
    /// Bytes resident now (globals + layers held or being loaded).
    pub resident_bytes: u64,
    /// Largest `resident_bytes` seen.
    pub peak_resident_bytes: u64,
    /// The budget in bytes.
    pub budget_bytes: u64,
}

impl CacheStats {
    /// `hits / gets` (0 when there were no gets).
    pub fn hit_ratio(&self) -> f64 {
        if self.gets == 0 {
            0.0
        } else {
            self.hits as f64 / self.gets as f64
        }
    }

    /// Counters accumulated since `earlier` (gauges — resident, peak, budget — are kept from
    /// `self`).
    pub fn since(&self, earlier: &CacheStats) -> CacheStats {
        CacheStats {
            gets: self.gets - earlier.gets,
            hits: self.hits - earlier.hits,
            prefetch_hits: self.prefetch_hits - earlier.prefetch_hits,
            sync_loads: self.sync_loads - earlier.sync_loads,
            prefetch_loads: self.prefetch_loads - earlier.prefetch_loads,
            bytes_read: self.bytes_read - earlier.bytes_read,
            read_time: self.read_time.saturating_sub(earlier.read_time),
            stall: self.stall.saturating_sub(earlier.stall),
            evictions: self.evictions - earlier.evictions,
            read_errors: self.read_errors - earlier.read_errors,
            resident_bytes: self.resident_bytes,
            peak_resident_bytes: self.peak_resident_bytes,
            budget_bytes: self.budget_bytes,
        }
    }

    /// One line for logs: `gets 64 | hits 16 (25.0%) | prefetch 40 | sync 8 | read 1.20 GiB | ...`.
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

/// Bytes as a human-readable binary size (`1.50 GiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

impl fmt::Display for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gets {} | hits {} ({:.1}%) | prefetch hits {} | sync loads {} | read {} in {:.3} s | \
             stalled {:.3} s | evictions {} | errors {} | peak resident {} of {} budget",
            self.gets,
            self.hits,
            100.0 * self.hit_ratio(),
            self.prefetch_hits,
            self.sync_loads,
            human_bytes(self.bytes_read),
            self.read_time.as_secs_f64(),
            self.stall.as_secs_f64(),
            self.evictions,
            self.read_errors,
            human_bytes(self.peak_resident_bytes),
            human_bytes(self.budget_bytes),
        )
    }
}
