//! Time to the first token through Skygate: a streamed chat to a Bedrock
//! backend (ConverseStream's event stream translated to SSE) against the
//! same stream from an OpenAI backend (SSE passed through), in the same
//! run, on the same simulator settings. Prints each side's median and p90
//! time from the request's last byte to the first content chunk, and the
//! difference (the issue's target: within 0.2 ms).
//!
//!     cargo build --release -p skygate -p skygate-benches && target/release/ttft

// A benchmark driver: it stops with a message when its tools misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use skygate_benches::Kill;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Streamed requests per side (alternating sides).
    #[arg(long, default_value_t = 400)]
    requests: usize,
}

fn free_port() -> SocketAddr {
    skygate_benches::free_port().unwrap()
}

fn sim(bin: &std::path::Path, platform: &str) -> (Kill, String) {
    let mut child = Command::new(bin)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--name",
            platform,
            "--platform",
            platform,
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
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .rsplit("listening on ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    (Kill(child), format!("http://{addr}"))
}

/// One streamed request on a fresh connection; the time from the request's
/// last byte to the first `"content"` delta.
fn first_token(gw: SocketAddr, model: &str) -> Duration {
    let body = format!(
        r#"{{"model":"{model}","stream":true,"max_tokens":8,"messages":[{{"role":"user","content":"hello"}}]}}"#
    );
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let sent = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended before a token: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(11).any(|w| w == b"\"content\":\"") && contains_token(&seen) {
            return sent.elapsed();
        }
    }
}

/// A content delta with text (not the role chunk's empty content).
fn contains_token(seen: &[u8]) -> bool {
    String::from_utf8_lossy(seen).contains("\"content\":\"serverless")
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[v.len() * 9 / 10]))
}

fn main() {
    let args = Args::parse();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("skygate");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p skygate"
    );
    let (_oa, oa_url) = sim(&bin, "openai");
    let (_br, br_url) = sim(&bin, "bedrock");
    let dir = std::env::temp_dir().join(format!("skygate-ttft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (gw, admin) = (free_port(), free_port());
    let config = format!(
        "listen: {gw}\nadmin: {{ listen: {admin} }}\nserver: {{ access_log: off }}\nbackends:\n  oa: {{ kind: openai, url: \"{oa_url}/v1\" }}\n  br: {{ kind: bedrock, region: us-east-1, endpoint: \"{br_url}\", model_id: \"amazon.nova-micro-v1:0\", credentials: {{ access_key_id: AKIDSKYGATESIM, secret_access_key: skygate-sim-secret-access-key }} }}\nroutes:\n  oa: {{ match: {{ path: /v1/chat/completions, models: [oa] }}, targets: [ {{ backend: oa }} ] }}\n  br: {{ match: {{ path: /v1/chat/completions, models: [br] }}, targets: [ {{ backend: br }} ] }}\n"
    );
    let path = dir.join("ttft.yaml");
    std::fs::write(&path, config).unwrap();
    let _gw = Kill(
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
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm both paths (instances, pools), then measure alternately.
    for _ in 0..50 {
        first_token(gw, "oa");
        first_token(gw, "br");
    }
    let (mut oa, mut br) = (Vec::new(), Vec::new());
    for _ in 0..args.requests {
        oa.push(first_token(gw, "oa"));
        br.push(first_token(gw, "br"));
    }
    let (oa50, oa90) = stats(oa);
    let (br50, br90) = stats(br);
    println!(
        "time to first token, {} streamed requests each, fresh client connection per request:",
        args.requests
    );
    println!(
        "  openai backend (SSE passed through)          median {oa50:.3} ms  p90 {oa90:.3} ms"
    );
    println!(
        "  bedrock backend (event stream -> SSE)        median {br50:.3} ms  p90 {br90:.3} ms"
    );
    println!(
        "  difference (bedrock - openai)                median {:+.3} ms  p90 {:+.3} ms",
        br50 - oa50,
        br90 - oa90
    );
    let _ = std::fs::remove_dir_all(&dir);
}
