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

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bounded_and_absent() {
        let mut t = UsageTail::default();
        for _ in 0..100 {
            t.push(&Bytes::from(vec![b'x'; 1000]));
        }
        assert!(t.tail.len() <= TAIL);
        assert_eq!(t.usage(), None);
    }
}
