//! Policy slicing: only the policies whose scope can match a request are
//! handed to Cedar. Cedar evaluates every policy of the set it is given
//! (about a microsecond each), so a 50-policy set would cost ~50 µs per
//! decision; the scopes (`principal in Group::"eng"`, `action == ...`,
//! `resource == Model::"m"`) usually rule out all but a few.
//!
//! Exact, not a heuristic: Cedar's condition is `principal-scope && action-
//! scope && resource-scope && body`, short-circuited, so a policy whose
//! scope does not match is neither satisfied nor erroring; leaving it out
//! changes no decision, reason or error. Scope names are interned to small
//! integers at load, so matching is integer compares; the sliced sets are
//! cached by the indices they hold (bounded).

use super::engine::Action;
use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityTypeName, EntityUid, Policy, PolicySet,
    PrincipalConstraint, ResourceConstraint,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Sliced sets kept; past this, a slice is built for its request alone.
const CACHE_CAP: usize = 4096;

/// A principal or resource scope, with names interned.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Any,
    Eq(u32),
    In(u32),
    Is(u32),
    IsIn(u32, u32),
}

/// A request's principal or resource, as the interned names a scope can
/// test: its uid, its type, and its ancestors (`None`/absent: no policy
/// names it).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    uid: Option<u32>,
    ty: Option<u32>,
    ancestors: Vec<u32>,
}

impl Scope {
    fn matches(self, k: &Keys) -> bool {
        let is_in = |x: u32| k.uid == Some(x) || k.ancestors.contains(&x);
        match self {
            Scope::Any => true,
            Scope::Eq(x) => k.uid == Some(x),
            Scope::In(x) => is_in(x),
            Scope::Is(t) => k.ty == Some(t),
            Scope::IsIn(t, x) => k.ty == Some(t) && is_in(x),
        }
    }
}

struct Slot {
    index: u32,
    principal: Scope,
    resource: Scope,
    forbid: bool,
}

/// The policies by action, with interned scopes, and the cache of slices.
pub struct Index {
    policies: Vec<Policy>,
    /// By `Action::slot()`: the policies whose action scope can match.
    by_action: [Vec<Slot>; Action::COUNT],
    uids: HashMap<EntityUid, u32>,
    types: HashMap<EntityTypeName, u32>,
    cache: RwLock<HashMap<Box<[u32]>, Arc<PolicySet>>>,
    /// Tests: hand Cedar every policy, as before slicing, to compare.
    #[cfg(test)]
    pub bypass: bool,
}

/// The policies that can apply to one request.
pub enum Slice {
    /// None: Cedar would deny by default (or, for forbids only, allow).
    Empty,
    Set(Arc<PolicySet>),
}

impl Index {
    /// `scopes[a]`: the action `a` and the action groups it is in.
    pub fn new(set: &PolicySet, scopes: &[(Action, HashSet<EntityUid>)]) -> Self {
        let mut uids = HashMap::new();
        let mut types = HashMap::new();
        let mut intern_uid = |u: EntityUid| {
            let n = uids.len() as u32;
            *uids.entry(u).or_insert(n)
        };
        let mut intern_type = |t: EntityTypeName| {
            let n = types.len() as u32;
            *types.entry(t).or_insert(n)
        };
        let policies: Vec<Policy> = set.policies().cloned().collect();
        let mut by_action: [Vec<Slot>; Action::COUNT] = Default::default();
        for (i, p) in policies.iter().enumerate() {
            let principal = match p.principal_constraint() {
                PrincipalConstraint::Any => Scope::Any,
                PrincipalConstraint::Eq(u) => Scope::Eq(intern_uid(u)),
                PrincipalConstraint::In(u) => Scope::In(intern_uid(u)),
                PrincipalConstraint::Is(t) => Scope::Is(intern_type(t)),
                PrincipalConstraint::IsIn(t, u) => Scope::IsIn(intern_type(t), intern_uid(u)),
            };
            let resource = match p.resource_constraint() {
                ResourceConstraint::Any => Scope::Any,
                ResourceConstraint::Eq(u) => Scope::Eq(intern_uid(u)),
                ResourceConstraint::In(u) => Scope::In(intern_uid(u)),
                ResourceConstraint::Is(t) => Scope::Is(intern_type(t)),
                ResourceConstraint::IsIn(t, u) => Scope::IsIn(intern_type(t), intern_uid(u)),
            };
            for (a, scope) in scopes {
                let applies = match p.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(x) => scope.contains(&x),
                    ActionConstraint::In(list) => list.iter().any(|x| scope.contains(x)),
                };
                if applies {
                    by_action[a.slot()].push(Slot {
                        index: i as u32,
                        principal,
                        resource,
                        forbid: p.effect() == Effect::Forbid,
                    });
                }
            }
        }
        Self {
            policies,
            by_action,
            uids,
            types,
            cache: RwLock::new(HashMap::new()),
            #[cfg(test)]
            bypass: false,
        }
    }

    /// The keys of an entity with its ancestors.
    pub fn keys<'a>(
        &self,
        uid: &EntityUid,
        ancestors: impl Iterator<Item = &'a EntityUid>,
    ) -> Keys {
        Keys {
            uid: self.uids.get(uid).copied(),
            ty: self.types.get(uid.type_name()).copied(),
            ancestors: ancestors
                .filter_map(|a| self.uids.get(a).copied())
                .collect(),
        }
    }

    /// Whether some policy of `action` could apply (forbids only, or any).
    pub fn any(&self, action: Action, forbid_only: bool, permit_only: bool) -> bool {
        self.by_action[action.slot()]
            .iter()
            .any(|s| (!forbid_only || s.forbid) && (!permit_only || !s.forbid))
    }

    /// The policies that can apply to this principal, action and resource.
    pub fn slice(
        &self,
        action: Action,
        who: &Keys,
        what: &Keys,
        forbid_only: bool,
    ) -> Result<Slice, String> {
        let picked: Vec<u32> = self.by_action[action.slot()]
            .iter()
            .filter(|s| {
                (!forbid_only || s.forbid) && s.principal.matches(who) && s.resource.matches(what)
            })
            .map(|s| s.index)
            .collect();
        #[cfg(test)]
        if self.bypass {
            let all = self
                .policies
                .iter()
                .filter(|p| !forbid_only || p.effect() == Effect::Forbid);
            return PolicySet::from_policies(all.cloned())
                .map(|s| Slice::Set(Arc::new(s)))
                .map_err(|e| e.to_string());
        }
        if picked.is_empty() {
            return Ok(Slice::Empty);
        }
        if let Ok(cache) = self.cache.read() {
            if let Some(set) = cache.get(picked.as_slice()) {
                return Ok(Slice::Set(set.clone()));
            }
        }
        let set = PolicySet::from_policies(
            picked
                .iter()
                .filter_map(|&i| self.policies.get(i as usize).cloned()),
        );
        // Ids are unique in the full set, so a subset cannot clash; were it
        // to, the caller denies (never an empty set: that would pass a
        // forbids-only check).
        let set = Arc::new(set.map_err(|e| e.to_string())?);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() < CACHE_CAP {
                cache.insert(picked.into_boxed_slice(), set.clone());
            }
        }
        Ok(Slice::Set(set))
    }
}

/// Entity stores kept; when full, the cache starts over.
const ENTITIES_CAP: usize = 4096;

/// The entity store of a request (principal, action, resources), by what
/// it is built from. Cedar computes an entity store's transitive closure
/// when it is built, about 6 µs even for the four entities of a call, while
/// the evaluation that follows takes a microsecond or two; a caller asks the
/// same questions again and again, so stores are kept. The key is the
/// principal's full content (`Subject::key`: type, id, tenant, groups,
/// attributes), the action and the resource, so a store is reused only
/// where it would be built the same.
#[derive(Default)]
pub struct EntityCache {
    map: RwLock<HashMap<String, Arc<Entities>>>,
}

impl EntityCache {
    pub fn get(
        &self,
        subject_key: &str,
        action: Action,
        resource_key: &str,
        build: impl FnOnce() -> Result<Entities, String>,
    ) -> Result<Arc<Entities>, String> {
        let mut key = String::with_capacity(subject_key.len() + resource_key.len() + 2);
        key.push_str(subject_key);
        key.push(char::from(b'0' + action.slot() as u8));
        key.push_str(resource_key);
        if let Ok(map) = self.map.read() {
            if let Some(e) = map.get(&key) {
                return Ok(e.clone());
            }
        }
        let e = Arc::new(build()?);
        if let Ok(mut map) = self.map.write() {
            if map.len() >= ENTITIES_CAP {
                map.clear();
            }
            map.insert(key, e.clone());
        }
        Ok(e)
    }
}
