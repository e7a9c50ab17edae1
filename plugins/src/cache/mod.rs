//! Response caching: exact-match on the canonical request, scoped per
//! tenant by default, in memory (moka) and optionally in Redis shared by
//! every replica. It runs after authentication and policy, so a cached
//! answer only reaches callers allowed to call the route, in two steps
//! around the rate limits: [`Cache`] before them (the key and the
//! in-memory tier: a hit counts against request limits, not token
//! limits), [`CacheFill`] after them (the misses they let through).
//!
//! - A hit answers locally: the JSON as stored, or for a stream request
//!   the same content as SSE ([`entry::Entry::sse`]).
//! - A miss leads (one backend call per key) or waits, bounded, for the
//!   identical miss in flight and is answered from its result; with the
//!   Redis tier, across replicas too ([`RemoteLead`]). A full in-memory
//!   tier's refused miss (a key new to it, [`store::Store::admits`]) with
//!   none in flight does neither: it asks a backend and stores nothing.
//! - A leader's answer is captured as it streams to its client
//!   ([`Fill`]); stored only when it is a 200 that came whole (a stream:
//!   through `data: [DONE]`, assembled into its completion), and served
//!   only when it is a whole answer: checked before it is stored with the
//!   Redis tier or for a stream, else at its first use
//!   ([`entry::Entry::unchecked`]).
//! - `Cache-Control: no-cache` skips the lookup but stores the answer;
//!   `no-store` skips both.

mod doorkeeper;
pub mod entry;
pub mod key;
pub mod store;

use crate::{CacheStatus, Decision, Incoming, LocalResponse, Plugin, RequestCtx, Shared};
use async_trait::async_trait;
use bytes::Bytes;
use entry::{now_ms, Entry};
use key::{Key, Parts};
use pingora_http::ResponseHeader;
use skygate_config::{ApiError, CacheScope, Config, ErrorKind, Operation, RouteCache};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use store::{Flight, Joined};
pub use store::{RouteCounters, Store};

/// The cache plugin of one config.
pub struct Cache {
    /// By route index: the route's settings when it caches.
    routes: Vec<Option<RouteRt>>,
    store: Arc<Store>,
    redis: Arc<skygate_state::Redis>,
    /// The Redis tier is on (and `state` has a Redis).
    l2: bool,
    prefix: String,
    /// Backend names by config index (a policy's forbidden backends go
    /// into the key by name: indices change with the config).
    backends: Vec<Arc<str>>,
}

struct RouteRt {
    conf: RouteCache,
    name: Arc<str>,
    chat: bool,
    counters: Arc<RouteCounters>,
}

/// A miss's answer on its way to the client, captured to be stored.
#[derive(Debug)]
pub struct Fill {
    key: Key,
    tenant: Option<Arc<str>>,
    /// Leads the identical misses (they wake when this is dropped).
    flight: Option<Flight>,
    /// Leads them on every replica, through Redis.
    remote: Option<RemoteLead>,
    buf: Vec<u8>,
    /// Bound on the answer stored (`max_entry_bytes`).
    limit: usize,
    sse: bool,
    state: FillState,
    /// The backend's `s-maxage` (else `max-age`): the entry lives no longer
    /// than that, nor than the route's `ttl`.
    fresh_for: Option<std::time::Duration>,
}

/// How a Redis value that is not an answer begins: a replica leads that
/// key's miss for every replica (then 16 hex digits, its own). An answer
/// begins `SGC1` ([`Entry::encode`]).
const MARKER: &[u8] = b"SGL1";

/// Put in a marker's place by a leader whose answer will not be stored:
/// an identical miss that finds it asks a backend itself, for
/// [`GO_AHEAD_LIFE`].
const GO_AHEAD: &[u8] = b"SGG1";
const GO_AHEAD_LIFE: std::time::Duration = std::time::Duration::from_secs(1);

/// A marker lives this long unless its leader renews it, every third of
/// it, for as long as it leads: a leader that dies or loses its answer's
/// write holds the others up this long at most (and no longer than their
/// own `cache.wait`).
const MARKER_LIFE: std::time::Duration = std::time::Duration::from_secs(3);

/// The longest pause between two looks in Redis while another replica
/// leads (the first is 10 ms, then twice the last).
const MAX_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// This replica leads a miss for every replica: its marker is in Redis in
/// the answer's place (renewed while this lives), and other replicas'
/// identical misses wait for the answer to replace it. Dropped once the
/// answer's write is queued, it only stops renewing (should the write be
/// lost, the marker expires); dropped before, it deletes the marker (if
/// still there), and one of those misses may lead; [`RemoteLead::go_ahead`]
/// instead tells them to ask a backend at once.
struct RemoteLead {
    redis: Arc<skygate_state::Redis>,
    key: String,
    marker: Vec<u8>,
    /// Nothing left to do with the marker: the answer's write is queued to
    /// replace it, it was never set, or its end is under way.
    written: bool,
    renewing: Option<tokio::task::AbortHandle>,
}

impl RemoteLead {
    /// A lead about to be asked for with `marker` at `key`: dropped, it
    /// deletes the marker, should the call have set it.
    fn new(redis: Arc<skygate_state::Redis>, key: String, marker: Vec<u8>) -> Self {
        Self {
            redis,
            key,
            marker,
            written: false,
            renewing: None,
        }
    }

    /// The marker is set: this replica leads, and renews it every third of
    /// `life` until this is dropped (a failed renewal is tried again; one
    /// that finds the marker gone stops).
    fn renew(&mut self, life: std::time::Duration) {
        let (redis, key, marker) = (self.redis.clone(), self.key.clone(), self.marker.clone());
        self.renewing = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(life / 3).await;
                    let op = skygate_state::MarkOp::Renew(life);
                    if matches!(redis.mark(&key, &marker, op).await, Ok(false)) {
                        return;
                    }
                }
            })
            .abort_handle()
        });
    }

    /// This lead's answer will not be stored: the replicas waiting on it
    /// ask a backend now.
    fn go_ahead(mut self) {
        self.end(skygate_state::MarkOp::Yield(GO_AHEAD, GO_AHEAD_LIFE));
    }

    fn end(&mut self, op: skygate_state::MarkOp<'static>) {
        if let Some(r) = self.renewing.take() {
            r.abort();
        }
        if self.written {
            return;
        }
        self.written = true;
        let (redis, key, marker) = (
            self.redis.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.marker),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = redis.mark(&key, &marker, op).await;
            });
        }
    }
}

impl std::fmt::Debug for RemoteLead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteLead({})", self.key)
    }
}

impl Drop for RemoteLead {
    fn drop(&mut self) {
        self.end(skygate_state::MarkOp::Drop);
    }
}

/// What a Redis value is to a miss.
enum Found {
    /// An answer (now in memory too).
    Answer(Arc<Entry>),
    /// Another replica leads the miss.
    Led,
    /// Another replica's lead ended without an answer to store: ask a
    /// backend.
    GoAhead,
    /// Nothing to serve: expired, ruled out by a purge, or unreadable.
    Nothing,
}

/// A stream is captured up to this many times `max_entry_bytes` (its SSE
/// framing is several times the completion it adds up to), and at most
/// [`MAX_STREAM_CAPTURE`].
const STREAM_CAPTURE_FACTOR: usize = 8;
const MAX_STREAM_CAPTURE: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillState {
    Open,
    /// Not a 200 JSON or SSE answer, marked `no-store`, or too large.
    Dropped,
    Complete,
}

impl Fill {
    /// The backend's response header: only a 200 of JSON or SSE, not
    /// marked `no-store` or `private`, nor `no-cache` on JSON (it would have
    /// a cache ask the backend again before each use: this one never does;
    /// on SSE it is the usual advice not to buffer the stream, which the
    /// gateway adds itself), nor with a `max-age` or `s-maxage` of 0, is
    /// kept. A positive `s-maxage` (for shared caches; else `max-age`),
    /// less the `Age` the answer comes with, bounds the entry's life.
    pub fn response_header(&mut self, h: &ResponseHeader) {
        let ctype = h
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        self.sse = ctype.starts_with(b"text/event-stream");
        let json = ctype.starts_with(b"application/json");
        let (mut forbidden, mut max_age, mut s_maxage) = (false, None::<u64>, None::<u64>);
        for v in h.headers.get_all(http::header::CACHE_CONTROL) {
            for (name, value) in directives(v.as_bytes()) {
                // A bad value: zero (RFC 9111 §4.2.1: treat as stale);
                // one too large to read: 2^31 s (§1.2.2).
                let secs = || {
                    let v = value.unwrap_or_default();
                    match std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        Some(n) => n,
                        None if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => 1 << 31,
                        None => 0,
                    }
                };
                match name.to_ascii_lowercase().as_slice() {
                    b"no-store" | b"private" => forbidden = true,
                    b"no-cache" if !self.sse => forbidden = true,
                    b"max-age" => max_age = Some(max_age.map_or(secs(), |m| m.min(secs()))),
                    b"s-maxage" => s_maxage = Some(s_maxage.map_or(secs(), |m| m.min(secs()))),
                    _ => {}
                }
            }
        }
        // What the answer has already spent in caches before this one
        // (`Age`, RFC 9111 §5.1) is not its to live again; an `Age` that
        // is not a number is ignored, one too large to read is 2^31 s
        // (§1.2.2: stale).
        let age = h
            .headers
            .get(http::header::AGE)
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
            .map_or(0, |v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1 << 31)
            });
        let fresh = s_maxage.or(max_age).map(|f| f.saturating_sub(age));
        self.fresh_for = fresh.map(std::time::Duration::from_secs);
        if h.status.as_u16() != 200 || !(json || self.sse) || forbidden || fresh == Some(0) {
            self.drop_capture();
        }
    }

    /// A body chunk as the backend sent it.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.state != FillState::Open {
            return;
        }
        let cap = if self.sse {
            self.limit
                .saturating_mul(STREAM_CAPTURE_FACTOR)
                .min(MAX_STREAM_CAPTURE)
                .max(self.limit)
        } else {
            self.limit
        };
        if self.buf.len() + chunk.len() > cap {
            self.drop_capture();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body ended whole.
    pub fn complete(&mut self) {
        if self.state == FillState::Open {
            self.state = FillState::Complete;
        }
    }

    /// Nothing will be stored: the misses waiting on this one are let go
    /// now (they ask a backend themselves) rather than at the end.
    fn drop_capture(&mut self) {
        self.state = FillState::Dropped;
        self.buf = Vec::new();
        if let Some(f) = self.flight.take() {
            f.go_ahead();
        }
        if let Some(r) = self.remote.take() {
            r.go_ahead();
        }
    }

    /// The answer to store, with its tokens (read in the same pass), when
    /// it is a whole one: JSON with its `choices` (chat) or `data`
    /// (embeddings) and no `error`; a stream assembled into its
    /// completion. At most `limit` bytes.
    fn answer(self, chat: bool) -> Option<(Vec<u8>, Option<u64>)> {
        let (body, tokens) = if self.sse {
            if !chat {
                return None;
            }
            let body = entry::assemble(&self.buf)?;
            let tokens = entry::usage_tokens(&body);
            (body, tokens)
        } else {
            let tokens = entry::whole(&self.buf, chat)?;
            (self.buf, tokens)
        };
        (body.len() <= self.limit).then_some((body, tokens))
    }
}

impl Cache {
    /// The plugin for `config`, when some route caches.
    pub fn from_config(config: &Config, shared: &Shared) -> Option<Self> {
        shared.cache.configure(&config.cache);
        if config.routes.iter().all(|r| r.cache.is_none()) {
            return None;
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                r.cache.clone().map(|conf| RouteRt {
                    conf,
                    name: r.name.as_str().into(),
                    chat: r.operation == Operation::ChatCompletions,
                    counters: shared.cache.route_counters(&r.name),
                })
            })
            .collect();
        let prefix = config
            .state
            .redis
            .as_ref()
            .map_or_else(|| "skygate".to_string(), |r| r.prefix.clone());
        Some(Self {
            routes,
            store: shared.cache.clone(),
            redis: shared.redis.clone(),
            l2: config.cache.redis && config.state.redis.is_some(),
            prefix,
            backends: config
                .backends
                .iter()
                .map(|b| b.name.as_str().into())
                .collect(),
        })
    }

    /// Answers from `e`, once the plugins after this one (the rate
    /// limits) let it through (`ctx.pending_answer`); `false` when a
    /// stream cannot carry it. Counted as a hit in `on_complete`, when it
    /// was sent.
    fn hit(
        &self,
        rt: &RouteRt,
        ctx: &mut RequestCtx,
        e: &Entry,
        framing: &key::Framing,
        max_age: Option<u64>,
    ) -> bool {
        let (servable, checked_now) = e.check();
        if !servable {
            // Stored unchecked, and not a whole answer after all (an
            // error in a 200, no choices): never served.
            if checked_now {
                rt.counters.unservable.fetch_add(1, Relaxed);
            }
            return false;
        }
        let age = e.age(now_ms());
        if max_age.is_some_and(|m| age > m) {
            return false;
        }
        let (body, ctype) = if ctx.stream && rt.chat {
            match e.sse(framing.include_usage) {
                Some(sse) => (sse, "text/event-stream"),
                None => return false,
            }
        } else {
            (e.body.clone(), "application/json")
        };
        ctx.cache = CacheStatus::Hit;
        ctx.cached_tokens = e.tokens;
        ctx.cache_hit_free = !rt.conf.charge_hits;
        ctx.pending_answer = Some(LocalResponse {
            status: 200,
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(ctype),
                ),
                (http::header::AGE, http::HeaderValue::from(age)),
            ],
            body,
        });
        true
    }

    /// A hit from memory when an answer was stored in `key`'s slot since
    /// the lookup's `stamp` (it may be this request's, stored by an
    /// identical one meanwhile).
    fn stored_since(
        &self,
        rt: &RouteRt,
        ctx: &mut RequestCtx,
        key: Key,
        stamp: u64,
        framing: &key::Framing,
        asked: &Directives,
    ) -> bool {
        self.store.stored_since(key, stamp)
            && self
                .store
                .get(key)
                .is_some_and(|e| self.hit(rt, ctx, &e, framing, asked.max_age))
    }

    /// A hit found in Redis (and counted as such); `false` when there is
    /// none, or it cannot be served to this request.
    async fn redis_hit(
        &self,
        rt: &RouteRt,
        ctx: &mut RequestCtx,
        key: Key,
        tenant: Option<&Arc<str>>,
        framing: &key::Framing,
        asked: &Directives,
    ) -> bool {
        if !self.l2 {
            return false;
        }
        let rkey = store::redis_key(&self.prefix, &rt.name, tenant.map(|t| &**t), key);
        let value = match self.redis.get(&rkey).await {
            Ok(Some(v)) => v,
            Ok(None) => return false,
            Err(_) => {
                self.store.counters.redis_errors.fetch_add(1, Relaxed);
                return false;
            }
        };
        match self.found(rt, key, tenant, ctx.start, &value) {
            Found::Answer(e) => self.serve_from_redis(rt, ctx, &e, framing, asked),
            Found::Led | Found::GoAhead | Found::Nothing => false,
        }
    }

    /// Serves an answer found in Redis (counted as such); `false` when it
    /// cannot be served to this request.
    fn serve_from_redis(
        &self,
        rt: &RouteRt,
        ctx: &mut RequestCtx,
        e: &Entry,
        framing: &key::Framing,
        asked: &Directives,
    ) -> bool {
        let served = self.hit(rt, ctx, e, framing, asked.max_age);
        if served {
            rt.counters.redis_hits.fetch_add(1, Relaxed);
        }
        served
    }

    /// The leader of a miss looks in Redis: an answer there is a hit
    /// (`Ok`). Else it leads for every replica (`Err(Some)`: its marker is
    /// in the answer's place), or, when another replica leads, waits for
    /// that one's answer in Redis, bounded by `deadline`: a hit; when that
    /// lead ends without an answer, it leads in turn (or, told the answer
    /// will not be stored, or when time is up, it asks a backend itself:
    /// `Err(None)`, as when Redis fails or the tier is off). `waited`: the
    /// request waited on this replica already (counted once).
    #[allow(clippy::too_many_arguments)]
    async fn lead_in_redis(
        &self,
        rt: &RouteRt,
        ctx: &mut RequestCtx,
        key: Key,
        tenant: Option<&Arc<str>>,
        framing: &key::Framing,
        asked: &Directives,
        deadline: std::time::Instant,
        mut waited: bool,
    ) -> Result<(), Option<RemoteLead>> {
        if !self.l2 {
            return Err(None);
        }
        let rkey = store::redis_key(&self.prefix, &rt.name, tenant.map(|t| &**t), key);
        if self.store.conf().wait.is_zero() {
            // `cache.wait: 0s`: nobody waits, so nobody leads for others.
            return if self.redis_hit(rt, ctx, key, tenant, framing, asked).await {
                Ok(())
            } else {
                Err(None)
            };
        }
        let mut pause = std::time::Duration::from_millis(10);
        let mut lead = true;
        loop {
            let value = if lead {
                let mut marker = MARKER.to_vec();
                marker.extend_from_slice(format!("{:016x}", rand::random::<u64>()).as_bytes());
                // Made before the call: should it time out after the script
                // ran, dropping this deletes the marker.
                let mut held = RemoteLead::new(self.redis.clone(), rkey.clone(), marker);
                match self
                    .redis
                    .get_or_mark(&rkey, &held.marker, MARKER_LIFE)
                    .await
                {
                    Ok(None) => {
                        held.renew(MARKER_LIFE);
                        return Err(Some(held));
                    }
                    Ok(Some(v)) => {
                        held.written = true;
                        v
                    }
                    Err(_) => {
                        self.store.counters.redis_errors.fetch_add(1, Relaxed);
                        return Err(None);
                    }
                }
            } else {
                match self.redis.get(&rkey).await {
                    Ok(Some(v)) => v,
                    // The lead ended without an answer: lead in turn.
                    Ok(None) => {
                        lead = true;
                        continue;
                    }
                    Err(_) => {
                        self.store.counters.redis_errors.fetch_add(1, Relaxed);
                        return Err(None);
                    }
                }
            };
            match self.found(rt, key, tenant, ctx.start, &value) {
                Found::Answer(e) => {
                    return if self.serve_from_redis(rt, ctx, &e, framing, asked) {
                        Ok(())
                    } else {
                        Err(None)
                    };
                }
                Found::GoAhead | Found::Nothing => return Err(None),
                Found::Led => {}
            }
            if !waited {
                rt.counters.waits.fetch_add(1, Relaxed);
                waited = true;
            }
            if std::time::Instant::now() + pause > deadline {
                return Err(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
            lead = false;
        }
    }

    /// What a Redis value is to a miss of a request that began at `since`;
    /// an answer found is put in memory.
    fn found(
        &self,
        rt: &RouteRt,
        key: Key,
        tenant: Option<&Arc<str>>,
        since: std::time::Instant,
        value: &[u8],
    ) -> Found {
        if value.starts_with(MARKER) {
            return Found::Led;
        }
        if value.starts_with(GO_AHEAD) {
            return Found::GoAhead;
        }
        let Some(e) = Entry::decode(
            value,
            rt.name.clone(),
            tenant.cloned(),
            rt.conf.max_entry_bytes,
        ) else {
            self.store.counters.redis_bad_values.fetch_add(1, Relaxed);
            return Found::Nothing;
        };
        // Expired; read before a purge that has run since (the purge may
        // have emptied memory before this read's value lands there); or an
        // answer a purge removed, read back before its sweep of Redis got
        // to it (on this replica or another).
        let tenant_name = tenant.map(|t| &**t);
        if e.left(now_ms()).is_zero()
            || self.store.purged_since(since, &rt.name, tenant_name)
            || self
                .store
                .purged_after(e.stored_at_ms, &rt.name, tenant_name)
        {
            return Found::Nothing;
        }
        let e = Arc::new(e);
        self.store.insert(key, e.clone());
        Found::Answer(e)
    }
}

fn not_cached() -> ApiError {
    ApiError::new(
        ErrorKind::NotCached,
        "no cached answer for this request (Cache-Control: only-if-cached)",
    )
}

/// The scope part of the key, and the tenant the entry is filed under.
fn scope(conf: &RouteCache, ctx: &RequestCtx) -> (String, Option<Arc<str>>) {
    let Some(id) = &ctx.identity else {
        // No authentication on this route: every caller is the same one.
        return ("anonymous".into(), None);
    };
    let p = &id.principal;
    let tenant: Option<Arc<str>> = p
        .tenant
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Into::into);
    // An API key's `app`, a certificate's `app` and each issuer's `app` are
    // different callers.
    let principal = || {
        format!(
            "p:{}:{}\0{}",
            id.method.as_str(),
            p.issuer.as_deref().unwrap_or(""),
            p.id
        )
    };
    let s = match conf.scope {
        // Nobody's own: not filed under the storer's tenant.
        CacheScope::Global => return ("global".into(), None),
        CacheScope::Tenant => match &tenant {
            Some(t) => format!("t:{t}"),
            None => principal(),
        },
        CacheScope::Principal => principal(),
    };
    (s, tenant)
}

/// What the request's `Cache-Control` asks of the cache (RFC 9111
/// request directives; `Pragma: no-cache` counts when there is no
/// `Cache-Control`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    /// Do not answer from the cache; store the answer (refresh).
    no_cache: bool,
    /// Neither look nor store.
    no_store: bool,
    /// An entry older than this many seconds is not served (and is
    /// refreshed).
    max_age: Option<u64>,
    /// Answer from the cache or not at all (504).
    only_if_cached: bool,
}

fn request_directives(h: &pingora_http::RequestHeader) -> Directives {
    let mut d = Directives::default();
    let mut any = false;
    for v in h.headers.get_all(http::header::CACHE_CONTROL) {
        any = true;
        for (name, value) in directives(v.as_bytes()) {
            match name.to_ascii_lowercase().as_slice() {
                b"no-cache" => d.no_cache = true,
                b"no-store" => d.no_store = true,
                b"only-if-cached" => d.only_if_cached = true,
                b"max-age" => {
                    // The smallest, when given twice; a bad value: zero.
                    let n = std::str::from_utf8(value.unwrap_or_default())
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    d.max_age = Some(d.max_age.map_or(n, |m| m.min(n)));
                }
                _ => {}
            }
        }
    }
    if !any {
        for v in h.headers.get_all(http::header::PRAGMA) {
            d.no_cache |=
                directives(v.as_bytes()).any(|(n, _)| n.eq_ignore_ascii_case(b"no-cache"));
        }
    }
    d
}

/// A header's `name[=value]` directives, split on commas outside quoted
/// strings; a value loses its quotes.
fn directives(v: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in v.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&v[start..]);
    parts.into_iter().filter_map(|d| {
        let d = d.trim_ascii();
        if d.is_empty() {
            return None;
        }
        Some(match d.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let value = d[eq + 1..].trim_ascii();
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                (d[..eq].trim_ascii(), Some(value))
            }
            None => (d, None),
        })
    })
}

/// What the lookup before the rate limits learned, for the one after them.
#[derive(Debug)]
pub struct Lookup {
    key: Key,
    /// The store's count for this key's slot before the in-memory tier
    /// was looked at ([`Store::stored_since`]).
    stamp: u64,
    framing: key::Framing,
    tenant: Option<Arc<str>>,
    asked: Directives,
}

#[async_trait]
impl Plugin for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    /// Before the rate limits: the key, and the in-memory tier. A hit is
    /// parked in `ctx.pending_answer` (sent once the limits pass it, which
    /// skip token limits for it); a miss goes on to [`CacheFill`] after
    /// the limits, so a request they refuse never leads, waits or reads
    /// Redis.
    async fn on_request(&self, req: Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        let Some(rt) = ctx
            .route
            .and_then(|r| self.routes.get(r))
            .and_then(Option::as_ref)
        else {
            return Decision::Continue;
        };
        let asked = request_directives(req.header);
        if asked.no_store {
            if asked.only_if_cached {
                return Decision::Respond(not_cached());
            }
            return Decision::Continue;
        }
        let (scope, tenant) = scope(&rt.conf, ctx);
        let mut forbidden: Vec<&str> = ctx
            .forbidden_backends
            .iter()
            .filter_map(|&b| self.backends.get(b).map(|n| &**n))
            .collect();
        forbidden.sort_unstable();
        let parts = Parts {
            route: &rt.name,
            scope: &scope,
            forbidden: &forbidden,
        };
        let Some((key, framing)) = key::key(&parts, req.body) else {
            return Decision::Continue;
        };
        let stamp = self.store.stamp(key);
        if !asked.no_cache {
            if let Some(e) = self.store.get(key) {
                if self.hit(rt, ctx, &e, &framing, asked.max_age) {
                    return Decision::Continue;
                }
                if e.found_unservable() {
                    // Not here, where the waiters of the miss that stored
                    // it still look (each goes to a backend at once).
                    self.store.discard(key, &e);
                }
            }
        }
        ctx.cache_lookup = Some(Box::new(Lookup {
            key,
            stamp,
            framing,
            tenant,
            asked,
        }));
        Decision::Continue
    }

    fn on_complete(&self, ctx: &mut RequestCtx) {
        // Counted as the client's `x-skygate-cache` says, once it is sent.
        let Some(rt) = ctx
            .route
            .and_then(|r| self.routes.get(r))
            .and_then(Option::as_ref)
        else {
            return;
        };
        let c = &rt.counters;
        match ctx.cache {
            CacheStatus::Hit => {
                c.hits.fetch_add(1, Relaxed);
                c.tokens.fetch_add(ctx.cached_tokens.unwrap_or(0), Relaxed);
            }
            CacheStatus::Miss => {
                c.misses.fetch_add(1, Relaxed);
            }
            CacheStatus::Bypass => {
                c.bypasses.fetch_add(1, Relaxed);
            }
        }
        let Some(fill) = ctx.cache_fill.take() else {
            return;
        };
        let mut fill = *fill;
        if fill.state != FillState::Complete || ctx.status != 200 || ctx.error.is_some() {
            // No whole answer (the client left, the stream was cut): the
            // flight is dropped, and a waiter leads in its place.
            return;
        }
        let (key, tenant, fresh_for) = (fill.key, fill.tenant.clone(), fill.fresh_for);
        let flight = fill.flight.take();
        let mut remote = fill.remote.take();
        let ttl = fresh_for.map_or(rt.conf.ttl, |f| f.min(rt.conf.ttl));
        // Memory alone keeps a JSON answer unchecked, with the tokens read
        // off its end (`ctx`): it is checked at its first hit, and most
        // are never asked for again. An answer for Redis is checked first
        // (another replica's waiters take it as it is); a stream is
        // assembled, and so checked, either way.
        let answer = if self.l2 || fill.sse {
            fill.answer(rt.chat)
                .map(|(body, tokens)| (body, tokens, true))
        } else {
            let tokens = match (ctx.prompt_tokens, ctx.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0).saturating_add(c.unwrap_or(0))),
            };
            Some((fill.buf, tokens, false))
        };
        // A whole answer that is not one to store (an error in a 200,
        // logprobs, too large once assembled), or one a purge since this
        // request began has ruled out: the waiters ask a backend now.
        let (body, tokens, checked) = match answer {
            Some(a)
                if !self
                    .store
                    .purged_since(ctx.start, &rt.name, tenant.as_deref()) =>
            {
                a
            }
            _ => {
                if let Some(f) = flight {
                    f.go_ahead();
                }
                if let Some(r) = remote {
                    r.go_ahead();
                }
                return;
            }
        };
        let e = Entry::with_tokens(
            Bytes::from(body),
            rt.chat,
            rt.name.clone(),
            tenant.clone(),
            now_ms(),
            ttl,
            tokens,
        );
        let e = Arc::new(if checked { e } else { e.unchecked() });
        if self.l2 {
            let rkey = store::redis_key(&self.prefix, &rt.name, tenant.as_deref(), key);
            let compress_above = self.store.conf().compress_above;
            let stored = e.clone();
            let queued = self.redis.put(rkey, e.body.len(), ttl, ctx.start, move || {
                stored.encode(compress_above)
            });
            if let Some(r) = remote.as_mut() {
                r.written = queued;
            }
        }
        drop(remote);
        self.store.insert(key, e);
        rt.counters.stores.fetch_add(1, Relaxed);
        // Dropped once stored: the waiters wake to find the entry.
        drop(flight);
    }
}

/// The cache's second step, after the rate limits: a miss of the
/// in-memory tier joins the identical misses in flight (one leads: it looks
/// in Redis, where it leads for every replica or waits for the replica
/// that does, then asks a backend; the others wait for its answer, bounded
/// by `cache.wait`, and lead in turn if it stored nothing), and the miss's
/// answer is captured to be stored ([`Fill`]). A miss a full in-memory
/// tier refuses neither leads nor captures; it waits only when an
/// identical miss is already in flight.
pub struct CacheFill(pub Arc<Cache>);

#[async_trait]
impl Plugin for CacheFill {
    fn name(&self) -> &'static str {
        "cache-fill"
    }

    async fn on_request(&self, _req: Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        let Some(lookup) = ctx.cache_lookup.take() else {
            return Decision::Continue;
        };
        let cache = &self.0;
        let Some(rt) = ctx
            .route
            .and_then(|r| cache.routes.get(r))
            .and_then(Option::as_ref)
        else {
            return Decision::Continue;
        };
        let Lookup {
            key,
            mut stamp,
            framing,
            tenant,
            asked,
        } = *lookup;
        let mut flight = None;
        let mut remote = None;
        if asked.only_if_cached {
            // Looked at, never waited for or led.
            if !asked.no_cache
                && (cache.stored_since(rt, ctx, key, stamp, &framing, &asked)
                    || cache
                        .redis_hit(rt, ctx, key, tenant.as_ref(), &framing, &asked)
                        .await)
            {
                return Decision::Continue;
            }
            return Decision::Respond(not_cached());
        }
        // A full in-memory tier stores only what it has, or saw before
        // (the doorkeeper marks the key seen here). A refused miss with no
        // identical one in flight to wait for leads nothing: no flight is
        // begun, nothing is captured, and its next miss is stored.
        let mut admitted = cache.l2 || cache.store.admits(key);
        if !admitted && (asked.no_cache || !cache.store.in_flight(key)) {
            // An identical request stored its answer between the lookup
            // and now (its flight is over).
            if !asked.no_cache && cache.stored_since(rt, ctx, key, stamp, &framing, &asked) {
                return Decision::Continue;
            }
            rt.counters.not_admitted.fetch_add(1, Relaxed);
            if !asked.no_cache {
                ctx.cache = CacheStatus::Miss;
            }
            return Decision::Continue;
        }
        if !asked.no_cache {
            let deadline = std::time::Instant::now() + cache.store.conf().wait;
            let mut waited = false;
            loop {
                match cache.store.join(key) {
                    Joined::Lead(f) => {
                        // An identical request stored its answer between
                        // the lookup and now.
                        if cache.stored_since(rt, ctx, key, stamp, &framing, &asked) {
                            return Decision::Continue;
                        }
                        match cache
                            .lead_in_redis(
                                rt,
                                ctx,
                                key,
                                tenant.as_ref(),
                                &framing,
                                &asked,
                                deadline,
                                waited,
                            )
                            .await
                        {
                            Ok(()) => return Decision::Continue,
                            Err(r) => remote = r,
                        }
                        flight = Some(f);
                        break;
                    }
                    Joined::Wait(rx) => {
                        if !waited {
                            rt.counters.waits.fetch_add(1, Relaxed);
                            waited = true;
                        }
                        let woken = store::wait_for(rx, deadline).await;
                        stamp = cache.store.stamp(key);
                        if let Some(e) = cache.store.get(key) {
                            if cache.hit(rt, ctx, &e, &framing, asked.max_age) {
                                return Decision::Continue;
                            }
                            if !e.servable() {
                                // Its answer was stored unchecked and is
                                // not one to serve: ask a backend now, as
                                // when a leader says so.
                                break;
                            }
                        }
                        if !admitted {
                            // Refused: it does not lead in turn (a leader
                            // that captures nothing would only hold up
                            // others). It asks a backend; if the tier now
                            // holds an answer it cannot use (its
                            // `max-age`), it refreshes that, below.
                            break;
                        }
                        // Its answer is not one to store, or it took too
                        // long: ask a backend (and store what it says).
                        // Else it was refused or its client left: lead, or
                        // wait for whoever leads now.
                        if woken != store::Woken::Done {
                            break;
                        }
                    }
                }
            }
            ctx.cache = CacheStatus::Miss;
            // A waiter finding an entry it cannot use refreshes it, as a
            // miss of a held key does.
            admitted = admitted || (waited && cache.store.holds(key));
        }
        if !admitted {
            // Refused, after waiting on an identical miss that did not
            // store (or finding the one it saw in flight just over):
            // nothing is captured or stored (its next miss is). Any
            // waiters on a flight it began ask a backend at once.
            rt.counters.not_admitted.fetch_add(1, Relaxed);
            if let Some(f) = flight {
                f.go_ahead();
            }
            return Decision::Continue;
        }
        // A stream's entry should carry its usage: ask the backend for it
        // (the client's stream leaves it out unless it asked too).
        if ctx.stream && rt.chat {
            ctx.want_stream_usage = true;
        }
        ctx.cache_fill = Some(Box::new(Fill {
            key,
            tenant,
            flight,
            remote,
            buf: Vec::new(),
            limit: rt.conf.max_entry_bytes,
            sse: false,
            state: FillState::Open,
            fresh_for: None,
        }));
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(body: &str, sse: bool, limit: usize, flight: Option<Flight>) -> Fill {
        Fill {
            key: Key(1),
            tenant: None,
            flight,
            remote: None,
            buf: body.as_bytes().to_vec(),
            limit,
            sse,
            state: FillState::Complete,
            fresh_for: None,
        }
    }

    /// A backend's `Cache-Control`: what must not be reused without asking
    /// it again is not kept; `s-maxage` (else `max-age`) bounds the life.
    #[test]
    fn the_backends_cache_control_is_obeyed() {
        let seen_aged = |cc: &[&str], age: Option<&str>| {
            let mut h = ResponseHeader::build(200, None).unwrap();
            h.append_header("content-type", "application/json").unwrap();
            for v in cc {
                h.append_header("cache-control", *v).unwrap();
            }
            if let Some(a) = age {
                h.append_header("age", a).unwrap();
            }
            let mut f = fill("{}", false, 1 << 20, None);
            f.state = FillState::Open;
            f.response_header(&h);
            (f.state, f.fresh_for.map(|d| d.as_secs()))
        };
        let seen = |cc: &[&str]| seen_aged(cc, None);
        for cc in [
            &["no-store"][..],
            &["private"],
            &["No-Cache"],
            &["max-age=0"],
            &["public, s-maxage=0, max-age=60"],
            &["max-age=junk"],
            &["max-age=60", "max-age=0"],
            &["no-cache, max-age=60"],
        ] {
            assert_eq!(seen(cc).0, FillState::Dropped, "{cc:?}");
        }
        assert_eq!(seen(&[]), (FillState::Open, None));
        assert_eq!(seen(&["public"]), (FillState::Open, None));
        assert_eq!(seen(&["max-age=60"]), (FillState::Open, Some(60)));
        assert_eq!(
            seen(&["max-age=60, s-maxage=30"]),
            (FillState::Open, Some(30))
        );
        assert_eq!(
            seen(&["s-maxage=90", "max-age=10"]),
            (FillState::Open, Some(90))
        );
        assert_eq!(
            seen(&["max-age=99999999999999999999999"]),
            (FillState::Open, Some(1 << 31))
        );
        // An answer already `Age`d in a cache before this one lives only
        // what is left of its freshness; all spent: not kept.
        assert_eq!(
            seen_aged(&["max-age=60"], Some("45")),
            (FillState::Open, Some(15))
        );
        assert_eq!(
            seen_aged(&["s-maxage=60"], Some("60")).0,
            FillState::Dropped
        );
        assert_eq!(
            seen_aged(&["max-age=60"], Some("junk")),
            (FillState::Open, Some(60))
        );
        assert_eq!(
            seen_aged(&["max-age=60"], Some("99999999999999999999999")).0,
            FillState::Dropped
        );
        // Without a freshness of its own, `Age` changes nothing (the
        // route's ttl holds).
        assert_eq!(seen_aged(&[], Some("500")), (FillState::Open, None));
        // On a stream, `no-cache` is the usual advice not to buffer it (the
        // gateway adds it itself): kept.
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header("content-type", "text/event-stream")
            .unwrap();
        h.append_header("cache-control", "no-cache").unwrap();
        let mut f = fill("", true, 1 << 20, None);
        f.state = FillState::Open;
        f.response_header(&h);
        assert_eq!(f.state, FillState::Open);
    }

    #[test]
    fn only_whole_answers_are_kept() {
        let chat = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}"#;
        assert!(fill(chat, false, 1000, None).answer(true).is_some());
        // Its tokens are read in the same pass; an odd `usage` (a float,
        // twice) still stores the answer, without tokens.
        let with_usage =
            r#"{"choices":[{"index":0}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(
            fill(with_usage, false, 1000, None).answer(true).unwrap().1,
            Some(7)
        );
        for odd in [
            r#"{"choices":[{"index":0}],"usage":{"prompt_tokens":3.5}}"#,
            r#"{"choices":[{"index":0}],"usage":{"prompt_tokens":3},"usage":{"prompt_tokens":4}}"#,
            r#"{"choices":[{"index":0}],"usage":"none"}"#,
        ] {
            assert_eq!(
                fill(odd, false, 1000, None).answer(true).unwrap().1,
                None,
                "{odd}"
            );
        }
        // A 200 that carries an error, or no choices, is not an answer.
        let err = r#"{"error":{"message":"x"},"choices":[{"index":0}]}"#;
        assert!(fill(err, false, 1000, None).answer(true).is_none());
        assert!(fill(r#"{"choices":[]}"#, false, 1000, None)
            .answer(true)
            .is_none());
        assert!(fill("not json", false, 1000, None).answer(true).is_none());
        // Embeddings need their `data`.
        let emb = r#"{"object":"list","data":[{"embedding":[0.1]}]}"#;
        assert!(fill(emb, false, 1000, None).answer(false).is_some());
        assert!(fill(chat, false, 1000, None).answer(false).is_none());
        // Larger than max_entry_bytes.
        assert!(fill(chat, false, 10, None).answer(true).is_none());
        // A stream is judged by what it adds up to, not its framing.
        let sse = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let assembled = entry::assemble(sse.as_bytes()).unwrap().len();
        assert!(assembled < sse.len());
        assert!(fill(sse, true, assembled, None).answer(true).is_some());
        assert!(fill(sse, true, assembled - 1, None).answer(true).is_none());
        assert!(fill(sse, true, 1000, None).answer(false).is_none());
    }

    /// A request that missed, and then finds that an identical one stored
    /// its answer before it joined the misses in flight (the rate limits
    /// run between the two steps), is a hit, not a second backend call:
    /// whether the answer came from a request that was not leading (one
    /// that asked `no-cache`: it stores without a flight) or from a
    /// leader ending its flight. `only-if-cached` finds it too.
    #[tokio::test]
    async fn a_miss_overtaken_by_an_identical_store_is_a_hit() {
        let (cache, fill_step) = memory_only_cache();
        let answer = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        for only_if_cached in [false, true] {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{only_if_cached}"}}]}}"#
            );
            let header = chat_header(only_if_cached.then_some("only-if-cached"));
            let req = || Incoming {
                header: &header,
                body: body.as_bytes(),
            };
            let mut ctx = RequestCtx::new();
            ctx.route = Some(0);
            // The lookup: a miss.
            assert!(matches!(
                cache.on_request(req(), &mut ctx).await,
                Decision::Continue
            ));
            let key = ctx.cache_lookup.as_ref().unwrap().key;
            assert!(ctx.pending_answer.is_none());
            // An identical request that asked `no-cache` stores its answer
            // meanwhile (it neither looks nor leads).
            let refresh_header = chat_header(Some("no-cache"));
            let refresh = || Incoming {
                header: &refresh_header,
                body: body.as_bytes(),
            };
            let mut other = RequestCtx::new();
            other.route = Some(0);
            cache.on_request(refresh(), &mut other).await;
            assert_eq!(other.cache_lookup.as_ref().unwrap().key, key);
            fill_step.on_request(refresh(), &mut other).await;
            complete(&mut other, answer);
            cache.on_complete(&mut other);
            assert!(
                cache.store.get(key).is_some(),
                "the no-cache answer is stored"
            );
            // After the limits: answered from memory, no backend call.
            assert!(matches!(
                fill_step.on_request(req(), &mut ctx).await,
                Decision::Continue
            ));
            assert_eq!(
                ctx.cache,
                CacheStatus::Hit,
                "only-if-cached: {only_if_cached}"
            );
            assert!(ctx.pending_answer.is_some());
            assert!(ctx.cache_fill.is_none());
        }
        // The same when the store is a leader's, ending its flight: B looks
        // while A leads, A stores its answer and finishes, then B (after
        // the limits) finds no flight, and is a hit rather than a leader.
        let header = chat_header(None);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"led"}]}"#;
        let req = || Incoming {
            header: &header,
            body,
        };
        let (mut a, mut b) = (RequestCtx::new(), RequestCtx::new());
        a.route = Some(0);
        b.route = Some(0);
        cache.on_request(req(), &mut a).await;
        fill_step.on_request(req(), &mut a).await;
        assert_eq!(a.cache, CacheStatus::Miss);
        cache.on_request(req(), &mut b).await;
        complete(&mut a, answer);
        cache.on_complete(&mut a);
        fill_step.on_request(req(), &mut b).await;
        assert_eq!(b.cache, CacheStatus::Hit);
        assert!(b.pending_answer.is_some());
        assert!(b.cache_fill.is_none());
    }

    /// With memory alone, an answer is stored unchecked, with the tokens
    /// the gateway read off its end, and checked at its first use: an
    /// error in a 200 is then never served (counted once as `unservable`),
    /// every waiter that finds it asks a backend at once, and the next
    /// lookup drops it. A purge of an entry never checked does not check it.
    #[tokio::test]
    async fn an_answer_stored_unchecked_is_checked_at_its_first_use() {
        let (cache, fill_step) = memory_only_cache();
        let counters = cache.routes[0].as_ref().unwrap().counters.clone();
        let header = chat_header(None);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"checked later"}]}"#;
        let req = || Incoming {
            header: &header,
            body,
        };
        let bad = br#"{"error":{"message":"quota"},"choices":[{"index":0}]}"#;
        let good = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        let new_ctx = || {
            let mut c = RequestCtx::new();
            c.route = Some(0);
            c
        };
        // A leads; B and C wait for it.
        let (mut a, mut b, mut c) = (new_ctx(), new_ctx(), new_ctx());
        cache.on_request(req(), &mut a).await;
        fill_step.on_request(req(), &mut a).await;
        cache.on_request(req(), &mut b).await;
        cache.on_request(req(), &mut c).await;
        // A's answer is an error in a 200: stored as it is, unparsed.
        let (_, _, ()) = tokio::join!(
            fill_step.on_request(req(), &mut b),
            fill_step.on_request(req(), &mut c),
            async {
                complete(&mut a, bad);
                cache.on_complete(&mut a);
            }
        );
        assert_eq!(counters.stores.load(Relaxed), 1);
        // Both woke, found it not one to serve, and ask a backend at once
        // (neither leads: nobody waits on them).
        for w in [&b, &c] {
            assert_eq!(w.cache, CacheStatus::Miss);
            assert!(w.pending_answer.is_none());
            assert!(w.cache_fill.as_ref().expect("a fill").flight.is_none());
        }
        let k = b.cache_fill.as_ref().unwrap().key;
        assert_eq!(counters.unservable.load(Relaxed), 1, "counted once");
        assert!(cache.store.get(k).is_some(), "the waiters leave it");
        // The next lookup misses and drops it (not a purge).
        let mut d = new_ctx();
        cache.on_request(req(), &mut d).await;
        assert!(d.pending_answer.is_none() && d.cache_lookup.is_some());
        assert!(cache.store.get(k).is_none());
        cache.store.usage();
        assert_eq!(cache.store.counters.invalidated.load(Relaxed), 0);
        assert_eq!(counters.unservable.load(Relaxed), 1);
        // B's answer is whole; its tokens are those read off its end.
        b.prompt_tokens = Some(3);
        b.completion_tokens = Some(4);
        complete(&mut b, good);
        cache.on_complete(&mut b);
        let mut e = new_ctx();
        cache.on_request(req(), &mut e).await;
        assert_eq!(e.cache, CacheStatus::Hit);
        assert_eq!(e.cached_tokens, Some(7));
        assert_eq!(&e.pending_answer.as_ref().unwrap().body[..], &good[..]);
        // A bad answer purged before anyone asked for it: a purge, unchecked.
        let other = br#"{"model":"m","messages":[{"role":"user","content":"purged"}]}"#;
        let mut f = new_ctx();
        let other_req = || Incoming {
            header: &header,
            body: other,
        };
        cache.on_request(other_req(), &mut f).await;
        fill_step.on_request(other_req(), &mut f).await;
        let fk = f.cache_fill.as_ref().unwrap().key;
        complete(&mut f, bad);
        cache.on_complete(&mut f);
        let stored = cache.store.get(fk).expect("stored unchecked");
        cache.store.purge(Some("chat"), None);
        cache.store.usage();
        assert_eq!(cache.store.counters.invalidated.load(Relaxed), 2);
        assert!(!stored.found_unservable(), "the purge did not check it");
        assert_eq!(counters.unservable.load(Relaxed), 1);
    }

    /// Once the in-memory tier is full, a miss of a key new to it
    /// captures and stores nothing (counted `not_admitted`); the key's
    /// next miss stores as before (moka's admission then decides), and so
    /// does a refresh of a key the tier holds.
    #[tokio::test]
    async fn a_full_tier_stores_an_answer_from_its_keys_second_sight() {
        let (cache, fill_step) = memory_only_cache_with("cache: { memory: 1MiB }\n");
        let counters = cache.routes[0].as_ref().unwrap().counters.clone();
        let header = chat_header(None);
        let refresh = chat_header(Some("no-cache"));
        let answer = answer_of_4_kib();
        // While the tier has room (up to 63/64 of 1 MiB) every miss stores.
        let n = fill_tier(&cache, &fill_step, 0, &header, &answer).await;
        assert!(n >= 200, "{n} answers of 4 KiB filled it");
        assert_eq!(counters.not_admitted.load(Relaxed), 0);
        // Full: a new key's miss captures nothing.
        let first = miss(&cache, &fill_step, 100_000, &header).await;
        assert_eq!(first.cache, CacheStatus::Miss);
        assert!(first.cache_fill.is_none());
        assert_eq!(counters.not_admitted.load(Relaxed), 1);
        // Its second sight captures and stores, as before the tier filled.
        let stores = counters.stores.load(Relaxed);
        let mut ctx = miss(&cache, &fill_step, 100_000, &header).await;
        assert!(ctx.cache_fill.is_some(), "a second sight captures");
        complete(&mut ctx, answer.as_bytes());
        cache.on_complete(&mut ctx);
        assert_eq!(counters.stores.load(Relaxed), stores + 1);
        // A refresh (no-cache) of a key the tier holds, stored while there
        // was room (so never seen by the doorkeeper), captures too.
        let mut held = None;
        for i in (0..n).rev() {
            if miss(&cache, &fill_step, i, &header).await.cache == CacheStatus::Hit {
                held = Some(i);
                break;
            }
        }
        let held = held.expect("the tier holds an early answer");
        let ctx = miss(&cache, &fill_step, held, &refresh).await;
        assert!(ctx.cache_fill.is_some(), "a refresh captures");
        assert_eq!(
            counters.not_admitted.load(Relaxed),
            1,
            "a refresh is admitted"
        );
    }

    /// A full tier refuses a key it never saw, but a miss for it still
    /// waits on an identical one in flight (begun while there was room),
    /// and takes its answer; when that one stores nothing (its client
    /// left), the refused miss asks a backend without leading or
    /// capturing.
    #[tokio::test]
    async fn a_refused_miss_still_waits_for_an_identical_one_in_flight() {
        let (cache, fill_step) = memory_only_cache_with("cache: { memory: 1MiB, wait: 30s }\n");
        let counters = cache.routes[0].as_ref().unwrap().counters.clone();
        let header = chat_header(None);
        let answer = answer_of_4_kib();
        // Led while the tier has room (admitted by size, so never marked
        // seen), and not answered yet.
        let mut leader = miss(&cache, &fill_step, 0, &header).await;
        assert!(leader.cache_fill.is_some());
        let leaves = miss(&cache, &fill_step, 1, &header).await;
        assert!(leaves.cache_fill.is_some());
        fill_tier(&cache, &fill_step, 2, &header, &answer).await;
        assert_eq!(counters.not_admitted.load(Relaxed), 0);
        let waiter = miss(&cache, &fill_step, 0, &header);
        tokio::pin!(waiter);
        assert!(
            still_waiting(waiter.as_mut()).await,
            "the refused miss waits for the one in flight"
        );
        complete(&mut leader, answer.as_bytes());
        cache.on_complete(&mut leader);
        let ctx = waiter.await;
        assert_eq!(ctx.cache, CacheStatus::Hit, "it takes the leader's answer");
        assert_eq!(counters.waits.load(Relaxed), 1);
        assert_eq!(counters.not_admitted.load(Relaxed), 0);
        // The other leader's client leaves: its waiter goes to a backend,
        // and captures nothing.
        let waiter = miss(&cache, &fill_step, 1, &header);
        tokio::pin!(waiter);
        assert!(still_waiting(waiter.as_mut()).await);
        drop(leaves);
        let ctx = waiter.await;
        assert_eq!(ctx.cache, CacheStatus::Miss);
        assert!(ctx.cache_fill.is_none(), "a refused miss captures nothing");
        assert_eq!(counters.waits.load(Relaxed), 2);
        assert_eq!(counters.not_admitted.load(Relaxed), 1);
        // A key it never saw, with none in flight, is refused at once.
        let refused = miss(&cache, &fill_step, 1_000_000, &header).await;
        assert!(refused.cache_fill.is_none());
        assert_eq!(counters.not_admitted.load(Relaxed), 2);
    }

    /// A chat answer of about 4 KiB.
    fn answer_of_4_kib() -> String {
        format!(
            r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}]}}"#,
            "x".repeat(4 << 10)
        )
    }

    /// Stores answers to requests `from`, `from + 1`, ... until a 1 MiB
    /// tier is full (within 1/64), each miss capturing its answer while
    /// there is room; returns the first request not sent.
    async fn fill_tier(
        cache: &Cache,
        fill_step: &CacheFill,
        from: usize,
        header: &pingora_http::RequestHeader,
        answer: &str,
    ) -> usize {
        let mut n = from;
        while cache.store.usage().0 < (1 << 20) - (1 << 14) {
            let mut ctx = miss(cache, fill_step, n, header).await;
            assert!(ctx.cache_fill.is_some(), "miss {n} captures its answer");
            complete(&mut ctx, answer.as_bytes());
            cache.on_complete(&mut ctx);
            n += 1;
        }
        n
    }

    /// Whether a miss is still pending after 300 ms (waiting on another).
    async fn still_waiting(miss: std::pin::Pin<&mut impl std::future::Future>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(300), miss)
            .await
            .is_err()
    }

    /// Request `n` of a chat route through the cache's two steps.
    async fn miss(
        cache: &Cache,
        fill_step: &CacheFill,
        n: usize,
        header: &pingora_http::RequestHeader,
    ) -> RequestCtx {
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{n}"}}]}}"#);
        let mut ctx = RequestCtx::new();
        ctx.route = Some(0);
        let req = || Incoming {
            header,
            body: body.as_bytes(),
        };
        cache.on_request(req(), &mut ctx).await;
        fill_step.on_request(req(), &mut ctx).await;
        ctx
    }

    /// The cache's two steps for one chat route (model `m`, ttl 1m), in
    /// memory alone.
    fn memory_only_cache() -> (Arc<Cache>, CacheFill) {
        memory_only_cache_with("")
    }

    /// [`memory_only_cache`] with more top-level config.
    fn memory_only_cache_with(more: &str) -> (Arc<Cache>, CacheFill) {
        let config = skygate_config::load_str(
            &(more.to_string()
                + "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  b: { kind: openai, url: http://b/v1 }\nroutes:\n  chat: { match: { path: /v1/chat/completions, models: [m] }, targets: [ { backend: b } ], cache: { ttl: 1m } }\n"),
            "t.yaml",
            &|_| None,
        )
        .unwrap();
        let shared = crate::Shared::default();
        let cache = Arc::new(Cache::from_config(&config, &shared).unwrap());
        (cache.clone(), CacheFill(cache))
    }

    /// A chat request's header, with `cache-control` when given.
    fn chat_header(cache_control: Option<&str>) -> pingora_http::RequestHeader {
        let mut h =
            pingora_http::RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        if let Some(v) = cache_control {
            h.insert_header("cache-control", v.to_string()).unwrap();
        }
        h
    }

    /// A request's backend answered 200 with `answer`, whole.
    fn complete(ctx: &mut RequestCtx, answer: &[u8]) {
        let f = ctx.cache_fill.as_mut().expect("a fill");
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        f.response_header(&h);
        f.push(answer);
        f.complete();
        ctx.status = 200;
    }

    #[tokio::test]
    async fn a_leader_that_will_store_nothing_lets_the_waiters_go_at_once() {
        let store = Store::new(&skygate_config::CacheConf::default());
        let Joined::Lead(lead) = store.join(Key(5)) else {
            panic!("first leads")
        };
        let Joined::Wait(rx) = store.join(Key(5)) else {
            panic!("second waits")
        };
        let mut f = fill("", false, 1000, Some(lead));
        f.state = FillState::Open;
        let h = ResponseHeader::build(500, None).unwrap();
        f.response_header(&h);
        let soon = std::time::Instant::now() + std::time::Duration::from_millis(200);
        assert_eq!(store::wait_for(rx, soon).await, store::Woken::GoAhead);
        drop(f);
    }

    #[test]
    fn request_cache_control() {
        let d = |headers: &[(&str, &str)]| {
            let mut h = pingora_http::RequestHeader::build("POST", b"/", None).unwrap();
            for (k, v) in headers {
                h.append_header(k.to_string(), *v).unwrap();
            }
            request_directives(&h)
        };
        assert_eq!(d(&[]), Directives::default());
        assert!(d(&[("cache-control", "No-Cache")]).no_cache);
        let two = d(&[("cache-control", "no-cache"), ("cache-control", "no-store")]);
        assert!(two.no_cache && two.no_store);
        assert_eq!(d(&[("cache-control", "max-age=0")]).max_age, Some(0));
        assert_eq!(
            d(&[("cache-control", "max-age=\"30\", max-age=10")]).max_age,
            Some(10)
        );
        assert_eq!(d(&[("cache-control", "max-age=junk")]).max_age, Some(0));
        assert!(d(&[("cache-control", "only-if-cached")]).only_if_cached);
        // A comma inside a quoted value does not start a directive.
        assert_eq!(
            d(&[("cache-control", "foo=\"a,no-store,b\"")]),
            Directives::default()
        );
        // Pragma counts only without Cache-Control.
        assert!(d(&[("pragma", "no-cache")]).no_cache);
        assert!(!d(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]).no_cache);
    }

    #[test]
    fn directives() {
        let has_directive = |v: &[u8], name: &str| {
            super::directives(v).any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        };
        assert!(has_directive(b"no-cache", "no-cache"));
        assert!(has_directive(b"max-age=0, No-Store", "no-store"));
        assert!(!has_directive(b"no-cache", "no-store"));
        assert!(has_directive(b"private=\"x\"", "private"));
        assert!(!has_directive(b"no-cachex", "no-cache"));
    }
}
