//! The serverless kinds that answer in their own format: AWS Lambda and
//! Bedrock (signed with SigV4, credentials from [`aws`]). Each builds its
//! request in `prepare` and hands back a [`Reply`] that turns the platform's
//! answer into the client's: whole (a JSON envelope, an error) or chunk by
//! chunk (an event stream becoming SSE).

pub mod aws;
pub mod azure;
pub mod bedrock;
pub mod eventstream;
pub mod gcp;
pub mod lambda;
pub mod lambda_url;
pub mod openwhisk;
pub mod renew;
pub mod sagemaker;

use crate::adapter::Call;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, ErrorKind, Operation, Retry};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most bytes of a platform's answer read whole (an envelope to open or
/// a body to translate). Lambda's synchronous payload limit is 6 MB (8 MB
/// as base64 in an `http_event` envelope); Bedrock's answers are far smaller.
pub const WHOLE_LIMIT: usize = 16 << 20;

/// The most bytes of a platform's error body read (the rest is dropped).
pub const ERROR_LIMIT: usize = 64 << 10;

/// How a platform's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAs {
    /// All of it, then [`Reply::whole`].
    Whole,
    /// Chunk by chunk through [`Reply::chunk`].
    Stream,
    /// Untouched: the answer is already the client's (an OpenAI-compatible
    /// platform's success).
    Pass,
}

/// Turns one attempt's platform answer into the client's. Built by the
/// adapter's `prepare`, so it knows what the client asked (a stream, the
/// model name, usage).
pub trait Reply: Send + Sync {
    /// Sees the platform's header; says how to read its body.
    fn read(&mut self, header: &ResponseHeader) -> ReadAs;

    /// The client's whole response from the platform's whole body. A
    /// platform error becomes an OpenAI-shaped error response with the
    /// status a client expects (so a 429 or 5xx is retried like any other);
    /// `Err` is an answer that cannot be read at all.
    fn whole(&mut self, header: &ResponseHeader, body: Bytes) -> Result<Synth, ApiError>;

    /// The client's response header of a streamed answer.
    fn stream_header(&mut self, header: &mut ResponseHeader) -> Result<(), ApiError>;

    /// One chunk of the platform's stream in, the client's bytes appended to
    /// `out`. `Err` ends the stream (the client gets an error event).
    fn chunk(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), ApiError>;

    /// The platform's stream ended: the last bytes, or why it is not whole.
    fn end(&mut self, out: &mut BytesMut) -> Result<(), ApiError>;

    /// Whether the platform reported that this call started a new instance.
    fn cold_start(&self) -> bool {
        false
    }

    /// A stream that failed before its first byte: the function's own
    /// failure as a final answer (not retried, no breaker failure), when
    /// that is what it was. `None`: a platform failure, retried.
    fn early_failure(&mut self) -> Option<Synth> {
        None
    }

    /// Whether the platform's stream has said its last word (Lambda's
    /// `InvokeComplete`, Bedrock's `metadata`): the stream ends then, even
    /// if the platform keeps the connection open.
    fn finished(&self) -> bool {
        false
    }
}

/// A response built by the gateway from a platform's answer.
#[derive(Debug)]
pub struct Synth {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The platform worked and the failure is the function's own (it
    /// raised, its action failed): the answer is final, never retried (the
    /// function may have had effects) and no failure of the backend for its
    /// breaker (one client's bad input must not shut the route).
    pub conclusive: bool,
}

impl Synth {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: Some(HeaderValue::from_static("application/json")),
            headers: Vec::new(),
            body: body.into(),
            conclusive: false,
        }
    }

    /// Marks a function's own failure (see [`Synth::conclusive`]).
    pub fn conclusive(mut self) -> Self {
        self.conclusive = true;
        self
    }

    /// An OpenAI-shaped error: `{"error":{"message","type","param","code"}}`.
    pub fn error(status: u16, kind: &str, code: &str, message: &str) -> Self {
        let body = serde_json::json!({
            "error": {"message": message, "type": kind, "param": null, "code": code}
        });
        Self::json(status, body.to_string())
    }

    /// With `retry-after` (seconds), for 429 and 503.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
        self
    }

    /// The response header the client gets.
    pub fn header(&self) -> Result<ResponseHeader, ApiError> {
        let mut h = ResponseHeader::build(self.status, Some(4)).map_err(bad_header)?;
        for (k, v) in &self.headers {
            h.append_header(k.clone(), v.clone()).map_err(bad_header)?;
        }
        if let Some(ct) = &self.content_type {
            h.insert_header(header::CONTENT_TYPE, ct.clone())
                .map_err(bad_header)?;
        }
        h.insert_header(header::CONTENT_LENGTH, self.body.len())
            .map_err(bad_header)?;
        Ok(h)
    }
}

fn bad_header(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamFailed,
        format!("the backend's answer does not make a response header: {e}"),
    )
}

/// A platform answer that does not read as the platform's format.
pub fn malformed(backend: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamFailed,
        format!("backend `{backend}` sent an answer Skygate cannot read: {what}"),
    )
}

/// A streamed response header: SSE, no length, no caching by intermediaries.
pub fn sse_header(header: &mut ResponseHeader) -> Result<(), ApiError> {
    let keep: Vec<HeaderName> = header
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amzn-requestid"))
        .cloned()
        .collect();
    let mut fresh = ResponseHeader::build(200, Some(4)).map_err(bad_header)?;
    for k in keep {
        if let Some(v) = header.headers.get(&k) {
            fresh.insert_header(k, v.clone()).map_err(bad_header)?;
        }
    }
    fresh
        .insert_header(header::CONTENT_TYPE, "text/event-stream")
        .map_err(bad_header)?;
    fresh
        .insert_header(header::CACHE_CONTROL, "no-cache")
        .map_err(bad_header)?;
    *header = fresh;
    Ok(())
}

/// An AWS service's own error (`x-amzn-errortype`, or the body's `__type`
/// or `Type`, and its `message`) as the client's error.
pub fn aws_service_error(
    backend: &str,
    service: &str,
    header: &ResponseHeader,
    body: &[u8],
) -> Synth {
    let status = header.status.as_u16();
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let kind = header
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(':').next().unwrap_or(t).to_string())
        .or_else(|| {
            v.get("Type")
                .and_then(|t| t.as_str())
                .filter(|t| *t != "User")
                .map(str::to_string)
        })
        .or_else(|| {
            v.get("__type")
                .and_then(|t| t.as_str())
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        })
        .unwrap_or_else(|| format!("status {status}"));
    let kind = skygate_config::clip(&kind).into_owned();
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let lower = kind.to_ascii_lowercase();
    let auth = matches!(status, 401 | 403)
        || [
            "accessdenied",
            "signature",
            "unrecognizedclient",
            "expiredtoken",
        ]
        .iter()
        .any(|k| lower.contains(k));
    // A refusal of the gateway's own credentials may name its account and
    // role: the client gets the exception's name, the log the rest.
    let text = if auth {
        log::debug!("backend `{backend}` ({service}): {kind}: {message}");
        format!("backend `{backend}` ({service}) refused the gateway's credentials ({kind})")
    } else {
        format!(
            "backend `{backend}` ({service}): {kind}: {}",
            skygate_config::clip(message)
        )
    };
    aws_error(status, &kind, &text, header)
}

/// The status and OpenAI type a client expects for an AWS service error.
pub fn aws_error(status: u16, kind: &str, text: &str, header: &ResponseHeader) -> Synth {
    let retry_after = header
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let lower = kind.to_ascii_lowercase();
    if lower.contains("throttl")
        || lower.contains("toomanyrequests")
        || lower.contains("quotaexceeded")
        || status == 429 && !lower.contains("notready")
    {
        return Synth::error(429, "rate_limit_error", "throttled", text)
            .retry_after(retry_after.unwrap_or(1));
    }
    if lower.contains("notready")
        || lower.contains("serviceunavailable")
        || lower.contains("resourceconflict")
        || lower.contains("resourcenotready")
    {
        return Synth::error(503, "service_unavailable", "backend_not_ready", text)
            .retry_after(retry_after.unwrap_or(1));
    }
    if lower.contains("timeout") {
        return Synth::error(504, "upstream_error", "backend_timeout", text);
    }
    if lower.contains("validation")
        || lower.contains("invalidrequestcontent")
        || lower.contains("unsupportedmediatype")
    {
        return Synth::error(400, "invalid_request_error", "invalid_request", text);
    }
    if lower.contains("toolarge") || status == 413 {
        return Synth::error(413, "invalid_request_error", "request_too_large", text);
    }
    if matches!(status, 401 | 403)
        || lower.contains("accessdenied")
        || lower.contains("signature")
        || lower.contains("unrecognizedclient")
        || lower.contains("expiredtoken")
    {
        return Synth::error(502, "upstream_error", "backend_auth_failed", text);
    }
    Synth::error(502, "upstream_error", "backend_error", text)
}

/// A platform that answers successes as the client expects them and only
/// needs its failures mapped (its own error bodies, auth failures that are
/// the gateway's fault, not the client's).
pub struct MapErrors {
    pub backend: String,
    /// The client's error for the platform's failure; `None` passes it on.
    pub map: fn(&str, &ResponseHeader, &[u8]) -> Option<Synth>,
    /// The client asked for a stream: a whole JSON completion is replayed
    /// as SSE.
    pub replay: Option<Replay>,
    /// A function route's call: a 500 is the function's own failure, passed
    /// on as it is and final (as the attempt loop takes a plain backend's).
    pub function: bool,
}

impl MapErrors {
    pub fn new(
        backend: &str,
        call: &Call<'_>,
        map: fn(&str, &ResponseHeader, &[u8]) -> Option<Synth>,
    ) -> Self {
        Self {
            backend: backend.to_string(),
            map,
            replay: Replay::for_call(call),
            function: call.operation == Operation::Function,
        }
    }
}

/// A stream request that may get a whole answer.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    pub include_usage: bool,
}

impl Replay {
    /// `Some` for a chat request with `stream: true`.
    pub fn for_call(call: &Call<'_>) -> Option<Self> {
        (call.stream && call.operation == Operation::ChatCompletions).then(|| Self {
            include_usage: include_usage(call.body),
        })
    }

    /// A whole 200 JSON completion as the SSE stream the client asked for.
    pub fn apply(self, synth: &mut Synth) {
        let json = synth
            .content_type
            .as_ref()
            .is_some_and(|c| c.as_bytes().starts_with(b"application/json"));
        if synth.status != 200 || !json {
            return;
        }
        if let Some(sse) = skygate_config::sse::completion_to_sse(&synth.body, self.include_usage) {
            synth.body = Bytes::from(sse);
            synth.content_type = Some(HeaderValue::from_static("text/event-stream"));
            synth
                .headers
                .push((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
        }
    }
}

/// Whether a header says JSON.
pub fn is_json(header: &ResponseHeader) -> bool {
    header
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/json"))
}

/// `stream_options.include_usage` of a chat request.
pub fn include_usage(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Opts {
        include_usage: Option<bool>,
    }
    #[derive(serde::Deserialize)]
    struct Req {
        stream_options: Option<Opts>,
    }
    serde_json::from_slice::<Req>(body)
        .ok()
        .and_then(|r| r.stream_options?.include_usage)
        .unwrap_or(false)
}

impl Reply for MapErrors {
    fn read(&mut self, header: &ResponseHeader) -> ReadAs {
        // A 202 is an asynchronous platform's "not done yet": its mapping
        // decides. A JSON answer to a stream request is replayed as SSE.
        let status = header.status.as_u16();
        let replay = self.replay.is_some() && status == 200 && is_json(header);
        if header.status.is_success() && status != 202 && !replay {
            ReadAs::Pass
        } else {
            ReadAs::Whole
        }
    }

    fn whole(&mut self, header: &ResponseHeader, body: Bytes) -> Result<Synth, ApiError> {
        let function_failed = self.function && header.status.as_u16() == 500;
        if !function_failed {
            if let Some(s) = (self.map)(&self.backend, header, &body) {
                return Ok(s);
            }
        }
        let mut s = Synth {
            status: header.status.as_u16(),
            content_type: header.headers.get(header::CONTENT_TYPE).cloned(),
            headers: Vec::new(),
            body,
            conclusive: function_failed,
        };
        if let Some(v) = header.headers.get(header::RETRY_AFTER) {
            s.headers.push((header::RETRY_AFTER, v.clone()));
        }
        if let Some(r) = self.replay {
            r.apply(&mut s);
        }
        Ok(s)
    }

    fn stream_header(&mut self, _header: &mut ResponseHeader) -> Result<(), ApiError> {
        Ok(())
    }

    fn chunk(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), ApiError> {
        out.extend_from_slice(chunk);
        Ok(())
    }

    fn end(&mut self, _out: &mut BytesMut) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The common mapping of an HTTP platform's failure: the backend's
/// credentials refused (401, 403) is a 502 (the client's own are fine);
/// throttling a 429 with `retry-after`; a 5xx a 502 in OpenAI's shape.
/// Other statuses pass on.
pub fn map_http_failure(
    backend: &str,
    service: &str,
    header: &ResponseHeader,
    body: &[u8],
) -> Option<Synth> {
    let status = header.status.as_u16();
    let detail = error_detail(body);
    let text = format!("backend `{backend}` ({service}) answered {status}{detail}");
    let retry_after = header
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match status {
        401 | 403 => Some(Synth::error(
            502,
            "upstream_error",
            "backend_auth_failed",
            &text,
        )),
        429 => Some(
            Synth::error(429, "rate_limit_error", "throttled", &text)
                .retry_after(retry_after.unwrap_or(1)),
        ),
        500..=599 => Some(Synth::error(502, "upstream_error", "backend_error", &text)),
        _ => None,
    }
}

/// `: message` from a platform's JSON error body, when it has one.
fn error_detail(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let m = v
        .pointer("/error/message")
        .or_else(|| v.get("error"))
        .or_else(|| v.get("message"))
        .or_else(|| v.get("Message"))
        .and_then(|m| m.as_str());
    match m {
        Some(m) => format!(": {}", skygate_config::clip(m)),
        None => String::new(),
    }
}

/// An error event in a platform's stream (an exception, a failed
/// invocation), with the kind and retry class its name implies: before the
/// first byte reaches the client the attempt fails with it (a throttled
/// start is retried like a 429); after, it becomes the stream's error event.
pub fn stream_exception(backend: &str, service: &str, name: &str, message: &str) -> ApiError {
    let text = format!(
        "backend `{backend}` ({service}) failed in its stream ({name}): {}",
        skygate_config::clip(message)
    );
    let lower = name.to_ascii_lowercase();
    if lower.contains("throttl") || lower.contains("toomanyrequests") {
        ApiError::new(ErrorKind::RateLimited, text)
            .retryable(Retry::Throttled)
            .with_retry_after(std::time::Duration::from_secs(1))
    } else if lower.contains("notready") || lower.contains("unavailable") {
        ApiError::new(ErrorKind::Unavailable, text).retryable(Retry::ServerError)
    } else if lower.contains("validation") {
        ApiError::new(ErrorKind::InvalidRequest, text)
    } else {
        ApiError::new(ErrorKind::UpstreamFailed, text).retryable(Retry::ServerError)
    }
}

/// The message of an exception event: its `:error-message` header, or
/// its JSON payload's `message` / `Message`.
pub fn event_message(event: &eventstream::Event) -> String {
    event
        .error_message
        .clone()
        .or_else(|| {
            let v: serde_json::Value = serde_json::from_slice(&event.payload).ok()?;
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The client's header of a platform's byte stream: SSE for a chat
/// stream, else opaque bytes.
pub fn stream_header(sse: bool, header: &mut ResponseHeader) -> Result<(), ApiError> {
    if sse {
        return sse_header(header);
    }
    let mut fresh = ResponseHeader::build(200, Some(2)).map_err(bad_header)?;
    fresh
        .insert_header(header::CONTENT_TYPE, "application/octet-stream")
        .map_err(bad_header)?;
    *header = fresh;
    Ok(())
}

/// The request to a platform that is plain HTTP (a function URL, a Cloud
/// Run service): chat and embeddings to `{url}/chat/completions` and
/// `{url}/embeddings`, function routes to `{url}{rest of the path}` with
/// the client's method and content encoding.
pub fn http_request(
    backend: &skygate_config::Backend,
    call: &Call<'_>,
) -> Result<pingora_http::RequestHeader, ApiError> {
    let (method, mut path) = match call.operation {
        Operation::Function => (
            call.method.clone(),
            format!("{}{}", backend.url.base_path, call.path_suffix),
        ),
        op => (
            http::Method::POST,
            format!("{}{}", backend.url.base_path, op.upstream_suffix()),
        ),
    };
    if path.is_empty() || path.starts_with('?') {
        path.insert(0, '/');
    }
    let mut h = crate::adapter::base_header(backend, &method, &path, call, call.body.len())?;
    if call.operation == Operation::Function {
        if let Some(v) = call.client.headers.get(header::CONTENT_ENCODING) {
            h.insert_header(header::CONTENT_ENCODING, v.clone())
                .map_err(crate::adapter::internal)?;
        }
    }
    Ok(h)
}

/// `Authorization: Bearer <token>`, marked sensitive.
pub fn insert_bearer(h: &mut pingora_http::RequestHeader, token: &str) -> Result<(), ApiError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| crate::adapter::internal("a bearer token is not valid header text"))?;
    v.set_sensitive(true);
    h.insert_header(header::AUTHORIZATION, v)
        .map_err(crate::adapter::internal)?;
    Ok(())
}

/// A backend whose credentials the background chain has not found (yet):
/// a 503 that another target may serve (nothing was sent).
pub fn no_credentials(backend: &str, what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Unavailable,
        format!("backend `{backend}` has no {what} yet"),
    )
    .retryable(Retry::Connect)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Percent-encodes one URL path segment the way the AWS SDKs do (every
/// byte but unreserved ones), so a `:` in an ARN or model id is `%3A`.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a function route a platform's 500 is the function's own failure:
    /// passed on as it is, final; elsewhere the platform failed (a 502).
    #[test]
    fn a_function_routes_500_passes_on_final() {
        let header = ResponseHeader::build(500, None).unwrap();
        let body = Bytes::from_static(br#"{"error":"boom"}"#);
        for (function, status, conclusive) in [(true, 500, true), (false, 502, false)] {
            let mut m = MapErrors {
                backend: "b".into(),
                map: |b, h, body| map_http_failure(b, "Cloud Run", h, body),
                replay: None,
                function,
            };
            let s = m.whole(&header, body.clone()).unwrap();
            assert_eq!((s.status, s.conclusive), (status, conclusive), "{function}");
        }
    }
}
