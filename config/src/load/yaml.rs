//! YAML text → [`RawConfig`]: parsed to a value, `${NAME}` substituted, then
//! each top-level section and each named entry deserialized on its own, so
//! one bad entry does not hide the errors of the next.

use super::{key, path_of, Cx};
use crate::error::ConfigError;
use crate::locate::Seg;
use crate::raw::{RawConfig, TOP_LEVEL_KEYS};
use serde::de::DeserializeOwned;
use serde_norway::Value;
use std::collections::BTreeMap;

impl Cx<'_> {
    pub(super) fn parse(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Option<RawConfig> {
        let mut root: Value = match serde_norway::from_str(self.text) {
            Ok(v) => v,
            Err(e) => {
                let (path, message) = too_large(&e.to_string())
                    .unwrap_or_else(|| (String::new(), format!("not valid YAML: {e}")));
                // The YAML reader places a duplicate key at its mapping's
                // start: point at the second entry itself.
                let (line, message) = match duplicate_line(self.text, &message) {
                    Some((first, second)) => {
                        let head = message.split(" at line ").next().unwrap_or(&message);
                        (
                            Some(second),
                            format!("{head} (first at line {first}): keep one"),
                        )
                    }
                    None => (e.location().map(|l| l.line()), message),
                };
                self.errors.push(ConfigError {
                    file: self.file.to_string(),
                    line,
                    path,
                    message,
                });
                return None;
            }
        };
        self.substitute_env(&mut root, &mut Vec::new(), env);
        let Value::Mapping(top) = root else {
            self.err(&[], "the file must be a YAML mapping (top-level keys like `listen:`, `backends:`, `routes:`)");
            return None;
        };
        let mut raw = RawConfig::default();
        for (k, v) in top {
            let Some(k) = k.as_str().map(str::to_string) else {
                self.err(&[], "top-level keys must be strings");
                continue;
            };
            let p = vec![key(&k)];
            match k.as_str() {
                "listen" => raw.listen = self.de(v, &p),
                "server" => {
                    raw.server = self.de(v, &p);
                    if raw.server.is_none() {
                        raw.unread.push("server");
                    }
                }
                "admin" => {
                    raw.admin = self.de(v, &p);
                    if raw.admin.is_none() {
                        raw.unread.push("admin");
                    }
                }
                "auth" => {
                    raw.auth = self.de(v, &p);
                    if raw.auth.is_none() {
                        raw.unread.push("auth");
                    }
                }
                "policy" => raw.policy = self.de(v, &p),
                "state" => raw.state = self.de(v, &p),
                "cache" => raw.cache = self.de(v, &p),
                "telemetry" => raw.telemetry = self.de(v, &p),
                "limits" => {
                    if let serde_norway::Value::Sequence(items) = v {
                        for (i, item) in items.into_iter().enumerate() {
                            let ip = path_of(&p, &[Seg::Index(i)]);
                            // A failed entry stays as `None`, so later indices stay right.
                            raw.limits.push(self.de(item, &ip));
                        }
                    } else {
                        self.err(&p, "expected a list of limits");
                    }
                }
                "backends" => {
                    if let Value::Mapping(m) = &v {
                        raw.backend_names = m
                            .keys()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect();
                    }
                    raw.backends = self.named_map(v, &p)
                }
                "routes" => {
                    if let Value::Mapping(m) = &v {
                        raw.route_names = m
                            .keys()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect();
                    }
                    raw.routes = self.named_map(v, &p)
                }
                other => self.err(
                    &p,
                    format!(
                        "unknown field `{}`{}, expected one of `{}`",
                        crate::clip(other),
                        hint(other, TOP_LEVEL_KEYS),
                        TOP_LEVEL_KEYS.join("`, `")
                    ),
                ),
            }
        }
        Some(raw)
    }

    /// A map of named entries, each deserialized on its own.
    fn named_map<T: DeserializeOwned>(&mut self, v: Value, p: &[Seg]) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let Value::Mapping(m) = v else {
            self.err(p, "expected a mapping of names to entries");
            return out;
        };
        for (k, v) in m {
            let Some(name) = k.as_str().map(str::to_string) else {
                self.err(p, "entry names must be strings");
                continue;
            };
            if let Some(t) = self.de(v, &path_of(p, &[key(&name)])) {
                out.insert(name, t);
            }
        }
        out
    }

    /// One entry deserialized; on errors, each is reported: after one, the
    /// field at fault is taken out of a copy and the entry read again (at
    /// most `MAX_ERRORS_PER_ENTRY` times), so a typo does not hide the next
    /// one, and what is left is checked on (the config fails anyway: this
    /// only finds more of its errors). It stops at an error it cannot take
    /// out (a list's item, which would move the later indices; an enum's
    /// variant; the entry itself), and at a `missing field` that it took out
    /// itself (not the file's error).
    fn de<T: DeserializeOwned>(&mut self, v: Value, p: &[Seg]) -> Option<T> {
        const MAX_ERRORS_PER_ENTRY: usize = 16;
        let mut v = v;
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        let mut hinted: Vec<Vec<Seg>> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_ENTRY {
            let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let message = with_hint(plain(&e.inner().to_string()));
            let mut at: Vec<Seg> = Vec::new();
            let mut removable = true;
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => at.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key: k } => at.push(key(k)),
                    serde_path_to_error::Segment::Enum { variant } => {
                        at.push(key(variant));
                        removable = false;
                    }
                    serde_path_to_error::Segment::Unknown => removable = false,
                }
            }
            if let Some(field) = quoted_after(&message, "missing field `") {
                // Taken out here, or the field a misspelling's hint named:
                // the error is already reported.
                let f = path_of(&at, &[key(field)]);
                if removed.contains(&f) || hinted.contains(&f) {
                    return None;
                }
            }
            self.err(&path_of(p, &at), message.clone());
            // What to take out: the unknown field, else the value at fault.
            if let Some(field) = quoted_after(&message, "unknown field `") {
                if at.last() != Some(&key(field)) {
                    at.push(key(field));
                }
                if let Some(meant) = quoted_after(&message, "(did you mean `") {
                    hinted.push(path_of(&at[..at.len() - 1], &[key(meant)]));
                }
            }
            if !removable || !matches!(at.last(), Some(Seg::Key(_))) || !remove(&mut v, &at) {
                return None;
            }
            self.quiet.push(crate::locate::render(&path_of(p, &at)));
            removed.push(at);
        }
        None
    }
}

/// ` (did you mean `x`?)` when `word` looks like a misspelt candidate.
pub(crate) fn hint(word: &str, candidates: &[&str]) -> String {
    crate::did_you_mean(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// The lines of the first and second `key:` in the mapping the YAML reader's
/// `duplicate entry with key "key" [at line L column C]` names (the
/// mapping starts at L, C; the top level without them): a block mapping's
/// entries at that indentation, until the mapping ends. `None` for other
/// errors, and for flow mappings (`{ a: 1, a: 2 }`).
fn duplicate_line(text: &str, message: &str) -> Option<(usize, usize)> {
    let rest = message.split_once("duplicate entry with key \"")?.1;
    let (key, after) = rest.split_once('"')?;
    let (start, indent) = match after.split_once(" at line ") {
        Some((_, at)) => {
            let (l, c) = at.split_once(" column ")?;
            let c: usize = c
                .trim()
                .split(|ch: char| !ch.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            (l.trim().parse::<usize>().ok()?, c.checked_sub(1)?)
        }
        None => (1, 0),
    };
    let mut first = None;
    for (i, line) in text.lines().enumerate().skip(start.checked_sub(1)?) {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let at = line.len() - body.len();
        if at < indent {
            return None;
        }
        let named = [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| body.starts_with(k.as_str()));
        if at == indent && named {
            match first {
                None => first = Some(i + 1),
                Some(f) => return Some((f, i + 1)),
            }
        }
    }
    None
}

/// serde's `unknown field `x`, expected one of `a`, `b`` (or `unknown
/// variant`) with a hint after the word at fault, when one is close.
fn with_hint(message: String) -> String {
    for what in ["unknown field `", "unknown variant `"] {
        let Some(word) = quoted_after(&message, what) else {
            continue;
        };
        let Some((_, expected)) = message.split_once(", expected ") else {
            continue;
        };
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let h = hint(word, &candidates);
        if h.is_empty() {
            return message;
        }
        let at = message
            .find(what)
            .map_or(0, |i| i + what.len() + word.len() + 1);
        return format!("{}{h}{}", &message[..at], &message[at..]);
    }
    message
}

/// serde's message in the file's terms, not Rust's: `expected usize` is
/// `expected a whole number of 0 or more`, `expected struct RawAdmin` is
/// `expected a mapping`.
/// The YAML reader's error for an integer beyond 64 bits (it reads them
/// into no value at all), as the field and what is wrong with it.
fn too_large(message: &str) -> Option<(String, String)> {
    let (path, rest) = message.split_once(": invalid type: integer `")?;
    let (number, _) = rest.split_once("` as ")?;
    Some((
        path.to_string(),
        format!(
            "`{number}` is too large a number: the largest is {}",
            u64::MAX
        ),
    ))
}

fn plain(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, yaml) in [
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected u16", "expected a whole number of 0 or more"),
        ("expected u8", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a sequence", "expected a list"),
    ] {
        if let Some(rest) = m.strip_suffix(rust) {
            m = format!("{rest}{yaml}");
        }
    }
    for (rust, yaml) in [
        ("expected struct ", "expected a mapping (`key: value`)"),
        (
            "data did not match any variant of untagged enum ",
            "not one of the forms this field takes (see config/README.md)",
        ),
    ] {
        if let Some(at) = m.find(rust) {
            let name_end = m[at + rust.len()..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or(m.len(), |i| at + rust.len() + i);
            m.replace_range(at..name_end, yaml);
        }
    }
    m
}

/// The text between `prefix` and the next backquote in `message`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}

/// Takes the mapping entry at `at` out of `v`.
fn remove(v: &mut Value, at: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = at.split_last() else {
        return false;
    };
    let mut node = v;
    for seg in parents {
        let next = match (node, seg) {
            (Value::Mapping(m), Seg::Key(k)) => m.get_mut(k.as_str()),
            (Value::Sequence(items), Seg::Index(i)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match node {
        Value::Mapping(m) => m.remove(last.as_str()).is_some(),
        _ => false,
    }
}
