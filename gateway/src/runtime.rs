//! The runtime snapshot: everything built from one validated config (route
//! table, backends with their peers, adapters and run-time state, plugin
//! chain). Built whole, then swapped in as one `Arc`; a request keeps the
//! snapshot it started with. Run-time state (breakers, latency, in-flight,
//! health, drain, retry budgets, weight overrides) is not in the snapshot
//! but in the [`Registry`], by name, so it outlives a reload.

use bytes::Bytes;
use skygate_backends::routing::state::{Registry, RouteState};
use skygate_backends::BackendRt;
use skygate_config::{Config, Operation, PathMatch, Route};
use skygate_plugins::Chain;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What a request's path (and model) selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// An OpenAI operation served by one or more routes, chosen by model.
    Model {
        operation: Operation,
        routes: HashMap<String, usize>,
        max_body: usize,
    },
    /// A function route; `suffix_at` is where the rest of the path starts.
    Function { route: usize, suffix_at: usize },
    /// `GET /v1/models`.
    ListModels,
    /// `GET /v1/models/{model}`: the rest of the path names it.
    GetModel,
}

/// Path → route lookup.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, PathKind>,
    /// Prefixes, longest first.
    prefixes: Vec<(String, usize)>,
    /// The same in their [`loose`] forms (exact: the loose form and the
    /// path it stands for), for [`RouteTable::loose_target`].
    loose_exact: Vec<(String, String)>,
    loose_prefixes: Vec<(String, usize)>,
}

/// What a path selects, comparable between two lookups: nothing, a
/// function route, the model list, one model, or an exact path's entry.
pub type Target = (u8, usize);

/// `path` as servers may read it loosely: ASCII letters in lower case,
/// each segment's `;parameters` dropped, empty segments (`//`, a trailing
/// `/`) dropped.
pub fn loose(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&segment.to_ascii_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl RouteTable {
    pub fn new(routes: &[Route]) -> Self {
        let mut t = RouteTable::default();
        t.exact.insert("/v1/models".into(), PathKind::ListModels);
        for (i, r) in routes.iter().enumerate() {
            match &r.path {
                PathMatch::Exact(p) if r.operation == Operation::Function => {
                    t.exact.insert(
                        p.clone(),
                        PathKind::Function {
                            route: i,
                            suffix_at: p.len(),
                        },
                    );
                }
                PathMatch::Exact(p) => {
                    let entry = t.exact.entry(p.clone()).or_insert_with(|| PathKind::Model {
                        operation: r.operation,
                        routes: HashMap::new(),
                        max_body: 0,
                    });
                    if let PathKind::Model {
                        routes: by_model,
                        max_body,
                        ..
                    } = entry
                    {
                        for m in &r.models {
                            by_model.insert(m.clone(), i);
                        }
                        *max_body = (*max_body).max(r.max_body);
                    }
                }
                PathMatch::Prefix(p) => t.prefixes.push((p.clone(), i)),
            }
        }
        t.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        t.loose_exact = t.exact.keys().map(|k| (loose(k), k.clone())).collect();
        t.loose_prefixes = t.prefixes.iter().map(|(p, i)| (loose(p), *i)).collect();
        t.loose_prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        t
    }

    /// What a lookup found, as a [`Target`].
    pub fn target(&self, kind: Option<&PathKind>) -> Target {
        match kind {
            None => (0, 0),
            Some(PathKind::Function { route, .. }) => (1, *route),
            Some(PathKind::ListModels) => (2, 0),
            Some(PathKind::GetModel) => (3, 0),
            // One entry per exact path: the same entry is the same routes.
            Some(m @ PathKind::Model { .. }) => (4, std::ptr::from_ref(m) as usize),
        }
    }

    /// What `path` would select if read loosely (see [`loose`]), both it
    /// and the routes' paths: a backend that reads paths so must not be
    /// led to another route than the one the gateway chose.
    pub fn loose_target(&self, path: &str) -> Target {
        let path = loose(path);
        if let Some((_, original)) = self.loose_exact.iter().find(|(l, _)| *l == path) {
            return self.target(self.exact.get(original));
        }
        let prefix = self.loose_prefixes.iter().find(|(p, _)| {
            p == "/"
                || (path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
        });
        match prefix {
            Some((_, route)) => (1, *route),
            None if path.len() > MODELS_PREFIX.len() && path.starts_with(MODELS_PREFIX) => (3, 0),
            None => (0, 0),
        }
    }

    /// What `path` selects, if anything.
    pub fn lookup(&self, path: &str) -> Option<Cow<'_, PathKind>> {
        if let Some(k) = self.exact.get(path) {
            return Some(Cow::Borrowed(k));
        }
        self.prefixes
            .iter()
            .find(|(p, _)| {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            })
            .map(|(p, i)| {
                Cow::Owned(PathKind::Function {
                    route: *i,
                    suffix_at: p.len(),
                })
            })
            .or_else(|| {
                path.strip_prefix(MODELS_PREFIX)
                    .is_some_and(|id| !id.is_empty())
                    .then_some(Cow::Owned(PathKind::GetModel))
            })
    }
}

/// One consistent view of the config and everything built from it.
pub struct Snapshot {
    pub config: Arc<Config>,
    /// By index, as routes refer to them.
    pub backends: Vec<Arc<BackendRt>>,
    /// Each route's run-time state, by route index.
    pub route_states: Vec<Arc<RouteState>>,
    pub routes: RouteTable,
    pub chain: Chain,
    /// `GET /v1/models`, rendered once.
    pub models_body: Bytes,
    /// Every route's models, sorted (`GET /v1/models/{model}`).
    pub models: Vec<String>,
    /// Signs the caller's identity for backends that ask for it.
    pub identity: Option<crate::identity::IdentitySigner>,
    /// Each route's metric handles, by route index.
    pub route_metrics: Vec<crate::metrics::RouteMetrics>,
}

impl Snapshot {
    /// Builds everything from a validated config, taking each backend's and
    /// route's run-time state from `registry`. A backend whose address does
    /// not resolve is kept but unavailable (a health check or a reload may
    /// resolve it later), so one bad backend never stops the gateway.
    pub fn build(config: Config, registry: &Registry, shared: &skygate_plugins::Shared) -> Self {
        let now = Instant::now();
        let backends: Vec<Arc<BackendRt>> = config
            .backends
            .iter()
            .map(|b| Arc::new(BackendRt::build(b, registry, now)))
            .collect();
        let route_metrics = config
            .routes
            .iter()
            .map(|r| {
                let names: Vec<Arc<str>> = r
                    .targets
                    .iter()
                    .map(|t| backends[t.backend].name.clone())
                    .collect();
                crate::metrics::RouteMetrics::new(&r.name, &names)
            })
            .collect();
        let route_states = config
            .routes
            .iter()
            .map(|r| registry.route(r, now))
            .collect();
        let routes = RouteTable::new(&config.routes);
        let chain = Chain::from_config(&config, shared);
        let mut models: Vec<&str> = config
            .routes
            .iter()
            .flat_map(|r| r.models.iter().map(String::as_str))
            .collect();
        models.sort_unstable();
        models.dedup();
        let models_body = models_list(models.iter().copied());
        let models = models.into_iter().map(str::to_owned).collect();
        let identity = config.auth.identity_token.as_ref().and_then(|cfg| {
            crate::identity::IdentitySigner::new(cfg)
                .inspect_err(|e| log::error!("identity tokens are off: {e}"))
                .ok()
        });
        Self {
            config: Arc::new(config),
            backends,
            route_states,
            routes,
            chain,
            models_body,
            models,
            identity,
            route_metrics,
        }
    }

    /// The route named `name`, with its index.
    pub fn route(&self, name: &str) -> Option<(usize, &Route)> {
        self.config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == name)
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&Arc<BackendRt>> {
        self.backends.iter().find(|b| b.config.name == name)
    }
}

/// Where `GET /v1/models/{model}` starts.
pub const MODELS_PREFIX: &str = "/v1/models/";

/// One model as OpenAI's API describes it.
pub fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "skygate"})
}

/// The `GET /v1/models` body listing `models`.
pub fn models_list<'a>(models: impl IntoIterator<Item = &'a str>) -> Bytes {
    let data: Vec<serde_json::Value> = models.into_iter().map(model_object).collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn loose_forms() {
        use super::loose;
        assert_eq!(
            loose("/v1/Functions//svc/ADMIN;jsessionid=1/x/"),
            "/v1/functions/svc/admin/x"
        );
        assert_eq!(loose("/"), "/");
        assert_eq!(loose("//"), "/");
        assert_eq!(loose("/a;b"), "/a");
    }

    use super::*;

    fn config() -> Config {
        let y = r#"
listen: 127.0.0.1:1
admin: { listen: 127.0.0.1:2 }
backends:
  a: { kind: openai, url: http://127.0.0.1:3/v1 }
  f: { kind: http_function, url: http://127.0.0.1:4/fn }
routes:
  chat:   { match: { path: /v1/chat/completions, models: [m1] }, targets: [ { backend: a } ], max_body: 1KiB }
  chat2:  { match: { path: /v1/chat/completions, models: [m2] }, targets: [ { backend: a } ] }
  fn:     { match: { path_prefix: /fn/score }, targets: [ { backend: f } ] }
  fnlong: { match: { path_prefix: /fn/score/deep }, targets: [ { backend: f } ] }
"#;
        skygate_config::load_str(y, "t.yaml", &|_| None).unwrap()
    }

    #[test]
    fn routes_by_path_then_model() {
        let s = Snapshot::build(config(), &Registry::new(), &Default::default());
        let Some(PathKind::Model {
            routes,
            max_body,
            operation,
        }) = s.routes.lookup("/v1/chat/completions").map(Cow::into_owned)
        else {
            panic!()
        };
        assert_eq!(operation, Operation::ChatCompletions);
        assert_eq!(s.config.routes[routes["m1"]].name, "chat");
        assert_eq!(s.config.routes[routes["m2"]].name, "chat2");
        assert_eq!(max_body, skygate_config::DEFAULT_MAX_BODY);
        assert_eq!(
            s.routes.lookup("/v1/models").as_deref(),
            Some(&PathKind::ListModels)
        );
        assert_eq!(s.routes.lookup("/v1/nope"), None);
        assert_eq!(
            s.routes.lookup("/v1/models/m1").as_deref(),
            Some(&PathKind::GetModel)
        );
        assert_eq!(s.routes.lookup("/v1/models/"), None);
        assert_eq!(s.models, ["m1", "m2"]);
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        let s = Snapshot::build(config(), &Registry::new(), &Default::default());
        let name = |p: &str| match s.routes.lookup(p).map(Cow::into_owned) {
            Some(PathKind::Function { route, .. }) => Some(s.config.routes[route].name.clone()),
            _ => None,
        };
        assert_eq!(name("/fn/score").as_deref(), Some("fn"));
        assert_eq!(name("/fn/score/x").as_deref(), Some("fn"));
        assert_eq!(name("/fn/score/deep/1").as_deref(), Some("fnlong"));
        assert_eq!(name("/fn/scorecard"), None);
        assert!(String::from_utf8_lossy(&s.models_body).contains("\"m2\""));
    }
}
