//! Writing answers the gateway makes itself: OpenAI-shaped errors and local
//! JSON responses, with the headers every response carries.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use pingora_core::protocols::http::ServerSession as Session;
use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr};
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, ErrorKind};
use skygate_plugins::{Chain, LocalResponse, RequestCtx};

/// Headers every response gets, then the plugins' (e.g. `x-ratelimit-*`).
///
/// Straight into the header map, by names built at compile time: Pingora's
/// `insert_header` parses each name and keeps a case map beside it (about
/// 2 k instructions a header, ten headers a response). The header is then
/// written without a case map (see [`no_case`]).
pub fn common_headers(
    h: &mut http::HeaderMap,
    ctx: &RequestCtx,
    chain: &Chain,
) -> pingora_error::Result<()> {
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    const CACHE: HeaderName = HeaderName::from_static("x-skygate-cache");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-skygate-attempts");
    h.reserve(10);
    let id = HeaderValue::from_str(ctx.request_id.as_str())
        .or_err(InvalidHTTPHeader, "invalid x-request-id")?;
    h.insert(REQUEST_ID, id);
    h.insert(CACHE, HeaderValue::from_static(ctx.cache.as_str()));
    h.insert(
        ATTEMPTS,
        HeaderValue::from_static(attempts_value(ctx.attempts)),
    );
    chain.on_response_header(h, ctx);
    Ok(())
}

/// A response header as its fields, to set headers in the map directly.
/// The header goes back with [`ResponseHeader::from`], without a case map:
/// names are written lower case (the dozen Pingora knows, `Content-Type`
/// and the like, title case). HTTP names are case-insensitive; HTTP/2 and
/// HTTP/3 send them lower case anyway.
pub fn no_case(h: ResponseHeader) -> http::response::Parts {
    h.into()
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

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
    let mut h = no_case(ResponseHeader::build_no_case(status, Some(13))?);
    h.headers.insert(header::CONTENT_TYPE, JSON.clone());
    h.headers.insert(header::CONTENT_LENGTH, body.len().into());
    common_headers(&mut h.headers, ctx, chain)?;
    ctx.response_bytes = body.len() as u64;
    session.write_response_header(Box::new(h.into())).await?;
    session.write_response_body(body, true).await?;
    Ok(true)
}

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

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
    let mut h = no_case(ResponseHeader::build_no_case(e.status(), Some(16))?);
    let m = &mut h.headers;
    m.insert(header::CONTENT_TYPE, JSON.clone());
    m.insert(header::CONTENT_LENGTH, body.len().into());
    common_headers(m, ctx, chain)?;
    if e.kind == ErrorKind::Unauthenticated {
        m.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"skygate\""),
        );
    }
    if let Some(methods) = e.allow {
        m.insert(header::ALLOW, HeaderValue::from_static(methods));
    }
    if let Some(d) = e.retry_after {
        // Whole seconds, at least one: `as u64` of a ceiled positive float.
        m.insert(
            header::RETRY_AFTER,
            (d.as_secs_f64().ceil().max(1.0) as u64).into(),
        );
        // The same to the millisecond, which the OpenAI SDKs read first.
        m.insert(
            RETRY_AFTER_MS,
            ((d.as_micros().div_ceil(1000)).max(1) as u64).into(),
        );
    }
    if e.retry_is_futile() {
        m.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    // A request whose body was not read to its end has switched keep-alive
    // off (`request::read_body`); said here too, though Pingora writes the
    // same `connection` header from the session's keep-alive state.
    if session.get_keepalive().is_none() {
        m.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    ctx.response_bytes = body.len() as u64;
    session.write_response_header(Box::new(h.into())).await?;
    session.write_response_body(body, true).await?;
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
    let mut h = no_case(ResponseHeader::build_no_case(
        r.status,
        Some(11 + r.headers.len()),
    )?);
    for (name, value) in r.headers {
        h.headers.insert(name, value);
    }
    h.headers
        .insert(header::CONTENT_LENGTH, r.body.len().into());
    common_headers(&mut h.headers, ctx, chain)?;
    ctx.response_bytes = r.body.len() as u64;
    ctx.first_byte = Some(std::time::Instant::now());
    session.write_response_header(Box::new(h.into())).await?;
    session.write_response_body(r.body, true).await?;
    Ok(true)
}
