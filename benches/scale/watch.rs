//! The watch-driven daemon at scale (issue 12): the real `RunLoop` (watch caches, fast path,
//! background looks, background gates) in real time over N policies of which A have a rollout
//! in progress, against the emulator in its own process over HTTP.
//!
//! - Idle policies carry a finished (promoted) rollout for their canary's current template:
//!   nothing to do until it changes.
//! - 100 of the active rollouts (`SCALE_WATCH_SLOW`) have a rollback gate that never answers
//!   (a black-holed port) and a custom query whose Prometheus answer takes 10 s.
//! - During the measurement, `SCALE_WATCH_PROBES` idle policies get a new canary template, one
//!   every few seconds: the time from that Deployment change to the first write of their
//!   VirtualService (a rollout starting) is measured by a watch of the bench's own.
//!
//! Roles: `watch` (this loop, measuring itself), `watch-emulator` (the emulator; answers
//! `stats` with requests classified by namespace: idle, active, probe, or none).

use crate::emulator::EmulatorProcess;
use crate::fixtures::{fixtures, namespace, STEPS};
use crate::measure::{cpu_seconds, mib, percentile, status_kib};
use crate::{env_usize, INTERVAL_S};
use canaryd::alert::egress::parse_range;
use canaryd::alert::{
    Deliverer, DelivererConfig, EgressClient, EgressPolicy, MapSecretStore, RenderOptions, RetryPolicy,
    WebhookSender,
};
use canaryd::daemon::cache::Caches;
use canaryd::daemon::metrics::DaemonMetrics;
use canaryd::daemon::run_loop::{PolicySource, RunLoop};
use canaryd::daemon::{DaemonEffects, Driver, NamespaceScope};
use canaryd::engine::{Phase, RolloutState};
use canaryd::observation::SideObservation;
use canaryd::prometheus::{MetricsSource, QueryError, WorkloadKey};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube_emulator::Emulator;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The namespace of the VirtualService the bench patches to time the bare round trip.
const RTT_NAMESPACE: &str = "bench-rtt";

/// (total, active, slow, probes, seconds measured) from the environment.
pub fn settings() -> (usize, usize, usize, usize, u64) {
    let n = env_usize("SCALE_WATCH_N").unwrap_or(10_000);
    let active = env_usize("SCALE_WATCH_ACTIVE").unwrap_or(n / 10).min(n);
    let slow = env_usize("SCALE_WATCH_SLOW").unwrap_or(100).min(active);
    let probes = env_usize("SCALE_WATCH_PROBES").unwrap_or(40).min(n - active);
    let secs = env_usize("SCALE_WATCH_SECS").unwrap_or(120) as u64;
    (n, active, slow, probes, secs)
}

fn class(path: &str, n: usize, active: usize, probes: usize) -> &'static str {
    if path.contains(&format!("/namespaces/{RTT_NAMESPACE}/")) {
        return "rtt";
    }
    let Some(rest) = path.split("/namespaces/scale-").nth(1) else { return "none" };
    let Ok(i) = rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<usize>() else {
        return "none";
    };
    if i >= n - probes {
        "probe"
    } else if i < active {
        "active"
    } else {
        "idle"
    }
}

/// The emulator: fixtures for every policy, idle ones with a promoted rollout recorded.
pub fn emulator() {
    let (n, active, _, probes, _) = settings();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let emu = rt.block_on(Emulator::start()).expect("emulator starts");
    let empty_kib = status_kib("VmRSS");
    for i in 0..n {
        let mut objects = fixtures(i);
        let mut vs = objects.remove(0);
        for obj in objects {
            emu.apply_value(obj).expect("fixture applies");
        }
        if i >= active {
            // As the daemon reads it: typed, then JSON.
            let stored = emu.get("apps", "v1", "deployments", &namespace(i), "web-canary").expect("canary");
            let typed: Deployment = serde_json::from_value(stored).expect("deployment");
            let revision =
                canaryd::daemon::pod_template_revision(&serde_json::to_value(typed).expect("json"));
            let state = RolloutState { phase: Phase::Promoted, revision, ..RolloutState::default() };
            vs["metadata"]["annotations"] =
                json!({"canaryd.io/state-web": serde_json::to_string(&state).expect("state")});
        }
        emu.apply_value(vs).expect("fixture applies");
    }
    // A VirtualService no policy routes: the bench's bare patch round trips under the load.
    let mut rtt = fixtures(0).remove(0);
    rtt["metadata"]["namespace"] = json!(RTT_NAMESPACE);
    emu.apply_value(rtt).expect("fixture applies");
    crate::emulator::serve(&emu, empty_kib, |log| {
        let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
        let mut vs_writes = 0u64;
        for r in log {
            *by_class.entry(class(&r.path, n, active, probes).to_string()).or_default() += 1;
            *by_verb.entry(r.verb.clone()).or_default() += 1;
            if r.verb == "patch" && r.path.contains("/virtualservices/") && r.status < 300 {
                vs_writes += 1;
            }
        }
        json!({"requests": log.len(), "by_class": by_class, "by_verb": by_verb, "vs_writes": vs_writes})
    });
}

/// Healthy counts for every workload; custom queries of the slow tenants answer after 10 s.
struct Metrics {
    healthy: SideObservation,
}

impl MetricsSource for Metrics {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        _end: Timestamp,
        _window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        Ok(keys.iter().map(|k| (k.clone(), self.healthy.clone())).collect())
    }

    async fn query_scalar(&self, promql: &str, _at: Timestamp) -> Result<f64, QueryError> {
        if promql.contains("slow_tenant") {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Ok(0.0)
    }
}

fn policy_text(i: usize, slow: bool, gate: &str) -> String {
    let extra = if slow {
        format!("  gates: [{{name: hold, kind: rollback, url: \"{gate}\", timeout: 5m}}]\n")
    } else {
        String::new()
    };
    let custom = if slow {
        ", custom: [{name: slow, query: 'slow_tenant{namespace=\"{{ namespace }}\"}', max: 1}]"
    } else {
        ""
    };
    format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  \
         target: {{virtualService: web, route: main, stable: {{subset: stable, workload: web-stable}}, canary: {{subset: canary, workload: web-canary}}}}\n  \
         steps: {STEPS}\n  \
         analysis: {{interval: {INTERVAL_S}s, successRate: {{tolerance: 2}}, latency: {{tolerance: 50}}{custom}}}\n{extra}",
        ns = namespace(i)
    )
}

/// Upper bounds of the p50 and p99 buckets of `canaryd_decision_seconds` between two renders.
fn decision_percentiles(before: &str, after: &str) -> (f64, f64, u64) {
    let buckets = |text: &str| -> Vec<(f64, u64)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("canaryd_decision_seconds_bucket{le=\""))
            .filter_map(|l| {
                let (le, rest) = l.split_once("\"}")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, rest.trim().parse().ok()?))
            })
            .collect()
    };
    let (b0, b1) = (buckets(before), buckets(after));
    let delta: Vec<(f64, u64)> =
        b1.iter().map(|(le, c)| (*le, c - b0.iter().find(|(l, _)| l == le).map_or(0, |(_, c)| *c))).collect();
    let total = delta.last().map_or(0, |(_, c)| *c);
    let at = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        delta.iter().find(|(_, c)| *c >= want.max(1)).map_or(f64::NAN, |(le, _)| le * 1000.0)
    };
    (at(0.5), at(0.99), total)
}

fn phases(metrics: &DaemonMetrics) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in metrics.render().lines().filter(|l| l.starts_with("canaryd_rollout_phase") && l.ends_with("} 1"))
    {
        if let Some(p) = l.split("phase=\"").nth(1).and_then(|r| r.split('"').next()) {
            *out.entry(p.to_string()).or_default() += 1;
        }
    }
    out
}

fn progressing(metrics: &DaemonMetrics) -> usize {
    metrics.render().lines().filter(|l| l.contains("phase=\"Progressing\"} 1")).count()
}

/// The loop process: prints one `WATCH <json>` line.
pub fn run() {
    let (n, active, slow, probes, secs) = settings();
    // `SCALE_LOG=warn` (any tracing filter): the daemon's logs on stderr, to see why a
    // reconcile failed.
    if let Ok(filter) = std::env::var("SCALE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let base_kib = status_kib("VmRSS");
    let setup = Instant::now();
    let mut emulator = EmulatorProcess::spawn_role("watch-emulator", n);
    let fixtures_s = setup.elapsed().as_secs_f64();
    eprintln!("  watch: {n} policies ({active} active, {slow} slow) loaded in {fixtures_s:.1} s");
    let row = rt.block_on(async {
        let gate = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}", l.local_addr().expect("addr"));
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = l.accept().await {
                    held.push(s);
                }
            });
            url
        };
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..n {
            std::fs::write(dir.path().join(format!("p{i:05}.yaml")), policy_text(i, i < slow, &gate)).expect("write");
        }
        let mut config = kube::Config::new(emulator.url.parse().expect("emulator URL"));
        config.default_namespace = "default".into();
        let client = kube::Client::try_from(config).expect("kube client");
        let secrets = Arc::new(MapSecretStore::new());
        // The hung gates listen on loopback: allowed, as `--egress-allow 127.0.0.0/8` would.
        let loopback = || EgressPolicy::new(&[], &[parse_range("127.0.0.0/8").expect("range")]);
        let deliverer = Deliverer::new(DelivererConfig {
            mailer: None,
            webhooks: WebhookSender::new(Duration::from_secs(10), loopback()).expect("webhooks"),
            secrets: secrets.clone(),
            render: RenderOptions { prometheus_url: None, ui_url: None },
            retry: RetryPolicy::default(),
        });
        let gates = EgressClient::new(Duration::from_secs(10), loopback()).expect("gate client");
        let effects = DaemonEffects::new(deliverer, gates, secrets);
        let healthy = crate::metrics::healthy();
        let cache = Caches::start(&client, &NamespaceScope::All, false);
        let driver = Arc::new(Driver::new(client.clone(), Metrics { healthy }, effects).with_cache(cache.clone()));
        let metrics = Arc::new(DaemonMetrics::default());
        let run = RunLoop {
            driver,
            client: client.clone(),
            source: PolicySource { dir: Some(dir.path().to_path_buf()), crds: false },
            scope: NamespaceScope::All,
            elector: None,
            metrics: metrics.clone(),
            cache: Some(cache.clone()),
            once: false,
            dashboard: canaryd::ui::Dashboard::off(),
        };
        tokio::spawn(run.run(std::future::pending()));
        // Warm-up: every active rollout started.
        let warm = Instant::now();
        while progressing(&metrics) < active && warm.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let warm_s = warm.elapsed().as_secs_f64();
        eprintln!("  watch: {} rollouts progressing after {warm_s:.1} s; measuring {secs} s", progressing(&metrics));

        // The bench's own watch: the first write after each probe's Deployment change.
        let changed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let first_write: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
        {
            let (changed, first_write) = (changed.clone(), first_write.clone());
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &canaryd::daemon::virtual_service_resource());
            tokio::spawn(async move {
                let mut events = std::pin::pin!(kube::runtime::watcher(api, Default::default()).touched_objects());
                while let Some(Ok(vs)) = events.next().await {
                    let ns = vs.metadata.namespace.clone().unwrap_or_default();
                    let Some(t0) = changed.lock().unwrap().get(&ns).copied() else { continue };
                    let annotations = vs.metadata.annotations.clone().unwrap_or_default();
                    let phase = annotations.get("canaryd.io/state-web").map_or("", String::as_str);
                    if !phase.contains("\"Promoted\"") {
                        first_write.lock().unwrap().entry(ns).or_insert_with(|| t0.elapsed());
                    }
                }
            });
        }
        // Bare patch round trips of an unrouted VirtualService, one every 250 ms, under the
        // same load: what the API server alone adds to verdict → patch.
        let rtt: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let rtt_task = {
            let (rtt, client) = (rtt.clone(), client.clone());
            tokio::spawn(async move {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client, RTT_NAMESPACE, &canaryd::daemon::virtual_service_resource());
                for k in 0u64.. {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let patch = json!({"metadata": {"annotations": {"bench/rtt": k.to_string()}}});
                    let t = Instant::now();
                    if api.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                        rtt.lock().unwrap().push(t.elapsed());
                    }
                }
            })
        };
        let before = emulator.stats();
        let (cpu0, events0, render0, t0) = (cpu_seconds(), cache.touched.events.load(std::sync::atomic::Ordering::Relaxed), metrics.render(), Instant::now());
        let every = Duration::from_secs_f64(secs as f64 / (probes.max(1) as f64 + 1.0));
        for k in 0..probes {
            tokio::time::sleep(every).await;
            let ns = namespace(n - 1 - k);
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": format!("registry.example/web:2.{k}")}]}}}});
            changed.lock().unwrap().insert(ns, Instant::now());
            api.patch("web-canary", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("probe patch");
        }
        tokio::time::sleep(Duration::from_secs(secs).saturating_sub(t0.elapsed())).await;
        let wall = t0.elapsed().as_secs_f64();
        rtt_task.abort();
        let mut rtt: Vec<Duration> = rtt.lock().unwrap().clone();
        rtt.sort();
        let sample: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace(0), &canaryd::daemon::virtual_service_resource());
        if let Ok(vs) = sample.get("web").await {
            let state = vs.metadata.annotations.unwrap_or_default().get("canaryd.io/state-web").cloned();
            let state: RolloutState = state.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
            eprintln!(
                "  watch: a slow tenant at the end: {} with {} consecutive errors",
                state.phase.as_str(),
                state.consecutive_errors
            );
        }
        let stats = emulator.stats();
        let emu_cpu = stats["cpu_s"].as_f64().unwrap_or(0.0) - before["cpu_s"].as_f64().unwrap_or(0.0);
        let cpu = cpu_seconds() - cpu0;
        let events = cache.touched.events.load(std::sync::atomic::Ordering::Relaxed) - events0;
        let (v2w_p50, v2w_p99, v2w_n) = decision_percentiles(&render0, &metrics.render());
        // (Read after the request counts.) Every rollout that did not stay healthy, and why (all are healthy but the slow ones).
        let mut ended: BTreeMap<String, usize> = BTreeMap::new();
        for i in (0..active).chain(n - probes..n) {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace(i), &canaryd::daemon::virtual_service_resource());
            let Ok(vs) = api.get("web").await else { continue };
            let state = vs.metadata.annotations.unwrap_or_default().get("canaryd.io/state-web").cloned();
            let state: RolloutState = state.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
            if state.phase == Phase::Aborted {
                let who = if i < slow { "slow" } else { "healthy" };
                *ended.entry(format!("{who}: {}", state.reason.unwrap_or_default())).or_default() += 1;
            }
        }
        for (why, count) in &ended {
            eprintln!("  watch: aborted {count}× — {why}");
        }
        let mut lat: Vec<Duration> = first_write.lock().unwrap().values().copied().collect();
        lat.sort();
        let per_hour = |c: &str| stats["by_class"][c].as_f64().unwrap_or(0.0) * 3600.0 / wall;
        json!({
            "n": n, "active": active, "slow": slow, "probes": probes, "secs": wall,
            "fixtures_s": fixtures_s, "warm_s": warm_s,
            "idle_per_hour": per_hour("idle"), "active_per_hour": per_hour("active"),
            "probe_per_hour": per_hour("probe"), "shared_per_hour": per_hour("none"),
            "idle_per_policy_hour": per_hour("idle") / (n - active - probes).max(1) as f64,
            "active_per_policy_hour": per_hour("active") / active.max(1) as f64,
            "by_verb": stats["by_verb"],
            "watch_events": events, "writes": stats["vs_writes"],
            "rss_mib": mib(status_kib("VmRSS")), "hwm_mib": mib(status_kib("VmHWM")), "base_mib": mib(base_kib),
            "cpu_pct": 100.0 * cpu / wall,
            "emu_rss_mib": mib(stats["rss_kib"].as_u64().unwrap_or(0)),
            "emu_cpu_pct": 100.0 * emu_cpu / wall,
            "change_to_write_n": lat.len(),
            "change_to_write_p50_ms": percentile(&lat, 50.0), "change_to_write_p99_ms": percentile(&lat, 99.0),
            "rtt_n": rtt.len(), "rtt_p50_ms": percentile(&rtt, 50.0), "rtt_p99_ms": percentile(&rtt, 99.0),
            "v2w_p50_ms": v2w_p50, "v2w_p99_ms": v2w_p99, "v2w_n": v2w_n,
            "progressing": progressing(&metrics),
            "phases": phases(&metrics),
            "errors": metrics.render().lines().filter(|l| l.starts_with("canaryd_errors_total")).collect::<Vec<_>>().join(" "),
        })
    });
    drop(emulator);
    println!("WATCH {row}");
}

/// The orchestrator's part: runs the `watch` process and prints its table.
pub fn orchestrate() {
    let (n, active, slow, _, secs) = settings();
    eprintln!("scale: watch-driven loop, N={n} ({active} active, {slow} slow), {secs} s real time");
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env(crate::ROLE, "watch")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("watch process runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(row) = text.lines().find_map(|l| l.strip_prefix("WATCH ")) else {
        eprintln!("scale: the watch run failed ({}); stdout: {text}", out.status);
        std::process::exit(1);
    };
    let r: Value = serde_json::from_str(row).expect("row JSON");
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "watch-driven daemon (RunLoop, real time {:.0} s): {} policies, {} active ({} with a hung rollback gate and 10 s custom queries), {} idle→new-template probes",
        f("secs"), r["n"], r["active"], r["slow"], r["probes"]
    );
    println!(
        "  fixtures loaded in {:.0} s; all active rollouts progressing after {:.0} s",
        f("fixtures_s"),
        f("warm_s")
    );
    println!("  API requests per hour: idle {:.0} ({:.2} per idle policy), active {:.0} ({:.1} per active policy), probes {:.0}, cluster-wide (watches) {:.0}",
        f("idle_per_hour"), f("idle_per_policy_hour"), f("active_per_hour"), f("active_per_policy_hour"), f("probe_per_hour"), f("shared_per_hour"));
    println!("  requests by verb: {}", r["by_verb"]);
    println!("  watch events {} ; VirtualService writes {} ; daemon RSS {:.1} MiB (peak {:.1}, {:.1} before start) ; CPU {:.1}% of one core ; emulator RSS {:.1} MiB, CPU {:.1}%",
        r["watch_events"], r["writes"], f("rss_mib"), f("hwm_mib"), f("base_mib"), f("cpu_pct"), f("emu_rss_mib"), f("emu_cpu_pct"));
    println!(
        "  Deployment change → first write: p50 {:.0} ms, p99 {:.0} ms ({} probes)",
        f("change_to_write_p50_ms"),
        f("change_to_write_p99_ms"),
        r["change_to_write_n"]
    );
    println!("  verdict → patch (all writes, hung gates and 10 s custom queries present): p50 ≤ {:.1} ms, p99 ≤ {:.1} ms ({} writes; histogram bucket bounds)",
        f("v2w_p50_ms"), f("v2w_p99_ms"), r["v2w_n"]);
    println!(
        "  bare VirtualService patch round trip under the same load (unrouted object, every 250 ms): p50 {:.1} ms, p99 {:.1} ms ({} patches)",
        f("rtt_p50_ms"),
        f("rtt_p99_ms"),
        r["rtt_n"]
    );
    println!("  phases at the end: {} ; {}", r["phases"], r["errors"]);
}
