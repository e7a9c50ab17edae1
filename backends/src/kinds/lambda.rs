//! `aws_lambda`: the Invoke API (`POST /2015-03-31/functions/{name}/invocations`)
//! and InvokeWithResponseStream (`/2021-11-15/.../response-streaming-invocations`),
//! SigV4 service `lambda`.
//!
//! - `payload: raw`: the client's body is the event, the function's payload
//!   the answer (a function that speaks the OpenAI API, or a function
//!   route's JSON).
//! - `payload: http_event`: the request becomes an API Gateway HTTP API
//!   event (format 2.0), and `{statusCode, headers, body, isBase64Encoded}`
//!   the client's response.
//! - A function error (`X-Amz-Function-Error`) is a 502 naming the
//!   function's error type, never a 200. Lambda's own errors map to the
//!   status a client expects (throttling 429, a bad event 400, ...).
//! - `log_tail: true` asks for the log tail; a `REPORT` line with
//!   `Init Duration` is a cold start.

use super::aws::AwsSigner;
use super::eventstream::Frames;
use super::{
    aws_service_error, event_message, malformed, path_segment, stream_exception, stream_header,
    ReadAs, Replay, Reply, Synth,
};
use crate::adapter::{base_header, internal, Call, Prepared};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, Backend, ErrorKind, LambdaConf, LambdaPayload, Operation};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug)]
pub struct LambdaAdapter {
    pub conf: LambdaConf,
    pub signer: AwsSigner,
}

impl LambdaAdapter {
    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let streamed = self.conf.response_stream && call.stream;
        let function = path_segment(&self.conf.function);
        let mut path = if streamed {
            format!(
                "{}/2021-11-15/functions/{function}/response-streaming-invocations",
                backend.url.base_path
            )
        } else {
            format!(
                "{}/2015-03-31/functions/{function}/invocations",
                backend.url.base_path
            )
        };
        if let Some(q) = &self.conf.qualifier {
            path.push_str("?Qualifier=");
            path.push_str(&path_segment(q));
        }
        let body = match self.conf.payload {
            LambdaPayload::Raw => call.body.clone(),
            LambdaPayload::HttpEvent => http_event(backend, call)?,
        };
        let mut h = base_header(backend, &http::Method::POST, &path, call, body.len())?;
        h.insert_header(header::CONTENT_TYPE, "application/json")
            .map_err(internal)?;
        h.insert_header("x-amz-invocation-type", "RequestResponse")
            .map_err(internal)?;
        if self.conf.log_tail {
            h.insert_header("x-amz-log-type", "Tail")
                .map_err(internal)?;
        }
        self.signer.sign(&backend.name, &mut h, &body, false)?;
        let reply = LambdaReply {
            backend: backend.name.clone(),
            payload: self.conf.payload,
            sse: call.stream && call.operation == Operation::ChatCompletions,
            replay: Replay::for_call(call),
            function_failure: None,
            frames: None,
            complete: false,
            cold: false,
        };
        Ok(Prepared {
            header: h,
            body,
            reply: Some(Box::new(reply)),
        })
    }
}

/// Content types whose bodies go into an event as text; the rest base64.
fn is_text(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ct = ct.to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.contains("json")
        || ct.contains("xml")
        || ct.starts_with("application/x-www-form-urlencoded")
}

/// The API Gateway HTTP API event (payload format 2.0) of a client request.
fn http_event(backend: &Backend, call: &Call<'_>) -> Result<Bytes, ApiError> {
    let uri = &call.client.uri;
    let mut headers = serde_json::Map::new();
    for name in [
        header::CONTENT_TYPE,
        header::ACCEPT,
        header::ACCEPT_LANGUAGE,
        header::USER_AGENT,
        header::CONTENT_ENCODING,
    ] {
        if let Some(v) = call.client.headers.get(&name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.as_str().to_string(), v.into());
        }
    }
    headers.insert("x-request-id".into(), call.request_id.into());
    if let Some(xff) = call.forwarded_for.and_then(|v| v.to_str().ok()) {
        headers.insert("x-forwarded-for".into(), xff.into());
    }
    if let Some((name, value)) = &call.identity {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_string(), v.into());
        }
    }
    let content_type = call.client.headers.get(header::CONTENT_TYPE);
    let text = is_text(content_type)
        && call.client.headers.get(header::CONTENT_ENCODING).is_none()
        && std::str::from_utf8(call.body).is_ok();
    let body = if text {
        serde_json::Value::String(String::from_utf8_lossy(call.body).into_owned())
    } else {
        serde_json::Value::String(B64.encode(call.body))
    };
    let source_ip = call
        .forwarded_for
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map_or("", str::trim);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let event = serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": uri.path(),
        "rawQueryString": uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "skygate",
            "domainName": backend.url.host,
            "http": {
                "method": call.method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": call.client.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": call.request_id,
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": now_ms,
        },
        "body": body,
        "isBase64Encoded": !text,
    });
    Ok(Bytes::from(event.to_string()))
}

/// Reads one Invoke answer.
struct LambdaReply {
    backend: String,
    payload: LambdaPayload,
    /// The client asked for an SSE stream (chat, `stream: true`).
    sse: bool,
    /// A whole completion is replayed as SSE to a stream request.
    replay: Option<Replay>,
    /// The function's own failure in its stream (`InvokeComplete` with an
    /// `ErrorCode`), as a final answer if nothing was sent yet.
    function_failure: Option<Synth>,
    /// Set when the answer is an event stream (InvokeWithResponseStream).
    frames: Option<Frames>,
    complete: bool,
    cold: bool,
}

/// Whether a base64 log tail holds a cold start's `REPORT` line.
pub fn log_tail_cold(b64: &[u8]) -> bool {
    let Ok(log) = B64.decode(b64.trim_ascii()) else {
        return false;
    };
    let log = String::from_utf8_lossy(&log);
    log.lines()
        .any(|l| l.starts_with("REPORT") && l.contains("Init Duration"))
}

fn function_error(backend: &str, kind: &str, payload: &[u8]) -> Synth {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let error_type = v
        .get("errorType")
        .and_then(|t| t.as_str())
        .unwrap_or(kind)
        .to_string();
    let message = v
        .get("errorMessage")
        .and_then(|m| m.as_str())
        .unwrap_or("the function failed");
    Synth::error(
        502,
        "function_error",
        &error_type,
        &format!(
            "backend `{backend}`: the function failed ({error_type}): {}",
            skygate_config::clip(message)
        ),
    )
    .conclusive()
}

/// The most headers, and header bytes, a function's `http_event` answer may set.
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Headers a function's `http_event` answer may not set for the client.
fn hop_or_gateway(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-authenticate"
            | "set-cookie"
            | "server"
    ) || name.starts_with("x-skygate-")
}

/// An `http_event` answer: `{statusCode, headers, body, isBase64Encoded}`,
/// or (as API Gateway reads format 2.0) any other JSON as a 200 JSON body.
fn http_answer(backend: &str, payload: Bytes) -> Result<Synth, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| malformed(backend, format!("the function's answer is not JSON: {e}")))?;
    let Some(status) = v.get("statusCode") else {
        return Ok(Synth::json(200, payload));
    };
    let status = status
        .as_u64()
        .filter(|s| (200..=599).contains(s))
        .ok_or_else(|| malformed(backend, "`statusCode` is not a status (200-599)"))?
        as u16;
    let body = match v.get("body") {
        None | Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(s)) => {
            if v.get("isBase64Encoded").and_then(|b| b.as_bool()) == Some(true) {
                Bytes::from(
                    B64.decode(s)
                        .map_err(|_| malformed(backend, "`body` is not base64"))?,
                )
            } else {
                Bytes::from(s.clone())
            }
        }
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut synth = Synth {
        status,
        content_type: None,
        headers: Vec::new(),
        body,
        // The function's own answer, whatever its status.
        conclusive: true,
    };
    if let Some(hs) = v.get("headers").and_then(|h| h.as_object()) {
        // A function's header section is bounded as a client's would be.
        let bytes: usize = hs
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if hs.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
            return Err(malformed(
                backend,
                format!("the function set {} headers ({bytes} bytes); at most {MAX_HEADERS} and {MAX_HEADER_BYTES} bytes", hs.len()),
            ));
        }
        for (k, val) in hs {
            let k = k.to_ascii_lowercase();
            if hop_or_gateway(&k) {
                continue;
            }
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.as_bytes()),
                val.as_str().map(HeaderValue::from_str),
            ) else {
                continue;
            };
            if name == header::CONTENT_TYPE {
                synth.content_type = Some(value);
            } else {
                synth.headers.push((name, value));
            }
        }
    }
    if synth.content_type.is_none() && !synth.body.is_empty() {
        synth.content_type = Some(HeaderValue::from_static("application/json"));
    }
    Ok(synth)
}

impl Reply for LambdaReply {
    fn read(&mut self, header: &ResponseHeader) -> ReadAs {
        if let Some(tail) = header.headers.get("x-amz-log-result") {
            self.cold = log_tail_cold(tail.as_bytes());
        }
        let eventstream = header.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/vnd.amazon.eventstream")
        });
        if header.status.as_u16() == 200 && eventstream {
            self.frames = Some(Frames::default());
            ReadAs::Stream
        } else {
            ReadAs::Whole
        }
    }

    fn whole(&mut self, header: &ResponseHeader, body: Bytes) -> Result<Synth, ApiError> {
        if header.status.as_u16() != 200 {
            return Ok(aws_service_error(
                &self.backend,
                "AWS Lambda",
                header,
                &body,
            ));
        }
        if let Some(kind) = header
            .headers
            .get("x-amz-function-error")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.trim().is_empty())
        {
            return Ok(function_error(&self.backend, kind, &body));
        }
        let mut synth = match self.payload {
            LambdaPayload::Raw => Synth::json(200, body),
            LambdaPayload::HttpEvent => http_answer(&self.backend, body)?,
        };
        // A buffered function asked for a stream: its whole completion is
        // replayed as SSE, so the client's stream still works.
        if let Some(r) = self.replay {
            r.apply(&mut synth);
        }
        Ok(synth)
    }

    fn stream_header(&mut self, header: &mut ResponseHeader) -> Result<(), ApiError> {
        stream_header(self.sse, header)
    }

    fn chunk(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), ApiError> {
        let Some(frames) = self.frames.as_mut() else {
            out.extend_from_slice(chunk);
            return Ok(());
        };
        frames.push(chunk);
        loop {
            let event = frames
                .next_event()
                .map_err(|e| malformed(&self.backend, e))?;
            let Some(event) = event else {
                return Ok(());
            };
            if self.complete {
                return Err(malformed(&self.backend, "events after InvokeComplete"));
            }
            match (event.message_type.as_str(), event.name.as_str()) {
                ("event", "PayloadChunk") => out.extend_from_slice(&event.payload),
                ("event", "InvokeComplete") => {
                    self.complete = true;
                    let v: serde_json::Value =
                        serde_json::from_slice(&event.payload).unwrap_or_default();
                    if let Some(tail) = v.get("LogResult").and_then(|l| l.as_str()) {
                        self.cold |= log_tail_cold(tail.as_bytes());
                    }
                    let code = v
                        .get("ErrorCode")
                        .and_then(|c| c.as_str())
                        .filter(|c| !c.is_empty());
                    if let Some(code) = code {
                        let details = v.get("ErrorDetails").and_then(|d| d.as_str()).unwrap_or("");
                        // Before any byte, the client gets it as the
                        // buffered path would: a final 502.
                        self.function_failure = Some(
                            Synth::error(
                                502,
                                "function_error",
                                code,
                                &format!(
                                    "backend `{}`: the function failed ({code}): {}",
                                    self.backend,
                                    skygate_config::clip(details)
                                ),
                            )
                            .conclusive(),
                        );
                        return Err(stream_exception(&self.backend, "AWS Lambda", code, details));
                    }
                }
                ("event", _) => {}
                (_, name) => {
                    return Err(stream_exception(
                        &self.backend,
                        "AWS Lambda",
                        name,
                        &event_message(&event),
                    ));
                }
            }
        }
    }

    fn end(&mut self, _out: &mut BytesMut) -> Result<(), ApiError> {
        match &self.frames {
            Some(f) if f.is_partial() => {
                Err(malformed(&self.backend, "the stream ended inside a frame"))
            }
            Some(_) if !self.complete => Err(ApiError::new(
                ErrorKind::UpstreamFailed,
                format!(
                    "backend `{}`: the stream ended before InvokeComplete",
                    self.backend
                ),
            )),
            _ => Ok(()),
        }
    }

    fn cold_start(&self) -> bool {
        self.cold
    }

    fn finished(&self) -> bool {
        self.complete
    }

    fn early_failure(&mut self) -> Option<Synth> {
        self.function_failure.take()
    }
}
