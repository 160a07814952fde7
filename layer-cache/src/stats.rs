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
    /// Bytes read from storage (layers, experts and globals; with mmap, bytes faulted in).
    pub bytes_read: u64,
    /// Time spent reading (summed over loads, including background ones and experts).
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
    /// Experts asked for by `experts` calls and found resident (one per expert id).
    pub expert_hits: u64,
    /// Experts asked for and read from storage (one per expert id; misses).
    pub expert_loads: u64,
    /// Bytes read for experts (included in `bytes_read`).
    pub expert_bytes_read: u64,
    /// Time `experts` calls spent blocked: reading missing experts, or waiting for slots
    /// pinned by others or for another caller's read of the same expert.
    pub expert_stall: Duration,
    /// Resident experts dropped to make room.
    pub expert_evictions: u64,
}

impl CacheStats {
    /// `expert_hits / (expert_hits + expert_loads)` (0 when no expert was asked for).
    pub fn expert_hit_ratio(&self) -> f64 {
        let asked = self.expert_hits + self.expert_loads;
        if asked == 0 {
            0.0
        } else {
            self.expert_hits as f64 / asked as f64
        }
    }

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
            expert_hits: self.expert_hits - earlier.expert_hits,
            expert_loads: self.expert_loads - earlier.expert_loads,
            expert_bytes_read: self.expert_bytes_read - earlier.expert_bytes_read,
            expert_stall: self.expert_stall.saturating_sub(earlier.expert_stall),
            expert_evictions: self.expert_evictions - earlier.expert_evictions,
        }
    }

    /// One line for logs: `gets 64 | hits 16 (25.0%) | prefetch 40 | sync 8 | read 1.20 GiB | ...`,
    /// and for a mixture-of-experts model (when any expert counter is nonzero) `| experts: hits
    /// 90 (75.0%) | loads 30 | read 12.00 MiB | stalled 0.120 s | evictions 20`.
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
        )?;
        if self.expert_hits + self.expert_loads + self.expert_evictions > 0
            || self.expert_bytes_read > 0
            || !self.expert_stall.is_zero()
        {
            write!(
                f,
                " | experts: hits {} ({:.1}%) | loads {} | read {} | stalled {:.3} s | evictions {}",
                self.expert_hits,
                100.0 * self.expert_hit_ratio(),
                self.expert_loads,
                human_bytes(self.expert_bytes_read),
                self.expert_stall.as_secs_f64(),
                self.expert_evictions,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_shows_experts_only_when_there_were_any() {
        let dense = CacheStats {
            gets: 4,
            hits: 1,
            ..CacheStats::default()
        };
        assert!(!dense.summary().contains("experts"), "{}", dense.summary());
        let moe = CacheStats {
            expert_hits: 3,
            expert_loads: 1,
            expert_bytes_read: 2048,
            expert_stall: Duration::from_millis(5),
            ..dense.clone()
        };
        let line = moe.summary();
        assert!(
            line.ends_with(
                " | experts: hits 3 (75.0%) | loads 1 | read 2.00 KiB | stalled 0.005 s | evictions 0"
            ),
            "{line}"
        );
        let d = moe.since(&dense);
        assert_eq!((d.expert_hits, d.expert_loads, d.gets), (3, 1, 0));
    }
}
