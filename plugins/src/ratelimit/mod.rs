//! Rate limits and quotas: requests per second, minute or hour, tokens per
//! minute or day, and requests in flight, per principal, tenant, route,
//! model, client address or globally; in memory, or in Redis shared by every
//! replica. Every limit that matches a request must pass; a refused request
//! is charged nothing.
//!
//! Tokens are reserved before the call (an estimate: the body's bytes ÷ 4
//! for input, plus `max_tokens` or the route's `output_tokens_estimate`) and
//! settled when it is done, with the usage the backend reported: a refund
//! when it used less, a debt when it used more.

mod keys;
#[cfg(test)]
mod tests;

use crate::{Decision, Incoming, Plugin, RequestCtx, Shared};
use async_trait::async_trait;
use keys::{partition, redis_key};
use skygate_config::{ApiError, Config, ErrorKind, FailurePolicy, LimitStore, RateLimit, RateUnit};
use skygate_state::redis::{RedisAsk, RedisSlot};
use skygate_state::{clock, key_hash, Ask, Local, Rate, Verdict};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Process-wide counts, read by `/metrics`.
pub struct Counters {
    /// Requests some limit applied to and all passed.
    pub allowed: AtomicU64,
    /// Refused by a request-rate limit.
    pub limited_requests: AtomicU64,
    /// Refused by a token limit.
    pub limited_tokens: AtomicU64,
    /// Refused by a concurrency limit.
    pub limited_concurrency: AtomicU64,
    /// Decided by the local share while Redis was down (`fail_open`).
    pub fail_open: AtomicU64,
    /// Refused with 503 while Redis was down (`fail_closed`).
    pub fail_closed: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    allowed: AtomicU64::new(0),
    limited_requests: AtomicU64::new(0),
    limited_tokens: AtomicU64::new(0),
    limited_concurrency: AtomicU64::new(0),
    fail_open: AtomicU64::new(0),
    fail_closed: AtomicU64::new(0),
};

/// The rate-limit plugin of one config.
pub struct RateLimits {
    rules: Vec<Rule>,
    /// For each route (by index): the rules that may apply to it.
    by_route: Vec<Vec<usize>>,
    /// For each route: the output tokens reserved without `max_tokens`.
    output_estimate: Vec<u64>,
    /// For each route: whether its body is an OpenAI request (else a
    /// function's bytes, which say nothing of tokens).
    openai: Vec<bool>,
    route_names: Vec<String>,
    shared: Shared,
    replicas: u32,
    prefix: String,
}

struct Rule {
    cfg: RateLimit,
    rates: Vec<(RateUnit, Rate)>,
    tokens: bool,
}

/// Where a charge was made.
#[derive(Debug)]
enum Place {
    Local(u64),
    /// The local share of a `fail_open` limit while Redis was down.
    Fallback(u64),
    Redis(String),
}

/// One counter a request was charged on.
#[derive(Debug)]
struct Charge {
    rate: Rate,
    /// Units charged (a token estimate is capped at the rate's amount).
    cost: u64,
    tokens: bool,
    place: Place,
}

/// An in-flight slot held until the request is done.
enum Slot {
    Local(LocalSlot),
    Redis(String),
}

/// A local in-flight slot; dropping it gives it back, so a request that
/// ends any way at all frees it.
struct LocalSlot {
    store: Arc<Local>,
    key: u64,
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        self.store.release(self.key);
    }
}

/// A limit's state as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// What a request's limits charged (settled on completion) and report.
pub struct Held {
    charges: Vec<Charge>,
    slots: Vec<Slot>,
    /// This request's member in Redis in-flight sets.
    member: String,
    /// The input tokens estimated from the body.
    input_estimate: u64,
    /// The tightest request-rate limit (least remaining).
    pub requests: Option<Report>,
    /// The tightest token limit.
    pub tokens: Option<Report>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("charges", &self.charges)
            .field("slots", &self.slots.len())
            .field("requests", &self.requests)
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// A request's plan: what to charge where.
#[derive(Default)]
struct Plan {
    /// (rule, unit, local ask)
    local: Vec<(usize, RateUnit, Ask)>,
    local_slots: Vec<(usize, u64, u32)>,
    /// (rule, unit, redis ask, fallback key)
    redis: Vec<(usize, RateUnit, RedisAsk, u64)>,
    /// (rule, redis slot, fallback key)
    redis_slots: Vec<(usize, RedisSlot, u64)>,
}

impl RateLimits {
    /// The plugin, when `config` has limits.
    pub fn from_config(config: &Config, shared: &Shared) -> Option<Self> {
        if config.limits.is_empty() {
            return None;
        }
        let rules: Vec<Rule> = config
            .limits
            .iter()
            .map(|l| Rule {
                rates: l
                    .rates
                    .iter()
                    .map(|&(unit, amount)| {
                        (
                            unit,
                            Rate {
                                amount,
                                period_us: unit.period().as_micros() as u64,
                            },
                        )
                    })
                    .collect(),
                tokens: l.rates.iter().any(|(u, _)| u.tokens()),
                cfg: l.clone(),
            })
            .collect();
        let by_route = (0..config.routes.len())
            .map(|r| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| {
                        rule.cfg.matcher.routes.is_empty() || rule.cfg.matcher.routes.contains(&r)
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        Some(Self {
            rules,
            by_route,
            output_estimate: config
                .routes
                .iter()
                .map(|r| r.output_tokens_estimate)
                .collect(),
            openai: config
                .routes
                .iter()
                .map(|r| r.operation != skygate_config::Operation::Function)
                .collect(),
            route_names: config.routes.iter().map(|r| r.name.clone()).collect(),
            shared: shared.clone(),
            replicas: config.state.replicas,
            prefix: config
                .state
                .redis
                .as_ref()
                .map_or_else(|| "skygate".to_string(), |r| r.prefix.clone()),
        })
    }

    /// The limits' names, in config order (for metrics and docs).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.cfg.name.as_str())
    }

    fn plan(&self, route: usize, ctx: &RequestCtx, estimate: u64) -> Plan {
        let mut plan = Plan::default();
        let Some(rules) = self.by_route.get(route) else {
            return plan;
        };
        let route_name = self.route_names.get(route).map_or("", String::as_str);
        for &ri in rules {
            let rule = &self.rules[ri];
            if !keys::matches(&rule.cfg.matcher, ctx) {
                continue;
            }
            let Some(parts) = partition(&rule.cfg.per, ctx, route_name) else {
                continue;
            };
            let redis = rule.cfg.store == LimitStore::Redis;
            let units = rule
                .rates
                .iter()
                .map(|&(u, r)| (u.as_str(), Some((u, r))))
                .chain(rule.cfg.concurrency.map(|_| ("concurrency", None)));
            for (unit_name, rate) in units {
                let mut key_parts: Vec<&str> = Vec::with_capacity(parts.len() + 2);
                key_parts.push(&rule.cfg.name);
                key_parts.push(unit_name);
                key_parts.extend(parts.iter().map(|p| p.as_ref()));
                let key = key_hash(&key_parts);
                match rate {
                    // A cache hit costs no tokens: token limits do not
                    // refuse it (request limits and concurrency do).
                    Some((unit, _)) if unit.tokens() && ctx.cache == crate::CacheStatus::Hit => {}
                    Some((unit, rate)) => {
                        let cost = if unit.tokens() { estimate } else { 1 }.min(rate.amount);
                        if redis {
                            let ask = RedisAsk {
                                key: redis_key(&self.prefix, &key_parts),
                                rate,
                                cost,
                            };
                            plan.redis.push((ri, unit, ask, key));
                        } else {
                            plan.local.push((ri, unit, Ask { key, rate, cost }));
                        }
                    }
                    None => {
                        let limit = rule.cfg.concurrency.unwrap_or(1);
                        if redis {
                            let slot = RedisSlot {
                                key: redis_key(&self.prefix, &key_parts),
                                limit,
                            };
                            plan.redis_slots.push((ri, slot, key));
                        } else {
                            plan.local_slots.push((ri, key, limit));
                        }
                    }
                }
            }
        }
        plan
    }

    /// A limit's amount in `unit`.
    fn amount(&self, rule: usize, unit: RateUnit) -> u64 {
        self.rules[rule]
            .rates
            .iter()
            .find(|(x, _)| *x == unit)
            .map_or(0, |(_, r)| r.amount)
    }

    /// The refusal for the tightest denied verdict.
    fn refuse(&self, rule: usize, unit: Option<RateUnit>, v: &Verdict, need: u64) -> ApiError {
        let cfg = &self.rules[rule].cfg;
        let per = cfg
            .per
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(" and ");
        let retry = Duration::from_micros(v.retry_after_us.max(1));
        match unit {
            Some(u) if u.tokens() => {
                COUNTERS.limited_tokens.fetch_add(1, Relaxed);
                let amount = self.amount(rule, u);
                ApiError::new(
                    ErrorKind::TokensLimited,
                    format!(
                        "token limit `{}` reached: {amount} {} per {per}; this request reserves about {need} tokens, {} are left; retry in {}",
                        cfg.name,
                        unit_words(u),
                        v.remaining,
                        format_reset(retry),
                    ),
                )
                .with_retry_after(retry)
            }
            Some(u) => {
                COUNTERS.limited_requests.fetch_add(1, Relaxed);
                let amount = self.amount(rule, u);
                ApiError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "rate limit `{}` reached: {amount} {} per {per}; retry in {}",
                        cfg.name,
                        unit_words(u),
                        format_reset(retry),
                    ),
                )
                .with_retry_after(retry)
            }
            None => {
                COUNTERS.limited_concurrency.fetch_add(1, Relaxed);
                ApiError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "concurrency limit `{}` reached: {} requests in flight per {per}; retry when one finishes",
                        cfg.name,
                        cfg.concurrency.unwrap_or(0),
                    ),
                )
                .with_retry_after(Duration::from_secs(1))
            }
        }
    }

    /// Charges the plan: local first (cheap), then Redis in one round
    /// trip. All pass, or nothing stays charged.
    async fn charge(&self, plan: Plan, held: &mut Held) -> Result<(), ApiError> {
        let now = clock::now_us();
        // 1. Local rates.
        let asks: Vec<Ask> = plan.local.iter().map(|(_, _, a)| *a).collect();
        let mut verdicts = Vec::with_capacity(asks.len());
        let local_ok = self.shared.local.check_all(&asks, now, &mut verdicts);
        for ((_, unit, a), v) in plan.local.iter().zip(&verdicts) {
            report(held, *unit, a.rate, v);
        }
        if !local_ok {
            return Err(self.worst(
                plan.local.iter().map(|(r, u, a)| (*r, *u, a.cost)),
                &verdicts,
            ));
        }
        for (_, unit, a) in &plan.local {
            held.charges.push(Charge {
                rate: a.rate,
                cost: a.cost,
                tokens: unit.tokens(),
                place: Place::Local(a.key),
            });
        }
        // 2. Local slots.
        for &(ri, key, limit) in &plan.local_slots {
            if self.shared.local.acquire(key, limit).is_none() {
                self.undo(held, now);
                return Err(self.refuse(ri, None, &FULL, 0));
            }
            held.slots.push(Slot::Local(LocalSlot {
                store: self.shared.local.clone(),
                key,
            }));
        }
        if plan.redis.is_empty() && plan.redis_slots.is_empty() {
            return Ok(());
        }
        // 3. Redis: every ask and slot in one round trip.
        let asks: Vec<RedisAsk> = plan.redis.iter().map(|(_, _, a, _)| a.clone()).collect();
        let slots: Vec<RedisSlot> = plan.redis_slots.iter().map(|(_, s, _)| s.clone()).collect();
        match self.shared.redis.acquire(&asks, &slots, &held.member).await {
            Ok(got) => {
                for ((_, unit, a, _), v) in plan.redis.iter().zip(&got.verdicts) {
                    report(held, *unit, a.rate, v);
                }
                if !got.allowed() {
                    self.undo(held, now);
                    if let Some(i) = got.slots.iter().position(Option::is_none) {
                        let ri = plan.redis_slots[i].0;
                        if got.verdicts.iter().all(|v| v.allowed) {
                            return Err(self.refuse(ri, None, &FULL, 0));
                        }
                    }
                    return Err(self.worst(
                        plan.redis.iter().map(|(r, u, a, _)| (*r, *u, a.cost)),
                        &got.verdicts,
                    ));
                }
                for (_, unit, a, _) in plan.redis {
                    held.charges.push(Charge {
                        rate: a.rate,
                        cost: a.cost,
                        tokens: unit.tokens(),
                        place: Place::Redis(a.key),
                    });
                }
                for (_, s, _) in plan.redis_slots {
                    held.slots.push(Slot::Redis(s.key));
                }
                Ok(())
            }
            Err(e) => self.fall_back(plan, held, now, &e),
        }
    }

    /// Redis did not answer: `fail_closed` limits refuse (503), `fail_open`
    /// ones are checked locally at `limit ÷ replicas`.
    fn fall_back(
        &self,
        plan: Plan,
        held: &mut Held,
        now: u64,
        e: &skygate_state::RedisError,
    ) -> Result<(), ApiError> {
        let closed = plan
            .redis
            .iter()
            .map(|(r, ..)| *r)
            .chain(plan.redis_slots.iter().map(|(r, ..)| *r))
            .find(|&r| self.rules[r].cfg.on_failure == FailurePolicy::Closed);
        if let Some(r) = closed {
            COUNTERS.fail_closed.fetch_add(1, Relaxed);
            self.undo(held, now);
            return Err(ApiError::new(
                ErrorKind::LimitsUnavailable,
                format!(
                    "the shared rate limit `{}` cannot be checked ({e}) and fails closed",
                    self.rules[r].cfg.name
                ),
            )
            .with_retry_after(Duration::from_secs(1)));
        }
        COUNTERS.fail_open.fetch_add(1, Relaxed);
        let fallback = &self.shared.fallback;
        let asks: Vec<Ask> = plan
            .redis
            .iter()
            .map(|(_, _, a, key)| {
                let rate = a.rate.share(self.replicas);
                Ask {
                    key: *key,
                    rate,
                    cost: a.cost.min(rate.amount),
                }
            })
            .collect();
        let mut verdicts = Vec::with_capacity(asks.len());
        let ok = fallback.check_all(&asks, now, &mut verdicts);
        for ((_, unit, _, _), (a, v)) in plan.redis.iter().zip(asks.iter().zip(&verdicts)) {
            report(held, *unit, a.rate, v);
        }
        if !ok {
            self.undo(held, now);
            return Err(self.worst(
                plan.redis
                    .iter()
                    .zip(&asks)
                    .map(|((r, u, ..), a)| (*r, *u, a.cost)),
                &verdicts,
            ));
        }
        for ((_, unit, ..), a) in plan.redis.iter().zip(&asks) {
            held.charges.push(Charge {
                rate: a.rate,
                cost: a.cost,
                tokens: unit.tokens(),
                place: Place::Fallback(a.key),
            });
        }
        for (ri, s, key) in &plan.redis_slots {
            let limit = (s.limit / self.replicas.max(1)).max(1);
            if fallback.acquire(*key, limit).is_none() {
                self.undo(held, now);
                return Err(self.refuse(*ri, None, &FULL, 0));
            }
            held.slots.push(Slot::Local(LocalSlot {
                store: fallback.clone(),
                key: *key,
            }));
        }
        Ok(())
    }

    /// The refusal of the denied verdict that clears last.
    fn worst(
        &self,
        asks: impl Iterator<Item = (usize, RateUnit, u64)>,
        verdicts: &[Verdict],
    ) -> ApiError {
        let mut worst: Option<(usize, RateUnit, u64, &Verdict)> = None;
        for ((r, u, cost), v) in asks.zip(verdicts) {
            if !v.allowed && worst.is_none_or(|w| v.retry_after_us > w.3.retry_after_us) {
                worst = Some((r, u, cost, v));
            }
        }
        match worst {
            Some((r, u, cost, v)) => self.refuse(r, Some(u), v, cost),
            None => ApiError::new(ErrorKind::RateLimited, "rate limit reached"),
        }
    }

    /// Gives back every local charge and slot taken so far (Redis charges
    /// of a refused request are given back by the Redis call itself).
    fn undo(&self, held: &mut Held, now: u64) {
        for c in held.charges.drain(..) {
            match c.place {
                Place::Local(k) => self.shared.local.adjust(k, c.rate, -(c.cost as i64), now),
                Place::Fallback(k) => self
                    .shared
                    .fallback
                    .adjust(k, c.rate, -(c.cost as i64), now),
                Place::Redis(_) => {}
            }
        }
        held.slots.clear();
    }
}

/// An in-flight limit's refusal, as a verdict.
const FULL: Verdict = Verdict {
    allowed: false,
    remaining: 0,
    reset_us: 0,
    retry_after_us: 1_000_000,
};

/// Keeps the tightest limit of each kind for the headers.
fn report(held: &mut Held, unit: RateUnit, rate: Rate, v: &Verdict) {
    let r = Report {
        limit: rate.amount,
        remaining: v.remaining,
        reset: Duration::from_micros(v.reset_us),
    };
    let slot = if unit.tokens() {
        &mut held.tokens
    } else {
        &mut held.requests
    };
    if slot.is_none_or(|s| r.remaining < s.remaining) {
        *slot = Some(r);
    }
}

fn unit_words(u: RateUnit) -> &'static str {
    match u {
        RateUnit::RequestsPerSecond => "requests per second",
        RateUnit::RequestsPerMinute => "requests per minute",
        RateUnit::RequestsPerHour => "requests per hour",
        RateUnit::TokensPerMinute => "tokens per minute",
        RateUnit::TokensPerDay => "tokens per day",
    }
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `250ms`, `12s`,
/// `6m0s`, `1h2m3s` (whole seconds rounded up past one second).
pub fn format_reset(d: Duration) -> String {
    let mut s = String::with_capacity(16);
    push_reset(&mut s, d);
    s
}

/// [`format_reset`] appended to `s`, digits by hand (a response header
/// per limit on every request).
fn push_reset(s: &mut String, d: Duration) {
    use skygate_config::push_num;
    let ms = d.as_millis();
    if ms < 1000 {
        push_num(s, (ms as u64).max(u64::from(!d.is_zero())));
        s.push_str("ms");
        return;
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, secs) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        push_num(s, h);
        s.push('h');
    }
    if h > 0 || m > 0 {
        push_num(s, m);
        s.push('m');
    }
    push_num(s, secs);
    s.push('s');
}

#[async_trait]
impl Plugin for RateLimits {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    async fn on_request(&self, req: Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        let Some(route) = ctx.route else {
            return Decision::Continue;
        };
        let input = if self.openai.get(route).copied().unwrap_or(false) {
            (req.body.len() as u64).div_ceil(4)
        } else {
            0
        };
        // Each of the `n` choices may take the whole output allowance.
        let output = ctx
            .max_tokens
            .unwrap_or_else(|| self.output_estimate.get(route).copied().unwrap_or(0))
            .saturating_mul(ctx.choices.max(1));
        let plan = self.plan(route, ctx, input.saturating_add(output));
        if plan.local.is_empty()
            && plan.local_slots.is_empty()
            && plan.redis.is_empty()
            && plan.redis_slots.is_empty()
        {
            return Decision::Continue;
        }
        let tokens = plan
            .local
            .iter()
            .map(|(r, ..)| *r)
            .chain(plan.redis.iter().map(|(r, ..)| *r))
            .any(|r| self.rules[r].tokens);
        let mut held = Box::new(Held {
            charges: Vec::new(),
            slots: Vec::new(),
            member: if plan.redis_slots.is_empty() {
                String::new()
            } else {
                format!("{:016x}", rand::random::<u64>())
            },
            input_estimate: input,
            requests: None,
            tokens: None,
        });
        let result = self.charge(plan, &mut held).await;
        let refused = result.is_err();
        ctx.limits = Some(held);
        match result {
            Ok(()) => {
                COUNTERS.allowed.fetch_add(1, Relaxed);
                // A stream's usage comes only when asked for: a token limit
                // needs it to settle.
                ctx.want_stream_usage |= tokens && ctx.stream;
                Decision::Continue
            }
            Err(e) => {
                debug_assert!(refused);
                Decision::Respond(e)
            }
        }
    }

    fn on_response_header(&self, headers: &mut http::HeaderMap, ctx: &RequestCtx) {
        use http::{HeaderName, HeaderValue};
        const NAMES: [[HeaderName; 3]; 2] = [
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        let Some(held) = &ctx.limits else { return };
        for (r, [limit, remaining, reset]) in [held.requests, held.tokens].into_iter().zip(NAMES) {
            if let Some(r) = r {
                // Numbers straight into header values (no string, no check),
                // by names built at compile time (no parse).
                headers.insert(limit, HeaderValue::from(r.limit));
                headers.insert(remaining, HeaderValue::from(r.remaining));
                if let Ok(v) = HeaderValue::try_from(format_reset(r.reset)) {
                    headers.insert(reset, v);
                }
            }
        }
    }

    fn on_complete(&self, ctx: &mut RequestCtx) {
        let Some(held) = ctx.limits.as_mut() else {
            return;
        };
        let charges = std::mem::take(&mut held.charges);
        let slots = std::mem::take(&mut held.slots);
        let member = std::mem::take(&mut held.member);
        let input_estimate = held.input_estimate;
        let used = used_tokens(ctx, input_estimate);
        let now = clock::now_us();
        let mut redis_adjust = Vec::new();
        for c in charges {
            let delta = match (c.tokens, used) {
                (true, Some(u)) => {
                    i64::try_from(u).unwrap_or(i64::MAX) - i64::try_from(c.cost).unwrap_or(0)
                }
                // A cache hit on a route whose hits are free
                // (`cache.charge_hits: false`): the request is given back.
                (false, _) if ctx.cache_hit_free => -i64::try_from(c.cost).unwrap_or(i64::MAX),
                _ => 0,
            };
            if delta == 0 {
                continue;
            }
            match c.place {
                Place::Local(k) => self.shared.local.adjust(k, c.rate, delta, now),
                Place::Fallback(k) => self.shared.fallback.adjust(k, c.rate, delta, now),
                Place::Redis(key) => redis_adjust.push((
                    RedisAsk {
                        key,
                        rate: c.rate,
                        cost: 0,
                    },
                    delta,
                )),
            }
        }
        let mut redis_slots = Vec::new();
        for s in slots {
            match s {
                Slot::Local(l) => drop(l),
                Slot::Redis(k) => redis_slots.push(k),
            }
        }
        if redis_adjust.is_empty() && redis_slots.is_empty() {
            return;
        }
        // Settling never holds up the connection's next request.
        self.shared.redis.settle(redis_adjust, redis_slots, member);
    }
}

/// The tokens a finished request used: the backend's usage when it gave
/// one; nothing when no backend answered, or its answer was an error; for a
/// stream cut short, the input estimate plus one token per event sent.
/// `None` (keep the reservation) for a whole answer without usage.
fn used_tokens(ctx: &RequestCtx, input_estimate: u64) -> Option<u64> {
    match (ctx.prompt_tokens, ctx.completion_tokens) {
        (Some(p), c) => return Some(p.saturating_add(c.unwrap_or(0))),
        (None, Some(c)) => return Some(input_estimate.saturating_add(c)),
        (None, None) => {}
    }
    // No backend was asked (a local answer), none answered, or it refused.
    if ctx.attempts == 0 || ctx.first_byte.is_none() || ctx.status >= 400 || ctx.status == 0 {
        return Some(0);
    }
    // A stream cut short: what was sent.
    if ctx.stream && ctx.error.is_some() {
        return Some(input_estimate.saturating_add(ctx.stream_events));
    }
    None
}
