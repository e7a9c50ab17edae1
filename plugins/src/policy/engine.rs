//! The Cedar side of the policy plugin: loads the schema and the policy
//! files (ids, positions, strict validation), builds the entities of the
//! config (routes, models, backends), and answers one question at a time.
//! The plugin ([`super::Authorize`]) and `skygate policy check` share it, so
//! an offline check decides exactly as the gateway would.

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity,
    EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
    Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use skygate_config::{Config, Operation, Policy, PolicyFile, Principal};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

/// The built-in schema (`policies/skygate.cedarschema`).
pub const SCHEMA: &str = include_str!("../../../policies/skygate.cedarschema");

/// The four calling actions and the backend check, as the request decides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Invoke,
    Stream,
    Embed,
    UseBackend,
    Admin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoke => "invoke",
            Self::Stream => "stream",
            Self::Embed => "embed",
            Self::UseBackend => "use_backend",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Invoke,
            Self::Stream,
            Self::Embed,
            Self::UseBackend,
            Self::Admin,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// The action of a call to a route of this operation.
    pub fn of_call(operation: Operation, stream: bool) -> Self {
        match (operation, stream) {
            (Operation::Embeddings, _) => Self::Embed,
            (Operation::ChatCompletions, true) => Self::Stream,
            _ => Self::Invoke,
        }
    }
}

/// How a caller authenticated: its entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ApiKey,
    User,
    Service,
}

impl Kind {
    pub fn of(method: skygate_config::AuthMethod) -> Self {
        match method {
            skygate_config::AuthMethod::ApiKey => Self::ApiKey,
            skygate_config::AuthMethod::Jwt => Self::User,
        }
    }
}

/// The request facts policies see as `context`.
#[derive(Debug, Clone)]
pub struct Facts {
    pub client_ip: Option<IpAddr>,
    pub mtls: bool,
    pub route: String,
    pub stream: bool,
    pub request_bytes: u64,
    pub estimated_tokens: u64,
    /// UTC hour, 0..23.
    pub hour: u8,
    /// 1 = Monday .. 7 = Sunday, UTC.
    pub weekday: u8,
}

/// UTC hour and ISO weekday of a time.
pub fn hour_and_weekday(t: std::time::SystemTime) -> (u8, u8) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let hour = (secs / 3600 % 24) as u8;
    // 1970-01-01 was a Thursday (4).
    let weekday = ((secs / 86_400 + 3) % 7 + 1) as u8;
    (hour, weekday)
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    /// The policies that decided: the permits that allowed, or the forbids
    /// that denied (empty: nothing permitted, the default deny).
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (an erroring forbid denies).
    pub errors: Vec<String>,
}

/// The caller as a Cedar entity, built once per request.
pub struct Subject {
    uid: EntityUid,
    entity: Entity,
}

impl Subject {
    pub fn uid(&self) -> &EntityUid {
        &self.uid
    }
}

struct Types {
    api_key: EntityTypeName,
    user: EntityTypeName,
    service: EntityTypeName,
    admin_token: EntityTypeName,
    tenant: EntityTypeName,
    group: EntityTypeName,
    model: EntityTypeName,
    admin_api: EntityTypeName,
}

/// A loaded, validated policy set with the entities of one config.
pub struct Engine {
    policies: PolicySet,
    /// The forbid policies that can apply to `use_backend` (None: no such
    /// policy, so no backend check is made at all).
    backend_forbids: Option<PolicySet>,
    types: Types,
    /// Action uid and its entity (with its parent `call`), by action.
    actions: HashMap<Action, (EntityUid, Entity)>,
    /// Each route's uid, entity and name, by route index.
    routes: Vec<(EntityUid, Entity, String)>,
    /// Each backend's uid, entity and name, by backend index.
    backends: Vec<(EntityUid, Entity, String)>,
    /// Operation of each route (the action of a model listing).
    operations: Vec<Operation>,
    /// `@id` or `file:line`, with `file:line`, for `policy check`.
    locations: HashMap<PolicyId, String>,
    authorizer: Authorizer,
}

fn type_name(s: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(s).map_err(|e| format!("{s}: {e}"))
}

fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

/// Line and column (from 1) of a byte offset in a text.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// `file:line:col` of a byte offset in a text.
fn position(file: &Path, text: &str, offset: usize) -> String {
    let (line, col) = line_col(text, offset);
    format!("{}:{line}:{col}", file.display())
}

/// Each policy's file (index) and `file:line:col`.
type Origins = HashMap<PolicyId, (usize, String)>;

/// One diagnostic as `file:line:col: message (help)`.
fn describe(file: &Path, text: &str, d: &dyn Diagnostic) -> String {
    let at = d.labels().and_then(|mut l| l.next()).map_or_else(
        || file.display().to_string(),
        |l| position(file, text, l.offset()),
    );
    let mut msg = format!("{at}: {d}");
    if let Some(help) = d.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    msg
}

/// The schema, built in or from `policy.schema`; a custom schema must keep
/// Skygate's entity types and actions.
fn load_schema(custom: Option<&PolicyFile>) -> Result<Schema, Vec<String>> {
    let (path, text) = match custom {
        Some(f) => (f.path.as_path(), f.text.as_str()),
        None => (Path::new("policies/skygate.cedarschema (built in)"), SCHEMA),
    };
    let schema = match Schema::from_cedarschema_str(text) {
        Ok((schema, _warnings)) => schema,
        Err(e) => return Err(vec![describe(path, text, &e)]),
    };
    let mut missing = Vec::new();
    let types: HashSet<String> = schema.entity_types().map(ToString::to_string).collect();
    for t in [
        "ApiKey",
        "User",
        "Service",
        "AdminToken",
        "Tenant",
        "Group",
        "Route",
        "Model",
        "Backend",
        "AdminApi",
    ] {
        if !types.contains(&format!("Skygate::{t}")) {
            missing.push(format!("entity type Skygate::{t}"));
        }
    }
    let actions: HashSet<String> = schema.actions().map(ToString::to_string).collect();
    for a in ["call", "invoke", "stream", "embed", "use_backend", "admin"] {
        if !actions.contains(&format!("Skygate::Action::\"{a}\"")) {
            missing.push(format!("action Skygate::Action::\"{a}\""));
        }
    }
    if !missing.is_empty() {
        return Err(vec![format!(
            "{}: the schema lacks {} (extend Skygate's built-in schema, policies/skygate.cedarschema, rather than replace it)",
            path.display(),
            missing.join(", ")
        )]);
    }
    Ok(schema)
}

/// Parses every file; each policy gets its `@id("...")` or `file:line`.
fn parse(files: &[PolicyFile]) -> Result<(PolicySet, Origins), Vec<String>> {
    let mut errors = Vec::new();
    let mut all = PolicySet::new();
    // id → (file index, position)
    let mut origin = Origins::new();
    for (fi, f) in files.iter().enumerate() {
        let set = match PolicySet::from_str(&f.text) {
            Ok(set) => set,
            Err(errs) => {
                errors.extend(errs.iter().map(|e| describe(&f.path, &f.text, e)));
                continue;
            }
        };
        if set.templates().next().is_some() {
            errors.push(format!(
                "{}: policy templates (with ?principal or ?resource) are not supported: write static policies",
                f.path.display()
            ));
            continue;
        }
        // `from_str` numbers policies policy0, policy1, ... in file order;
        // each keeps its exact source text, found in order for its line.
        let mut cursor = 0;
        let name = f.path.file_name().map_or_else(
            || f.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for i in 0.. {
            let Some(p) = set.policy(&PolicyId::new(format!("policy{i}"))) else {
                break;
            };
            let text = p.to_string();
            let offset = f
                .text
                .get(cursor..)
                .and_then(|rest| rest.find(&text))
                .map_or(cursor, |o| cursor + o);
            cursor = offset + text.len();
            let at = position(&f.path, &f.text, offset);
            let (line, _) = line_col(&f.text, offset);
            let id = match p.annotation("id") {
                Some(id) if !id.trim().is_empty() => id.to_owned(),
                _ => format!("{name}:{line}"),
            };
            let id = PolicyId::new(id);
            if let Some((_, first)) = origin.get(&id) {
                errors.push(format!("{at}: policy id `{id}` is already used at {first}"));
                continue;
            }
            if let Err(e) = all.add(p.new_id(id.clone())) {
                errors.push(format!("{at}: {e}"));
                continue;
            }
            origin.insert(id, (fi, at));
        }
    }
    if errors.is_empty() {
        Ok((all, origin))
    } else {
        Err(errors)
    }
}

/// Whether a policy's action scope can match `action` (any action, or
/// names it).
fn scope_has(p: &cedar_policy::Policy, action: &EntityUid) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(list) => list.iter().any(|a| a == action),
    }
}

impl Engine {
    /// Loads and validates `policy` against the schema, with the routes and
    /// backends of `config`. Errors name the file, line and policy id.
    pub fn new(policy: &Policy, config: &Config) -> Result<Self, Vec<String>> {
        let schema = load_schema(policy.schema.as_ref())?;
        let (policies, origin) = parse(&policy.files)?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        let errors: Vec<String> = result
            .validation_errors()
            .map(|e| {
                let id = e.policy_id();
                match origin.get(id).and_then(|(fi, _)| policy.files.get(*fi)) {
                    Some(f) => {
                        let d = describe(&f.path, &f.text, e);
                        if d.contains(&format!("`{id}`")) {
                            d
                        } else {
                            format!("{d} (policy `{id}`)")
                        }
                    }
                    None => format!("policy `{id}`: {e}"),
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        for w in result.validation_warnings() {
            log::warn!("policy `{}`: {w}", w.policy_id());
        }
        let locations = origin.into_iter().map(|(id, (_, at))| (id, at)).collect();
        Self::assemble(policies, &schema, config, locations).map_err(|e| vec![e])
    }

    fn assemble(
        policies: PolicySet,
        schema: &Schema,
        config: &Config,
        locations: HashMap<PolicyId, String>,
    ) -> Result<Self, String> {
        let t = |n: &str| type_name(&format!("Skygate::{n}"));
        let types = Types {
            api_key: t("ApiKey")?,
            user: t("User")?,
            service: t("Service")?,
            admin_token: t("AdminToken")?,
            tenant: t("Tenant")?,
            group: t("Group")?,
            model: t("Model")?,
            admin_api: t("AdminApi")?,
        };
        let action_type = t("Action")?;
        let from_schema = schema.action_entities().map_err(|e| e.to_string())?;
        let mut actions = HashMap::new();
        for a in [
            Action::Invoke,
            Action::Stream,
            Action::Embed,
            Action::UseBackend,
            Action::Admin,
        ] {
            let u = uid(&action_type, a.as_str());
            let e = from_schema
                .get(&u)
                .cloned()
                .ok_or_else(|| format!("the schema lacks action {u}"))?;
            actions.insert(a, (u, e));
        }
        let route_type = t("Route")?;
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let u = uid(&route_type, &r.name);
                let op = match r.operation {
                    Operation::ChatCompletions => "chat",
                    Operation::Embeddings => "embeddings",
                    Operation::Function => "function",
                };
                Entity::new(
                    u.clone(),
                    HashMap::from([("operation".into(), s(op))]),
                    HashSet::new(),
                )
                .map(|e| (u, e, r.name.clone()))
                .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let backend_type = t("Backend")?;
        let backends = config
            .backends
            .iter()
            .map(|b| {
                let u = uid(&backend_type, &b.name);
                let attrs = HashMap::from([
                    ("kind".into(), s(b.kind.as_str())),
                    ("cloud".into(), s(b.cloud.as_deref().unwrap_or(""))),
                    ("region".into(), s(b.region.as_deref().unwrap_or(""))),
                    (
                        "classification".into(),
                        s(b.classification.as_deref().unwrap_or("")),
                    ),
                ]);
                Entity::new(u.clone(), attrs, HashSet::new())
                    .map(|e| (u, e, b.name.clone()))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let use_backend = &actions[&Action::UseBackend].0;
        let forbids: Vec<_> = policies
            .policies()
            .filter(|p| p.effect() == Effect::Forbid && scope_has(p, use_backend))
            .cloned()
            .collect();
        let backend_forbids = if forbids.is_empty() {
            None
        } else {
            Some(PolicySet::from_policies(forbids).map_err(|e| e.to_string())?)
        };
        Ok(Self {
            policies,
            backend_forbids,
            types,
            actions,
            routes,
            backends,
            operations: config.routes.iter().map(|r| r.operation).collect(),
            locations,
            authorizer: Authorizer::new(),
        })
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where a policy id was defined (`file:line:col`).
    pub fn location(&self, id: &str) -> Option<&str> {
        self.locations.get(&PolicyId::new(id)).map(String::as_str)
    }

    /// The name of backend `backend` (an index of the config).
    pub fn backend_name(&self, backend: usize) -> &str {
        self.backends.get(backend).map_or("", |b| b.2.as_str())
    }

    /// Whether some permit policy can apply to the `admin` action.
    pub fn can_permit_admin(&self) -> bool {
        let admin = &self.actions[&Action::Admin].0;
        self.policies
            .policies()
            .any(|p| p.effect() == Effect::Permit && scope_has(p, admin))
    }

    /// Whether any forbid policy can apply to `use_backend`.
    pub fn checks_backends(&self) -> bool {
        self.backend_forbids.is_some()
    }

    /// The operation of route `route` (an index of the config).
    pub fn operation(&self, route: usize) -> Option<Operation> {
        self.operations.get(route).copied()
    }

    /// The caller as an entity: its type by how it authenticated, its
    /// groups and tenant as parents, its attributes as tags.
    pub fn subject(&self, p: &Principal, kind: Kind) -> Result<Subject, String> {
        let (t, id) = match (kind, &p.issuer) {
            (Kind::User, Some(iss)) => (&self.types.user, format!("{iss}|{}", p.id)),
            (Kind::User, None) => (&self.types.user, format!("|{}", p.id)),
            (Kind::ApiKey, _) => (&self.types.api_key, p.id.clone()),
            (Kind::Service, _) => (&self.types.service, p.id.clone()),
        };
        let u = uid(t, &id);
        let mut attrs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(3);
        if let Some(tenant) = &p.tenant {
            attrs.push(("tenant".into(), s(tenant)));
        }
        if kind == Kind::User {
            attrs.push(("issuer".into(), s(p.issuer.as_deref().unwrap_or(""))));
            attrs.push(("subject".into(), s(&p.id)));
        }
        let parents = p
            .groups
            .iter()
            .map(|g| uid(&self.types.group, g))
            .chain(p.tenant.iter().map(|t| uid(&self.types.tenant, t)));
        let tags = p.attributes.iter().map(|(k, v)| (k.clone(), s(v)));
        let entity =
            Entity::new_with_tags(u.clone(), attrs, parents, tags).map_err(|e| e.to_string())?;
        Ok(Subject { uid: u, entity })
    }

    /// The admin token holder.
    pub fn admin_subject(&self) -> Subject {
        let u = uid(&self.types.admin_token, "admin");
        Subject {
            entity: Entity::with_uid(u.clone()),
            uid: u,
        }
    }

    /// The Cedar context of a call.
    pub fn context(&self, f: &Facts) -> Result<Context, String> {
        let ip = f
            .client_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
            .to_string();
        let long = |v: u64| RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX));
        Context::from_pairs([
            ("client_ip".into(), RestrictedExpression::new_ip(ip)),
            ("mtls".into(), RestrictedExpression::new_bool(f.mtls)),
            ("route".into(), s(&f.route)),
            ("stream".into(), RestrictedExpression::new_bool(f.stream)),
            ("request_bytes".into(), long(f.request_bytes)),
            ("estimated_tokens".into(), long(f.estimated_tokens)),
            ("hour".into(), long(u64::from(f.hour))),
            ("weekday".into(), long(u64::from(f.weekday))),
        ])
        .map_err(|e| e.to_string())
    }

    /// May `who` call `action` on `model` of route `route` (or the route
    /// itself, for a function route)?
    pub fn call(
        &self,
        who: &Subject,
        action: Action,
        route: usize,
        model: Option<&str>,
        context: &Context,
    ) -> Verdict {
        let Some((route_uid, route_entity, route_name)) = self.routes.get(route) else {
            return deny_with("unknown route");
        };
        let (resource, extra) = match model {
            Some(m) => {
                let u = uid(&self.types.model, m);
                let e = Entity::new(
                    u.clone(),
                    HashMap::from([("route".into(), s(route_name))]),
                    HashSet::from([route_uid.clone()]),
                );
                match e {
                    Ok(e) => (u, Some(e)),
                    Err(e) => return deny_with(&e.to_string()),
                }
            }
            None => (route_uid.clone(), None),
        };
        let entities = [route_entity.clone()].into_iter().chain(extra);
        self.decide(
            who,
            action,
            resource,
            entities,
            context,
            &self.policies,
            false,
        )
    }

    /// Whether a forbid policy keeps `who`'s call off backend `backend`
    /// (`None`: allowed, or no policy can forbid a backend).
    pub fn backend_forbidden(
        &self,
        who: &Subject,
        backend: usize,
        context: &Context,
    ) -> Option<Verdict> {
        let set = self.backend_forbids.as_ref()?;
        let Some((u, e, _)) = self.backends.get(backend) else {
            return Some(deny_with("unknown backend"));
        };
        let v = self.decide(
            who,
            Action::UseBackend,
            u.clone(),
            [e.clone()],
            context,
            set,
            true,
        );
        (!v.allow).then_some(v)
    }

    /// May the admin token holder use this part of the admin API?
    pub fn admin(&self, part: &str, write: bool, client_ip: Option<IpAddr>) -> Verdict {
        let who = self.admin_subject();
        let u = uid(&self.types.admin_api, part);
        let e = match Entity::new(
            u.clone(),
            HashMap::from([("write".into(), RestrictedExpression::new_bool(write))]),
            HashSet::new(),
        ) {
            Ok(e) => e,
            Err(e) => return deny_with(&e.to_string()),
        };
        let (hour, weekday) = hour_and_weekday(std::time::SystemTime::now());
        let ip = client_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
            .to_string();
        let context = Context::from_pairs([
            ("client_ip".into(), RestrictedExpression::new_ip(ip)),
            (
                "hour".into(),
                RestrictedExpression::new_long(i64::from(hour)),
            ),
            (
                "weekday".into(),
                RestrictedExpression::new_long(i64::from(weekday)),
            ),
        ]);
        match context {
            Ok(c) => self.decide(&who, Action::Admin, u, [e], &c, &self.policies, false),
            Err(e) => deny_with(&e.to_string()),
        }
    }

    /// One authorization. `forbid_only`: allowed unless a forbid applies
    /// (the backend check); otherwise deny by default.
    #[allow(clippy::too_many_arguments)] // the parts of one Cedar request
    fn decide(
        &self,
        who: &Subject,
        action: Action,
        resource: EntityUid,
        resources: impl IntoIterator<Item = Entity>,
        context: &Context,
        set: &PolicySet,
        forbid_only: bool,
    ) -> Verdict {
        let Some((action_uid, action_entity)) = self.actions.get(&action) else {
            return deny_with("unknown action");
        };
        let entities = Entities::from_entities(
            [who.entity.clone(), action_entity.clone()]
                .into_iter()
                .chain(resources),
            None,
        );
        let entities = match entities {
            Ok(e) => e,
            Err(e) => return deny_with(&e.to_string()),
        };
        let request = match Request::new(
            who.uid.clone(),
            action_uid.clone(),
            resource,
            context.clone(),
            None,
        ) {
            Ok(r) => r,
            Err(e) => return deny_with(&e.to_string()),
        };
        let response = self.authorizer.is_authorized(&request, set, &entities);
        let policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        let mut failed_forbid = false;
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| {
                let AuthorizationError::PolicyEvaluationError(pe) = e;
                if set
                    .policy(pe.policy_id())
                    .is_some_and(|p| p.effect() == Effect::Forbid)
                {
                    failed_forbid = true;
                }
                e.to_string()
            })
            .collect();
        let allow = if forbid_only {
            policies.is_empty() && !failed_forbid
        } else {
            response.decision() == Decision::Allow && !failed_forbid
        };
        Verdict {
            allow,
            policies,
            errors,
        }
    }

    /// The model names of `routes` `who` may call, each with its route's
    /// action (for `GET /v1/models`).
    pub fn visible<'a>(
        &self,
        who: &Subject,
        routes: impl Iterator<Item = (usize, &'a str)>,
        context: &Context,
    ) -> Vec<&'a str> {
        routes
            .filter(|&(route, model)| {
                let action =
                    Action::of_call(self.operation(route).unwrap_or(Operation::Function), false);
                self.call(who, action, route, Some(model), context).allow
            })
            .map(|(_, m)| m)
            .collect()
    }
}

fn deny_with(error: &str) -> Verdict {
    Verdict {
        allow: false,
        policies: Vec::new(),
        errors: vec![error.to_owned()],
    }
}
