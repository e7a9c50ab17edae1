//! The Cedar side of the policy plugin: loads the schema and the policy
//! files (ids, positions, strict validation), builds the entities of the
//! config (routes, models, backends), and answers one question at a time.
//! The plugin ([`super::Authorize`]) and `skygate policy check` share it, so
//! an offline check decides exactly as the gateway would.

use super::decisions::{ContextUse, Decided, Decisions};
use super::slice::{EntityCache, Index, Keys, Slice};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use skygate_config::push_num;
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
    pub const ALL: [Action; 5] = [
        Self::Invoke,
        Self::Stream,
        Self::Embed,
        Self::UseBackend,
        Self::Admin,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// A small index for tables by action.
    pub fn slot(self) -> usize {
        self as usize
    }

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
        Self::ALL.into_iter().find(|a| a.as_str() == s)
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
            skygate_config::AuthMethod::Mtls => Self::Service,
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

/// A call's decision with its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallVerdict {
    /// The decision; denied also when every target is forbidden.
    pub verdict: Verdict,
    /// Backends (config indices) a forbid keeps this call away from.
    pub denied: Vec<(usize, Verdict)>,
    /// Permitted, but no target of the route may be used.
    pub no_backend: bool,
}

/// The caller as a Cedar entity, built once per request.
pub struct Subject {
    uid: EntityUid,
    /// What its entity is made of; the entity is built only when an
    /// entity store is (Cedar evaluates attributes as it builds one).
    attrs: Vec<(String, RestrictedExpression)>,
    parents: Vec<EntityUid>,
    tags: Vec<(String, RestrictedExpression)>,
    /// For slicing: its uid, type and parents as the policies name them.
    keys: Keys,
    /// All it is made of, unambiguously (the entity store cache's key).
    key: String,
}

impl Subject {
    pub fn uid(&self) -> &EntityUid {
        &self.uid
    }

    fn entity(&self) -> Result<Entity, String> {
        Entity::new_with_tags(
            self.uid.clone(),
            self.attrs.iter().cloned(),
            self.parents.iter().cloned(),
            self.tags.iter().cloned(),
        )
        .map_err(|e| e.to_string())
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
    /// The policies by action and scope (see `slice.rs`).
    index: Index,
    /// Entity stores by principal, action and resource (see `slice.rs`).
    entities: EntityCache,
    /// `ip("...")` expressions by address (see `ip`).
    ips: std::sync::RwLock<HashMap<IpAddr, RestrictedExpression>>,
    /// Each route's models as resources (entity under the route, keys).
    models: Vec<HashMap<String, (EntityUid, Entity, Keys)>>,
    /// Whether a forbid policy can apply to `use_backend` (if not, no
    /// backend check is made at all).
    checks_backends: bool,
    types: Types,
    /// Action uid and its entity (with its parent `call`), by action.
    actions: HashMap<Action, (EntityUid, Entity)>,
    /// Each route's uid, entity, name and slicing keys, by route index.
    routes: Vec<(EntityUid, Entity, String, Keys)>,
    /// Each backend's uid, entity, name and slicing keys, by backend index.
    backends: Vec<(EntityUid, Entity, String, Keys)>,
    /// Operation of each route (the action of a model listing).
    operations: Vec<Operation>,
    /// Each route's target backends, by route index.
    targets: Vec<Vec<usize>>,
    /// `@id` or `file:line`, with `file:line`, for `policy check`.
    locations: HashMap<PolicyId, String>,
    authorizer: Authorizer,
    /// What the policies read of the context (the decision cache's key).
    context_use: ContextUse,
    /// Whole call decisions by what they depend on (see `decisions.rs`).
    decisions: Decisions,
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
            let (line, col) = line_col(&f.text, offset);
            let id = match p.annotation("id") {
                Some(id) if !id.trim().is_empty() => PolicyId::new(id),
                // Unnamed: `file:line`, or with the column (two on a line),
                // or the whole path (two files of one name), whichever is free.
                _ => [
                    format!("{name}:{line}"),
                    format!("{name}:{line}:{col}"),
                    at.clone(),
                ]
                .into_iter()
                .map(PolicyId::new)
                .find(|id| !origin.contains_key(id))
                .unwrap_or_else(|| PolicyId::new(at.clone())),
            };
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
        // An action and the groups it is in (a custom schema may group
        // `use_backend` or `admin`).
        let scopes: Vec<(Action, HashSet<EntityUid>)> = Action::ALL
            .iter()
            .map(|&a| {
                let u = &actions[&a].0;
                let mut set: HashSet<EntityUid> = from_schema
                    .ancestors(u)
                    .map(|it| it.cloned().collect())
                    .unwrap_or_default();
                set.insert(u.clone());
                (a, set)
            })
            .collect();
        let index = Index::new(&policies, &scopes);
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
                .map(|e| {
                    let k = index.keys(&u, std::iter::empty());
                    (u, e, r.name.clone(), k)
                })
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
                    .map(|e| {
                        let k = index.keys(&u, std::iter::empty());
                        (u, e, b.name.clone(), k)
                    })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checks_backends = index.any(Action::UseBackend, true, false);
        let mut engine = Self {
            policies,
            index,
            entities: EntityCache::default(),
            ips: Default::default(),
            models: Vec::new(),
            checks_backends,
            types,
            actions,
            routes,
            backends,
            operations: config.routes.iter().map(|r| r.operation).collect(),
            targets: config
                .routes
                .iter()
                .map(|r| r.targets.iter().map(|t| t.backend).collect())
                .collect(),
            locations,
            authorizer: Authorizer::new(),
            context_use: ContextUse::default(),
            decisions: Decisions::default(),
        };
        engine.context_use = ContextUse::of(&engine.policies);
        engine.models = config
            .routes
            .iter()
            .zip(&engine.routes)
            .map(|(r, (u, _, name, _))| {
                r.models
                    .iter()
                    .map(|m| Ok((m.clone(), engine.model_entity(u, name, m)?)))
                    .collect::<Result<HashMap<_, _>, String>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(engine)
    }

    /// Tests: decide without slicing, as Cedar would with the whole set.
    #[cfg(test)]
    pub fn unsliced(mut self) -> Self {
        self.index.bypass = true;
        self
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
        self.index.any(Action::Admin, false, true)
    }

    /// Whether any forbid policy can apply to `use_backend`.
    pub fn checks_backends(&self) -> bool {
        self.checks_backends
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
        let parents: Vec<EntityUid> = p
            .groups
            .iter()
            .map(|g| uid(&self.types.group, g))
            .chain(p.tenant.iter().map(|t| uid(&self.types.tenant, t)))
            .collect();
        let tags = p.attributes.iter().map(|(k, v)| (k.clone(), s(v)));
        let keys = self.index.keys(&u, parents.iter());
        let mut key = String::with_capacity(64);
        self.subject_key(p, kind, &mut key);

        Ok(Subject {
            uid: u,
            attrs,
            parents,
            tags: tags.collect(),
            keys,
            key,
        })
    }

    /// All a principal's entity is made of, unambiguously (length-prefixed
    /// fields and counts: no two principals share a key), appended to
    /// `key`: the entity store's and the decision cache's key.
    fn subject_key(&self, p: &Principal, kind: Kind, key: &mut String) {
        // Pushed piece by piece: `write!` cost 2 k instructions a request.
        fn num(key: &mut String, n: usize) {
            push_num(key, n as u64);
        }
        fn field(key: &mut String, s: &str) {
            num(key, s.len());
            key.push(':');
            key.push_str(s);
        }
        let t = match kind {
            Kind::User => &self.types.user,
            Kind::ApiKey => &self.types.api_key,
            Kind::Service => &self.types.service,
        };
        field(key, t.basename());
        match (kind, &p.issuer) {
            (Kind::User, iss) => {
                let iss = iss.as_deref().unwrap_or("");
                num(key, iss.len() + 1 + p.id.len());
                key.push(':');
                key.push_str(iss);
                key.push('|');
                key.push_str(&p.id);
            }
            _ => field(key, &p.id),
        }
        let tenant = p.tenant.as_deref();
        key.push(if tenant.is_some() { '1' } else { '0' });
        field(key, tenant.unwrap_or(""));
        num(key, p.groups.len());
        key.push(';');
        for g in &p.groups {
            field(key, g);
        }
        num(key, p.attributes.len());
        key.push(';');
        for (k, v) in &p.attributes {
            field(key, k);
            field(key, v);
        }
    }

    /// The admin token holder.
    pub fn admin_subject(&self) -> Subject {
        let u = uid(&self.types.admin_token, "admin");
        Subject {
            attrs: Vec::new(),
            parents: Vec::new(),
            tags: Vec::new(),
            keys: self.index.keys(&u, std::iter::empty()),
            key: "admin".into(),
            uid: u,
        }
    }

    /// The Cedar context of a call.
    pub fn context(&self, f: &Facts) -> Result<Context, String> {
        let ip = self.ip(f
            .client_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)));
        let long = |v: u64| RestrictedExpression::new_long(i64::try_from(v).unwrap_or(i64::MAX));
        Context::from_pairs([
            ("client_ip".into(), ip),
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

    /// `ip("...")` for an address. Cedar parses the function's name each
    /// time it builds one (a third of a decision's cost), so they are kept.
    fn ip(&self, addr: IpAddr) -> RestrictedExpression {
        if let Ok(m) = self.ips.read() {
            if let Some(e) = m.get(&addr) {
                return e.clone();
            }
        }
        let e = RestrictedExpression::new_ip(addr.to_string());
        if let Ok(mut m) = self.ips.write() {
            if m.len() >= 4096 {
                m.clear();
            }
            m.insert(addr, e.clone());
        }
        e
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
        let Some((route_uid, route_entity, route_name, route_keys)) = self.routes.get(route) else {
            return deny_with("unknown route");
        };
        let Some(m) = model else {
            // A function route: the route is the resource.
            let set = match self.index.slice(action, &who.keys, route_keys, false) {
                Ok(Slice::Empty) => return default_deny(),
                Ok(Slice::Set(set)) => set,
                Err(e) => return deny_with(&e),
            };
            let key = format!("r{route}");
            let entities = || Ok(vec![route_entity.clone()]);
            return self.decide(who, action, route_uid, &key, entities, context, &set, false);
        };
        // The route's models are built at load; another (a route that
        // takes any model) is built here.
        let built;
        let (u, e, keys) = match self.models.get(route).and_then(|m2| m2.get(m)) {
            Some((u, e, k)) => (u, e, k),
            None => match self.model_entity(route_uid, route_name, m) {
                Ok(b) => {
                    built = b;
                    (&built.0, &built.1, &built.2)
                }
                Err(e) => return deny_with(&e),
            },
        };
        let set = match self.index.slice(action, &who.keys, keys, false) {
            Ok(Slice::Empty) => return default_deny(),
            Ok(Slice::Set(set)) => set,
            Err(e) => return deny_with(&e),
        };
        let key = format!("m{route}:{m}");
        let entities = || Ok(vec![route_entity.clone(), e.clone()]);
        self.decide(who, action, u, &key, entities, context, &set, false)
    }

    /// A model as a resource: its entity (under its route) and keys.
    fn model_entity(
        &self,
        route_uid: &EntityUid,
        route_name: &str,
        model: &str,
    ) -> Result<(EntityUid, Entity, Keys), String> {
        let u = uid(&self.types.model, model);
        let keys = self.index.keys(&u, std::iter::once(route_uid));
        let e = Entity::new(
            u.clone(),
            HashMap::from([("route".into(), s(route_name))]),
            HashSet::from([route_uid.clone()]),
        )
        .map_err(|e| e.to_string())?;
        Ok((u, e, keys))
    }

    /// Whether a forbid policy keeps `who`'s call off backend `backend`
    /// (`None`: allowed, or no policy can forbid a backend).
    pub fn backend_forbidden(
        &self,
        who: &Subject,
        backend: usize,
        context: &Context,
    ) -> Option<Verdict> {
        if !self.checks_backends {
            return None;
        }
        let Some((u, e, _, keys)) = self.backends.get(backend) else {
            return Some(deny_with("unknown backend"));
        };
        let set = match self.index.slice(Action::UseBackend, &who.keys, keys, true) {
            Ok(Slice::Empty) => return None,
            Ok(Slice::Set(set)) => set,
            Err(e) => return Some(deny_with(&e)),
        };
        let key = format!("b{backend}");
        let v = self.decide(
            who,
            Action::UseBackend,
            u,
            &key,
            || Ok(vec![e.clone()]),
            context,
            &set,
            true,
        );
        (!v.allow).then_some(v)
    }

    /// May the admin token holder use this part of the admin API?
    pub fn admin(
        &self,
        part: &str,
        write: bool,
        client_ip: Option<IpAddr>,
        (hour, weekday): (u8, u8),
    ) -> Verdict {
        let who = self.admin_subject();
        let u = uid(&self.types.admin_api, part);
        let keys = self.index.keys(&u, std::iter::empty());
        let set = match self.index.slice(Action::Admin, &who.keys, &keys, false) {
            Ok(Slice::Empty) => return default_deny(),
            Ok(Slice::Set(set)) => set,
            Err(e) => return deny_with(&e),
        };
        let entities = || {
            Entity::new(
                u.clone(),
                HashMap::from([("write".into(), RestrictedExpression::new_bool(write))]),
                HashSet::new(),
            )
            .map(|e| vec![e])
            .map_err(|e| e.to_string())
        };
        let key = format!("a{}{part}", u8::from(write));
        let ip = self.ip(client_ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)));
        let context = Context::from_pairs([
            ("client_ip".into(), ip),
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
            Ok(c) => self.decide(&who, Action::Admin, &u, &key, entities, &c, &set, false),
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
        resource: &EntityUid,
        resource_key: &str,
        resources: impl FnOnce() -> Result<Vec<Entity>, String>,
        context: &Context,
        set: &PolicySet,
        forbid_only: bool,
    ) -> Verdict {
        let Some((action_uid, action_entity)) = self.actions.get(&action) else {
            return deny_with("unknown action");
        };
        let entities = match self.entities.get(&who.key, action, resource_key, || {
            let mut all = resources()?;
            all.push(who.entity()?);
            all.push(action_entity.clone());
            Entities::from_entities(all, None).map_err(|e| e.to_string())
        }) {
            Ok(e) => e,
            Err(e) => return deny_with(&e),
        };
        let request = match Request::new(
            who.uid.clone(),
            action_uid.clone(),
            resource.clone(),
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

    /// A call as the gateway decides it: the action on the model (or
    /// route), then, when permitted, `use_backend` on each target of the
    /// route; with every target forbidden, the call is denied.
    pub fn decide_call(
        &self,
        who: &Subject,
        action: Action,
        route: usize,
        model: Option<&str>,
        context: &Context,
    ) -> CallVerdict {
        let mut verdict = self.call(who, action, route, model, context);
        let mut denied = Vec::new();
        let mut no_backend = false;
        if verdict.allow && self.checks_backends() {
            let targets = self.targets.get(route).map_or(&[][..], Vec::as_slice);
            for &b in targets {
                if let Some(v) = self.backend_forbidden(who, b, context) {
                    denied.push((b, v));
                }
            }
            if !targets.is_empty() && denied.len() == targets.len() {
                verdict.allow = false;
                no_backend = true;
            }
        }
        CallVerdict {
            verdict,
            denied,
            no_backend,
        }
    }

    /// [`Self::decide_call`] for a principal and the request's facts,
    /// answered from the decision cache when the same question (as far as
    /// the policies can tell) was decided before. `Err`: the principal or
    /// context does not build (not cached).
    pub fn authorize(
        &self,
        p: &Principal,
        kind: Kind,
        action: Action,
        route: usize,
        model: Option<&str>,
        facts: &Facts,
    ) -> Result<std::sync::Arc<Decided>, String> {
        let mut key = String::with_capacity(128);
        self.subject_key(p, kind, &mut key);
        key.push('|');
        push_num(&mut key, action.slot() as u64);
        key.push('|');
        push_num(&mut key, route as u64);
        key.push('|');
        match model {
            Some(m) => {
                push_num(&mut key, m.len() as u64);
                key.push(':');
                key.push_str(m);
                key.push('|');
            }
            None => key.push_str("-|"),
        }
        self.context_use.key(facts, &mut key);
        if let Some(d) = self.decisions.get(&key) {
            return Ok(d);
        }
        let who = self.subject(p, kind)?;
        let context = self.context(facts)?;
        let d = std::sync::Arc::new(Decided {
            call: self.decide_call(&who, action, route, model, &context),
            principal: who.uid().to_string(),
        });
        self.decisions.insert(key, d.clone());
        Ok(d)
    }

    /// Decision cache hits and misses since load.
    pub fn decision_cache(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.decisions.hits.load(Relaxed),
            self.decisions.misses.load(Relaxed),
        )
    }

    /// The models `who` may call (for `GET /v1/models`): a model is listed
    /// when some way to call it on its route (`invoke` or `stream` for chat,
    /// `embed` for embeddings) is permitted with a backend left, in the
    /// context of that route.
    pub fn visible<'a>(
        &self,
        who: &Subject,
        models: impl Iterator<Item = (usize, &'a str)>,
        facts: &Facts,
    ) -> Vec<&'a str> {
        let mut facts = facts.clone();
        models
            .filter(|&(route, model)| {
                let actions: &[Action] = match self.operation(route) {
                    Some(Operation::Embeddings) => &[Action::Embed],
                    Some(Operation::ChatCompletions) => &[Action::Invoke, Action::Stream],
                    _ => &[Action::Invoke],
                };
                facts.route.clone_from(
                    &self
                        .routes
                        .get(route)
                        .map_or(String::new(), |r| r.2.clone()),
                );
                let Ok(context) = self.context(&facts) else {
                    return false;
                };
                actions.iter().any(|&a| {
                    self.decide_call(who, a, route, Some(model), &context)
                        .verdict
                        .allow
                })
            })
            .map(|(_, m)| m)
            .collect()
    }
}

/// No policy can apply: Cedar's default deny, without asking it.
fn default_deny() -> Verdict {
    Verdict {
        allow: false,
        policies: Vec::new(),
        errors: Vec::new(),
    }
}

fn deny_with(error: &str) -> Verdict {
    Verdict {
        allow: false,
        policies: Vec::new(),
        errors: vec![error.to_owned()],
    }
}
