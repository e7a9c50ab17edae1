//! Backend adapters: one per backend kind, behind one trait, collected in an
//! enum so the compiler checks that every kind handles every operation.
//!
//! An adapter turns the client's request into this backend's request (URL,
//! headers, credentials, body) and the backend's response back into what the
//! client expects. It runs once per attempt, so a fallback to a backend of
//! another kind gets its own rewrite.

use crate::kinds::aws::{AwsChain, AwsSigner};
use crate::kinds::azure::{AzureFunctionsAdapter, AzureOpenaiAdapter, EntraChain};
use crate::kinds::bedrock::BedrockAdapter;
use crate::kinds::gcp::{CloudRunAdapter, GcpChain};
use crate::kinds::lambda::LambdaAdapter;
use crate::kinds::lambda_url::LambdaUrlAdapter;
use crate::kinds::openwhisk::OpenwhiskAdapter;
use crate::kinds::sagemaker::SagemakerAdapter;
use crate::kinds::Reply;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use skygate_config::{ApiError, Backend, BackendKind, ErrorKind, Operation, Platform};
use std::sync::Arc;

/// The client's request, as every adapter sees it.
#[derive(Debug)]
pub struct Call<'a> {
    pub operation: Operation,
    /// The client's method.
    pub method: &'a http::Method,
    /// For function routes: the part of the client path after the route prefix,
    /// with the query (e.g. `/v2?x=1`); empty for OpenAI operations.
    pub path_suffix: &'a str,
    /// The client's (already sanitized) request headers.
    pub client: &'a RequestHeader,
    pub request_id: &'a str,
    pub body: &'a Bytes,
    /// `x-forwarded-for` for the backend: the client's address, or a
    /// trusted proxy's chain with the peer appended (never the client's own).
    pub forwarded_for: Option<&'a HeaderValue>,
    /// The caller's identity as a signed token, for backends that asked.
    pub identity: Option<(&'a HeaderName, HeaderValue)>,
    /// The request asked for an SSE stream (`stream: true`).
    pub stream: bool,
    /// The model the client asked for (OpenAI operations).
    pub model: Option<&'a str>,
    /// This attempt's W3C trace context, `traceparent` and `tracestate`,
    /// as the gateway decided (its own span, or a client's checked one).
    pub traceparent: Option<HeaderValue>,
    pub tracestate: Option<HeaderValue>,
}

/// What goes to the backend for one attempt.
pub struct Prepared {
    pub header: RequestHeader,
    pub body: Bytes,
    /// For kinds that answer in their own format: how their answer becomes
    /// the client's. `None`: the answer passes through.
    pub reply: Option<Box<dyn Reply>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("header", &self.header)
            .field("body", &self.body.len())
            .field("reply", &self.reply.is_some())
            .finish()
    }
}

/// What an adapter does.
pub trait Adapter {
    /// Builds this backend's request for one attempt.
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError>;

    /// Rewrites the backend's response header for the client.
    fn response_header(&self, resp: &mut ResponseHeader) {
        strip_response_headers(resp);
    }

    /// Rewrites one chunk of the backend's response body for the client.
    fn response_chunk(&self, chunk: Bytes) -> Bytes {
        chunk
    }
}

/// Client headers an adapter may pass on. Everything else (credentials,
/// cookies, forwarding and internal headers) stays at the gateway.
const FORWARDED_CLIENT_HEADERS: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::USER_AGENT,
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Client headers only function routes pass on, on top of the above: their
/// bodies go through untouched, so the backend must know how one is encoded.
const FUNCTION_CLIENT_HEADERS: &[HeaderName] = &[header::CONTENT_ENCODING];

/// Response headers that belong to the hop, or to the gateway: the
/// hop-by-hop ones (RFC 9110 §7.6.1: `connection`, those it names, and the
/// standard ones), `server`, cookies (`set-cookie`, `set-cookie2`), what a
/// browser would apply to the gateway's own host (`strict-transport-security`:
/// a backend's `max-age=0` would switch HSTS off for it; `alt-svc`: another
/// place to reach it) and `x-skygate-*`. The framing
/// headers stay whatever `connection` says: the client's framing is
/// Pingora's to write from them.
fn strip_response_headers(resp: &mut ResponseHeader) {
    let mut drop: Vec<HeaderName> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING)
        .collect();
    drop.extend([
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::SERVER,
        header::SET_COOKIE,
        HeaderName::from_static("set-cookie2"),
        header::STRICT_TRANSPORT_SECURITY,
        header::ALT_SVC,
    ]);
    drop.extend(
        resp.headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-skygate-"))
            .cloned(),
    );
    for h in drop {
        resp.remove_header(&h);
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorKind::Internal,
        format!("building the backend request: {e}"),
    )
}

/// The request header every adapter starts from: method, path, host, the
/// allowed client headers, the request id and the body length.
pub(crate) fn base_header(
    backend: &Backend,
    method: &http::Method,
    path: &str,
    call: &Call<'_>,
    body_len: usize,
) -> Result<RequestHeader, ApiError> {
    // Without a case map (names go out lower case, the dozen Pingora knows
    // title case): keeping each name's case costs a second map insert per
    // header, and HTTP/2 backends get lower case anyway. The headers go
    // straight into the map by names built at compile time (Pingora's
    // `insert_header` parses each name, and each value from a string).
    // Origin form (or empty): the only targets whose raw form the
    // round trip through `Parts` below keeps (it is rebuilt from the URI).
    debug_assert!(path.is_empty() || path.starts_with(['/', '?']), "{path}");
    let h = RequestHeader::build_no_case(method.clone(), path.as_bytes(), Some(12))
        .map_err(internal)?;
    let mut parts = http::request::Parts::from(h);
    let headers = &mut parts.headers;
    headers.insert(
        header::HOST,
        HeaderValue::try_from(backend.url.authority()).map_err(internal)?,
    );
    for name in FORWARDED_CLIENT_HEADERS {
        if let Some(v) = call.client.headers.get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    headers.insert(
        X_REQUEST_ID,
        HeaderValue::from_str(call.request_id).map_err(internal)?,
    );
    if let Some(tp) = &call.traceparent {
        headers.insert(TRACEPARENT, tp.clone());
        if let Some(ts) = &call.tracestate {
            headers.insert(TRACESTATE, ts.clone());
        }
    }
    if let Some(xff) = call.forwarded_for {
        headers.insert(X_FORWARDED_FOR, xff.clone());
    }
    if let Some((name, value)) = &call.identity {
        headers.insert((*name).clone(), value.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    let mut h = RequestHeader::from(parts);
    insert_backend_key(&mut h, backend)?;
    Ok(h)
}

/// The backend's own credential, in its configured header (kinds that put
/// it elsewhere, in a query or as basic auth, do so themselves).
fn insert_backend_key(h: &mut RequestHeader, backend: &Backend) -> Result<(), ApiError> {
    let elsewhere = matches!(
        backend.platform,
        Platform::Openwhisk(_) | Platform::AzureFunctions { key_in_query: true }
    );
    if elsewhere {
        return Ok(());
    }
    if let Some(key) = &backend.api_key {
        let value = if backend.api_key_header == header::AUTHORIZATION {
            HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        } else {
            HeaderValue::from_str(key.expose())
        };
        let mut value =
            value.map_err(|_| internal("the backend's API key is not a valid header value"))?;
        value.set_sensitive(true);
        h.insert_header(backend.api_key_header.clone(), value)
            .map_err(internal)?;
    }
    Ok(())
}

/// The request of an active health probe: the check's method and path, the
/// backend's host and credentials, no body.
pub fn probe_request(
    backend: &Backend,
    method: &http::Method,
    path: &str,
) -> Result<RequestHeader, ApiError> {
    let mut h = RequestHeader::build(method.clone(), path.as_bytes(), Some(4)).map_err(internal)?;
    h.insert_header(header::HOST, backend.url.authority())
        .map_err(internal)?;
    h.insert_header(header::USER_AGENT, "skygate-health-check")
        .map_err(internal)?;
    if *method == http::Method::POST {
        h.insert_header(header::CONTENT_LENGTH, "0")
            .map_err(internal)?;
    }
    insert_backend_key(&mut h, backend)?;
    Ok(h)
}

/// Any OpenAI-compatible server: `{url}/chat/completions`, `{url}/embeddings`.
#[derive(Debug, Default)]
pub struct OpenAiAdapter;

impl Adapter for OpenAiAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        if call.operation == Operation::Function {
            return Err(internal("an OpenAI backend cannot serve a function route"));
        }
        let path = format!(
            "{}{}",
            backend.url.base_path,
            call.operation.upstream_suffix()
        );
        let header = base_header(backend, &http::Method::POST, &path, call, call.body.len())?;
        Ok(Prepared {
            header,
            body: call.body.clone(),
            reply: None,
        })
    }
}

/// A generic serverless function endpoint: the body passes through untouched
/// to `{url}{rest of the client path}`.
#[derive(Debug, Default)]
pub struct FunctionAdapter;

impl Adapter for FunctionAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let path = format!("{}{}", backend.url.base_path, call.path_suffix);
        let path = if path.is_empty() || path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        let mut header = base_header(backend, call.method, &path, call, call.body.len())?;
        for name in FUNCTION_CLIENT_HEADERS {
            if let Some(v) = call.client.headers.get(name) {
                header
                    .insert_header(name.clone(), v.clone())
                    .map_err(internal)?;
            }
        }
        Ok(Prepared {
            header,
            body: call.body.clone(),
            reply: None,
        })
    }
}

impl Adapter for LambdaAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        LambdaAdapter::prepare(self, backend, call)
    }
}

impl Adapter for BedrockAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        BedrockAdapter::prepare(self, backend, call)
    }
}

impl Adapter for LambdaUrlAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        LambdaUrlAdapter::prepare(self, backend, call)
    }
}

impl Adapter for SagemakerAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        SagemakerAdapter::prepare(self, backend, call)
    }
}

impl Adapter for AzureOpenaiAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        AzureOpenaiAdapter::prepare(self, backend, call)
    }
}

impl Adapter for AzureFunctionsAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        AzureFunctionsAdapter::prepare(self, backend, call)
    }
}

impl Adapter for CloudRunAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        CloudRunAdapter::prepare(self, backend, call)
    }
}

impl Adapter for OpenwhiskAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        OpenwhiskAdapter::prepare(self, backend, call)
    }
}

/// The process's cloud credential chains, shared by every backend that
/// has no credentials of its own, and kept fresh in the background.
#[derive(Debug)]
pub struct Clouds {
    pub aws: Arc<AwsChain>,
    pub entra: Arc<EntraChain>,
    pub gcp: Arc<GcpChain>,
}

impl Clouds {
    pub fn from_process() -> Self {
        Self {
            aws: Arc::new(AwsChain::from_process()),
            entra: Arc::new(EntraChain::from_process()),
            gcp: Arc::new(GcpChain::from_process()),
        }
    }
}

/// Every backend kind's adapter.
#[derive(Debug)]
pub enum BackendAdapter {
    OpenAi(OpenAiAdapter),
    HttpFunction(FunctionAdapter),
    Lambda(LambdaAdapter),
    LambdaUrl(LambdaUrlAdapter),
    Bedrock(BedrockAdapter),
    Sagemaker(SagemakerAdapter),
    AzureOpenai(AzureOpenaiAdapter),
    AzureFunctions(AzureFunctionsAdapter),
    Openwhisk(OpenwhiskAdapter),
    CloudRun(CloudRunAdapter),
}

impl BackendAdapter {
    /// The adapter of a backend's kind. The AWS kinds sign with the
    /// backend's own keys, else with the process's AWS chain; `auth: entra`
    /// takes tokens from the process's Entra ID chain.
    pub fn build(backend: &Backend, clouds: &Clouds) -> Self {
        let signer = |service| {
            backend
                .aws
                .as_ref()
                .map(|conf| AwsSigner::new(conf, &clouds.aws, service))
        };
        match &backend.platform {
            Platform::Lambda(conf) => match signer("lambda") {
                Some(signer) => Self::Lambda(LambdaAdapter {
                    conf: conf.clone(),
                    signer,
                }),
                None => Self::HttpFunction(FunctionAdapter),
            },
            Platform::LambdaUrl { iam } => Self::LambdaUrl(LambdaUrlAdapter {
                signer: if *iam { signer("lambda") } else { None },
            }),
            Platform::Bedrock { model_id } => match signer("bedrock") {
                Some(signer) => Self::Bedrock(BedrockAdapter {
                    model_id: model_id.clone(),
                    signer,
                }),
                None => Self::OpenAi(OpenAiAdapter),
            },
            Platform::Sagemaker(conf) => match signer("sagemaker") {
                Some(signer) => Self::Sagemaker(SagemakerAdapter {
                    conf: conf.clone(),
                    signer,
                }),
                None => Self::OpenAi(OpenAiAdapter),
            },
            Platform::AzureOpenai(conf) => {
                Self::AzureOpenai(AzureOpenaiAdapter::new(conf, &clouds.entra))
            }
            Platform::AzureFunctions { key_in_query } => {
                Self::AzureFunctions(AzureFunctionsAdapter {
                    key_in_query: *key_in_query,
                })
            }
            Platform::Openwhisk(conf) => Self::Openwhisk(OpenwhiskAdapter { conf: conf.clone() }),
            Platform::GcpCloudRun(conf) => Self::CloudRun(CloudRunAdapter::new(conf, &clouds.gcp)),
            Platform::Plain if backend.kind == BackendKind::HttpFunction => {
                Self::HttpFunction(FunctionAdapter)
            }
            Platform::Plain => Self::OpenAi(OpenAiAdapter),
        }
    }

    fn inner(&self) -> &dyn Adapter {
        match self {
            Self::OpenAi(a) => a,
            Self::HttpFunction(a) => a,
            Self::Lambda(a) => a,
            Self::LambdaUrl(a) => a,
            Self::Bedrock(a) => a,
            Self::Sagemaker(a) => a,
            Self::AzureOpenai(a) => a,
            Self::AzureFunctions(a) => a,
            Self::Openwhisk(a) => a,
            Self::CloudRun(a) => a,
        }
    }
}

impl Adapter for BackendAdapter {
    fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        self.inner().prepare(backend, call)
    }

    fn response_header(&self, resp: &mut ResponseHeader) {
        self.inner().response_header(resp)
    }

    fn response_chunk(&self, chunk: Bytes) -> Bytes {
        self.inner().response_chunk(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_config::{Endpoint, Secret, Timeouts};
    use std::time::Duration;

    fn backend(kind: BackendKind, key: Option<&str>, header: &str) -> Backend {
        Backend {
            name: "b".into(),
            kind,
            url: Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9001,
                base_path: "/v1".into(),
            },
            api_key: key.map(Secret::new),
            api_key_header: HeaderName::from_bytes(header.as_bytes()).unwrap(),
            cloud: None,
            region: None,
            timeouts: Timeouts::default(),
            pool_idle_timeout: Duration::from_secs(1),
            tls_ca: None,
            breaker: Default::default(),
            limits: Default::default(),
            health_check: None,
            identity_audience: None,
            classification: None,
            stream_usage: true,
            aws: None,
            platform: Platform::Plain,
            prewarm: Default::default(),
        }
    }

    /// RFC 9110 §7.6.1: what `connection` names, and the standard
    /// hop-by-hop headers, do not reach the client; framing headers stay.
    #[test]
    fn hop_by_hop_response_headers_are_dropped() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, x-keep-me, content-length"),
            ("x-keep-me", "1"),
            ("upgrade", "h2c"),
            ("trailer", "x-checksum"),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("server", "evil"),
            ("set-cookie", "a=b"),
            ("set-cookie2", "a=b"),
            ("strict-transport-security", "max-age=0"),
            ("alt-svc", "h3=\":443\""),
            ("x-skygate-cache", "hit"),
            ("content-length", "2"),
            ("content-type", "application/json"),
            ("x-ratelimit-remaining-requests", "7"),
        ] {
            r.append_header(k, v).unwrap();
        }
        strip_response_headers(&mut r);
        let mut left: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "content-type",
                "x-ratelimit-remaining-requests"
            ]
        );
    }

    fn client() -> RequestHeader {
        let mut h = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        h.insert_header("authorization", "Bearer sk-client-secret")
            .unwrap();
        h.insert_header("cookie", "session=1").unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        h.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        h
    }

    #[test]
    fn openai_sends_backend_key_never_client_credentials() {
        let c = client();
        let body = Bytes::from_static(b"{}");
        let call = Call {
            operation: Operation::ChatCompletions,
            method: &http::Method::POST,
            path_suffix: "",
            client: &c,
            request_id: "r1",
            body: &body,
            forwarded_for: None,
            identity: None,
            stream: false,
            model: None,
            traceparent: None,
            tracestate: None,
        };
        let clouds = Clouds {
            aws: Arc::new(AwsChain::new(Box::new(|_| None))),
            entra: Arc::new(EntraChain::new(Box::new(|_| None))),
            gcp: Arc::new(GcpChain::new(Box::new(|_| None))),
        };
        let p = BackendAdapter::build(
            &backend(BackendKind::OpenAi, None, "authorization"),
            &clouds,
        )
        .prepare(
            &backend(BackendKind::OpenAi, Some("sk-backend"), "authorization"),
            &call,
        )
        .unwrap();
        assert_eq!(p.header.uri.path(), "/v1/chat/completions");
        assert_eq!(p.header.headers["authorization"], "Bearer sk-backend");
        assert_eq!(p.header.headers["host"], "127.0.0.1:9001");
        assert_eq!(p.header.headers["content-type"], "application/json");
        assert_eq!(p.header.headers["content-length"], "2");
        assert!(p.header.headers.get("cookie").is_none());
        assert!(p.header.headers.get("x-forwarded-for").is_none());
    }

    #[test]
    fn custom_key_header_and_no_key() {
        let c = client();
        let body = Bytes::new();
        let call = Call {
            operation: Operation::Embeddings,
            method: &http::Method::POST,
            path_suffix: "",
            client: &c,
            request_id: "r1",
            body: &body,
            forwarded_for: None,
            identity: None,
            stream: false,
            model: None,
            traceparent: None,
            tracestate: None,
        };
        let p = OpenAiAdapter
            .prepare(
                &backend(BackendKind::OpenAi, Some("k-123"), "api-key"),
                &call,
            )
            .unwrap();
        assert_eq!(p.header.headers["api-key"], "k-123");
        assert!(p.header.headers.get("authorization").is_none());
        let p = OpenAiAdapter
            .prepare(&backend(BackendKind::OpenAi, None, "authorization"), &call)
            .unwrap();
        assert!(p.header.headers.get("authorization").is_none());
        assert_eq!(p.header.uri.path(), "/v1/embeddings");
    }

    #[test]
    fn function_passes_path_suffix_and_query() {
        let c = client();
        let body = Bytes::from_static(b"\x00\x01");
        let call = Call {
            operation: Operation::Function,
            method: &http::Method::PUT,
            path_suffix: "/img?x=1",
            client: &c,
            request_id: "r",
            body: &body,
            forwarded_for: None,
            identity: None,
            stream: false,
            model: None,
            traceparent: None,
            tracestate: None,
        };
        let p = FunctionAdapter
            .prepare(
                &backend(BackendKind::HttpFunction, None, "authorization"),
                &call,
            )
            .unwrap();
        assert_eq!(p.header.method, http::Method::PUT);
        assert_eq!(p.header.uri.to_string(), "/v1/img?x=1");
        assert_eq!(p.body, body);
    }

    #[test]
    fn content_encoding_goes_to_functions_only() {
        let mut c = client();
        c.insert_header("content-encoding", "gzip").unwrap();
        let body = Bytes::from_static(b"\x1f\x8b");
        let mut call = Call {
            operation: Operation::Function,
            method: &http::Method::POST,
            path_suffix: "",
            client: &c,
            request_id: "r",
            body: &body,
            forwarded_for: None,
            identity: None,
            stream: false,
            model: None,
            traceparent: None,
            tracestate: None,
        };
        let p = FunctionAdapter
            .prepare(
                &backend(BackendKind::HttpFunction, None, "authorization"),
                &call,
            )
            .unwrap();
        assert_eq!(p.header.headers["content-encoding"], "gzip");
        // OpenAI routes keep the plain allowlist: the gateway must read their JSON.
        call.operation = Operation::ChatCompletions;
        let p = OpenAiAdapter
            .prepare(&backend(BackendKind::OpenAi, None, "authorization"), &call)
            .unwrap();
        assert!(p.header.headers.get("content-encoding").is_none());
    }

    #[test]
    fn response_headers_are_cleaned() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("x-skygate-backend", "spoof").unwrap();
        r.insert_header("set-cookie", "a=b").unwrap();
        r.insert_header("content-type", "text/event-stream")
            .unwrap();
        OpenAiAdapter.response_header(&mut r);
        assert!(r.headers.get("x-skygate-backend").is_none());
        assert!(r.headers.get("set-cookie").is_none());
        assert_eq!(r.headers["content-type"], "text/event-stream");
    }
}
