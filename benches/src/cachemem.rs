//! The cache's in-memory tier under a million distinct keys: does it stay
//! within its byte bound? Inserts `--keys` entries of `--body` bytes into a
//! tier bounded at `--memory` MiB and prints the tier's own count of bytes,
//! the process's RSS growth, and their ratios to the bound.
//!
//!     cargo build --release -p skygate-benches && target/release/cachemem

// A benchmark driver: it stops with a message when its tools misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use clap::Parser;
use skygate_config::CacheConf;
use skygate_plugins::cache::entry::{now_ms, Entry};
use skygate_plugins::cache::key::Key;
use skygate_plugins::cache::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Distinct keys inserted.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes of each entry's body (a small chat completion is ~400).
    #[arg(long, default_value_t = 400)]
    body: usize,
    /// The tier's bound, MiB (`cache.memory`).
    #[arg(long, default_value_t = 64)]
    memory: u64,
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1 << 20) as f64
}

fn main() {
    let args = Args::parse();
    let bound = args.memory << 20;
    let store = Store::new(&CacheConf {
        memory: bound,
        ..CacheConf::default()
    });
    let route: Arc<str> = "chat".into();
    let tenant: Option<Arc<str>> = Some("acme".into());
    let rss0 = rss_mib();
    let start = Instant::now();
    let mut peak_rss = rss0;
    let mut peak_bytes = 0u64;
    for i in 0..args.keys {
        let mut body = vec![b'x'; args.body];
        body[..8].copy_from_slice(&i.to_le_bytes());
        let e = Entry::new(
            Bytes::from(body),
            true,
            route.clone(),
            tenant.clone(),
            now_ms(),
            Duration::from_secs(3600),
        );
        // Spread over the key space as SHA-256 prefixes are.
        let k = u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        store.insert(Key(k), Arc::new(e));
        if i % 100_000 == 99_999 {
            let (bytes, _) = store.usage();
            peak_bytes = peak_bytes.max(bytes);
            peak_rss = peak_rss.max(rss_mib());
        }
    }
    let (bytes, entries) = store.usage();
    peak_bytes = peak_bytes.max(bytes);
    let rss = rss_mib();
    peak_rss = peak_rss.max(rss);
    let offered = args.keys as f64 * (args.body + skygate_plugins::cache::entry::OVERHEAD) as f64;
    println!(
        "\n## Cache memory tier: {} distinct keys of {} B, bound {} MiB\n",
        args.keys, args.body, args.memory
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| offered (keys × (body + overhead)) | {:.0} MiB |",
        offered / (1 << 20) as f64
    );
    println!("| entries kept | {entries} |");
    println!(
        "| tier's own count, end / peak | {:.1} / {:.1} MiB |",
        bytes as f64 / (1 << 20) as f64,
        peak_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| tier's count / bound (peak) | {:.3} |",
        peak_bytes as f64 / bound as f64
    );
    println!(
        "| process RSS growth, end / peak | {:.1} / {:.1} MiB |",
        rss - rss0,
        peak_rss - rss0
    );
    println!(
        "| RSS growth / bound (peak) | {:.2} |",
        (peak_rss - rss0) / args.memory as f64
    );
    println!(
        "| inserts per second | {:.0} |",
        args.keys as f64 / start.elapsed().as_secs_f64()
    );
}
