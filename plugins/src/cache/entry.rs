//! A cache entry: one JSON answer (a stream is kept as the completion it
//! adds up to; a JSON one may be checked only at its first use,
//! [`Entry::servable`]), when it was made and for how long it is
//! good; its Redis encoding; and the two translations a stream needs,
//! chunks to a completion ([`assemble`]) and a completion to chunks
//! ([`render_sse`]).

use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Memory an entry takes besides its body, counted in the in-memory tier's
/// byte bound: moka's node, its queues' and timer's entries, the key, this
/// struct, the allocator's rounding. Measured: `cachemem` (benches/) grows
/// the process by 616–643 bytes per entry beyond its body, for bodies of
/// 100 B to 2 KiB.
pub const OVERHEAD: usize = 640;

#[derive(Debug)]
pub struct Entry {
    /// The JSON answer as the backend gave it (a stream: assembled).
    pub body: Bytes,
    /// A chat completion (may be replayed as a stream); else embeddings.
    pub chat: bool,
    pub route: Arc<str>,
    /// The tenant whose caller stored it (for `DELETE /admin/cache`).
    pub tenant: Option<Arc<str>>,
    /// Wall-clock milliseconds when the backend answered (shared by
    /// replicas through Redis, so `age` is the same everywhere).
    pub stored_at_ms: u64,
    pub ttl: Duration,
    /// `usage.prompt_tokens + completion_tokens` of the answer (of an
    /// unchecked one: as the gateway read them off its last 8 KiB for the
    /// limits).
    pub tokens: Option<u64>,
    /// The stream rendering, without and with the usage chunk (made on
    /// the first stream hit; `None` inside: cannot be replayed).
    sse: [OnceLock<Option<Bytes>>; 2],
    /// Whether the body is a whole answer ([`whole`]): known when it was
    /// checked before it was stored, else decided at its first use.
    servable: OnceLock<bool>,
}

impl Entry {
    pub fn new(
        body: Bytes,
        chat: bool,
        route: Arc<str>,
        tenant: Option<Arc<str>>,
        stored_at_ms: u64,
        ttl: Duration,
    ) -> Self {
        let tokens = usage_tokens(&body);
        Self::with_tokens(body, chat, route, tenant, stored_at_ms, ttl, tokens)
    }

    /// [`Self::new`] with the answer's tokens already known (read when the
    /// answer was checked), so the body is not parsed again.
    pub fn with_tokens(
        body: Bytes,
        chat: bool,
        route: Arc<str>,
        tenant: Option<Arc<str>>,
        stored_at_ms: u64,
        ttl: Duration,
        tokens: Option<u64>,
    ) -> Self {
        Self {
            body,
            chat,
            route,
            tenant,
            stored_at_ms,
            ttl,
            tokens,
            sse: [OnceLock::new(), OnceLock::new()],
            servable: OnceLock::from(true),
        }
    }

    /// The same answer stored before it was checked (its tokens those the
    /// gateway read off its end): checked at its first use
    /// ([`Self::servable`]). Most stored answers are never asked for
    /// again, so a miss does not pay for parsing its answer.
    pub fn unchecked(self) -> Self {
        Self {
            servable: OnceLock::new(),
            ..self
        }
    }

    /// A whole answer, to be served ([`whole`]; decided once).
    pub fn servable(&self) -> bool {
        self.check().0
    }

    /// [`Self::servable`], and whether this call made the check (so a
    /// failed one is counted once).
    pub fn check(&self) -> (bool, bool) {
        let mut now = false;
        let ok = *self.servable.get_or_init(|| {
            now = true;
            whole(&self.body, self.chat).is_some()
        });
        (ok, now)
    }

    /// Found not to be a whole answer (checked, and failed); an entry not
    /// checked yet is not.
    pub fn found_unservable(&self) -> bool {
        self.servable.get() == Some(&false)
    }

    /// Bytes counted against the in-memory bound.
    pub fn weight(&self) -> u32 {
        u32::try_from(self.body.len() + OVERHEAD).unwrap_or(u32::MAX)
    }

    /// Seconds since the backend answered (`age`).
    pub fn age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Time left to live, from `now_ms`; zero when expired.
    pub fn left(&self, now_ms: u64) -> Duration {
        let age = Duration::from_millis(now_ms.saturating_sub(self.stored_at_ms));
        self.ttl.saturating_sub(age)
    }

    /// The answer as an SSE stream, for a stream request; `None` when the
    /// answer has something a stream cannot carry.
    pub fn sse(&self, include_usage: bool) -> Option<Bytes> {
        if !self.chat {
            return None;
        }
        self.sse[usize::from(include_usage)]
            .get_or_init(|| render_sse(&self.body, include_usage).map(Bytes::from))
            .clone()
    }

    /// The Redis value: a header (format, flags, times), then the body,
    /// zstd-compressed when larger than `compress_above`.
    pub fn encode(&self, compress_above: u64) -> Vec<u8> {
        let compressed = (self.body.len() as u64 > compress_above)
            .then(|| zstd::bulk::compress(&self.body, 1).ok())
            .flatten()
            .filter(|c| c.len() < self.body.len());
        let flags = u8::from(compressed.is_some()) | (u8::from(self.chat) << 1);
        let body: &[u8] = compressed.as_deref().unwrap_or(&self.body);
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.push(flags);
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&(self.ttl.as_millis() as u64).to_be_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Reads a Redis value; `None` when it is not one this version wrote,
    /// is cut, or claims more than `max_bytes` (a corrupt or hostile value
    /// is a miss, never a crash or a huge allocation).
    pub fn decode(
        v: &[u8],
        route: Arc<str>,
        tenant: Option<Arc<str>>,
        max_bytes: usize,
    ) -> Option<Self> {
        let rest = v.strip_prefix(MAGIC)?;
        let (&flags, rest) = rest.split_first()?;
        let stored_at_ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let ttl_ms = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
        let len = u32::from_be_bytes(rest.get(16..20)?.try_into().ok()?) as usize;
        let body = rest.get(20..)?;
        if len > max_bytes || flags & !0b11 != 0 {
            return None;
        }
        let body = if flags & 1 == 1 {
            let out = zstd::bulk::decompress(body, len).ok()?;
            (out.len() == len).then_some(out)?
        } else {
            (body.len() == len).then(|| body.to_vec())?
        };
        // Whatever is served must at least be JSON.
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).ok()?;
        Some(Self::new(
            Bytes::from(body),
            flags & 2 == 2,
            route,
            tenant,
            stored_at_ms,
            Duration::from_millis(ttl_ms),
        ))
    }
}

const MAGIC: &[u8] = b"SGC1";
const HEADER: usize = 4 + 1 + 8 + 8 + 4;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An answer's `usage`, as far as the cache reads it.
#[derive(serde::Deserialize)]
pub struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl Usage {
    /// `prompt_tokens + completion_tokens`, when either is given.
    pub fn tokens(&self) -> Option<u64> {
        match (self.prompt_tokens, self.completion_tokens) {
            (None, None) => None,
            (p, c) => Some(p.unwrap_or(0).saturating_add(c.unwrap_or(0))),
        }
    }
}

/// A whole JSON answer, with its tokens (read in the same pass): its
/// `choices` (chat) or `data` (embeddings) not empty, and no `error`.
/// An answer whose `usage` is odd (a float, a string, twice) is whole,
/// without tokens.
pub fn whole(body: &[u8], chat: bool) -> Option<Option<u64>> {
    #[derive(serde::Deserialize)]
    struct Whole {
        error: Option<serde::de::IgnoredAny>,
        choices: Option<Vec<serde::de::IgnoredAny>>,
        data: Option<Vec<serde::de::IgnoredAny>>,
        usage: Option<Usage>,
    }
    /// The same without `usage`.
    #[derive(serde::Deserialize)]
    struct Plain {
        error: Option<serde::de::IgnoredAny>,
        choices: Option<Vec<serde::de::IgnoredAny>>,
        data: Option<Vec<serde::de::IgnoredAny>>,
    }
    let (error, choices, data, tokens) = match serde_json::from_slice::<Whole>(body) {
        Ok(w) => (w.error, w.choices, w.data, w.usage.and_then(|u| u.tokens())),
        Err(_) => {
            let p: Plain = serde_json::from_slice(body).ok()?;
            (p.error, p.choices, p.data, None)
        }
    };
    let items = if chat { choices } else { data };
    (error.is_none() && items.is_some_and(|i| !i.is_empty())).then_some(tokens)
}

/// `usage.prompt_tokens + completion_tokens` of a JSON answer.
pub fn usage_tokens(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Answer {
        usage: Option<Usage>,
    }
    serde_json::from_slice::<Answer>(body).ok()?.usage?.tokens()
}

use skygate_config::sse::{completion_to_sse as render_sse, COMPLETION_HEAD as HEAD};

/// One choice as it adds up from deltas.
#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    /// By the tool call's `index`.
    tool_calls: Vec<(u64, Map<String, Value>)>,
    finish_reason: Value,
}

/// The chat completion a whole SSE stream adds up to, or `None` when the
/// stream is not one to keep: no `data: [DONE]` (cut), an error event,
/// logprobs, or a delta field this version does not know how to add up.
pub fn assemble(sse: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(sse).ok()?;
    // Events may be framed with CRLF (or CR) as well as LF.
    let normalised;
    let text = if text.contains('\r') {
        normalised = text.replace("\r\n", "\n").replace('\r', "\n");
        normalised.as_str()
    } else {
        text
    };
    let mut head = Map::new();
    let mut usage = Value::Null;
    let mut choices: Vec<(u64, Choice)> = Vec::new();
    let mut done = false;
    for event in text.split("\n\n") {
        let mut data = String::new();
        for line in event.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if data.is_empty() {
            continue;
        }
        if done {
            return None; // something after [DONE]
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Value::Object(mut chunk) = serde_json::from_str::<Value>(&data).ok()? else {
            return None;
        };
        if chunk.contains_key("error") || chunk.get("object").is_some_and(|o| o == "error") {
            return None;
        }
        for k in HEAD {
            if let Some(v) = chunk.remove(*k) {
                if !v.is_null() {
                    head.entry(*k).or_insert(v);
                }
            }
        }
        if let Some(u) = chunk.remove("usage") {
            if !u.is_null() {
                usage = u;
            }
        }
        let Some(Value::Array(list)) = chunk.remove("choices") else {
            continue;
        };
        for c in list {
            let Value::Object(mut c) = c else {
                return None;
            };
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            if c.get("logprobs").is_some_and(|l| !l.is_null()) {
                return None;
            }
            let at = match choices.iter().position(|(i, _)| *i == index) {
                Some(at) => at,
                None => {
                    choices.push((index, Choice::default()));
                    choices.len() - 1
                }
            };
            let choice = &mut choices[at].1;
            if let Some(f) = c.remove("finish_reason") {
                if !f.is_null() {
                    choice.finish_reason = f;
                }
            }
            let Some(Value::Object(delta)) = c.remove("delta") else {
                continue;
            };
            for (k, v) in delta {
                match (k.as_str(), v) {
                    (_, Value::Null) => {}
                    ("role", Value::String(r)) => choice.role = Some(r),
                    ("content", Value::String(s)) => {
                        choice.content.get_or_insert_with(String::new).push_str(&s)
                    }
                    ("refusal", Value::String(s)) => {
                        choice.refusal.get_or_insert_with(String::new).push_str(&s)
                    }
                    ("tool_calls", Value::Array(calls)) => {
                        for call in calls {
                            add_tool_call(&mut choice.tool_calls, call)?;
                        }
                    }
                    _ => return None,
                }
            }
        }
    }
    // Whole: every choice says why it finished.
    if !done || choices.is_empty() || choices.iter().any(|(_, c)| c.finish_reason.is_null()) {
        return None;
    }
    choices.sort_by_key(|(i, _)| *i);
    let mut out = head;
    out.insert("object".into(), json!("chat.completion"));
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, c)| {
            let mut message = Map::new();
            message.insert(
                "role".into(),
                json!(c.role.unwrap_or_else(|| "assistant".into())),
            );
            // A tool call's message has no text: `null`, as OpenAI's JSON
            // answer says, though some streams send `""` deltas for it.
            let content = c
                .content
                .filter(|t| !t.is_empty() || c.tool_calls.is_empty());
            message.insert("content".into(), content.map_or(Value::Null, Value::String));
            if let Some(r) = c.refusal {
                message.insert("refusal".into(), Value::String(r));
            }
            if !c.tool_calls.is_empty() {
                let mut calls = c.tool_calls;
                calls.sort_by_key(|(i, _)| *i);
                let calls: Vec<Value> = calls.into_iter().map(|(_, m)| Value::Object(m)).collect();
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            json!({
                "index": index,
                "message": message,
                "logprobs": null,
                "finish_reason": c.finish_reason,
            })
        })
        .collect();
    out.insert("choices".into(), Value::Array(choices));
    if !usage.is_null() {
        out.insert("usage".into(), usage);
    }
    serde_json::to_vec(&Value::Object(out)).ok()
}

/// Adds one streamed tool-call delta: `id`, `type` and the function's
/// `name` arrive once, its `arguments` in pieces.
fn add_tool_call(calls: &mut Vec<(u64, Map<String, Value>)>, delta: Value) -> Option<()> {
    let Value::Object(mut d) = delta else {
        return None;
    };
    let index = d.remove("index").and_then(|i| i.as_u64()).unwrap_or(0);
    let at = match calls.iter().position(|(i, _)| *i == index) {
        Some(at) => at,
        None => {
            calls.push((index, Map::new()));
            calls.len() - 1
        }
    };
    let call = &mut calls[at].1;
    for (k, v) in d {
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("id" | "type", v @ Value::String(_)) => {
                call.insert(k, v);
            }
            ("function", Value::Object(f)) => {
                let Value::Object(fun) = call
                    .entry("function")
                    .or_insert_with(|| Value::Object(Map::new()))
                else {
                    return None;
                };
                for (fk, fv) in f {
                    match (fk.as_str(), fv) {
                        (_, Value::Null) => {}
                        ("name" | "arguments", Value::String(s)) => {
                            let slot = fun.entry(fk).or_insert_with(|| json!(""));
                            let Value::String(have) = slot else {
                                return None;
                            };
                            have.push_str(&s);
                        }
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_stream_adds_up_to_its_completion_and_back() {
        let body = assemble(STREAM.as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 5);
        // Rendered back: the same content, valid SSE, usage only if asked.
        for include_usage in [false, true] {
            let sse = render_sse(&body, include_usage).unwrap();
            let again: Value = serde_json::from_slice(&assemble(&sse).unwrap()).unwrap();
            assert_eq!(again["choices"], v["choices"]);
            assert_eq!(again.get("usage").is_some(), include_usage);
            assert!(sse.ends_with(b"data: [DONE]\n\n"));
        }
    }

    #[test]
    fn crlf_framing_is_sse_too() {
        let crlf = STREAM.replace('\n', "\r\n");
        assert_eq!(assemble(crlf.as_bytes()), assemble(STREAM.as_bytes()));
        assert!(assemble(crlf.as_bytes()).is_some());
    }

    #[test]
    fn tool_calls_add_up() {
        let s = concat!(
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let v: Value = serde_json::from_slice(&assemble(s.as_bytes()).unwrap()).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get");
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        let sse = render_sse(&serde_json::to_vec(&v).unwrap(), false).unwrap();
        let again: Value = serde_json::from_slice(&assemble(&sse).unwrap()).unwrap();
        assert_eq!(again["choices"], v["choices"]);
        // A stream that sends `""` content deltas beside its tool calls:
        // still `null` (OpenAI's JSON answer for a tool call).
        let empty = s.replace(
            "{\"role\":\"assistant\",",
            "{\"role\":\"assistant\",\"content\":\"\",",
        );
        assert_ne!(empty, s);
        let v: Value = serde_json::from_slice(&assemble(empty.as_bytes()).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        // Without tool calls, an empty answer stays `""`.
        let text = STREAM
            .replace("{\"content\":\"Hel\"}", "{\"content\":\"\"}")
            .replace("{\"content\":\"lo\"}", "{\"content\":\"\"}");
        assert_ne!(text, STREAM);
        let v: Value = serde_json::from_slice(&assemble(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "");
    }

    #[test]
    fn partial_or_odd_streams_are_not_kept() {
        // Cut before [DONE].
        let cut = STREAM.replace("data: [DONE]\n\n", "");
        assert!(assemble(cut.as_bytes()).is_none());
        // An error event.
        let err = STREAM.replace(
            "data: [DONE]",
            "data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]",
        );
        assert!(assemble(err.as_bytes()).is_none());
        // A delta field this version cannot add up.
        let odd = STREAM.replace("{\"content\":\"lo\"}", "{\"audio\":{\"data\":\"AAA\"}}");
        assert!(assemble(odd.as_bytes()).is_none());
        // A choice that never finished (a server that ends a failed stream
        // with [DONE] anyway), or an error object.
        let unfinished = STREAM.replace("\"finish_reason\":\"stop\"", "\"finish_reason\":null");
        assert!(assemble(unfinished.as_bytes()).is_none());
        let vllm = STREAM.replace(
            "data: [DONE]",
            "data: {\"object\":\"error\",\"message\":\"x\"}\n\ndata: [DONE]",
        );
        assert!(assemble(vllm.as_bytes()).is_none());
        // Logprobs.
        let lp = STREAM.replace(
            "\"finish_reason\":\"stop\"",
            "\"finish_reason\":\"stop\",\"logprobs\":{\"content\":[]}",
        );
        assert!(assemble(lp.as_bytes()).is_none());
    }

    #[test]
    fn redis_encoding_round_trips_and_refuses_junk() {
        let big = format!(
            "{{\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":4,\"completion_tokens\":6}}}}",
            "word ".repeat(2000)
        );
        let e = Entry::new(
            Bytes::from(big.clone()),
            true,
            "chat".into(),
            Some("acme".into()),
            1_000,
            Duration::from_secs(60),
        );
        assert_eq!(e.tokens, Some(10));
        let v = e.encode(1024);
        assert!(
            v.len() < big.len() / 4,
            "compressed: {} of {}",
            v.len(),
            big.len()
        );
        let d = Entry::decode(&v, "chat".into(), None, 1 << 20).unwrap();
        assert_eq!(d.body, big.as_bytes());
        assert_eq!(d.stored_at_ms, 1_000);
        assert_eq!(d.ttl, Duration::from_secs(60));
        assert!(d.chat);
        // Uncompressed below the threshold.
        let plain = e.encode(u64::MAX);
        assert_eq!(plain.len(), HEADER + big.len());
        assert!(Entry::decode(&plain, "chat".into(), None, 1 << 20).is_some());
        // Junk, cut values, a lying length and a size bomb are misses.
        assert!(Entry::decode(b"hello", "chat".into(), None, 1 << 20).is_none());
        assert!(Entry::decode(&v[..v.len() - 3], "chat".into(), None, 1 << 20).is_none());
        assert!(Entry::decode(&v, "chat".into(), None, 100).is_none());
        let mut lying = plain.clone();
        lying[21..25].copy_from_slice(&(u32::MAX).to_be_bytes());
        assert!(Entry::decode(&lying, "chat".into(), None, usize::MAX).is_none());
        let mut not_json = plain;
        let n = not_json.len();
        not_json[n - 1] = b'!';
        assert!(Entry::decode(&not_json, "chat".into(), None, 1 << 20).is_none());
    }

    #[test]
    fn age_and_time_left() {
        let e = Entry::new(
            Bytes::from_static(b"{}"),
            false,
            "r".into(),
            None,
            10_000,
            Duration::from_secs(60),
        );
        assert_eq!(e.age(12_500), 2);
        assert_eq!(e.left(12_500), Duration::from_millis(57_500));
        assert_eq!(e.left(100_000), Duration::ZERO);
        assert!(e.sse(false).is_none(), "embeddings are never a stream");
    }
}
