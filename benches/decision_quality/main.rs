//! Decision-quality benchmark (issue 3, item 4): how often canaryd aborts a healthy canary, how
//! often and how fast it aborts a faulty one, and how many failed requests the canary serves
//! before the abort (the blast radius) — next to a Flagger-style fixed-threshold rule and an
//! oracle SPRT that knows the truth, on identical simulated traffic.
//!
//! `cargo bench --bench decision_quality` (release). `DQ_RUNS=N` overrides the number of runs
//! per scenario × rate (default 1000 healthy, 500 faulty) for quick iterations.
//!
//! Modules: `world` simulates traffic and faults, `runners` are the three deciders, `scenarios`
//! lists what is run, `report` turns the outcomes into tables and targets.

mod report;
mod runners;
mod scenarios;
mod world;

use canaryd::observation::Histogram;
use canaryd::policy::Policy;
use report::{print_table, summarize, Results};
use runners::Outcome;
use scenarios::{Entry, RATES};
use std::time::Instant;
use world::{CATS, ISTIO_MS};

/// Runs every seed of one scenario × rate through the three deciders, on both cores.
fn run_all(policy: &Policy, entry: &Entry, rate: f64, runs: u64) -> [Vec<Outcome>; 4] {
    let plan = scenarios::plan(policy);
    let weights: Vec<u32> = plan.iter().map(|p| p.0).collect();
    let interval = policy.spec().analysis.interval.cadence_secs(None);
    let tol = policy.spec().analysis.success_rate.tolerance;
    let sc = &entry.scenario;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2) as u64;
    let parts: Vec<Vec<[Outcome; 4]>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (plan, weights) = (&plan, &weights);
                s.spawn(move || {
                    (t..runs)
                        .step_by(threads as usize)
                        .map(|i| {
                            // Seeds independent of the rate, so rows of one scenario share
                            // nothing but the model; +1 keeps seed 0 out of splitmix's fixpoint.
                            let seed = i * 1_000_003 + 1;
                            let (request, snapped) = runners::oracle(sc, rate, seed, plan, tol, interval);
                            [
                                runners::canaryd(policy, sc, rate, seed),
                                runners::flagger(sc, rate, seed, weights, interval),
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
    let override_runs: Option<u64> = std::env::var("DQ_RUNS").ok().and_then(|s| s.parse().ok());
    let policy = scenarios::policy();
    let interval = policy.spec().analysis.interval.cadence_secs(None);
    println!("canaryd decision-quality benchmark");
    println!(
        "policy: steps 10%/30%/60% × 5m bake, interval 1m, confidence 0.99, success-rate tolerance 1 pp,"
    );
    println!(
        "        p99 latency tolerance 20%, minRequests 50, inconclusive → extend 3× then hold; horizon 3h"
    );
    println!("flagger-style: per 1m interval canary success ≥ 99% and p99 ≤ 500 ms, stepWeights 10/30/60,");
    println!("        5 cumulative failed checks (no data = failed) roll back");
    println!(
        "oracle/request: Wald SPRT α = β = 0.01 per canary request, true models known (healthy: H1 = +1 pp);"
    );
    println!("        oracle/interval: the same decision, acted on at the end of its 1m analysis interval");
    println!("times from the fault's onset (healthy: from the start); ∞ = never (undetected / not promoted)");
    println!("traffic: Poisson per 10 s at the route rate, binomial split by weight; baseline latency");
    println!("        lognormal median 45 ms σ 0.7 in Istio's buckets\n");
    let mut results = Results { scenarios: Vec::new(), interval_secs: interval as f64 };
    for entry in scenarios::all() {
        let sc = &entry.scenario;
        let runs = override_runs.unwrap_or(if sc.healthy { 1000 } else { 500 });
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
        for rate in RATES {
            let t = Instant::now();
            let outs = run_all(&policy, &entry, rate, runs);
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
