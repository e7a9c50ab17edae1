//! Token usage from a response, for logs, metrics and (later) token rate
//! limits. OpenAI-compatible backends put `usage` at the end of a JSON answer
//! and in the last chunk of a stream (with `stream_options.include_usage`), so
//! only a bounded tail of the body is kept and parsed once at the end.

use bytes::Bytes;
use serde::Deserialize;

const TAIL: usize = 8 * 1024;

/// Token counts as OpenAI reports them (embeddings have no completion tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

/// Keeps the last few KiB of a body.
#[derive(Debug, Default)]
pub struct UsageTail {
    tail: Vec<u8>,
}

impl UsageTail {
    pub fn push(&mut self, chunk: &Bytes) {
        if chunk.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - TAIL..]);
            return;
        }
        let overflow = (self.tail.len() + chunk.len()).saturating_sub(TAIL);
        if overflow > 0 {
            self.tail.drain(..overflow);
        }
        self.tail.extend_from_slice(chunk);
    }

    /// The last `"usage": {...}` object in the tail, if any.
    pub fn usage(&self) -> Option<Usage> {
        let finder = memchr::memmem::rfind_iter(&self.tail, b"\"usage\"");
        for pos in finder {
            let rest = &self.tail[pos + 7..];
            let rest = trim_start(rest);
            let Some(rest) = rest.strip_prefix(b":") else {
                continue;
            };
            let rest = trim_start(rest);
            if !rest.starts_with(b"{") {
                continue;
            }
            let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<Usage>();
            if let Some(Ok(u)) = de.next() {
                return Some(u);
            }
        }
        None
    }
}

impl UsageTail {
    /// The last `"model": "..."` in the tail: the model the backend said
    /// answered (every chunk of a stream carries it; a JSON answer near its
    /// start, so a long one may not have it in the tail).
    pub fn model(&self) -> Option<String> {
        for pos in memchr::memmem::rfind_iter(&self.tail, b"\"model\"") {
            let rest = trim_start(&self.tail[pos + 7..]);
            let Some(rest) = rest.strip_prefix(b":") else {
                continue;
            };
            let rest = trim_start(rest);
            let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
            if let Some(Ok(m)) = de.next() {
                return Some(m);
            }
        }
        None
    }
}

/// Leaves out of an SSE stream the usage-only chunk (`"choices":[]` with a
/// `usage` object) that the gateway asked the backend for with
/// `stream_options.include_usage` when the client did not. Events pass on
/// whole: bytes after the last event boundary (`\n\n` or `\r\n\r\n`) wait
/// for the next chunk. An event longer than [`MAX_EVENT`] turns the filter
/// off (everything passes from then on), so nothing is held without bound.
#[derive(Debug, Default)]
pub struct StripUsage {
    pending: Vec<u8>,
    off: bool,
}

/// The longest incomplete event held back.
pub const MAX_EVENT: usize = 64 * 1024;

impl StripUsage {
    /// The complete events of `pending + chunk`, usage-only ones left out.
    pub fn filter(&mut self, chunk: Bytes) -> Bytes {
        if self.off {
            return chunk;
        }
        let data: Bytes = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(&chunk);
            Bytes::from(std::mem::take(&mut self.pending))
        };
        let end = last_boundary(&data);
        if data.len() - end > MAX_EVENT {
            self.off = true;
            return data;
        }
        self.pending.extend_from_slice(&data[end..]);
        let whole = data.slice(..end);
        // Only a usage object can make a usage-only chunk: OpenAI puts
        // `"usage":null` on every other chunk once it was asked for usage,
        // and those pass without a parse.
        if !has_usage_object(&whole) {
            return whole;
        }
        let mut out = Vec::with_capacity(whole.len());
        let mut rest: &[u8] = &whole;
        while !rest.is_empty() {
            let end = first_boundary(rest).unwrap_or(rest.len());
            let (event, tail) = rest.split_at(end);
            if !(has_usage_object(event) && is_usage_only(event)) {
                out.extend_from_slice(event);
            }
            rest = tail;
        }
        Bytes::from(out)
    }

    /// What is left when the stream ends (an unterminated last event).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.pending)))
    }
}

/// Where the first event of `b` ends (after its blank line), if it does.
fn first_boundary(b: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(b, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(b, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Where the last complete event of `b` ends (0: none is complete).
fn last_boundary(b: &[u8]) -> usize {
    let lf = memchr::memmem::rfind(b, b"\n\n").map_or(0, |i| i + 2);
    let crlf = memchr::memmem::rfind(b, b"\r\n\r\n").map_or(0, |i| i + 4);
    lf.max(crlf)
}

/// Whether `b` has `"usage"` followed by `:` and an object (not `null`).
fn has_usage_object(b: &[u8]) -> bool {
    memchr::memmem::find_iter(b, b"\"usage\"").any(|at| {
        trim_start(&b[at + 7..])
            .strip_prefix(b":")
            .is_some_and(|rest| trim_start(rest).starts_with(b"{"))
    })
}

/// An event whose data is a chunk with no choices and a usage object.
fn is_usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        choices: Option<Vec<serde::de::IgnoredAny>>,
        usage: Option<Usage>,
    }
    let Some(at) = memchr::memmem::find(event, b"data:") else {
        return false;
    };
    let payload = trim_start(&event[at + 5..]);
    match serde_json::from_slice::<Chunk>(payload.trim_ascii_end()) {
        Ok(c) => c.usage.is_some() && c.choices.is_none_or(|v| v.is_empty()),
        Err(_) => false,
    }
}

/// `data:` events in a chunk of an SSE stream (a cut stream's settle
/// counts one token per event).
pub fn count_events(chunk: &[u8]) -> u64 {
    memchr::memmem::find_iter(chunk, b"data:").count() as u64
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answering_model_is_the_last_one_named() {
        let mut t = UsageTail::default();
        t.push(&Bytes::from_static(
            br#"data: {"model":"gpt-4o-2024-08-06","choices":[{"delta":{"content":"the \"model\": x"}}]}"#,
        ));
        assert_eq!(t.model().as_deref(), Some("gpt-4o-2024-08-06"));
        let mut none = UsageTail::default();
        none.push(&Bytes::from_static(br#"{"model": 7, "data": []}"#));
        assert_eq!(none.model(), None);
    }

    #[test]
    fn finds_usage_in_json_and_sse() {
        let mut t = UsageTail::default();
        t.push(&Bytes::from_static(br#"{"choices":[],"usage": {"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#));
        assert_eq!(
            t.usage(),
            Some(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(7),
                total_tokens: Some(12)
            })
        );

        let mut s = UsageTail::default();
        s.push(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n",
        ));
        s.push(&Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n"));
        assert_eq!(s.usage().and_then(|u| u.total_tokens), Some(7));
    }

    #[test]
    fn strips_only_the_usage_chunk_across_chunk_boundaries() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let want = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        // Every way of cutting the stream in two gives the same output.
        for cut in 0..stream.len() {
            let mut f = StripUsage::default();
            let mut out = Vec::new();
            out.extend_from_slice(&f.filter(Bytes::copy_from_slice(&stream[..cut])));
            out.extend_from_slice(&f.filter(Bytes::copy_from_slice(&stream[cut..])));
            if let Some(rest) = f.finish() {
                out.extend_from_slice(&rest);
            }
            assert_eq!(out, want, "cut at {cut}");
        }
        assert_eq!(count_events(stream), 3);
    }

    #[test]
    fn only_a_usage_object_is_looked_at() {
        assert!(!has_usage_object(br#"{"choices":[],"usage":null}"#));
        assert!(!has_usage_object(br#"{"text":"the \"usage\" word"}"#));
        assert!(has_usage_object(br#"{"usage" : {"prompt_tokens":1}}"#));
    }

    #[test]
    fn crlf_events_and_endless_events() {
        let mut f = StripUsage::default();
        let out = f.filter(Bytes::from_static(
            b"data: {\"choices\":[{}]}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n",
        ));
        assert_eq!(
            &out[..],
            b"data: {\"choices\":[{}]}\r\n\r\ndata: [DONE]\r\n\r\n"
        );
        // An event that never ends is not held forever.
        let mut f = StripUsage::default();
        let mut passed = 0;
        for _ in 0..100 {
            passed += f.filter(Bytes::from(vec![b'x'; 4096])).len();
        }
        assert!(passed >= 100 * 4096 - MAX_EVENT, "{passed}");
    }

    #[test]
    fn bounded_and_absent() {
        let mut t = UsageTail::default();
        for _ in 0..100 {
            t.push(&Bytes::from(vec![b'x'; 1000]));
        }
        assert!(t.tail.len() <= TAIL);
        assert_eq!(t.usage(), None);
    }
}
