//! Prometheus down, slow, 500, empty, NaN and garbage, held for fewer intervals than the
//! error limit (the rollout holds, then recovers) and for exactly the limit (it aborts).

use crate::fake_prometheus::PromMode;
use crate::simulated::{at, sim, Switch, NS};
use crate::support::{canary_weight, check_trajectory, foreign_fields, snap, vs, Snap, SuiteTally};
use canaryd::daemon::{Driver, NoEffects};
use canaryd::engine::Phase;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A Prometheus fault, or "down" (connection refused).
#[derive(Debug, Clone, Copy, PartialEq)]
enum PromFault {
    Down,
    Mode(PromMode),
}

fn prom_fault_name(f: PromFault) -> &'static str {
    match f {
        PromFault::Down => "down",
        PromFault::Mode(PromMode::Slow(_)) => "slow",
        PromFault::Mode(PromMode::Error500) => "http500",
        PromFault::Mode(PromMode::Empty) => "empty",
        PromFault::Mode(PromMode::NaN) => "nan",
        PromFault::Mode(PromMode::Garbage) => "garbage",
        PromFault::Mode(PromMode::Healthy) => "none",
    }
}

/// Runs one rollout; Prometheus fails during cycles `from..from+k`. Returns the trajectory,
/// which cycles had missing evidence, and the final VirtualService.
async fn prom_run(fault: PromFault, from: i64, k: i64) -> (Vec<Snap>, Vec<bool>, serde_json::Value, usize) {
    let s = sim(0.003).await;
    let before = foreign_fields(&vs(&s.emu, NS));
    let driver = Driver::new(s.emu.client(), Switch::new(&s.prom.url, s.is_down.clone()), NoEffects);
    let mut snaps = vec![snap(&s.emu, NS)];
    let mut missing = vec![false];
    let mut faults = 0;
    for cycle in 0..60 {
        let failing = (from..from + k).contains(&cycle);
        match (failing, fault) {
            (false, _) => {
                s.is_down.store(false, Ordering::SeqCst);
                s.prom.set_mode(PromMode::Healthy);
            }
            (true, PromFault::Down) => s.is_down.store(true, Ordering::SeqCst),
            (true, PromFault::Mode(m)) => s.prom.set_mode(m),
        }
        let r = driver.reconcile(&s.policy, at(cycle)).await;
        assert!(r.is_ok(), "{}: cycle {cycle}: {:?}", prom_fault_name(fault), r.err());
        faults += usize::from(failing);
        snaps.push(snap(&s.emu, NS));
        missing.push(failing);
        if matches!(snaps.last().unwrap().phase, Phase::Promoted | Phase::Aborted) {
            break;
        }
    }
    let after = vs(&s.emu, NS);
    assert_eq!(foreign_fields(&after), before, "{}: other writers' fields clobbered", prom_fault_name(fault));
    (snaps, missing, after, faults)
}

/// Prometheus down, slow, 500, empty, NaN, garbage: each held for k = 3 intervals across the
/// end of step 1 (no advance, Error held, recovery → Promoted) and k = 4 (the default
/// `maxConsecutiveErrors`: abort with weight 0; empty answers are Inconclusive, never an
/// error, so they hold and recover instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_faults() {
    let mut tally = SuiteTally::start("prometheus");
    let faults = [
        PromFault::Down,
        PromFault::Mode(PromMode::Slow(Duration::from_millis(800))),
        PromFault::Mode(PromMode::Error500),
        PromFault::Mode(PromMode::Empty),
        PromFault::Mode(PromMode::NaN),
        PromFault::Mode(PromMode::Garbage),
    ];
    for fault in faults {
        for k in [3i64, 4] {
            let name = format!("prometheus/{}/k={k}", prom_fault_name(fault));
            let from = 2;
            let (snaps, missing, after, injected) = prom_run(fault, from, k).await;
            let mut v = check_trajectory(&name, &snaps, &missing);
            let last = *snaps.last().unwrap();
            let is_error = fault != PromFault::Mode(PromMode::Empty);
            // Error verdicts are held: the counter climbs one per failed interval.
            if is_error {
                for i in 0..(k.min(3) as usize) {
                    let s = snaps[from as usize + 1 + i];
                    if s.errors != i as u32 + 1 {
                        v.push(format!(
                            "{name}: after failure {} consecutive_errors={} ({s:?})",
                            i + 1,
                            s.errors
                        ));
                    }
                }
            }
            if is_error && k >= 4 {
                // Abort exactly at the 4th consecutive failure, weights 0 on the VirtualService.
                let s = snaps[(from + k) as usize];
                if s.phase != Phase::Aborted || last.phase != Phase::Aborted || canary_weight(&after) != 0 {
                    v.push(format!("{name}: expected abort at failure {k}: {snaps:?}"));
                }
            } else if last.phase != Phase::Promoted || canary_weight(&after) != 100 {
                v.push(format!("{name}: expected recovery to Promoted: {snaps:?}"));
            } else if last.errors != 0 {
                v.push(format!("{name}: errors not reset after recovery: {last:?}"));
            }
            tally.record(
                format!(
                    "{name:<28} final={:?} weight={} cycles={}",
                    last.phase,
                    canary_weight(&after),
                    snaps.len() - 1
                ),
                injected,
                &v,
            );
            assert!(v.is_empty(), "{v:#?}");
        }
    }
}
