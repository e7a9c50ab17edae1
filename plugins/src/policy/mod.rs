//! Authorization by Cedar policies (`policy:` in the config): deny by
//! default, forbid wins, every decision audited.
//!
//! After authentication and routing, each call is one Cedar request:
//! principal = the caller (`Skygate::ApiKey`, `User` or `Service`, with its
//! groups and tenant as parents), action = `invoke`, `stream` or `embed`,
//! resource = the model (in its route) or the function route, context =
//! client IP, mTLS, request size, estimated tokens, time. A permitted call
//! then asks `use_backend` of each target of its route: a forbid policy
//! (data residency, classification) takes the backend out of the router's
//! choice for this request. `GET /v1/models` lists only the models the caller
//! may call. `mode: shadow` decides and audits the same way but lets denied
//! requests through, so a new policy set can be watched before it enforces.
//!
//! - [`engine`]: Cedar: loading, validation, entities, one decision
//! - [`audit`]: the audit log's writer

pub mod audit;
mod decisions;
pub mod engine;
mod slice;

use crate::{Decision, Plugin, RequestCtx};
use async_trait::async_trait;
use engine::{Action, Engine, Facts, Kind, Subject};
use serde::Serialize;
use skygate_config::{ApiError, AuditLog, Config, ErrorKind, PolicyMode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Decisions since start, for `/metrics`.
pub struct Counters {
    pub allow: AtomicU64,
    pub deny: AtomicU64,
    /// Denials let through in shadow mode.
    pub shadow_deny: AtomicU64,
    /// Backends a forbid took out of a request's choice.
    pub backend_deny: AtomicU64,
    /// Call decisions answered by the decision cache, and made afresh.
    pub cache_hit: AtomicU64,
    pub cache_miss: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    allow: AtomicU64::new(0),
    deny: AtomicU64::new(0),
    shadow_deny: AtomicU64::new(0),
    backend_deny: AtomicU64::new(0),
    cache_hit: AtomicU64::new(0),
    cache_miss: AtomicU64::new(0),
};

/// (config path, message) pairs.
pub type Findings = Vec<(String, String)>;

/// What only the policy plugin can check in a config: the policies parse
/// and validate against the schema, authentication is on, the audit file
/// opens. Errors and warnings, each as (config path, message).
pub fn check(config: &Config) -> (Findings, Findings) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let Some(policy) = &config.policy else {
        return (errors, warnings);
    };
    match Engine::new(policy, config) {
        Ok(engine) => {
            if !engine.can_permit_admin() {
                warnings.push((
                    "policy.files".to_string(),
                    "no policy can permit the `admin` action: the admin API will answer 403 to everything but /healthz, /readyz and /identity/jwks.json (SIGHUP still reloads)".to_string(),
                ));
            }
        }
        Err(es) => errors.extend(es.into_iter().map(|e| ("policy.files".to_string(), e))),
    }
    if config.auth.api_keys.is_empty() && config.auth.jwt.is_empty() {
        errors.push((
            "policy".to_string(),
            "policies need callers with identities: configure auth.api_keys or auth.jwt (with no authentication every call would be denied)".to_string(),
        ));
    }
    if let AuditLog::File(path) = &policy.audit_log {
        // Checked without creating it (`validate` has no side effects).
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let problem = if path.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .err()
                .map(|e| format!("cannot append to the audit log `{}`: {e}", path.display()))
        } else if dir.is_some_and(|d| !d.is_dir()) {
            Some(format!(
                "the audit log's folder `{}` does not exist",
                dir.map_or_else(String::new, |d| d.display().to_string())
            ))
        } else {
            None
        };
        if let Some(e) = problem {
            errors.push(("policy.audit_log".to_string(), e));
        }
    }
    (errors, warnings)
}

/// The policy plugin of one runtime snapshot.
pub struct Authorize {
    engine: Arc<Engine>,
    mode: PolicyMode,
    audit: Arc<audit::Sink>,
    /// (route, model) of every model, sorted by model (for listings).
    models: Vec<(usize, String)>,
}

/// One audit line.
#[derive(Serialize)]
struct Line<'a> {
    ts_ms: u128,
    request_id: &'a str,
    principal: String,
    action: &'a str,
    resource: String,
    decision: &'static str,
    mode: &'static str,
    policies: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    backends_denied: &'a [BackendDenied],
    #[serde(skip_serializing_if = "Option::is_none")]
    visible_models: Option<usize>,
}

#[derive(Serialize)]
struct BackendDenied {
    backend: String,
    policies: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

fn ts_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Authorize {
    /// The plugin, when `policy:` is set. `Err` when the policies do not
    /// load (a checked config never does; the caller then denies all).
    pub fn from_config(config: &Config) -> Option<Result<Self, Vec<String>>> {
        let policy = config.policy.as_ref()?;
        let engine = match Engine::new(policy, config) {
            Ok(e) => Arc::new(e),
            Err(e) => return Some(Err(e)),
        };
        let mut models: Vec<(usize, String)> = config
            .routes
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.models.iter().map(move |m| (i, m.clone())))
            .collect();
        models.sort_by(|a, b| a.1.cmp(&b.1));
        Some(Ok(Self {
            engine,
            mode: policy.mode,
            audit: audit::sink(&policy.audit_log),
            models,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn mode_str(&self) -> &'static str {
        match self.mode {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Shadow => "shadow",
        }
    }

    fn count(&self, allow: bool) {
        let c = match (allow, self.mode) {
            (true, _) => &COUNTERS.allow,
            (false, PolicyMode::Enforce) => &COUNTERS.deny,
            (false, PolicyMode::Shadow) => &COUNTERS.shadow_deny,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the audit line `line` builds (not built when the log is off).
    fn write<'a>(&self, line: impl FnOnce() -> Line<'a>) {
        if !self.audit.enabled() {
            return;
        }
        match serde_json::to_vec(&line()) {
            Ok(bytes) => self.audit.write(bytes),
            Err(e) => log::error!("audit line: {e}"),
        }
    }

    /// The facts of this request, as policies see them.
    fn facts(ctx: &RequestCtx, route: &str) -> Facts {
        let (hour, weekday) = engine::hour_and_weekday(std::time::SystemTime::now());
        Facts {
            client_ip: ctx.client_ip,
            mtls: ctx.client_cert.is_some(),
            route: route.to_owned(),
            stream: ctx.stream,
            request_bytes: ctx.request_bytes as u64,
            // About 4 bytes a token, plus the output the request asks for.
            // (Saturating: a client's absurd max_tokens must not wrap to a small number.)
            estimated_tokens: (ctx.request_bytes as u64 / 4)
                .saturating_add(ctx.max_tokens.unwrap_or(0)),
            hour,
            weekday,
        }
    }

    fn forbidden(&self, message: String) -> Decision {
        Decision::Respond(ApiError::new(ErrorKind::Forbidden, message))
    }

    /// The admin API's check, after its token: `Err` is the 403 to send.
    pub fn admin(
        &self,
        part: &str,
        write: bool,
        client_ip: Option<std::net::IpAddr>,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let now = engine::hour_and_weekday(std::time::SystemTime::now());
        let v = self.engine.admin(part, write, client_ip, now);
        self.count(v.allow);
        self.write(|| Line {
            ts_ms: ts_ms(),
            request_id,
            principal: self.engine.admin_subject().uid().to_string(),
            action: Action::Admin.as_str(),
            resource: format!("Skygate::AdminApi::{:?}", skygate_config::clip(part)),
            decision: if v.allow { "allow" } else { "deny" },
            mode: self.mode_str(),
            policies: &v.policies,
            errors: &v.errors,
            client_ip,
            backends_denied: &[],
            visible_models: None,
        });
        if v.allow || self.mode == PolicyMode::Shadow {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::Forbidden,
                "the policy does not allow this admin request",
            ))
        }
    }

    /// `GET /v1/models`, or with `ctx.model` set `GET /v1/models/{model}`
    /// (decided over that model alone; denied when it is not visible, which
    /// the client sees as a 404, as OpenAI answers a model it hides).
    fn list_models(&self, who: &Subject, ctx: &mut RequestCtx) -> Decision {
        let one = ctx.model.as_deref();
        let visible = self.engine.visible(
            who,
            self.models
                .iter()
                .filter(|(_, m)| one.is_none_or(|o| o == m.as_str()))
                .map(|(r, m)| (*r, m.as_str())),
            &Self::facts(ctx, ""),
        );
        let mut names: Vec<String> = visible.into_iter().map(str::to_owned).collect();
        names.dedup();
        self.write(|| Line {
            ts_ms: ts_ms(),
            request_id: &ctx.request_id,
            principal: who.uid().to_string(),
            action: if one.is_some() {
                "get_model"
            } else {
                "list_models"
            },
            resource: match one {
                Some(m) => format!("Skygate::Model::{:?}", skygate_config::clip(m)),
                None => "Skygate::Model".into(),
            },
            // A model no route serves is no decision of the policies'.
            decision: match one {
                Some(m) if !self.models.iter().any(|(_, n)| n == m) => "not_found",
                Some(_) if names.is_empty() => "deny",
                _ => "allow",
            },
            mode: self.mode_str(),
            policies: &[],
            errors: &[],
            client_ip: ctx.client_ip,
            backends_denied: &[],
            visible_models: Some(names.len()),
        });
        if self.mode == PolicyMode::Enforce {
            ctx.visible_models = Some(names);
        }
        Decision::Continue
    }

    /// A decision that could not be made (an entity or context that does
    /// not build): denied, audited, logged.
    fn internal(&self, ctx: &RequestCtx, why: &str) -> Decision {
        log::error!("policy: request {}: {why}", ctx.request_id);
        self.count(false);
        let errors = [why.to_owned()];
        self.write(|| Line {
            ts_ms: ts_ms(),
            request_id: &ctx.request_id,
            principal: ctx
                .identity
                .as_ref()
                .map_or_else(String::new, |i| i.principal.id.clone()),
            action: "",
            resource: ctx.route_name.clone().unwrap_or_default(),
            decision: "deny",
            mode: self.mode_str(),
            policies: &[],
            errors: &errors,
            client_ip: ctx.client_ip,
            backends_denied: &[],
            visible_models: None,
        });
        if self.mode == PolicyMode::Shadow {
            return Decision::Continue;
        }
        self.forbidden("the policy could not decide this request".into())
    }
}

#[async_trait]
impl Plugin for Authorize {
    fn name(&self) -> &'static str {
        "policy"
    }

    async fn on_request(&self, _req: crate::Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        let Some(identity) = ctx.identity.as_ref() else {
            // Authentication runs first and answers 401 without a caller;
            // a route open to anyone has no principal to permit.
            self.count(false);
            return match self.mode {
                PolicyMode::Shadow => Decision::Continue,
                PolicyMode::Enforce => {
                    self.forbidden("the policy allows no anonymous request".into())
                }
            };
        };
        if ctx.list_models {
            let who = match self
                .engine
                .subject(&identity.principal, Kind::of(identity.method))
            {
                Ok(s) => s,
                Err(e) => return self.internal(ctx, &e),
            };
            return self.list_models(&who, ctx);
        }
        let Some(route) = ctx.route else {
            return Decision::Continue;
        };
        let route_name = ctx.route_name.as_deref().unwrap_or("");
        let facts = Self::facts(ctx, route_name);
        let operation = self
            .engine
            .operation(route)
            .unwrap_or(skygate_config::Operation::Function);
        let action = Action::of_call(operation, ctx.stream);
        let model = ctx.model.as_deref();
        // Permitted: which of its route's backends may it reach?
        let decided = match self.engine.authorize(
            &identity.principal,
            Kind::of(identity.method),
            action,
            route,
            model,
            &facts,
        ) {
            Ok(d) => d,
            Err(e) => return self.internal(ctx, &e),
        };
        let engine::CallVerdict {
            verdict: v,
            denied,
            no_backend,
        } = &decided.call;
        let no_backend = *no_backend;
        COUNTERS
            .backend_deny
            .fetch_add(denied.len() as u64, Ordering::Relaxed);
        self.count(v.allow);
        // Empty (no allocation) unless a forbid took a backend away.
        let denied_lines: Vec<BackendDenied> = denied
            .iter()
            .map(|(b, bv)| BackendDenied {
                backend: self.engine.backend_name(*b).to_owned(),
                policies: bv.policies.clone(),
                errors: bv.errors.clone(),
            })
            .collect();
        self.write(|| Line {
            ts_ms: ts_ms(),
            request_id: &ctx.request_id,
            principal: decided.principal.clone(),
            action: action.as_str(),
            resource: match model {
                Some(m) => format!("Skygate::Model::{m:?}"),
                None => format!("Skygate::Route::{route_name:?}"),
            },
            decision: if v.allow { "allow" } else { "deny" },
            mode: self.mode_str(),
            policies: &v.policies,
            errors: &v.errors,
            client_ip: ctx.client_ip,
            backends_denied: &denied_lines,
            visible_models: None,
        });
        match (v.allow, self.mode) {
            (_, PolicyMode::Shadow) => Decision::Continue,
            (true, PolicyMode::Enforce) => {
                ctx.forbidden_backends = denied.iter().map(|(b, _)| *b).collect();
                Decision::Continue
            }
            (false, PolicyMode::Enforce) if no_backend => self.forbidden(format!(
                "the policy allows none of the backends of route `{route_name}` for this request"
            )),
            (false, PolicyMode::Enforce) => self.forbidden(match model {
                Some(m) => format!("you are not allowed to {} model `{m}`", action.as_str()),
                None => format!(
                    "you are not allowed to {} route `{route_name}`",
                    action.as_str()
                ),
            }),
        }
    }
}

/// Stands in for a policy set that failed to load after its check passed
/// (it cannot, short of a bug): denies every call, fail closed.
pub struct DenyAll;

#[async_trait]
impl Plugin for DenyAll {
    fn name(&self) -> &'static str {
        "policy"
    }

    async fn on_request(&self, _req: crate::Incoming<'_>, _ctx: &mut RequestCtx) -> Decision {
        COUNTERS.deny.fetch_add(1, Ordering::Relaxed);
        Decision::Respond(ApiError::new(
            ErrorKind::Forbidden,
            "the policy could not be loaded: every call is denied",
        ))
    }
}

#[cfg(test)]
mod tests;
