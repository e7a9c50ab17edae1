//! The admin listener: health and readiness (open); metrics and the admin
//! API (`Authorization: Bearer <admin token>`, compared in constant time):
//!
//! - `GET /admin/ui`: the operator status page (`admin_ui.rs`)
//! - `GET /admin/routes`: each route's targets, configured and effective weights
//! - `PUT /admin/routes/{route}/weights` `{"backend": weight, ...}`: shift
//!   traffic now (only the backends named are overridden; the others keep
//!   following the config);
//!   `DELETE` the same path: back to the configured weights
//! - `GET /admin/backends`: health, breaker, in-flight, latency, weights
//! - `POST /admin/backends/{name}/drain`, `/undrain`
//! - `POST /admin/backends/{name}/prewarm[?instances=K]`: ping now
//! - `POST /admin/reload`: read the config again (as SIGHUP)
//! - `DELETE /admin/cache[?route=NAME][&tenant=NAME]`: drop cached answers
//!   (all, a route's, a tenant's), in memory and in Redis; with `state.redis`,
//!   in every replica's memory
//!
//! Every change is logged with what changed.

use crate::replicas;
use crate::runtime::Snapshot;
use crate::State;
use async_trait::async_trait;
use bytes::BytesMut;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use skygate_backends::routing::state::WeightOverride;
use skygate_backends::BackendRt;
use skygate_config::{clip, ApiError, ErrorKind, Route};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Admin request bodies (a weights object) are small.
const MAX_ADMIN_BODY: usize = 64 * 1024;

pub struct Admin {
    pub state: Arc<State>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

fn json(status: u16, v: Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

fn error(e: &ApiError) -> Response<Vec<u8>> {
    error_with(e, Vec::new())
}

fn error_with(e: &ApiError, extra: Vec<(&str, Value)>) -> Response<Vec<u8>> {
    let mut v = e.to_json();
    if let Some(obj) = v.get_mut("error").and_then(Value::as_object_mut) {
        for (k, x) in extra {
            obj.insert(k.to_string(), x);
        }
    }
    let mut r = json(e.status(), v);
    if e.kind == ErrorKind::InvalidAdminToken {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"skygate-admin\""),
        );
    }
    r
}

impl Admin {
    /// Whether the proxy listener accepts connections. Pingora binds each
    /// service's listener when that service starts, so the admin listener
    /// can answer before the proxy's is open: until a connect succeeds once,
    /// the gateway is not ready.
    async fn proxy_accepting(&self) -> bool {
        if self.state.proxy_listening.load(Ordering::Acquire) {
            return true;
        }
        let mut addr = self.state.snapshot().config.listen;
        if addr.ip().is_unspecified() {
            let loopback: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            addr.set_ip(loopback);
        }
        let probe = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            tokio::net::TcpStream::connect(addr),
        );
        let up = matches!(probe.await, Ok(Ok(_)));
        if up {
            self.state.proxy_listening.store(true, Ordering::Release);
        }
        up
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let snap = self.state.snapshot();
        let Some(token) = snap.config.admin.token.as_ref() else {
            return false;
        };
        // Exactly one `Authorization` (two could be read differently by
        // a proxy in front), with the token.
        let mut all = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter();
        match (all.next(), all.next()) {
            (Some(v), None) => skygate_config::bearer_token(v.as_bytes())
                .is_some_and(|presented| token.ct_eq(presented)),
            _ => false,
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // The header is in: the connection loop's header timer stops.
        if let Some(timer) = session.take_connection_user_context() {
            crate::edge::header_read(timer);
        }
        // As on the proxy: the caller's well-formed `x-request-id`, or a new
        // one; answered, and in the audit line of the request's decision.
        let request_id = crate::request_id(session.req_header());
        let mut r = self.answer(session, &request_id).await;
        if let Ok(v) = http::HeaderValue::from_str(&request_id) {
            r.headers_mut().insert("x-request-id", v);
        }
        r
    }
}

impl Admin {
    async fn answer(&self, session: &mut ServerSession, request_id: &str) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET" | "HEAD", ["healthz"]) => return json(200, json!({"status": "ok"})),
            ("GET" | "HEAD", ["readyz"]) => {
                return if self.state.draining.load(Ordering::Acquire) {
                    json(503, json!({"status": "draining"}))
                } else if !self.proxy_accepting().await {
                    json(503, json!({"status": "starting"}))
                } else if !self.state.shared.redis.is_settled() {
                    // `state.redis` not tried yet: limits would all take
                    // their failure policy.
                    json(503, json!({"status": "connecting to redis"}))
                } else if !self.state.replicas.synced(&self.state) {
                    // A restarted replica must not send traffic to a
                    // backend the others drained.
                    json(503, json!({"status": "reading shared admin state"}))
                } else {
                    json(200, json!({"status": "ready"}))
                };
            }
            // The status page: static, no data, no secret (admin_ui.rs).
            ("GET" | "HEAD", ["admin", "ui", ..]) => {
                if let Some(r) = crate::admin_ui::asset(&segs) {
                    return r;
                }
            }
            ("GET" | "HEAD", ["identity", "jwks.json"]) => {
                // Public keys only: open, like an IdP's JWKS.
                let snap = self.state.snapshot();
                return match &snap.identity {
                    Some(signer) => reply(200, "application/json", signer.jwks.to_vec()),
                    None => error(&ApiError::new(
                        ErrorKind::NotFound,
                        "identity tokens are not configured (auth.identity_token)",
                    )),
                };
            }
            _ => {}
        }
        if !self.authorized(session) {
            let closed = self.state.snapshot().config.admin.token.is_none();
            return error(&ApiError::new(
                ErrorKind::InvalidAdminToken,
                if closed {
                    "the admin API is closed: no `admin.token` is configured, so no token works (set `admin.token`, e.g. to ${SKYGATE_ADMIN_TOKEN}, and restart or reload)"
                } else {
                    "admin token required: send `Authorization: Bearer <token>`"
                },
            ));
        }
        // Then the policy, when there is one (action `admin`).
        let snap = self.state.snapshot();
        if snap.chain.policy_failed() {
            return error(&ApiError::new(
                ErrorKind::Forbidden,
                "the policy could not be loaded: every request is denied",
            ));
        }
        if let Some(policy) = snap.chain.policy() {
            let part = match segs.as_slice() {
                ["admin", part, ..] | [part, ..] => *part,
                [] => "",
            };
            let client = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            let write = !matches!(method.as_str(), "GET" | "HEAD");
            if let Err(e) = policy.admin(part, write, client, request_id) {
                return error(&e);
            }
        }
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["metrics"]) => reply(
                200,
                "text/plain; version=0.0.4",
                crate::metrics::render(
                    &self.state.registry,
                    &self.state.shared.cache,
                    self.state.snapshot().config.state.redis.is_some(),
                ),
            ),
            ("GET", ["admin", "routes"]) => {
                let snap = self.state.snapshot();
                let routes: Vec<Value> = (0..snap.config.routes.len())
                    .map(|i| route_view(&snap, i))
                    .collect();
                json(200, json!({ "routes": routes }))
            }
            ("PUT", ["admin", "routes", route, "weights"]) => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(e) => return error(&e),
                };
                let route = route.to_string();
                self.shared_change(move |a| a.set_weights(&route, &body))
                    .await
            }
            ("DELETE", ["admin", "routes", route, "weights"]) => {
                let route = route.to_string();
                self.shared_change(move |a| a.reset_weights(&route)).await
            }
            ("GET", ["admin", "backends"]) => {
                let snap = self.state.snapshot();
                let backends: Vec<Value> = snap
                    .backends
                    .iter()
                    .map(|b| backend_view(&snap, b))
                    .collect();
                json(200, json!({ "backends": backends }))
            }
            ("POST", ["admin", "backends", name, action @ ("drain" | "undrain")]) => {
                let (name, drain) = (name.to_string(), *action == "drain");
                self.shared_change(move |a| a.drain(&name, drain)).await
            }
            ("POST", ["admin", "backends", name, "prewarm"]) => {
                let query = session.req_header().uri.query().unwrap_or("").to_string();
                self.prewarm(name, &query)
            }
            ("POST", ["admin", "reload"]) => self.reload().await,
            ("DELETE", ["admin", "cache"]) => {
                let query = session.req_header().uri.query().unwrap_or("").to_string();
                self.purge_cache(&query).await
            }
            (_, known) if allowed(known).is_some() => {
                let allow = allowed(known).unwrap_or("");
                let mut r = error(&ApiError::new(
                    ErrorKind::MethodNotAllowed,
                    format!(
                        "{} is not allowed on {}: use {allow}",
                        clip(method.as_str()),
                        clip(&path)
                    ),
                ));
                r.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                r
            }
            _ => error(&ApiError::new(
                ErrorKind::NotFound,
                format!("no admin endpoint {method} {}", clip(&path)),
            )),
        }
    }
}

/// The backend named `name`, or a 404 that lists the known ones.
fn known_backend<'a>(snap: &'a Snapshot, name: &str) -> Result<&'a Arc<BackendRt>, ApiError> {
    snap.backend(name).ok_or_else(|| {
        let known: Vec<&str> = snap
            .backends
            .iter()
            .map(|b| b.config.name.as_str())
            .collect();
        ApiError::new(
            ErrorKind::NotFound,
            format!(
                "no backend `{}`: backends are [{}]",
                clip(name),
                known.join(", ")
            ),
        )
    })
}

/// The methods an admin path takes, if it is one.
fn allowed(segs: &[&str]) -> Option<&'static str> {
    match segs {
        ["metrics"] | ["admin", "routes"] | ["admin", "backends"] => Some("GET"),
        ["admin", "routes", _, "weights"] => Some("PUT, DELETE"),
        ["admin", "backends", _, "drain" | "undrain" | "prewarm"] | ["admin", "reload"] => {
            Some("POST")
        }
        ["admin", "cache"] => Some("DELETE"),
        _ => None,
    }
}

/// A query value, `%XX` and `+` decoded; `None` when a `%` starts no
/// escape, or the bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let bad = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if bad {
        return None;
    }
    String::from_utf8(skygate_config::percent_decode(&s.replace('+', " "))).ok()
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(ApiError::new(
                        ErrorKind::BodyTooLarge,
                        format!("admin request bodies are at most {MAX_ADMIN_BODY} bytes"),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.to_vec()),
            Err(e) => {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("reading the body failed: {}", e.etype().as_str()),
                ))
            }
        }
    }
}

impl Admin {
    /// `DELETE /admin/cache?route=&tenant=`: drops the matching entries
    /// from memory, then from Redis (page by page, never blocking it long),
    /// and has the other replicas drop theirs from memory.
    async fn purge_cache(&self, query: &str) -> Response<Vec<u8>> {
        let mut route = None;
        let mut tenant = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = match percent_decode(v) {
                Some(v) if !v.is_empty() => v,
                Some(_) => {
                    return error(&ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!("`{}` needs a value", clip(k)),
                    ))
                }
                None => {
                    return error(&ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!("`{}` is not percent-encoded UTF-8", clip(k)),
                    ))
                }
            };
            let slot = match k {
                "route" => &mut route,
                "tenant" => &mut tenant,
                _ => {
                    return error(&ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "unknown parameter `{}`: use `route` and/or `tenant`",
                            clip(k)
                        ),
                    ))
                }
            };
            if slot.replace(v).is_some() {
                return error(&ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!("`{k}` is given twice: purge one at a time"),
                ));
            }
        }
        let snap = self.state.snapshot();
        if let Some(r) = &route {
            if let Err(e) = Self::route_index(&snap, r) {
                return error(&e);
            }
        }
        // Memory before and after Redis: a miss that read Redis meanwhile
        // may have put an entry back.
        let state = &self.state;
        let (route, tenant) = (route.as_deref(), tenant.as_deref());
        // From now on, answers to requests that began before this purge are
        // not stored (in memory, nor in Redis by the writer), nor Redis
        // values answered before it served.
        state.shared.cache.record_purge(route, tenant);
        let mut memory = replicas::purge_memory(state, route, tenant).await;
        let redis = &state.shared.redis;
        let tier = snap.config.cache.redis && snap.config.state.redis.is_some();
        let pattern = skygate_plugins::cache::store::redis_pattern(&redis.prefix(), route, tenant);
        let mut in_redis = None;
        let mut failed = None;
        if tier {
            // A write queued before the purge must not bring an entry back.
            redis.drop_puts(&pattern);
            match redis.delete_matching(&pattern).await {
                Ok(n) => in_redis = Some(n),
                Err(e) => {
                    failed = Some(format!(
                        "the in-memory entries are gone, but Redis' are not: {e}"
                    ))
                }
            }
        }
        // The other replicas: they stop storing and writing answers to
        // requests that began before, refuse Redis values answered before,
        // and purge their memory (later, if Redis is down now).
        let shared = state.replicas.share_purge(state, route, tenant).await;
        if let (Some(n), None) = (in_redis, &failed) {
            // Once more, after writes already on the wire have landed.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match redis.delete_matching(&pattern).await {
                Ok(m) => in_redis = Some(n + m),
                Err(e) => {
                    failed = Some(format!(
                        "Redis was swept once ({n} deleted), but not again for writes that were on their way: {e}"
                    ))
                }
            }
        }
        memory += replicas::purge_memory(state, route, tenant).await;
        log::info!(
            "admin: cache purged (route {}, tenant {}): {memory} in memory, {} in redis{}; shared: {}",
            route.map_or("*".into(), clip),
            tenant.map_or("*".into(), clip),
            in_redis.map_or("-".into(), |n| n.to_string()),
            failed.as_ref().map_or(String::new(), |e| format!(" ({e})")),
            shared.as_str(),
        );
        let deleted = json!({ "memory": memory, "redis": in_redis });
        if let Some(e) = failed {
            return error_with(
                &ApiError::new(ErrorKind::Unavailable, e),
                vec![("deleted", deleted), ("shared", json!(shared.as_str()))],
            );
        }
        json(
            200,
            json!({
                "route": route,
                "tenant": tenant,
                "deleted": deleted,
                "shared": shared.as_str(),
            }),
        )
    }

    /// Runs an admin change that replicas share (weights, drain), then
    /// writes it for the others; the answer says where it went (`shared`:
    /// `redis`, `pending` while Redis is down, `local`). The change runs
    /// off the admin listener's one thread: changes wait for a reload in
    /// progress (which may be resolving names), and health, readiness and
    /// metrics must keep answering meanwhile.
    async fn shared_change(
        &self,
        f: impl FnOnce(&Admin) -> Result<Value, ApiError> + Send + 'static,
    ) -> Response<Vec<u8>> {
        let admin = Admin {
            state: self.state.clone(),
        };
        let done = tokio::task::spawn_blocking(move || f(&admin))
            .await
            .unwrap_or_else(|e| {
                Err(ApiError::new(
                    ErrorKind::Internal,
                    format!("the change did not finish: {e}"),
                ))
            });
        match done {
            Ok(mut v) => {
                let shared = self.state.replicas.share(&self.state).await;
                if let Some(o) = v.as_object_mut() {
                    o.insert("shared".into(), json!(shared.as_str()));
                }
                json(200, v)
            }
            Err(e) => error(&e),
        }
    }

    fn route_index(snap: &Snapshot, name: &str) -> Result<usize, ApiError> {
        snap.route(name).map(|(i, _)| i).ok_or_else(|| {
            let known: Vec<&str> = snap.config.routes.iter().map(|r| r.name.as_str()).collect();
            ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "no route `{}`: routes are [{}]",
                    clip(name),
                    known.join(", ")
                ),
            )
        })
    }

    fn set_weights(&self, route_name: &str, body: &[u8]) -> Result<Value, ApiError> {
        self.state.exclusive(|| {
            let snap = self.state.snapshot();
            let ri = Self::route_index(&snap, route_name)?;
            let route = &snap.config.routes[ri];
            let rs = &snap.route_states[ri];
            let asked: serde_json::Map<String, Value> = match serde_json::from_slice(body) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidRequest,
                        "the body must be a JSON object of backend name → weight, e.g. {\"aws-us-east-1\": 100, \"azure-eastus\": 0}",
                    ))
                }
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidJson,
                        format!("the body is not valid JSON: {e}"),
                    ))
                }
            };
            if asked.is_empty() {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "no weights given: name at least one of the route's backends",
                ));
            }
            // A backend named twice: which weight was meant? (A JSON map
            // would keep the last one without a word.)
            if let Ok(skygate_backends::json::RawMembers(members)) = serde_json::from_slice(body) {
                let mut names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
                names.sort_unstable();
                if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                    return Err(ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "`{}` is given twice: give each backend one weight",
                            skygate_config::clip(w[0])
                        ),
                    ));
                }
            }
            let current = effective_weights(&snap, route, ri);
            let mut next = current.clone();
            // Only the backends named here are overridden; the others keep
            // following the config (and a reload's changes to it).
            let mut by_backend: Vec<(String, u32)> = rs
                .overrides()
                .map(|o| o.by_backend.clone())
                .unwrap_or_default();
            for (name, w) in &asked {
                let Some(slot) = next.iter_mut().find(|(n, _)| n == name) else {
                    let targets: Vec<&str> = current.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "`{}` is not a target of route `{}`: its targets are [{}]",
                            clip(name),
                            route.name,
                            targets.join(", ")
                        ),
                    ));
                };
                let weight = w
                    .as_u64()
                    .filter(|w| *w <= u64::from(skygate_config::MAX_WEIGHT))
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorKind::InvalidRequest,
                            format!(
                                "the weight of `{}` must be an integer from 0 to {}",
                                clip(name),
                                skygate_config::MAX_WEIGHT
                            ),
                        )
                    })?;
                slot.1 = weight as u32;
                match by_backend.iter_mut().find(|(n, _)| n == name) {
                    Some(o) => o.1 = weight as u32,
                    None => by_backend.push((name.clone(), weight as u32)),
                }
            }
            if next.iter().all(|(_, w)| *w == 0) {
                return Err(ApiError::new(
                    ErrorKind::InvalidRequest,
                    "every weight would be 0: at least one target must keep a positive weight",
                ));
            }
            let changes: Vec<String> = current
                .iter()
                .zip(&next)
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, b)| format!("{} {} → {}", a.0, a.1, b.1))
                .collect();
            let o = WeightOverride { by_backend };
            self.state.replicas.hold(&[(
                replicas::weights_field(&route.name),
                replicas::weights_value(Some(&o)),
            )]);
            rs.set_overrides(Some(o));
            log::info!(
                "admin: route `{}` weights set at run time: {}",
                route.name,
                if changes.is_empty() {
                    "no change".to_string()
                } else {
                    changes.join(", ")
                }
            );
            Ok(route_view(&snap, ri))
        })
    }

    fn reset_weights(&self, route_name: &str) -> Result<Value, ApiError> {
        self.state.exclusive(|| {
            let snap = self.state.snapshot();
            let ri = Self::route_index(&snap, route_name)?;
            self.state
                .replicas
                .hold(&[(replicas::weights_field(route_name), String::new())]);
            if snap.route_states[ri].overrides().is_some() {
                snap.route_states[ri].set_overrides(None);
                log::info!(
                    "admin: route `{}` back to its configured weights",
                    snap.config.routes[ri].name
                );
            }
            Ok(route_view(&snap, ri))
        })
    }

    fn drain(&self, name: &str, drain: bool) -> Result<Value, ApiError> {
        self.state.exclusive(|| self.drain_now(name, drain))
    }

    /// Pings a backend now: `instances` of them at once (default: what the
    /// policy wants, at least 1). Not held to the schedule or the budget.
    fn prewarm(&self, name: &str, query: &str) -> Response<Vec<u8>> {
        let snap = self.state.snapshot();
        let b = match known_backend(&snap, name) {
            Ok(b) => b,
            Err(e) => return error(&e),
        };
        let mut k = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("instances", v)) => match v.parse::<u32>() {
                    Ok(n) if (1..=256).contains(&n) => k = Some(n),
                    _ => {
                        return error(&ApiError::new(
                            ErrorKind::InvalidRequest,
                            format!("`instances` must be 1 to 256, not `{}`", clip(v)),
                        ))
                    }
                },
                _ => {
                    return error(&ApiError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "unknown parameter `{}`: the only one is `instances`",
                            clip(pair)
                        ),
                    ))
                }
            }
        }
        let now = skygate_backends::routing::state::unix_ms();
        let k = k.unwrap_or_else(|| {
            b.state
                .warmth(now)
                .map_or(1, |w| w.target.max(b.config.prewarm.min_warm).max(1))
        });
        if !b
            .state
            .want_pings(k, skygate_backends::prewarm::Why::OnDemand)
        {
            return error(&ApiError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "backend `{}` has no warmth model: set `prewarm.idle_timeout` (kind `{}` has no known idle timeout)",
                    b.config.name,
                    b.config.kind.as_str()
                ),
            ));
        }
        log::info!(
            "admin: backend `{}`: {k} prewarm pings asked for",
            b.config.name
        );
        json(202, json!({ "backend": b.config.name, "pings": k }))
    }

    fn drain_now(&self, name: &str, drain: bool) -> Result<Value, ApiError> {
        let snap = self.state.snapshot();
        let b = known_backend(&snap, name)?;
        self.state.replicas.hold(&[(
            replicas::drained_field(&b.config.name),
            replicas::drained_value(drain),
        )]);
        let was = b.state.set_drained(drain);
        if was != drain {
            if drain {
                log::info!(
                    "admin: backend `{}` drained: no new requests; {} in flight finish where they are",
                    b.config.name,
                    b.state.in_flight()
                );
            } else {
                log::info!("admin: backend `{}` undrained", b.config.name);
            }
        }
        Ok(backend_view(&snap, b))
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let state = self.state.clone();
        match tokio::task::spawn_blocking(move || state.reload()).await {
            Ok(Ok(report)) => json(
                200,
                json!({
                    "status": "reloaded",
                    "changes": report.changes,
                    "needs_restart": report.needs_restart,
                }),
            ),
            Ok(Err(errors)) => {
                let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                log::warn!(
                    "admin: reload refused, still running the previous config:\n{}",
                    lines.join("\n")
                );
                error_with(
                    &ApiError::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "the new config has {} error(s); the running config is unchanged",
                            lines.len()
                        ),
                    ),
                    vec![("errors", json!(lines))],
                )
            }
            Err(e) => error(&ApiError::new(
                ErrorKind::Internal,
                format!("the reload did not finish: {e}"),
            )),
        }
    }
}

/// Each target's (backend name, effective weight), in target order.
fn effective_weights(snap: &Snapshot, route: &Route, ri: usize) -> Vec<(String, u32)> {
    let o = snap.route_states[ri].overrides();
    route
        .targets
        .iter()
        .map(|t| {
            let name = &snap.config.backends[t.backend].name;
            let w = o
                .as_ref()
                .and_then(|o| o.weight_of(name))
                .unwrap_or(t.weight);
            (name.clone(), w)
        })
        .collect()
}

fn route_view(snap: &Snapshot, ri: usize) -> Value {
    let route = &snap.config.routes[ri];
    let now = Instant::now();
    let effective = effective_weights(snap, route, ri);
    let targets: Vec<Value> = route
        .targets
        .iter()
        .zip(&effective)
        .map(|(t, (name, w))| {
            let b = &snap.backends[t.backend];
            json!({
                "backend": name,
                "priority": t.priority,
                "weight": t.weight,
                "effective_weight": w,
                "available": b.peer.load().is_ok() && b.state.check(now, &b.config).is_ok(),
            })
        })
        .collect();
    let path = match &route.path {
        skygate_config::PathMatch::Exact(p) => json!({ "path": p }),
        skygate_config::PathMatch::Prefix(p) => json!({ "path_prefix": p }),
    };
    json!({
        "name": route.name,
        "match": path,
        "models": route.models,
        "strategy": route.strategy.as_str(),
        "max_attempts": route.retries.max_attempts,
        "weights_overridden": snap.route_states[ri].overrides().is_some(),
        "targets": targets,
    })
}

fn backend_view(snap: &Snapshot, b: &BackendRt) -> Value {
    let now = Instant::now();
    let s = b.state.status(now);
    let mut routes = serde_json::Map::new();
    for (ri, route) in snap.config.routes.iter().enumerate() {
        let effective = effective_weights(snap, route, ri);
        for (t, (name, w)) in route.targets.iter().zip(&effective) {
            if *name == b.config.name {
                routes.insert(
                    route.name.clone(),
                    json!({ "weight": t.weight, "effective_weight": w, "priority": t.priority }),
                );
            }
        }
    }
    let c = &b.config;
    // Cold starts the platform reported (Lambda's log tail).
    let (cold_starts, last_cold) = b.state.cold_starts();
    let scheme = if c.url.tls { "https" } else { "http" };
    let address = match b.peer.load().as_ref() {
        Ok(r) => json!(r.addr.to_string()),
        Err(e) => json!(format!("unresolved: {e}")),
    };
    json!({
        "name": c.name,
        "kind": c.kind.as_str(),
        "cloud": c.cloud,
        "region": c.region,
        "url": format!("{scheme}://{}{}", c.url.authority(), c.url.base_path),
        "address": address,
        "health": s.health.as_str(),
        "health_checked": c.health_check.is_some(),
        "breaker": {
            "state": s.breaker.as_str(),
            "consecutive_failures": s.consecutive_failures,
            "opens": s.breaker_opens,
        },
        "throttled_for_ms": s.throttled_for.map(|d| d.as_millis() as u64),
        "drained": s.drained,
        "in_flight": s.in_flight,
        "max_in_flight": c.limits.max_in_flight,
        "latency_ms": s.latency.map(|d| d.as_secs_f64() * 1000.0),
        "available": b.peer.load().is_ok() && b.state.check(now, c).is_ok(),
        "cold_starts": cold_starts,
        "last_cold_start_unix_ms": last_cold.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64),
        "warm": warm_view(b),
        "routes": routes,
    })
}

/// The warmth model and prewarm state (`null` without a model).
fn warm_view(b: &BackendRt) -> Value {
    let now = skygate_backends::routing::state::unix_ms();
    let Some(w) = b.state.warmth(now) else {
        return Value::Null;
    };
    let p = &b.config.prewarm;
    let rfc3339 = |ms: u64| {
        jiff::Timestamp::from_millisecond(ms as i64)
            .map(|t| t.to_string())
            .ok()
    };
    json!({
        "mode": w.mode.as_str(),
        "warm_instances": w.warm_instances,
        "next_cold_at": w.cold_at.first().and_then(|&t| rfc3339(t)),
        "warm_until": w.cold_at.iter().filter_map(|&t| rfc3339(t)).collect::<Vec<_>>(),
        "target": w.target,
        "likely_cold": b.state.likely_cold(now),
        "idle_timeout_ms": p.idle_timeout.map(|d| d.as_millis() as u64),
        "cold_start_ms": w.cold_start_ms,
        "warm_latency_ms": w.warm_latency_ms,
        "pings": {
            "sent": w.pings_sent,
            "cold": w.pings_cold,
            "failed": w.pings_failed,
            "left_to_peer": w.peer_pings,
            "unsent": w.pings_unsent,
            "unsent_rounds": w.unsent_rounds,
            "today": w.pings_today,
            "daily_budget": p.daily_budget,
        },
        "user_requests": w.user_requests,
        "user_cold_starts": w.user_cold_starts,
        "next_plan_at": (w.next_plan_at != skygate_backends::prewarm::NEVER).then(|| rfc3339(w.next_plan_at)).flatten(),
        "last_reason": w.last_why.as_str(),
        "last_ping_at": w.last_ping.and_then(|(t, _)| rfc3339(t)),
        "last_ping_reason": w.last_ping.map(|(_, why)| why.as_str()),
        "gaps_learned": w.gaps_learned,
    })
}
