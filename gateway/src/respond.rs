//! Writing answers the gateway makes itself: OpenAI-shaped errors and local
//! JSON responses, with the headers every response carries.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use skygate_config::{ApiError, ErrorKind};
use skygate_plugins::{Chain, LocalResponse, RequestCtx};

/// Headers every response gets, then the plugins' (e.g. `x-ratelimit-*`).
pub fn common_headers(
    h: &mut ResponseHeader,
    ctx: &RequestCtx,
    chain: &Chain,
) -> pingora_error::Result<()> {
    h.insert_header("x-request-id", ctx.request_id.as_str())?;
    h.insert_header(
        "x-skygate-cache",
        http::HeaderValue::from_static(ctx.cache.as_str()),
    )?;
    h.insert_header(
        "x-skygate-attempts",
        http::HeaderValue::from_static(attempts_value(ctx.attempts)),
    )?;
    chain.on_response_header(h, ctx);
    Ok(())
}

/// `x-skygate-attempts` without formatting (`retries.max_attempts` ≤ 10).
fn attempts_value(n: u32) -> &'static str {
    const V: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    V.get(n as usize).copied().unwrap_or("10+")
}

/// Answers with a JSON body.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    chain: &Chain,
    status: u16,
    body: Bytes,
) -> pingora_error::Result<bool> {
    ctx.status = status;
    let mut h = ResponseHeader::build(status, Some(6))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    common_headers(&mut h, ctx, chain)?;
    ctx.response_bytes = body.len() as u64;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Answers with an OpenAI-shaped error.
pub async fn error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    chain: &Chain,
    e: &ApiError,
) -> pingora_error::Result<bool> {
    ctx.error = Some(e.kind.code());
    ctx.status = e.status();
    let body = e.body();
    let mut h = ResponseHeader::build(e.status(), Some(8))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    common_headers(&mut h, ctx, chain)?;
    if e.kind == ErrorKind::Unauthenticated {
        h.insert_header(http::header::WWW_AUTHENTICATE, "Bearer realm=\"skygate\"")?;
    }
    if let Some(d) = e.retry_after {
        h.insert_header(
            http::header::RETRY_AFTER,
            d.as_secs_f64().ceil().max(1.0).to_string(),
        )?;
    }
    // A request whose body was not read to its end has switched keep-alive
    // off (`request::read_body`); said here too, though Pingora writes the
    // same `connection` header from the session's keep-alive state.
    if session.get_keepalive().is_none() {
        h.insert_header(http::header::CONNECTION, "close")?;
    }
    ctx.response_bytes = body.len() as u64;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Answers with a plugin's whole response (a cache hit, say).
pub async fn local(
    session: &mut Session,
    ctx: &mut RequestCtx,
    chain: &Chain,
    r: LocalResponse,
) -> pingora_error::Result<bool> {
    ctx.status = r.status;
    let mut h = ResponseHeader::build(r.status, Some(4 + r.headers.len()))?;
    for (name, value) in r.headers {
        h.insert_header(name, value)?;
    }
    h.insert_header(http::header::CONTENT_LENGTH, r.body.len().to_string())?;
    common_headers(&mut h, ctx, chain)?;
    ctx.response_bytes = r.body.len() as u64;
    ctx.first_byte = Some(std::time::Instant::now());
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(r.body), true).await?;
    Ok(true)
}
