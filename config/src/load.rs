//! The loader: YAML text → raw types → validated [`Config`], collecting every
//! error on the way (file, line, field path, what is wrong, what is allowed).

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::{line_of, render, Seg};
use crate::raw::*;
use crate::runtime::*;
use crate::Secret;
use serde::de::DeserializeOwned;
use serde_norway::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Reads and validates the config file at `path`, with `${VAR}` taken from the
/// process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str_in(&text, &file, &|name| std::env::var(name).ok(), &base)
}

/// Validates config `text`; `file` names it in errors; `env` resolves
/// `${VAR}`; relative file paths in it start at the current directory.
pub fn load_str(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load_str_in(text, file, env, Path::new(""))
}

/// [`load_str`], with relative file paths starting at `base`.
pub fn load_str_in(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        text,
        file,
        base,
        errors: Vec::new(),
    };
    let raw = cx.parse(env);
    let config = raw.and_then(|raw| cx.validate(raw));
    match config {
        Some(c) if cx.errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(cx.errors)),
    }
}

struct Cx<'a> {
    text: &'a str,
    file: &'a str,
    base: &'a Path,
    errors: Vec<ConfigError>,
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn path_of(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.extend_from_slice(more);
    p
}

impl Cx<'_> {
    fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: line_of(self.text, path),
            path: render(path),
            message: message.into(),
        });
    }

    fn parse(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Option<RawConfig> {
        let mut root: Value = match serde_norway::from_str(self.text) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(ConfigError {
                    file: self.file.to_string(),
                    line: e.location().map(|l| l.line()),
                    path: String::new(),
                    message: format!("not valid YAML: {e}"),
                });
                return None;
            }
        };
        self.substitute_env(&mut root, &mut Vec::new(), env);
        let Value::Mapping(top) = root else {
            self.err(&[], "the file must be a YAML mapping (top-level keys like `listen:`, `backends:`, `routes:`)");
            return None;
        };
        let mut raw = RawConfig::default();
        for (k, v) in top {
            let Some(k) = k.as_str().map(str::to_string) else {
                self.err(&[], "top-level keys must be strings");
                continue;
            };
            let p = vec![key(&k)];
            match k.as_str() {
                "listen" => raw.listen = self.de(v, &p),
                "server" => raw.server = self.de(v, &p),
                "admin" => raw.admin = self.de(v, &p),
                "auth" => raw.auth = self.de(v, &p),
                "backends" => {
                    if let Value::Mapping(m) = &v {
                        raw.backend_names = m
                            .keys()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect();
                    }
                    raw.backends = self.named_map(v, &p)
                }
                "routes" => raw.routes = self.named_map(v, &p),
                other => self.err(
                    &p,
                    format!(
                        "unknown field `{other}`, expected one of: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ),
            }
        }
        Some(raw)
    }

    /// A map of named entries, each deserialized on its own so that one bad
    /// entry does not hide the errors of the next.
    fn named_map<T: DeserializeOwned>(&mut self, v: Value, p: &[Seg]) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let Value::Mapping(m) = v else {
            self.err(p, "expected a mapping of names to entries");
            return out;
        };
        for (k, v) in m {
            let Some(name) = k.as_str().map(str::to_string) else {
                self.err(p, "entry names must be strings");
                continue;
            };
            if let Some(t) = self.de(v, &path_of(p, &[key(&name)])) {
                out.insert(name, t);
            }
        }
        out
    }

    fn de<T: DeserializeOwned>(&mut self, v: Value, p: &[Seg]) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(v) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut path = p.to_vec();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            path.push(Seg::Index(*index))
                        }
                        serde_path_to_error::Segment::Map { key: k } => path.push(key(k)),
                        serde_path_to_error::Segment::Enum { variant } => path.push(key(variant)),
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                self.err(&path, e.inner().to_string());
                None
            }
        }
    }

    fn substitute_env(
        &mut self,
        v: &mut Value,
        path: &mut Vec<Seg>,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        match v {
            Value::String(s) if s.contains('$') => match expand(s, env) {
                Ok(expanded) => *s = expanded,
                Err(msg) => self.err(path, msg),
            },
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    self.substitute_env(item, path, env);
                    path.pop();
                }
            }
            Value::Mapping(m) => {
                for (k, item) in m.iter_mut() {
                    path.push(key(k.as_str().unwrap_or("?")));
                    self.substitute_env(item, path, env);
                    path.pop();
                }
            }
            Value::Tagged(t) => self.substitute_env(&mut t.value, path, env),
            _ => {}
        }
    }

    fn validate(&mut self, raw: RawConfig) -> Option<Config> {
        let listen = match raw.listen {
            Some(l) => self.addr(&l, &[key("listen")]),
            None => {
                self.err(
                    &[key("listen")],
                    "missing: the proxy listener address, e.g. `listen: 127.0.0.1:8080`",
                );
                None
            }
        };
        let server = self.server(raw.server.unwrap_or_default());
        let admin = match raw.admin {
            Some(a) => {
                let p = [key("admin"), key("listen")];
                let listen = self.addr(&a.listen, &p);
                let token = a.token.map(Secret::new);
                if token.as_ref().is_some_and(|t| t.expose().len() < 8) {
                    self.err(
                        &[key("admin"), key("token")],
                        "too short: an admin token needs at least 8 characters",
                    );
                }
                listen.map(|listen| Admin { listen, token })
            }
            None => {
                self.err(
                    &[key("admin")],
                    "missing: `admin: { listen: 127.0.0.1:9090, token: ${SKYGATE_ADMIN_TOKEN} }`",
                );
                None
            }
        };
        let auth = self.auth(raw.auth.unwrap_or_default());

        let mut backends = Vec::new();
        let mut backend_index = HashMap::new();
        for (name, b) in raw.backends {
            if let Some(b) = self.backend(&name, b) {
                backend_index.insert(name, backends.len());
                backends.push(b);
            }
        }
        let mut routes: Vec<Route> = Vec::new();
        let had_routes = !raw.routes.is_empty();
        for (name, r) in raw.routes {
            if let Some(r) = self.route(&name, r, &backends, &backend_index, &raw.backend_names) {
                routes.push(r);
            }
        }
        if !had_routes {
            self.err(&[key("routes")], "missing: at least one route is needed");
        }
        self.check_overlaps(&routes);
        Some(Config {
            listen: listen?,
            server,
            admin: admin?,
            auth,
            backends,
            routes,
        })
    }

    fn addr(&mut self, s: &str, p: &[Seg]) -> Option<SocketAddr> {
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    p,
                    format!("`{s}` is not an address: use IP:PORT, e.g. 127.0.0.1:8080"),
                );
                None
            }
        }
    }

    /// A positive duration, or `default` when absent.
    fn duration(&mut self, s: Option<&Text>, default: Duration, p: &[Seg]) -> Duration {
        self.duration_from(s, default, p, false)
    }

    /// A duration (zero allowed when `zero_ok`), or `default` when absent.
    fn duration_from(
        &mut self,
        s: Option<&Text>,
        default: Duration,
        p: &[Seg],
        zero_ok: bool,
    ) -> Duration {
        match s.map(|t| parse_duration(&t.0)) {
            None => default,
            Some(Ok(d)) if zero_ok || !d.is_zero() => d,
            Some(Ok(_)) => {
                self.err(p, "must be greater than zero");
                default
            }
            Some(Err(msg)) => {
                self.err(p, msg);
                default
            }
        }
    }

    fn server(&mut self, s: RawServer) -> Server {
        let p = [key("server")];
        let threads = match s.threads {
            Some(0) => {
                self.err(&path_of(&p, &[key("threads")]), "must be at least 1");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let grace_period = self.duration(
            s.grace_period.as_ref(),
            Duration::from_secs(5),
            &path_of(&p, &[key("grace_period")]),
        );
        let drain_delay = self.duration_from(
            s.drain_delay.as_ref(),
            Duration::ZERO,
            &path_of(&p, &[key("drain_delay")]),
            true,
        );
        let access_log = match s.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some(other) => {
                self.err(
                    &path_of(&p, &[key("access_log")]),
                    format!("`{other}` is not allowed: use stdout or off"),
                );
                AccessLog::Stdout
            }
        };
        Server {
            threads,
            grace_period,
            drain_delay,
            access_log,
        }
    }

    fn auth(&mut self, a: RawAuth) -> Auth {
        let mut api_keys: Vec<ApiKey> = Vec::new();
        for (i, k) in a.api_keys.into_iter().enumerate() {
            let p = [key("auth"), key("api_keys"), Seg::Index(i)];
            if k.key.len() < 8 {
                self.err(
                    &path_of(&p, &[key("key")]),
                    "too short: an API key needs at least 8 characters",
                );
                continue;
            }
            if k.principal.is_empty() {
                self.err(&path_of(&p, &[key("principal")]), "must not be empty");
                continue;
            }
            if api_keys.iter().any(|o| o.key.expose() == k.key) {
                self.err(&path_of(&p, &[key("key")]), "the same key is listed twice");
                continue;
            }
            api_keys.push(ApiKey {
                key: Secret::new(k.key),
                principal: k.principal,
            });
        }
        Auth { api_keys }
    }

    fn backend(&mut self, name: &str, b: RawBackend) -> Option<Backend> {
        let p = vec![key("backends"), key(name)];
        let kind = BackendKind::parse(&b.kind);
        if kind.is_none() {
            self.err(
                &path_of(&p, &[key("kind")]),
                format!(
                    "`{}` is not a backend kind: use one of {}",
                    b.kind,
                    BackendKind::ALLOWED
                ),
            );
        }
        let url = match parse_endpoint(&b.url) {
            Ok(u) => Some(u),
            Err(msg) => {
                self.err(&path_of(&p, &[key("url")]), msg);
                None
            }
        };
        let header_name = b.api_key_header.as_deref().unwrap_or("authorization");
        let api_key_header = match http::HeaderName::from_bytes(header_name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    &path_of(&p, &[key("api_key_header")]),
                    format!("`{header_name}` is not a valid header name"),
                );
                None
            }
        };
        if b.api_key_header.is_some() && b.api_key.is_none() {
            self.err(
                &path_of(&p, &[key("api_key_header")]),
                "set without `api_key`: there is no key to send",
            );
        }
        let t = b.timeouts.unwrap_or_default();
        let tp = path_of(&p, &[key("timeouts")]);
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: self.duration(
                t.connect.as_ref(),
                d.connect,
                &path_of(&tp, &[key("connect")]),
            ),
            first_byte: self.duration(
                t.first_byte.as_ref(),
                d.first_byte,
                &path_of(&tp, &[key("first_byte")]),
            ),
            idle: self.duration(t.idle.as_ref(), d.idle, &path_of(&tp, &[key("idle")])),
            total: self.duration(t.total.as_ref(), d.total, &path_of(&tp, &[key("total")])),
        };
        let pool = b.pool.unwrap_or_default();
        let pool_idle_timeout = self.duration(
            pool.idle_timeout.as_ref(),
            Duration::from_secs(60),
            &path_of(&p, &[key("pool"), key("idle_timeout")]),
        );
        let tls_ca = match b.tls.and_then(|t| t.ca_file) {
            None => None,
            Some(f) => {
                let fp = path_of(&p, &[key("tls"), key("ca_file")]);
                if url.as_ref().is_some_and(|u| !u.tls) {
                    self.err(
                        &fp,
                        "set for an http:// backend: use an https:// url, or drop `tls`",
                    );
                }
                match read_ca_file(&self.base.join(&f)) {
                    Ok(certs) => Some(certs),
                    Err(why) => {
                        self.err(&fp, format!("`{f}`: {why}"));
                        None
                    }
                }
            }
        };
        Some(Backend {
            name: name.to_string(),
            kind: kind?,
            url: url?,
            api_key: b.api_key.map(Secret::new),
            api_key_header: api_key_header?,
            cloud: b.cloud,
            region: b.region,
            timeouts,
            pool_idle_timeout,
            tls_ca,
        })
    }

    fn route(
        &mut self,
        name: &str,
        r: RawRoute,
        backends: &[Backend],
        index: &HashMap<String, usize>,
        names: &[String],
    ) -> Option<Route> {
        let p = vec![key("routes"), key(name)];
        let mp = path_of(&p, &[key("match")]);
        let (path, operation) = match (r.matcher.path, r.matcher.path_prefix) {
            (Some(path), None) => {
                let op = Operation::of_openai_path(&path).unwrap_or(Operation::Function);
                if !path.starts_with('/') {
                    self.err(&path_of(&mp, &[key("path")]), "must start with `/`");
                }
                (PathMatch::Exact(path), op)
            }
            (None, Some(prefix)) => {
                if !prefix.starts_with('/') || prefix.len() < 2 {
                    self.err(
                        &path_of(&mp, &[key("path_prefix")]),
                        "must start with `/` and not be `/` alone",
                    );
                }
                if Operation::of_openai_path(&prefix).is_some() {
                    self.err(
                        &path_of(&mp, &[key("path_prefix")]),
                        "an OpenAI API path needs `path:`, not `path_prefix:`",
                    );
                }
                (
                    PathMatch::Prefix(prefix.trim_end_matches('/').to_string()),
                    Operation::Function,
                )
            }
            _ => {
                self.err(&mp, "give exactly one of `path` (exact) or `path_prefix`");
                return None;
            }
        };
        match operation {
            Operation::Function if !r.matcher.models.is_empty() => self.err(
                &path_of(&mp, &[key("models")]),
                "only the OpenAI API routes (/v1/chat/completions, /v1/embeddings) select by model",
            ),
            Operation::ChatCompletions | Operation::Embeddings if r.matcher.models.is_empty() => {
                self.err(
                    &path_of(&mp, &[key("models")]),
                    "missing: list the models this route serves",
                )
            }
            _ => {}
        }
        if r.targets.is_empty() {
            self.err(
                &path_of(&p, &[key("targets")]),
                "missing: at least one target is needed",
            );
        }
        let mut targets = Vec::new();
        for (i, t) in r.targets.iter().enumerate() {
            let tp = path_of(&p, &[key("targets"), Seg::Index(i)]);
            let Some(&bi) = index.get(&t.backend) else {
                if names.contains(&t.backend) {
                    // Defined, but its own entry has errors (reported there).
                    continue;
                }
                let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
                known.sort_unstable();
                self.err(
                    &path_of(&tp, &[key("backend")]),
                    format!(
                        "unknown backend `{}`: defined backends are [{}]",
                        t.backend,
                        known.join(", ")
                    ),
                );
                continue;
            };
            let kind = backends[bi].kind;
            let fits = matches!(
                (operation, kind),
                (Operation::Function, BackendKind::HttpFunction)
                    | (
                        Operation::ChatCompletions | Operation::Embeddings,
                        BackendKind::OpenAi
                    )
            );
            if !fits {
                self.err(
                    &path_of(&tp, &[key("backend")]),
                    format!(
                        "backend `{}` is of kind {} and cannot serve a {} route",
                        t.backend,
                        kind.as_str(),
                        operation.as_str()
                    ),
                );
                continue;
            }
            let weight = t.weight.unwrap_or(1);
            if weight > 10_000 {
                self.err(
                    &path_of(&tp, &[key("weight")]),
                    "must be between 0 and 10000",
                );
                continue;
            }
            targets.push(Target {
                backend: bi,
                weight,
            });
        }
        if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
            self.err(
                &path_of(&p, &[key("targets")]),
                "every weight is 0: at least one must be positive",
            );
        }
        let max_body = match r.max_body.as_ref().map(|t| parse_size(&t.0)) {
            None => DEFAULT_MAX_BODY,
            Some(Ok(n)) if n > 0 && n <= 1 << 30 => n,
            Some(Ok(_)) => {
                self.err(
                    &path_of(&p, &[key("max_body")]),
                    "must be between 1 byte and 1GiB",
                );
                DEFAULT_MAX_BODY
            }
            Some(Err(msg)) => {
                self.err(&path_of(&p, &[key("max_body")]), msg);
                DEFAULT_MAX_BODY
            }
        };
        Some(Route {
            name: name.to_string(),
            path,
            operation,
            models: r.matcher.models,
            targets,
            max_body,
        })
    }

    /// Two routes must never claim the same request.
    fn check_overlaps(&mut self, routes: &[Route]) {
        let mut seen: HashMap<(String, &str), &str> = HashMap::new();
        for r in routes {
            let path = match &r.path {
                PathMatch::Exact(p) => format!("={p}"),
                PathMatch::Prefix(p) => format!("^{p}"),
            };
            let models: Vec<&str> = if r.models.is_empty() {
                vec![""]
            } else {
                r.models.iter().map(String::as_str).collect()
            };
            for m in models {
                if let Some(other) = seen.insert((path.clone(), m), &r.name) {
                    let what = if m.is_empty() {
                        String::new()
                    } else {
                        format!(" for model `{m}`")
                    };
                    self.err(
                        &[key("routes"), key(&r.name), key("match")],
                        format!("claims the same requests as route `{other}`{what}: each request must match one route"),
                    );
                }
            }
        }
    }
}

/// Reads a PEM file of CA certificates into DER.
fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Expands `${VAR}` (and `$${` to a literal `${`).
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err("unclosed `${`: write `${NAME}`, or `$${` for a literal `${`".into());
            };
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a variable name: use letters, digits and `_`"
                ));
            }
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `250ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("`{s}` is not a duration: use a number and a unit (ms, s, m, h), e.g. 30s")
    })?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "`{s}` is not a duration: use a number and a unit (ms, s, m, h), e.g. 30s"
            ))
        }
    };
    Ok(d)
}

/// Parses `512`, `64KiB`, `8MiB`, `1GiB` (also KB, MB, GB as powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || {
        format!("`{s}` is not a size: use bytes or a unit (KiB, MiB, GiB, KB, MB, GB), e.g. 8MiB")
    };
    let n: usize = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| {
        format!("`{s}` is not a usable URL: {why} (e.g. https://models.example.com/v1)")
    };
    let uri: http::Uri = s.parse().map_err(|_| bad("it does not parse"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let host = uri.host().ok_or_else(|| bad("it has no host"))?;
    if uri.query().is_some() {
        return Err(bad("it must not have a query"));
    }
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Endpoint {
        tls,
        host,
        port,
        base_path: uri.path().trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-from-env-123".into()),
            "ADMIN" => Some("admin-token-1".into()),
            _ => None,
        }
    }

    const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090, token: "${ADMIN}" }
auth:
  api_keys:
    - { key: "${KEY}", principal: app }
backends:
  a:
    kind: openai
    url: http://127.0.0.1:9001/v1
    api_key: ${KEY}
    timeouts: { connect: 250ms, first_byte: 2s }
  f:
    kind: http_function
    url: https://fn.example.com/score
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m1, m2] }
    targets: [ { backend: a, weight: 3 } ]
    max_body: 1MiB
  score:
    match: { path_prefix: /fn/score/ }
    targets: [ { backend: f } ]
"#;

    #[test]
    fn loads_a_good_file() {
        let c = load_str(GOOD, "good.yaml", &env).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.admin.token.as_ref().unwrap().expose(), "admin-token-1");
        assert_eq!(c.auth.api_keys[0].key.expose(), "sk-from-env-123");
        let a = &c.backends[0];
        assert_eq!(a.url.base_path, "/v1");
        assert_eq!(a.timeouts.connect, Duration::from_millis(250));
        assert_eq!(a.timeouts.idle, Timeouts::default().idle);
        assert!(c.backends[1].url.tls);
        let chat = &c.routes[0];
        assert_eq!(chat.operation, Operation::ChatCompletions);
        assert_eq!(chat.max_body, 1 << 20);
        assert_eq!(
            chat.targets[0],
            Target {
                backend: 0,
                weight: 3
            }
        );
        assert_eq!(c.routes[1].path, PathMatch::Prefix("/fn/score".into()));
        assert_eq!(c.routes[1].max_body, DEFAULT_MAX_BODY);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = load_str(GOOD, "good.yaml", &env).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("sk-from-env-123"), "{dump}");
        assert!(!dump.contains("admin-token-1"));
    }

    #[test]
    fn reports_every_error_with_file_line_and_path() {
        let bad = r#"
listen: nowhere
admin: { listen: 127.0.0.1:9090 }
backends:
  a:
    kind: grpc
    url: http://x/v1
    timeouts: { connect: 5 }
  b:
    kind: openai
    url: http://x/v1
    colour: blue
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m] }
    targets:
      - backend: missing
"#;
        let errs = load_str(bad, "bad.yaml", &env).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("bad.yaml:2: listen: `nowhere` is not an address"),
            "{text:#?}"
        );
        assert!(has("bad.yaml:6: backends.a.kind: `grpc` is not a backend kind: use one of openai, http_function"), "{text:#?}");
        assert!(
            has("bad.yaml:8: backends.a.timeouts.connect: `5` is not a duration"),
            "{text:#?}"
        );
        assert!(
            has("bad.yaml:12: backends.b.colour: unknown field `colour`, expected one of"),
            "{text:#?}"
        );
        assert!(
            has("bad.yaml:17: routes.chat.targets[0].backend: unknown backend `missing`"),
            "{text:#?}"
        );
        assert_eq!(errs.len(), 5, "{text:#?}");
    }

    #[test]
    fn missing_env_var_is_named() {
        let y = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2, token: \"${NOPE_X}\" }\nroutes: {}\n";
        let errs = load_str(y, "e.yaml", &env).unwrap_err();
        assert!(
            errs.to_string()
                .contains("e.yaml:2: admin.token: environment variable `NOPE_X` is not set"),
            "{errs}"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errs = load_str("listen: [\n  a\nb: : :\n", "s.yaml", &env)
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].line.is_some());
        assert!(errs[0].message.starts_with("not valid YAML"));
    }

    #[test]
    fn kind_mismatch_and_overlap_are_errors() {
        let y = r#"
listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
backends:
  f: { kind: http_function, url: http://f/x }
  a: { kind: openai, url: http://a/v1 }
routes:
  r1:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: f } ]
  r2:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: a } ]
"#;
        let errs = load_str(y, "k.yaml", &env).unwrap_err().to_string();
        assert!(
            errs.contains("routes.r1.targets[0].backend: backend `f` is of kind http_function"),
            "{errs}"
        );
        assert!(
            errs.contains("claims the same requests as route `r1` for model `m`"),
            "{errs}"
        );
    }

    #[test]
    fn zero_is_allowed_only_where_it_means_off() {
        let base = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\nroutes:\n  r: { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: a } ] }\n";
        let ok = load_str(
            &format!("{base}server: {{ drain_delay: 0s, grace_period: 2s }}\n"),
            "z.yaml",
            &env,
        )
        .unwrap();
        assert_eq!(ok.server.drain_delay, Duration::ZERO);
        assert_eq!(ok.server.grace_period, Duration::from_secs(2));
        let errs = load_str(
            &format!("{base}server: {{ drain_delay: soon, grace_period: 0s }}\n"),
            "z.yaml",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("server.drain_delay: `soon` is not a duration"),
            "{errs}"
        );
        assert!(
            errs.contains("server.grace_period: must be greater than zero"),
            "{errs}"
        );
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("a${KEY}b", &env).unwrap(), "ask-from-env-123b");
        assert_eq!(expand("$${KEY} $5", &env).unwrap(), "${KEY} $5");
        assert!(expand("${KEY", &env).is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("8 parsecs").is_err());
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2").is_err());
    }
}
