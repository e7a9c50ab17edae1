//! Skygate's request-path plugins: ordered trait objects built from config.
//! Each answers [`Decision::Continue`] or [`Decision::Respond`]; the [`Chain`]
//! stops at the first answer. Adding a plugin touches its own module and one
//! line in [`Chain::from_config`].

pub mod auth;
pub mod context;
pub mod hygiene;
pub mod policy;

use async_trait::async_trait;
pub use context::{CacheStatus, Identity, RequestCtx, Try};
use pingora_http::RequestHeader;
pub use skygate_config::AuthMethod;
use skygate_config::{ApiError, Config};
use std::sync::Arc;

/// A plugin's answer.
#[derive(Debug)]
pub enum Decision {
    Continue,
    /// Answer the client now; no backend is called.
    Respond(ApiError),
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
    async fn on_request(&self, _req: &RequestHeader, _ctx: &mut RequestCtx) -> Decision {
        Decision::Continue
    }
}

/// The ordered plugins of one runtime snapshot.
#[derive(Clone, Default)]
pub struct Chain {
    plugins: Vec<Arc<dyn Plugin>>,
    /// The policy plugin, also asked by the admin API.
    policy: Option<Arc<policy::Authorize>>,
    /// Policies are configured but failed to load: everything is denied.
    policy_failed: bool,
}

impl Chain {
    /// The chain for `config`, in pipeline order.
    pub fn from_config(config: &Config) -> Self {
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
        Self {
            plugins,
            policy,
            policy_failed,
        }
    }

    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self {
            plugins,
            policy: None,
            policy_failed: false,
        }
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

    pub async fn on_request(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Decision {
        for p in &self.plugins {
            if let Decision::Respond(r) = p.on_request(req, ctx).await {
                return Decision::Respond(r);
            }
        }
        Decision::Continue
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
        async fn on_request(&self, _req: &RequestHeader, _ctx: &mut RequestCtx) -> Decision {
            Decision::Respond(ApiError::new(ErrorKind::Forbidden, "no"))
        }
    }

    struct Count(std::sync::atomic::AtomicU32);
    #[async_trait]
    impl Plugin for Count {
        fn name(&self) -> &'static str {
            "count"
        }
        async fn on_request(&self, _req: &RequestHeader, _ctx: &mut RequestCtx) -> Decision {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Decision::Continue
        }
    }

    #[tokio::test]
    async fn chain_stops_at_first_answer() {
        let count = Arc::new(Count(0.into()));
        let chain = Chain::new(vec![count.clone(), Arc::new(Deny), count.clone()]);
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let d = chain.on_request(&req, &mut RequestCtx::new()).await;
        assert!(matches!(d, Decision::Respond(e) if e.status() == 403));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
