//! The decision cache: a call's whole verdict (the action on the model or
//! route, then `use_backend` on each target) kept by what it depends on, so
//! a repeated question costs a hash lookup instead of Cedar evaluations.
//!
//! Exact, not a heuristic. A Cedar decision is a pure function of the
//! principal entity, the action, the resource entity, the context and the
//! policy set (Cedar has no clock and no randomness). The principal and the
//! resource are keyed in full (the subject key of `engine.rs` holds every
//! field an entity is built from; a resource is its route and model); the
//! policy set is the engine's (a reload builds a new engine and cache).
//! The context is keyed only by what the policies can observe of it, found
//! by reading every policy once at load ([`ContextUse::of`]):
//!
//! - an attribute no policy reads is left out of the key;
//! - a numeric attribute that policies only compare with literal numbers
//!   (`context.request_bytes < 100000`) is keyed by where it falls among
//!   those numbers: below, at, or between two of them, which is all such
//!   comparisons can tell apart. So a varying body size does not make every
//!   request a miss;
//! - any other use of an attribute (arithmetic, a method such as
//!   `isInRange`, a comparison with another expression) keys its exact
//!   value, and a use of `context` as a whole keys every attribute.
//!
//! Bounded: at most [`CAP`] decisions; a full cache is emptied and refills
//! (the working set of principals and models is small in practice).

use super::engine::{CallVerdict, Facts};
use cedar_policy::PolicySet;
use serde_json::Value;
use skygate_config::push_num;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Decisions kept before the cache is emptied.
pub const CAP: usize = 16_384;

/// The context's numeric attributes, in key order.
const NUMERIC: [&str; 4] = ["request_bytes", "estimated_tokens", "hour", "weekday"];

/// How the policies read one context attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Use {
    /// Never read.
    #[default]
    Unused,
    /// Only compared with these literal numbers (sorted, distinct).
    Compared(Vec<i64>),
    /// Read some other way: its exact value decides.
    Exact,
}

impl Use {
    fn compared(&mut self, n: i64) {
        match self {
            Use::Unused => *self = Use::Compared(vec![n]),
            Use::Compared(v) => {
                if let Err(at) = v.binary_search(&n) {
                    v.insert(at, n);
                }
            }
            Use::Exact => {}
        }
    }

    /// Which class `v` falls in: 2i below the i-th number, 2i+1 at it.
    fn class(&self, v: i64) -> Option<usize> {
        match self {
            Use::Unused => None,
            Use::Compared(t) => {
                let i = t.partition_point(|&x| x < v);
                Some(if t.get(i) == Some(&v) {
                    2 * i + 1
                } else {
                    2 * i
                })
            }
            Use::Exact => Some(usize::MAX),
        }
    }
}

/// What the policy set can observe of the context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextUse {
    /// By attribute name (only those some policy names).
    attrs: HashMap<String, Use>,
    /// `context` used as a value: every attribute counts, exactly.
    whole: bool,
    /// The above resolved once for [`Self::key`] (no lookup by name per
    /// request): whether `client_ip`, `mtls`, `route`, `stream` are read,
    /// and how each of [`NUMERIC`] is.
    flags: [bool; 4],
    numeric: [Use; 4],
}

impl ContextUse {
    /// Reads every policy of `set` (as Cedar's JSON form). A policy that
    /// cannot be read that way counts as using the whole context.
    pub fn of(set: &PolicySet) -> Self {
        let mut u = ContextUse::default();
        for p in set.policies() {
            match p.to_json() {
                Ok(json) => u.walk(&json),
                Err(_) => u.whole = true,
            }
        }
        u.flags = ["client_ip", "mtls", "route", "stream"].map(|n| u.reads(n));
        u.numeric = NUMERIC.map(|n| {
            if u.whole {
                Use::Exact
            } else {
                u.attrs.get(n).cloned().unwrap_or_default()
            }
        });
        u
    }

    fn attr(&mut self, name: &str) -> &mut Use {
        self.attrs.entry(name.to_owned()).or_default()
    }

    fn walk(&mut self, e: &Value) {
        match e {
            Value::Object(m) => {
                if let (1, Some((k, v))) = (m.len(), m.iter().next()) {
                    match k.as_str() {
                        "==" | "!=" | "<" | "<=" | ">" | ">=" => {
                            if let (Some(l), Some(r)) = (v.get("left"), v.get("right")) {
                                if let Some((a, n)) = compared(l, r).or_else(|| compared(r, l)) {
                                    self.attr(a).compared(n);
                                    return;
                                }
                            }
                        }
                        "." => {
                            if let Some(a) = context_attr(e) {
                                *self.attr(a) = Use::Exact;
                                return;
                            }
                        }
                        // The context's attributes are always the same
                        // set: `context has x` is a constant.
                        "has" if v.get("left").is_some_and(is_context) => return,
                        "Var" if v == "context" => {
                            self.whole = true;
                            return;
                        }
                        _ => {}
                    }
                }
                for v in m.values() {
                    self.walk(v);
                }
            }
            Value::Array(a) => {
                for v in a {
                    self.walk(v);
                }
            }
            _ => {}
        }
    }

    /// Whether the policies read `name` at all.
    pub fn reads(&self, name: &str) -> bool {
        self.whole || self.attrs.get(name).is_some_and(|u| *u != Use::Unused)
    }

    /// Appends to `key` what the policies can tell of `f`.
    pub fn key(&self, f: &Facts, key: &mut String) {
        let [ip, mtls, route, stream] = self.flags;
        if ip {
            key.push('i');
            if let Some(ip) = f.client_ip {
                skygate_config::push_ip(key, ip);
            }
            key.push(';');
        }
        if mtls {
            key.push(if f.mtls { 'M' } else { 'm' });
        }
        if route {
            key.push('r');
            push_num(key, f.route.len() as u64);
            key.push(':');
            key.push_str(&f.route);
        }
        if stream {
            key.push(if f.stream { 'S' } else { 's' });
        }
        let values = [
            f.request_bytes,
            f.estimated_tokens,
            u64::from(f.hour),
            u64::from(f.weekday),
        ];
        for (u, v) in self.numeric.iter().zip(values) {
            // As the context holds it (`engine::context`).
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            match u.class(v) {
                None => {}
                Some(usize::MAX) => {
                    key.push('=');
                    // Never negative today (the values are unsigned), but a
                    // sign must not be lost from a key.
                    if v < 0 {
                        key.push('-');
                    }
                    push_num(key, v.unsigned_abs());
                    key.push(';');
                }
                Some(c) => {
                    key.push('#');
                    push_num(key, c as u64);
                    key.push(';');
                }
            }
        }
    }
}

/// `context.<attr>`: the attribute's name.
fn context_attr(e: &Value) -> Option<&str> {
    let g = e.get(".")?;
    if !is_context(g.get("left")?) {
        return None;
    }
    g.get("attr")?.as_str()
}

fn is_context(e: &Value) -> bool {
    e.get("Var").is_some_and(|v| v == "context")
}

/// `context.<attr>` against a literal whole number.
fn compared<'a>(attr: &'a Value, literal: &Value) -> Option<(&'a str, i64)> {
    let a = context_attr(attr)?;
    let n = literal.get("Value")?.as_i64()?;
    Some((a, n))
}

/// A kept decision, with the principal's name for the audit line.
#[derive(Debug)]
pub struct Decided {
    pub call: CallVerdict,
    /// The principal's entity uid, as audited.
    pub principal: String,
}

/// The cache itself, with its hit and miss counts.
#[derive(Default)]
pub struct Decisions {
    map: RwLock<HashMap<String, Arc<Decided>>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl Decisions {
    pub fn get(&self, key: &str) -> Option<Arc<Decided>> {
        let hit = self.map.read().ok().and_then(|m| m.get(key).cloned());
        let (mine, all) = match hit {
            Some(_) => (&self.hits, &super::COUNTERS.cache_hit),
            None => (&self.misses, &super::COUNTERS.cache_miss),
        };
        mine.fetch_add(1, Ordering::Relaxed);
        all.fetch_add(1, Ordering::Relaxed);
        hit
    }

    pub fn insert(&self, key: String, d: Arc<Decided>) {
        if let Ok(mut m) = self.map.write() {
            if m.len() >= CAP {
                m.clear();
            }
            m.insert(key, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(text: &str) -> ContextUse {
        ContextUse::of(&text.parse::<PolicySet>().unwrap())
    }

    #[test]
    fn reads_what_the_policies_observe() {
        let u = uses(
            r#"
permit (principal, action, resource) when { context.request_bytes < 100000 && 10 >= context.hour };
forbid (principal, action, resource) when { context.hour == 25 || context.request_bytes > 5 };
forbid (principal, action, resource) when { context.estimated_tokens * 2 > 9 };
permit (principal, action, resource) when { context has weekday && context.client_ip.isInRange(ip("10.0.0.0/8")) };
"#,
        );
        assert!(!u.whole);
        assert_eq!(u.attrs["request_bytes"], Use::Compared(vec![5, 100_000]));
        assert_eq!(u.attrs["hour"], Use::Compared(vec![10, 25]));
        assert_eq!(u.attrs["estimated_tokens"], Use::Exact);
        assert_eq!(u.attrs["client_ip"], Use::Exact);
        assert!(!u.reads("weekday") && !u.reads("mtls") && !u.reads("route"));
        // Classes: below 5, at 5, between, at 100000, above.
        let c = |v| u.attrs["request_bytes"].class(v);
        assert_eq!(
            [c(0), c(4), c(5), c(6), c(99_999), c(100_000), c(1 << 40)],
            [
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(2),
                Some(3),
                Some(4)
            ]
        );
        // `context` as a value: everything counts.
        let w = uses(r#"permit (principal, action, resource) when { context == {"a": 1} };"#);
        assert!(w.whole && w.reads("mtls") && w.reads("weekday"));
    }
}
