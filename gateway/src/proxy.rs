//! A request's story, read top to bottom: the only file that knows how a
//! request comes in and goes out. Each step hands off to the plugin chain,
//! the request parser or the upstream leg.
//!
//! Pingora's core reads and writes the HTTP/1 session; its proxy framework
//! (`pingora-proxy`'s `ProxyHttp` phases) is not used. Every request is
//! answered here: the upstream leg runs on pingora-core's connectors in
//! [`crate::forward`], because the framework's `upstream_peer` phases
//! re-send a body read in `request_filter` from a 64 KiB buffer
//! (ARCHITECTURE.md, "The upstream leg"); and without those phases the
//! framework was a per-request cost only: its session (cache and module
//! state), its phases' boxed futures, and a boxed copy of its whole
//! request future (about 15 KB, a tenth of the full pipeline's
//! instructions). [`edge::App::serve`] keeps what it did for us: 400 to a
//! malformed header, 405 to `CONNECT`, an error status when answering
//! failed before a response went out, and the connection kept for the
//! next request only after a whole exchange.

use crate::request::{self, Parsed};
use crate::runtime::Snapshot;
use crate::{edge, forward, observe, respond, State};
use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession as Session;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorSource, ErrorType};
use skygate_config::{ApiError, ErrorKind};
use skygate_plugins::{Decision, Incoming, RequestCtx};
use std::sync::Arc;

pub struct Gateway {
    pub state: Arc<State>,
}

/// A request's context: the typed request context the plugins share, and
/// the snapshot this request runs on from start to end (even across a
/// reload), loaded once.
pub struct Ctx {
    pub req: RequestCtx,
    snap: Option<Arc<Snapshot>>,
    /// Counted in flight from [`Gateway::answer`] until logged (or until the
    /// context is dropped, whatever ended the request).
    in_flight: Option<crate::InFlight>,
}

impl edge::App for Gateway {
    /// One request on a connection: its header (the connection loop,
    /// `edge.rs`, bounds the wait for it, and closes an idle connection at
    /// shutdown), its answer, its log line; the connection back for the
    /// next request when the exchange was whole.
    async fn serve(
        self: &Arc<Self>,
        mut session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let timer = session.take_connection_user_context();
        match session.read_request().await {
            Ok(true) => {}
            // The client closed the connection before a request.
            Ok(false) => return None,
            Err(e) => {
                if e.etype() == &ErrorType::InvalidHTTPHeader {
                    log::debug!("malformed request header: {e}");
                    if let Err(e) = session.respond_error(400).await {
                        log::debug!("could not answer a malformed header: {e}");
                    }
                } else {
                    log::debug!("reading a request header failed: {e}");
                }
                session.shutdown().await;
                return None;
            }
        }
        // The header is in: the connection loop's header timer stops.
        if let Some(timer) = timer {
            edge::header_read(timer);
        }
        if *shutdown.borrow() {
            // The last request on this connection.
            session.set_keepalive(None);
        }
        // `CONNECT` frames its message differently (RFC 9112 §6.3) and
        // asks for a tunnel: refused, as Pingora's proxy does.
        if session.req_header().method == http::Method::CONNECT {
            if let Err(e) = session.respond_error(405).await {
                log::debug!("could not refuse a CONNECT: {e}");
            }
            session.shutdown().await;
            return None;
        }
        let mut ctx = Ctx {
            req: RequestCtx::new(),
            snap: None,
            in_flight: None,
        };
        match self.answer(&mut session, &mut ctx).await {
            Ok(answered) => {
                if !answered && session.response_written().is_none() {
                    // Every path answers; should one not, the client gets
                    // a 500 and the connection closes, not a hang.
                    ctx.req.status = 500;
                    if let Err(e) = session.respond_error(500).await {
                        log::debug!("could not answer: {e}");
                    }
                }
                self.logging(&session, None, &mut ctx);
                let settings = HttpPersistentSettings::for_session(&session);
                session
                    .finish()
                    .await
                    .ok()
                    .flatten()
                    .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
            }
            Err(e) => {
                // Answering failed: an error status when no response went
                // out yet (nothing when the client's connection is what
                // failed), the log line, and the connection closed. The
                // status is the one Pingora's proxy gave by default
                // (`ProxyHttp::fail_to_proxy`, whose session type we no
                // longer have).
                let status = match e.etype() {
                    ErrorType::HTTPStatus(code) => *code,
                    _ => match e.esource() {
                        ErrorSource::Upstream => 502,
                        ErrorSource::Downstream => match e.etype() {
                            ErrorType::WriteError
                            | ErrorType::ReadError
                            | ErrorType::ConnectionClosed => 0,
                            _ => 400,
                        },
                        ErrorSource::Internal | ErrorSource::Unset => 500,
                    },
                };
                if status > 0 && session.response_written().is_none() {
                    ctx.req.status = status;
                    if let Err(w) = session.respond_error(status).await {
                        log::debug!("could not answer {status} after {e}: {w}");
                    }
                }
                self.logging(&session, Some(&e), &mut ctx);
                None
            }
        }
    }
}

impl Gateway {
    /// Answers the request: locally, from the cache, or from a backend.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx) -> pingora_error::Result<bool> {
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

    /// The request's end: settles its reservations, records its metrics,
    /// access log line and span.
    fn logging(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
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
}
