//! The policy in virtual time: a small driver runs a planner against the
//! simulator's platform model, exactly, in milliseconds of a clock that
//! only moves when the test says.

use super::*;
use crate::sim::model::{Placement, Pool, SimSettings};
use skygate_config::{Prewarm, PrewarmMode, Schedule, Window};
use std::time::{Duration, Instant};

const T: Millis = 600_000;
const D: Millis = 8_000;
const MIN: Millis = 60_000;
const HOUR: Millis = 60 * MIN;
/// Monday 2026-01-05 00:00 UTC.
const EPOCH: Millis = 1_767_571_200_000;

fn conf(mode: PrewarmMode) -> Prewarm {
    Prewarm {
        mode,
        idle_timeout: Some(Duration::from_millis(T)),
        cold_start: Duration::from_millis(D),
        interval: Duration::from_millis(9 * MIN),
        concurrency: if mode == PrewarmMode::Adaptive { 4 } else { 1 },
        ..Prewarm::default()
    }
}

/// What a run saw.
#[derive(Debug, Default)]
struct Seen {
    /// Ping times (ms after the start) and how many at once.
    pings: Vec<(Millis, u32)>,
    /// User requests, and those that cold-started on the platform.
    users: u32,
    cold: u32,
}

impl Seen {
    fn pings_between(&self, from: Millis, to: Millis) -> u32 {
        self.pings
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Runs `planner` until `end` (ms after [`EPOCH`]) with user requests at
/// `arrivals`, against the platform model. Pings hold 75 ms; requests take
/// 300 ms; the platform reports cold starts (as Lambda's log tail does)
/// when `reports`.
fn drive(planner: &mut Planner, arrivals: &[Millis], end: Millis, reports: bool) -> Seen {
    let settings = SimSettings {
        cold_start_ms: D,
        idle_timeout_ms: T,
        concurrency: 1,
        max_instances: 1000,
        ..SimSettings::default()
    };
    let base = Instant::now();
    let at = |t: Millis| base + Duration::from_millis(t);
    let mut pool = Pool::default();
    let mut seen = Seen::default();
    // (end time, instance, ticket, user, cold)
    let mut open: Vec<(Millis, u64, Ticket, bool, bool)> = Vec::new();
    let mut next_plan = 0;
    let mut i = 0;
    let mut t = 0;
    while t < end {
        // The next event: an arrival, an end, or the planner's time.
        let next_end = open.iter().map(|o| o.0).min().unwrap_or(Millis::MAX);
        let next_arrival = arrivals.get(i).copied().unwrap_or(Millis::MAX);
        t = next_end.min(next_arrival).min(next_plan).min(end);
        if t == end {
            break;
        }
        if t == next_end {
            let k = open.iter().position(|o| o.0 == t).unwrap();
            let (_, id, ticket, user, cold) = open.swap_remove(k);
            pool.release(id, at(t));
            let said = reports.then_some(cold);
            if user {
                planner.user_end(ticket, None, EPOCH + t, said);
            } else {
                planner.ping_end(ticket, EPOCH + t, true, said);
            }
            next_plan = t;
            continue;
        }
        if t == next_arrival {
            i += 1;
            let ticket = planner.user_start(EPOCH + t);
            let Placement::Run { id, wait, cold } = pool.place(&settings, at(t)) else {
                panic!("throttled");
            };
            seen.users += 1;
            seen.cold += u32::from(cold);
            open.push((t + wait.as_millis() as Millis + 300, id, ticket, true, cold));
            continue;
        }
        let plan = planner.plan(EPOCH + t);
        if plan.pings > 0 {
            seen.pings.push((t, plan.pings));
        }
        for _ in 0..plan.pings {
            let ticket = planner.ping_start(EPOCH + t);
            let Placement::Run { id, wait, cold } = pool.place(&settings, at(t)) else {
                panic!("throttled");
            };
            open.push((t + wait.as_millis() as Millis + 75, id, ticket, false, cold));
        }
        next_plan = plan.next.saturating_sub(EPOCH).max(t + 1);
    }
    seen
}

#[test]
fn off_sends_nothing_but_an_operator_ask() {
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    let seen = drive(&mut p, &[], HOUR, true);
    assert!(seen.pings.is_empty());
    p.want(3, Why::OnDemand, EPOCH + HOUR);
    let plan = p.plan(EPOCH + HOUR);
    assert_eq!((plan.pings, plan.why), (3, Why::OnDemand));
}

#[test]
fn fixed_pings_every_interval_and_skips_rounds_traffic_covers() {
    let mut c = conf(PrewarmMode::Fixed);
    c.concurrency = 2;
    let mut p = Planner::new(&c, EPOCH);
    // No traffic: 2 pings at start-up, then 2 a round (9 min) for an hour.
    let seen = drive(&mut p, &[], HOUR, true);
    assert_eq!(seen.pings.first(), Some(&(0, 2)));
    let rounds: Vec<Millis> = seen.pings.iter().skip(1).map(|(t, _)| *t).collect();
    assert_eq!(rounds.len(), 6, "{rounds:?}");
    assert!(
        rounds.windows(2).all(|w| w[1] - w[0] == 9 * MIN),
        "{rounds:?}"
    );
    assert!(seen.pings.iter().all(|(_, n)| *n == 2));

    // Two requests at once every 30 s keep both instances warm: no pings
    // after the start-up round.
    let mut p = Planner::new(&c, EPOCH);
    let arrivals: Vec<Millis> = (0..240).flat_map(|k| [k * 30_000 + 1; 2]).collect();
    let seen = drive(&mut p, &arrivals, 2 * HOUR, true);
    assert_eq!(seen.pings_between(1, 2 * HOUR), 0, "{:?}", seen.pings);
}

#[test]
fn adaptive_learns_a_timer_and_pings_once_before_each_arrival() {
    let mut p = Planner::new(&conf(PrewarmMode::Adaptive), EPOCH);
    // A job every 60 minutes (± 20 s) for two days.
    let arrivals: Vec<Millis> = (1..48)
        .map(|k| k * HOUR + [0, 20_000, 40_000][(k % 3) as usize] - 20_000)
        .collect();
    let seen = drive(&mut p, &arrivals, 48 * HOUR, true);
    // The second day: one ping for each arrival (pings come a minute or two
    // before theirs).
    let day2: Vec<Millis> = arrivals
        .iter()
        .copied()
        .filter(|&t| t >= 24 * HOUR - MIN)
        .collect();
    let pings = seen.pings_between(24 * HOUR - 5 * MIN, 47 * HOUR + 30 * MIN);
    assert_eq!(pings as usize, day2.len(), "{:?}", seen.pings);
    // Each comes after the previous instance went cold, early enough to
    // finish a cold start before its arrival.
    for &a in &day2 {
        assert!(
            seen.pings
                .iter()
                .any(|&(t, _)| t < a && a - t <= 3 * MIN && a - t > D),
            "no ping just before {a}: {:?}",
            seen.pings
        );
    }
    let mut q = Planner::new(&conf(PrewarmMode::Adaptive), EPOCH);
    let all = drive(&mut q, &arrivals, 48 * HOUR, true);
    // Cold starts only while it learns (the first few arrivals).
    assert!(all.cold <= 3, "{} cold of {}", all.cold, all.users);
}

#[test]
fn adaptive_sends_nothing_under_steady_traffic() {
    let mut p = Planner::new(&conf(PrewarmMode::Adaptive), EPOCH);
    // A request every 10 s for two days: traffic keeps the instance warm.
    let arrivals: Vec<Millis> = (1..(2 * 24 * 360)).map(|k| k * 10_000).collect();
    let seen = drive(&mut p, &arrivals, 48 * HOUR, true);
    assert_eq!(seen.pings_between(MIN, 48 * HOUR), 0, "{:?}", seen.pings);
    // The start-up ping warmed the one instance the traffic needs.
    assert_eq!(seen.cold, 0);
}

#[test]
fn min_warm_keeps_instances_warm_without_traffic() {
    let mut c = conf(PrewarmMode::Adaptive);
    c.min_warm = 2;
    let mut p = Planner::new(&c, EPOCH);
    let seen = drive(&mut p, &[], 3 * HOUR, true);
    // Refreshed before the idle timeout, two at a time.
    assert!(seen.pings.iter().all(|(_, n)| *n == 2), "{:?}", seen.pings);
    let times: Vec<Millis> = seen.pings.iter().map(|(t, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] < T), "{times:?}");
    assert!(times.len() >= 3 * 60 / 10, "{times:?}");
    assert_eq!(p.view(EPOCH + 3 * HOUR).warm_instances, 2);
}

#[test]
fn a_schedule_confines_pings_to_its_windows() {
    let mut c = conf(PrewarmMode::Fixed);
    c.schedule = Some(Schedule::utc(vec![Window {
        days: 0x1f,
        from_min: 8 * 60,
        to_min: 10 * 60,
    }]));
    let mut p = Planner::new(&c, EPOCH);
    let seen = drive(&mut p, &[], 24 * HOUR, true);
    assert!(!seen.pings.is_empty());
    assert!(
        seen.pings
            .iter()
            .all(|(t, _)| (8 * HOUR..10 * HOUR).contains(t)),
        "{:?}",
        seen.pings
    );
    // The first ping opens the window.
    assert_eq!(seen.pings[0].0, 8 * HOUR);
}

#[test]
fn a_daily_budget_stops_pings_until_the_next_day() {
    let mut c = conf(PrewarmMode::Fixed);
    c.daily_budget = Some(5);
    let mut p = Planner::new(&c, EPOCH);
    let seen = drive(&mut p, &[], 36 * HOUR, true);
    assert_eq!(seen.pings_between(0, 24 * HOUR), 5);
    assert_eq!(seen.pings_between(24 * HOUR, 36 * HOUR), 5);
    assert_eq!(p.view(EPOCH + 36 * HOUR).pings_today, 5);
}

#[test]
fn a_router_ask_waits_for_a_starting_instance() {
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    assert!(p.likely_cold(EPOCH));
    p.want(1, Why::ColdRoute, EPOCH);
    assert_eq!(p.plan(EPOCH).pings, 1);
    let ticket = p.ping_start(EPOCH);
    // While that ping's instance cold-starts, more asks are moot.
    p.want(1, Why::ColdRoute, EPOCH + 100);
    assert_eq!(p.plan(EPOCH + 100).pings, 0);
    p.ping_end(ticket, EPOCH + D + 75, true, Some(true));
    assert!(!p.likely_cold(EPOCH + D + 100));
    let v = p.view(EPOCH + D + 100);
    assert_eq!((v.warm_instances, v.pings_cold), (1, 1));
}

#[test]
fn a_latency_outlier_reads_as_a_cold_start_when_the_platform_says_nothing() {
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    let mut t = EPOCH;
    for _ in 0..20 {
        let k = p.user_start(t);
        assert!(!p.user_end(k, Some(t + 200), t + 300, None));
        t += 1_000;
    }
    // Idle past the timeout, then a slow answer: cold.
    t += T + 1;
    let k = p.user_start(t);
    assert!(k.expected_cold);
    assert!(p.user_end(k, Some(t + 6_000), t + 6_100, None));
    let v = p.view(t + 7_000);
    assert_eq!(v.user_cold_starts, 1);
    assert!(v.warm_latency_ms.is_some_and(|w| w <= 300));
}

#[test]
fn a_peer_replicas_ping_counts_as_warmth_not_as_a_ping() {
    let mut p = Planner::new(&conf(PrewarmMode::Fixed), EPOCH);
    p.peer_pinged(1, EPOCH);
    let v = p.view(EPOCH + 1);
    assert_eq!((v.warm_instances, v.pings_sent, v.peer_pings), (1, 0, 1));
}

#[test]
fn instances_that_serve_many_requests_take_enough_pings_to_reach_k() {
    // Cloud Run-like: 80 requests an instance. Two instances warm takes 81
    // concurrent pings (the platform packs the first 80 on one).
    let mut c = conf(PrewarmMode::Fixed);
    c.instance_concurrency = 80;
    c.concurrency = 2;
    let mut p = Planner::new(&c, EPOCH);
    let plan = p.plan(EPOCH);
    assert_eq!((plan.pings, plan.why), (81, Why::StartUp));
    let tickets: Vec<Ticket> = (0..plan.pings).map(|_| p.ping_start(EPOCH)).collect();
    for t in tickets {
        p.ping_end(t, EPOCH + D, true, Some(true));
    }
    assert_eq!(p.view(EPOCH + D).warm_instances, 2);
    // One instance for min_warm: one ping.
    let mut c = conf(PrewarmMode::Adaptive);
    c.instance_concurrency = 80;
    c.min_warm = 1;
    let mut p = Planner::new(&c, EPOCH);
    assert_eq!(p.plan(EPOCH).pings, 1);
}

#[test]
fn an_abandoned_request_frees_its_place_and_teaches_nothing() {
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    let t = p.user_start(EPOCH);
    assert!(t.expected_cold);
    // Cancelled (a hedge won) before any answer: the instance is still
    // starting, not warm, and nothing was learned about latency.
    let _ = p.abandon(t, EPOCH + 100, true);
    let v = p.view(EPOCH + 100);
    assert_eq!((v.warm_instances, v.user_cold_starts), (0, 0));
    assert_eq!(v.warm_latency_ms, None);
    assert!(p.likely_cold(EPOCH + 100));
    // The platform went on with the cold start: the instance is warm once
    // it would be ready, and takes the next request.
    assert!(!p.likely_cold(EPOCH + D + 1));
    // A failed ping counts as failed, and warms nothing.
    let mut q = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    q.want(1, Why::OnDemand, EPOCH);
    assert_eq!(q.plan(EPOCH).pings, 1);
    let t = q.ping_start(EPOCH);
    q.ping_end(t, EPOCH + 50, false, None);
    let v = q.view(EPOCH + 50);
    assert_eq!((v.pings_failed, v.pings_cold), (1, 0));
    // No instance is assumed to have started for it.
    assert_eq!(q.view(EPOCH + D + 1).warm_instances, 0);
    assert!(q.likely_cold(EPOCH + D + 1));
    assert_eq!(v.last_ping.map(|(_, w)| w), Some(Why::OnDemand));
}

#[test]
fn an_operators_ask_keeps_its_standing_over_a_pending_one() {
    let mut c = conf(PrewarmMode::Fixed);
    c.daily_budget = Some(1);
    let mut p = Planner::new(&c, EPOCH);
    // The start-up round spends the day's budget...
    assert_eq!(p.plan(EPOCH).pings, 1);
    let t = p.ping_start(EPOCH);
    p.ping_end(t, EPOCH + 5, true, Some(false));
    assert_eq!(p.view(EPOCH + 5).pings_today, 1);
    // ...so a router's ask waits for tomorrow...
    p.want(1, Why::ColdRoute, EPOCH + 10);
    let mut q = p.clone();
    assert_eq!(q.plan(EPOCH + 10).pings, 0);
    // ...but an operator's ask merged with it still goes out.
    p.want(1, Why::OnDemand, EPOCH + 10);
    let plan = p.plan(EPOCH + 10);
    assert_eq!((plan.pings, plan.why), (1, Why::OnDemand));
}

#[test]
fn a_ping_never_sent_is_no_ping_and_no_failure() {
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    p.want(1, Why::ColdRoute, EPOCH);
    let ticket = p.ping_start(EPOCH);
    // No credentials yet: its place is given back, nothing counted.
    assert!(p.ping_unsent(ticket, EPOCH + 1));
    assert_eq!(p.round_end(0, 1), 1);
    let v = p.view(EPOCH + 2);
    assert_eq!((v.pings_sent, v.pings_failed, v.pings_today), (0, 0, 0));
    assert_eq!((v.pings_unsent, v.unsent_rounds), (1, 1));
    assert!(p.likely_cold(EPOCH + 2));
    assert_eq!(p.plan(EPOCH + 2).pings, 1, "still wanted");
    // Rounds in a row of which none was sent (not pings: a round of four
    // unsent is one), until a round sends one, whatever its answer.
    assert_eq!(p.round_end(0, 4), 2);
    assert_eq!(p.round_end(1, 3), 0);
    assert_eq!(p.round_end(0, 1), 1);
    // A ticket from before a reload is not counted.
    let stale = p.ping_start(EPOCH + 3);
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    assert!(!p.ping_unsent(stale, EPOCH + 4));
    assert_eq!(p.view(EPOCH + 4).pings_unsent, 0);

    // On a warm instance: it is not taken for used (its idle clock runs on).
    let mut p = Planner::new(&conf(PrewarmMode::Off), EPOCH);
    let t = p.ping_start(EPOCH);
    p.ping_end(t, EPOCH + D, true, Some(true));
    assert!(!p.likely_cold(EPOCH + D + 1));
    let idle = conf(PrewarmMode::Off).idle_timeout.unwrap().as_millis() as u64;
    let late = EPOCH + D + idle - 10;
    let t = p.ping_start(late);
    p.ping_unsent(t, late);
    assert!(
        p.likely_cold(EPOCH + D + idle + 10),
        "an unsent ping kept the instance warm"
    );
}
