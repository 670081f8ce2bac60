//! What the load commands (`bench`, `dtls-load`, `stream-load`) share: argument checks,
//! percentiles, the process's resident memory.

use std::time::Duration;

/// A duration flag in seconds, checked to lie in (0, 86400].
pub fn check_seconds(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "{name} must be between 0 and 86400 seconds, not {v}"
        ))
    }
}

/// The nearest-rank percentile `p` (0–100) of sorted values; 0 for none.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The latency percentiles a load command reports: p50, p90, p99, p99.9 of the latencies,
/// which are sorted here.
pub fn latency_percentiles(latencies: &mut [u32]) -> (u32, u32, u32, u32) {
    latencies.sort_unstable();
    (
        percentile(latencies, 50.0),
        percentile(latencies, 90.0),
        percentile(latencies, 99.0),
        percentile(latencies, 99.9),
    )
}

/// This process's resident set size (Linux), if readable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
