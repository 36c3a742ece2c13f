//! The driver process (`CANARYD_SCALE_ROLE=driver`): the daemon side alone — runtime, kube
//! client, N parsed policies, the `Driver` and the synthetic metrics — so its RSS and CPU are
//! what a production canaryd would use. It spawns its emulator, runs the cycles, probes the
//! bare API round trip and prints one `ROW <json>` line for the orchestrator.

use crate::emulator::EmulatorProcess;
use crate::fixtures::policy;
use crate::measure::{cpu_seconds, mib, percentile, status_kib};
use crate::metrics::SyntheticMetrics;
use crate::probe::probe_patches;
use crate::{env_usize, INTERVAL_S};
use canaryd::daemon::{Driver, NoEffects};
use canaryd::engine::Phase;
use canaryd::policy::Policy;
use jiff::Timestamp;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Runs `SCALE_CYCLES` cycles over `SCALE_N` rollouts and prints the measurements as one row.
pub fn run() {
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
