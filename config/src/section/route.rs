//! `routes.NAME`: which requests go where: the match (path, models), the
//! targets with weights and priority groups, the strategy within a group,
//! retries with their budget, and the body limit.

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::raw::Text;
use crate::runtime::{
    AuthMethod, Backend, Hold, Operation, PathMatch, Retries, RetryBudget, RetryOn, Route,
    Strategy, Target, DEFAULT_MAX_BODY, MAX_WEIGHT,
};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub targets: Vec<RawTarget>,
    /// Backends tried, in this order, only when no target is available:
    /// shorthand for targets in their own, later priority groups.
    #[serde(default)]
    pub fallback: Vec<String>,
    pub strategy: Option<String>,
    pub retries: Option<RawRetries>,
    /// The authentication methods accepted (default: any configured).
    pub auth: Option<Vec<String>>,
    pub max_body: Option<Text>,
    /// A rate limit on this route (shorthand for an entry of `limits:`).
    pub limits: Option<crate::raw::RawRateLimit>,
    /// Output tokens a token limit reserves when a request sets no
    /// `max_tokens` (default 1024; 0 on embeddings routes).
    pub output_tokens_estimate: Option<u64>,
    /// Response caching for this route.
    pub cache: Option<crate::raw::RawRouteCache>,
    /// Hedging to a warm target when the chosen one is likely cold.
    pub hedge: Option<RawHedge>,
    /// A bounded queue for requests no target can take yet.
    pub hold: Option<RawHold>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    pub after: Text,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHold {
    pub timeout: Option<Text>,
    pub max_queued: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub backend: String,
    pub weight: Option<u32>,
    pub priority: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub max_attempts: Option<u64>,
    pub backoff: Option<Text>,
    pub max_backoff: Option<Text>,
    pub on: Option<Vec<Text>>,
    pub budget: Option<RawBudget>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub ratio: Option<f64>,
    pub window: Option<Text>,
    pub min_per_second: Option<u64>,
}

impl Cx<'_> {
    pub(crate) fn route(
        &mut self,
        name: &str,
        r: RawRoute,
        backends: &[Backend],
        index: &HashMap<String, usize>,
        names: &[String],
    ) -> Option<Route> {
        let p = vec![key("routes"), key(name)];
        if !self.name_ok(name, &p) {
            return None;
        }
        let mp = path_of(&p, &[key("match")]);
        let (path, operation) = match (r.matcher.path, r.matcher.path_prefix) {
            (Some(path), None) => {
                let op = Operation::of_openai_path(&path).unwrap_or(Operation::Function);
                if !path.starts_with('/') {
                    self.err(&path_of(&mp, &[key("path")]), "must start with `/`");
                }
                (PathMatch::Exact(path), op)
            }
            (None, Some(prefix)) => {
                if !prefix.starts_with('/') || prefix.len() < 2 {
                    self.err(
                        &path_of(&mp, &[key("path_prefix")]),
                        "must start with `/` and not be `/` alone",
                    );
                }
                if Operation::of_openai_path(&prefix).is_some() {
                    self.err(
                        &path_of(&mp, &[key("path_prefix")]),
                        "an OpenAI API path needs `path:`, not `path_prefix:`",
                    );
                }
                (
                    PathMatch::Prefix(prefix.trim_end_matches('/').to_string()),
                    Operation::Function,
                )
            }
            _ => {
                self.err(&mp, "give exactly one of `path` (exact) or `path_prefix`");
                return None;
            }
        };
        match operation {
            Operation::Function if !r.matcher.models.is_empty() => self.err(
                &path_of(&mp, &[key("models")]),
                "only the OpenAI API routes (/v1/chat/completions, /v1/embeddings) select by model",
            ),
            Operation::ChatCompletions | Operation::Embeddings if r.matcher.models.is_empty() => {
                self.err(
                    &path_of(&mp, &[key("models")]),
                    "missing: list the models this route serves",
                )
            }
            _ => {}
        }
        if r.targets.is_empty() {
            self.err(
                &path_of(&p, &[key("targets")]),
                "missing: at least one target is needed",
            );
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let fallback_from = r
            .targets
            .iter()
            .map(|t| t.priority.unwrap_or(0))
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let listed = r.targets.iter().enumerate().map(|(i, t)| {
            (
                path_of(&p, &[key("targets"), Seg::Index(i)]),
                t.backend.as_str(),
                t.weight,
                t.priority.unwrap_or(0),
            )
        });
        let fallbacks = r.fallback.iter().enumerate().map(|(i, b)| {
            (
                path_of(&p, &[key("fallback"), Seg::Index(i)]),
                b.as_str(),
                None,
                fallback_from.saturating_add(i as u32),
            )
        });
        for (tp, backend, weight, priority) in listed.chain(fallbacks) {
            let is_target = matches!(tp.get(2), Some(Seg::Key(k)) if k == "targets");
            let bp = if is_target {
                path_of(&tp, &[key("backend")])
            } else {
                tp.clone()
            };
            if seen.contains(&backend) {
                self.err(
                    &bp,
                    format!(
                        "backend `{backend}` is listed twice in this route: list each backend once"
                    ),
                );
                continue;
            }
            seen.push(backend);
            let Some(&bi) = index.get(backend) else {
                if names.iter().any(|n| n == backend) {
                    // Defined, but its own entry has errors (reported there).
                    continue;
                }
                let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
                known.sort_unstable();
                self.err(
                    &bp,
                    format!(
                        "unknown backend `{}`{}: defined backends are [{}]",
                        crate::clip(backend),
                        crate::load::hint(backend, &known),
                        known.join(", ")
                    ),
                );
                continue;
            };
            let kind = backends[bi].kind;
            if !kind.serves(operation) {
                self.err(
                    &bp,
                    format!(
                        "backend `{backend}` is of kind {} and cannot serve {} route",
                        kind.as_str(),
                        {
                            let op = operation.as_str();
                            let an = op.starts_with(['a', 'e', 'i', 'o', 'u']);
                            format!("{} {op}", if an { "an" } else { "a" })
                        }
                    ),
                );
                continue;
            }
            let weight = weight.unwrap_or(1);
            if weight > MAX_WEIGHT {
                self.err(
                    &path_of(&tp, &[key("weight")]),
                    format!("must be between 0 and {MAX_WEIGHT}"),
                );
                continue;
            }
            if priority > 1_000 {
                self.err(
                    &path_of(&tp, &[key("priority")]),
                    "must be between 0 (first) and 1000",
                );
                continue;
            }
            targets.push(Target {
                backend: bi,
                weight,
                priority,
            });
        }
        // Priority groups become contiguous runs (the sort is stable, so the
        // listed order holds within a group).
        targets.sort_by_key(|t| t.priority);
        if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
            self.err(
                &path_of(&p, &[key("targets")]),
                "every weight is 0: at least one must be positive",
            );
        }
        let strategy = match r.strategy.as_deref() {
            None => Strategy::Weighted,
            Some(s) => Strategy::parse(s).unwrap_or_else(|| {
                self.err(
                    &path_of(&p, &[key("strategy")]),
                    format!("`{s}` is not a strategy: use one of {}", Strategy::ALLOWED),
                );
                Strategy::Weighted
            }),
        };
        let retries = self.retries(
            r.retries.unwrap_or_default(),
            &path_of(&p, &[key("retries")]),
        );
        let max_body = match r.max_body.as_ref().map(|t| crate::parse_size(&t.0)) {
            None => DEFAULT_MAX_BODY,
            Some(Ok(n)) if n > 0 && n <= 1 << 30 => n,
            Some(Ok(_)) => {
                self.err(
                    &path_of(&p, &[key("max_body")]),
                    "must be between 1 byte and 1GiB",
                );
                DEFAULT_MAX_BODY
            }
            Some(Err(msg)) => {
                self.err(&path_of(&p, &[key("max_body")]), msg);
                DEFAULT_MAX_BODY
            }
        };
        let output_tokens_estimate = self.int_in(
            r.output_tokens_estimate,
            if operation == Operation::Embeddings {
                0
            } else {
                1024
            },
            (0, crate::section::limits::MAX_AMOUNT),
            &path_of(&p, &[key("output_tokens_estimate")]),
        );
        let auth = r.auth.map(|list| {
            let mut methods = Vec::new();
            for (i, m) in list.iter().enumerate() {
                match AuthMethod::parse(m) {
                    Some(a) => methods.push(a),
                    None => self.err(
                        &path_of(&p, &[key("auth"), Seg::Index(i)]),
                        format!(
                            "`{m}` is not an authentication method: use {}",
                            AuthMethod::ALLOWED
                        ),
                    ),
                }
            }
            if list.is_empty() {
                self.err(
                    &path_of(&p, &[key("auth")]),
                    "list at least one method (or leave `auth` out: any configured method)",
                );
            }
            methods
        });
        let identity = targets.iter().any(|t| {
            backends
                .get(t.backend)
                .is_some_and(|b| b.identity_audience.is_some())
        });
        let cache = self.route_cache(r.cache, operation, identity, &p);
        let hedge_after = r.hedge.map(|h| {
            let at = path_of(&p, &[key("hedge"), key("after")]);
            let d = self.duration(Some(&h.after), Duration::from_millis(500), &at);
            if d > Duration::from_secs(60) {
                self.err(&at, "must be at most 60s");
            }
            d
        });
        let hold = r.hold.map(|h| {
            let hp = path_of(&p, &[key("hold")]);
            let timeout = self.duration(
                h.timeout.as_ref(),
                Duration::from_secs(10),
                &path_of(&hp, &[key("timeout")]),
            );
            if timeout > Duration::from_secs(600) {
                self.err(&path_of(&hp, &[key("timeout")]), "must be at most 10m");
            }
            let max_queued = self.int_in(
                h.max_queued,
                100,
                (1, 100_000),
                &path_of(&hp, &[key("max_queued")]),
            ) as u32;
            Hold {
                timeout,
                max_queued,
            }
        });
        Some(Route {
            cache,
            name: name.to_string(),
            path,
            operation,
            models: r.matcher.models,
            targets,
            max_body,
            strategy,
            retries,
            auth,
            output_tokens_estimate,
            hedge_after,
            hold,
        })
    }

    fn retries(&mut self, r: RawRetries, p: &[Seg]) -> Retries {
        let d = Retries::default();
        let at = |k: &str| path_of(p, &[key(k)]);
        let max_attempts = self.int_in(
            r.max_attempts,
            d.max_attempts.into(),
            (1, 10),
            &at("max_attempts"),
        ) as u32;
        let backoff = self.duration_from(r.backoff.as_ref(), d.backoff, &at("backoff"), true);
        let max_backoff = self.duration_from(
            r.max_backoff.as_ref(),
            d.max_backoff,
            &at("max_backoff"),
            true,
        );
        if max_backoff < backoff {
            self.err(&at("max_backoff"), "must be at least `backoff`");
        }
        let on = match r.on {
            None => d.on,
            Some(list) => {
                let mut on = RetryOn::NONE;
                for (i, what) in list.iter().enumerate() {
                    match what.0.as_str() {
                        "connect" => on.connect = true,
                        "timeout" => on.timeout = true,
                        "5xx" => on.server_error = true,
                        "429" => on.throttled = true,
                        other => self.err(
                            &path_of(p, &[key("on"), Seg::Index(i)]),
                            format!("`{other}` is not a retry condition: use connect, timeout, 5xx, 429"),
                        ),
                    }
                }
                on
            }
        };
        let b = r.budget.unwrap_or_default();
        let bp = at("budget");
        let window = self.duration(
            b.window.as_ref(),
            d.budget.window,
            &path_of(&bp, &[key("window")]),
        );
        if window < Duration::from_secs(1) {
            self.err(&path_of(&bp, &[key("window")]), "must be at least 1s");
        }
        let budget = RetryBudget {
            ratio: self.ratio(b.ratio, d.budget.ratio, &path_of(&bp, &[key("ratio")])),
            window,
            min_per_second: self.int_in(
                b.min_per_second,
                d.budget.min_per_second.into(),
                (0, 100_000),
                &path_of(&bp, &[key("min_per_second")]),
            ) as u32,
        };
        Retries {
            max_attempts,
            backoff,
            max_backoff,
            on,
            budget,
        }
    }

    /// Two routes must never claim the same request.
    pub(crate) fn check_overlaps(&mut self, routes: &[Route]) {
        let mut seen: HashMap<(String, &str), &str> = HashMap::new();
        for r in routes {
            let path = match &r.path {
                PathMatch::Exact(p) => format!("={p}"),
                PathMatch::Prefix(p) => format!("^{p}"),
            };
            let models: Vec<&str> = if r.models.is_empty() {
                vec![""]
            } else {
                r.models.iter().map(String::as_str).collect()
            };
            for m in models {
                if let Some(other) = seen.insert((path.clone(), m), &r.name) {
                    let what = if m.is_empty() {
                        String::new()
                    } else {
                        format!(" for model `{m}`")
                    };
                    self.err(
                        &[key("routes"), key(&r.name), key("match")],
                        format!("claims the same requests as route `{other}`{what}: each request must match one route"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;
    use crate::runtime::{Strategy, Target};

    const HEAD: &str = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1 }\n  b: { kind: openai, url: http://b/v1 }\n  c: { kind: openai, url: http://c/v1 }\n";

    #[test]
    fn priorities_fallback_strategy_and_retries() {
        let y = format!("{HEAD}routes:\n  r:\n    match: {{ path: /v1/embeddings, models: [e] }}\n    strategy: latency\n    targets: [ {{ backend: a, weight: 2 }}, {{ backend: b, priority: 1 }} ]\n    fallback: [ c ]\n    retries: {{ max_attempts: 4, on: [connect, 5xx, 429], budget: {{ ratio: 0.1 }} }}\n");
        let c = load_str(&y, "r.yaml", &|_| None).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.strategy, Strategy::Latency);
        assert_eq!(
            r.targets,
            [
                Target {
                    backend: 0,
                    weight: 2,
                    priority: 0
                },
                Target {
                    backend: 1,
                    weight: 1,
                    priority: 1
                },
                Target {
                    backend: 2,
                    weight: 1,
                    priority: 2
                },
            ]
        );
        assert_eq!(r.retries.max_attempts, 4);
        assert!(r.retries.on.connect && r.retries.on.server_error && r.retries.on.throttled);
        assert!(!r.retries.on.timeout, "429 may be written as a number");
        assert_eq!(r.retries.budget.ratio, 0.1);
    }

    #[test]
    fn names_must_be_usable_in_urls_and_labels() {
        let y = "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  \"eu west/1\": { kind: openai, url: http://a/v1 }\nroutes:\n  \"chat/v2\": { match: { path: /v1/embeddings, models: [e] }, targets: [ { backend: \"eu west/1\" } ] }\n";
        let errs = load_str(y, "n.yaml", &|_| None).unwrap_err().to_string();
        assert!(
            errs.contains("backends.eu west/1: `eu west/1` is not a usable name"),
            "{errs}"
        );
        assert!(
            errs.contains("routes.chat/v2: `chat/v2` is not a usable name"),
            "{errs}"
        );
    }

    #[test]
    fn bad_routing_values_are_errors() {
        let y = format!("{HEAD}routes:\n  r:\n    match: {{ path: /v1/embeddings, models: [e] }}\n    strategy: fastest\n    targets: [ {{ backend: a }}, {{ backend: a }} ]\n    retries: {{ max_attempts: 0, on: [sometimes], backoff: 1s, max_backoff: 10ms }}\n");
        let errs = load_str(&y, "r.yaml", &|_| None).unwrap_err().to_string();
        for needle in [
            "routes.r.strategy: `fastest` is not a strategy: use one of weighted, least_inflight, latency",
            "routes.r.targets[1].backend: backend `a` is listed twice",
            "routes.r.retries.max_attempts: must be between 1 and 10",
            "routes.r.retries.on[0]: `sometimes` is not a retry condition",
            "routes.r.retries.max_backoff: must be at least `backoff`",
        ] {
            assert!(errs.contains(needle), "missing {needle}: {errs}");
        }
    }
}
