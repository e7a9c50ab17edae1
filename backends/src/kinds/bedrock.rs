//! `bedrock`: Amazon Bedrock's Converse and ConverseStream APIs
//! (`POST /model/{modelId}/converse[-stream]`, SigV4 service `bedrock`),
//! translated from and to the OpenAI chat API both ways:
//!
//! - system (and developer) messages → `system`; user and assistant
//!   messages → `messages` (consecutive ones of a role merged, as Converse
//!   wants turns to alternate); text content, a string or text parts;
//! - `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `stop`
//!   → `inferenceConfig`;
//! - the answer's text, stop reason (`end_turn` → `stop`, `max_tokens` →
//!   `length`, ...) and usage back; the event stream (`messageStart`,
//!   `contentBlockDelta`, `messageStop`, `metadata`) as OpenAI
//!   `chat.completion.chunk` SSE ending with `data: [DONE]`;
//! - Bedrock's errors as the status a client expects (throttling 429,
//!   validation 400, model not ready 503).
//!
//! What Converse has no OpenAI twin for, or what is not translated yet
//! (tools, images, `n` > 1, logprobs), is refused with a 400 naming it.

use super::aws::AwsSigner;
use super::eventstream::Frames;
use super::{
    aws_service_error, event_message, malformed, path_segment, sse_header, stream_exception,
    unix_now, ReadAs, Reply, Synth,
};
use crate::adapter::{base_header, internal, Call, Prepared};
use bytes::{Bytes, BytesMut};
use http::header;
use pingora_http::ResponseHeader;
use serde_json::{json, Value};
use skygate_config::{ApiError, Backend, ErrorKind};

#[derive(Debug)]
pub struct BedrockAdapter {
    pub model_id: String,
    pub signer: AwsSigner,
}

/// A request Converse cannot express: a 400, unless another target of the
/// route (another kind) can serve it (retried there, as nothing was sent).
fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidRequest, message.into())
        .retryable(skygate_config::Retry::Connect)
}

/// The text of an OpenAI message's `content`: a string, or text parts.
fn text_of(content: &Value, role: &str) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Null => Ok(Vec::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                (Some("text"), Some(Value::String(t))) => Ok(json!({ "text": t })),
                (kind, _) => Err(invalid(format!(
                    "a `{role}` message part of type `{}` cannot be sent to a Bedrock backend (only text parts are translated)",
                    kind.unwrap_or("?")
                ))),
            })
            .collect(),
        _ => Err(invalid(format!("a `{role}` message's content must be a string or a list of parts"))),
    }
}

/// The Converse request of an OpenAI chat request.
pub fn converse_request(body: &[u8]) -> Result<(Value, RequestFacts), ApiError> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidJson, format!("the body is not JSON: {e}")))?;
    for (field, why) in [
        ("tools", "tool calls"),
        ("functions", "function calls"),
        ("logprobs", "logprobs"),
        ("response_format", "response formats"),
    ] {
        match req.get(field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => {
                return Err(invalid(format!(
                    "`{field}`: {why} are not translated for Bedrock backends yet"
                )))
            }
        }
    }
    if req
        .get("n")
        .and_then(Value::as_f64)
        .is_some_and(|n| n > 1.0)
    {
        return Err(invalid("`n` above 1 is not supported by Bedrock backends"));
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be a list"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        if m.get("tool_calls").is_some_and(|t| !t.is_null())
            || m.get("function_call").is_some_and(|t| !t.is_null())
        {
            return Err(invalid(
                "a message with tool calls cannot be sent to a Bedrock backend (tool calls are not translated yet)",
            ));
        }
        match role {
            "system" | "developer" => system.extend(text_of(content, role)?),
            "user" | "assistant" => {
                let blocks = text_of(content, role)?;
                if blocks.is_empty() {
                    return Err(invalid(format!(
                        "a `{role}` message without text content cannot be sent to a Bedrock backend"
                    )));
                }
                match turns.last_mut() {
                    Some((r, b)) if r == role => b.extend(blocks),
                    _ => turns.push((role.to_string(), blocks)),
                }
            }
            other => {
                return Err(invalid(format!(
                    "a message of role `{other}` cannot be sent to a Bedrock backend (system, developer, user and assistant can)"
                )))
            }
        }
    }
    if turns.first().is_none_or(|(r, _)| r != "user") {
        return Err(invalid(
            "Bedrock needs the conversation to start with a user message",
        ));
    }
    let mut inference = serde_json::Map::new();
    let present = |k: &str| req.get(k).filter(|v| !v.is_null());
    if let Some(n) = present("max_completion_tokens").or_else(|| present("max_tokens")) {
        let max = n
            .as_u64()
            .filter(|n| (1..=i32::MAX as u64).contains(n))
            .ok_or_else(|| {
                invalid("`max_tokens` must be a positive integer (at most 2147483647)")
            })?;
        inference.insert("maxTokens".into(), json!(max));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            inference.insert(
                to.into(),
                json!(v
                    .as_f64()
                    .ok_or_else(|| invalid(format!("`{from}` must be a number")))?),
            );
        }
    }
    match req.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            inference.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            inference.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        Some(_) => return Err(invalid("`stop` must be a string or a list of strings")),
    }
    let mut out = json!({
        "messages": turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect::<Vec<_>>(),
    });
    if !system.is_empty() {
        out["system"] = Value::Array(system);
    }
    if !inference.is_empty() {
        out["inferenceConfig"] = Value::Object(inference);
    }
    let facts = RequestFacts {
        model: req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        stream: req.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Ok((out, facts))
}

/// What the answer needs to know of the request.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

impl BedrockAdapter {
    pub fn prepare(&self, backend: &Backend, call: &Call<'_>) -> Result<Prepared, ApiError> {
        let (converse, facts) = converse_request(call.body)?;
        let body = Bytes::from(converse.to_string());
        let path = format!(
            "{}/model/{}/{}",
            backend.url.base_path,
            path_segment(&self.model_id),
            if facts.stream {
                "converse-stream"
            } else {
                "converse"
            }
        );
        let mut h = base_header(backend, &http::Method::POST, &path, call, body.len())?;
        h.insert_header(header::CONTENT_TYPE, "application/json")
            .map_err(internal)?;
        h.insert_header(
            header::ACCEPT,
            if facts.stream {
                "application/vnd.amazon.eventstream"
            } else {
                "application/json"
            },
        )
        .map_err(internal)?;
        self.signer.sign(&backend.name, &mut h, &body, false)?;
        Ok(Prepared {
            header: h,
            body,
            reply: Some(Box::new(BedrockReply::new(&backend.name, facts))),
        })
    }
}

/// Bedrock's stop reason as OpenAI's finish reason.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "content_filtered" | "guardrail_intervened" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: Option<&Value>) -> Value {
    let n = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let (input, output) = (n("inputTokens"), n("outputTokens"));
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input.saturating_add(output)})
}

/// Reads one Converse or ConverseStream answer.
pub struct BedrockReply {
    backend: String,
    facts: RequestFacts,
    id: String,
    created: u64,
    frames: Frames,
    stopped: bool,
    /// `metadata` (the last event) arrived.
    finished: bool,
}

impl BedrockReply {
    pub fn new(backend: &str, facts: RequestFacts) -> Self {
        Self {
            backend: backend.to_string(),
            facts,
            id: format!("chatcmpl-{:016x}", rand::random::<u64>()),
            created: unix_now(),
            frames: Frames::default(),
            stopped: false,
            finished: false,
        }
    }

    fn chunk_json(&self, delta: Value, finish: Option<&str>, out: &mut BytesMut) {
        let v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.facts.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        sse(&v, out);
    }

    fn error(&self, header: &ResponseHeader, body: &[u8]) -> Synth {
        aws_service_error(&self.backend, "Bedrock", header, body)
    }
}

fn sse(v: &Value, out: &mut BytesMut) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl Reply for BedrockReply {
    fn read(&mut self, header: &ResponseHeader) -> ReadAs {
        if header.status.as_u16() == 200 && self.facts.stream {
            ReadAs::Stream
        } else {
            ReadAs::Whole
        }
    }

    fn whole(&mut self, header: &ResponseHeader, body: Bytes) -> Result<Synth, ApiError> {
        if header.status.as_u16() != 200 {
            return Ok(self.error(header, &body));
        }
        if self.facts.stream {
            return Err(malformed(
                &self.backend,
                "a JSON answer to a streamed request",
            ));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| malformed(&self.backend, format!("not JSON: {e}")))?;
        let content = v
            .pointer("/output/message/content")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(&self.backend, "no output.message.content"))?;
        let text: String = content
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let stop = v
            .get("stopReason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn");
        let answer = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.facts.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(stop),
            }],
            "usage": usage(v.get("usage")),
        });
        Ok(Synth::json(200, answer.to_string()))
    }

    fn stream_header(&mut self, header: &mut ResponseHeader) -> Result<(), ApiError> {
        sse_header(header)
    }

    fn chunk(&mut self, chunk: &[u8], out: &mut BytesMut) -> Result<(), ApiError> {
        self.frames.push(chunk);
        while let Some(event) = self
            .frames
            .next_event()
            .map_err(|e| malformed(&self.backend, e))?
        {
            if event.message_type != "event" {
                return Err(stream_exception(
                    &self.backend,
                    "Bedrock",
                    &event.name,
                    &event_message(&event),
                ));
            }
            let v: Value = serde_json::from_slice(&event.payload).unwrap_or_default();
            match event.name.as_str() {
                "messageStart" => {
                    self.chunk_json(json!({"role": "assistant", "content": ""}), None, out)
                }
                "contentBlockDelta" => {
                    if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                        self.chunk_json(json!({ "content": t }), None, out);
                    }
                }
                "messageStop" => {
                    self.stopped = true;
                    let stop = v
                        .get("stopReason")
                        .and_then(Value::as_str)
                        .unwrap_or("end_turn");
                    self.chunk_json(json!({}), Some(finish_reason(stop)), out);
                }
                "metadata" => {
                    self.finished = true;
                    if !self.facts.include_usage {
                        continue;
                    }
                    let u = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.facts.model, "choices": [], "usage": usage(v.get("usage")),
                    });
                    sse(&u, out);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn end(&mut self, out: &mut BytesMut) -> Result<(), ApiError> {
        if self.frames.is_partial() {
            return Err(malformed(&self.backend, "the stream ended inside a frame"));
        }
        if !self.stopped {
            return Err(ApiError::new(
                ErrorKind::UpstreamFailed,
                format!(
                    "backend `{}` (Bedrock): the stream ended before messageStop",
                    self.backend
                ),
            ));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::eventstream::encode_event;

    #[test]
    fn openai_to_converse() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"there"}]},{"role":"assistant","content":"yes"},{"role":"user","content":"ok"}],"max_tokens":50,"temperature":0.5,"top_p":0.9,"stop":"END","stream":true,"stream_options":{"include_usage":true}}"#;
        let (c, f) = converse_request(body).unwrap();
        assert_eq!(c["system"], json!([{"text": "be brief"}]));
        assert_eq!(c["messages"].as_array().unwrap().len(), 3);
        assert_eq!(
            c["messages"][0]["content"],
            json!([{"text": "hi"}, {"text": "there"}])
        );
        assert_eq!(
            c["inferenceConfig"],
            json!({"maxTokens": 50, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert!(f.stream && f.include_usage);
        assert_eq!(f.model, "m");
    }

    #[test]
    fn untranslatable_requests_are_400s() {
        for body in [
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
            r#"{"messages":[{"role":"assistant","content":"x"}]}"#,
            r#"{"messages":[{"role":"tool","content":"x"}]}"#,
            r#"{"messages":"x"}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}]}"#,
            r#"{"messages":[{"role":"user","content":null}]}"#,
        ] {
            let e = converse_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}: {e:?}");
        }
    }

    fn facts(stream: bool, include_usage: bool) -> RequestFacts {
        RequestFacts {
            model: "demo".into(),
            stream,
            include_usage,
        }
    }

    #[test]
    fn converse_answer_to_openai() {
        let mut r = BedrockReply::new("b", facts(false, false));
        let h = ResponseHeader::build(200, None).unwrap();
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hel"},{"text":"lo"}]}},"stopReason":"max_tokens","usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}"#;
        let s = r.whole(&h, Bytes::from_static(body)).unwrap();
        let v: Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert_eq!(v["model"], "demo");
    }

    #[test]
    fn errors_map_to_openai_statuses() {
        let mut r = BedrockReply::new("b", facts(false, false));
        for (status, kind, want) in [
            (429, "ThrottlingException", 429),
            (400, "ValidationException", 400),
            (429, "ModelNotReadyException", 503),
            (403, "AccessDeniedException", 502),
            (408, "ModelTimeoutException", 504),
            (500, "InternalServerException", 502),
        ] {
            let mut h = ResponseHeader::build(status, None).unwrap();
            h.insert_header(
                "x-amzn-errortype",
                format!("{kind}:http://internal.amazon.com/"),
            )
            .unwrap();
            let s = r
                .whole(&h, Bytes::from_static(br#"{"message":"why"}"#))
                .unwrap();
            assert_eq!(s.status, want, "{kind}");
            assert!(String::from_utf8_lossy(&s.body).contains(kind));
        }
    }

    #[test]
    fn event_stream_to_sse() {
        let mut r = BedrockReply::new("b", facts(true, true));
        let mut input = encode_event("messageStart", br#"{"role":"assistant"}"#);
        input.extend(encode_event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        input.extend(encode_event("messageStop", br#"{"stopReason":"end_turn"}"#));
        input.extend(encode_event(
            "metadata",
            br#"{"usage":{"inputTokens":4,"outputTokens":1,"totalTokens":5}}"#,
        ));
        let mut out = BytesMut::new();
        for b in input.chunks(7) {
            r.chunk(b, &mut out).unwrap();
        }
        r.end(&mut out).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 5, "{text}");
        assert!(events[1].contains(r#""content":"Hi""#));
        assert!(events[2].contains(r#""finish_reason":"stop""#));
        assert!(events[3].contains(r#""total_tokens":5"#));
        assert_eq!(events[4], "data: [DONE]");
        // A stream cut before messageStop is an error, not a clean end.
        let mut r = BedrockReply::new("b", facts(true, false));
        let mut out = BytesMut::new();
        r.chunk(&encode_event("messageStart", b"{}"), &mut out)
            .unwrap();
        assert!(r.end(&mut out).is_err());
    }
}
