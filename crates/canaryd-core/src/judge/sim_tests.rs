//! Simulation of the false-abort rate: healthy A/A rollouts (canary and baseline drawn from the
//! same error rate and latency distribution), judged every interval. The policy promises that
//! a healthy canary is aborted with probability ≤ 1 − confidence over the whole rollout; this
//! test measures it and fails if the promise is broken (with margin for simulation noise), and
//! checks that a canary worse by exactly the tolerance is caught.

use super::testkit::*;
use super::*;

/// One A/A rollout of 3 steps (10%, 30%, 60%) × 10 looks; true when any look fails.
fn healthy_rollout_aborts(a: &Analysis, total_per_look: u64, p_err: f64, seed: u64) -> bool {
    let mut r = rng(seed);
    let lat = Latency::lognormal(45.0, 0.7);
    let mut s = JudgeState::default();
    for weight in [10u64, 30, 60] {
        s.start_step();
        for look in 1..=10 {
            let nc = total_per_look * weight / 100;
            let nb = total_per_look - nc;
            let obs =
                window(60 * look, random_side(nc, p_err, &lat, &mut r), random_side(nb, p_err, &lat, &mut r));
            let (next, v) = judge(a, &s, &obs, look == 10);
            s = next;
            if v.verdict == Verdict::Fail {
                return true;
            }
        }
    }
    false
}

fn false_abort_rate(a: &Analysis, total_per_look: u64, p_err: f64, runs: u64) -> f64 {
    let aborted = (0..runs)
        .filter(|seed| healthy_rollout_aborts(a, total_per_look, p_err, seed * 7919 + total_per_look))
        .count();
    aborted as f64 / runs as f64
}

#[test]
fn false_abort_rate_of_healthy_canaries_stays_below_one_minus_confidence() {
    let a = analysis(); // confidence 0.99, success rate + p99 latency
                        // Traffic per 1-minute look (all sides): 1.5 req/s, 20 req/s, 200 req/s; error rates from
                        // "almost none" to 5%.
    let mut worst: f64 = 0.0;
    for (total, p_err) in [(90, 0.01), (1200, 0.001), (1200, 0.05), (12000, 0.01)] {
        let rate = false_abort_rate(&a, total, p_err, 500);
        eprintln!("A/A false-abort rate at {total} req/min, {p_err} errors: {rate:.3}");
        worst = worst.max(rate);
        // 1 − confidence = 1%; 2% leaves room for binomial noise over 500 runs (σ ≈ 0.45%).
        assert!(rate <= 0.02, "false-abort rate {rate} at {total} req/min, p={p_err}");
    }
    eprintln!("worst A/A false-abort rate: {worst:.3}");
}

/// A canary `delta` (fraction) worse than its baseline, success rate checked; true when any look
/// of the 3 × 10 looks fails.
fn shifted_rollout_aborts(a: &Analysis, total_per_look: u64, p_base: f64, delta: f64, seed: u64) -> bool {
    use rand_distr::{Binomial, Distribution};
    let mut r = rng(seed);
    let mut s = JudgeState::default();
    for weight in [10u64, 30, 60] {
        s.start_step();
        for look in 1..=10 {
            let nc = total_per_look * weight / 100;
            let nb = total_per_look - nc;
            let mut draw = |n: u64, p: f64| SideObservation {
                requests: n,
                errors: Binomial::new(n, p.clamp(0.0, 1.0)).unwrap().sample(&mut r),
                latency: None,
            };
            let obs = window(60 * look, draw(nc, p_base + delta), draw(nb, p_base));
            let (next, v) = judge(a, &s, &obs, look == 10);
            s = next;
            if v.verdict == Verdict::Fail {
                return true;
            }
        }
    }
    false
}

#[test]
fn false_abort_rate_of_a_canary_no_worse_than_its_baseline_stays_below_one_minus_confidence() {
    // Success rate only, so the whole α is on it; at 0.99 (the default) and at 0.9, where a
    // broken bound would show quickly. H0 is "no worse": equal rates are its boundary (the
    // hardest case), a better canary is inside it.
    for (confidence, limit) in [(0.99, 0.02), (0.9, 0.12)] {
        let mut a = success_only();
        a.confidence = confidence;
        let levels = [
            (90, 0.001, 0.0),
            (1200, 0.001, 0.0),
            (1200, 0.05, 0.0),
            (12000, 0.01, 0.0),
            (120000, 0.01, 0.0),
            (1200, 0.05, -0.02),
        ];
        for (total, p_base, delta) in levels {
            let runs = 1000;
            let aborted = (0..runs)
                .filter(|seed| shifted_rollout_aborts(&a, total, p_base, delta, seed + 1_000_003 * total))
                .count();
            let rate = aborted as f64 / runs as f64;
            eprintln!(
                "no-worse canary false-abort rate, confidence {confidence}, {total} req/min, \
                 baseline {p_base}, Δ {delta}: {rate:.3}"
            );
            // Bound 1 − confidence, plus > 3σ of binomial noise over 1000 runs.
            assert!(rate <= limit, "false-abort rate {rate} at {total} req/min, p={p_base}");
        }
    }
}

#[test]
fn a_canary_worse_by_the_tolerance_is_caught() {
    // The tolerance is the smallest regression that must be caught: +1 pp at 20 and 200 req/s.
    let a = analysis();
    for total in [1200, 12000] {
        let runs = 200;
        let caught = (0..runs)
            .filter(|seed| shifted_rollout_aborts(&a, total, 0.001, 0.01, seed + 77 * total))
            .count();
        let rate = caught as f64 / runs as f64;
        eprintln!("+1 pp at tolerance 1 pp, {total} req/min: caught {rate:.3}");
        assert!(rate >= 0.97, "caught only {rate} at {total} req/min");
    }
}

#[test]
fn fixed_horizon_z_test_checked_every_look_would_break_the_bound() {
    // The reason for confidence sequences: the same A/A data judged by a plain one-sided z-test
    // at 99% every look aborts healthy canaries far more often than 1%. This guards the
    // simulation itself: it is able to see an inflated false-abort rate.
    let mut aborted = 0;
    let runs = 1000;
    let z99 = stats::normal_quantile(0.99);
    for seed in 0..runs {
        let mut r = rng(seed);
        let lat = Latency::lognormal(45.0, 0.7);
        let (mut xc, mut nc, mut xb, mut nb) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..30 {
            let c = random_side(120, 0.02, &lat, &mut r);
            let b = random_side(1080, 0.02, &lat, &mut r);
            xc += c.errors as f64;
            nc += c.requests as f64;
            xb += b.errors as f64;
            nb += b.requests as f64;
            let i = stats::two_prop_cs(xc, nc, xb, nb, 0.5);
            if i.z_against(0.0) > z99 {
                aborted += 1;
                break;
            }
        }
    }
    let rate = f64::from(aborted) / runs as f64;
    eprintln!("naive repeated z-test (no tolerance) false-abort rate: {rate:.3}");
    // Nominal 1%; σ of the estimate ≈ 0.5% over 1000 runs.
    assert!(rate > 0.02, "{rate}");
}
