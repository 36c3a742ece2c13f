//! Decision-quality benchmark (issues 3 and 11): how often canaryd aborts a healthy canary
//! (identical, within its tolerance, or on Prometheus-shaped data), how often and how fast it
//! aborts a faulty one, and how many failed requests the canary serves before the abort (the
//! blast radius) — next to a Flagger-style fixed-threshold rule and a per-request SPRT oracle
//! that knows the truth, on identical simulated traffic. Ends with the issue-11 TARGETS block.
//!
//! `cargo bench --bench decision_quality` (release). Seeds per cell: `DQ_RUNS` (healthy,
//! default 1000), `DQ_FAULTY_RUNS` (default 500); `DQ_QUICK=1` is a smoke run (40 / 20);
//! `DQ_ONLY=text` runs only the scenarios whose name contains `text` (the TARGETS block then
//! judges only those).
//!
//! Modules: `world` simulates traffic and faults, `prom` turns counters into what the judge is
//! fed (raw samples or `increase()`), `runners` are the deciders, `scenarios` lists what is run,
//! `report` turns the outcomes into tables and targets.

mod prom;
mod report;
mod runners;
mod scenarios;
mod world;

use canaryd::observation::Histogram;
use report::{print_table, summarize, Results};
use runners::Outcome;
use scenarios::Entry;
use std::time::Instant;
use world::{Path, CATS, ISTIO_MS};

/// Runs every seed of one scenario × rate through the deciders, on both cores.
fn run_all(entry: &Entry, rate: f64, runs: u64) -> [Vec<Outcome>; 4] {
    let sc = &entry.scenario;
    // canaryd looks at every scrape on the raw path, every minute on `increase()`.
    let look = if sc.shape.path == Path::Raw { sc.shape.scrape } else { 60 };
    let policy = scenarios::policy(look);
    let plan = scenarios::plan(&policy);
    let weights: Vec<u32> = plan.iter().map(|p| p.0).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2) as u64;
    let parts: Vec<Vec<[Outcome; 4]>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (plan, weights, policy) = (&plan, &weights, &policy);
                s.spawn(move || {
                    (t..runs)
                        .step_by(threads as usize)
                        .map(|i| {
                            // Seeds independent of the rate, so rows of one scenario share
                            // nothing but the model; +1 keeps seed 0 out of splitmix's fixpoint.
                            let seed = i * 1_000_003 + 1;
                            let (request, snapped) = runners::oracle(sc, rate, seed, plan, scenarios::TOL_PP);
                            [
                                runners::canaryd(policy, sc, rate, seed),
                                runners::flagger(sc, rate, seed, weights, FLAGGER_INTERVAL),
                                request,
                                snapped,
                            ]
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).collect()
    });
    let mut out: [Vec<Outcome>; 4] = Default::default();
    for r in parts.into_iter().flatten() {
        for (i, o) in r.into_iter().enumerate() {
            out[i].push(o);
        }
    }
    out
}

/// Flagger's default analysis interval, seconds.
const FLAGGER_INTERVAL: i64 = 60;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// The p99 Prometheus would report for a side's expected histogram (model, not sample).
fn model_p99(probs: &[f64; CATS]) -> f64 {
    let n = 1e9;
    let mut h = Histogram::empty(ISTIO_MS);
    for (i, c) in h.counts.iter_mut().enumerate() {
        *c = (probs[i] * n).round() as u64;
    }
    h.overflow = (probs[CATS - 1] * n).round() as u64;
    runners::histogram_quantile(0.99, &h)
}

fn main() {
    let started = Instant::now();
    let quick = std::env::var("DQ_QUICK").is_ok_and(|v| v != "0");
    let healthy_runs = env_u64("DQ_RUNS").unwrap_or(if quick { 40 } else { 1000 });
    let faulty_runs = env_u64("DQ_FAULTY_RUNS").unwrap_or(if quick { 20 } else { 500 });
    println!("canaryd decision-quality benchmark (judge v3)");
    println!("policy: steps 10%/30%/60% × 5m bake, confidence 0.99, success-rate tolerance 1 pp,");
    println!(
        "        p99 latency tolerance 20%, minRequests 50, inconclusive → extend 3× then hold; horizon 3h"
    );
    println!(
        "canaryd: the real engine + judge; raw path = exact counts of each scrape window, a look at every"
    );
    println!(
        "        scrape (analysis.interval = the scrape interval, default 15s, random scrape phase per run);"
    );
    println!(
        "        increase() path = today's round(sum(increase(x[1m]))) per side, a look every 1m (2m window"
    );
    println!("        at 60s scrapes: 1m would hold one sample and return nothing)");
    println!("flagger-style: per 1m interval canary success ≥ 99% and p99 ≤ 500 ms, stepWeights 10/30/60,");
    println!("        5 cumulative failed checks (no data = failed) roll back");
    println!(
        "oracle/request: Wald SPRT α = β = 0.01 per canary request, true models known; faulty: baseline vs"
    );
    println!("        true canary; healthy: true canary vs baseline + 2·tol (errors only);");
    println!("        oracle/scrape: the same decision acted on at the next scrape (the fair bound for any");
    println!("        scrape-based judge)");
    println!(
        "times from the fault's onset (healthy: from the start); ∞ = never (undetected / not promoted);"
    );
    println!("        failed = failed requests as users see them (a retried failure counts once)");
    println!("traffic: Poisson per 5 s at the route rate, binomial split by weight; baseline latency");
    println!("        lognormal median 45 ms σ 0.7 in Istio's buckets");
    println!(
        "seeds per cell: {healthy_runs} healthy, {faulty_runs} faulty{}\n",
        if quick { " (DQ_QUICK smoke run)" } else { "" }
    );
    let mut results = Results { scenarios: Vec::new(), healthy_runs, faulty_runs };
    let only = std::env::var("DQ_ONLY").ok();
    for entry in scenarios::all() {
        let sc = &entry.scenario;
        if only.as_deref().is_some_and(|o| !sc.name.contains(o)) {
            continue;
        }
        let runs = if sc.healthy { healthy_runs } else { faulty_runs };
        let (c, b) = sc.models(sc.onset_bucket());
        println!(
            "== {} — {runs} runs per rate; at onset: errors canary {:.2}% / baseline {:.2}%, p99 canary {:.0} ms / baseline {:.0} ms ==",
            sc.name,
            c.err * 100.0,
            b.err * 100.0,
            model_p99(&c.probs),
            model_p99(&b.probs)
        );
        let mut rows = Vec::new();
        for &rate in entry.rates {
            let t = Instant::now();
            let outs = run_all(&entry, rate, runs);
            let sums = [0, 1, 2, 3].map(|i| summarize(&outs[i], sc.healthy));
            eprintln!("  [{} @ {rate} req/s: {:.1}s]", sc.name, t.elapsed().as_secs_f64());
            rows.push((rate, sums));
        }
        print_table(sc.healthy, &rows);
        println!();
        results.scenarios.push((entry.role, sc.name.clone(), rows));
    }
    results.print_targets();
    println!("\nruntime {:.0}s", started.elapsed().as_secs_f64());
}
