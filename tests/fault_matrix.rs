//! The fault matrix: rollouts run to completion under injected faults, with the final state and
//! four invariants checked in every run:
//!
//! - never promoted on missing evidence (a cycle whose metrics were unreadable or empty never
//!   advanced a step),
//! - no double advance (steps entered in order, once each; weights never go back mid-rollout),
//! - every abort's weights (canary 0) are on the VirtualService and an abort is never lost,
//! - the other writers' fields of the VirtualService are never clobbered.
//!
//! Prometheus faults and Kubernetes API faults drive the library `Driver` with a simulated clock
//! against the API emulator and a fake Prometheus over HTTP (so the real `PrometheusClient`
//! decodes every answer). SIGKILL and leader election run the real `canaryd run --crds` binary
//! in real time. Run with `--nocapture` to see the per-scenario lines and the summary
//! `fault matrix: runs=N faults_injected=M invariant_violations=0` (also written to
//! `target/fault_matrix_summary.txt`).

mod fault_support;

use canaryd::daemon::{Driver, NoEffects};
use canaryd::engine::Phase;
use canaryd::observation::SideObservation;
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{MetricsSource, PrometheusClient, PrometheusConfig, QueryError, WorkloadKey};
use fault_support::*;
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle, Fault, FaultKind, Matcher};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Number of `#[tokio::test]` functions: the last one to finish prints the summary.
const TESTS: usize = 4;

const NS: &str = "bookinfo";
const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 10, bake: 1m}, {weight: 30, bake: 1m}, {weight: 60, bake: 1m}]\n  analysis: {interval: 15s}\n";
const INTERVAL: i64 = 15;
const PROM_TIMEOUT: Duration = Duration::from_millis(300);

/// The real client against the fake, or against a closed port while "down".
struct Switch {
    up: PrometheusClient,
    down: PrometheusClient,
    is_down: Arc<AtomicBool>,
}

impl Switch {
    fn new(url: &str, is_down: Arc<AtomicBool>) -> Switch {
        let cfg = |u: &str| {
            let mut c = PrometheusConfig::new(u);
            c.timeout = PROM_TIMEOUT;
            c.retry_backoff = Duration::from_millis(5);
            PrometheusClient::new(c).unwrap()
        };
        Switch { up: cfg(url), down: cfg(&closed_port_url()), is_down }
    }
    fn client(&self) -> &PrometheusClient {
        if self.is_down.load(Ordering::SeqCst) {
            &self.down
        } else {
            &self.up
        }
    }
}

impl MetricsSource for Switch {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        end: Timestamp,
        window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        self.client().observe_sides(keys, end, window).await
    }
    async fn query_scalar(&self, promql: &str, at: Timestamp) -> Result<f64, QueryError> {
        self.client().query_scalar(promql, at).await
    }
}

struct Sim {
    emu: Arc<EmulatorHandle>,
    policy: Policy,
    prom: FakeProm,
    is_down: Arc<AtomicBool>,
}

async fn sim(canary_errors: f64) -> Sim {
    let emu = Arc::new(Emulator::start().await.unwrap());
    load_namespace(&emu, NS);
    let prom = FakeProm::start().await;
    prom.set_namespace(NS, canary_errors);
    Sim {
        emu,
        policy: parse_policy("p.yaml", POLICY).unwrap(),
        prom,
        is_down: Arc::new(AtomicBool::new(false)),
    }
}

fn t0() -> Timestamp {
    "2026-11-23T01:00:00Z".parse().unwrap()
}

fn at(cycle: i64) -> Timestamp {
    Timestamp::from_second(t0().as_second() + cycle * INTERVAL).unwrap()
}

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
    let started = Instant::now();
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
            record(
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
    println!("prometheus faults: {:.1}s", started.elapsed().as_secs_f64());
    test_done(TESTS);
}

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
    let started = Instant::now();
    for sc in api_scenarios() {
        let (v, injected, line) = api_run(sc.clone()).await;
        record(line, injected, &v);
        assert!(v.is_empty(), "{v:#?}");
    }
    println!("kubernetes api faults: {:.1}s", started.elapsed().as_secs_f64());
    test_done(TESTS);
}

// ---- the real daemon process --------------------------------------------------------------

const CRD_POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: NS}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 20, bake: 10s}, {weight: 50, bake: 10s}]\n  analysis: {interval: 10s}\n";

async fn process_cluster() -> (Arc<EmulatorHandle>, FakeProm, tempfile::TempDir) {
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    emu.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "canaryd-system"}}))
        .unwrap();
    let prom = FakeProm::start().await;
    (emu, prom, tempfile::tempdir().unwrap())
}

fn add_rollout(emu: &EmulatorHandle, prom: &FakeProm, ns: &str, canary_errors: f64) {
    load_namespace(emu, ns);
    prom.set_namespace(ns, canary_errors);
    emu.apply_yaml(&CRD_POLICY.replace("NS", ns)).unwrap();
}

struct Daemon {
    child: std::process::Child,
}

fn spawn_daemon(
    kubeconfig: &std::path::Path,
    prom: &str,
    identity: &str,
    leader: bool,
    log: &std::path::Path,
) -> Daemon {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"));
    cmd.args(["run", "--crds", "--prometheus", prom, "--metrics-addr", "127.0.0.1:0"]);
    if leader {
        cmd.arg("--leader-election");
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", identity)
        .env("POD_NAMESPACE", "canaryd-system")
        .env("RUST_LOG", "canaryd=info")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    Daemon { child: cmd.spawn().unwrap() }
}

impl Daemon {
    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls the rollouts of `namespaces` every 20 ms, recording each change.
fn spawn_monitor(
    emu: Arc<EmulatorHandle>,
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<HashMap<String, Vec<Snap>>> {
    tokio::spawn(async move {
        let mut seen: HashMap<String, Vec<Snap>> = HashMap::new();
        while !stop.load(Ordering::SeqCst) {
            for ns in &namespaces {
                if emu.get("networking.istio.io", "v1", "virtualservices", ns, "reviews").is_none() {
                    continue;
                }
                let s = snap(&emu, ns);
                let v = seen.entry(ns.clone()).or_default();
                if v.last() != Some(&s) {
                    v.push(s);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

fn all_done(emu: &EmulatorHandle, namespaces: &[String]) -> bool {
    namespaces.iter().all(|ns| matches!(snap(emu, ns).phase, Phase::Promoted | Phase::Aborted))
}

/// `canaryd run --crds` as a process, SIGKILLed at seeded random moments and restarted, over
/// six concurrent rollouts (four healthy, two with a failing canary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_daemon_at_random_points() {
    let started = Instant::now();
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
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    record(
        format!(
            "sigkill/6-rollouts           kills={kills} double_advances={double} lost_aborts={lost_aborts} wrong_final_weights={wrong_weights} runtime={:.0}s",
            started.elapsed().as_secs_f64()
        ),
        kills,
        &v,
    );
    assert!(v.is_empty(), "{v:#?}\n--- daemon log tail ---\n{}", &tail[tail.len().saturating_sub(4000)..]);
    assert!(kills >= 20, "the daemon was really killed many times ({kills})");
    test_done(TESTS);
}

/// Successful VirtualService PATCHes seen by a poller: (time seen, user).
fn spawn_write_log(
    emu: Arc<EmulatorHandle>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, String, String)>> {
    tokio::spawn(async move {
        let mut seen = 0;
        let mut out = Vec::new();
        loop {
            let log = emu.requests();
            let now = Instant::now();
            for r in &log[seen.min(log.len())..] {
                if r.method == "PATCH" && r.resource == "virtualservices" && (200..300).contains(&r.status) {
                    out.push((now, r.user.clone().unwrap_or_default(), r.namespace.clone()));
                }
            }
            seen = log.len();
            if stop.load(Ordering::SeqCst) {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lease_holder(emu: &EmulatorHandle) -> Option<String> {
    emu.get("coordination.k8s.io", "v1", "leases", "canaryd-system", "canaryd-leader")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// Two replicas with leader election. Rollout 1: the leader is SIGKILLed mid-rollout, the
/// follower takes over after the lease expires and finishes. Rollout 2: the new leader is
/// frozen (SIGSTOP) so its lease expires without it knowing, the other replica takes over and
/// finishes; the frozen one is thawed (SIGCONT) and must not write again. From the emulator's
/// request log: VirtualService PATCHes of the two users never interleave, and a change of
/// writer waits out a lease period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election() {
    const LEASE: Duration = Duration::from_secs(15);
    let started = Instant::now();
    let (emu, prom, dir) = process_cluster().await;
    let (ka, kb) = (dir.path().join("kube-a"), dir.path().join("kube-b"));
    emu.write_kubeconfig_as(&ka, "replica-a").unwrap();
    emu.write_kubeconfig_as(&kb, "replica-b").unwrap();
    let log = dir.path().join("daemons.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = spawn_write_log(emu.clone(), stop.clone());
    let namespaces = vec!["lead1".to_string(), "lead2".to_string()];
    let monitor = spawn_monitor(emu.clone(), namespaces.clone(), stop.clone());

    let mut a = spawn_daemon(&ka, &prom.url, "replica-a", true, &log);
    wait_for("replica-a to lead", Duration::from_secs(20), || {
        lease_holder(&emu).as_deref() == Some("replica-a")
    })
    .await;
    let mut b = spawn_daemon(&kb, &prom.url, "replica-b", true, &log);
    add_rollout(&emu, &prom, "lead1", 0.003);
    wait_for("rollout 1 to start", Duration::from_secs(20), || {
        snap(&emu, "lead1").phase == Phase::Progressing
    })
    .await;
    a.kill9();
    let killed_at = Instant::now();
    wait_for("rollout 1 to finish under replica-b", Duration::from_secs(90), || {
        snap(&emu, "lead1").phase == Phase::Promoted
    })
    .await;
    let takeover1 = lease_holder(&emu);
    let a2 = spawn_daemon(&ka, &prom.url, "replica-a", true, &log);
    drop(a);
    let mut a = a2;

    add_rollout(&emu, &prom, "lead2", 0.003);
    wait_for("rollout 2 to start", Duration::from_secs(20), || {
        snap(&emu, "lead2").phase == Phase::Progressing
    })
    .await;
    b.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    wait_for("rollout 2 to finish under replica-a", Duration::from_secs(90), || {
        snap(&emu, "lead2").phase == Phase::Promoted
    })
    .await;
    b.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let takeover2 = lease_holder(&emu);
    a.kill9();
    b.kill9();
    stop.store(true, Ordering::SeqCst);
    let writes = writes.await.unwrap();
    let seen = monitor.await.unwrap();

    let mut v = Vec::new();
    if takeover1.as_deref() != Some("replica-b") || takeover2.as_deref() != Some("replica-a") {
        v.push(format!("leader: holders after the handovers: {takeover1:?}, {takeover2:?}"));
    }
    // At most one writer at any time: writers form blocks, and a change of writer is at least
    // (nearly) a lease period after the previous writer's last write.
    let mut handovers = 0;
    let mut blocks: Vec<String> = Vec::new();
    for w in writes.windows(2) {
        let ((t1, u1, _), (t2, u2, _)) = (&w[0], &w[1]);
        if u1 != u2 {
            handovers += 1;
            let gap = t2.duration_since(*t1);
            if gap + Duration::from_secs(1) < LEASE {
                v.push(format!("leader: {u2} wrote {gap:?} after {u1}, within one lease period"));
            }
        }
    }
    for (_, u, _) in &writes {
        if blocks.last() != Some(u) {
            blocks.push(u.clone());
        }
    }
    if writes.iter().any(|(_, u, _)| u.is_empty()) {
        v.push("leader: a VirtualService PATCH without a user".into());
    }
    if blocks != ["replica-a", "replica-b", "replica-a"] {
        v.push(format!("leader: writers in order {blocks:?}, want a, b, a"));
    }
    for ns in &namespaces {
        let snaps = seen.get(ns).cloned().unwrap_or_default();
        v.extend(check_steps(&format!("leader/{ns}"), &snaps));
        if canary_weight(&vs(&emu, ns)) != 100 {
            v.push(format!("leader/{ns}: final weight {}", canary_weight(&vs(&emu, ns))));
        }
    }
    let _ = (killed_at, frozen_at);
    record(
        format!(
            "leader/kill+lease-expiry     vs_patches={} handovers={handovers} writers={blocks:?} runtime={:.0}s",
            writes.len(),
            started.elapsed().as_secs_f64()
        ),
        2,
        &v,
    );
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(v.is_empty(), "{v:#?}\n--- daemon log tail ---\n{}", &tail[tail.len().saturating_sub(4000)..]);
    test_done(TESTS);
}
