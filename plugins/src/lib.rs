//! Skygate's request-path plugins: ordered trait objects built from config.
//! Each answers [`Decision::Continue`], [`Decision::Respond`] (an error) or
//! [`Decision::Answer`] (a whole local response, e.g. a cache hit); the
//! [`Chain`] stops at the first answer. After that, every plugin sees the
//! response header ([`Plugin::on_response_header`], to add headers) and the
//! finished request ([`Plugin::on_complete`]: status, usage, bytes; to settle
//! token reservations or store a cache entry). Adding a plugin touches its
//! own module and one line in [`Chain::from_config`].

pub mod auth;
pub mod cache;
pub mod context;
pub mod hygiene;
pub mod policy;
pub mod ratelimit;

use async_trait::async_trait;
use bytes::Bytes;
pub use context::{CacheStatus, Identity, RequestCtx, TraceCtx, Try};
use pingora_http::RequestHeader;
pub use skygate_config::AuthMethod;
use skygate_config::{ApiError, Config};
use std::sync::Arc;

/// A plugin's answer.
#[derive(Debug)]
pub enum Decision {
    Continue,
    /// Answer the client now with an error; no backend is called.
    Respond(ApiError),
    /// Answer the client now with this response; no backend is called.
    Answer(LocalResponse),
}

/// A whole response a plugin answers with (the gateway adds the headers
/// every response carries).
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Bytes,
}

/// The request as the request hook sees it: header and whole body (the
/// route, model, stream flag, `max_tokens` and caller are in the context).
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub header: &'a RequestHeader,
    /// Empty for `GET /v1/models`.
    pub body: &'a [u8],
}

impl<'a> Incoming<'a> {
    /// A request with no body (`GET /v1/models`, and tests).
    pub fn header_only(header: &'a RequestHeader) -> Self {
        Self { header, body: b"" }
    }
}

/// Shared run-time state the plugins are built with: the in-memory store
/// and the Redis connection, both outliving any one config.
#[derive(Clone)]
pub struct Shared {
    pub local: Arc<skygate_state::Local>,
    /// `fail_open` limits' local share while Redis is down.
    pub fallback: Arc<skygate_state::Local>,
    pub redis: Arc<skygate_state::Redis>,
    /// The response cache's tiers and counters.
    pub cache: Arc<cache::Store>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            cache: cache::Store::new(&skygate_config::CacheConf::default()),
            local: Arc::new(skygate_state::Local::new(1 << 20)),
            fallback: Arc::new(skygate_state::Local::new(1 << 18)),
            redis: Arc::new(skygate_state::Redis::new()),
        }
    }
}

/// One step of the request path. Both hooks default to `Continue`.
#[async_trait]
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Runs on the request header, before the body is read: cheap checks
    /// (hygiene, authentication) that should not cost a body read.
    async fn on_headers(&self, _req: &mut RequestHeader, _ctx: &mut RequestCtx) -> Decision {
        Decision::Continue
    }

    /// Runs after the body is parsed and the route and model are known
    /// (policy, rate limits, cache lookup).
    async fn on_request(&self, _req: Incoming<'_>, _ctx: &mut RequestCtx) -> Decision {
        Decision::Continue
    }

    /// Runs on every response header the client gets (backend, local or
    /// error), after the gateway's own headers: add headers here (the map
    /// is written without a case map, so names are sent lower case).
    fn on_response_header(&self, _headers: &mut http::HeaderMap, _ctx: &RequestCtx) {}

    /// Runs once the request is done (answered, failed, or the client went
    /// away), before it is logged: status, usage and bytes are in `ctx`.
    fn on_complete(&self, _ctx: &mut RequestCtx) {}
}

/// The ordered plugins of one runtime snapshot.
#[derive(Clone, Default)]
pub struct Chain {
    plugins: Vec<Arc<dyn Plugin>>,
    /// The policy plugin, also asked by the admin API.
    policy: Option<Arc<policy::Authorize>>,
    /// Policies are configured but failed to load: everything is denied.
    policy_failed: bool,
    /// The rate-limit plugin, when limits are configured (metrics read it).
    ratelimit: Option<Arc<ratelimit::RateLimits>>,
}

impl Chain {
    /// The chain for `config`, in pipeline order, on `shared` state.
    pub fn from_config(config: &Config, shared: &Shared) -> Self {
        let mut plugins: Vec<Arc<dyn Plugin>> = vec![Arc::new(hygiene::Hygiene::new(
            &config.auth.trusted_proxies,
            &config.auth.identity_headers,
        ))];
        if let Some(auth) = auth::Authenticate::from_config(config) {
            plugins.push(Arc::new(auth));
        }
        let mut policy = None;
        let mut policy_failed = false;
        match policy::Authorize::from_config(config) {
            None => {}
            Some(Ok(p)) => {
                let p = Arc::new(p);
                policy = Some(p.clone());
                plugins.push(p);
            }
            Some(Err(errors)) => {
                // A checked config never gets here; fail closed if it does.
                log::error!(
                    "policies failed to load, every call is denied: {}",
                    errors.join("; ")
                );
                plugins.push(Arc::new(policy::DenyAll));
                policy_failed = true;
            }
        }
        // After authentication and policy: a hit only reaches a caller
        // allowed to call the route. The in-memory lookup before the rate
        // limits: they let a hit through request limits (it counts)
        // without token limits (it costs none), and it is sent once they
        // have passed it. The rest (the misses in flight, Redis, the
        // capture) after them: a request they refuse never leads or waits.
        let cache = cache::Cache::from_config(config, shared).map(Arc::new);
        if let Some(c) = &cache {
            plugins.push(c.clone());
        }
        let ratelimit = ratelimit::RateLimits::from_config(config, shared).map(Arc::new);
        if let Some(r) = &ratelimit {
            plugins.push(r.clone());
        }
        if let Some(c) = cache {
            plugins.push(Arc::new(cache::CacheFill(c)));
        }
        Self {
            plugins,
            policy,
            policy_failed,
            ratelimit,
        }
    }

    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self {
            plugins,
            policy: None,
            policy_failed: false,
            ratelimit: None,
        }
    }

    /// The rate-limit plugin, when limits are configured.
    pub fn ratelimit(&self) -> Option<&ratelimit::RateLimits> {
        self.ratelimit.as_deref()
    }

    /// The policy plugin, when `policy:` is configured.
    pub fn policy(&self) -> Option<&policy::Authorize> {
        self.policy.as_deref()
    }

    /// Policies are configured but could not be loaded (fail closed: the
    /// admin API denies too).
    pub fn policy_failed(&self) -> bool {
        self.policy_failed
    }

    pub async fn on_headers(&self, req: &mut RequestHeader, ctx: &mut RequestCtx) -> Decision {
        for p in &self.plugins {
            if let Decision::Respond(r) = p.on_headers(req, ctx).await {
                return Decision::Respond(r);
            }
        }
        Decision::Continue
    }

    pub async fn on_request(&self, req: Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        for p in &self.plugins {
            match p.on_request(req, ctx).await {
                Decision::Continue => {}
                Decision::Respond(e) => {
                    // A later plugin refused: what an earlier one found (a
                    // cache hit) is not what the client gets, and nothing
                    // is stored (waiters on this miss go now).
                    ctx.pending_answer = None;
                    ctx.cache_lookup = None;
                    ctx.cache_fill = None;
                    ctx.cache = CacheStatus::Bypass;
                    ctx.cached_tokens = None;
                    ctx.cache_hit_free = false;
                    return Decision::Respond(e);
                }
                answer => return answer,
            }
        }
        match ctx.pending_answer.take() {
            Some(r) => Decision::Answer(r),
            None => Decision::Continue,
        }
    }

    pub fn on_response_header(&self, headers: &mut http::HeaderMap, ctx: &RequestCtx) {
        for p in &self.plugins {
            p.on_response_header(headers, ctx);
        }
    }

    pub fn on_complete(&self, ctx: &mut RequestCtx) {
        for p in &self.plugins {
            p.on_complete(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_config::ErrorKind;

    struct Deny;
    #[async_trait]
    impl Plugin for Deny {
        fn name(&self) -> &'static str {
            "deny"
        }
        async fn on_request(&self, _req: Incoming<'_>, _ctx: &mut RequestCtx) -> Decision {
            Decision::Respond(ApiError::new(ErrorKind::Forbidden, "no"))
        }
    }

    struct Count(std::sync::atomic::AtomicU32);
    #[async_trait]
    impl Plugin for Count {
        fn name(&self) -> &'static str {
            "count"
        }
        async fn on_request(&self, _req: Incoming<'_>, _ctx: &mut RequestCtx) -> Decision {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Decision::Continue
        }
    }

    #[tokio::test]
    async fn chain_stops_at_first_answer() {
        let count = Arc::new(Count(0.into()));
        let chain = Chain::new(vec![count.clone(), Arc::new(Deny), count.clone()]);
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let d = chain
            .on_request(Incoming::header_only(&req), &mut RequestCtx::new())
            .await;
        assert!(matches!(d, Decision::Respond(e) if e.status() == 403));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
