//! Scale benchmark (issue 6, item 2): one daemon (`Driver::cycle` over every policy) running
//! 10, 100, 1,000 and 5,000 concurrent rollouts against the Kubernetes API emulator and a cheap
//! synthetic metrics source, with time as an argument (the clock advances by the 30 s analysis
//! interval per cycle, so every cycle is an analysis cycle).
//!
//! Three processes per size, so that memory and CPU are attributed honestly:
//! - the orchestrator (this binary without a role) spawns, for each size N,
//! - a **driver** process (`CANARYD_SCALE_ROLE=driver`): the daemon side only — tokio runtime,
//!   kube client, N parsed policies, the `Driver`, the synthetic metrics source — which spawns
//! - an **emulator** process (`CANARYD_SCALE_ROLE=emulator`): the API emulator holding the N
//!   rollouts' objects, talked to over loopback HTTP; it answers `stats` on stdin with its
//!   request log (then cleared), its resident memory and its CPU time.
//!
//! The driver's RSS and CPU are what a production canaryd would use (its API server and
//! Prometheus live elsewhere); the emulator's are reported next to them.
//!
//! `cargo bench --bench scale`. Environment overrides: `SCALE_SIZES=10,100` (sizes),
//! `SCALE_CYCLES=12` (cycles for every size; default 12, 8 for 5,000).

use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::ISTIO_BUCKETS_MS;
use canaryd::engine::Phase;
use canaryd::observation::{Histogram, SideObservation};
use canaryd::policy::{parse_policy, Policy};
use canaryd::prometheus::{MetricsSource, QueryError, WorkloadKey};
use jiff::Timestamp;
use kube_emulator::Emulator;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROLE: &str = "CANARYD_SCALE_ROLE";
const DEFAULT_SIZES: [usize; 4] = [10, 100, 1000, 5000];
const INTERVAL_S: i64 = 30;
/// Ten steps of one minute (two analysis intervals) each: no rollout finishes within the
/// bench, so every cycle analyses and writes every rollout (the busiest steady state).
const STEPS: &str = "[{weight: 5, bake: 1m}, {weight: 10, bake: 1m}, {weight: 20, bake: 1m}, \
                     {weight: 30, bake: 1m}, {weight: 40, bake: 1m}, {weight: 50, bake: 1m}, \
                     {weight: 60, bake: 1m}, {weight: 70, bake: 1m}, {weight: 80, bake: 1m}, \
                     {weight: 90, bake: 1m}]";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("emulator") => emulator_main(),
        Ok("driver") => driver_main(),
        _ => orchestrate(),
    }
}

// ---- fixtures -------------------------------------------------------------------------------

fn namespace(i: usize) -> String {
    format!("scale-{i:05}")
}

/// Rollout `i`: a VirtualService `web` routing stable/canary subsets, their DestinationRule
/// and the two Deployments.
fn fixtures(i: usize) -> Vec<Value> {
    let ns = namespace(i);
    let deployment = |name: &str, version: &str, image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web", "version": version}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web", "version": version}},
                "template": {
                    "metadata": {"labels": {"app": "web", "version": version}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        })
    };
    vec![
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "hosts": ["web"],
                "http": [{
                    "name": "main",
                    "route": [
                        {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
                        {"destination": {"host": "web", "subset": "canary"}, "weight": 0}
                    ],
                    "retries": {"attempts": 2, "perTryTimeout": "2s"}
                }]
            }
        }),
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "host": "web",
                "subsets": [
                    {"name": "stable", "labels": {"version": "stable"}},
                    {"name": "canary", "labels": {"version": "canary"}}
                ]
            }
        }),
        deployment("web-stable", "stable", "registry.example/web:1.0.0"),
        deployment("web-canary", "canary", "registry.example/web:1.1.0"),
    ]
}

fn policy(i: usize) -> Policy {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  \
         target: {{virtualService: web, route: main, stable: {{subset: stable, workload: web-stable}}, canary: {{subset: canary, workload: web-canary}}}}\n  \
         steps: {STEPS}\n  \
         analysis: {{interval: {INTERVAL_S}s, successRate: {{tolerance: 2}}, latency: {{tolerance: 50}}}}\n",
        ns = namespace(i)
    );
    parse_policy("scale.yaml", &text).unwrap_or_else(|e| panic!("generated policy {i} is invalid: {e}"))
}

// ---- process measurements -------------------------------------------------------------------

/// A `kB` field of /proc/self/status (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this whole process (every thread), from getrusage.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

// ---- emulator process -----------------------------------------------------------------------

fn emulator_main() {
    let n = env_usize("SCALE_N").expect("SCALE_N");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let emu = rt.block_on(Emulator::start()).expect("emulator starts");
    let empty_kib = status_kib("VmRSS");
    rt.block_on(async {
        for i in 0..n {
            for obj in fixtures(i) {
                emu.apply_value(obj).expect("fixture applies");
            }
        }
    });
    emu.clear_requests();
    let mut out = std::io::stdout().lock();
    writeln!(out, "URL {} {empty_kib}", emu.url()).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() != "stats" {
            break;
        }
        let log = emu.requests();
        emu.clear_requests();
        let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
        for r in &log {
            let what = if r.status >= 400 { format!("{} {}", r.verb, r.status) } else { r.verb.clone() };
            *by_verb.entry(what).or_default() += 1;
        }
        let stats = json!({
            "requests": log.len(),
            "by_verb": by_verb,
            "rss_kib": status_kib("VmRSS"),
            "hwm_kib": status_kib("VmHWM"),
            "cpu_s": cpu_seconds(),
        });
        writeln!(out, "{stats}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The driver's end of the emulator process.
struct EmulatorProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    url: String,
    /// The emulator's RSS right after starting, before the fixtures, KiB.
    empty_kib: u64,
}

impl EmulatorProcess {
    fn spawn(n: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .env(ROLE, "emulator")
            .env("SCALE_N", n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("emulator process starts");
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("emulator greets");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("URL"), "emulator said {line:?}");
        let url = parts.next().expect("url").to_string();
        let empty_kib = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        EmulatorProcess { child, stdin, stdout, url, empty_kib }
    }

    /// Requests served since the last call (by verb), RSS and CPU of the emulator process.
    fn stats(&mut self) -> Value {
        writeln!(self.stdin, "stats").expect("emulator stdin");
        self.stdin.flush().expect("emulator stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("emulator answers");
        serde_json::from_str(&line).expect("stats JSON")
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

// ---- metrics source -------------------------------------------------------------------------

/// Healthy, identical counts for every requested workload; counts what Prometheus would be asked.
struct SyntheticMetrics {
    observe_calls: AtomicU64,
    scalar_calls: AtomicU64,
    keys_asked: AtomicU64,
    healthy: SideObservation,
}

impl SyntheticMetrics {
    fn new() -> Self {
        let mut latency = Histogram::empty(ISTIO_BUCKETS_MS);
        // 3,000 requests in a 30 s window (100 rps per side), medians around 25-50 ms.
        for (i, c) in [(2, 300), (3, 600), (4, 1200), (5, 700), (6, 150), (7, 40), (8, 10)] {
            latency.counts[i] = c;
        }
        let healthy = SideObservation { requests: 3000, errors: 3, latency: Some(latency) };
        SyntheticMetrics {
            observe_calls: AtomicU64::new(0),
            scalar_calls: AtomicU64::new(0),
            keys_asked: AtomicU64::new(0),
            healthy,
        }
    }

    /// PromQL queries so far: each grouped `observe_sides` is 3 queries (requests, errors,
    /// latency buckets), each custom-check scalar is 1.
    fn queries(&self) -> u64 {
        3 * self.observe_calls.load(Ordering::Relaxed) + self.scalar_calls.load(Ordering::Relaxed)
    }
}

impl MetricsSource for SyntheticMetrics {
    async fn observe_sides(
        &self,
        keys: &[WorkloadKey],
        _end: Timestamp,
        _window: Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        self.observe_calls.fetch_add(1, Ordering::Relaxed);
        self.keys_asked.fetch_add(keys.len() as u64, Ordering::Relaxed);
        Ok(keys.iter().map(|k| (k.clone(), self.healthy.clone())).collect())
    }

    async fn query_scalar(&self, _promql: &str, _at: Timestamp) -> Result<f64, QueryError> {
        self.scalar_calls.fetch_add(1, Ordering::Relaxed);
        Ok(0.0)
    }
}

// ---- driver process -------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// Bare VirtualService patch round trips (a merge patch of one annotation) against the same
/// emulator, one at a time and 32 in flight (the driver's `buffered(32)`): separates the
/// loopback round trip from queueing behind the cycle's other requests. Sorted, per request.
async fn probe_patches(client: &kube::Client, policies: &[Policy]) -> (Vec<Duration>, Vec<Duration>) {
    use futures::StreamExt;
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let sample = &policies[..policies.len().min(1000)];
    let one = |p: &Policy, tag: usize| {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &p.namespace(),
            &canaryd::daemon::virtual_service_resource(),
        );
        async move {
            let patch = json!({"metadata": {"annotations": {"bench/probe": tag.to_string()}}});
            let t = Instant::now();
            api.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("probe patch");
            t.elapsed()
        }
    };
    let mut serial = Vec::new();
    for (i, p) in sample.iter().enumerate() {
        serial.push(one(p, i).await);
    }
    let mut parallel: Vec<Duration> =
        futures::stream::iter(sample.iter().enumerate()).map(|(i, p)| one(p, i)).buffered(32).collect().await;
    serial.sort();
    parallel.sort();
    (serial, parallel)
}

fn driver_main() {
    let n = env_usize("SCALE_N").expect("SCALE_N");
    let cycles = env_usize("SCALE_CYCLES").expect("SCALE_CYCLES");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let base_kib = status_kib("VmRSS");
    let setup = Instant::now();
    let mut emulator = EmulatorProcess::spawn(n);
    let fixtures_s = setup.elapsed().as_secs_f64();
    let row = rt.block_on(async {
        let policies: Vec<Policy> = (0..n).map(policy).collect();
        let mut config = kube::Config::new(emulator.url.parse().expect("emulator URL"));
        config.default_namespace = "default".into();
        let client = kube::Client::try_from(config).expect("kube client");
        let driver = Driver::new(client, SyntheticMetrics::new(), NoEffects);
        let ready_kib = status_kib("VmRSS");

        let mut now: Timestamp = "2026-11-23T01:00:00Z".parse().expect("time");
        let (mut cpu, mut wall, mut queries, mut api, mut writes, mut errors) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0usize, 0usize);
        let mut latencies: Vec<Duration> = Vec::new();
        let mut verbs: BTreeMap<String, u64> = BTreeMap::new();
        let mut first_error = None;
        let mut state_bytes = 0usize;
        let mut phases: BTreeMap<String, usize> = BTreeMap::new();
        let mut weights: BTreeMap<u32, usize> = BTreeMap::new();
        let emu_cpu0 = emulator.stats()["cpu_s"].as_f64().unwrap_or(0.0);
        for c in 0..cycles {
            let (cpu0, q0, t0) = (cpu_seconds(), driver.metrics.queries(), Instant::now());
            let reports = driver.cycle(&policies, now).await;
            wall.push(t0.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - cpu0);
            queries.push(driver.metrics.queries() - q0);
            let stats = emulator.stats();
            api.push(stats["requests"].as_u64().unwrap_or(0));
            for (verb, count) in stats["by_verb"].as_object().into_iter().flatten() {
                *verbs.entry(verb.clone()).or_default() += count.as_u64().unwrap_or(0);
            }
            let last = c + 1 == cycles;
            let mut wrote_now = 0;
            for r in reports {
                match r {
                    Ok(r) => {
                        if r.wrote {
                            wrote_now += 1;
                        }
                        latencies.extend(r.verdict_to_write);
                        if last {
                            state_bytes += serde_json::to_string(&r.state).map_or(0, |t| t.len());
                            *phases.entry(r.state.phase.as_str().to_string()).or_default() += 1;
                            if r.state.phase == Phase::Progressing {
                                *weights.entry(r.state.traffic.canary_weight).or_default() += 1;
                            }
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            writes += wrote_now;
            eprintln!(
                "  N={n:<5} cycle {:>2}/{cycles}: {:>7.3} s wall, {:>7.3} CPU s, {:>2} PromQL, {:>6} API requests, {:>5} writes",
                c + 1,
                wall[c],
                cpu[c],
                queries[c],
                api[c],
                wrote_now
            );
            now = Timestamp::from_second(now.as_second() + INTERVAL_S).expect("time");
        }
        latencies.sort();
        let emu = emulator.stats();
        let (probe1, probe32) = probe_patches(&driver.client, &policies).await;
        emulator.stats();
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        json!({
            "n": n,
            "cycles": cycles,
            "fixtures_s": fixtures_s,
            "driver_base_mib": mib(base_kib),
            "driver_ready_mib": mib(ready_kib),
            "driver_rss_mib": mib(status_kib("VmRSS")),
            "driver_hwm_mib": mib(status_kib("VmHWM")),
            "emu_empty_mib": mib(emulator.empty_kib),
            "emu_rss_mib": mib(emu["rss_kib"].as_u64().unwrap_or(0)),
            "cpu_per_cycle": sum(&cpu) / cycles as f64,
            "cpu_max": cpu.iter().copied().fold(0.0, f64::max),
            "emu_cpu_per_cycle": (emu["cpu_s"].as_f64().unwrap_or(0.0) - emu_cpu0) / cycles as f64,
            "wall_per_cycle": sum(&wall) / cycles as f64,
            "wall_max": wall.iter().copied().fold(0.0, f64::max),
            "queries_mean": queries.iter().sum::<u64>() as f64 / cycles as f64,
            "queries_max": queries.iter().copied().max().unwrap_or(0),
            "keys_asked": driver.metrics.keys_asked.load(Ordering::Relaxed),
            "api_per_cycle": api.iter().sum::<u64>() as f64 / cycles as f64,
            "verbs": verbs,
            "writes_per_cycle": writes as f64 / cycles as f64,
            "errors": errors,
            "first_error": first_error,
            "latency_samples": latencies.len(),
            "p50_ms": percentile(&latencies, 50.0),
            "p99_ms": percentile(&latencies, 99.0),
            "max_ms": latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            "probe1_p50_ms": percentile(&probe1, 50.0),
            "probe1_p99_ms": percentile(&probe1, 99.0),
            "probe32_p50_ms": percentile(&probe32, 50.0),
            "probe32_p99_ms": percentile(&probe32, 99.0),
            "state_bytes": state_bytes / n.max(1),
            "phases": phases,
            "weights": weights,
        })
    });
    drop(emulator);
    println!("ROW {row}");
}

// ---- orchestrator ---------------------------------------------------------------------------

fn orchestrate() {
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &sizes {
        let cycles = env_usize("SCALE_CYCLES").unwrap_or(if n >= 5000 { 8 } else { 12 });
        eprintln!("scale: N={n}, {cycles} cycles of {INTERVAL_S} s simulated time");
        let out = Command::new(std::env::current_exe().expect("current exe"))
            .env(ROLE, "driver")
            .env("SCALE_N", n.to_string())
            .env("SCALE_CYCLES", cycles.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("driver process runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(row) = text.lines().find_map(|l| l.strip_prefix("ROW ")) else {
            eprintln!("scale: the driver for N={n} failed ({}); stdout: {text}", out.status);
            std::process::exit(1);
        };
        rows.push(serde_json::from_str::<Value>(row).expect("row JSON"));
    }
    report(&rows, started.elapsed());
}

fn report(rows: &[Value], elapsed: Duration) {
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!("canaryd scale benchmark: one Driver, N concurrent rollouts, {INTERVAL_S} s analysis interval");
    println!("(driver = the daemon process alone; emu = the API emulator process it talks to over loopback)");
    println!();
    println!(
        "{:>5} {:>6} | {:>9} {:>9} {:>8} | {:>10} {:>7} {:>10} | {:>8} {:>9} {:>7} | {:>8} {:>8} | {:>8}",
        "N",
        "cycles",
        "drv RSS",
        "drv peak",
        "emu RSS",
        "CPU s/cyc",
        "%core",
        "emu CPU s",
        "PromQL",
        "API req",
        "writes",
        "v2w p50",
        "v2w p99",
        "wall s"
    );
    println!(
        "{:>5} {:>6} | {:>9} {:>9} {:>8} | {:>10} {:>7} {:>10} | {:>8} {:>9} {:>7} | {:>8} {:>8} | {:>8}",
        "",
        "",
        "MiB",
        "MiB",
        "MiB",
        "driver",
        "@30s",
        "per cyc",
        "/cycle",
        "/cycle",
        "/cycle",
        "ms",
        "ms",
        "/cycle"
    );
    for r in rows {
        println!(
            "{:>5} {:>6} | {:>9.1} {:>9.1} {:>8.1} | {:>10.4} {:>6.2}% {:>10.3} | {:>4.1}/{:<3} {:>9.0} {:>7.0} | {:>8.2} {:>8.2} | {:>8.3}",
            r["n"].as_u64().unwrap_or(0),
            r["cycles"].as_u64().unwrap_or(0),
            f(r, "driver_rss_mib"),
            f(r, "driver_hwm_mib"),
            f(r, "emu_rss_mib"),
            f(r, "cpu_per_cycle"),
            100.0 * f(r, "cpu_per_cycle") / INTERVAL_S as f64,
            f(r, "emu_cpu_per_cycle"),
            f(r, "queries_mean"),
            r["queries_max"].as_u64().unwrap_or(0),
            f(r, "api_per_cycle"),
            f(r, "writes_per_cycle"),
            f(r, "p50_ms"),
            f(r, "p99_ms"),
            f(r, "wall_per_cycle"),
        );
    }
    println!();
    println!("details per N:");
    for r in rows {
        println!(
            "  N={}: driver RSS {:.1} MiB before the kube client/policies, {:.1} after (idle), {:.1} after the cycles; \
             emulator {:.1} MiB empty → {:.1} holding the fixtures (fixtures loaded in {:.1} s)",
            r["n"],
            f(r, "driver_base_mib"),
            f(r, "driver_ready_mib"),
            f(r, "driver_rss_mib"),
            f(r, "emu_empty_mib"),
            f(r, "emu_rss_mib"),
            f(r, "fixtures_s"),
        );
        println!(
            "        API requests by verb (all cycles): {}; errors {} {}; verdict-to-write samples {}, max {:.2} ms; \
             CPU max {:.4} s/cycle; wall max {:.3} s",
            r["verbs"],
            r["errors"],
            r["first_error"].as_str().unwrap_or(""),
            r["latency_samples"],
            f(r, "max_ms"),
            f(r, "cpu_max"),
            f(r, "wall_max"),
        );
        println!(
            "        bare VS patch round trip, 1 in flight: p50 {:.2} / p99 {:.2} ms; 32 in flight: p50 {:.2} / p99 {:.2} ms",
            f(r, "probe1_p50_ms"),
            f(r, "probe1_p99_ms"),
            f(r, "probe32_p50_ms"),
            f(r, "probe32_p99_ms"),
        );
        println!(
            "        at the end: phases {} canary weights {}; state annotation {} bytes per rollout",
            r["phases"], r["weights"], r["state_bytes"]
        );
    }
    println!();
    println!("targets (1,000 rollouts):");
    match rows.iter().find(|r| r["n"] == 1000) {
        Some(r) => {
            let rss = f(r, "driver_hwm_mib");
            let core = 100.0 * f(r, "cpu_per_cycle") / INTERVAL_S as f64;
            let p99 = f(r, "p99_ms");
            let verdict = |ok: bool| if ok { "MET   " } else { "MISSED" };
            println!(
                "  {} resident ≤ 64 MiB: driver peak {rss:.1} MiB ({:+.1} MiB margin); \
                 with the emulator in the same process it would be ≈ {:.1} MiB",
                verdict(rss <= 64.0),
                64.0 - rss,
                rss + f(r, "emu_rss_mib") - f(r, "driver_base_mib"),
            );
            println!(
                "  {} CPU ≤ 5% of one core at 30 s: {core:.2}% ({:.4} CPU s per cycle; budget 1.5 s)",
                verdict(core <= 5.0),
                f(r, "cpu_per_cycle")
            );
            println!(
                "  {} p99 verdict-to-write ≤ 50 ms: {p99:.2} ms ({:+.2} ms margin)",
                verdict(p99 <= 50.0),
                50.0 - p99
            );
        }
        None => println!("  (N=1000 not run)"),
    }
    let qmax: Vec<u64> = rows.iter().map(|r| r["queries_max"].as_u64().unwrap_or(0)).collect();
    let flat = qmax.windows(2).all(|w| w[1] <= w[0].max(3));
    println!(
        "  {} PromQL queries per cycle do not grow with N: max per cycle {:?} for N = {:?}",
        if flat { "MET   " } else { "MISSED" },
        qmax,
        rows.iter().map(|r| r["n"].as_u64().unwrap_or(0)).collect::<Vec<_>>()
    );
    println!();
    println!("total bench time {:.0} s", elapsed.as_secs_f64());
}
