//! Kubernetes API errors, timeouts, dropped watches and conflicts (injected, and from a real
//! concurrent writer) while the library `Driver` runs rollouts to completion.

use crate::simulated::{at, sim, Switch, NS};
use crate::support::{canary_weight, check_trajectory, foreign_fields, snap, vs, SuiteTally};
use canaryd::daemon::{Driver, NoEffects};
use canaryd::engine::Phase;
use kube_emulator::{EmulatorHandle, Fault, FaultKind, Matcher};
use serde_json::json;
use std::time::{Duration, Instant};

/// A kube client to the emulator with a short read timeout, so a delayed answer times out.
fn short_timeout_client(emu: &EmulatorHandle) -> kube::Client {
    let mut config = kube::Config::new(emu.url().parse().unwrap());
    config.default_namespace = "default".into();
    config.read_timeout = Some(Duration::from_millis(500));
    kube::Client::try_from(config).unwrap()
}

#[derive(Clone)]
struct ApiScenario {
    name: &'static str,
    /// (cycle, fault) injected before that cycle.
    faults: Vec<(i64, Fault)>,
    /// Cycles before which a concurrent writer edits an unrelated annotation between our
    /// read and our (delayed) write.
    racing_writes: Vec<i64>,
    canary_errors: f64,
    want: Phase,
}

fn vs_verb(verb: &str) -> Matcher {
    Matcher::any().verb(verb).resource("virtualservices")
}

fn api_scenarios() -> Vec<ApiScenario> {
    let healthy = 0.003;
    let s = |name, faults, want| ApiScenario {
        name,
        faults,
        racing_writes: vec![],
        canary_errors: if want == Phase::Aborted { 0.25 } else { healthy },
        want,
    };
    vec![
        s(
            "kube/500",
            vec![
                (1, Fault::new(vs_verb("patch"), FaultKind::Status(500)).times(3)),
                (4, Fault::new(vs_verb("get"), FaultKind::Status(500)).times(2)),
                (
                    6,
                    Fault::new(Matcher::any().verb("get").resource("deployments"), FaultKind::Status(500))
                        .times(2),
                ),
            ],
            Phase::Promoted,
        ),
        s(
            "kube/429",
            vec![
                (1, Fault::new(vs_verb("get"), FaultKind::Status(429)).times(3)),
                (3, Fault::new(vs_verb("patch"), FaultKind::Status(429)).times(3)),
            ],
            Phase::Promoted,
        ),
        s(
            "kube/503+504",
            vec![
                (1, Fault::new(vs_verb("get"), FaultKind::Status(503)).times(3)),
                (4, Fault::new(vs_verb("patch"), FaultKind::Status(504)).times(3)),
            ],
            Phase::Promoted,
        ),
        s(
            "kube/timeout",
            vec![
                (1, Fault::new(vs_verb("get"), FaultKind::Delay(Duration::from_secs(2))).times(2)),
                (4, Fault::new(vs_verb("patch"), FaultKind::Delay(Duration::from_secs(2))).times(1)),
            ],
            Phase::Promoted,
        ),
        s(
            "kube/dropwatch",
            vec![(0, Fault::new(Matcher::any().verb("watch"), FaultKind::DropWatch).always())],
            Phase::Promoted,
        ),
        s(
            "kube/409",
            vec![(1, Fault::new(vs_verb("patch"), FaultKind::Status(409)).times(4))],
            Phase::Promoted,
        ),
        ApiScenario {
            name: "kube/409-concurrent-writer",
            faults: vec![],
            racing_writes: vec![0, 2, 5, 9],
            canary_errors: healthy,
            want: Phase::Promoted,
        },
        s(
            "kube/500-during-abort",
            vec![(1, Fault::new(vs_verb("patch"), FaultKind::Status(500)).times(4))],
            Phase::Aborted,
        ),
        ApiScenario {
            name: "kube/409-writer-during-abort",
            faults: vec![(2, Fault::new(vs_verb("patch"), FaultKind::Status(503)).times(2))],
            racing_writes: vec![0, 1, 2],
            canary_errors: 0.25,
            want: Phase::Aborted,
        },
    ]
}

async fn api_run(sc: ApiScenario) -> (Vec<String>, usize, String) {
    let s = sim(sc.canary_errors).await;
    let before = foreign_fields(&vs(&s.emu, NS));
    let client = if sc.name == "kube/timeout" { short_timeout_client(&s.emu) } else { s.emu.client() };
    let driver = Driver::new(client, Switch::new(&s.prom.url, s.is_down.clone()), NoEffects);
    let mut snaps = vec![snap(&s.emu, NS)];
    let mut injected = 0;
    let mut conflicts = 0;
    let mut errors = 0;
    let mut expected_annotations = serde_json::Map::new();
    for cycle in 0..80 {
        for (c, f) in &sc.faults {
            if *c == cycle {
                s.emu.inject(f.clone());
            }
        }
        let result = if sc.racing_writes.contains(&cycle) {
            // Our PATCH waits 300 ms at the server; meanwhile another writer updates an
            // unrelated annotation, so our resourceVersion test fails.
            s.emu.inject(Fault::new(vs_verb("patch"), FaultKind::Delay(Duration::from_millis(300))));
            let key = format!("gitops/sync-{cycle}");
            expected_annotations.insert(key.clone(), json!("yes"));
            let emu = s.emu.clone();
            let writer = async move {
                let deadline = Instant::now() + Duration::from_secs(3);
                // The delay fault is used up the moment our PATCH arrives.
                while emu
                    .pending_faults()
                    .iter()
                    .any(|f| f.kind == FaultKind::Delay(Duration::from_millis(300)))
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut other = vs(&emu, NS);
                other["metadata"]["annotations"][key.as_str()] = json!("yes");
                emu.apply_value(other).unwrap();
            };
            let (r, ()) = tokio::join!(driver.reconcile(&s.policy, at(cycle)), writer);
            injected += 1;
            s.emu.clear_faults();
            r
        } else {
            driver.reconcile(&s.policy, at(cycle)).await
        };
        match result {
            Err(canaryd::daemon::DaemonError::Conflict) => conflicts += 1,
            Err(_) => errors += 1,
            Ok(_) => {}
        }
        snaps.push(snap(&s.emu, NS));
        if matches!(snaps.last().unwrap().phase, Phase::Promoted | Phase::Aborted)
            && s.emu.pending_faults().iter().all(|f| f.times > 1000)
        {
            break;
        }
    }
    // Faults used up = injected times minus what is left.
    let planned: usize = sc.faults.iter().map(|(_, f)| f.times.min(1000)).sum();
    let left: usize = s.emu.pending_faults().iter().map(|f| f.times.min(1000)).sum();
    injected += planned.saturating_sub(left);
    let watches = s.emu.requests().iter().filter(|r| r.verb == "watch").count();
    let after = vs(&s.emu, NS);
    let mut v = check_trajectory(sc.name, &snaps, &vec![false; snaps.len()]);
    let mut want_fields = before.clone();
    for (k, val) in &expected_annotations {
        want_fields["annotations"][k] = val.clone();
    }
    if foreign_fields(&after) != want_fields {
        v.push(format!(
            "{}: other writers' fields clobbered: {} vs {}",
            sc.name,
            foreign_fields(&after),
            want_fields
        ));
    }
    let last = *snaps.last().unwrap();
    let want_weight = if sc.want == Phase::Promoted { 100 } else { 0 };
    if last.phase != sc.want || canary_weight(&after) != want_weight {
        v.push(format!("{}: expected {:?} with weight {want_weight}: {snaps:?}", sc.name, sc.want));
    }
    if !sc.racing_writes.is_empty() && conflicts < sc.racing_writes.len() / 2 {
        v.push(format!("{}: the racing writer caused only {conflicts} conflicts", sc.name));
    }
    let line = format!(
        "{:<28} final={:?} weight={} cycles={} conflicts={conflicts} errors={errors} watches={watches}",
        sc.name,
        last.phase,
        canary_weight(&after),
        snaps.len() - 1
    );
    (v, injected, line)
}

/// Kubernetes API 500/429/503/504, timeouts, dropped watches, injected 409s and a real
/// concurrent writer between our read and our write: every rollout converges, the other
/// writer's annotations survive, aborts land despite failing writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_faults() {
    let mut tally = SuiteTally::start("kube");
    for sc in api_scenarios() {
        let (v, injected, line) = api_run(sc.clone()).await;
        tally.record(line, injected, &v);
        assert!(v.is_empty(), "{v:#?}");
    }
}
