//! Memory per security context: RSS growth of a ContextStore holding N contexts, divided by N.
//! `cargo run --release -p tern-oscore --example context_memory -- 10000`

use tern_oscore::{ContextParams, ContextStore, SecurityContext};

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let secret = [0x42u8; 16];
    let mut store = ContextStore::new();
    let before = rss_kb();
    for i in 0..n {
        let recipient = i.to_be_bytes();
        let params = ContextParams::new(&secret, b"", &recipient);
        let context = SecurityContext::derive(&params).expect("contexts derive");
        store.insert(context).expect("recipient IDs differ");
    }
    let after = rss_kb();
    println!(
        "{n} contexts: RSS {before} kB -> {after} kB, {:.0} bytes per context (size_of SecurityContext: {} bytes)",
        (after - before) as f64 * 1024.0 / f64::from(n),
        std::mem::size_of::<SecurityContext>()
    );
}
