//! The `ProxyHttp` impl: the only file that knows Pingora's phases. Read top
//! to bottom, it tells the story of a request; each step hands off to the
//! plugin chain, the request parser or the upstream leg.
//!
//! Every request is answered from `request_filter` (which returns `true`):
//! the upstream leg runs on pingora-core's connectors in [`crate::forward`],
//! not in Pingora's `upstream_peer` phases, because those re-send a body read
//! in `request_filter` from a 64 KiB buffer (ARCHITECTURE.md, "The upstream leg").

use crate::request::{self, Parsed};
use crate::runtime::Snapshot;
use crate::{edge, forward, observe, respond, State};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_proxy::{ProxyHttp, Session};
use skygate_config::{ApiError, ErrorKind};
use skygate_plugins::{Decision, Incoming, RequestCtx};
use std::any::Any;
use std::sync::Arc;

pub struct Gateway {
    pub state: Arc<State>,
}

/// Pingora's per-request context: the typed request context the plugins
/// share, and the snapshot this request runs on from start to end (even
/// across a reload), loaded once.
pub struct Ctx {
    pub req: RequestCtx,
    snap: Option<Arc<Snapshot>>,
    /// Counted in flight from `request_filter` until logged (or until the
    /// context is dropped, whatever ended the request).
    in_flight: Option<crate::InFlight>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            req: RequestCtx::new(),
            snap: None,
            in_flight: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora_error::Result<bool> {
        let Ctx {
            req: ctx,
            snap,
            in_flight,
        } = ctx;
        *in_flight = Some(self.state.enter());
        // Draining (SIGTERM): each connection ends after its answer, so
        // clients reconnect (through the load balancer, elsewhere) rather
        // than find their kept-alive connection closed under a request
        // when the listener stops.
        if self
            .state
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            session.set_keepalive(None);
        }
        let snap: &Snapshot = snap.insert(self.state.snapshot());
        ctx.request_id = crate::request_id(session.req_header());
        ctx.trace = crate::telemetry::start(&snap.config.telemetry, session.req_header());
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // On the TLS listener: the client certificate rustls verified.
        ctx.client_cert = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| {
                s.extension
                    .get::<std::sync::Arc<skygate_plugins::auth::mtls::ClientCert>>()
            })
            .cloned();

        // 1. Header-only plugins: hygiene, authentication.
        let chain = &snap.chain;
        if let Decision::Respond(e) = chain.on_headers(session.req_header_mut(), ctx).await {
            return respond::error(session, ctx, chain, &e).await;
        }
        // 2. Route by path, read and bound the body, route by model.
        let mut parsed = match request::parse(session, ctx, snap, &self.state.budget).await {
            Ok(p) => p,
            Err(e) => return respond::error(session, ctx, chain, &e).await,
        };
        // 3. Plugins that need the route and model: policy, limits, cache.
        let incoming = match &parsed {
            Parsed::Call(r) => Incoming {
                header: session.req_header(),
                body: &r.body,
            },
            Parsed::ListModels | Parsed::GetModel(_) => Incoming::header_only(session.req_header()),
        };
        match chain.on_request(incoming, ctx).await {
            Decision::Continue => {}
            Decision::Respond(e) => return respond::error(session, ctx, chain, &e).await,
            Decision::Answer(r) => return respond::local(session, ctx, chain, r).await,
        }
        // Every chat stream asks the backend for its usage (the client's
        // stream leaves that chunk out unless it asked too): token limits
        // settle by it, and the tokens metric, the access log and the trace
        // count streams as they count whole answers.
        if let Parsed::Call(routed) = &mut parsed {
            if ctx.stream || ctx.want_stream_usage {
                if let Err(e) = request::ask_stream_usage(routed, ctx) {
                    return respond::error(session, ctx, chain, &e).await;
                }
            }
        }
        // 4. Answer: locally, or from a backend.
        match parsed {
            Parsed::ListModels => {
                let body = match &ctx.visible_models {
                    // Filtered by policy: only what the caller may call.
                    Some(names) => crate::runtime::models_list(names.iter().map(String::as_str)),
                    None => snap.models_body.clone(),
                };
                respond::json(session, ctx, chain, 200, body).await
            }
            Parsed::GetModel(id) => {
                let known = match &ctx.visible_models {
                    Some(names) => names.contains(&id),
                    None => snap.models.binary_search(&id).is_ok(),
                };
                if !known {
                    let e = ApiError::new(
                        ErrorKind::ModelNotFound,
                        format!(
                            "the model `{}` does not exist or you do not have access to it",
                            skygate_config::clip(&id)
                        ),
                    );
                    return respond::error(session, ctx, chain, &e).await;
                }
                let body = Bytes::from(crate::runtime::model_object(&id).to_string());
                respond::json(session, ctx, chain, 200, body).await
            }
            Parsed::Call(routed) => forward::forward(&self.state, snap, session, ctx, routed).await,
        }
    }

    fn on_connection_reuse(&self, _: &mut Session, _: &mut Ctx, conn: Box<dyn Any + Send + Sync>) {
        // Pingora calls this right after reading a request header: stop the header timer.
        edge::header_read(conn);
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        // request_filter answers every request, so Pingora never gets here.
        Err(Error::explain(
            ErrorType::InternalError,
            "the upstream leg runs in request_filter",
        ))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let Ctx {
            req: ctx,
            snap,
            in_flight,
        } = ctx;
        let access_log = match &snap {
            Some(snap) => snap.config.server.access_log,
            None => self.state.snapshot().config.server.access_log,
        } == skygate_config::AccessLog::Stdout;
        if let Some(e) = e {
            if ctx.status == 0 {
                // Nothing was answered: the client went away (nginx's 499).
                ctx.status = 499;
            }
            log::debug!("request {} ended with {e}", ctx.request_id);
        }
        // Settle token reservations, free in-flight slots.
        if let Some(snap) = snap {
            snap.chain.on_complete(ctx);
        }
        let client = if access_log {
            session.client_addr().map(|a| match a.as_inet() {
                Some(inet) => {
                    let mut s = String::with_capacity(48);
                    skygate_config::push_socket_addr(&mut s, *inet);
                    s
                }
                None => a.to_string(),
            })
        } else {
            None
        };
        let req = session.req_header();
        observe::record(
            ctx,
            snap.as_deref(),
            req.method.as_str(),
            req.uri.path(),
            client.as_deref(),
            access_log,
        );
        crate::telemetry::finish(ctx, snap.as_deref(), req.method.as_str(), req.uri.path());
        // Uncounted once logged (the drain watcher then sees it done).
        drop(in_flight.take());
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // Failures are in the access log and metrics already.
        true
    }
}
