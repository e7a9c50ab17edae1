//! A JSON request body edited one top-level member at a time, every other
//! member kept in the client's order with its value as the client wrote it
//! (numbers and escapes untouched; keys are written out again, as the
//! same strings, and whitespace between members goes): the backend reads
//! the request the gateway checked, but for the one member changed.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A JSON object's members in order (a name twice, twice), each value as
/// its raw text.
pub struct RawMembers<'a>(pub Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_entry::<String, &'de RawValue>()? {
                    v.push(e);
                }
                Ok(RawMembers(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// `body` (a JSON object) without its top-level `name` (every occurrence);
/// `body` itself when it has none, or is no object.
pub fn without_member(body: &Bytes, name: &str) -> Bytes {
    let Ok(RawMembers(members)) = serde_json::from_slice::<RawMembers<'_>>(body) else {
        return body.clone();
    };
    if !members.iter().any(|(k, _)| k == name) {
        return body.clone();
    }
    let kept = members.iter().filter(|(k, _)| k != name);
    write(kept.map(|(k, v)| (k.as_str(), *v)), body.len()).unwrap_or_else(|| body.clone())
}

/// `body` (a JSON object) with its top-level `name` set to `value`: in
/// place (every occurrence, so a backend cannot read another one than the
/// gateway set), or last when it has none. `None` when `body` is no JSON
/// object.
pub fn with_member(body: &[u8], name: &str, value: &RawValue) -> Option<Bytes> {
    let RawMembers(mut members) = serde_json::from_slice::<RawMembers<'_>>(body).ok()?;
    let mut found = false;
    for (k, v) in &mut members {
        if k == name {
            *v = value;
            found = true;
        }
    }
    if !found {
        members.push((name.to_string(), value));
    }
    write(
        members.iter().map(|(k, v)| (k.as_str(), *v)),
        body.len() + value.get().len(),
    )
}

fn write<'a>(members: impl Iterator<Item = (&'a str, &'a RawValue)>, size: usize) -> Option<Bytes> {
    let mut out = Vec::with_capacity(size + 2);
    out.push(b'{');
    for (k, v) in members {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k).ok()?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_kept_as_written() {
        let body = Bytes::from_static(
            br#"{"z":1.0,"model":"a","stream_options":{"include_usage":true},"big":12345678901234567890,"s":"\u00e9"}"#,
        );
        let out = without_member(&body, "stream_options");
        assert_eq!(
            &out[..],
            br#"{"z":1.0,"model":"a","big":12345678901234567890,"s":"\u00e9"}"#
        );
        // Nothing to leave out, or no object: the body itself.
        assert_eq!(without_member(&out, "stream_options"), out);
        let junk = Bytes::from_static(b"[1,2]");
        assert_eq!(without_member(&junk, "x"), junk);
        // A key is matched as the string it stands for, escaped or not.
        let escaped = Bytes::from_static(br#"{"stream\u005foptions":{},"a":1}"#);
        assert_eq!(
            &without_member(&escaped, "stream_options")[..],
            br#"{"a":1}"#
        );
        // Every occurrence goes.
        let twice = Bytes::from_static(br#"{"a":1,"x":2,"x":3}"#);
        assert_eq!(&without_member(&twice, "x")[..], br#"{"a":1}"#);

        let name = serde_json::value::to_raw_value("prod-4o").unwrap();
        assert_eq!(
            &with_member(&body, "model", &name).unwrap()[..],
            br#"{"z":1.0,"model":"prod-4o","stream_options":{"include_usage":true},"big":12345678901234567890,"s":"\u00e9"}"#
        );
        assert_eq!(
            &with_member(&twice, "x", &name).unwrap()[..],
            br#"{"a":1,"x":"prod-4o","x":"prod-4o"}"#
        );
        assert_eq!(
            &with_member(br#"{"a":1}"#, "model", &name).unwrap()[..],
            br#"{"a":1,"model":"prod-4o"}"#
        );
        assert!(with_member(b"[1]", "model", &name).is_none());
        assert!(with_member(b"not json", "model", &name).is_none());
    }
}
