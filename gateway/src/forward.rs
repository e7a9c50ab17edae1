//! The upstream leg of a request: the attempt loop. Pick a target, let its
//! adapter rewrite the request, send it, and on a retryable failure before
//! any byte went to the client, try another target (same priority group
//! first, then the next), with backoff, within `retries.max_attempts` and
//! the route's retry budget. The answer streams back chunk by chunk.

use crate::request::Routed;
use crate::respond;
use crate::runtime::Snapshot;
use crate::State;
use pingora_core::protocols::http::ServerSession as Session;
use pingora_http::ResponseHeader;
use skygate_backends::routing::retry::{backoff, parse_retry_after};
use skygate_backends::routing::state::{Attempt, Outcome, RouteState};
use skygate_backends::routing::{self, Chosen, NoTarget};
use skygate_backends::usage::StripUsage;
use skygate_backends::{Adapter, BackendRt, Call, PeerSlot, UpstreamResponse, UsageTail};
use skygate_config::{ApiError, BackendKind, ErrorKind, Fault, Operation, Retry, RetryOn, Route};
use skygate_plugins::{Chain, RequestCtx, Try};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Serves a routed request from a backend. `Err` only when the response was
/// cut after its first byte and cannot end cleanly (`proxy.rs` then closes
/// the connection, so the client sees a truncated response, never a silent
/// end).
pub async fn forward(
    state: &State,
    snap: &Snapshot,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: Routed,
) -> pingora_error::Result<bool> {
    // The client's socket, looked at while its answer is awaited: a client
    // that gives up (an SDK's timeout) would otherwise leave the backend
    // computing an answer nobody takes, once per retry of the SDK. Not on
    // a miss that will fill the cache: its answer is worth having anyway,
    // and identical misses may be waiting for it.
    let socket = if ctx.cache_fill.is_some() {
        None
    } else {
        session
            .stream()
            .map(|s| pingora_core::protocols::UniqueID::id(&**s))
    };
    // A hedge in flight beside the attempt (`ctx` is borrowed by both
    // sends then): written only while hedging.
    let hedge = std::sync::Mutex::new(None);
    let why = tokio::select! {
        biased;
        done = attempts(state, snap, session, ctx, routed, &hedge) => return done,
        why = watch(state, socket) => why,
    };
    let hedge = hedge.into_inner().ok().flatten();
    // The attempt in flight is dropped with its upstream connection (the
    // backend sees it close), unjudged: the backend did nothing wrong.
    match why {
        Ended::ClientLeft => {
            abandoned(ctx, hedge, "client_closed");
            ctx.error = Some("client_closed");
            // From the client's side: `proxy.rs` writes nothing more for
            // this error (a client that only half-closed would otherwise
            // get a bare 500).
            // Logged as nginx's 499.
            Err(pingora_error::Error::explain(
                pingora_error::ErrorType::ConnectionClosed,
                "the client closed its connection before its answer was complete",
            )
            .into_down())
        }
        Ended::Cutoff => {
            abandoned(ctx, hedge, "shutdown");
            shut_out(session, ctx, &snap.chain).await
        }
    }
}

/// Why the wait for an answer ended before the answer did.
enum Ended {
    /// The client closed its connection (FIN) or reset it.
    ClientLeft,
    /// SIGTERM's grace period is over (`State::cutoff`).
    Cutoff,
}

/// Resolves when the client has gone or the drain's grace period is over:
/// first after 50 ms (a quick answer costs a shared timer's slot, no
/// syscall), then at
/// doubling intervals up to a second, a look at `cutoff` and a
/// non-consuming peek at the client's socket. Bytes waiting (a pipelined
/// request, a TLS record) end the peeking: a FIN behind them cannot be
/// seen, since they are not read while the request runs; so over TLS a
/// client that sends `close_notify` before closing is not noticed here.
async fn watch(state: &State, socket: Option<i32>) -> Ended {
    use nix::errno::Errno;
    use nix::sys::socket::{recv, MsgFlags};
    let mut socket = socket;
    let mut every = Duration::from_millis(50);
    loop {
        // Pingora's shared timers: a request registers in a 10 ms slot that
        // the others due then share, and a dropped one cancels nothing.
        pingora_timeout::sleep(every).await;
        every = (every * 2).min(Duration::from_secs(1));
        if state.cutoff.load(std::sync::atomic::Ordering::Relaxed) {
            return Ended::Cutoff;
        }
        let Some(fd) = socket else { continue };
        let mut probe = [0u8; 1];
        match recv(fd, &mut probe, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ended::ClientLeft,
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(
                Errno::ECONNRESET
                | Errno::ECONNABORTED
                | Errno::ETIMEDOUT
                | Errno::EPIPE
                | Errno::ENOTCONN
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH,
            ) => return Ended::ClientLeft,
            Ok(_) | Err(_) => socket = None,
        }
    }
}

/// A hedge's attempt while it races the primary: its backend, start and
/// span.
type HedgeInFlight = std::sync::Mutex<Option<(Arc<str>, Instant, u64)>>;

/// The attempts that were in flight when the request ended without them
/// (the primary, and a hedge racing it), in the access log's and the
/// trace's tries, with `outcome`.
fn abandoned(ctx: &mut RequestCtx, hedge: Option<(Arc<str>, Instant, u64)>, outcome: &'static str) {
    let (Some((started, span)), Some(backend)) = (ctx.attempt_in_flight, ctx.backend.clone())
    else {
        return;
    };
    if ctx.served.is_some() || ctx.tries.last().is_some_and(|t| t.started == started) {
        return;
    }
    // A hedge racing it is counted as an attempt, as one that finishes is.
    ctx.attempts += u32::from(hedge.is_some());
    let now = Instant::now();
    for (backend, started, span) in std::iter::once((backend, started, span)).chain(hedge) {
        ctx.tries.push(Try {
            backend,
            outcome,
            status: None,
            ms: ms(now.duration_since(started)),
            started,
            span,
        });
    }
}

/// The drain's grace period ended before the answer did: before its
/// header, a 503 the client may retry elsewhere; during a stream, an
/// `event: error`; during any other body, a cut. Logged as `shutdown`.
async fn shut_out(
    session: &mut Session,
    ctx: &mut RequestCtx,
    chain: &Chain,
) -> pingora_error::Result<bool> {
    let e = ApiError::new(
        ErrorKind::Unavailable,
        "the gateway is shutting down and its grace period is over: ask again",
    )
    .with_retry_after(Duration::from_secs(1));
    let done = if session.response_written().is_none() {
        respond::error(session, ctx, chain, &e).await
    } else if ctx.stream {
        let event = e.sse_event();
        ctx.response_bytes += event.len() as u64;
        session
            .write_response_body(event, true)
            .await
            .map(|()| true)
    } else {
        Err(pingora_error::Error::explain(
            pingora_error::ErrorType::ConnectionClosed,
            "the gateway is shutting down",
        )
        .into_down())
    };
    ctx.error = Some("shutdown");
    done
}

/// The attempt loop: pick a target, send, judge the answer, retry or
/// stream it to the client.
async fn attempts(
    state: &State,
    snap: &Snapshot,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: Routed,
    hedge_in_flight: &HedgeInFlight,
) -> pingora_error::Result<bool> {
    let route = &snap.config.routes[routed.route];
    let route_state = &snap.route_states[routed.route];
    // One clock reading serves the budget, the first pick and the first
    // attempt's start; each later attempt reads the clock once more.
    let mut started = Instant::now();
    route_state.deposit(started);
    let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    // Backends a policy keeps this request away from (data residency).
    let forbidden = std::mem::take(&mut ctx.forbidden_backends);
    let allowed = |b: usize| !forbidden.contains(&b);
    let allowed: Option<routing::Allowed<'_>> = (!forbidden.is_empty()).then_some(&allowed);
    // A request's hold (routes.*.hold) has one deadline, however often it
    // waits.
    let mut hold_until: Option<Instant> = None;
    let first = first_pick(
        state,
        snap,
        routed.route,
        &tried,
        allowed,
        started,
        &mut hold_until,
    );
    let mut next = match first.await {
        Ok((c, picked_at)) => {
            // After a wait for a bulkhead slot, the attempt starts now.
            started = picked_at;
            c
        }
        Err(e) => return respond::error(session, ctx, &snap.chain, &e).await,
    };
    let mut held: Option<Held<'_>> = None;
    loop {
        let Chosen {
            backend,
            mut attempt,
        } = next;
        let mut b = &snap.backends[backend];
        tried.push(backend);
        ctx.attempts += 1;
        ctx.backend = Some(b.name.clone());
        // The peer this attempt uses, kept to pool its connection under the
        // same address even if a health check swaps the peer meanwhile.
        let mut slot = b.peer.load_full();
        // This attempt's span (traces on): its `traceparent` to the backend.
        let mut span = crate::telemetry::attempt_span(ctx);
        ctx.attempt_in_flight = Some((started, span));
        // Hedging: a likely cold target gets `hedge_after` to answer before
        // a warm one is asked too; the first usable answer wins.
        let hedge = route
            .hedge_after
            .filter(|_| b.state.cold_aware() && attempt.expected_cold());
        let result = match hedge {
            None => send(state, snap, b, backend, &slot, session, ctx, &routed, span).await,
            Some(after) => {
                let (r, hedged) = {
                    // Boxed, here and for the hedge: a send's future is large,
                    // and inline the two would triple the size of every
                    // request's future (which is copied whole when boxed).
                    let mut primary = Box::pin(send(
                        state, snap, b, backend, &slot, session, ctx, &routed, span,
                    ));
                    let early = tokio::time::timeout(after, &mut primary).await;
                    // A hedge is an extra attempt: it needs one left, and
                    // the retry budget's room.
                    let alternative = match early {
                        Ok(_) => None,
                        Err(_) if ctx.attempts >= route.retries.max_attempts => None,
                        Err(_) => {
                            let now = Instant::now();
                            if route_state.retry_allowed(now, route) {
                                routing::pick_warm(
                                    route,
                                    route_state,
                                    &snap.backends,
                                    &tried,
                                    allowed,
                                    now,
                                )
                                .filter(|_| route_state.try_retry(now, route))
                            } else {
                                None
                            }
                        }
                    };
                    match (early, alternative) {
                        (Ok(r), _) => (r, None),
                        (Err(_), None) => (primary.await, None),
                        (Err(_), Some(h)) => {
                            let hb = &snap.backends[h.backend];
                            let hslot = hb.peer.load_full();
                            let hedge_started = Instant::now();
                            let hspan = crate::telemetry::attempt_span(ctx);
                            let in_flight = |v| {
                                if let Ok(mut h) = hedge_in_flight.lock() {
                                    *h = v;
                                }
                            };
                            in_flight(Some((hb.name.clone(), hedge_started, hspan)));
                            let (r, won) = {
                                let mut second = Box::pin(send(
                                    state, snap, hb, h.backend, &hslot, session, ctx, &routed,
                                    hspan,
                                ));
                                race(&mut primary.as_mut(), &mut second.as_mut(), route.operation)
                                    .await
                            };
                            in_flight(None);
                            (r, Some((h, hslot, hedge_started, hspan, won)))
                        }
                    }
                };
                if let Some((h, hslot, hedge_started, hspan, won)) = hedged {
                    let hb = &snap.backends[h.backend];
                    ctx.attempts += 1;
                    tried.push(h.backend);
                    let elapsed = |t: Instant| ms(Instant::now().duration_since(t));
                    if won {
                        // The cold target's attempt is dropped unjudged:
                        // cancelled, it teaches the breaker nothing.
                        ctx.tries.push(Try {
                            backend: b.name.clone(),
                            outcome: "hedged",
                            status: None,
                            ms: elapsed(started),
                            started,
                            span,
                        });
                        drop(std::mem::replace(&mut attempt, h.attempt));
                        b = hb;
                        slot = hslot;
                        started = hedge_started;
                        span = hspan;
                        ctx.backend = Some(b.name.clone());
                        ctx.attempt_in_flight = Some((started, span));
                    } else {
                        ctx.tries.push(Try {
                            backend: hb.name.clone(),
                            outcome: "hedge_lost",
                            status: None,
                            ms: elapsed(hedge_started),
                            started: hedge_started,
                            span: hspan,
                        });
                    }
                }
                r
            }
        };
        let now = Instant::now();
        let elapsed = now.duration_since(started);
        // A usable answer streams to the client; a failure (with its retry
        // class) may be retried on another target.
        let (failed, class, outcome) = match result {
            Ok(mut resp) => {
                let status = resp.header().map_or(0, |h| h.status.as_u16());
                // A function's own failure is its answer: served as it is.
                // A function's own failure is its answer (`is_final`).
                let conclusive = is_final(&resp, status, route.operation);
                match status {
                    // An OpenAI-compatible server refused the gateway's key
                    // (the client's never goes upstream): a 502 for the
                    // client, as every platform kind answers it, not a 401
                    // that blames the client's key (and carries the
                    // backend's text about its own).
                    // With the caller's identity sent (`identity`), the
                    // refusal may be of the caller: passed on as it is.
                    401 | 403
                        if b.config.kind == BackendKind::OpenAi
                            && b.config.identity_audience.is_none() =>
                    {
                        let e = ApiError::new(
                            ErrorKind::UpstreamAuthFailed,
                            format!(
                                "backend `{}` refused the gateway's credentials ({status})",
                                b.config.name
                            ),
                        )
                        .retryable(Retry::ServerError);
                        upstream_error(&b.config.name, &e);
                        (
                            Failed::Error(e),
                            Some(Retry::ServerError),
                            Outcome::Failure { elapsed },
                        )
                    }
                    429 if !conclusive => {
                        let after = resp
                            .header()
                            .and_then(|h| h.headers.get(http::header::RETRY_AFTER))
                            .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()));
                        (
                            Failed::Response(Box::new(resp)),
                            Some(Retry::Throttled),
                            Outcome::Throttled(after),
                        )
                    }
                    500..=599 if !conclusive => (
                        Failed::Response(Box::new(resp)),
                        Some(Retry::ServerError),
                        Outcome::Failure { elapsed },
                    ),
                    _ => {
                        ctx.served = Some(Try {
                            backend: b.name.clone(),
                            outcome: "ok",
                            status: Some(status),
                            ms: ms(elapsed),
                            started,
                            span,
                        });
                        let mut attempt = attempt;
                        attempt.answered(elapsed, now);
                        ctx.first_byte = Some(now);
                        return stream(
                            state,
                            &snap.chain,
                            b,
                            &slot,
                            session,
                            ctx,
                            &mut resp,
                            attempt,
                        )
                        .await;
                    }
                }
            }
            Err(e) => {
                upstream_error(&b.config.name, &e);
                let class = e.retry;
                (Failed::Error(e), class, Outcome::Failure { elapsed })
            }
        };
        match &failed {
            // Skygate's own failure (building the request): not the backend's.
            Failed::Error(e) if e.kind.fault() != Fault::Upstream => drop(attempt),
            Failed::Error(_) => attempt.finish(outcome, now),
            Failed::Response(resp) => {
                // A failed cold start (an init that crashed) still counts.
                note_cold_start(b, ctx, resp);
                let code = if class == Some(Retry::Throttled) {
                    "http_429"
                } else {
                    "http_5xx"
                };
                count_failed(&b.config.name, code);
                attempt.finish(outcome, now);
            }
        }
        ctx.tries.push(Try {
            backend: b.name.clone(),
            outcome: match &failed {
                // The backend's adapter refused the request (a field its
                // platform cannot take): nothing was sent.
                Failed::Error(e) if e.kind.fault() == Fault::Client => "refused",
                Failed::Error(e) if e.kind == ErrorKind::UpstreamAuthFailed => "auth_failed",
                _ => class.map_or("error", Retry::as_str),
            },
            status: match &failed {
                Failed::Response(r) => r.header().map(|h| h.status.as_u16()),
                Failed::Error(_) => None,
            },
            ms: ms(elapsed),
            started,
            span,
        });
        // Retry when this failure may be retried, attempts are left, another
        // target is available (picked before the failure is given up) and
        // the route's budget allows.
        if class.is_some_and(|c| allows(route.retries.on, c))
            && ctx.attempts < route.retries.max_attempts
            && route_state.retry_allowed(now, route)
        {
            let mut picked = routing::pick(
                route,
                route_state,
                &snap.backends,
                &tried,
                allowed,
                now,
                &mut rand::thread_rng(),
            );
            // No target now, but one comes back within the route's hold:
            // wait for it rather than fail.
            while let Err(NoTarget::Unavailable {
                retry_after: Some(after),
                ..
            }) = picked
            {
                if held.is_none() {
                    held = Held::take(route, route_state, &mut hold_until);
                }
                let Some(h) = &held else { break };
                if !h.wait(state, after).await {
                    break;
                }
                picked = routing::pick(
                    route,
                    route_state,
                    &snap.backends,
                    &tried,
                    allowed,
                    Instant::now(),
                    &mut rand::thread_rng(),
                );
            }
            if picked.is_ok() {
                // Out of the hold queue: its place is for waiting requests.
                held = None;
            }
            if let Ok(c) = picked {
                if route_state.try_retry(now, route) {
                    let pause = backoff(&route.retries, ctx.attempts, &mut rand::thread_rng());
                    drop(failed);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    next = c;
                    started = Instant::now();
                    continue;
                }
                log::debug!(
                    "route `{}`: retry budget exhausted; answering with the last failure",
                    route.name
                );
            }
        }
        // No retry: the client gets this failure as it is (and the hold
        // queue its place back first).
        drop(held);
        return match failed {
            Failed::Response(mut resp) => {
                let mut done = Settle::judged();
                let (_, written) = write_response(
                    state,
                    &snap.chain,
                    b,
                    &slot,
                    session,
                    ctx,
                    &mut resp,
                    &mut done,
                )
                .await;
                written.map(|()| true)
            }
            Failed::Error(e) => respond::error(session, ctx, &snap.chain, &e).await,
        };
    }
}

/// Whether an answer can go to the client (not a 429 or a 5xx, unless the
/// function's own final answer).
fn usable(r: &Result<UpstreamResponse, ApiError>, operation: Operation) -> bool {
    match r {
        Ok(resp) => {
            let status = resp.header().map_or(0, |h| h.status.as_u16());
            is_final(resp, status, operation) || !matches!(status, 0 | 429 | 500..=599)
        }
        Err(_) => false,
    }
}

/// A function's own failure is its answer: a platform's
/// (`Synth::conclusive`), or a 500 from a function route's backend (502,
/// 503 and 504 are what gateways and hosts answer when they, not the
/// function, fail). Not retried (the function may have had effects), and
/// no failure for the breaker (one caller's input would open it for every
/// caller).
fn is_final(resp: &UpstreamResponse, status: u16, operation: Operation) -> bool {
    resp.conclusive() || (status == 500 && operation == Operation::Function)
}

/// The first usable answer of a hedged pair, and whether it was the
/// hedge's; when neither is usable, the primary's.
async fn race<F1, F2>(
    primary: &mut std::pin::Pin<&mut F1>,
    hedge: &mut std::pin::Pin<&mut F2>,
    operation: Operation,
) -> (Result<UpstreamResponse, ApiError>, bool)
where
    F1: std::future::Future<Output = Result<UpstreamResponse, ApiError>>,
    F2: std::future::Future<Output = Result<UpstreamResponse, ApiError>>,
{
    tokio::select! {
        r = primary.as_mut() => {
            if usable(&r, operation) {
                return (r, false);
            }
            let h = hedge.as_mut().await;
            if usable(&h, operation) { (h, true) } else { (r, false) }
        }
        h = hedge.as_mut() => {
            if usable(&h, operation) {
                return (h, true);
            }
            (primary.as_mut().await, false)
        }
    }
}

/// A failed attempt: the backend's own failure response, or an error.
enum Failed {
    Response(Box<UpstreamResponse>),
    Error(ApiError),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn allows(on: RetryOn, why: Retry) -> bool {
    match why {
        Retry::Connect | Retry::StaleConnection => on.connect,
        Retry::Timeout => on.timeout,
        Retry::ServerError => on.server_error,
        Retry::Throttled => on.throttled,
    }
}

/// The first attempt's target, and when it was picked. When every
/// candidate's bulkhead is full and some backend has a `queue_timeout`,
/// waits that long for a slot.
async fn first_pick<'a>(
    state: &State,
    snap: &'a Snapshot,
    route_index: usize,
    tried: &[usize],
    allowed: Option<routing::Allowed<'_>>,
    mut now: Instant,
    hold_until: &mut Option<Instant>,
) -> Result<(Chosen<'a>, Instant), ApiError> {
    let route = &snap.config.routes[route_index];
    let route_state = &snap.route_states[route_index];
    let mut deadline: Option<Instant> = None;
    let mut held: Option<Held<'_>> = None;
    loop {
        // Registered before looking, so a slot freed meanwhile still wakes us.
        let waiter = deadline.map(|_| state.registry.signal().waiter());
        if deadline.is_some() {
            now = Instant::now();
        }
        let picked = routing::pick(
            route,
            route_state,
            &snap.backends,
            tried,
            allowed,
            now,
            &mut rand::thread_rng(),
        );
        match picked {
            Ok(c) => return Ok((c, now)),
            Err(NoTarget::Full { queue_timeout }) => {
                let until =
                    *deadline.get_or_insert_with(|| now.checked_add(queue_timeout).unwrap_or(now));
                if now >= until {
                    return Err(overloaded(route));
                }
                if let Some(w) = waiter {
                    w.wait(until).await;
                }
            }
            Err(NoTarget::Unavailable { retry_after, why }) => {
                if held.is_none() && retry_after.is_some() {
                    held = Held::take(route, route_state, hold_until);
                }
                if let (Some(h), Some(after)) = (&held, retry_after) {
                    if h.wait(state, after).await {
                        now = Instant::now();
                        continue;
                    }
                }
                return Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "no backend of route `{}` is available now ({})",
                        route.name,
                        why.describe()
                    ),
                )
                .with_retry_after(retry_after.unwrap_or(Duration::from_secs(1))));
            }
        }
    }
}

/// A place in a route's hold queue (`routes.*.hold`), for a request no
/// target can take now but one will: throttled while it scales, a circuit
/// open with a known end. Bounded in count and in time.
struct Held<'a> {
    _slot: skygate_backends::routing::state::HoldSlot<'a>,
    until: Instant,
}

impl<'a> Held<'a> {
    /// A place in the route's hold queue, if it has one with room. The
    /// deadline is the request's: set at its first hold, kept by later ones.
    fn take(
        route: &Route,
        route_state: &'a RouteState,
        until: &mut Option<Instant>,
    ) -> Option<Self> {
        let h = route.hold?;
        let until = *until.get_or_insert_with(|| Instant::now() + h.timeout);
        let slot = route_state.try_hold(h.max_queued)?;
        Some(Self { _slot: slot, until })
    }

    /// Waits until a target should be back (`after`) or a slot frees,
    /// within the hold's deadline; `false` when the deadline is past or the
    /// target comes back only after it.
    async fn wait(&self, state: &State, after: Duration) -> bool {
        let now = Instant::now();
        let back = now.checked_add(after).unwrap_or(self.until);
        if now >= self.until || back > self.until {
            return false;
        }
        let waiter = state.registry.signal().waiter();
        waiter.wait(back.max(now + Duration::from_millis(5))).await;
        true
    }
}

fn overloaded(route: &Route) -> ApiError {
    ApiError::new(
        ErrorKind::Overloaded,
        format!(
            "every backend of route `{}` is at its concurrency limit",
            route.name
        ),
    )
    .with_retry_after(Duration::from_secs(1))
}

/// The caller's identity token for this backend, if it asked for one.
fn identity_for<'a>(
    snap: &'a Snapshot,
    b: &BackendRt,
    backend: usize,
    ctx: &RequestCtx,
) -> Option<(&'a http::HeaderName, http::HeaderValue)> {
    let audience = b.config.identity_audience.as_deref()?;
    let signer = snap.identity.as_ref()?;
    let id = ctx.identity.as_ref()?;
    Some((
        signer.header(),
        signer.token(&id.principal, id.method, backend, audience)?,
    ))
}

/// One attempt: the adapter's rewrite, then the upstream client, up to the
/// response header.
#[allow(clippy::too_many_arguments)] // the attempt's whole input, each distinct
async fn send(
    state: &State,
    snap: &Snapshot,
    b: &BackendRt,
    backend: usize,
    slot: &PeerSlot,
    session: &Session,
    ctx: &RequestCtx,
    routed: &Routed,
    span: u64,
) -> Result<UpstreamResponse, ApiError> {
    let (traceparent, tracestate) =
        crate::telemetry::upstream_context(ctx, &snap.config.telemetry, session.req_header(), span);
    // A backend that refuses `stream_options` (`stream_usage: false`) gets
    // the stream without it.
    let without;
    let body = if ctx.stream && !b.config.stream_usage {
        without = skygate_backends::json::without_member(&routed.body, "stream_options");
        &without
    } else {
        &routed.body
    };
    let call = Call {
        operation: routed.operation,
        method: &session.req_header().method,
        path_suffix: &routed.path_suffix,
        client: session.req_header(),
        request_id: &ctx.request_id,
        body,
        forwarded_for: ctx.forwarded_for.as_ref(),
        identity: identity_for(snap, b, backend, ctx),
        stream: ctx.stream,
        model: ctx.model.as_deref(),
        traceparent,
        tracestate,
    };
    let peer = match slot {
        Ok(r) => &r.peer,
        Err(why) => {
            return Err(ApiError::new(
                ErrorKind::UpstreamUnreachable,
                format!("backend `{}` is unreachable: {why}", b.config.name),
            )
            .retryable(Retry::Connect))
        }
    };
    state
        .upstream
        .send(&b.config, peer, || b.adapter.prepare(&b.config, &call))
        .await
}

/// Streams a successful response to the client. The attempt was judged a
/// success when its header arrived; it keeps its bulkhead slot until the
/// body ends, and a failure mid-body still counts against the breaker.
#[allow(clippy::too_many_arguments)] // the response's whole context, each distinct
async fn stream(
    state: &State,
    chain: &Chain,
    b: &BackendRt,
    slot: &PeerSlot,
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut UpstreamResponse,
    attempt: Attempt<'_>,
) -> pingora_error::Result<bool> {
    let cold_header = b.config.prewarm.cold_header.as_ref().and_then(|name| {
        resp.header()
            .and_then(|h| h.headers.get(name))
            .map(|v| matches!(v.as_bytes(), b"true" | b"1" | b"yes"))
    });
    let mut done = Settle::new(attempt, cold_header);
    let (end, written) = write_response(state, chain, b, slot, session, ctx, resp, &mut done).await;
    done.end_attempt(b, ctx, matches!(end, BodyEnd::UpstreamFailed));
    written.map(|()| true)
}

/// The attempt of a response being written to the client, until its
/// backend has sent the whole body.
struct Settle<'a> {
    attempt: Option<Attempt<'a>>,
    /// The backend's `prewarm.cold_header`, read off its response header.
    cold_header: Option<bool>,
    /// The backend's body has ended (and the connection is pooled).
    ended: bool,
    /// The cold start was noted when the attempt was judged.
    cold_noted: bool,
}

impl<'a> Settle<'a> {
    fn new(attempt: Attempt<'a>, cold_header: Option<bool>) -> Self {
        Self {
            attempt: Some(attempt),
            cold_header,
            ended: false,
            cold_noted: false,
        }
    }

    /// A failure passed on to the client: its attempt ended, and its cold
    /// start was noted, when it was judged.
    fn judged() -> Self {
        Self {
            attempt: None,
            cold_header: None,
            ended: false,
            cold_noted: true,
        }
    }

    /// The backend's body has ended (once): its cold start is noted, its
    /// connection pooled and the attempt ended, all before the client is
    /// sent the end, so that the client's next request finds them there.
    async fn body_ended(
        &mut self,
        state: &State,
        b: &BackendRt,
        slot: &PeerSlot,
        ctx: &mut RequestCtx,
        resp: &mut UpstreamResponse,
    ) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        if !self.cold_noted {
            note_cold_start(b, ctx, resp);
        }
        if let Ok(r) = slot {
            let h2 = state
                .upstream
                .release(resp, &r.peer, b.config.pool_idle_timeout);
            if let Some(h2) = h2 {
                h2.await;
            }
        }
        self.end_attempt(b, ctx, false);
    }

    /// Ends the attempt (once): what the platform said about a cold start
    /// goes to the warmth model, a body cut by the backend counts against
    /// its breaker, and the attempt's bulkhead slot and its place in the
    /// warmth model are freed. Called by [`Self::body_ended`], else when
    /// the response ends short of it (the backend failed, the client left).
    fn end_attempt(&mut self, b: &BackendRt, ctx: &RequestCtx, upstream_failed: bool) {
        let Some(mut attempt) = self.attempt.take() else {
            return;
        };
        if ctx.cold_start || self.cold_header == Some(true) {
            attempt.report_cold(true);
        } else if self.cold_header == Some(false) || reports_cold_starts(b) {
            attempt.report_cold(false);
        }
        if upstream_failed {
            let failed = Outcome::Failure {
                elapsed: Duration::ZERO,
            };
            attempt.finish(failed, Instant::now());
        }
    }
}

/// How a response body ended.
enum BodyEnd {
    Complete,
    /// The backend failed after the first byte: an SSE stream got an error
    /// event; any other body is cut (`Err`), so the client never takes a
    /// partial answer for a whole one.
    UpstreamFailed,
    ClientGone,
    /// The drain's grace period ran out mid-body (`State::cutoff`): not
    /// the backend's failure.
    Cut,
}

const X_SKYGATE_BACKEND: http::HeaderName = http::HeaderName::from_static("x-skygate-backend");

/// Writes a backend's response to the client, header then body. The
/// response is borrowed, not moved: moved down through `stream` into here,
/// each future along the way would hold a copy of it. `done` ends the
/// attempt once the backend's body has ended, before the client's end.
#[allow(clippy::too_many_arguments)] // the response's whole context, each distinct
async fn write_response(
    state: &State,
    chain: &Chain,
    b: &BackendRt,
    slot: &PeerSlot,
    session: &mut Session,
    ctx: &mut RequestCtx,
    resp: &mut UpstreamResponse,
    done: &mut Settle<'_>,
) -> (BodyEnd, pingora_error::Result<()>) {
    if ctx.first_byte.is_none() {
        ctx.first_byte = Some(Instant::now());
    }
    let Some(mut header) = resp.take_header() else {
        let e = ApiError::new(
            ErrorKind::UpstreamFailed,
            format!("backend `{}` sent no response header", b.config.name),
        );
        let written = respond::error(session, ctx, chain, &e).await.map(|_| ());
        return (BodyEnd::UpstreamFailed, written);
    };
    b.adapter.response_header(&mut header);
    if let Some(f) = ctx.cache_fill.as_mut() {
        f.response_header(&header);
    }
    let sse = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // The usage chunk the gateway asked for is left out of the client's
    // stream, so the body's length is no longer the backend's.
    let mut strip = (ctx.strip_usage_chunk && sse).then(StripUsage::default);
    // A backend's own reason phrase (Pingora keeps one only when it is not
    // the status's standard one) goes on to the client.
    let reason = header
        .get_reason_phrase()
        .filter(|r| Some(*r) != header.status.canonical_reason())
        .map(str::to_owned);
    let mut header = respond::no_case(header);
    if strip.is_some() {
        header.headers.remove(http::header::CONTENT_LENGTH);
    }
    let count_events = sse && ctx.limits.is_some();
    frame_for_client(&mut header, session);
    ctx.status = header.status.as_u16();
    if let Err(e) = respond::common_headers(&mut header.headers, ctx, chain) {
        return (BodyEnd::ClientGone, Err(e));
    }
    header
        .headers
        .insert(X_SKYGATE_BACKEND, b.name_header.clone());
    let mut header = Box::new(ResponseHeader::from(header));
    if let Some(r) = reason {
        let _ = header.set_reason_phrase(Some(&r));
    }
    if let Err(e) = session.write_response_header(header).await {
        ctx.error = Some(client_gone(&e));
        return (BodyEnd::ClientGone, Err(e));
    }

    let mut tail = UsageTail::default();
    let end = loop {
        match resp.next_chunk().await {
            Ok(Some(chunk)) => {
                let chunk = b.adapter.response_chunk(chunk);
                tail.push(&chunk);
                // Captured as the backend sent it (with its usage chunk).
                if let Some(f) = ctx.cache_fill.as_mut() {
                    f.push(&chunk);
                }
                let chunk = match &mut strip {
                    Some(f) => f.filter(chunk),
                    None => chunk,
                };
                if count_events {
                    ctx.stream_events += skygate_backends::usage::count_events(&chunk);
                }
                if chunk.is_empty() {
                    continue;
                }
                ctx.response_bytes += chunk.len() as u64;
                // The backend's last chunk (when known as such): end its
                // part first.
                if resp.body_done() {
                    done.body_ended(state, b, slot, ctx, resp).await;
                }
                if let Err(e) = session.write_response_body(chunk, false).await {
                    ctx.error = Some(client_gone(&e));
                    return (BodyEnd::ClientGone, Err(e));
                }
                // (Once the backend's body has ended, it goes out whole.)
                if !done.ended && state.cutoff.load(std::sync::atomic::Ordering::Relaxed) {
                    return cut_short(session, ctx, sse).await;
                }
            }
            Ok(None) => {
                done.body_ended(state, b, slot, ctx, resp).await;
                if let Some(f) = ctx.cache_fill.as_mut() {
                    f.complete();
                }
                if let Some(rest) = strip.as_mut().and_then(StripUsage::finish) {
                    ctx.response_bytes += rest.len() as u64;
                    if let Err(e) = session.write_response_body(rest, false).await {
                        ctx.error = Some(client_gone(&e));
                        return (BodyEnd::ClientGone, Err(e));
                    }
                }
                if let Err(e) = session.write_response_body(bytes::Bytes::new(), true).await {
                    ctx.error = Some(client_gone(&e));
                    return (BodyEnd::Complete, Err(e));
                }
                break BodyEnd::Complete;
            }
            Err(e) => {
                note_cold_start(b, ctx, resp);
                upstream_error(&b.config.name, &e);
                ctx.error = Some(e.kind.code());
                if let Some(t) = ctx.served.as_mut() {
                    t.outcome = "error";
                }
                if !sse {
                    return (
                        BodyEnd::UpstreamFailed,
                        Err(pingora_error::Error::explain(
                            pingora_error::ErrorType::ReadError,
                            e.to_string(),
                        )),
                    );
                }
                // A stream that fails after its first byte ends with an
                // error event, never a silent cut.
                let event = e.sse_event();
                ctx.response_bytes += event.len() as u64;
                if let Err(e) = session.write_response_body(event, true).await {
                    return (BodyEnd::UpstreamFailed, Err(e));
                }
                break BodyEnd::UpstreamFailed;
            }
        }
    };
    // A response that failed mid-way is dropped with its connection by the
    // caller (it owns `resp`), before it awaits anything else.
    if let Some(u) = tail.usage() {
        ctx.prompt_tokens = u.prompt_tokens;
        ctx.completion_tokens = u.completion_tokens;
    }
    if ctx.trace.as_ref().is_some_and(|t| t.sampled) {
        ctx.response_model = tail.model();
    }
    (end, Ok(()))
}

/// The drain's grace period is over and this body is still coming: a
/// stream ends with an error event (a client can tell it from a whole
/// answer and ask again), any other body is cut (the connection closes).
/// Either way the request ends here, so it is logged before the exit.
async fn cut_short(
    session: &mut Session,
    ctx: &mut RequestCtx,
    sse: bool,
) -> (BodyEnd, pingora_error::Result<()>) {
    ctx.error = Some("shutdown");
    if !sse {
        let e = pingora_error::Error::explain(
            pingora_error::ErrorType::ConnectionClosed,
            "the gateway is shutting down",
        )
        .into_down();
        return (BodyEnd::Cut, Err(e));
    }
    let event = ApiError::new(
        ErrorKind::Unavailable,
        "the gateway is shutting down and its grace period is over: ask again",
    )
    .sse_event();
    ctx.response_bytes += event.len() as u64;
    let written = session.write_response_body(event, true).await;
    (BodyEnd::Cut, written)
}

/// Whether the backend's platform says when an answer cold-started (Lambda
/// with its log tail), so no report means warm.
fn reports_cold_starts(b: &BackendRt) -> bool {
    matches!(&b.config.platform, skygate_config::Platform::Lambda(l) if l.log_tail)
}

/// Records a cold start the backend's platform reported for this answer.
fn note_cold_start(b: &BackendRt, ctx: &mut RequestCtx, resp: &UpstreamResponse) {
    if !resp.cold_start() {
        return;
    }
    ctx.cold_start = true;
    b.state.record_cold_start(SystemTime::now());
    if let Some(m) = crate::metrics::get() {
        m.cold_starts.with_label_values(&[&b.name]).inc();
    }
}

/// A response with neither `content-length` nor chunked framing (an HTTP/2
/// backend's, or a close-delimited HTTP/1 one) goes to an HTTP/1.1 client
/// chunked: a body cut mid-way then lacks its last chunk, and the client
/// sees the cut instead of taking what came for the whole answer.
///
/// A 204 goes without `content-length` or `transfer-encoding`, whatever
/// the backend said (RFC 9110 §8.6, RFC 9112 §6.1: it has no body, and a
/// client that trusts a length on it would wait for bytes that never come).
fn frame_for_client(header: &mut http::response::Parts, session: &Session) {
    let req = session.req_header();
    frame(header, &req.method, req.version);
}

fn frame(header: &mut http::response::Parts, method: &http::Method, version: http::Version) {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    if header.status == http::StatusCode::NO_CONTENT {
        header.headers.remove(CONTENT_LENGTH);
        header.headers.remove(TRANSFER_ENCODING);
        return;
    }
    // The common case (a length or chunks) returns at the first lookup.
    if header.headers.contains_key(CONTENT_LENGTH) || header.headers.contains_key(TRANSFER_ENCODING)
    {
        return;
    }
    let no_body =
        matches!(header.status.as_u16(), 100..=199 | 304) || *method == http::Method::HEAD;
    if no_body || version != http::Version::HTTP_11 {
        return;
    }
    header
        .headers
        .insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
}

/// Counts a failed attempt. The access log (written off the request path)
/// carries each attempt's outcome; a `warn!` here would be a blocking
/// stderr write on every request of a backend outage, so it is `debug!`.
fn upstream_error(backend: &str, e: &ApiError) {
    count_failed(backend, e.kind.code());
    log::debug!("{e}");
}

/// `skygate_upstream_errors_total{backend,code}`: every failed attempt, by
/// Skygate's error code or `http_5xx` / `http_429` for the backend's own.
fn count_failed(backend: &str, code: &str) {
    if let Some(m) = crate::metrics::get() {
        m.upstream_errors.with_label_values(&[backend, code]).inc();
    }
}

/// The access log's `error` for a failed write to the client: it stopped
/// reading for longer than `server.timeouts.write`, or it went away.
fn client_gone(e: &pingora_error::Error) -> &'static str {
    if e.etype() == &pingora_error::ErrorType::WriteTimedout {
        "client_write_timeout"
    } else {
        "client_closed"
    }
}

#[cfg(test)]
mod tests {
    use super::frame;
    use http::{Method, Version};

    fn framed(
        status: u16,
        headers: &[(&str, &str)],
        method: Method,
        version: Version,
    ) -> Vec<String> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        frame(&mut parts, &method, version);
        let mut out: Vec<String> = parts
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        out.sort();
        out
    }

    /// What the client is told of the body's framing.
    #[test]
    fn the_clients_framing() {
        let (get, head, v11, v10) = (
            Method::GET,
            Method::HEAD,
            Version::HTTP_11,
            Version::HTTP_10,
        );
        // A length or chunks from the backend stand.
        assert_eq!(
            framed(200, &[("content-length", "5")], get.clone(), v11),
            ["content-length: 5"]
        );
        assert_eq!(
            framed(200, &[("transfer-encoding", "chunked")], get.clone(), v11),
            ["transfer-encoding: chunked"]
        );
        // Neither: chunked to an HTTP/1.1 client, unless there is no body.
        assert_eq!(
            framed(200, &[], get.clone(), v11),
            ["transfer-encoding: chunked"]
        );
        assert!(framed(200, &[], get.clone(), v10).is_empty());
        assert!(framed(200, &[], head, v11).is_empty());
        assert!(framed(304, &[], get.clone(), v11).is_empty());
        // A 204 never carries either.
        for h in [
            &[("content-length", "12")][..],
            &[("transfer-encoding", "chunked")],
            &[],
        ] {
            assert!(framed(204, h, get.clone(), v11).is_empty(), "{h:?}");
        }
        let kept = framed(204, &[("x-a", "1"), ("content-length", "3")], get, v11);
        assert_eq!(kept, ["x-a: 1"]);
    }
}
