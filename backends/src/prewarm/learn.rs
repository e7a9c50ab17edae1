//! What the adaptive policy learns from a backend's real traffic: the idle
//! gaps between bursts, how many requests arrive at once when a burst
//! starts, and, for each hour of the week, how much of the time traffic
//! alone kept an instance warm. Pings are not traffic and teach nothing.

use super::Millis;
use std::collections::VecDeque;

/// Pseudo-gaps of the fitted tail in [`Learner::arrival_chance`].
const TAIL_PRIOR: f64 = 50.0;
/// Gaps kept (the most recent).
const GAPS: usize = 512;
/// Burst sizes kept (the most recent).
const BURSTS: usize = 64;
const HOUR: Millis = 3_600_000;
const WEEK_HOURS: usize = 168;
/// Each week's hour weighs this much less than the one after it.
const WEEKLY_DECAY: f64 = 0.5;
/// An hour of the week is active when traffic alone kept an instance warm
/// this much of the time...
const ACTIVE_COVERAGE: f64 = 0.9;
/// ...over at least this much observed time (decayed), in ms.
const ACTIVE_MIN_OBSERVED: f64 = 1_800_000.0;

#[derive(Debug, Clone, Copy, Default)]
struct HourStats {
    observed: f64,
    covered: f64,
}

#[derive(Debug, Clone)]
pub struct Learner {
    /// Idle gaps (from the end of a burst's last request to the start of
    /// the next burst), in arrival order and sorted.
    gaps: VecDeque<Millis>,
    sorted: Vec<Millis>,
    bursts: VecDeque<u32>,
    /// Per burst: the requests that arrived within the quiet time of its
    /// start (all of them cold-start when no instance is warm).
    early: VecDeque<u32>,
    burst_early: u32,
    quiet: Millis,
    in_flight: u32,
    last_end: Option<Millis>,
    burst_start: Option<Millis>,
    burst_peak: u32,
    week: Vec<HourStats>,
    /// Time accounted into `week` so far.
    accounted: Option<Millis>,
    /// Traffic alone keeps an instance warm until then.
    covered_until: Millis,
}

impl Default for Learner {
    fn default() -> Self {
        Self {
            gaps: VecDeque::new(),
            sorted: Vec::new(),
            bursts: VecDeque::new(),
            early: VecDeque::new(),
            burst_early: 0,
            quiet: 1_000,
            in_flight: 0,
            last_end: None,
            burst_start: None,
            burst_peak: 0,
            week: vec![HourStats::default(); WEEK_HOURS],
            accounted: None,
            covered_until: 0,
        }
    }
}

/// Hour of the week (0 = Monday 00:00 UTC) of a Unix time in ms.
pub fn hour_of_week(t: Millis) -> usize {
    // 1970-01-01 was a Thursday: three days after a Monday.
    ((t / HOUR + 72) % WEEK_HOURS as u64) as usize
}

impl Learner {
    /// A user request started at `now`. `quiet`: the idle time after which
    /// an arrival starts a new burst; `idle`: the platform's idle timeout.
    pub fn start(&mut self, now: Millis, quiet: Millis, idle: Millis) {
        // A burst's size is the most requests in flight this soon after it
        // starts: 1 s for a 10-minute idle timeout.
        let burst_window = (idle / 600).max(1);
        self.account(now);
        let new_burst =
            self.in_flight == 0 && self.last_end.is_none_or(|e| now.saturating_sub(e) >= quiet);
        if new_burst {
            self.close_burst();
            if let Some(e) = self.last_end {
                self.push_gap(now.saturating_sub(e));
            }
            self.burst_start = Some(now);
            self.burst_peak = 1;
            self.burst_early = 1;
            self.quiet = quiet;
        } else if let Some(s) = self.burst_start {
            let since = now.saturating_sub(s);
            if since <= burst_window {
                self.burst_peak = self.burst_peak.max(self.in_flight + 1);
            }
            if since <= self.quiet {
                self.burst_early += 1;
            }
        }
        self.in_flight += 1;
        self.covered_until = self.covered_until.max(now + idle);
    }

    /// A user request ended at `now`.
    pub fn end(&mut self, now: Millis, idle: Millis) {
        self.account(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_end = Some(self.last_end.map_or(now, |e| e.max(now)));
        self.covered_until = self.covered_until.max(now + idle);
    }

    fn close_burst(&mut self) {
        if self.burst_start.take().is_some() {
            if self.bursts.len() == BURSTS {
                self.bursts.pop_front();
                self.early.pop_front();
            }
            self.bursts.push_back(self.burst_peak.max(1));
            self.early.push_back(self.burst_early.max(1));
        }
    }

    fn push_gap(&mut self, g: Millis) {
        if self.gaps.len() == GAPS {
            if let Some(old) = self.gaps.pop_front() {
                if let Ok(k) = self.sorted.binary_search(&old) {
                    self.sorted.remove(k);
                }
            }
        }
        self.gaps.push_back(g);
        let k = self.sorted.partition_point(|&x| x < g);
        self.sorted.insert(k, g);
    }

    /// Adds the time since the last event to its hours of the week.
    fn account(&mut self, now: Millis) {
        let Some(mut t) = self.accounted else {
            self.accounted = Some(now);
            return;
        };
        // Nothing older than a week matters (and a clock jump is not a
        // reason to loop).
        if now.saturating_sub(t) > 8 * 24 * HOUR {
            t = now - 7 * 24 * HOUR;
            t -= t % HOUR;
        }
        while t < now {
            let hour_end = (t / HOUR + 1) * HOUR;
            let e = hour_end.min(now);
            let h = &mut self.week[hour_of_week(t)];
            if t % HOUR == 0 {
                h.observed *= WEEKLY_DECAY;
                h.covered *= WEEKLY_DECAY;
            }
            h.observed += (e - t) as f64;
            h.covered += (self.covered_until.min(e).saturating_sub(t)) as f64;
            t = e;
        }
        self.accounted = Some(now);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// When the last user request ended.
    pub fn last_end(&self) -> Option<Millis> {
        self.last_end
    }

    pub fn gaps_seen(&self) -> usize {
        self.gaps.len()
    }

    /// P(the next burst starts within `(lo, hi]` of the last request's end
    /// | none started by `after`), from the gaps seen; one pseudo-gap longer
    /// than any stands for "maybe never".
    pub fn gap_mass(&self, after: Millis, lo: Millis, hi: Millis) -> f64 {
        let beyond = self.sorted.len() - self.sorted.partition_point(|&g| g <= after);
        if beyond == 0 {
            return 0.0;
        }
        let lo = lo.max(after);
        let inside =
            self.sorted.partition_point(|&g| g <= hi) - self.sorted.partition_point(|&g| g <= lo);
        inside as f64 / (beyond as f64 + 1.0)
    }

    /// P(the next burst starts within `(lo, hi]` of the last request's end
    /// | none started by `after`), smoothed: the gaps seen, blended with
    /// [`TAIL_PRIOR`] pseudo-gaps that follow an exponential tail fitted to
    /// the gaps longer than `after` (so a sparse tail does not read as a
    /// certainty, and a dense one speaks for itself).
    pub fn arrival_chance(&self, after: Millis, lo: Millis, hi: Millis) -> f64 {
        let first = self.sorted.partition_point(|&g| g <= after);
        let tail = &self.sorted[first..];
        if tail.is_empty() || hi <= lo {
            return 0.0;
        }
        let lo = lo.max(after);
        let inside =
            (tail.partition_point(|&g| g <= hi) - tail.partition_point(|&g| g <= lo)) as f64;
        let n = tail.len() as f64;
        let waited: f64 = tail.iter().map(|&g| (g - after) as f64).sum();
        let mean = waited / n;
        let rate = 1.0 / mean.max(1.0);
        let survive = |t: Millis| (-rate * t.saturating_sub(after) as f64).exp();
        let fitted = survive(lo) - survive(hi);
        // The fitted tail weighs as much as the gaps look exponential:
        // fully for memoryless or heavier tails (coefficient of variation
        // 1 or more), hardly at all for a timer's tightly bunched gaps.
        let var = tail
            .iter()
            .map(|&g| ((g - after) as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let cv2 = if mean > 0.0 { var / (mean * mean) } else { 0.0 };
        let prior = TAIL_PRIOR * cv2.min(1.0);
        (inside + prior * fitted) / (n + prior)
    }

    /// The gap by which a fraction `eps` of the gaps longer than `after`
    /// have ended; `None` if no gap was that long.
    pub fn gap_quantile(&self, after: Millis, eps: f64) -> Option<Millis> {
        let first = self.sorted.partition_point(|&g| g <= after);
        let beyond = self.sorted.len() - first;
        if beyond == 0 {
            return None;
        }
        let k = ((eps * beyond as f64).floor() as usize).min(beyond - 1);
        Some(self.sorted[first + k])
    }

    /// P(a burst brings at least `i` requests at once).
    pub fn burst_at_least(&self, i: u32) -> f64 {
        if self.bursts.is_empty() {
            return if i <= 1 { 1.0 } else { 0.0 };
        }
        self.bursts.iter().filter(|&&n| n >= i).count() as f64 / self.bursts.len() as f64
    }

    /// The mean number of requests that arrive within the quiet time of a
    /// burst's start (1 before any burst).
    pub fn early_mean(&self) -> f64 {
        if self.early.is_empty() {
            return 1.0;
        }
        self.early.iter().map(|&n| f64::from(n)).sum::<f64>() / self.early.len() as f64
    }

    /// The 90th percentile of burst sizes (1 before any burst).
    pub fn burst_p90(&self) -> u32 {
        if self.bursts.is_empty() {
            return 1;
        }
        let mut v: Vec<u32> = self.bursts.iter().copied().collect();
        v.sort_unstable();
        v[((v.len() as f64 * 0.9).ceil() as usize).clamp(1, v.len()) - 1]
    }

    /// Whether the hour of the week containing `t` is active: traffic alone
    /// kept an instance warm nearly all of that hour in the weeks seen.
    pub fn active_at(&self, t: Millis) -> bool {
        let h = self.week[hour_of_week(t)];
        h.observed >= ACTIVE_MIN_OBSERVED && h.covered >= ACTIVE_COVERAGE * h.observed
    }

    /// The start of the first active hour overlapping `(from, to]`.
    pub fn active_within(&self, from: Millis, to: Millis) -> Option<Millis> {
        if self.active_at(from) {
            return Some(from);
        }
        let mut t = (from / HOUR + 1) * HOUR;
        while t <= to {
            if self.active_at(t) {
                return Some(t);
            }
            t += HOUR;
        }
        None
    }

    /// The start of the next active hour after `from`, within a week.
    pub fn next_active(&self, from: Millis) -> Option<Millis> {
        self.active_within(from, from + 7 * 24 * HOUR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 600_000;

    fn burst(l: &mut Learner, at: Millis, n: u32) -> Millis {
        for _ in 0..n {
            l.start(at, 8_000, T);
        }
        for _ in 0..n {
            l.end(at + 300, T);
        }
        at + 300
    }

    #[test]
    fn gaps_and_burst_sizes() {
        let mut l = Learner::default();
        let mut t = 0;
        for k in 0..10 {
            let end = burst(&mut l, t, 1 + k % 3);
            t = end + 3_600_000;
        }
        assert_eq!(l.gaps_seen(), 9);
        // Every gap is an hour: the mass sits in (59, 61] minutes.
        assert!((l.gap_mass(600_000, 3_540_000, 3_660_000) - 0.9).abs() < 1e-9);
        assert_eq!(l.gap_mass(600_000, 600_000, 1_200_000), 0.0);
        assert_eq!(l.gap_quantile(600_000, 0.02), Some(3_600_000));
        assert_eq!(l.gap_quantile(3_600_000, 0.02), None);
        // Sizes 1, 2, 3 repeating (the last burst is still open).
        assert!((l.burst_at_least(3) - 3.0 / 9.0).abs() < 1e-9);
        assert_eq!(l.burst_p90(), 3);
    }

    #[test]
    fn requests_within_the_quiet_time_are_one_burst() {
        let mut l = Learner::default();
        l.start(0, 8_000, T);
        l.end(300, T);
        l.start(2_000, 8_000, T);
        l.end(2_300, T);
        l.start(20_000, 8_000, T);
        assert_eq!(l.gaps_seen(), 1);
    }

    #[test]
    fn hours_covered_by_traffic_become_active() {
        let mut l = Learner::default();
        let day = 24 * HOUR;
        // A Monday (1970-01-05), 09:00-17:00, a request every 2 minutes.
        let monday = 4 * day;
        let mut t = monday + 9 * HOUR;
        while t < monday + 17 * HOUR {
            l.start(t, 8_000, T);
            l.end(t + 300, T);
            t += 120_000;
        }
        l.start(monday + day, 8_000, T);
        assert!(l.active_at(monday + 12 * HOUR + 7 * day));
        assert!(!l.active_at(monday + 8 * HOUR + 7 * day));
        assert!(!l.active_at(monday + 12 * HOUR + 8 * day));
        assert_eq!(
            l.next_active(monday + 7 * day),
            Some(monday + 7 * day + 9 * HOUR)
        );
    }
}
