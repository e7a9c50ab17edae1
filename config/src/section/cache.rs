//! `cache:` (the response cache's memory bound, its Redis tier and how long
//! identical misses wait for the first) and `routes.NAME.cache` (whether a
//! route's answers are cached, for how long, and who shares them).

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::raw::Text;
use crate::runtime::{CacheConf, CacheScope, Operation, RouteCache, StateConf};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// `cache:` (top level).
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Bound on the in-memory tier's entries, in bytes (default 128MiB).
    pub memory: Option<Text>,
    /// Keep entries in the `state` Redis too, shared by every replica
    /// (default: yes when `state` has a Redis).
    pub redis: Option<bool>,
    /// Entries larger than this are compressed in Redis (default 1KiB).
    pub compress_above: Option<Text>,
    /// How long identical misses wait for the first one's answer before
    /// asking a backend themselves (default 30s).
    pub wait: Option<Text>,
}

/// `routes.NAME.cache`.
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    /// Default `true` (the section's presence turns caching on).
    pub enabled: Option<bool>,
    /// How long an entry is served (default 5m).
    pub ttl: Option<Text>,
    /// Larger answers are not stored (default 1MiB).
    pub max_entry_bytes: Option<Text>,
    /// Who shares entries: `tenant` (default), `principal` or `global`.
    pub scope: Option<String>,
    /// Hits count against request limits (default `true`).
    pub charge_hits: Option<bool>,
}

/// The longest `ttl` accepted.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest `max_entry_bytes` accepted (the Redis writer holds at most
/// 32MiB of values waiting).
const MAX_ENTRY: usize = 16 << 20;

impl Cx<'_> {
    pub(crate) fn cache(&mut self, r: Option<RawCache>, state: &StateConf) -> CacheConf {
        let d = CacheConf::default();
        let Some(r) = r else {
            return CacheConf {
                redis: state.redis.is_some(),
                ..d
            };
        };
        let p = [key("cache")];
        let at = |k: &str| path_of(&p, &[key(k)]);
        let memory = self.size_in(
            r.memory.as_ref(),
            d.memory,
            (1 << 20, 1 << 40),
            &at("memory"),
        );
        let compress_above = self.size_in(
            r.compress_above.as_ref(),
            d.compress_above,
            (0, 1 << 30),
            &at("compress_above"),
        );
        let wait = self.duration_from(r.wait.as_ref(), d.wait, &at("wait"), true);
        if wait > Duration::from_secs(600) {
            self.err(
                &at("wait"),
                "at most 10m: a request waits this long at worst",
            );
        }
        let redis = match r.redis {
            Some(true) if state.redis.is_none() => {
                self.err(
                    &at("redis"),
                    "there is no Redis to use: set `state.redis` (or `state.redis_cluster`)",
                );
                false
            }
            Some(on) => on,
            None => state.redis.is_some(),
        };
        CacheConf {
            memory,
            redis,
            compress_above,
            wait,
        }
    }

    /// A route's `cache:`; `None` when caching is off for it.
    /// `identity`: a target backend is sent the caller's identity (its
    /// answers may differ per caller: entries are the caller's own unless
    /// the scope is set).
    pub(crate) fn route_cache(
        &mut self,
        r: Option<RawRouteCache>,
        operation: Operation,
        identity: bool,
        p: &[Seg],
    ) -> Option<RouteCache> {
        let r = r?;
        let p = path_of(p, &[key("cache")]);
        let at = |k: &str| path_of(&p, &[key(k)]);
        if operation == Operation::Function {
            self.err(
                &p,
                "only chat completions and embeddings routes are cached (a function's answer may depend on more than its body)",
            );
            return None;
        }
        let d = RouteCache::default();
        let ttl = self.duration_upto(r.ttl.as_ref(), d.ttl, &at("ttl"), MAX_TTL);
        let max_entry_bytes = self.size_in(
            r.max_entry_bytes.as_ref(),
            d.max_entry_bytes as u64,
            (1, MAX_ENTRY as u64),
            &at("max_entry_bytes"),
        ) as usize;
        let scope = match r.scope.as_deref() {
            None if identity => CacheScope::Principal,
            None => d.scope,
            Some(s) => CacheScope::parse(s).unwrap_or_else(|| {
                self.err(
                    &at("scope"),
                    format!(
                        "`{}` is not a cache scope: use one of {}",
                        crate::clip(s),
                        CacheScope::ALLOWED
                    ),
                );
                d.scope
            }),
        };
        if identity && scope != CacheScope::Principal {
            self.warn(
                &at("scope"),
                "a target backend gets the caller's identity (`identity`): if its answers differ per caller, use `scope: principal` (the default here when `scope` is not set)",
            );
        }
        if !r.enabled.unwrap_or(true) {
            return None;
        }
        Some(RouteCache {
            ttl,
            max_entry_bytes,
            scope,
            charge_hits: r.charge_hits.unwrap_or(d.charge_hits),
        })
    }

    /// A size in `min..=max` bytes, or `default` when absent.
    fn size_in(
        &mut self,
        s: Option<&Text>,
        default: u64,
        (min, max): (u64, u64),
        p: &[Seg],
    ) -> u64 {
        match s.map(|t| crate::parse_size(&t.0)) {
            None => default,
            Some(Ok(n)) if (min..=max).contains(&(n as u64)) => n as u64,
            Some(Ok(_)) => {
                self.err(
                    p,
                    format!("must be between {} and {}", show_size(min), show_size(max)),
                );
                default
            }
            Some(Err(msg)) => {
                self.err(p, msg);
                default
            }
        }
    }
}

fn show_size(n: u64) -> String {
    match n {
        0 => "0".to_string(),
        n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    const BASE: &str = "listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090, token: admin-token-123 }
backends:
  b: { kind: openai, url: http://127.0.0.1:9 }
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: b } ]
";

    fn load(text: &str) -> Result<crate::Config, crate::ConfigErrors> {
        load_str(text, "f.yaml", &|_| None)
    }

    fn errors(extra: &str) -> String {
        match load(&format!("{BASE}{extra}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn route_cache_defaults_and_values() {
        let c = load(&format!("{BASE}    cache: {{ ttl: 10m }}\n")).unwrap();
        let rc = c.routes[0].cache.as_ref().unwrap();
        assert_eq!(rc.ttl, std::time::Duration::from_secs(600));
        assert_eq!(rc.max_entry_bytes, 1 << 20);
        assert_eq!(rc.scope, crate::CacheScope::Tenant);
        assert!(rc.charge_hits);
        assert!(!c.cache.redis);
        assert_eq!(c.cache.memory, 128 << 20);
        // Beyond the usual 24h, in days, up to the documented 30d.
        let c = load(&format!("{BASE}    cache: {{ ttl: 30d }}\n")).unwrap();
        let ttl = c.routes[0].cache.as_ref().unwrap().ttl;
        assert_eq!(ttl, std::time::Duration::from_secs(30 * 86_400));
        let e = errors("    cache: { ttl: 31d }\n");
        assert!(
            e.contains("routes.chat.cache.ttl: `31d` is too long: at most 30d"),
            "{e}"
        );
        let off = load(&format!("{BASE}    cache: {{ enabled: false }}\n")).unwrap();
        assert!(off.routes[0].cache.is_none());
        let none = load(BASE).unwrap();
        assert!(none.routes[0].cache.is_none());
    }

    #[test]
    fn absurd_values_are_refused_with_their_path() {
        let e = errors("    cache: { ttl: 400d, max_entry_bytes: 1GiB, scope: world }\n");
        assert!(e.contains("routes.chat.cache.ttl"), "{e}");
        assert!(e.contains("routes.chat.cache.max_entry_bytes"), "{e}");
        assert!(e.contains("routes.chat.cache.scope"), "{e}");
        let e = errors("cache: { memory: 1KiB, wait: 1h, redis: true }\n");
        assert!(
            e.contains("cache.memory: must be between 1MiB and 1024GiB"),
            "{e}"
        );
        assert!(e.contains("cache.wait"), "{e}");
        assert!(e.contains("cache.redis: there is no Redis"), "{e}");
    }

    #[test]
    fn an_entry_bound_beyond_the_tier_is_warned_about() {
        let c = load(&format!(
            "cache: {{ memory: 1MiB }}\n{BASE}    cache: {{ ttl: 1m, max_entry_bytes: 2MiB }}\n"
        ))
        .unwrap();
        let w: Vec<String> = c
            .warnings
            .iter()
            .filter(|w| w.path != "auth")
            .map(ToString::to_string)
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("f.yaml:10: routes.chat.cache.max_entry_bytes: 2097152 is more than the whole in-memory tier"),
            "{w:?}"
        );
        let c = load(&format!(
            "cache: {{ memory: 2MiB }}\n{BASE}    cache: {{ ttl: 1m, max_entry_bytes: 2MiB }}\n"
        ))
        .unwrap();
        assert!(
            c.warnings.iter().all(|w| w.path == "auth"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn function_routes_are_not_cached() {
        let text = format!(
            "{BASE}  fn:\n    match: {{ path_prefix: /f }}\n    targets: [ {{ backend: b }} ]\n    cache: {{ ttl: 1m }}\n"
        );
        let e = load(&text).unwrap_err().to_string();
        assert!(
            e.contains("routes.fn.cache: only chat completions and embeddings"),
            "{e}"
        );
    }

    #[test]
    fn identity_backends_default_to_principal_scope() {
        use base64::Engine;
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let dir = std::env::temp_dir().join(format!("skygate-cache-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("id.pem");
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        std::fs::write(
            &key,
            format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
        )
        .unwrap();
        let text = |cache: &str| {
            BASE.replace(
                "url: http://127.0.0.1:9 }",
                "url: http://127.0.0.1:9, identity: true }",
            ) + &format!(
                "    cache: {cache}\nauth:\n  identity_token: {{ key_file: \"{}\", algorithm: ES256 }}\n",
                key.display()
            )
        };
        let c = load(&text("{ ttl: 1m }")).unwrap();
        assert_eq!(
            c.routes[0].cache.as_ref().unwrap().scope,
            crate::CacheScope::Principal
        );
        assert!(
            c.warnings.iter().all(|w| w.path == "auth"),
            "{:?}",
            c.warnings
        );
        // Asked for explicitly: kept, with a warning.
        let c = load(&text("{ ttl: 1m, scope: tenant }")).unwrap();
        assert_eq!(
            c.routes[0].cache.as_ref().unwrap().scope,
            crate::CacheScope::Tenant
        );
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert!(
            w.iter().any(|w| w.contains("routes.chat.cache.scope")),
            "{w:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn redis_tier_follows_state() {
        let with_state = "state: { redis: redis://127.0.0.1:6379 }\n";
        let c = load(&format!("{BASE}{with_state}")).unwrap();
        assert!(c.cache.redis);
        let c = load(&format!("{BASE}{with_state}cache: {{ redis: false }}\n")).unwrap();
        assert!(!c.cache.redis);
    }
}
