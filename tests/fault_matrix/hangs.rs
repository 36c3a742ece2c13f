//! Peers that accept a connection and never answer: a hung Prometheus (for everyone), 100
//! other tenants' gates and an alert webhook. None of them may delay another policy's
//! decision: an operator abort lands within 2 s, a look whose evidence does not come back
//! within the evidence deadline is an `Error` (counted towards `maxConsecutiveErrors`, never a
//! pass), and a cycle ends within that deadline whatever the gates do.

use crate::simulated::{at, NS};
use crate::support::{canary_weight, load_namespace, state_of, vs, SuiteTally};
use canaryd::alert::egress::parse_range;
use canaryd::alert::{
    Deliverer, DelivererConfig, EgressClient, EgressPolicy, MapSecretStore, RenderOptions, RetryPolicy,
    SecretStore, WebhookSender,
};
use canaryd::daemon::{DaemonEffects, Driver};
use canaryd::engine::Phase;
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{PrometheusClient, PrometheusConfig};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube_emulator::{Emulator, EmulatorHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tenants whose gate never answers.
const TENANTS: usize = 100;

/// A loopback address that accepts connections and never answers (a black-holed peer: not a
/// refused connection, which fails at once).
pub async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

fn policy(ns: &str, extra: &str) -> Policy {
    let doc = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: {ns}}}\nspec:\n  target: {{virtualService: reviews, route: main, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  steps: [{{weight: 10, bake: 1m}}, {{weight: 30, bake: 1m}}]\n  analysis: {{interval: 15s}}\n{extra}"
    );
    parse_policy(&format!("{ns}.yaml"), &doc).unwrap_or_else(|e| panic!("{e}"))
}

/// The daemon's real effects (HTTP gates, webhook delivery) with the hook URL in a Secret.
fn effects(hook: &str) -> DaemonEffects {
    let secrets: Arc<dyn SecretStore> =
        Arc::new(MapSecretStore::new().with(NS, "hooks", "url", hook.to_string()));
    // The hung peers listen on loopback: allowed, as `--egress-allow 127.0.0.0/8` would.
    let loopback = || EgressPolicy::new(&[], &[parse_range("127.0.0.0/8").unwrap()]);
    let deliverer = Deliverer::new(DelivererConfig {
        mailer: None,
        webhooks: WebhookSender::new(Duration::from_secs(10), loopback()).unwrap(),
        secrets: secrets.clone(),
        render: RenderOptions { prometheus_url: None, ui_url: None },
        retry: RetryPolicy::default(),
    });
    let gates = EgressClient::new(Duration::from_secs(10), loopback()).unwrap();
    DaemonEffects::new(deliverer, gates, secrets)
}

/// Prometheus as `canaryd run` configures it (10 s timeout, retries) against a hung server.
fn hung_prometheus(url: &str) -> PrometheusClient {
    PrometheusClient::new(PrometheusConfig::new(url)).unwrap()
}

async fn write_command(emu: &EmulatorHandle, ns: &str, command: &str) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(emu.client(), ns, &canaryd::daemon::virtual_service_resource());
    let patch = serde_json::json!({"metadata": {"annotations": {"canaryd.io/command-reviews": command}}});
    api.patch("reviews", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Polls the emulator until the rollout in `ns` is aborted with its weights on stable.
async fn until_aborted(emu: &EmulatorHandle, ns: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let v = vs(emu, ns);
        if state_of(&v).phase == Phase::Aborted && canary_weight(&v) == 0 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Prometheus hangs for everyone, 100 tenants' confirm gates hang, and the aborted rollout's
/// alert webhook hangs: the operator's abort is on the VirtualService within 2 s, a rollout
/// whose look is due gets an `Error` for it once the evidence deadline passes, and no cycle
/// waits for a gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_lands_while_prometheus_gates_and_webhooks_hang() {
    let mut tally = SuiteTally::start("hangs");
    let emu = Arc::new(Emulator::start().await.unwrap());
    let (prom, gate, hook) = (black_hole().await, black_hole().await, black_hole().await);
    let alerts = "  alerts:\n    on: [abort]\n    webhooks: [{name: ops, format: json, urlFrom: {secretKeyRef: {name: hooks, key: url}}}]\n";
    let gated = format!("  gates: [{{name: hold, kind: confirm-rollout, url: \"{gate}\", timeout: 5m}}]\n");
    let mut policies = vec![policy(NS, alerts), policy("judged", "")];
    for i in 0..TENANTS {
        policies.push(policy(&format!("tenant-{i}"), &gated));
    }
    for p in &policies {
        load_namespace(&emu, p.namespace());
    }
    let deadline = Duration::from_secs(3);
    let driver = Arc::new(
        Driver::new(emu.client(), hung_prometheus(&prom), effects(&hook)).with_evidence_deadline(deadline),
    );
    let mut v = Vec::new();

    // Cycle 0: two rollouts start; every tenant's gate is asked and hangs.
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(20), driver.cycle(&policies, at(0))).await;
    let took = started.elapsed();
    match first {
        Ok(results) => {
            let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            if !failed.is_empty() {
                v.push(format!("cycle 0 failed: {failed:?}"));
            }
        }
        Err(_) => v.push("cycle 0 waited more than 20 s on hung gates".into()),
    }
    if took > Duration::from_secs(2) {
        v.push(format!("cycle 0 took {took:?} with 100 hung gates (limit 2 s)"));
    }
    for ns in [NS, "judged"] {
        if state_of(&vs(&emu, ns)).phase != Phase::Progressing {
            v.push(format!("{ns}: not progressing after cycle 0: {:?}", state_of(&vs(&emu, ns))));
        }
    }

    // Cycle 1: looks are due and Prometheus hangs; the operator aborts one rollout.
    write_command(&emu, NS, "abort: hung everything").await;
    let written = Instant::now();
    let cycle = {
        let (driver, policies) = (driver.clone(), policies.clone());
        tokio::spawn(async move { driver.cycle(&policies, at(1)).await })
    };
    match until_aborted(&emu, NS, Duration::from_secs(20)).await {
        Some(d) if d <= Duration::from_secs(2) => {}
        Some(d) => v.push(format!("abort landed {d:?} after it was written (limit 2 s)")),
        None => v.push("abort not on the VirtualService 20 s after it was written".into()),
    }
    let landed = written.elapsed();
    match tokio::time::timeout(deadline + Duration::from_secs(3), cycle).await {
        Ok(Ok(results)) => {
            if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
                v.push(format!("cycle 1 failed: {e}"));
            }
        }
        _ => v.push(format!("cycle 1 outlived the evidence deadline ({deadline:?}) by more than 3 s")),
    }
    let judged = state_of(&vs(&emu, "judged"));
    if judged.phase != Phase::Progressing || judged.consecutive_errors != 1 || judged.step != 0 {
        v.push(format!("judged: a hung look must be one Error, nothing else: {judged:?}"));
    }
    tally.record(
        format!(
            "hangs/prometheus+{TENANTS}gates+webhook  abort_landed={:.0}ms cycle0={:.0}ms",
            landed.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3
        ),
        TENANTS + 2,
        &v,
    );
    drop(tally);
    assert!(v.is_empty(), "{v:#?}");
}

/// A hung Prometheus, look after look: each look is one `Error` once the deadline passes, and
/// the rollout aborts at `maxConsecutiveErrors` (4) with its weights on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_prometheus_is_an_error_per_look_and_aborts_at_the_limit() {
    let emu = Arc::new(Emulator::start().await.unwrap());
    load_namespace(&emu, NS);
    let p = policy(NS, "");
    let deadline = Duration::from_millis(300);
    let driver = Driver::new(emu.client(), hung_prometheus(&black_hole().await), canaryd::daemon::NoEffects)
        .with_evidence_deadline(deadline);
    driver.reconcile(&p, at(0)).await.unwrap();
    for look in 1..=4u32 {
        let started = Instant::now();
        let r = driver.reconcile(&p, at(i64::from(look))).await.unwrap();
        assert!(
            started.elapsed() < deadline + Duration::from_secs(1),
            "look {look} took {:?}",
            started.elapsed()
        );
        if look < 4 {
            assert_eq!(
                (r.state.phase, r.state.consecutive_errors, r.state.step),
                (Phase::Progressing, look, 0)
            );
            let why = r.state.last_verdict.as_ref().map(|v| format!("{v:?}")).unwrap_or_default();
            assert!(why.contains("did not answer within"), "look {look}: {why}");
        } else {
            assert_eq!(r.state.phase, Phase::Aborted, "{:?}", r.state);
        }
    }
    assert_eq!(canary_weight(&vs(&emu, NS)), 0);
}

/// The same through `canaryd run --crds` (the loop, watches and all), in real time: Prometheus
/// hangs for everyone and 100 tenants' gates hang; an operator abort written on the
/// VirtualService is applied within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_applies_an_abort_within_2s_while_prometheus_and_100_gates_hang() {
    use crate::real_daemon::{log_tail, process_cluster, spawn_daemon};
    let mut tally = SuiteTally::start("hangs-daemon");
    let (emu, _prom, dir) = process_cluster().await;
    let (prom, gate) = (black_hole().await, black_hole().await);
    let resource = |ns: &str, extra: &str| {
        format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: {ns}}}\nspec:\n  target: {{virtualService: reviews, route: main, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  steps: [{{weight: 20, bake: 10m}}, {{weight: 50, bake: 10m}}]\n  analysis: {{interval: 10s}}\n{extra}"
        )
    };
    load_namespace(&emu, NS);
    emu.apply_yaml(&resource(NS, "")).unwrap();
    let gated = format!("  gates: [{{name: hold, kind: confirm-rollout, url: \"{gate}\", timeout: 5m}}]\n");
    for i in 0..TENANTS {
        let ns = format!("tenant-{i}");
        load_namespace(&emu, &ns);
        emu.apply_yaml(&resource(&ns, &gated)).unwrap();
    }
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let log = dir.path().join("daemon.log");
    let _daemon = spawn_daemon(&kubeconfig, &prom, "canaryd-0", false, &log);
    let mut v = Vec::new();
    // The rollout starts (no evidence needed) and its first look hangs on Prometheus.
    let started = Instant::now();
    while state_of(&vs(&emu, NS)).phase != Phase::Progressing && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if state_of(&vs(&emu, NS)).phase != Phase::Progressing {
        panic!("the rollout did not start within 60 s\n{}", log_tail(&log));
    }
    // Let a look become due and hang (interval 10 s), then abort in the middle of it.
    tokio::time::sleep(Duration::from_secs(11)).await;
    write_command(&emu, NS, "abort: hung everything").await;
    let landed = until_aborted(&emu, NS, Duration::from_secs(40)).await;
    match landed {
        Some(d) if d <= Duration::from_secs(2) => {}
        Some(d) => v.push(format!("abort landed {d:?} after it was written (limit 2 s)")),
        None => {
            v.push(format!("abort not on the VirtualService 40 s after it was written\n{}", log_tail(&log)))
        }
    }
    tally.record(
        format!(
            "hangs/daemon prometheus+{TENANTS}gates abort_landed={}",
            landed.map(|d| format!("{:.0}ms", d.as_secs_f64() * 1e3)).unwrap_or_else(|| "never".into())
        ),
        TENANTS + 1,
        &v,
    );
    drop(tally);
    assert!(v.is_empty(), "{v:#?}");
}
