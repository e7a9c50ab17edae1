//! The load harness: one run measures the simulator directly, through Skygate
//! and (when installed) through nginx, under the same load, and prints
//! throughput, p50/p99, CPU time per request, RSS, and the ratios.
//!
//!     cargo build --release -p skygate -p skygate-benches && target/release/loadbench
//!
//! Needs `wrk` (Debian package `wrk`); nginx (package `nginx-light`) is optional.

// A benchmark driver: it stops with a message when its tools misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Connections for the throughput runs.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Proxy worker threads (Skygate threads, nginx worker processes).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Skip nginx even when it is installed.
    #[arg(long)]
    no_nginx: bool,
    /// Another skygate binary (e.g. the previous commit's) measured in the
    /// same run on the same config, as the row `skygate-before`.
    #[arg(long)]
    before: Option<PathBuf>,
    /// Skip the scenario that loses one of three clouds under load.
    #[arg(long)]
    no_outage: bool,
    /// Measured runs per target, taken in interleaved rounds (every target
    /// once, then again): a slow spell of this noisy machine touches every
    /// target alike, and each row is its round with the median CPU per
    /// request (the upper of the two middle ones for an even count).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
}

const KEY: &str = "sk-bench-client-key";

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} did not open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// utime + stime of a process and its children threads, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clk_tck()
}

fn clk_tck() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: f64,
    /// Non-2xx answers plus socket errors (connect, read, write, timeout).
    errors: f64,
}

fn parse_latency(v: &str) -> f64 {
    let v = v.trim();
    for (unit, mult) in [("us", 1.0), ("ms", 1000.0), ("s", 1_000_000.0)] {
        if let Some(n) = v.strip_suffix(unit) {
            return n.parse::<f64>().unwrap_or(0.0) * mult;
        }
    }
    0.0
}

fn wrk(script: &Path, url: &str, connections: u32, secs: u64) -> Run {
    let run = wrk_run(script, url, connections, secs);
    assert!(
        run.errors == 0.0,
        "wrk saw {} errors against {url}",
        run.errors
    );
    run
}

fn wrk_run(script: &Path, url: &str, connections: u32, secs: u64) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut run = Run::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            run.p50_us = parse_latency(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            run.p99_us = parse_latency(v);
        } else if l.contains("requests in") {
            run.requests = l
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            run.errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    assert!(
        run.requests > 0.0,
        "wrk made no requests against {url}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// Time to the first body byte of a streamed chat, median over `n` requests.
fn sse_first_byte_us(addr: SocketAddr, n: usize) -> f64 {
    let body = r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let start = Instant::now();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        // First SSE event: the first "data:" after the header block.
        loop {
            let k = s.read(&mut tmp).unwrap();
            assert!(k > 0, "closed before the first event");
            buf.extend_from_slice(&tmp[..k]);
            if buf.windows(5).any(|w| w == b"data:") {
                break;
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        let _ = s.read_to_end(&mut buf);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn main() {
    let args = Args::parse();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("skygate-loadbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("skygate");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p skygate"
    );

    // The simulator: warm (no cold starts), 16-token answers, no delay.
    let mut sim = Command::new(&bin)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "bench",
            "--tokens",
            "16",
            "--max-instances",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sim_addr: SocketAddr = line
        .rsplit_once("listening on ")
        .unwrap()
        .1
        .trim()
        .parse()
        .unwrap();
    let sim = Proc(sim);

    // Skygate: API-key auth, model routing, access log off (as nginx below).
    let (gw_addr, gw_admin) = (free_addr(), free_addr());
    let config = dir.join("skygate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {gw_addr}\nadmin: {{ listen: {gw_admin}, token: bench-admin-token }}\nserver: {{ threads: {t}, access_log: off }}\n\
             auth:\n  api_keys:\n    - {{ key: {KEY}, principal: bench }}\n\
             backends:\n  sim: {{ kind: openai, url: \"http://{sim_addr}/v1\" }}\n\
             routes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [bench] }}, targets: [ {{ backend: sim }} ] }}\n",
            t = args.threads
        ),
    )
    .unwrap();
    let gw = run_skygate(&bin, &config, gw_addr);

    // The same, with zero trust on: the key's principal in tenant t7 and
    // group g1, a 50-policy Cedar set, one audit line per request to a file.
    let policy_file = dir.join("bench.cedar");
    std::fs::write(&policy_file, skygate_benches::fifty_policies()).unwrap();
    let base = std::fs::read_to_string(&config).unwrap();
    let listeners = (gw_addr, gw_admin);
    let (policy_addr, with_policy) = start_copy(&bin, &dir, &base, listeners, |text| {
        text.replace(
            "principal: bench }",
            "principal: bench, tenant: t7, groups: [g1] }",
        ) + &format!(
            "policy:\n  files: [ \"{}\" ]\n  audit_log: \"{}\"\n",
            policy_file.display(),
            dir.join("audit.jsonl").display()
        )
    });

    // The same, with rate limits: two in memory; two and five in Redis
    // (started here when `redis-server` is installed). Request limits are
    // far above the load so nothing is refused; token limits settle.
    let variant = |extra: &str| start_copy(&bin, &dir, &base, listeners, |text| text + extra);
    const TWO: &str = "  - { name: rpm, requests_per_minute: 1000000000 }\n  - { name: tpm, per: global, tokens_per_minute: 1000000000000 }\n";
    const FIVE: &str = "  - { name: rps, requests_per_second: 1000000 }\n  - { name: rph, per: global, requests_per_hour: 1000000000000 }\n  - { name: concurrent, concurrency: 1000 }\n";
    let limits_local = variant(&format!(
        "limits:\n{}",
        TWO.replace(" }", ", store: local }")
    ));
    let redis_port = free_addr().port();
    let redis = which("redis-server").then(|| {
        let p = Proc(
            Command::new("redis-server")
                .args([
                    "--port",
                    &redis_port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(SocketAddr::from(([127, 0, 0, 1], redis_port)));
        p
    });
    let state = format!("state: {{ redis: \"redis://127.0.0.1:{redis_port}\" }}\n");
    let limits_redis = redis
        .as_ref()
        .map(|_| variant(&format!("{state}limits:\n{TWO}")));
    let limits_redis5 = redis
        .as_ref()
        .map(|_| variant(&format!("{state}limits:\n{TWO}{FIVE}")));

    // The same, with the route cached: every measured request is a hit
    // (the warm-up run stores the one answer).
    let cache_hit = start_copy(&bin, &dir, &base, listeners, |text| {
        text.replace(
            "targets: [ { backend: sim } ] }",
            "targets: [ { backend: sim } ], cache: { ttl: 1h } }",
        )
    });

    // The same with the access log on: stdout into a pipe this process
    // drains, as a container runtime or a log shipper would.
    let (log_addr, with_log) = start_copy_with(&bin, &dir, &base, listeners, true, |text| {
        text.replace("access_log: off", "access_log: stdout")
    });

    // The full pipeline: API-key auth, a 20-policy Cedar set (audit log
    // off), two local rate limits, weighted routing over two backends with
    // breakers, access log and metrics on, the cache on and missing (each
    // request's body differs).
    let twenty = dir.join("twenty.cedar");
    std::fs::write(&twenty, skygate_benches::twenty_policies()).unwrap();
    let full_text = |text: String| {
        text.replace("access_log: off", "access_log: stdout")
            .replace(
                "principal: bench }",
                "principal: bench, tenant: t7, groups: [g1] }",
            )
            .replace(
                "backends:\n",
                &format!("backends:\n  sim2: {{ kind: openai, url: \"http://{sim_addr}/v1\", breaker: {{ consecutive_failures: 5 }} }}\n"),
            )
            .replace(
                "targets: [ { backend: sim } ] }",
                "targets: [ { backend: sim, weight: 50 }, { backend: sim2, weight: 50 } ], cache: { ttl: 1h } }",
            )
            + &format!(
                "policy:\n  files: [ \"{}\" ]\n  audit_log: off\nlimits:\n{}",
                twenty.display(),
                TWO.replace(" }", ", store: local }")
            )
    };
    let (full_addr, full) = start_copy_with(&bin, &dir, &base, listeners, true, full_text);
    // The same with a full in-memory tier (4 MiB: the warm-up fills it),
    // as a cache that misses is in its steady state.
    let (full_tier_addr, full_tier) = start_copy_with(&bin, &dir, &base, listeners, true, |t| {
        "cache: { memory: 4MiB }\n".to_string() + &full_text(t)
    });

    // The same config on another skygate binary, for a before/after ratio.
    let before = args
        .before
        .as_ref()
        .map(|path| start_copy(path, &dir, &base, listeners, |text| text));

    // nginx, plain reverse proxy with upstream keepalive.
    let nginx_addr = free_addr();
    let nginx = (!args.no_nginx && Path::new("/usr/sbin/nginx").exists()).then(|| {
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes {t};\ndaemon off;\npid {pid};\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 upstream sim {{ server {sim_addr}; keepalive 128; }}\n\
                 server {{ listen {nginx_addr}; client_max_body_size 8m;\n\
                 location / {{ proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
                t = args.threads,
                pid = dir.join("nginx.pid").display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let p = Proc(Command::new("/usr/sbin/nginx").arg("-c").arg(&conf).arg("-e").arg("stderr").stderr(Stdio::null()).spawn().unwrap());
        wait_port(nginx_addr);
        p
    });

    // Pingora's stock proxy path, as the framework's floor.
    let base_addr = free_addr();
    let base_bin = bin.with_file_name("pingora-baseline");
    let baseline = base_bin.exists().then(|| {
        let p = Proc(
            Command::new(&base_bin)
                .args([
                    base_addr.to_string(),
                    sim_addr.to_string(),
                    args.threads.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(base_addr);
        p
    });

    // Each request a different body (a cache miss every time): a new nonce
    // per wrk run, a counter per request.
    let nonce = std::cell::Cell::new(0u64);
    let varying = || -> PathBuf {
        nonce.set(nonce.get() + 1);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                + u128::from(nonce.get())
        );
        let path = dir.join(format!("chat-varying-{}.lua", nonce.get()));
        std::fs::write(
            &path,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\n\
                 local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(nil, nil, nil, '{{\"model\":\"bench\",\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello to the gateway benchmark {tag}-' .. n .. '.\"}}]}}')\nend\n"
            ),
        )
        .unwrap();
        path
    };
    let script = dir.join("chat.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"model\":\"bench\",\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello to the gateway benchmark.\"}}]}}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\n"
        ),
    )
    .unwrap();

    let gw_pid = gw.0.id();
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = rss_mib(gw_pid);
    let url = |a: SocketAddr| format!("http://{a}/v1/chat/completions");
    let pids_of = |p: &Proc| {
        let mut v = vec![p.0.id()];
        v.extend(children(p.0.id()));
        v
    };

    // Throughput and CPU per request, each target warmed first.
    let mut rows = Vec::new();
    let mut targets: Vec<(&str, SocketAddr, Vec<u32>)> = vec![
        ("direct", sim_addr, vec![]),
        ("skygate", gw_addr, vec![gw_pid]),
        ("skygate+access_log", log_addr, vec![with_log.0.id()]),
        ("skygate-full", full_addr, vec![full.0.id()]),
        (
            "skygate-full(tier full)",
            full_tier_addr,
            vec![full_tier.0.id()],
        ),
        ("skygate+policy", policy_addr, vec![with_policy.0.id()]),
        (
            "skygate+limits(local,2)",
            limits_local.0,
            vec![limits_local.1 .0.id()],
        ),
    ];
    targets.push(("skygate+cache(hit)", cache_hit.0, vec![cache_hit.1 .0.id()]));
    if let Some((addr, p)) = &limits_redis {
        targets.push(("skygate+limits(redis,2)", *addr, vec![p.0.id()]));
    }
    if let Some((addr, p)) = &limits_redis5 {
        targets.push(("skygate+limits(redis,5)", *addr, vec![p.0.id()]));
    }
    if let Some((addr, p)) = &before {
        targets.push(("skygate-before", *addr, vec![p.0.id()]));
    }
    if let Some(b) = &baseline {
        targets.push(("pingora-stock", base_addr, vec![b.0.id()]));
    }
    if let Some(n) = &nginx {
        targets.push(("nginx", nginx_addr, pids_of(n)));
    }
    let script_for = |name: &str| {
        if name.starts_with("skygate-full") {
            varying()
        } else {
            script.clone()
        }
    };
    for (name, addr, _) in &targets {
        wrk(&script_for(name), &url(*addr), args.connections, 2);
    }
    // (run, proxy CPU µs/req, simulator CPU µs/req) of each round.
    let mut rounds: Vec<Vec<(Run, f64, f64)>> = vec![Vec::new(); targets.len()];
    for _ in 0..args.rounds {
        for ((name, addr, pids), measured) in targets.iter().zip(&mut rounds) {
            let cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
            let sim0 = cpu_seconds(sim.0.id());
            let run = wrk(
                &script_for(name),
                &url(*addr),
                args.connections,
                args.duration,
            );
            let cpu = pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu0;
            let sim_cpu = cpu_seconds(sim.0.id()) - sim0;
            measured.push((run, cpu / run.requests * 1e6, sim_cpu / run.requests * 1e6));
        }
    }
    for ((name, addr, _), measured) in targets.iter().zip(&rounds) {
        let mut sorted = measured.clone();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (run, cpu, sim_cpu) = sorted[sorted.len() / 2];
        let one = wrk(&script_for(name), &url(*addr), 1, args.duration.min(5));
        rows.push((*name, run, cpu, sim_cpu, one));
    }
    let rss_load = rss_mib(gw_pid);
    // Round trips to Redis per request: Redis' own count of socket reads
    // (`total_reads_processed`) over one connection's sequential requests,
    // for 2 and 5 limits (the token settle after each answer is one more).
    let redis_reads = |addr: SocketAddr| {
        let reads = || -> f64 {
            let out = Command::new("redis-cli")
                .args(["-p", &redis_port.to_string(), "INFO", "stats"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("total_reads_processed:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let r0 = reads();
        let run = wrk(&script, &url(addr), 1, 3);
        // The settles are spawned after each answer: let the last land.
        std::thread::sleep(Duration::from_millis(200));
        (reads() - r0) / run.requests
    };
    let reads2 = limits_redis.as_ref().map(|(a, _)| redis_reads(*a));
    let reads5 = limits_redis5.as_ref().map(|(a, _)| redis_reads(*a));
    let ttfb_direct = sse_first_byte_us(sim_addr, 200);
    let ttfb_gw = sse_first_byte_us(gw_addr, 200);

    println!(
        "\n## Load: {} connections, {} s per run, {} rounds, proxy threads {}\n",
        args.connections, args.duration, args.rounds, args.threads
    );
    println!("| target | req/s | p50 µs | p99 µs | proxy CPU µs/req | sim CPU µs/req | 1-conn p50 µs | 1-conn p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, run, cpu, sim_cpu, one) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.0} | {:.0} |",
            run.rps,
            run.p50_us,
            run.p99_us,
            if *name == "direct" {
                "-".to_string()
            } else {
                format!("{cpu:.1}")
            },
            sim_cpu,
            one.p50_us,
            one.p99_us
        );
    }
    if args.rounds > 1 {
        println!(
            "\nEach row is the median of {} rounds; proxy CPU µs/req of every round, sorted:\n",
            args.rounds
        );
        println!("| target | proxy CPU µs/req, each round |\n|---|---|");
        for ((name, _, _), measured) in targets.iter().zip(&rounds).skip(1) {
            let mut each: Vec<f64> = measured.iter().map(|m| m.1).collect();
            each.sort_by(f64::total_cmp);
            let each: Vec<String> = each.iter().map(|c| format!("{c:.1}")).collect();
            println!("| {name} | {} |", each.join(", "));
        }
    }
    // A round's rows are taken minutes apart at most: the full pipeline
    // against stock Pingora round by round, as the machine's pace drifts.
    let of = |n: &str| {
        targets
            .iter()
            .position(|t| t.0 == n)
            .map(|i| rounds[i].iter().map(|m| m.1).collect::<Vec<f64>>())
    };
    let per_round: Vec<(&str, Vec<f64>)> = ["skygate-full", "skygate-full(tier full)"]
        .into_iter()
        .filter_map(|row| {
            let (f, pb) = (of(row)?, of("pingora-stock")?);
            let mut r: Vec<f64> = f.iter().zip(&pb).map(|(f, pb)| f / pb).collect();
            r.sort_by(f64::total_cmp);
            Some((row, r))
        })
        .collect();
    let get = |n: &str| rows.iter().find(|r| r.0 == n).copied();
    let (direct, sky) = (get("direct").unwrap(), get("skygate").unwrap());
    println!("\n| ratio | value |\n|---|---:|");
    println!(
        "| Skygate throughput / direct | {:.2} |",
        sky.1.rps / direct.1.rps
    );
    println!(
        "| Skygate added p50 at 1 connection | {:.0} µs |",
        sky.4.p50_us - direct.4.p50_us
    );
    println!(
        "| Skygate added p99 at 1 connection | {:.0} µs |",
        sky.4.p99_us - direct.4.p99_us
    );
    if let Some(ng) = get("nginx") {
        println!(
            "| Skygate throughput / nginx | {:.2} |",
            sky.1.rps / ng.1.rps
        );
        println!("| Skygate CPU per request / nginx | {:.2} |", sky.2 / ng.2);
        println!(
            "| nginx added p50 at 1 connection | {:.0} µs |",
            ng.4.p50_us - direct.4.p50_us
        );
    }
    if let Some(l) = get("skygate+access_log") {
        println!(
            "| access log on: CPU per request added | {:.1} µs ({:.2}×) |",
            l.2 - sky.2,
            l.2 / sky.2
        );
    }
    for (row, what, short) in [
        (
            "skygate-full",
            "full pipeline (auth, 20 policies, 2 local limits, weighted 2 backends, access log, metrics, cache missing)",
            "full pipeline",
        ),
        (
            "skygate-full(tier full)",
            "full pipeline, memory tier full (4 MiB)",
            "full pipeline, memory tier full:",
        ),
    ] {
        let Some(f) = get(row) else { continue };
        println!(
            "| {what}: CPU per request | {:.1} µs ({:.2}× plain Skygate) |",
            f.2,
            f.2 / sky.2
        );
        if let Some(pb) = get("pingora-stock") {
            println!(
                "| {short} CPU per request / Pingora stock proxy | {:.2} |",
                f.2 / pb.2
            );
        }
        if let Some((_, r)) = per_round.iter().find(|(n, _)| *n == row) {
            if r.len() > 1 {
                let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
                println!(
                    "| {short} CPU per request / Pingora stock proxy, each round (sorted) | {} |",
                    each.join(", ")
                );
            }
        }
    }
    if let Some(p) = get("skygate+policy") {
        println!(
            "| Skygate with 50 Cedar policies + audit log: CPU per request added | {:.1} µs ({:.2}×) |",
            p.2 - sky.2,
            p.2 / sky.2
        );
    }
    if let Some(l) = get("skygate+limits(local,2)") {
        println!(
            "| Skygate with 2 local limits: CPU per request added | {:.1} µs ({:.2}×) |",
            l.2 - sky.2,
            l.2 / sky.2
        );
    }
    if let Some(h) = get("skygate+cache(hit)") {
        println!(
            "| cache hits: throughput / proxied (Skygate) | {:.2} |",
            h.1.rps / sky.1.rps
        );
        println!(
            "| cache hits: throughput / direct (the simulator alone) | {:.2} |",
            h.1.rps / direct.1.rps
        );
        println!(
            "| cache hits: CPU per request / proxied | {:.1} µs / {:.1} µs |",
            h.2, sky.2
        );
        println!(
            "| cache hits: p50 at 1 connection / direct | {:.0} µs / {:.0} µs |",
            h.4.p50_us, direct.4.p50_us
        );
    }
    for (name, reads) in [
        ("skygate+limits(redis,2)", reads2),
        ("skygate+limits(redis,5)", reads5),
    ] {
        if let (Some(r), Some(l)) = (get(name), get("skygate+limits(local,2)")) {
            println!(
                "| {name}: throughput / local limits | {:.2} |",
                r.1.rps / l.1.rps
            );
            println!(
                "| {name}: throughput / no limits | {:.2} |",
                r.1.rps / sky.1.rps
            );
            println!(
                "| {name}: added p50 at 1 connection over local limits | {:.0} µs |",
                r.4.p50_us - l.4.p50_us
            );
        }
        if let Some(reads) = reads {
            println!(
                "| {name}: Redis socket reads per request (check + token settle) | {reads:.2} |"
            );
        }
    }
    if let Some(b) = get("skygate-before") {
        println!(
            "| Skygate CPU per request / skygate-before (same run) | {:.3} |",
            sky.2 / b.2
        );
    }
    if let Some(pb) = get("pingora-stock") {
        println!(
            "| Skygate CPU per request / Pingora stock proxy | {:.2} |",
            sky.2 / pb.2
        );
        if let Some(ng) = get("nginx") {
            println!(
                "| Pingora stock proxy CPU per request / nginx | {:.2} |",
                pb.2 / ng.2
            );
        }
    }
    println!("| SSE first event: direct / through Skygate (median of 200) | {ttfb_direct:.0} µs / {ttfb_gw:.0} µs (+{:.0} µs) |", ttfb_gw - ttfb_direct);
    println!("| Skygate RSS idle / after load | {rss_idle:.1} MiB / {rss_load:.1} MiB |");
    drop(before);
    drop(with_log);
    drop(full);
    drop(full_tier);
    drop(with_policy);
    drop(limits_local);
    drop(cache_hit);
    drop(limits_redis);
    drop(limits_redis5);
    drop(redis);
    drop(baseline);
    if let Some(n) = &nginx {
        // Workers outlive a SIGKILLed master (and hold our stdout open).
        for pid in children(n.0.id()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    drop(nginx);
    drop(gw);
    drop(sim);
    if !args.no_outage {
        outage(&bin, &dir, &script, &args);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bin run --config conf`, quiet, once it listens on `addr`.
fn run_skygate(bin: &Path, conf: &Path, addr: SocketAddr) -> Proc {
    run_skygate_with(bin, conf, addr, false)
}

/// The same; with `drained`, its stdout (the access log) goes to a pipe
/// that a thread of this process reads and discards.
fn run_skygate_with(bin: &Path, conf: &Path, addr: SocketAddr, drained: bool) -> Proc {
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(conf)
        .stdout(if drained {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(mut out) = child.stdout.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
    }
    let p = Proc(child);
    wait_port(addr);
    p
}

/// Another gateway on `base` (the main config, whose listeners are
/// `listeners`), moved to fresh listeners and changed by `edit`.
fn start_copy(
    bin: &Path,
    dir: &Path,
    base: &str,
    listeners: (SocketAddr, SocketAddr),
    edit: impl FnOnce(String) -> String,
) -> (SocketAddr, Proc) {
    start_copy_with(bin, dir, base, listeners, false, edit)
}

/// [`start_copy`], with its stdout drained (see [`run_skygate_with`]).
fn start_copy_with(
    bin: &Path,
    dir: &Path,
    base: &str,
    (addr, admin): (SocketAddr, SocketAddr),
    drained: bool,
    edit: impl FnOnce(String) -> String,
) -> (SocketAddr, Proc) {
    let new = free_addr();
    let text = base
        .replace(&addr.to_string(), &new.to_string())
        .replace(&admin.to_string(), &free_addr().to_string());
    let conf = dir.join(format!("skygate-{}.yaml", new.port()));
    std::fs::write(&conf, edit(text)).unwrap();
    (new, run_skygate_with(bin, &conf, new, drained))
}

/// Whether `cmd` is on the PATH.
fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Starts a simulator; returns its address and process.
fn start_sim(bin: &Path, name: &str, extra: &[&str]) -> (SocketAddr, Proc) {
    let mut child = Command::new(bin)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--tokens",
            "16",
            "--max-instances",
            "1000",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .rsplit_once("listening on ")
        .unwrap()
        .1
        .trim()
        .parse()
        .unwrap();
    (addr, Proc(child))
}

/// Losing one of three clouds under load: warm p99 first, then the same
/// load while one cloud is SIGKILLed, then while one hangs (the first-byte
/// timeout path). Target: no client-visible error, and p99 within the
/// first-byte timeout plus the warm p99.
fn outage(bin: &Path, dir: &Path, script: &Path, args: &Args) {
    const FIRST_BYTE_MS: u64 = 1000;
    let secs = args.duration.max(6);
    let mut rows = Vec::new();
    for scenario in ["warm", "one cloud killed", "one cloud hangs"] {
        let sims: Vec<(SocketAddr, Proc)> = ["aws", "azure", "gcp"]
            .iter()
            .map(|n| start_sim(bin, n, &[]))
            .collect();
        let (gw_addr, gw_admin) = (free_addr(), free_addr());
        let config = dir.join("outage.yaml");
        let backends: String = ["aws", "azure", "gcp"]
            .iter()
            .zip(&sims)
            .map(|(n, (a, _))| format!("  {n}: {{ kind: openai, url: \"http://{a}/v1\", timeouts: {{ connect: 500ms, first_byte: {FIRST_BYTE_MS}ms }} }}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "listen: {gw_addr}\nadmin: {{ listen: {gw_admin}, token: bench-admin-token }}\nserver: {{ threads: {t}, access_log: off }}\n\
                 auth:\n  api_keys:\n    - {{ key: {KEY}, principal: bench }}\n\
                 backends:\n{backends}\
                 routes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [bench] }}, targets: [ {{ backend: aws }}, {{ backend: azure }}, {{ backend: gcp }} ] }}\n",
                t = args.threads
            ),
        )
        .unwrap();
        let gw = run_skygate(bin, &config, gw_addr);
        let url = format!("http://{gw_addr}/v1/chat/completions");
        wrk(script, &url, args.connections, 2);
        let mut sims = sims;
        let victim = sims[0].0;
        let fault = std::thread::spawn({
            let scenario = scenario.to_string();
            let delay = Duration::from_secs(secs / 3);
            let pid = sims[0].1 .0.id();
            move || {
                std::thread::sleep(delay);
                match scenario.as_str() {
                    "one cloud killed" => {
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    }
                    "one cloud hangs" => {
                        let body = r#"{"hang_rate":1.0}"#;
                        if let Ok(mut s) = TcpStream::connect(victim) {
                            let _ = write!(s, "POST /_sim/config HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                            let mut sink = Vec::new();
                            let _ = s.read_to_end(&mut sink);
                        }
                    }
                    _ => {}
                }
            }
        });
        let run = wrk_run(script, &url, args.connections, secs);
        let _ = fault.join();
        rows.push((scenario, run));
        drop(gw);
        sims.clear();
    }
    let warm = rows[0].1;
    println!("\n## Losing one of three clouds under load ({} connections, {secs} s, fault at {} s, first_byte {FIRST_BYTE_MS} ms)\n", args.connections, secs / 3);
    println!("| scenario | requests | client errors | req/s | p50 µs | p99 µs | p99 budget (first_byte + warm p99) µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, run) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            run.requests,
            run.errors,
            run.rps,
            run.p50_us,
            run.p99_us,
            FIRST_BYTE_MS as f64 * 1000.0 + warm.p99_us
        );
    }
}
