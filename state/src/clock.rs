//! The clock limits run on: microseconds since the process started, from
//! the monotonic clock (a wall-clock step never refills or drains a limit).
//! Redis scripts use the Redis server's own `TIME` instead, so replicas with
//! skewed clocks still agree.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the first call in this process (never 0, so a stored
/// 0 can mean "never seen").
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64 + 1
}
