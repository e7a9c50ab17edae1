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
        env_failed: Vec::new(),
    };
    let raw = cx.parse(env);
    let config = raw.and_then(|raw| cx.validate(raw));
    match config {
        Some(mut c) if cx.errors.is_empty() => {
            c.warnings = cx.warnings;
            Ok(c)
        }
        _ => Err(ConfigErrors(cx.errors)),
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
    /// Fields whose `${NAME}` could not be substituted: reported once, so
    /// later checks of the same field stay quiet.
    env_failed: Vec<String>,
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
    /// Records an error at `path` (unless that field's `${NAME}` already failed).
    pub(crate) fn err(&mut self, path: &[Seg], message: impl Into<String>) {
        let rendered = render(path);
        let under = |failed: &String| {
            rendered == *failed
                || rendered
                    .strip_prefix(failed.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        if self.env_failed.iter().any(under) {
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
        let server = self.server(raw.server.unwrap_or_default());
        let admin = self.admin(raw.admin);
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
        if auth.identity_token.is_none() {
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
                    AuthMethod::ApiKey => !auth.api_keys.is_empty(),
                    AuthMethod::Jwt => !auth.jwt.is_empty(),
                    AuthMethod::Mtls => auth.mtls.is_some(),
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
        if auth.mtls.is_some() && server.tls.is_none() {
            self.err(
                &[key("auth"), key("mtls")],
                "client certificates need the TLS listener: add `server.tls` (listen, cert, key)",
            );
        }
        let policy = raw.policy.and_then(|p| self.policy(p));
        let state = self.state(raw.state);
        let limits = self.rate_limits(raw.limits, route_limits, &routes, &state);
        let cache = self.cache(raw.cache, &state);
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

    /// A duration (zero allowed when `zero_ok`), or `default` when absent.
    pub(crate) fn duration_from(
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
