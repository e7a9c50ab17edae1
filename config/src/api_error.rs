//! The one error type at the edge: HTTP status, OpenAI-style `type`/`code`,
//! whose fault it was and whether another attempt may succeed. It becomes a
//! response (or a Pingora error) only at the edge (`gateway/src/respond.rs`).

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Whose fault an error was: it decides the log level, the metric label and
/// whether retrying on another target can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was bad; retrying it anywhere will not help.
    Client,
    /// A backend failed or timed out.
    Upstream,
    /// Skygate itself.
    Internal,
}

/// The failures a client can see, each with its status and OpenAI type/code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidJson,
    MissingModel,
    InvalidRequest,
    /// A config (reload) that does not validate.
    InvalidConfig,
    Unauthenticated,
    /// The admin API without (or with a wrong) admin token.
    InvalidAdminToken,
    Forbidden,
    NotFound,
    ModelNotFound,
    MethodNotAllowed,
    BodyTooLarge,
    /// A request-rate or concurrency limit (OpenAI's `type: requests`).
    RateLimited,
    /// A token limit (OpenAI's `type: tokens`).
    TokensLimited,
    /// A `fail_closed` limit while its Redis is down.
    LimitsUnavailable,
    UpstreamUnreachable,
    UpstreamFailed,
    UpstreamTimeout,
    /// The backend refused the gateway's own credentials (its 401 or 403):
    /// the client's were fine, so a 502.
    UpstreamAuthFailed,
    Unavailable,
    /// Every candidate backend is at its concurrency cap (bulkhead), or the
    /// server's buffered-body budget is spent.
    Overloaded,
    /// The client stalled while sending its body.
    RequestTimeout,
    /// `Cache-Control: only-if-cached` and no cached answer (RFC 9111: 504).
    NotCached,
    /// A request framed in a way the gateway does not take: a transfer
    /// coding other than `chunked` (RFC 9112 §6.1: 501).
    NotImplemented,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson | Self::MissingModel | Self::InvalidRequest | Self::InvalidConfig => {
                400
            }
            Self::Unauthenticated | Self::InvalidAdminToken => 401,
            Self::Forbidden => 403,
            Self::NotFound | Self::ModelNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::BodyTooLarge => 413,
            Self::RateLimited | Self::TokensLimited => 429,
            Self::UpstreamUnreachable | Self::UpstreamFailed | Self::UpstreamAuthFailed => 502,
            Self::Unavailable | Self::Overloaded | Self::LimitsUnavailable => 503,
            Self::UpstreamTimeout | Self::NotCached => 504,
            Self::Internal => 500,
            Self::NotImplemented => 501,
        }
    }

    /// OpenAI's `error.type`; the SDKs map the status to an exception class.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::InvalidJson
            | Self::MissingModel
            | Self::InvalidRequest
            | Self::InvalidConfig
            | Self::NotFound
            | Self::ModelNotFound
            | Self::MethodNotAllowed
            | Self::BodyTooLarge
            | Self::RequestTimeout
            | Self::NotCached
            | Self::NotImplemented => "invalid_request_error",
            Self::Unauthenticated | Self::InvalidAdminToken => "authentication_error",
            Self::Forbidden => "permission_error",
            // As OpenAI says which limit was hit.
            Self::RateLimited => "requests",
            Self::TokensLimited => "tokens",
            Self::UpstreamUnreachable
            | Self::UpstreamFailed
            | Self::UpstreamTimeout
            | Self::UpstreamAuthFailed => "upstream_error",
            Self::Unavailable | Self::Overloaded | Self::LimitsUnavailable => "service_unavailable",
            Self::Internal => "server_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::MissingModel => "missing_model",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidConfig => "invalid_config",
            Self::Unauthenticated => "invalid_api_key",
            Self::InvalidAdminToken => "invalid_admin_token",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::ModelNotFound => "model_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "request_too_large",
            Self::RateLimited | Self::TokensLimited => "rate_limit_exceeded",
            Self::LimitsUnavailable => "rate_limit_unavailable",
            Self::UpstreamUnreachable => "backend_unreachable",
            Self::UpstreamFailed => "backend_error",
            Self::UpstreamTimeout => "backend_timeout",
            Self::UpstreamAuthFailed => "backend_auth_failed",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::RequestTimeout => "request_timeout",
            Self::NotCached => "not_cached",
            Self::NotImplemented => "not_implemented",
            Self::Internal => "internal_error",
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            Self::UpstreamUnreachable
            | Self::UpstreamFailed
            | Self::UpstreamTimeout
            | Self::UpstreamAuthFailed => Fault::Upstream,
            Self::Unavailable | Self::Overloaded | Self::LimitsUnavailable | Self::Internal => {
                Fault::Internal
            }
            _ => Fault::Client,
        }
    }
}

/// Why an upstream attempt failed, when the same request may succeed on
/// another attempt. The one retry classification: the upstream client
/// resends a [`Retry::StaleConnection`] on a fresh connection itself, and
/// the attempt loop retries the rest on another target when the route's
/// `retries.on` allows it. `None` on an [`ApiError`]: never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The connection (TCP or TLS) could not be made: nothing was sent.
    Connect,
    /// No response header within the first-byte timeout.
    Timeout,
    /// The backend answered 5xx.
    ServerError,
    /// The backend answered 429.
    Throttled,
    /// A pooled connection the backend had closed while idle failed before
    /// any response byte.
    StaleConnection,
}

impl Retry {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::ServerError => "5xx",
            Self::Throttled => "429",
            Self::StaleConnection => "stale_connection",
        }
    }
}

/// An error a client sees as an OpenAI-shaped JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
    /// Sent as `retry-after` (seconds, rounded up) on 429 and 503.
    pub retry_after: Option<Duration>,
    /// Whether (and why) another attempt may succeed.
    pub retry: Option<Retry>,
    /// The request field at fault (OpenAI's `param`; the SDKs' `e.param`).
    pub param: Option<&'static str>,
    /// The methods the path takes, sent as `Allow` with a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            retry: None,
            param: None,
            allow: None,
        }
    }

    /// A 405's `Allow`: the methods the path takes.
    pub fn with_allow(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, field: &'static str) -> Self {
        self.param = Some(field);
        self
    }

    /// A 5xx that no retry can turn into an answer: the cache was asked
    /// only for what it has, a transfer coding the gateway never takes, a
    /// body larger than the whole body budget (the only overload without
    /// a `retry_after`). The OpenAI SDKs retry every 5xx unless told
    /// otherwise (`x-should-retry: false`).
    pub fn retry_is_futile(&self) -> bool {
        match self.kind {
            ErrorKind::NotCached | ErrorKind::NotImplemented => true,
            ErrorKind::Overloaded => self.retry_after.is_none(),
            _ => false,
        }
    }

    /// Marks the error as retryable, for `why`.
    pub fn retryable(mut self, why: Retry) -> Self {
        self.retry = Some(why);
        self
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// `{"error":{"message","type","param","code"}}`, as a JSON value (the
    /// admin API adds fields to it).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind.error_type(),
                "param": self.param,
                "code": self.kind.code(),
            }
        })
    }

    /// `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Bytes {
        Bytes::from(self.to_json().to_string())
    }

    /// The same error as one SSE event, ending a stream that already started.
    pub fn sse_event(&self) -> Bytes {
        let mut out = b"event: error\ndata: ".to_vec();
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

/// The most bytes of a client-supplied value (a model name, a path) that an
/// error message or the access log repeats.
pub const ECHO_LIMIT: usize = 256;

/// `value` as an error message or a log line may repeat it: whole when it
/// fits in [`ECHO_LIMIT`] bytes, else cut on a char boundary and marked
/// `…(truncated)`. A client must not be able to make either as large as
/// what it sent.
pub fn clip(value: &str) -> Cow<'_, str> {
    if value.len() <= ECHO_LIMIT {
        return Cow::Borrowed(value);
    }
    let mut end = ECHO_LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…(truncated)", &value[..end]))
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.status(),
            self.kind.code(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::new(ErrorKind::ModelNotFound, "no such model `x`");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "no such model `x`");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn clip_cuts_long_values_on_a_char_boundary() {
        assert_eq!(clip("gpt-4o"), "gpt-4o");
        let exact = "m".repeat(ECHO_LIMIT);
        assert_eq!(clip(&exact), exact.as_str());
        let long = "x".repeat(1 << 20);
        let c = clip(&long);
        assert!(c.len() < 300 && c.ends_with("…(truncated)"), "{}", c.len());
        // A 3-byte char straddling the limit is left out whole.
        let mut s = "a".repeat(ECHO_LIMIT - 1);
        s.push_str("€€");
        let c = clip(&s);
        assert_eq!(c, format!("{}…(truncated)", "a".repeat(ECHO_LIMIT - 1)));
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorKind::BodyTooLarge.status(), 413);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorKind::UpstreamUnreachable.status(), 502);
        assert_eq!(ErrorKind::Overloaded.status(), 503);
        assert_eq!(ErrorKind::RequestTimeout.status(), 408);
        assert_eq!(ErrorKind::UpstreamTimeout.fault(), Fault::Upstream);
        let e = ApiError::new(ErrorKind::UpstreamUnreachable, "x").retryable(Retry::Connect);
        assert_eq!(e.retry, Some(Retry::Connect));
    }
}
