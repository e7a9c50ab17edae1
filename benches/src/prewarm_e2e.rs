//! The prewarm policies end to end, with real processes, on a
//! time-compressed trace (100x by default: 2 days in under 30 minutes):
//! for each policy a `skygate sim` platform
//! (cold starts, idle timeout, one request per instance) behind its own
//! `skygate run`, all four replaying the same arrivals at once. Times are
//! the benchmark's (idle timeout 10 min, cold start 8 s) divided by
//! `--compress`; the cold starts are the simulator's ground truth
//! (`x-sim-cold-start`), the pings its own count. Prints the same columns
//! as the virtual-time bench, so the order between policies can be compared.
//!
//!     cargo build --release -p skygate -p skygate-benches && target/release/prewarm-e2e

// A benchmark driver: it stops with a message when its tools misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use skygate_benches::prewarm_sim::{policies, run, trace, World, DAY};
use skygate_benches::Kill;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Real time runs this many times faster than the trace's.
    #[arg(long, default_value_t = 100)]
    compress: u64,
    /// Days of trace: the first `learn-days` teach, the rest are scored.
    #[arg(long, default_value_t = 2)]
    days: u64,
    #[arg(long, default_value_t = 1)]
    learn_days: u64,
    /// bursty, timer-15m, timer-60m, business-hours, rare, steady.
    #[arg(long, default_value = "bursty")]
    shape: String,
    /// Print only the virtual-time run of the same trace and setting.
    #[arg(long)]
    virtual_only: bool,
}

fn free_port() -> SocketAddr {
    skygate_benches::free_port().unwrap()
}

fn sim(bin: &std::path::Path, cold_ms: u64, idle_ms: u64, service_ms: u64) -> (Kill, SocketAddr) {
    let mut child = Command::new(bin)
        .args(["sim", "--listen", "127.0.0.1:0", "--concurrency", "1"])
        .args(["--max-instances", "1000"])
        .args(["--latency-ms", &service_ms.to_string()])
        .args(["--cold-start-ms", &cold_ms.to_string()])
        .args(["--idle-timeout-ms", &idle_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.rsplit("listening on ").next().unwrap().trim();
    (Kill(child), addr.parse().unwrap())
}

/// One request on a fresh connection: the status and whether the platform
/// cold-started for it.
fn ask(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, bool, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let cold = text.to_ascii_lowercase().contains("x-sim-cold-start: true");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, cold, body)
}

fn prewarm_pings(sim: SocketAddr) -> u64 {
    let (_, _, body) = ask(sim, "GET", "/_sim/stats", "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["prewarm_pings"].as_u64().unwrap_or(0)
}

struct Run {
    name: &'static str,
    _sim: Kill,
    sim: SocketAddr,
    _gw: Kill,
    gw: SocketAddr,
    /// (arrival index, cold, status) of each request.
    seen: Arc<Mutex<Vec<(usize, bool, u16)>>>,
}

fn main() {
    let args = Args::parse();
    let c = args.compress.max(1);
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("skygate");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p skygate"
    );
    let (idle, cold, service) = (600_000 / c, 8_000 / c, (300 / c).max(1));
    let arrivals = trace(&args.shape, args.days, 42);
    // The same trace and setting in virtual time (uncompressed), for the
    // order the real run should show.
    let world = World {
        days: args.days,
        learn_days: args.learn_days,
        ..World::default()
    };
    for p in policies(&world) {
        let s = run(&world, &p, &arrivals);
        println!(
            "VIRTUAL policy={} shape={} cold_pct={:.2} pings_per_day={:.1}",
            p.name,
            args.shape,
            s.cold_pct(),
            s.pings_per_day()
        );
    }
    if args.virtual_only {
        return;
    }
    let dir = std::env::temp_dir().join(format!("skygate-prewarm-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policies: [(&str, String); 4] = [
        ("off", "{ mode: off }".into()),
        ("fixed-k1", "{ mode: fixed, concurrency: 1 }".into()),
        ("fixed-k4", "{ mode: fixed, concurrency: 4 }".into()),
        ("adaptive", "{ mode: adaptive, concurrency: 8 }".into()),
    ];
    let runs: Vec<Run> = policies
        .iter()
        .map(|(name, prewarm)| {
            let (sim_proc, sim_addr) = sim(&bin, cold, idle, service);
            let (gw, admin) = (free_port(), free_port());
            let prewarm = prewarm.replacen(
                '{',
                &format!("{{ idle_timeout: {idle}ms, cold_start: {cold}ms, hold: 10ms, cold_header: x-sim-cold-start,"),
                1,
            );
            let config = format!(
                "listen: {gw}\nadmin: {{ listen: {admin} }}\nserver: {{ access_log: off }}\nauth:\n  api_keys:\n    - {{ key: sk-bench, principal: bench }}\nbackends:\n  fn: {{ kind: openai, url: \"http://{sim_addr}/v1\", prewarm: {prewarm} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: fn }} ], retries: {{ max_attempts: 1 }} }}\n"
            );
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, config).unwrap();
            let gw_proc = Kill(
                Command::new(&bin)
                    .args(["run", "--config"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let start = Instant::now();
            while TcpStream::connect(gw).is_err() {
                assert!(start.elapsed() < Duration::from_secs(10), "the gateway did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Run {
                name,
                _sim: sim_proc,
                sim: sim_addr,
                _gw: gw_proc,
                gw,
                seen: Arc::new(Mutex::new(Vec::new())),
            }
        })
        .collect();
    println!(
        "# {} over {} days compressed {c}x ({:.0} s): idle timeout {idle} ms, cold start {cold} ms, service {service} ms; scored after day {}",
        args.shape,
        args.days,
        (args.days * DAY / c) as f64 / 1000.0,
        args.learn_days
    );
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let t0 = Instant::now();
    let score_from = args.learn_days * DAY;
    let mut pings_at_score: Vec<Option<u64>> = vec![None; runs.len()];
    let mut handles = Vec::new();
    for (i, &at) in arrivals.iter().enumerate() {
        if at >= score_from {
            for (k, r) in runs.iter().enumerate() {
                if pings_at_score[k].is_none() {
                    pings_at_score[k] = Some(prewarm_pings(r.sim));
                }
            }
        }
        let due = Duration::from_micros(at * 1000 / c);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        for r in &runs {
            let (gw, seen) = (r.gw, r.seen.clone());
            handles.push(std::thread::spawn(move || {
                let (status, cold, _) = ask(gw, "POST", "/v1/chat/completions", body);
                seen.lock().unwrap().push((i, cold, status));
            }));
        }
    }
    let end = Duration::from_micros(args.days * DAY * 1000 / c);
    if let Some(wait) = end.checked_sub(t0.elapsed()) {
        std::thread::sleep(wait);
    }
    for h in handles {
        let _ = h.join();
    }
    let first_scored = arrivals.iter().position(|&t| t >= score_from).unwrap_or(0);
    let days = (args.days - args.learn_days) as f64;
    println!(
        "{:<9} {:>8} {:>10} {:>8}",
        "policy", "cold %", "pings/day", "errors"
    );
    for (k, r) in runs.iter().enumerate() {
        let seen = r.seen.lock().unwrap();
        let scored: Vec<_> = seen.iter().filter(|(i, _, _)| *i >= first_scored).collect();
        let cold = scored.iter().filter(|(_, c, _)| *c).count();
        let errors = scored.iter().filter(|(_, _, s)| *s != 200).count();
        let pings = prewarm_pings(r.sim) - pings_at_score[k].unwrap_or(0);
        println!(
            "{:<9} {:>8.2} {:>10.1} {:>8}",
            r.name,
            100.0 * cold as f64 / scored.len().max(1) as f64,
            pings as f64 / days,
            errors
        );
        println!(
            "E2E policy={} shape={} cold_pct={:.2} pings_per_day={:.1}",
            r.name,
            args.shape,
            100.0 * cold as f64 / scored.len().max(1) as f64,
            pings as f64 / days
        );
    }
}
