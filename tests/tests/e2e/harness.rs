//! The test harness: starts the real `skygate` binary and `skygate sim`
//! backends as processes on free ports, and talks plain HTTP/1.1 to them.
//!
//! `SKYGATE_BIN` points at a prebuilt binary (the test script sets it);
//! without it the harness builds `skygate` once per test process.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `skygate` binary under test.
pub fn bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("SKYGATE_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "skygate", "--bin", "skygate"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building skygate failed");
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/e2e-xxxx → target/<profile>/skygate
        exe.parent()
            .and_then(|p| p.parent())
            .expect("target dir")
            .join("skygate")
    })
    .clone()
}

/// A free loopback port for a child process to take. Drawn at random from
/// 15000–29999, below the kernel's ephemeral range: ports from `bind(0)`
/// are reused soon after release, and parallel tests then collide.
pub fn free_addr() -> SocketAddr {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        let port = 15000 + (h.finish() % 15000) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("addr");
        }
    }
}

/// A child process that is killed when dropped; its output is collected.
pub struct Proc {
    child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd`, collecting its output.
    pub fn spawn_cmd(cmd: Command) -> Self {
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = |r: Box<dyn Read + Send>, sink: Arc<Mutex<String>>| {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        };
        pipe(Box::new(child.stdout.take().unwrap()), stdout.clone());
        pipe(Box::new(child.stderr.take().unwrap()), stderr.clone());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulated backend process.
pub struct Sim {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub url: String,
}

impl Sim {
    pub fn start(name: &str, flags: &[&str]) -> Sim {
        let mut cmd = Command::new(bin());
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--name", name])
            .args(flags);
        let proc = Proc::spawn(cmd);
        let start = Instant::now();
        loop {
            let out = proc.stdout();
            if let Some(addr) = out.lines().find_map(|l| {
                l.rsplit_once("listening on ")
                    .map(|(_, a)| a.trim().to_string())
            }) {
                let addr: SocketAddr = addr.parse().expect("sim addr");
                return Sim {
                    proc,
                    addr,
                    url: format!("http://{addr}"),
                };
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sim did not start: {}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the sim received (newest last).
    pub fn requests(&self) -> Vec<Value> {
        let r = call(self.addr, "GET", "/_sim/requests", &[], b"");
        serde_json::from_slice::<Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn stats(&self) -> Value {
        call(self.addr, "GET", "/_sim/stats", &[], b"").json()
    }

    /// Changes behaviour or faults while it runs.
    pub fn set(&self, patch: Value) {
        let r = call(
            self.addr,
            "POST",
            "/_sim/config",
            &[],
            patch.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// A running gateway process.
pub struct Gateway {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// This gateway's own admin token: it tells the harness it reached
    /// this gateway and not another test's on a recycled port.
    pub admin_token: String,
    pub config_path: PathBuf,
    /// The `listen`/`admin`/`server` lines the harness put before the body.
    head: String,
    _dir: TempDir,
}

pub const CLIENT_KEY: &str = "sk-test-client-key";

impl Gateway {
    /// Starts the gateway on `body`: the config after `listen` and `admin`,
    /// which the harness fills in with free ports.
    pub fn start(body: &str) -> Gateway {
        Self::start_with_env(body, &[])
    }

    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        for _ in 0..5 {
            let addr = free_addr();
            // Two draws can meet (1 in 15 000): the config would refuse it.
            let admin = std::iter::repeat_with(free_addr)
                .find(|a| *a != addr)
                .expect("another port");
            let dir = TempDir::new();
            let config_path = dir.path.join("skygate.yaml");
            let admin_token = format!(
                "test-admin-{}",
                dir.path.file_name().unwrap().to_string_lossy()
            );
            // A test may bring its own `server:` section.
            let server = if body.starts_with("server:") || body.contains("\nserver:") {
                ""
            } else {
                "server: { threads: 2, grace_period: 5s }\n"
            };
            let head = format!(
                "listen: {addr}\nadmin: {{ listen: {admin}, token: {admin_token} }}\n{server}"
            );
            let text = format!("{head}{body}");
            std::fs::write(&config_path, text).unwrap();
            let mut cmd = Command::new(bin());
            cmd.args(["run", "--config"]).arg(&config_path);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut proc = Proc::spawn(cmd);
            let start = Instant::now();
            loop {
                let auth = format!("Bearer {admin_token}");
                let ours = || {
                    try_call(admin, "GET", "/metrics", &[("authorization", &auth)], b"")
                        .is_ok_and(|r| r.status == 200)
                };
                if try_call(admin, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
                    && ours()
                {
                    return Gateway {
                        proc,
                        addr,
                        admin,
                        admin_token,
                        config_path,
                        head,
                        _dir: dir,
                    };
                }
                if proc.wait_exit(Duration::from_millis(0)).is_some() {
                    // Lost a port race: try other ports.
                    assert!(
                        proc.stderr().contains("cannot listen"),
                        "gateway exited: {}",
                        proc.stderr()
                    );
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "gateway not ready: {}",
                    proc.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start the gateway on free ports");
    }

    /// A client call with the test API key.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        call(
            self.addr,
            "POST",
            path,
            &[
                ("authorization", &format!("Bearer {CLIENT_KEY}")),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// A minimal chat request for `model` with the test API key.
    pub fn chat(&self, model: &str) -> Resp {
        self.post(
            "/v1/chat/completions",
            &serde_json::json!({"model": model, "messages": []}),
        )
    }

    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        call(self.addr, method, path, headers, body)
    }

    /// An admin call with this gateway's token.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Resp {
        let auth = format!("Bearer {}", self.admin_token);
        call(
            self.admin,
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// Rewrites the config file with a new body (same listeners and token),
    /// for a reload.
    pub fn rewrite_config(&self, body: &str) {
        std::fs::write(&self.config_path, format!("{}{body}", self.head)).unwrap();
    }

    /// The backend's entry in `GET /admin/backends`.
    pub fn backend_status(&self, name: &str) -> Value {
        let r = self.admin("GET", "/admin/backends", "");
        let v = r.json();
        v["backends"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /admin/backends: {} {}", r.status, r.text()))
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no backend {name} in {v}"))
    }

    pub fn admin_get(&self, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        call(self.admin, "GET", path, &headers, b"")
    }

    /// A metric's value now (`name` with its labels, e.g.
    /// `skygate_redis_up` or `skygate_requests_total{...}`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.admin("GET", "/metrics", "").text(), name)
    }

    /// Access-log lines (JSON objects) so far, waiting briefly for `n` of them.
    pub fn access_log(&self, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let lines: Vec<Value> = self
                .proc
                .stdout()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= n || start.elapsed() > Duration::from_secs(5) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `f` on `threads` threads until `stop` returns true, collecting what
/// each call returned: a steady load while a test changes things.
pub fn load<T: Send + 'static>(
    threads: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    f: impl Fn() -> T + Send + Sync + 'static,
) -> std::thread::JoinHandle<Vec<T>> {
    let f = Arc::new(f);
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (f, stop) = (f.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        out.push(f());
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// A backend over a raw socket, for answers the simulator cannot shape
/// (interim responses, a mixed-case header, an odd reason phrase): each
/// connection's request is read whole (its head, then `content-length`
/// bytes), `answer` is written, and the connection is closed.
pub fn raw_backend(answer: impl Fn() -> Vec<u8> + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            let whole = loop {
                let Ok(n) = c.read(&mut buf) else { break false };
                if n == 0 {
                    break false;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if got.len() >= end + 4 + len {
                        break true;
                    }
                }
            };
            if whole {
                let _ = c.write_all(&answer());
            }
        }
    });
    addr
}

/// Polls `f` until it returns true, at most `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The config most tests need: the test API key, one `openai` backend `s` at
/// `url` (`backend_extra` goes inside its mapping, e.g. `timeouts: { idle: 1s }`)
/// and a route `chat` serving model `m` from it.
pub fn one_backend(url: &str, backend_extra: &str) -> String {
    let extra = if backend_extra.is_empty() {
        String::new()
    } else {
        format!(", {backend_extra}")
    };
    format!(
        "{auth}backends:\n  s: {{ kind: openai, url: \"{url}/v1\"{extra} }}\nroutes:\n  chat: {{ match: {{ path: /v1/chat/completions, models: [m] }}, targets: [ {{ backend: s }} ] }}\n",
        auth = auth_section()
    )
}

/// The auth section every test config uses.
pub fn auth_section() -> String {
    format!("auth:\n  api_keys:\n    - {{ key: {CLIENT_KEY}, principal: tester }}\n")
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("skygate-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A response, with each body chunk's arrival time (for streaming tests).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunks: Vec<(Instant, Vec<u8>)>,
    /// The body ended cleanly (length reached or last chunk seen).
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an OpenAI-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert!(self.header("x-request-id").is_some());
        assert_eq!(
            self.header("x-skygate-cache"),
            Some("bypass"),
            "errors are never cached"
        );
    }
}

pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_call(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on a new connection (the write of a large body may fail when
/// the server answers early, as with 413: the response is still read).
pub fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let _ = s.write_all(body);
    read_response(&mut s)
}

pub fn read_response<R: Read>(s: &mut R) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    let (status, headers, mut rest) = loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(len) = r
            .parse(&buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?
        {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (r.code.unwrap_or(0), headers, buf[len..].to_vec());
        }
    };
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut resp = Resp {
        status,
        headers: headers.clone(),
        body: Vec::new(),
        chunks: Vec::new(),
        complete: false,
    };
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < len {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        resp.complete = rest.len() >= len;
        rest.truncate(len);
        resp.chunks.push((Instant::now(), rest.clone()));
        resp.body = rest;
        return Ok(resp);
    }
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Decode chunk by chunk, stamping each as it completes.
        loop {
            while !rest.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut tmp).unwrap_or(0);
                if n == 0 {
                    return Ok(resp);
                }
                rest.extend_from_slice(&tmp[..n]);
            }
            let i = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..i]).unwrap().trim(), 16).unwrap();
            rest.drain(..i + 2);
            while rest.len() < size + 2 {
                let n = s.read(&mut tmp).unwrap_or(0);
                if n == 0 {
                    return Ok(resp);
                }
                rest.extend_from_slice(&tmp[..n]);
            }
            if size == 0 {
                resp.complete = true;
                return Ok(resp);
            }
            let data: Vec<u8> = rest.drain(..size).collect();
            rest.drain(..2);
            resp.body.extend_from_slice(&data);
            resp.chunks.push((Instant::now(), data));
        }
    }
    // Until close.
    loop {
        let n = s.read(&mut tmp).unwrap_or(0);
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&tmp[..n]);
    }
    resp.body = rest;
    resp.complete = true;
    Ok(resp)
}

/// A finished child's stdout and stderr, as one text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// A real `redis-server` on a free loopback port, nothing kept on disk;
/// killed when dropped. `kill` and `restart` (same port) play an outage.
pub struct RedisServer {
    proc: Option<Proc>,
    pub port: u16,
    pub url: String,
    extra: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// With extra `redis-server` flags (e.g. for a cluster node).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = free_addr().port();
            let mut r = RedisServer {
                proc: None,
                port,
                url: format!("redis://127.0.0.1:{port}"),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                dir: TempDir::new(),
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.path)
            .args(&self.extra);
        let mut proc = Proc::spawn(cmd);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.try_cli(&["PING"]).is_some_and(|o| o.trim() == "PONG") {
                self.proc = Some(proc);
                return true;
            }
            if proc.wait_exit(Duration::from_millis(20)).is_some() {
                return false; // port taken meanwhile
            }
        }
        panic!("redis-server did not start: {}", proc.stdout());
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.proc.as_ref().expect("running").signal("STOP");
    }

    /// Thaws a paused server.
    pub fn resume(&self) {
        self.proc.as_ref().expect("running").signal("CONT");
    }

    /// Starts it again on the same port (empty: nothing was kept).
    pub fn restart(&mut self) {
        assert!(self.spawn(), "redis-server did not come back on its port");
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `redis-cli` command's output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).expect("redis-cli")
    }
}

/// A three-node Redis Cluster (no replicas), made as an operator would:
/// `redis-server --cluster-enabled yes`, then `redis-cli --cluster create`.
pub fn redis_cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        })
        .collect();
    let mut cmd = Command::new("redis-cli");
    cmd.arg("--cluster").arg("create");
    for n in &nodes {
        cmd.arg(format!("127.0.0.1:{}", n.port));
    }
    let out = cmd
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        eventually(Duration::from_secs(20), || nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))),
        "the cluster did not settle"
    );
    nodes
}

/// `skygate demo` on free ports, once `/readyz` says ready.
pub struct Demo {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Demo {
    /// With `extra` flags after the listeners (e.g. `--redis URL`).
    pub fn start(extra: &[&str]) -> Demo {
        let (addr, admin) = (free_addr(), free_addr());
        let mut cmd = Command::new(bin());
        cmd.args([
            "demo",
            "--listen",
            &addr.to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args(extra);
        let proc = Proc::spawn(cmd);
        let ready = || try_call(admin, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
        assert!(
            eventually(Duration::from_secs(20), ready),
            "demo not ready: {}",
            proc.stderr()
        );
        Demo { proc, addr, admin }
    }

    /// A metric's value (the demo's admin token).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let r = try_call(
            self.admin,
            "GET",
            "/metrics",
            &[("authorization", "Bearer skygate-demo-admin")],
            b"",
        )
        .ok()?;
        metric(&r.text(), name)
    }
}

/// A metric's value in `/metrics` text (the first line that starts with
/// `name` and its labels, e.g. `skygate_redis_up`).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
