//! `limits:` (rate limits and quotas: who, on what, how much), the route
//! shorthand `routes.NAME.limits`, and `state:` (where shared limits live:
//! in memory, or in Redis shared by every replica).

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::raw::Text;
use crate::runtime::{
    FailurePolicy, LimitMatch, LimitStore, Per, RateLimit, RateUnit, RedisState, Route, StateConf,
};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// `state:`.
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// A single Redis node: `redis://host:port[/db]`.
    pub redis: Option<String>,
    /// The seed nodes of a Redis Cluster (instead of `redis`).
    pub redis_cluster: Option<Vec<String>>,
    /// Bound on each Redis call (default 100ms).
    pub timeout: Option<Text>,
    /// Every Redis key starts with this (default `skygate`).
    pub key_prefix: Option<String>,
    /// Gateway replicas sharing the limits: `fail_open` limits fall back
    /// to `limit ÷ replicas` each while Redis is down (default 1).
    pub replicas: Option<u64>,
}

/// One rate limit (an entry of `limits:`, or `routes.NAME.limits`).
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Names the limit in errors, headers, metrics and keys (entries of
    /// `limits:` only; a route's is `route.NAME`).
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawLimitMatch,
    /// One counter per: `principal` (default), `tenant`, `route`, `model`,
    /// `client_ip`, `global`; or a list of these.
    pub per: Option<OneOrMany>,
    pub requests_per_second: Option<u64>,
    pub requests_per_minute: Option<u64>,
    pub requests_per_hour: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u64>,
    /// `local` or `redis` (default: `redis` when `state` has one).
    pub store: Option<String>,
    /// When Redis is down: `fail_open` (default) or `fail_closed`.
    pub on_redis_failure: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Which requests a limit applies to; every list given must match (an
/// absent list matches everything).
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimitMatch {
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    /// Principal ids (an API key's `principal`, a JWT's subject, ...).
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The caller is in at least one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The largest amount any unit accepts.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;

impl Cx<'_> {
    pub(crate) fn state(&mut self, r: Option<RawState>) -> StateConf {
        let Some(r) = r else {
            return StateConf::default();
        };
        let p = [key("state")];
        let at = |k: &str| path_of(&p, &[key(k)]);
        let timeout = self.duration(
            r.timeout.as_ref(),
            Duration::from_millis(100),
            &at("timeout"),
        );
        if timeout > Duration::from_secs(10) {
            self.err(
                &at("timeout"),
                "at most 10s: a request waits this long at worst",
            );
        }
        let replicas = self.int_in(r.replicas, 1, (1, 10_000), &at("replicas")) as u32;
        let prefix = r.key_prefix.unwrap_or_else(|| "skygate".to_string());
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            self.err(
                &at("key_prefix"),
                "use 1-64 characters of A-Z a-z 0-9 . _ : -",
            );
        }
        let (nodes, cluster) = match (r.redis, r.redis_cluster) {
            (Some(_), Some(_)) => {
                self.err(
                    &at("redis_cluster"),
                    "set `redis` or `redis_cluster`, not both",
                );
                (Vec::new(), false)
            }
            (Some(url), None) => {
                self.redis_url(&url, &at("redis"));
                (vec![url], false)
            }
            (None, Some(urls)) => {
                if urls.is_empty() {
                    self.err(&at("redis_cluster"), "list at least one seed node");
                }
                for (i, u) in urls.iter().enumerate() {
                    self.redis_url(u, &path_of(&p, &[key("redis_cluster"), Seg::Index(i)]));
                }
                (urls, true)
            }
            (None, None) => (Vec::new(), false),
        };
        StateConf {
            redis: (!nodes.is_empty()).then_some(RedisState {
                nodes,
                cluster,
                timeout,
                prefix,
            }),
            replicas,
        }
    }

    fn redis_url(&mut self, url: &str, p: &[Seg]) {
        let ok = url
            .strip_prefix("redis://")
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !ok {
            self.err(
                p,
                format!(
                    "`{}` is not a Redis URL: use redis://HOST:PORT[/DB] (TLS to Redis is not supported yet)",
                    crate::redact_url(url)
                ),
            );
        }
    }

    /// `limits:` and the routes' shorthands, checked against the routes.
    pub(crate) fn rate_limits(
        &mut self,
        raw: Vec<Option<RawRateLimit>>,
        route_limits: Vec<(String, RawRateLimit)>,
        routes: &[Route],
        state: &StateConf,
    ) -> Vec<RateLimit> {
        let mut out: Vec<RateLimit> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let p = vec![key("limits"), Seg::Index(i)];
            let Some(r) = r else { continue };
            let Some(name) = r.name.clone() else {
                self.err(
                    &path_of(&p, &[key("name")]),
                    "missing: name the limit (it appears in errors, headers and metrics)",
                );
                continue;
            };
            if !self.name_ok(&name, &path_of(&p, &[key("name")])) {
                continue;
            }
            if name.starts_with("route.") {
                self.err(
                    &path_of(&p, &[key("name")]),
                    "names starting with `route.` belong to the routes' own limits (routes.NAME.limits)",
                );
                continue;
            }
            if seen.contains(&name) {
                self.err(
                    &path_of(&p, &[key("name")]),
                    format!("`{name}` is already the name of another limit"),
                );
                continue;
            }
            seen.push(name.clone());
            if let Some(l) = self.limit(name, r, &p, routes, state, None) {
                out.push(l);
            }
        }
        for (route, r) in route_limits {
            let p = vec![key("routes"), key(&route), key("limits")];
            let Some(index) = routes.iter().position(|x| x.name == route) else {
                continue; // the route failed on its own; already reported
            };
            if r.name.is_some() {
                self.err(
                    &path_of(&p, &[key("name")]),
                    format!("a route's limit is named `route.{route}`; name it only in `limits:`"),
                );
                continue;
            }
            if !r.matcher.routes.is_empty() {
                self.err(
                    &path_of(&p, &[key("match"), key("routes")]),
                    "a route's limit applies to its route: drop `routes` here",
                );
                continue;
            }
            if let Some(l) = self.limit(format!("route.{route}"), r, &p, routes, state, Some(index))
            {
                out.push(l);
            }
        }
        out
    }

    fn limit(
        &mut self,
        name: String,
        r: RawRateLimit,
        p: &[Seg],
        routes: &[Route],
        state: &StateConf,
        route: Option<usize>,
    ) -> Option<RateLimit> {
        let before = self.error_count();
        let at = |k: &str| path_of(p, &[key(k)]);
        let mut rates = Vec::new();
        for (unit, v, field) in [
            (
                RateUnit::RequestsPerSecond,
                r.requests_per_second,
                "requests_per_second",
            ),
            (
                RateUnit::RequestsPerMinute,
                r.requests_per_minute,
                "requests_per_minute",
            ),
            (
                RateUnit::RequestsPerHour,
                r.requests_per_hour,
                "requests_per_hour",
            ),
            (
                RateUnit::TokensPerMinute,
                r.tokens_per_minute,
                "tokens_per_minute",
            ),
            (RateUnit::TokensPerDay, r.tokens_per_day, "tokens_per_day"),
        ] {
            if let Some(n) = v {
                if !(1..=MAX_AMOUNT).contains(&n) {
                    self.err(&at(field), format!("must be between 1 and {MAX_AMOUNT}"));
                    continue;
                }
                rates.push((unit, n));
            }
        }
        let concurrency = r
            .concurrency
            .map(|n| self.int_in(Some(n), 1, (1, 1_000_000), &at("concurrency")) as u32);
        if rates.is_empty()
            && concurrency.is_none()
            && self.error_count() == before
            && !self.reported_under(p)
        {
            self.err(
                p,
                "set at least one of requests_per_second, requests_per_minute, requests_per_hour, tokens_per_minute, tokens_per_day, concurrency",
            );
        }
        let per_names: Vec<String> = match r.per {
            None => vec!["principal".into()],
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v,
        };
        let mut per = Vec::new();
        for s in &per_names {
            match Per::parse(s) {
                Some(x) if per.contains(&x) => {
                    self.err(&at("per"), format!("`{s}` is listed twice"));
                }
                Some(x) => per.push(x),
                None => self.err(
                    &at("per"),
                    format!(
                        "`{}` is not a partition: use {}",
                        crate::clip(s),
                        Per::ALLOWED
                    ),
                ),
            }
        }
        if per.contains(&Per::Global) && per.len() > 1 {
            self.err(
                &at("per"),
                "`global` is one counter for everyone: list it alone",
            );
        }
        let m = r.matcher;
        for (i, model) in m.models.iter().enumerate() {
            if !routes.iter().any(|x| x.models.contains(model)) {
                self.err(
                    &path_of(p, &[key("match"), key("models"), Seg::Index(i)]),
                    format!("no route serves the model `{}`", crate::clip(model)),
                );
            }
        }
        let mut route_ix = Vec::new();
        for (i, name) in m.routes.iter().enumerate() {
            match routes.iter().position(|x| &x.name == name) {
                Some(ix) => route_ix.push(ix),
                None => self.err(
                    &path_of(p, &[key("match"), key("routes"), Seg::Index(i)]),
                    format!("no route is named `{}`", crate::clip(name)),
                ),
            }
        }
        if let Some(ix) = route {
            route_ix.push(ix);
        }
        let store = match r.store.as_deref() {
            None if state.redis.is_some() => LimitStore::Redis,
            None | Some("local") => LimitStore::Local,
            Some("redis") => {
                if state.redis.is_none() {
                    self.err(
                        &at("store"),
                        "`redis` needs `state.redis` (or `state.redis_cluster`)",
                    );
                }
                LimitStore::Redis
            }
            Some(other) => {
                self.err(
                    &at("store"),
                    format!(
                        "`{}` is not a store: use local or redis",
                        crate::clip(other)
                    ),
                );
                LimitStore::Local
            }
        };
        if store == LimitStore::Local && r.on_redis_failure.is_some() {
            self.warn(
                &at("on_redis_failure"),
                "this limit is counted in memory (`store: local`, or no `state.redis`): it never asks Redis",
            );
        }
        let on_failure = match r.on_redis_failure.as_deref() {
            None | Some("fail_open") => FailurePolicy::Open,
            Some("fail_closed") => FailurePolicy::Closed,
            Some(other) => {
                self.err(
                    &at("on_redis_failure"),
                    format!(
                        "`{}` is not a policy: use fail_open or fail_closed",
                        crate::clip(other)
                    ),
                );
                FailurePolicy::Open
            }
        };
        (self.error_count() == before).then_some(RateLimit {
            name,
            matcher: LimitMatch {
                routes: route_ix,
                models: m.models,
                principals: m.principals,
                tenants: m.tenants,
                groups: m.groups,
            },
            per,
            rates,
            concurrency,
            store,
            on_failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::load::load_str;

    const BASE: &str = "
listen: 127.0.0.1:8080
admin: { listen: 127.0.0.1:9090, token: long-enough-token }
backends:
  b: { kind: openai, url: http://127.0.0.1:1/v1 }
routes:
  chat:
    match: { path: /v1/chat/completions, models: [m] }
    targets: [ { backend: b } ]
";

    fn errors(extra: &str) -> Vec<String> {
        match load_str(&format!("{BASE}{extra}"), "f.yaml", &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn limits_load() {
        let c = load_str(
            &format!(
                "{BASE}
state: {{ redis: 'redis://127.0.0.1:6379', replicas: 3 }}
limits:
  - name: tenant-tpm
    match: {{ routes: [chat], tenants: [acme] }}
    per: [tenant, model]
    tokens_per_minute: 100000
    requests_per_minute: 600
    concurrency: 8
    store: local
  - {{ name: daily, per: global, tokens_per_day: 5000000, on_redis_failure: fail_closed }}
  - {{ name: mem, store: local, on_redis_failure: fail_closed, requests_per_second: 9 }}
"
            ),
            "f.yaml",
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.limits.len(), 3);
        assert_eq!(c.state.replicas, 3);
        let l = &c.limits[0];
        assert_eq!(l.matcher.routes, vec![0]);
        assert_eq!(l.rates.len(), 2);
        assert_eq!(l.concurrency, Some(8));
        assert_eq!(l.store, crate::LimitStore::Local);
        assert_eq!(c.limits[1].store, crate::LimitStore::Redis);
        assert_eq!(c.limits[1].on_failure, crate::FailurePolicy::Closed);
        // A failure policy on a limit that never asks Redis is a warning.
        assert!(
            c.warnings
                .iter()
                .any(|w| w.path == "limits[2].on_redis_failure"
                    && w.message.contains("never asks Redis")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn bad_limits_say_where_and_why() {
        let e = errors(
            "
limits:
  - { name: a, requests_per_minute: 0 }
  - { name: b }
  - { name: c, per: [tenant, planet], requests_per_minute: 1 }
  - { name: d, match: { routes: [nope] }, requests_per_minute: 1 }
  - { name: e, store: redis, requests_per_minute: 1 }
  - { name: a, requests_per_minute: 1 }
  - { requests_per_minute: 1 }
  - { name: f, per: [global, tenant], tokens_per_day: 99999999999999 }
  - { name: route.x, requests_per_minute: 1 }
  - { name: g, match: { models: [nope] }, requests_per_minute: 1 }
",
        );
        let want = [
            "limits[0].requests_per_minute: must be between 1 and",
            "limits[1]: set at least one of",
            "limits[2].per: `planet` is not a partition",
            "limits[3].match.routes[0]: no route is named `nope`",
            "limits[4].store: `redis` needs `state.redis`",
            "limits[5].name: `a` is already the name",
            "limits[6].name: missing",
            "limits[7].tokens_per_day: must be between",
            "limits[7].per: `global` is one counter",
            "limits[8].name: names starting with `route.`",
            "limits[9].match.models[0]: no route serves the model `nope`",
        ];
        for w in want {
            assert!(e.iter().any(|x| x.starts_with(w)), "{w} not in {e:#?}");
        }
        // A rate of the wrong type is one error, not also "set at least one".
        let e = errors("limits:\n  - { name: half, requests_per_minute: 0.5 }\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("limits[0].requests_per_minute: "), "{e:?}");
        let e = errors("state: { redis: 'http://x', redis_cluster: [] }\n");
        assert!(
            e.iter()
                .any(|x| x.starts_with("state.redis_cluster: set `redis` or")),
            "{e:?}"
        );
        let e = errors("state: { redis: 'redis://x:1', timeout: 0ms }\n");
        assert!(
            e.iter()
                .any(|x| x.starts_with("state.timeout: must be greater than zero")),
            "{e:?}"
        );
        let e = errors("state: { redis: 'localhost:6379', timeout: 1h, replicas: 0 }\n");
        assert!(
            e.iter()
                .any(|x| x.starts_with("state.redis: `localhost:6379` is not a Redis URL")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|x| x.starts_with("state.timeout: at most 10s")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|x| x.starts_with("state.replicas: must be between 1")),
            "{e:?}"
        );
    }

    #[test]
    fn route_shorthand() {
        let text = BASE.replace(
            "targets: [ { backend: b } ]",
            "targets: [ { backend: b } ]\n    limits: { requests_per_minute: 600, tokens_per_minute: 100000, per: principal }\n    output_tokens_estimate: 512",
        );
        let c = load_str(&text, "f.yaml", &|_| None).unwrap();
        assert_eq!(c.limits[0].name, "route.chat");
        assert_eq!(c.limits[0].matcher.routes, vec![0]);
        assert_eq!(c.routes[0].output_tokens_estimate, 512);
    }
}
