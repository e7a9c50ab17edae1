//! The cache key: a SHA-256 of the canonical request (its route, who may
//! share the answer, and the JSON body with object keys sorted and
//! insignificant whitespace gone), leaving out the fields that do not
//! change the answer.

use std::borrow::Cow;
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
    /// Backends a policy keeps this caller away from, by name (sorted):
    /// an answer one of them gave must not reach it.
    pub forbidden: &'a [&'a str],
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
/// object, or has an object with a key twice (a backend might read the
/// other one than we did: such a request is not cached).
pub fn key(parts: &Parts<'_>, body: &[u8]) -> Option<(Key, Framing)> {
    let Ok(Canon::Obj(mut fields)) = serde_json::from_slice::<Canon<'_>>(body) else {
        return None;
    };
    let framing = Framing {
        include_usage: fields.iter().any(|(k, v)| {
            k == "stream_options"
                && matches!(v, Canon::Obj(o) if o.iter().any(|(k, v)| k == "include_usage" && matches!(v, Canon::Bool(true))))
        }),
    };
    // The fields the key leaves out are held to the same rule: a stream
    // request with `include_usage` twice would otherwise be a hit here and
    // a 400 from a backend that refuses duplicate keys.
    let mut ignored: Vec<(Cow<'_, str>, Canon<'_>)> = Vec::new();
    fields.retain_mut(|(k, v)| {
        if IGNORED.contains(&k.as_ref()) {
            ignored.push((std::mem::take(k), std::mem::replace(v, Canon::Null)));
            false
        } else {
            true
        }
    });
    let mut names: Vec<&str> = ignored.iter().map(|(k, _)| k.as_ref()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) || !ignored.iter().all(|(_, v)| unique_keys(v)) {
        return None;
    }
    let mut h = Hasher::new();
    h.put(b"skygate-cache-v1\0");
    h.put(parts.route.as_bytes());
    h.put(b"\0");
    h.put(parts.scope.as_bytes());
    h.put(b"\0");
    for b in parts.forbidden {
        h.put(b.as_bytes());
        h.put(b",");
    }
    h.put(b"\0");
    if !write_object(&mut h, fields) {
        return None;
    }
    let digest = h.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    Some((Key(u128::from_be_bytes(first)), framing))
}

/// SHA-256 fed through a small buffer on the stack: the canonical form is
/// hashed as it is written, never held whole.
struct Hasher {
    ctx: ring::digest::Context,
    buf: [u8; 1024],
    len: usize,
}

impl Hasher {
    fn new() -> Self {
        Self {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            buf: [0; 1024],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.ctx.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > self.buf.len() {
                self.ctx.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(mut self) -> ring::digest::Digest {
        self.ctx.update(&self.buf[..self.len]);
        self.ctx.finish()
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.put(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON value as parsed, objects keeping every key in order (duplicates
/// too, to be refused): what the canonical form is written from. Strings
/// without escapes borrow from the body.
enum Canon<'a> {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(Cow<'a, str>),
    Arr(Vec<Canon<'a>>),
    Obj(Vec<(Cow<'a, str>, Canon<'a>)>),
}

/// A string that borrows from the body when it can (an object's key).
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Canon<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Canon<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Canon<'de>, E> {
                Ok(Canon::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Canon<'de>, E> {
                Ok(Canon::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Canon<'de>, E> {
                Ok(Canon::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Canon<'de>, E> {
                Ok(Canon::Num(n.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Canon<'de>, E> {
                // An integer beyond 2^53 came as a float: two different
                // ones may round to the same (a backend may read them
                // exactly), so such a request is not cached.
                if n.fract() == 0.0 && n.abs() >= 9_007_199_254_740_992.0 {
                    return Err(E::custom("an integer too large to key exactly"));
                }
                serde_json::Number::from_f64(n)
                    .map(Canon::Num)
                    .ok_or_else(|| E::custom("not a JSON number"))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Canon<'de>, E> {
                Ok(Canon::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Canon<'de>, E> {
                Ok(Canon::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Canon<'de>, E> {
                Ok(Canon::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Canon<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Canon::Arr(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Canon<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<Text<'de>, Canon<'de>>()? {
                    v.push((k.0, x));
                }
                Ok(Canon::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object, keys sorted; `false` when a key appears twice.
fn write_object(h: &mut Hasher, mut fields: Vec<(Cow<'_, str>, Canon<'_>)>) -> bool {
    fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if fields.windows(2).any(|w| w[0].0 == w[1].0) {
        return false;
    }
    h.put(b"{");
    for (i, (k, v)) in fields.into_iter().enumerate() {
        if i > 0 {
            h.put(b",");
        }
        write_string(h, &k);
        h.put(b":");
        if !write_canonical(h, v) {
            return false;
        }
    }
    h.put(b"}");
    true
}

/// No object in `v` has a key twice (sorted, as `write_object` does: a
/// client's object of many keys costs n log n, not n²).
fn unique_keys(v: &Canon<'_>) -> bool {
    match v {
        Canon::Obj(fields) => {
            let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
            keys.sort_unstable();
            !keys.windows(2).any(|w| w[0] == w[1]) && fields.iter().all(|(_, v)| unique_keys(v))
        }
        Canon::Arr(items) => items.iter().all(unique_keys),
        _ => true,
    }
}

/// JSON with object keys sorted and no whitespace; `false` on a
/// duplicate key anywhere.
fn write_canonical(h: &mut Hasher, v: Canon<'_>) -> bool {
    match v {
        Canon::Obj(fields) => return write_object(h, fields),
        Canon::Arr(items) => {
            h.put(b"[");
            for (i, v) in items.into_iter().enumerate() {
                if i > 0 {
                    h.put(b",");
                }
                if !write_canonical(h, v) {
                    return false;
                }
            }
            h.put(b"]");
        }
        Canon::Str(s) => write_string(h, &s),
        Canon::Num(n) => {
            let _ = write!(h, "{n}");
        }
        Canon::Bool(b) => h.put(if b { b"true" } else { b"false" }),
        Canon::Null => h.put(b"null"),
    }
    true
}

/// A string as JSON (one escaping for every spelling of the same text).
fn write_string(h: &mut Hasher, s: &str) {
    let _ = serde_json::to_writer(&mut *h, s);
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
        let at = |route, scope, forbidden: &[&str]| {
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
        assert_ne!(one, at("chat", "t:a", &["gcp"]));
        // Parts are separated: moving a byte from one to the next differs.
        assert_ne!(at("ab", "c", &[]), at("a", "bc", &[]));
    }

    /// The key is SHA-256 of the canonical form, hashed as it is written:
    /// the same digest as hashing the whole form at once (so keys stay what
    /// they were, and entries in a shared Redis stay reachable), whether
    /// the pieces are small or cross the hasher's buffer.
    #[test]
    fn the_key_is_the_digest_of_the_canonical_form() {
        let long = "y".repeat(3000);
        for (body, canonical) in [
            (
                r#"{ "b": [1, 2.5, null, true], "a": {"z": "\u00e9", "y": false}, "user": "u" }"#
                    .to_string(),
                r#"{"a":{"y":false,"z":"é"},"b":[1,2.5,null,true]}"#.to_string(),
            ),
            (
                format!(r#"{{"model":"m","messages":[{{"content":"{long}","role":"user"}}]}}"#),
                format!(r#"{{"messages":[{{"content":"{long}","role":"user"}}],"model":"m"}}"#),
            ),
        ] {
            let mut whole = b"skygate-cache-v1\0chat\0t:acme\0gcp,\0".to_vec();
            whole.extend_from_slice(canonical.as_bytes());
            let d = ring::digest::digest(&ring::digest::SHA256, &whole);
            let mut first = [0u8; 16];
            first.copy_from_slice(&d.as_ref()[..16]);
            let parts = Parts {
                route: "chat",
                scope: "t:acme",
                forbidden: &["gcp"],
            };
            assert_eq!(
                key(&parts, body.as_bytes()).unwrap().0,
                Key(u128::from_be_bytes(first)),
                "{canonical}"
            );
        }
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

    #[test]
    fn duplicate_keys_are_not_cached() {
        let parts = Parts {
            route: "r",
            scope: "g",
            forbidden: &[],
        };
        let twice = br#"{"model":"m","messages":[{"role":"user","content":"a","content":"b"}]}"#;
        assert!(key(&parts, twice).is_none());
        assert!(key(&parts, br#"{"model":"m","model":"n"}"#).is_none());
        // Integers too large for a float to tell apart are not keyed.
        assert!(key(&parts, br#"{"seed":18446744073709551617}"#).is_none());
        assert!(key(&parts, br#"{"seed":18446744073709551615}"#).is_some());
        // Nor in the fields the key leaves out.
        let usage_twice = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#;
        assert!(key(&parts, usage_twice).is_none());
        assert!(key(&parts, br#"{"model":"m","user":"a","user":"b"}"#).is_none());
        assert!(key(&parts, br#"{"model":"m","user":"a","metadata":{"x":1}}"#).is_some());
        // The same key in two different objects is fine.
        assert!(key(&parts, br#"{"a":{"x":1},"b":{"x":1}}"#).is_some());
    }
}
