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
use bytes::{BufMut, Bytes, BytesMut};
use http::header;
use pingora_http::ResponseHeader;
use serde_json::value::RawValue;

use skygate_config::{ApiError, Backend, ErrorKind};
use std::borrow::Cow;

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

/// The few fields of an OpenAI chat request the translation reads, into
/// typed structs (no `serde_json::Value` tree; the values it passes on are
/// kept as raw JSON until needed); serde skips the rest.
#[derive(serde::Deserialize)]
struct ChatIn<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    functions: Option<&'a RawValue>,
    #[serde(borrow)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow)]
    response_format: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    stop: Option<&'a RawValue>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(serde::Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow)]
    function_call: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct PartIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(serde::Serialize)]
struct TextBlock<'a> {
    text: Cow<'a, str>,
}

#[derive(serde::Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<TextBlock<'a>>,
}

#[derive(serde::Serialize, Default)]
struct Inference<'a> {
    #[serde(rename = "maxTokens", skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(rename = "topP", skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(rename = "stopSequences", skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
}

impl Inference<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_none()
    }
}

#[derive(serde::Serialize)]
struct ConverseOut<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextBlock<'a>>,
    #[serde(
        rename = "inferenceConfig",
        skip_serializing_if = "Inference::is_empty"
    )]
    inference_config: Inference<'a>,
}

/// A field that is absent or `null`.
fn absent(v: Option<&RawValue>) -> bool {
    v.is_none_or(|v| v.get() == "null")
}

/// The text of an OpenAI message's `content`: a string, or text parts.
fn text_of<'a>(content: Option<&'a RawValue>, role: &str) -> Result<Vec<TextBlock<'a>>, ApiError> {
    let Some(raw) = content.filter(|c| c.get() != "null") else {
        return Ok(Vec::new());
    };
    let json = raw.get();
    if json.starts_with('"') {
        let text: Cow<'a, str> = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        return Ok(vec![TextBlock { text }]);
    }
    if json.starts_with('[') {
        let parts: Vec<PartIn<'a>> = serde_json::from_str(json).map_err(|_| {
            invalid(format!(
                "a `{role}` message's content parts must be objects"
            ))
        })?;
        return parts
            .into_iter()
            .map(|p| match (p.kind.as_deref(), p.text) {
                (Some("text"), Some(text)) => Ok(TextBlock { text }),
                (kind, _) => Err(invalid(format!(
                    "a `{role}` message part of type `{}` cannot be sent to a Bedrock backend (only text parts are translated)",
                    kind.unwrap_or("?")
                ))),
            })
            .collect();
    }
    Err(invalid(format!(
        "a `{role}` message's content must be a string or a list of parts"
    )))
}

/// A number field (`temperature`, `top_p`): `None` when absent or null.
fn number(v: Option<&RawValue>, name: &str) -> Result<Option<f64>, ApiError> {
    match v.filter(|v| v.get() != "null") {
        None => Ok(None),
        Some(v) => v
            .get()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| invalid(format!("`{name}` must be a number"))),
    }
}

/// The Converse request (JSON) of an OpenAI chat request, and what the
/// answer needs to know of it.
pub fn converse_request(body: &[u8]) -> Result<(Vec<u8>, RequestFacts), ApiError> {
    let req: ChatIn<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidJson,
            format!(
                "the body is not a chat request: {}",
                skygate_config::clip(&e.to_string())
            ),
        )
    })?;
    for (field, value, why) in [
        ("tools", req.tools, "tool calls"),
        ("functions", req.functions, "function calls"),
        ("logprobs", req.logprobs, "logprobs"),
        ("response_format", req.response_format, "response formats"),
    ] {
        if !absent(value) && value.is_some_and(|v| !matches!(v.get(), "false" | "[]")) {
            return Err(invalid(format!(
                "`{field}`: {why} are not translated for Bedrock backends yet"
            ))
            .with_param(field));
        }
    }
    if number(req.n, "n")?.is_some_and(|n| n > 1.0) {
        return Err(invalid("`n` above 1 is not supported by Bedrock backends").with_param("n"));
    }
    let messages: Vec<MessageIn<'_>> = req
        .messages
        .filter(|m| m.get().starts_with('['))
        .ok_or_else(|| invalid("`messages` must be a list").with_param("messages"))
        .and_then(|m| {
            serde_json::from_str(m.get())
                .map_err(|_| invalid("each message must be an object with a `role`"))
        })?;
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for m in messages {
        let role = m.role.as_deref().unwrap_or("");
        if !absent(m.tool_calls) || !absent(m.function_call) {
            return Err(invalid(
                "a message with tool calls cannot be sent to a Bedrock backend (tool calls are not translated yet)",
            ));
        }
        let role: &'static str = match role {
            "system" | "developer" => {
                system.extend(text_of(m.content, role)?);
                continue;
            }
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(invalid(format!(
                    "a message of role `{other}` cannot be sent to a Bedrock backend (system, developer, user and assistant can)"
                )))
            }
        };
        let blocks = text_of(m.content, role)?;
        if blocks.is_empty() {
            return Err(invalid(format!(
                "a `{role}` message without text content cannot be sent to a Bedrock backend"
            )));
        }
        match turns.last_mut() {
            Some(t) if t.role == role => t.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    if turns.first().is_none_or(|t| t.role != "user") {
        return Err(invalid(
            "Bedrock needs the conversation to start with a user message",
        ));
    }
    let max = if absent(req.max_completion_tokens) {
        req.max_tokens
    } else {
        req.max_completion_tokens
    };
    let max_tokens = match max.filter(|v| v.get() != "null") {
        None => None,
        // A whole number written as a float (`5e4`, `50000.0`) is one, as
        // the gateway reads it; Converse takes an integer.
        Some(v) => Some(
            v.get()
                .parse::<u64>()
                .ok()
                .or_else(|| {
                    v.get()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && (1.0..=f64::from(i32::MAX)).contains(f))
                        .map(|f| f as u64)
                })
                .filter(|n| (1..=i32::MAX as u64).contains(n))
                .ok_or_else(|| {
                    invalid("`max_tokens` must be a positive integer (at most 2147483647)")
                        .with_param(if absent(req.max_completion_tokens) {
                            "max_tokens"
                        } else {
                            "max_completion_tokens"
                        })
                })?,
        ),
    };
    let stop_sequences = match req.stop.filter(|v| v.get() != "null") {
        None => None,
        Some(v) if v.get().starts_with('"') => {
            Some(vec![serde_json::from_str::<Cow<'_, str>>(v.get())
                .map_err(|e| invalid(e.to_string()))?])
        }
        Some(v) => Some(
            serde_json::from_str::<Vec<Cow<'_, str>>>(v.get()).map_err(|_| {
                invalid("`stop` must be a string or a list of strings").with_param("stop")
            })?,
        ),
    };
    let out = ConverseOut {
        messages: turns,
        system,
        inference_config: Inference {
            max_tokens,
            temperature: number(req.temperature, "temperature")?,
            top_p: number(req.top_p, "top_p")?,
            stop_sequences,
        },
    };
    let json = serde_json::to_vec(&out).map_err(internal)?;
    let facts = RequestFacts {
        model: req.model.map(Cow::into_owned).unwrap_or_default(),
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    };
    Ok((json, facts))
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
        let body = Bytes::from(converse);
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
    /// Every content chunk's start, rendered once: `data: {"id":...,
    /// "choices":[{"index":0,"delta":`.
    prefix: Vec<u8>,
}

impl BedrockReply {
    pub fn new(backend: &str, facts: RequestFacts) -> Self {
        let id = format!("chatcmpl-{:016x}", rand::random::<u64>());
        let created = unix_now();
        let mut prefix = br#"data: {"id":""#.to_vec();
        prefix.extend_from_slice(id.as_bytes());
        prefix.extend_from_slice(br#"","object":"chat.completion.chunk","created":"#);
        prefix.extend_from_slice(created.to_string().as_bytes());
        prefix.extend_from_slice(br#","model":"#);
        // A model name is JSON-escaped once, here.
        let _ = serde_json::to_writer(&mut prefix, &facts.model);
        prefix.extend_from_slice(br#","choices":[{"index":0,"delta":"#);
        Self {
            backend: backend.to_string(),
            facts,
            id,
            created,
            frames: Frames::default(),
            stopped: false,
            finished: false,
            prefix,
        }
    }

    fn error(&self, header: &ResponseHeader, body: &[u8]) -> Synth {
        aws_service_error(&self.backend, "Bedrock", header, body)
    }
}

/// The parts of a Converse answer the translation reads.
#[derive(serde::Deserialize)]
struct AnswerIn<'a> {
    #[serde(borrow)]
    output: Option<OutputIn<'a>>,
    #[serde(rename = "stopReason", borrow)]
    stop_reason: Option<Cow<'a, str>>,
    usage: Option<UsageIn>,
}

#[derive(serde::Deserialize)]
struct OutputIn<'a> {
    #[serde(borrow)]
    message: Option<AnswerMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct AnswerMessage<'a> {
    #[serde(borrow)]
    content: Option<Vec<BlockIn<'a>>>,
}

#[derive(serde::Deserialize)]
struct BlockIn<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// A stream event's payload (`contentBlockDelta`, `messageStop`, `metadata`).
#[derive(serde::Deserialize, Default)]
struct EventIn<'a> {
    #[serde(borrow)]
    delta: Option<DeltaIn<'a>>,
    #[serde(rename = "stopReason", borrow)]
    stop_reason: Option<Cow<'a, str>>,
    usage: Option<UsageIn>,
}

#[derive(serde::Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize, Default)]
struct UsageIn {
    #[serde(rename = "inputTokens")]
    input: Option<u64>,
    #[serde(rename = "outputTokens")]
    output: Option<u64>,
}

impl UsageIn {
    fn openai(&self) -> UsageOut {
        let (p, c) = (self.input.unwrap_or(0), self.output.unwrap_or(0));
        UsageOut {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p.saturating_add(c),
        }
    }
}

#[derive(serde::Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(serde::Serialize)]
struct CompletionOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChoiceOut<'a>; 1],
    usage: UsageOut,
}

#[derive(serde::Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    finish_reason: &'static str,
}

#[derive(serde::Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(serde::Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [(); 0],
    usage: UsageOut,
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
        let v: AnswerIn<'_> = serde_json::from_slice(&body)
            .map_err(|e| malformed(&self.backend, format!("not a Converse answer: {e}")))?;
        let blocks = v
            .output
            .and_then(|o| o.message)
            .and_then(|m| m.content)
            .ok_or_else(|| malformed(&self.backend, "no output.message.content"))?;
        let mut text = String::new();
        for b in &blocks {
            if let Some(t) = &b.text {
                text.push_str(t);
            }
        }
        let stop = v.stop_reason.as_deref().unwrap_or("end_turn");
        let answer = CompletionOut {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.facts.model,
            choices: [ChoiceOut {
                index: 0,
                message: MessageOut {
                    role: "assistant",
                    content: &text,
                },
                finish_reason: finish_reason(stop),
            }],
            usage: v.usage.unwrap_or_default().openai(),
        };
        let json = serde_json::to_vec(&answer).map_err(internal)?;
        Ok(Synth::json(200, json))
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
            let v: EventIn<'_> = serde_json::from_slice(&event.payload).unwrap_or_default();
            match event.name.as_str() {
                "messageStart" => {
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(
                        br#"{"role":"assistant","content":""},"finish_reason":null}]}"#,
                    );
                    out.extend_from_slice(b"\n\n");
                }
                "contentBlockDelta" => {
                    if let Some(t) = v.delta.and_then(|d| d.text) {
                        out.extend_from_slice(&self.prefix);
                        out.extend_from_slice(br#"{"content":"#);
                        let mut w = (&mut *out).writer();
                        serde_json::to_writer(&mut w, &t).map_err(internal)?;
                        out.extend_from_slice(br#"},"finish_reason":null}]}"#);
                        out.extend_from_slice(b"\n\n");
                    }
                }
                "messageStop" => {
                    self.stopped = true;
                    let stop = finish_reason(v.stop_reason.as_deref().unwrap_or("end_turn"));
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(b"{},\"finish_reason\":\"");
                    out.extend_from_slice(stop.as_bytes());
                    out.extend_from_slice(b"\"}]}\n\n");
                }
                "metadata" => {
                    self.finished = true;
                    if !self.facts.include_usage {
                        continue;
                    }
                    let u = UsageChunk {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.facts.model,
                        choices: [],
                        usage: v.usage.unwrap_or_default().openai(),
                    };
                    out.extend_from_slice(b"data: ");
                    let mut w = (&mut *out).writer();
                    serde_json::to_writer(&mut w, &u).map_err(internal)?;
                    out.extend_from_slice(b"\n\n");
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
    use serde_json::{json, Value};

    #[test]
    fn openai_to_converse() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"there"}]},{"role":"assistant","content":"yes"},{"role":"user","content":"ok"}],"max_tokens":50,"temperature":0.5,"top_p":0.9,"stop":"END","stream":true,"stream_options":{"include_usage":true}}"#;
        let (c, f) = converse_request(body).unwrap();
        let c: Value = serde_json::from_slice(&c).unwrap();
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
            r#"{"messages":[{"role":"user","content":"x"}],"temperature":1e400}"#,
        ] {
            let e = converse_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}: {e:?}");
        }
        for body in [
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":2.5}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":1e12}"#,
        ] {
            let e = converse_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.param, Some("max_tokens"), "{body}");
        }
    }

    /// A whole number written as a float is one, as the gateway reads it.
    #[test]
    fn max_tokens_as_a_float_is_an_integer() {
        for m in ["5e4", "50000.0", "50000"] {
            let body =
                format!(r#"{{"messages":[{{"role":"user","content":"x"}}],"max_tokens":{m}}}"#);
            let (c, _) = converse_request(body.as_bytes()).unwrap();
            let c: serde_json::Value = serde_json::from_slice(&c).unwrap();
            assert_eq!(c["inferenceConfig"]["maxTokens"], 50000, "{m}");
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
