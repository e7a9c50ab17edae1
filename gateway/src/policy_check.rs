//! `skygate policy check`: evaluates policies offline, with the same engine
//! and entities as the running gateway, so security teams can test their
//! policies in CI. One case from flags, or many from a JSON file; with an
//! expectation per case, the exit status says whether all were met.

use serde::Deserialize;
use skygate_config::{Config, Operation, Principal};
use skygate_plugins::policy::engine::{hour_and_weekday, Action, Engine, Facts, Kind, Verdict};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Who calls, in a case.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Who {
    /// `api_key` (default), `user` (a JWT) or `service` (mTLS).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    /// A client API key of the config: its principal.
    pub api_key: Option<String>,
    pub issuer: Option<String>,
    pub tenant: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The request's context; unset fields take neutral values (now, 0, false).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    pub client_ip: Option<IpAddr>,
    /// Default: true for a service (mTLS) caller, else false.
    pub mtls: Option<bool>,
    pub hour: Option<u8>,
    pub weekday: Option<u8>,
    #[serde(default)]
    pub request_bytes: u64,
    #[serde(default)]
    pub estimated_tokens: u64,
}

/// One question and, optionally, the answer it must get.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: Option<String>,
    pub principal: Who,
    pub action: String,
    /// The resource in one field: `Skygate::Model::"gpt-4o"` (or `Route`,
    /// `Backend`, `AdminApi`), or `model:gpt-4o`, `route:chat`,
    /// `backend:aws`, `admin:reload`; instead of the fields below.
    pub resource: Option<String>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub backend: Option<String>,
    /// For `admin`: the part of the admin API (`routes`, `reload`, ...).
    pub admin_api: Option<String>,
    #[serde(default)]
    pub write: bool,
    #[serde(default)]
    pub context: When,
    /// `allow` or `deny`.
    pub expect: Option<String>,
}

/// The principal a case names, filled from the config's API keys when it
/// names one; with a note when an API-key or certificate principal is not
/// in the config (a typo would otherwise be judged silently, as a stranger).
fn principal(c: &Config, w: &Who) -> Result<(Principal, Kind, Option<String>), String> {
    let kind = match w.kind.as_deref() {
        None | Some("api_key") => Kind::ApiKey,
        Some("user" | "jwt") => Kind::User,
        Some("service" | "mtls") => Kind::Service,
        Some(o) => {
            return Err(format!(
                "principal type `{o}`: use api_key, user or service"
            ))
        }
    };
    if let Some(key) = &w.api_key {
        let h = skygate_config::sha256(key.as_bytes());
        let k = c
            .auth
            .api_keys
            .iter()
            .find(|k| k.sha256 == h)
            .ok_or("that API key is not in the config's auth.api_keys")?;
        return Ok(((*k.principal).clone(), Kind::ApiKey, None));
    }
    let id =
        w.id.clone()
            .ok_or("name the principal: its id, or an api_key of the config")?;
    // An API-key principal of the config: its tenant, groups and attributes,
    // unless the case gives its own.
    // A principal of the config: an API key's, or a certificate identity
    // of `auth.mtls.principals`, with its tenant, groups and attributes.
    let known = match kind {
        Kind::ApiKey => c
            .auth
            .api_keys
            .iter()
            .find(|k| k.principal.id == id)
            .map(|k| (*k.principal).clone()),
        Kind::Service => c
            .auth
            .mtls
            .as_ref()
            .and_then(|m| m.principals.get(&id))
            .map(|p| (**p).clone()),
        Kind::User => None,
    };
    let note = match (kind, &known) {
        (Kind::ApiKey, None) => Some(format!(
            "principal `{id}` has no key in the config's auth.api_keys: judged with only what the case gives"
        )),
        _ => None,
    };
    let mut p = known.unwrap_or_default();
    p.id = id;
    if kind == Kind::User {
        p.issuer = Some(
            w.issuer
                .clone()
                .or_else(|| (c.auth.jwt.len() == 1).then(|| c.auth.jwt[0].issuer.clone()))
                .ok_or("a user needs its issuer (--issuer)")?,
        );
    }
    if w.tenant.is_some() {
        p.tenant = w.tenant.clone();
    }
    if !w.groups.is_empty() {
        p.groups = w.groups.clone();
    }
    p.attributes.extend(w.attributes.clone());
    Ok((p, kind, note))
}

/// A case's answer, a note on how it came about when the policies' own
/// ids do not tell it all, and a warning when the case's principal is not
/// one of the config's.
pub struct Answer {
    pub verdict: Verdict,
    pub note: Option<String>,
    pub stranger: Option<String>,
}

impl From<Verdict> for Answer {
    fn from(verdict: Verdict) -> Self {
        Answer {
            verdict,
            note: None,
            stranger: None,
        }
    }
}

/// `case` with its `resource` spelled out into `model`, `route`,
/// `backend` or `admin_api`.
fn with_resource(case: &Case) -> Result<Case, String> {
    let mut out = case.clone();
    let Some(r) = &case.resource else {
        return Ok(out);
    };
    let (kind, name) = if let Some(rest) = r.strip_prefix("Skygate::") {
        let (t, id) = rest
            .split_once("::")
            .ok_or_else(|| format!("resource `{r}`: write Skygate::Model::\"name\""))?;
        let id = id
            .strip_prefix('"')
            .and_then(|i| i.strip_suffix('"'))
            .ok_or_else(|| format!("resource `{r}`: the id goes in double quotes"))?;
        (t.to_ascii_lowercase(), id.to_string())
    } else {
        let (t, id) = r.split_once(':').ok_or_else(|| {
            format!("resource `{r}`: use model:NAME, route:NAME, backend:NAME or admin:PART")
        })?;
        (t.to_ascii_lowercase(), id.to_string())
    };
    let slot = match kind.as_str() {
        "model" => &mut out.model,
        "route" => &mut out.route,
        "backend" => &mut out.backend,
        "admin" | "adminapi" => &mut out.admin_api,
        other => {
            return Err(format!(
                "resource `{r}`: `{other}` is not a resource type (Model, Route, Backend, AdminApi)"
            ))
        }
    };
    if slot.is_some() {
        return Err(format!(
            "resource `{r}` and the {kind} field both name it: give one"
        ));
    }
    *slot = Some(name);
    Ok(out)
}

/// Decides one case, as the gateway would: a call is also denied when a
/// forbid keeps it off every backend of its route.
/// What `Skygate::AdminApi` ids the admin API decides on (the path's part
/// after `/admin/`, or `metrics`).
pub const ADMIN_PARTS: &[&str] = &["routes", "backends", "reload", "metrics", "cache"];

pub fn decide(c: &Config, engine: &Engine, case: &Case) -> Result<Answer, String> {
    let case = &with_resource(case)?;
    let action = Action::parse(&case.action).ok_or_else(|| {
        format!(
            "action `{}`: use invoke, stream, embed, use_backend or admin",
            case.action
        )
    })?;
    if action == Action::Admin {
        let part = case
            .admin_api
            .as_deref()
            .ok_or("admin needs --admin-api (routes, backends, reload, metrics or cache)")?;
        // The parts the admin API asks about: a typo must not pass for
        // a decision.
        if !ADMIN_PARTS.contains(&part) {
            return Err(format!(
                "admin API part `{}`: use one of {}",
                skygate_config::clip(part),
                ADMIN_PARTS.join(", ")
            ));
        }
        let (now_hour, now_weekday) = hour_and_weekday(std::time::SystemTime::now());
        let when = (
            case.context.hour.unwrap_or(now_hour),
            case.context.weekday.unwrap_or(now_weekday),
        );
        return Ok(engine
            .admin(part, case.write, case.context.client_ip, when)
            .into());
    }
    let (p, kind, stranger) = principal(c, &case.principal)?;
    // A certificate caller always comes with a verified certificate.
    if kind == Kind::Service && case.context.mtls == Some(false) {
        return Err("a service (mTLS) caller has `mtls: true`: drop `mtls: false`".into());
    }
    let who = engine.subject(&p, kind)?;
    let (now_hour, now_weekday) = hour_and_weekday(std::time::SystemTime::now());
    let route_of = |name: &str| {
        c.routes
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| format!("no route `{name}` in the config"))
    };
    let route = match (&case.route, &case.model) {
        (Some(r), _) => Some(route_of(r)?),
        (None, Some(m)) => {
            let serving: Vec<usize> = (0..c.routes.len())
                .filter(|&i| c.routes[i].models.contains(m))
                .collect();
            match serving.as_slice() {
                [one] => Some(*one),
                [] => return Err(format!("no route serves model `{m}`")),
                _ => {
                    return Err(format!(
                        "several routes serve model `{m}`: say which with --route"
                    ))
                }
            }
        }
        (None, None) => None,
    };
    let facts = Facts {
        client_ip: case.context.client_ip,
        mtls: case.context.mtls.unwrap_or(kind == Kind::Service),
        route: route.map(|r| c.routes[r].name.clone()).unwrap_or_default(),
        stream: action == Action::Stream,
        request_bytes: case.context.request_bytes,
        estimated_tokens: case.context.estimated_tokens,
        hour: case.context.hour.unwrap_or(now_hour),
        weekday: case.context.weekday.unwrap_or(now_weekday),
    };
    let context = engine.context(&facts)?;
    if action == Action::UseBackend {
        let name = case
            .backend
            .as_deref()
            .ok_or("use_backend needs --backend")?;
        let b = c
            .backends
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| format!("no backend `{name}` in the config"))?;
        let verdict = engine
            .backend_forbidden(&who, b, &context)
            .unwrap_or(Verdict {
                allow: true,
                policies: Vec::new(),
                errors: Vec::new(),
            });
        return Ok(Answer {
            verdict,
            note: None,
            stranger,
        });
    }
    let route =
        route.ok_or("name the resource: --model (and --route when several serve it) or --route")?;
    let r = &c.routes[route];
    if let Some(m) = &case.model {
        if !r.models.contains(m) {
            return Err(format!("route `{}` does not serve model `{m}`", r.name));
        }
    } else if r.operation != Operation::Function {
        // The gateway always decides on the model of such a route.
        return Err(format!(
            "route `{}` is asked about a model: add --model (or resource model:NAME)",
            r.name
        ));
    }
    let fits = match r.operation {
        Operation::Embeddings => action == Action::Embed,
        Operation::ChatCompletions => matches!(action, Action::Invoke | Action::Stream),
        Operation::Function => action == Action::Invoke,
    };
    if !fits {
        return Err(format!(
            "a call to route `{}` is never `{}`: the gateway asks {}",
            r.name,
            action.as_str(),
            match r.operation {
                Operation::Embeddings => "embed",
                Operation::ChatCompletions => "invoke, or stream for \"stream\": true",
                Operation::Function => "invoke",
            }
        ));
    }
    let call = engine.decide_call(&who, action, route, case.model.as_deref(), &context);
    let note = call.no_backend.then(|| {
        let by: Vec<String> = call
            .denied
            .iter()
            .map(|(b, v)| format!("{} ({})", engine.backend_name(*b), v.policies.join(", ")))
            .collect();
        format!(
            "permitted, but forbidden on every backend of route `{}`: {}",
            r.name,
            by.join("; ")
        )
    });
    Ok(Answer {
        verdict: call.verdict,
        note,
        stranger,
    })
}

/// Runs `cases` and prints one line each (and why); `Ok(true)` when every
/// expectation was met.
pub fn run(c: &Config, cases: &[Case]) -> Result<bool, String> {
    let policy = c
        .policy
        .as_ref()
        .ok_or("the config has no `policy:` section")?;
    let engine = Engine::new(policy, c).map_err(|e| e.join("\n"))?;
    let mut all_met = true;
    for (i, case) in cases.iter().enumerate() {
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let Answer {
            verdict: v,
            note,
            stranger,
        } = decide(c, &engine, case).map_err(|e| format!("{name}: {e}"))?;
        let got = if v.allow { "allow" } else { "deny" };
        let verdict = match case.expect.as_deref() {
            None => String::new(),
            Some(e) if e == got => " (as expected)".to_string(),
            Some(e @ ("allow" | "deny")) => {
                all_met = false;
                format!(" (EXPECTED {e})")
            }
            Some(e) => return Err(format!("{name}: expect `{e}`: use allow or deny")),
        };
        println!("{name}: {got}{verdict}");
        for id in &v.policies {
            println!("  by {id} ({})", engine.location(id).unwrap_or("?"));
        }
        if let Some(n) = &note {
            println!("  {n}");
        } else if v.policies.is_empty() && !v.allow {
            println!("  no policy permits it (deny by default)");
        }
        if let Some(w) = &stranger {
            println!("  warning: {w}");
        }
        for e in &v.errors {
            println!("  error: {e}");
        }
    }
    Ok(all_met)
}

/// Reads a JSON array of cases.
pub fn read_cases(path: &std::path::Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}
