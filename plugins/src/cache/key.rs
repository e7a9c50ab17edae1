//! The cache key: a SHA-256 of the canonical request (its route, who may
//! share the answer, and the JSON body with object keys sorted and
//! insignificant whitespace gone), leaving out the fields that do not
//! change the answer.

use serde_json::Value;
use std::io::Write;

/// Top-level body fields that do not change the answer: who the end user
/// is, how the answer is framed (a stream or not, with a usage chunk or
/// not), and labels for the caller's own bookkeeping.
const IGNORED: &[&str] = &["user", "stream", "stream_options", "metadata", "store"];

/// What the key is made of, besides the body.
pub struct Parts<'a> {
    pub route: &'a str,
    /// Who shares the entry (`ScopeKey::as_str`).
    pub scope: &'a str,
    /// Backends a policy keeps this caller away from (sorted): an answer
    /// one of them gave must not reach it.
    pub forbidden: &'a [usize],
}

/// A request's key: 128 bits of SHA-256 (the in-memory key) and its hex
/// (the Redis key's last part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u128);

impl Key {
    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// What the body says about how to answer, read while canonicalising.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Framing {
    /// `stream_options.include_usage`: a replayed stream ends with usage.
    pub include_usage: bool,
}

/// The key of a JSON request body, or `None` when the body is not a JSON
/// object (such a request was refused before the cache anyway).
pub fn key(parts: &Parts<'_>, body: &[u8]) -> Option<(Key, Framing)> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let framing = Framing {
        include_usage: map
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let mut buf = Vec::with_capacity(body.len() + 64);
    buf.extend_from_slice(b"skygate-cache-v1\0");
    buf.extend_from_slice(parts.route.as_bytes());
    buf.push(0);
    buf.extend_from_slice(parts.scope.as_bytes());
    buf.push(0);
    for b in parts.forbidden {
        let _ = write!(buf, "{b},");
    }
    buf.push(0);
    let mut fields: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
        .collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    buf.push(b'{');
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_string(&mut buf, k);
        buf.push(b':');
        write_canonical(&mut buf, v);
    }
    buf.push(b'}');
    let digest = ring::digest::digest(&ring::digest::SHA256, &buf);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    Some((Key(u128::from_be_bytes(first)), framing))
}

/// JSON with object keys sorted and no whitespace.
fn write_canonical(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            buf.push(b'{');
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_string(buf, k);
                buf.push(b':');
                write_canonical(buf, v);
            }
            buf.push(b'}');
        }
        Value::Array(items) => {
            buf.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_canonical(buf, v);
            }
            buf.push(b']');
        }
        Value::String(s) => write_string(buf, s),
        other => {
            let _ = serde_json::to_writer(&mut *buf, other);
        }
    }
}

/// A string as JSON (one escaping for every spelling of the same text).
fn write_string(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(body: &str) -> Key {
        let parts = Parts {
            route: "chat",
            scope: "t:acme",
            forbidden: &[],
        };
        key(&parts, body.as_bytes()).unwrap().0
    }

    #[test]
    fn key_order_whitespace_and_framing_fields_do_not_matter() {
        let a = k(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
        let b = k(r#"{ "temperature" : 0,
            "messages": [ {"content":"hi", "role":"user"} ], "model":"m",
            "stream": true, "stream_options": {"include_usage": true},
            "user": "u-1", "metadata": {"x": "y"} }"#);
        assert_eq!(a, b);
        // An escaped spelling of the same text is the same text.
        let c =
            k(r#"{"model":"m","messages":[{"role":"user","content":"h\u0069"}],"temperature":0}"#);
        assert_eq!(a, c);
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = k(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        for other in [
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"hi"}]}"#,
        ] {
            assert_ne!(base, k(other), "{other}");
        }
        let body = br#"{"model":"m"}"#;
        let at = |route, scope, forbidden: &[usize]| {
            key(
                &Parts {
                    route,
                    scope,
                    forbidden,
                },
                body,
            )
            .unwrap()
            .0
        };
        let one = at("chat", "t:a", &[]);
        assert_ne!(one, at("chat", "t:b", &[]));
        assert_ne!(one, at("chat2", "t:a", &[]));
        assert_ne!(one, at("chat", "t:a", &[1]));
        // Parts are separated: moving a byte from one to the next differs.
        assert_ne!(at("ab", "c", &[]), at("a", "bc", &[]));
    }

    #[test]
    fn framing_is_read_and_non_objects_have_no_key() {
        let parts = Parts {
            route: "r",
            scope: "g",
            forbidden: &[],
        };
        let (_, f) = key(&parts, br#"{"stream_options":{"include_usage":true}}"#).unwrap();
        assert!(f.include_usage);
        assert!(key(&parts, b"[1,2]").is_none());
        assert!(key(&parts, b"not json").is_none());
    }
}
