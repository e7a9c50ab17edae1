//! The upstream leg of a request: the router picks a target, the backend's
//! adapter rewrites the request, the upstream client sends it, and the answer
//! streams back to the client chunk by chunk.

use crate::request::Routed;
use crate::respond;
use crate::runtime::Snapshot;
use crate::State;
use pingora_proxy::Session;
use skygate_backends::{Adapter, Call, UsageTail};
use skygate_config::{ApiError, ErrorKind};
use skygate_plugins::RequestCtx;
use std::time::Instant;

/// Serves a routed request from a backend. `Err` only when the response was
/// cut after its first byte and cannot end cleanly (Pingora then closes the
/// connection, so the client sees a truncated response, never a silent end).
pub async fn forward(
    state: &State,
    snap: &Snapshot,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: Routed,
) -> pingora_error::Result<bool> {
    let r = &snap.config.routes[routed.route];
    let Some(target) = skygate_backends::router::pick_weighted(&r.targets, &mut rand::thread_rng())
    else {
        let e = ApiError::new(
            ErrorKind::Unavailable,
            format!("route `{}` has no target with a positive weight", r.name),
        );
        return respond::error(session, ctx, &e).await;
    };
    let b = &snap.backends[target.backend];
    ctx.backend = Some(b.config.name.clone());
    ctx.attempts += 1;

    let call = Call {
        operation: routed.operation,
        method: &session.req_header().method,
        path_suffix: &routed.path_suffix,
        client: session.req_header(),
        request_id: &ctx.request_id,
        body: &routed.body,
    };

    let peer = match &b.peer {
        Ok(peer) => peer,
        Err(why) => {
            let e = ApiError::new(
                ErrorKind::UpstreamUnreachable,
                format!("backend `{}` is unreachable: {why}", b.config.name),
            );
            upstream_error(&b.config.name, &e);
            return respond::error(session, ctx, &e).await;
        }
    };
    let mut resp = match state
        .upstream
        .send(&b.config, peer, || b.adapter.prepare(&b.config, &call))
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            upstream_error(&b.config.name, &e);
            return respond::error(session, ctx, &e).await;
        }
    };
    ctx.first_byte = Some(Instant::now());

    let Some(mut header) = resp.take_header() else {
        let e = ApiError::new(
            ErrorKind::UpstreamFailed,
            format!("backend `{}` sent no response header", b.config.name),
        );
        return respond::error(session, ctx, &e).await;
    };
    b.adapter.response_header(&mut header);
    respond::common_headers(&mut header, ctx)?;
    header.insert_header("x-skygate-backend", b.config.name.as_str())?;
    ctx.status = header.status.as_u16();
    let sse = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    session
        .write_response_header(Box::new(header), false)
        .await?;

    let mut tail = UsageTail::default();
    loop {
        match resp.next_chunk().await {
            Ok(Some(chunk)) => {
                let chunk = b.adapter.response_chunk(chunk);
                tail.push(&chunk);
                ctx.response_bytes += chunk.len() as u64;
                session
                    .write_response_body(Some(chunk), false)
                    .await
                    .inspect_err(|_| ctx.error = Some("client_closed"))?;
            }
            Ok(None) => {
                // Pool the connection before the client sees the end, so
                // its next request finds it there.
                state
                    .upstream
                    .release(resp, peer, b.config.pool_idle_timeout)
                    .await;
                session
                    .write_response_body(None, true)
                    .await
                    .inspect_err(|_| ctx.error = Some("client_closed"))?;
                break;
            }
            Err(e) => {
                upstream_error(&b.config.name, &e);
                ctx.error = Some(e.kind.code());
                if sse {
                    // A stream that fails after its first byte ends with an
                    // error event, never a silent cut.
                    let event = e.sse_event();
                    ctx.response_bytes += event.len() as u64;
                    session.write_response_body(Some(event), true).await?;
                    break;
                }
                return Err(pingora_error::Error::explain(
                    pingora_error::ErrorType::ReadError,
                    e.to_string(),
                ));
            }
        }
    }
    // A response that failed mid-way was dropped with its connection.
    if let Some(u) = tail.usage() {
        ctx.prompt_tokens = u.prompt_tokens;
        ctx.completion_tokens = u.completion_tokens;
    }
    Ok(true)
}

/// Counts a failed attempt. The access log (written off the request path)
/// carries the error code per request; a `warn!` here would be a blocking
/// stderr write on every request of a backend outage, so it is `debug!`.
fn upstream_error(backend: &str, e: &ApiError) {
    if let Some(m) = crate::metrics::get() {
        m.upstream_errors
            .with_label_values(&[backend, e.kind.code()])
            .inc();
    }
    log::debug!("{e}");
}
