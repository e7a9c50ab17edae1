//! The loader: YAML text → raw types → validated [`Config`], collecting every
//! error on the way (file, line, field path, what is wrong, what is allowed).
//!
//! `yaml` reads the text into raw sections, `env` substitutes `${NAME}`,
//! `values` parses durations, sizes and URLs; each section's raw type and
//! checks live in `crate::section`.

mod env;
mod values;
mod yaml;

#[cfg(test)]
mod tests;

use crate::error::{ConfigError, ConfigErrors};
use crate::locate::{line_of, render, Seg};
use crate::raw::Text;
use crate::runtime::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use values::{parse_duration, parse_endpoint, parse_size, read_ca_file, MAX_DURATION};
pub(crate) use yaml::hint;

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
        warnings: Vec::new(),
        quiet: Vec::new(),
    };
    let raw = cx.parse(env);
    let config = raw.and_then(|raw| cx.validate(raw));
    match config {
        Some(mut c) if cx.errors.is_empty() => {
            c.warnings = cx.warnings;
            Ok(c)
        }
        _ => {
            // In the file's order (the YAML pass and the checks after it
            // find them in another); stable, so one line's keep theirs.
            let mut errors = cx.errors;
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(errors))
        }
    }
}

/// The loader's state: the text (for line numbers) and the errors so far.
pub(crate) struct Cx<'a> {
    text: &'a str,
    file: &'a str,
    /// Relative file paths in the config start here.
    pub(crate) base: &'a Path,
    errors: Vec<ConfigError>,
    /// What works but should not be so in production.
    warnings: Vec<ConfigError>,
    /// Fields whose `${NAME}` could not be substituted, and fields taken
    /// out of an entry for their error (`Cx::de`): reported once, so later
    /// checks of the same field (its absence, say) stay quiet.
    pub(crate) quiet: Vec<String>,
}

pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(crate) fn path_of(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.extend_from_slice(more);
    p
}

impl Cx<'_> {
    /// Whether a field inside `path` was reported already (taken out of its
    /// entry for its error, or its `${NAME}` failed): checks of the entry
    /// as a whole (nothing set, say) would only follow from that error.
    pub(crate) fn reported_under(&self, path: &[Seg]) -> bool {
        let rendered = render(path);
        self.quiet.iter().any(|f| {
            f.strip_prefix(rendered.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    /// Records an error at `path`, unless that field was reported already (its
    /// `${NAME}` failed, or it was taken out of its entry for its error).
    pub(crate) fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        let rendered = render(path);
        let under = |failed: &String| {
            rendered == *failed
                || rendered
                    .strip_prefix(failed.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        if self.quiet.iter().any(under) {
            return;
        }
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: line_of(self.text, path),
            path: rendered,
            message: message.into(),
        });
    }

    /// Errors so far (a check can tell whether it added any).
    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Records a warning at `path`.
    pub(crate) fn warn(&mut self, path: &[Seg], message: impl Into<String>) {
        self.warnings.push(ConfigError {
            file: self.file.to_string(),
            line: line_of(self.text, path),
            path: render(path),
            message: message.into(),
        });
    }

    fn validate(&mut self, raw: crate::raw::RawConfig) -> Option<Config> {
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
        let server_tls_given = raw.server.as_ref().is_some_and(|s| s.tls.is_some())
            || raw.unread.contains(&"server")
            || self.quiet.iter().any(|f| f == "server.tls");
        let server = self.server(raw.server.unwrap_or_default());
        let admin = self.admin(raw.admin, raw.unread.contains(&"admin"));
        // What `auth` names, read or not: a method given whose part failed
        // (a CA file that cannot be read, say) has its error already; the
        // routes that use it are not told it is not configured.
        let auth_unread = raw.unread.contains(&"auth");
        let given = raw.auth.as_ref().map(|a| {
            (
                !a.api_keys.is_empty(),
                !a.jwt.is_empty(),
                a.mtls.is_some(),
                a.identity_token.is_some(),
            )
        });
        let (keys_given, jwt_given, mtls_given, identity_given) =
            given.unwrap_or((auth_unread, auth_unread, auth_unread, auth_unread));
        // Or given, of a wrong type, and taken out for its error.
        let taken = |p: &str| self.quiet.iter().any(|f| f == p);
        let (keys_given, jwt_given, mtls_given, identity_given) = (
            keys_given || taken("auth.api_keys"),
            jwt_given || taken("auth.jwt"),
            mtls_given || taken("auth.mtls"),
            identity_given || taken("auth.identity_token"),
        );
        let auth = self.auth(raw.auth.unwrap_or_default());
        if !(keys_given || jwt_given || mtls_given) {
            // Zero trust is a choice the file makes: say so when it does not.
            self.warn(
                &[key("auth")],
                "no API keys, JWT issuers or client certificates: every route is open to anyone (docs/security.md)",
            );
        }

        let mut backends = Vec::new();
        let mut backend_index = HashMap::new();
        for (name, b) in raw.backends {
            if let Some(b) = self.backend(&name, b) {
                backend_index.insert(name, backends.len());
                backends.push(b);
            }
        }
        let mut routes: Vec<Route> = Vec::new();
        let had_routes = !raw.route_names.is_empty();
        let mut route_limits = Vec::new();
        for (name, mut r) in raw.routes {
            if let Some(l) = r.limits.take() {
                route_limits.push((name.clone(), l));
            }
            if let Some(r) = self.route(&name, r, &backends, &backend_index, &raw.backend_names) {
                routes.push(r);
            }
        }
        if !had_routes {
            self.err(&[key("routes")], "missing: at least one route is needed");
        }
        self.check_overlaps(&routes);
        if auth.identity_token.is_none() && !identity_given {
            for b in backends.iter().filter(|b| b.identity_audience.is_some()) {
                self.err(
                    &[key("backends"), key(&b.name), key("identity")],
                    "set, but `auth.identity_token` (the signing key) is not configured",
                );
            }
        }
        for r in &routes {
            for m in r.auth.iter().flatten() {
                let configured = match m {
                    AuthMethod::ApiKey => !auth.api_keys.is_empty() || keys_given,
                    AuthMethod::Jwt => !auth.jwt.is_empty() || jwt_given,
                    AuthMethod::Mtls => auth.mtls.is_some() || mtls_given,
                };
                if !configured {
                    self.err(
                        &[key("routes"), key(&r.name), key("auth")],
                        format!(
                            "`{}` is not configured: add `auth.{}` or drop it here",
                            m.as_str(),
                            match m {
                                AuthMethod::ApiKey => "api_keys",
                                AuthMethod::Jwt => "jwt",
                                AuthMethod::Mtls => "mtls",
                            }
                        ),
                    );
                }
            }
        }
        if mtls_given && !auth_unread && server.tls.is_none() && !server_tls_given {
            self.err(
                &[key("auth"), key("mtls")],
                "client certificates need the TLS listener: add `server.tls` (listen, cert, key)",
            );
        }
        if let (Some(l), Some(a)) = (listen, admin.as_ref()) {
            let mut listeners = vec![("listen", l), ("admin.listen", a.listen)];
            if let Some(t) = &server.tls {
                listeners.push(("server.tls.listen", t.listen));
            }
            if let Some((later, message)) = listener_clash(&listeners) {
                let p: Vec<Seg> = later.split('.').map(key).collect();
                self.err(&p, message);
            }
        }
        let policy = raw.policy.and_then(|p| self.policy(p));
        let state = self.state(raw.state);
        let limits = self.rate_limits(raw.limits, route_limits, &routes, &state);
        let cache = self.cache(raw.cache, &state);
        for r in &routes {
            let Some(rc) = &r.cache else { continue };
            if rc.max_entry_bytes as u64 > cache.memory {
                self.warn(
                    &[
                        key("routes"),
                        key(&r.name),
                        key("cache"),
                        key("max_entry_bytes"),
                    ],
                    format!(
                        "{} is more than the whole in-memory tier (`cache.memory`: {}): answers that large are never kept in memory",
                        rc.max_entry_bytes, cache.memory
                    ),
                );
            }
        }
        let telemetry = self.telemetry(raw.telemetry);
        Some(Config {
            cache,
            telemetry,
            state,
            limits,
            listen: listen?,
            policy,
            server,
            admin: admin?,
            auth,
            backends,
            routes,
            warnings: Vec::new(),
        })
    }

    pub(crate) fn addr(&mut self, s: &str, p: &[Seg]) -> Option<SocketAddr> {
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
    pub(crate) fn duration(&mut self, s: Option<&Text>, default: Duration, p: &[Seg]) -> Duration {
        self.duration_from(s, default, p, false)
    }

    /// A positive duration of at most `max` (beyond the usual 24h: days
    /// allowed), or `default` when absent.
    pub(crate) fn duration_upto(
        &mut self,
        s: Option<&Text>,
        default: Duration,
        p: &[Seg],
        max: Duration,
    ) -> Duration {
        self.duration_within(s, default, p, false, max)
    }

    /// A duration (zero allowed when `zero_ok`), or `default` when absent.
    pub(crate) fn duration_from(
        &mut self,
        s: Option<&Text>,
        default: Duration,
        p: &[Seg],
        zero_ok: bool,
    ) -> Duration {
        self.duration_within(s, default, p, zero_ok, MAX_DURATION)
    }

    /// A duration of at most `max` (zero allowed when `zero_ok`), or
    /// `default` when absent.
    fn duration_within(
        &mut self,
        s: Option<&Text>,
        default: Duration,
        p: &[Seg],
        zero_ok: bool,
        max: Duration,
    ) -> Duration {
        match s.map(|t| values::parse_duration_upto(&t.0, max)) {
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

    /// Backend and route names appear in URL paths (the admin API), metric
    /// labels and log lines: 1–64 of `A-Z a-z 0-9 . _ -`.
    pub(crate) fn name_ok(&mut self, name: &str, p: &[Seg]) -> bool {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            self.err(
                p,
                format!(
                    "`{}` is not a usable name: use 1-64 characters of A-Z a-z 0-9 . _ -",
                    crate::clip(name)
                ),
            );
        }
        ok
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub(crate) fn int_in(
        &mut self,
        v: Option<u64>,
        default: u64,
        (min, max): (u64, u64),
        p: &[Seg],
    ) -> u64 {
        match v {
            None => default,
            Some(n) if (min..=max).contains(&n) => n,
            Some(_) => {
                self.err(p, format!("must be between {min} and {max}"));
                default
            }
        }
    }

    /// A fraction in `0.0..=1.0`, or `default` when absent.
    pub(crate) fn ratio(&mut self, v: Option<f64>, default: f64, p: &[Seg]) -> f64 {
        match v {
            None => default,
            Some(r) if (0.0..=1.0).contains(&r) => r,
            Some(_) => {
                self.err(p, "must be between 0.0 and 1.0");
                default
            }
        }
    }
}

/// The first pair of listeners that cannot both have their address, as the
/// later one's name and a message: the same port on the same address, or on
/// an address and the unspecified one (`0.0.0.0`, `::`) beside it. Pingora
/// keeps one socket per address string, so two listeners on the same
/// address share one socket, and the proxy and the admin API take each
/// other's connections at random; overlapping addresses fail to bind, and
/// Pingora retries that for 30 s before it panics. Port 0 (any free port)
/// clashes only on the same address (the same string: one socket).
pub fn listener_clash(
    listeners: &[(&'static str, std::net::SocketAddr)],
) -> Option<(&'static str, String)> {
    for (i, (a_name, a)) in listeners.iter().enumerate() {
        for (b_name, b) in &listeners[i + 1..] {
            let overlap = a.ip() == b.ip()
                || (a.port() != 0 && (a.ip().is_unspecified() || b.ip().is_unspecified()));
            if a.port() == b.port() && overlap {
                return Some((
                    b_name,
                    format!("`{b}` takes the connections of `{a_name}: {a}`: give each listener its own port"),
                ));
            }
        }
    }
    None
}
