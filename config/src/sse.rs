//! OpenAI chat completions as SSE: a whole answer replayed to a client that
//! asked for a stream (a cache hit, a function that cannot stream).

use serde_json::{json, Map, Value};

/// The fields of a stream's first chunk a completion keeps (and a stream's
/// chunks carry).
pub const COMPLETION_HEAD: &[&str] = &[
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

const HEAD: &[&str] = COMPLETION_HEAD;

/// A chat completion as an SSE stream: one chunk with each choice's whole
/// message, one with each choice's finish reason, the usage chunk when
/// asked, then `data: [DONE]`. `None` when the completion has a field a
/// stream cannot carry (logprobs, audio, ...).
pub fn completion_to_sse(body: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let Value::Object(mut answer) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    let mut head = Map::new();
    for k in HEAD {
        if let Some(v) = answer.remove(*k) {
            head.insert((*k).into(), v);
        }
    }
    head.insert("object".into(), json!("chat.completion.chunk"));
    let Some(Value::Array(choices)) = answer.remove("choices") else {
        return None;
    };
    let mut deltas = Vec::new();
    let mut finishes = Vec::new();
    for c in choices {
        let Value::Object(mut c) = c else {
            return None;
        };
        if c.get("logprobs").is_some_and(|l| !l.is_null()) {
            return None;
        }
        let index = c.remove("index").unwrap_or(json!(0));
        let Some(Value::Object(message)) = c.remove("message") else {
            return None;
        };
        let mut delta = Map::new();
        for (k, v) in message {
            match (k.as_str(), v) {
                (_, Value::Null) => {}
                ("role" | "content" | "refusal", v @ Value::String(_)) => {
                    delta.insert(k, v);
                }
                ("annotations", Value::Array(a)) if a.is_empty() => {}
                ("tool_calls", Value::Array(calls)) => {
                    let calls: Vec<Value> = calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, call)| match call {
                            Value::Object(mut m) => {
                                m.insert("index".into(), json!(i));
                                Some(Value::Object(m))
                            }
                            _ => None,
                        })
                        .collect::<Option<_>>()?;
                    delta.insert(k, Value::Array(calls));
                }
                _ => return None,
            }
        }
        deltas
            .push(json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": null}));
        finishes.push(json!({
            "index": index,
            "delta": {},
            "logprobs": null,
            "finish_reason": c.remove("finish_reason").unwrap_or(Value::Null),
        }));
    }
    let mut out = Vec::with_capacity(body.len() + 512);
    let mut event = |choices: Vec<Value>, usage: Option<Value>| -> Option<()> {
        let mut chunk = head.clone();
        chunk.insert("choices".into(), Value::Array(choices));
        if let Some(u) = usage {
            chunk.insert("usage".into(), u);
        }
        out.extend_from_slice(b"data: ");
        serde_json::to_writer(&mut out, &Value::Object(chunk)).ok()?;
        out.extend_from_slice(b"\n\n");
        Some(())
    };
    event(deltas, None)?;
    event(finishes, None)?;
    if include_usage {
        if let Some(u) = answer.remove("usage").filter(|u| !u.is_null()) {
            event(Vec::new(), Some(u))?;
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out)
}
