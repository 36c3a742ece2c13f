//! The orchestrator (this binary without a role): one driver process per size, each
//! answering with a `ROW <json>` line, then the report and the targets.

use crate::{env_usize, INTERVAL_S, ROLE};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_SIZES: [usize; 4] = [10, 100, 1000, 5000];

/// Measures each size in a fresh driver process, so no size inherits another's memory.
pub fn run() {
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    if sizes.is_empty() {
        crate::watch::orchestrate();
        return;
    }
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
    if env_usize("SCALE_WATCH_N") != Some(0) {
        crate::watch::orchestrate();
    }
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
