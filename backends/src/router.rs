//! Picks the backend for an attempt among a route's targets.
//!
//! Today: weighted random over the targets of the route. Breakers, bulkheads,
//! warmth, latency and fallback order plug in here (ARCHITECTURE.md, "Routing").

use rand::Rng;
use skygate_config::Target;

/// Picks a target by weight; `None` when every weight is 0 (validation forbids
/// that at load time, but a run-time weight change could lead there).
pub fn pick_weighted(targets: &[Target], rng: &mut impl Rng) -> Option<Target> {
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if total == 0 {
        return None;
    }
    if targets.len() == 1 {
        return targets.first().copied();
    }
    let mut x = rng.gen_range(0..total);
    for t in targets {
        let w = u64::from(t.weight);
        if x < w {
            return Some(*t);
        }
        x -= w;
    }
    targets.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn follows_weights() {
        let targets = [
            Target {
                backend: 0,
                weight: 80,
                priority: 0,
            },
            Target {
                backend: 1,
                weight: 20,
                priority: 0,
            },
            Target {
                backend: 2,
                weight: 0,
                priority: 0,
            },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[pick_weighted(&targets, &mut rng).unwrap().backend] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((7_600..8_400).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn zero_total_picks_nothing() {
        assert_eq!(
            pick_weighted(
                &[Target {
                    backend: 0,
                    weight: 0,
                    priority: 0
                }],
                &mut rand::thread_rng()
            ),
            None
        );
        assert_eq!(pick_weighted(&[], &mut rand::thread_rng()), None);
    }
}
