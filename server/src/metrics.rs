//! `GET /metrics`: Prometheus text exposition (format 0.0.4), every name prefixed `strata_`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use strata_engine::CacheStats;

use crate::worker::Snapshot;

/// Request counters by endpoint and status, kept by the logging middleware.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, endpoint: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((endpoint.to_owned(), status)).or_insert(0) += 1;
    }

    /// The exposition text.
    pub fn render(&self, snap: &Snapshot, n_slots: usize, cache: &CacheStats) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP strata_{name} {help}");
            let _ = writeln!(out, "# TYPE strata_{name} {kind}");
            let _ = writeln!(out, "strata_{name} {value}");
        };
        let s = &snap.stats;
        let busy = s.busy.as_secs_f64();
        let tps = if busy > 0.0 {
            s.generated_tokens as f64 / busy
        } else {
            0.0
        };
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens evaluated.",
            s.prompt_tokens.to_string(),
        );
        metric(
            "generated_tokens_total",
            "counter",
            "Tokens generated.",
            s.generated_tokens.to_string(),
        );
        metric(
            "tokens_per_second",
            "gauge",
            "Generated tokens per second of engine busy time.",
            format!("{tps:.3}"),
        );
        metric(
            "busy_seconds_total",
            "counter",
            "Time spent in forward passes.",
            format!("{busy:.6}"),
        );
        metric(
            "steps_total",
            "counter",
            "Forward passes (batched steps) run.",
            s.steps.to_string(),
        );
        metric(
            "requests_active",
            "gauge",
            "Sequences running (slots in use).",
            snap.active.to_string(),
        );
        metric(
            "requests_queued",
            "gauge",
            "Requests waiting for a free slot.",
            snap.queued.to_string(),
        );
        metric(
            "slots_total",
            "gauge",
            "Parallel sequences (--parallel).",
            n_slots.to_string(),
        );
        metric(
            "finished_total",
            "counter",
            "Sequences that ended by themselves (stop, length).",
            s.finished.to_string(),
        );
        metric(
            "cancelled_total",
            "counter",
            "Sequences cancelled (client gone, failed step, shutdown).",
            s.cancelled.to_string(),
        );
        metric(
            "cache_hits_total",
            "counter",
            "Layer cache gets served by a resident or prefetched layer.",
            (cache.hits + cache.prefetch_hits).to_string(),
        );
        metric(
            "cache_misses_total",
            "counter",
            "Layer cache gets that read the layer synchronously.",
            cache.sync_loads.to_string(),
        );
        metric(
            "cache_bytes_read_total",
            "counter",
            "Bytes read from the model file by the layer cache.",
            cache.bytes_read.to_string(),
        );
        metric(
            "cache_stall_seconds_total",
            "counter",
            "Time forward passes waited for layers.",
            format!("{:.6}", cache.stall.as_secs_f64()),
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP strata_requests_total HTTP requests answered.");
        let _ = writeln!(out, "# TYPE strata_requests_total counter");
        for ((endpoint, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "strata_requests_total{{endpoint=\"{}\",status=\"{status}\"}} {n}",
                escape_label(endpoint)
            );
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_comment_or_sample() {
        let m = Metrics::default();
        m.record("/v1/chat/completions", 200);
        m.record("/v1/chat/completions", 200);
        m.record("unmatched", 404);
        let text = m.render(&Snapshot::default(), 4, &CacheStats::default());
        assert!(text
            .contains("strata_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 2"));
        assert!(text.contains("strata_slots_total 4"));
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("strata_"),
                "{line}"
            );
            if !line.starts_with('#') {
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }
}
