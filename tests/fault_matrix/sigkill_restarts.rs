//! The real daemon SIGKILLed at seeded random moments and restarted, over six concurrent
//! rollouts: no step is entered twice, no abort is lost, every rollout ends where it should.

use crate::real_daemon::{add_rollout, log_tail, process_cluster, spawn_daemon, spawn_monitor};
use crate::support::{canary_weight, check_steps, foreign_fields, snap, state_of, vs, SuiteTally};
use canaryd::engine::Phase;
use kube_emulator::EmulatorHandle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seeded xorshift, so every run draws the same lifetimes and pauses between kills.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Every rollout has reached a final phase.
fn all_done(emu: &EmulatorHandle, namespaces: &[String]) -> bool {
    namespaces.iter().all(|ns| matches!(snap(emu, ns).phase, Phase::Promoted | Phase::Aborted))
}

/// `canaryd run --crds` as a process, SIGKILLed at seeded random moments and restarted, over
/// six concurrent rollouts (four healthy, two with a failing canary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_daemon_at_random_points() {
    let mut tally = SuiteTally::start("sigkill");
    let (emu, prom, dir) = process_cluster().await;
    let namespaces: Vec<String> = (1..=6).map(|i| format!("kill{i}")).collect();
    let faulty = |ns: &str| ns == "kill3" || ns == "kill6";
    for ns in &namespaces {
        add_rollout(&emu, &prom, ns, if faulty(ns) { 0.25 } else { 0.003 });
    }
    let before: HashMap<String, serde_json::Value> =
        namespaces.iter().map(|ns| (ns.clone(), foreign_fields(&vs(&emu, ns)))).collect();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let log = dir.path().join("daemon.log");
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = spawn_monitor(emu.clone(), namespaces.clone(), stop.clone());
    let mut rng = Rng(0x5eed_cafe_f00d);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_done(&emu, &namespaces) && Instant::now() < deadline {
        let mut d = spawn_daemon(&kubeconfig, &prom.url, "canaryd-0", false, &log);
        let life = Duration::from_millis(rng.range(150, 3000));
        let until = Instant::now() + life;
        while Instant::now() < until && !all_done(&emu, &namespaces) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d.kill9();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
    }
    // Settle: one more short life after the end changes nothing.
    let mut d = spawn_daemon(&kubeconfig, &prom.url, "canaryd-0", false, &log);
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.kill9();
    stop.store(true, Ordering::SeqCst);
    let seen = monitor.await.unwrap();
    let (mut double, mut lost_aborts, mut wrong_weights) = (0, 0, 0);
    let mut v = Vec::new();
    for ns in &namespaces {
        let snaps = seen.get(ns).cloned().unwrap_or_default();
        let violations = check_steps(&format!("sigkill/{ns}"), &snaps);
        double += violations.iter().filter(|m| m.contains("entered")).count();
        lost_aborts += violations.iter().filter(|m| m.contains("abort")).count();
        let after = vs(&emu, ns);
        let last = state_of(&after);
        let (want, weight) = if faulty(ns) { (Phase::Aborted, 0) } else { (Phase::Promoted, 100) };
        if last.phase != want || canary_weight(&after) != weight {
            wrong_weights += 1;
            v.push(format!(
                "sigkill/{ns}: final {:?} weight {} (want {want:?} {weight}): {snaps:?}",
                last.phase,
                canary_weight(&after)
            ));
        }
        if faulty(ns) && last.phase != Phase::Aborted {
            lost_aborts += 1;
        }
        if foreign_fields(&after) != before[ns] {
            v.push(format!("sigkill/{ns}: foreign fields changed"));
        }
        v.extend(violations);
    }
    tally.record(
        format!(
            "sigkill/6-rollouts           kills={kills} double_advances={double} lost_aborts={lost_aborts} wrong_final_weights={wrong_weights} runtime={:.0}s",
            tally.elapsed().as_secs_f64()
        ),
        kills,
        &v,
    );
    assert!(v.is_empty(), "{v:#?}\n--- daemon log tail ---\n{}", log_tail(&log));
    assert!(kills >= 20, "the daemon was really killed many times ({kills})");
}
