//! Prewarm policies against six arrival shapes, in virtual time: the
//! gateway's own planner driving the simulator's platform model over 14
//! days (learn on 7, score the last 7). `cargo bench -p skygate-benches
//! --bench prewarm`.

use skygate_benches::prewarm_sim::{policies, run, trace, Score, World, SHAPES};

fn main() {
    let w = World::default();
    println!(
        "# T = {} s, D = {} s, service {} ms, hold {} ms, {} days (scored: last {})",
        w.idle / 1000,
        w.cold_start / 1000,
        w.service,
        w.hold,
        w.days,
        w.days - w.learn_days
    );
    println!(
        "{:<15} {:<9} {:>8} {:>10} {:>10} {:>12} {:>10} {:>8} {:>6} {:>10}",
        "shape",
        "policy",
        "cold %",
        "pings/day",
        "pings/req",
        "ping-s/day",
        "alive h/d",
        "p99 ms",
        "429s",
        "429s@ping"
    );
    let pols = policies(&w);
    let mut sums: Vec<Vec<Score>> = vec![Vec::new(); pols.len()];
    for (si, shape) in SHAPES.iter().enumerate() {
        let arrivals = trace(shape, w.days, 42 + si as u64);
        for (pi, p) in pols.iter().enumerate() {
            let s = run(&w, p, &arrivals);
            println!(
                "{:<15} {:<9} {:>8.2} {:>10.1} {:>10.2} {:>12.1} {:>10.2} {:>8} {:>6} {:>10}",
                shape,
                p.name,
                s.cold_pct(),
                s.pings_per_day(),
                s.pings_per_request(),
                s.ping_s_per_day(),
                s.alive_h_per_day(),
                s.p99_ms(),
                s.throttled,
                s.throttled_by_pings
            );
            if std::env::var_os("PREWARM_DEBUG").is_some() {
                println!(
                    "    pings by reason {:?}; cold requests by target {:?}",
                    s.by_why, s.cold_by_target
                );
            }
            if *shape != "rare" {
                sums[pi].push(s);
            }
        }
    }
    for (pi, p) in pols.iter().enumerate() {
        let n = sums[pi].len() as f64;
        let mean = |f: &dyn Fn(&Score) -> f64| sums[pi].iter().map(f).sum::<f64>() / n;
        println!(
            "SUMMARY policy={} scope=non-rare mean_cold_pct={:.2} pings_per_day={:.1} alive_hours_per_day={:.2}",
            p.name,
            mean(&|s| s.cold_pct()),
            mean(&|s| s.pings_per_day()),
            mean(&|s| s.alive_h_per_day()),
        );
    }
    let while_pinging: Vec<String> = pols
        .iter()
        .zip(&sums)
        .map(|(p, s)| {
            let n: u64 = s.iter().map(|s| s.throttled_by_pings).sum();
            format!("{}={n}", p.name)
        })
        .collect();
    println!(
        "# user 429s while a ping held an instance (non-rare): {}",
        while_pinging.join(" ")
    );
    // The same with a cap of 10 instances (a Lambda function's reserved
    // concurrency): user 429s, and those while a ping held an instance.
    let capped = World {
        max_instances: 10,
        ..w
    };
    println!("# with at most {} instances", capped.max_instances);
    for (si, shape) in SHAPES.iter().enumerate() {
        let arrivals = trace(shape, w.days, 42 + si as u64);
        let line: Vec<String> = pols
            .iter()
            .map(|p| {
                let s = run(&capped, p, &arrivals);
                format!("{}={}/{}", p.name, s.throttled, s.throttled_by_pings)
            })
            .collect();
        println!(
            "CAPPED shape={shape} user_429s/while_pinging: {}",
            line.join(" ")
        );
    }
}
