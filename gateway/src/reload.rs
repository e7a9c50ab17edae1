//! Config reload (`POST /admin/reload`, SIGHUP): read the config again, build
//! the new snapshot whole, then swap it in; on any error keep the running one
//! and report every error (the `validate` format). Requests in flight finish
//! on the snapshot they started with.
//!
//! What survives a reload, by name: each backend's run-time state (breaker,
//! latency estimate, in-flight count, health, drain; reset when its URL or
//! kind changes) and each route's (retry budget, run-time weights). A
//! run-time weight is kept while its backend is still a target of the route
//! (the reload answer and the log say it still overrides the file), and
//! dropped when it is not. What only a restart can change (listeners,
//! threads, the body budget, Pingora's grace period) keeps its running
//! value, and the answer lists it under `needs_restart`.

use crate::runtime::Snapshot;
use crate::State;
use skygate_config::{Backend, Config, ConfigErrors, Route};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the config comes from, with the command line's overrides.
pub enum Source {
    /// `skygate run --config FILE [--listen ADDR] [--admin-listen ADDR]`.
    File {
        path: PathBuf,
        listen: Option<SocketAddr>,
        admin_listen: Option<SocketAddr>,
    },
    /// `skygate demo`: the embedded demo config and its simulators' URLs.
    Embedded {
        name: &'static str,
        text: &'static str,
        env: HashMap<String, String>,
        listen: Option<SocketAddr>,
        admin_listen: Option<SocketAddr>,
    },
}

impl Source {
    /// Reads and validates the config (and what only the gateway can check:
    /// usable JWKS keys; the demo issuer outside the demo), then applies the
    /// overrides.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let (mut config, listen, admin_listen) = match self {
            Source::File {
                path,
                listen,
                admin_listen,
            } => {
                let mut config = skygate_config::load_file(path)?;
                let file = path.display().to_string();
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let mut errors = gateway_checks(&mut config, &file, &text);
                errors.extend(demo_issuer_outside_the_demo(&config, &file, &text));
                if !errors.is_empty() {
                    return Err(ConfigErrors(errors));
                }
                (config, listen, admin_listen)
            }
            Source::Embedded {
                name,
                text,
                env,
                listen,
                admin_listen,
            } => {
                let lookup = |k: &str| env.get(k).cloned().or_else(|| std::env::var(k).ok());
                let mut config = skygate_config::load_str(text, name, &lookup)?;
                let errors = gateway_checks(&mut config, name, text);
                if !errors.is_empty() {
                    return Err(ConfigErrors(errors));
                }
                (config, listen, admin_listen)
            }
        };
        if let Some(l) = listen {
            config.listen = *l;
        }
        if let Some(a) = admin_listen {
            config.admin.listen = *a;
        }
        Ok(config)
    }
}

/// The plugins' checks, as config errors with their lines.
/// Warnings (e.g. a policy set that locks the admin API) join the config's.
fn gateway_checks(config: &mut Config, file: &str, text: &str) -> Vec<skygate_config::ConfigError> {
    let (policy_errors, warnings) = skygate_plugins::policy::check(config);
    config.warnings.extend(
        warnings
            .into_iter()
            .map(|(path, message)| error_at(file, text, &path, message)),
    );
    skygate_plugins::auth::check(config)
        .into_iter()
        .chain(policy_errors)
        .chain(crate::tls::check(config))
        .map(|(path, message)| error_at(file, text, &path, message))
        .collect()
}

fn error_at(file: &str, text: &str, path: &str, message: String) -> skygate_config::ConfigError {
    use skygate_config::locate::{line_of, Seg};
    // `auth.jwt[0].jwks.file` → segments, for the line.
    let mut segs = Vec::new();
    for part in path.split('.') {
        match part.split_once('[') {
            Some((k, rest)) => {
                segs.push(Seg::Key(k.to_string()));
                if let Ok(i) = rest.trim_end_matches(']').parse() {
                    segs.push(Seg::Index(i));
                }
            }
            None => segs.push(Seg::Key(part.to_string())),
        }
    }
    skygate_config::ConfigError {
        file: file.to_string(),
        line: line_of(text, &segs),
        path: path.to_string(),
        message,
    }
}

/// The demo issuer's key is public (`skygate demo-token` mints tokens with
/// it): trusting it anywhere but `skygate demo` lets anyone be anyone.
fn demo_issuer_outside_the_demo(
    config: &Config,
    file: &str,
    text: &str,
) -> Vec<skygate_config::ConfigError> {
    let demo: serde_json::Value = serde_json::from_str(crate::demo::DEMO_JWKS).unwrap_or_default();
    let demo_n = demo["keys"][0]["n"].as_str().unwrap_or("-");
    config
        .auth
        .jwt
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            let skygate_config::JwksSource::File(path) = &issuer.jwks else {
                return None;
            };
            let jwks = std::fs::read_to_string(path).ok()?;
            jwks.contains(demo_n).then(|| {
                error_at(
                    file,
                    text,
                    &format!("auth.jwt[{i}].jwks.file"),
                    "trusts the demo issuer's key, which is public (anyone can mint tokens with `skygate demo-token`): use your identity provider's keys".to_string(),
                )
            })
        })
        .collect()
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// One line per change, e.g. "backend `b` changed: timeouts, breaker".
    pub changes: Vec<String>,
    /// Changes that take effect only after a restart.
    pub needs_restart: Vec<String>,
}

impl State {
    /// Reloads the config from its source. On error nothing changes.
    pub fn reload(&self) -> Result<Report, ConfigErrors> {
        self.exclusive(|| {
            let mut config = self.source.load()?;
            let old = self.snapshot();
            let mut report = diff(&old.config, &config);
            keep_running_values(&old.config, &mut config);
            // The TLS listener's client-certificate check, built before
            // anything changes (`load` has already checked that it builds).
            let client_auth = crate::tls::client_verifier(&config).map_err(|e| {
                skygate_config::ConfigErrors(vec![skygate_config::ConfigError {
                    file: "auth.mtls.ca".into(),
                    line: None,
                    path: String::new(),
                    message: e,
                }])
            })?;
            let access_log = config.server.access_log;
            self.shared.redis.configure(crate::redis_config(&config));
            let new = Snapshot::build(config, &self.registry, &self.shared);
            carry_weights(&new, &mut report);
            let backends: HashSet<&str> = new
                .config
                .backends
                .iter()
                .map(|b| b.name.as_str())
                .collect();
            let routes: HashSet<&str> = new.config.routes.iter().map(|r| r.name.as_str()).collect();
            self.registry.retain(&backends, &routes);
            self.snapshot.store(Arc::new(new));
            crate::tls::set_client_verifier(client_auth);
            self.generation.send_modify(|g| *g += 1);
            // A backend whose URL or kind changed starts afresh (undrained):
            // the shared admin state drains it again at once.
            self.replicas.resync();
            if access_log == skygate_config::AccessLog::Stdout {
                crate::access_log::start();
            }
            if report.changes.is_empty() && report.needs_restart.is_empty() {
                log::info!("reload: no change");
            }
            for c in &report.changes {
                log::info!("reload: {c}");
            }
            for c in &report.needs_restart {
                log::warn!("reload: {c} changed; it takes effect after a restart");
            }
            Ok(report)
        })
    }
}

/// What a reload cannot change keeps its running value, so the snapshot
/// always says what the process really runs with.
fn keep_running_values(old: &Config, new: &mut Config) {
    new.listen = old.listen;
    new.admin.listen = old.admin.listen;
    new.server.threads = old.server.threads;
    new.server.body_budget = old.server.body_budget;
    new.server.body_budget_wait = old.server.body_budget_wait;
    new.server.grace_period = old.server.grace_period;
    new.server.tls.clone_from(&old.server.tls);
}

/// Keeps each run-time weight whose backend is still a target of its route,
/// and says so: it still overrides what the file says.
fn carry_weights(new: &Snapshot, report: &mut Report) {
    for (route, state) in new.config.routes.iter().zip(&new.route_states) {
        let Some(o) = state.overrides() else { continue };
        let targets: HashSet<&str> = route
            .targets
            .iter()
            .map(|t| new.config.backends[t.backend].name.as_str())
            .collect();
        let (kept, gone): (Vec<_>, Vec<_>) = o
            .by_backend
            .iter()
            .cloned()
            .partition(|(n, _)| targets.contains(n.as_str()));
        for (name, _) in &gone {
            report.changes.push(format!(
                "route `{}`: run-time weight of `{name}` dropped (no longer a target)",
                route.name
            ));
        }
        if !kept.is_empty() {
            let list: Vec<String> = kept.iter().map(|(n, w)| format!("{n} = {w}")).collect();
            report.changes.push(format!(
                "route `{}`: run-time weights still override the file: {} (DELETE /admin/routes/{}/weights to use the file's)",
                route.name,
                list.join(", "),
                route.name
            ));
        }
        state.set_overrides(
            (!kept.is_empty())
                .then_some(skygate_backends::routing::state::WeightOverride { by_backend: kept }),
        );
    }
}

/// The differences between two configs, field by field.
pub fn diff(old: &Config, new: &Config) -> Report {
    let mut r = Report::default();
    if old.listen != new.listen {
        r.needs_restart
            .push(format!("listen ({} → {})", old.listen, new.listen));
    }
    if old.admin.listen != new.admin.listen {
        r.needs_restart.push(format!(
            "admin.listen ({} → {})",
            old.admin.listen, new.admin.listen
        ));
    }
    let (os, ns) = (&old.server, &new.server);
    for (name, changed) in [
        ("server.threads", os.threads != ns.threads),
        // The TLS listener's own certificate is built into it at start.
        ("server.tls", os.tls != ns.tls),
        ("server.body_budget", os.body_budget != ns.body_budget),
        (
            "server.body_budget_wait",
            os.body_budget_wait != ns.body_budget_wait,
        ),
        ("server.grace_period", os.grace_period != ns.grace_period),
    ] {
        if changed {
            r.needs_restart.push(name.to_string());
        }
    }
    if old.auth.mtls != new.auth.mtls {
        r.changes
            .push("auth.mtls changed (client certificates: for new TLS handshakes)".to_string());
    }
    if os.timeouts != ns.timeouts {
        r.changes
            .push("server.timeouts changed (for new connections)".to_string());
    }
    for (name, changed) in [
        ("server.drain_delay", os.drain_delay != ns.drain_delay),
        ("server.access_log", os.access_log != ns.access_log),
        ("admin.token", old.admin.token != new.admin.token),
    ] {
        if changed {
            r.changes.push(format!("{name} changed"));
        }
    }
    let (oa, na) = (&old.auth, &new.auth);
    if oa.api_keys != na.api_keys {
        r.changes.push(format!(
            "auth.api_keys changed ({} → {} keys)",
            oa.api_keys.len(),
            na.api_keys.len()
        ));
    }
    for (name, changed) in [
        ("auth.jwt", oa.jwt != na.jwt),
        (
            "auth.trusted_proxies",
            oa.trusted_proxies != na.trusted_proxies,
        ),
        (
            "auth.identity_headers",
            oa.identity_headers != na.identity_headers,
        ),
        (
            "auth.identity_token",
            oa.identity_token != na.identity_token,
        ),
    ] {
        if changed {
            r.changes.push(format!("{name} changed"));
        }
    }
    match (&old.policy, &new.policy) {
        (None, None) => {}
        (None, Some(p)) => r.changes.push(format!(
            "policy added ({} files, mode {:?})",
            p.files.len(),
            p.mode
        )),
        (Some(_), None) => r.changes.push("policy removed".into()),
        (Some(o), Some(n)) if o != n => {
            let mut what = Vec::new();
            let names = |p: &skygate_config::Policy| -> Vec<_> {
                p.files.iter().map(|f| f.path.clone()).collect()
            };
            if names(o) != names(n) {
                what.push(format!("files ({} → {})", o.files.len(), n.files.len()));
            } else if o.files != n.files {
                what.push("policy text".to_string());
            }
            if o.schema != n.schema {
                what.push("schema".into());
            }
            if o.mode != n.mode {
                what.push(format!("mode ({:?} → {:?})", o.mode, n.mode));
            }
            if o.audit_log != n.audit_log {
                what.push("audit_log".into());
            }
            r.changes
                .push(format!("policy changed: {}", what.join(", ")));
        }
        (Some(_), Some(_)) => {}
    }
    let by_name = |bs: &[Backend]| -> HashMap<String, Backend> {
        bs.iter().map(|b| (b.name.clone(), b.clone())).collect()
    };
    let (ob, nb) = (by_name(&old.backends), by_name(&new.backends));
    for b in &new.backends {
        match ob.get(&b.name) {
            None => r.changes.push(format!("backend `{}` added", b.name)),
            Some(o) if o != b => r.changes.push(format!(
                "backend `{}` changed: {}",
                b.name,
                backend_fields(o, b).join(", ")
            )),
            Some(_) => {}
        }
    }
    for b in &old.backends {
        if !nb.contains_key(&b.name) {
            r.changes.push(format!("backend `{}` removed", b.name));
        }
    }
    let names = |c: &Config, r: &Route| -> Vec<(String, u32, u32)> {
        r.targets
            .iter()
            .map(|t| (c.backends[t.backend].name.clone(), t.weight, t.priority))
            .collect()
    };
    let or: HashMap<&str, &Route> = old.routes.iter().map(|x| (x.name.as_str(), x)).collect();
    let nr: HashSet<&str> = new.routes.iter().map(|x| x.name.as_str()).collect();
    for route in &new.routes {
        match or.get(route.name.as_str()) {
            None => r.changes.push(format!("route `{}` added", route.name)),
            Some(o) => {
                let mut fields = Vec::new();
                if o.path != route.path || o.models != route.models {
                    fields.push("match");
                }
                if names(old, o) != names(new, route) {
                    fields.push("targets");
                }
                if o.strategy != route.strategy {
                    fields.push("strategy");
                }
                if o.retries != route.retries {
                    fields.push("retries");
                }
                if o.max_body != route.max_body {
                    fields.push("max_body");
                }
                if !fields.is_empty() {
                    r.changes.push(format!(
                        "route `{}` changed: {}",
                        route.name,
                        fields.join(", ")
                    ));
                }
            }
        }
    }
    for route in &old.routes {
        if !nr.contains(route.name.as_str()) {
            r.changes.push(format!("route `{}` removed", route.name));
        }
    }
    r
}

fn backend_fields(o: &Backend, n: &Backend) -> Vec<&'static str> {
    let mut f = Vec::new();
    let mut check = |name: &'static str, changed: bool| {
        if changed {
            f.push(name);
        }
    };
    check("kind", o.kind != n.kind);
    check("url", o.url != n.url);
    check("api_key", o.api_key != n.api_key);
    check("api_key_header", o.api_key_header != n.api_key_header);
    check("cloud/region", o.cloud != n.cloud || o.region != n.region);
    check("timeouts", o.timeouts != n.timeouts);
    check("pool", o.pool_idle_timeout != n.pool_idle_timeout);
    check("tls", o.tls_ca != n.tls_ca);
    check("breaker", o.breaker != n.breaker);
    check("limits", o.limits != n.limits);
    check("health_check", o.health_check != n.health_check);
    check("aws", o.aws != n.aws);
    check("platform settings", o.platform != n.platform);
    f
}

/// Reloads when a policy file changes: polls the policy files, the
/// schema and the folders of `*` patterns every second (a few `stat`s), as
/// a Pingora background service; a change is taken once it has stood still
/// for one poll. A reload that fails keeps the old set in
/// force and logs why; the next change tries again.
pub struct PolicyWatch {
    pub state: Arc<State>,
}

/// What the policy files look like now: each path with its modification
/// time and length (`None`: unreadable or gone).
type Fingerprint = Vec<(std::path::PathBuf, Option<(std::time::SystemTime, u64)>)>;

fn fingerprint(config: &Config) -> Fingerprint {
    let Some(p) = &config.policy else {
        return Vec::new();
    };
    let mut paths: Vec<std::path::PathBuf> = p
        .patterns
        .iter()
        .flat_map(|pat| skygate_config::expand_files(pat).unwrap_or_default())
        .collect();
    paths.extend(p.schema.iter().map(|s| s.path.clone()));
    paths
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (path, meta)
        })
        .collect()
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for PolicyWatch {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let mut last = fingerprint(&self.state.snapshot().config);
        let mut pending: Option<Fingerprint> = None;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let state = self.state.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || {
                let config = state.snapshot().config.clone();
                fingerprint(&config)
            })
            .await
            else {
                continue;
            };
            if now == last {
                pending = None;
                continue;
            }
            // Reload once the files have stood still for one tick, so a file
            // still being written (an editor, `cat >`) is not read half done.
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            pending = None;
            // Taken before the reload reads the files: a change made while
            // it reads is seen at the next tick.
            last = now;
            let state = self.state.clone();
            match tokio::task::spawn_blocking(move || state.reload()).await {
                Ok(Ok(_)) => log::info!("reload: a policy file changed; policies reloaded"),
                Ok(Err(e)) => log::error!(
                    "reload: a policy file changed, but the new config is refused; the old one stays:\n{e}"
                ),
                Err(e) => log::error!("reload: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra_backend: &str, targets: &str) -> Config {
        let y = format!("listen: 127.0.0.1:1\nadmin: {{ listen: 127.0.0.1:2 }}\nbackends:\n  a: {{ kind: openai, url: http://127.0.0.1:3/v1 }}\n  b: {{ kind: openai, url: http://127.0.0.1:4/v1{extra_backend} }}\nroutes:\n  r: {{ match: {{ path: /v1/embeddings, models: [e] }}, targets: [ {targets} ] }}\n");
        skygate_config::load_str(&y, "t.yaml", &|_| None).unwrap()
    }

    #[test]
    fn diff_names_what_changed() {
        let a = load("", "{ backend: a }");
        let b = load(
            ", timeouts: { connect: 1s }",
            "{ backend: a }, { backend: b }",
        );
        let r = diff(&a, &b);
        assert_eq!(
            r.changes,
            [
                "backend `b` changed: timeouts",
                "route `r` changed: targets"
            ]
        );
        assert!(diff(&a, &a).changes.is_empty());
    }
}
