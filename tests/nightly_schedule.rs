//! Nightly rollouts through the real daemon: the `Driver` against the API emulator, a
//! simulated mesh that follows the emulator's weights, and a simulated clock. The policy's
//! window is `0 2 * * *` Europe/Berlin for 3 h: a revision seen at 01:59 waits, starts at
//! 02:00, does not advance after 05:00, is still aborted after 05:00 when it fails, and the
//! spring-forward and autumn DST days open exactly one window each.

use canaryd::daemon::{Driver, NoEffects};
use canaryd::demo::{Behaviour, SimulatedMesh, FIXTURES};
use canaryd::engine::{Phase, RolloutState};
use canaryd::policy::{parse_policy, Policy};
use canaryd_testkit::state;
use jiff::Timestamp;
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::Value;
use std::sync::Arc;

const V2_IMAGE: &str = "docker.io/istio/examples-bookinfo-reviews-v2:1.20.1";

/// Step 1 bakes 1 h, step 2 bakes 3 h: started at 02:00, step 2 starts at 03:00 and its bake
/// ends at 06:00 — an hour after the window closed.
const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 10, bake: 1h}, {weight: 30, bake: 3h}]\n  analysis: {interval: 5m, successRate: {tolerance: 2}, latency: {tolerance: 50}}\n  schedule: {cron: \"0 2 * * *\", timeZone: Europe/Berlin, window: 3h}\n";

struct Sandbox {
    emu: Arc<EmulatorHandle>,
    policy: Policy,
    driver: Driver<SimulatedMesh, NoEffects>,
}

async fn sandbox() -> Sandbox {
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    let policy = parse_policy("nightly.yaml", POLICY).unwrap_or_else(|e| panic!("{e}"));
    let mesh = SimulatedMesh::new(emu.clone(), policy.clone(), 40.0, 2026);
    let driver = Driver::new(emu.client(), mesh, NoEffects);
    Sandbox { emu, policy, driver }
}

impl Sandbox {
    fn vs(&self) -> Value {
        state::virtual_service(&self.emu, &self.policy)
    }

    fn weights(&self) -> (u64, u64) {
        state::first_route_weights(&self.emu, &self.policy)
    }

    fn state(&self) -> RolloutState {
        state::recorded_state(&self.emu, &self.policy)
    }

    async fn reconcile(&self, at: Timestamp) {
        self.driver.reconcile(&self.policy, at).await.unwrap_or_else(|e| panic!("reconcile at {at}: {e}"));
    }

    /// Reconciles every 5 minutes of simulated time from `from` (exclusive) to `to` (inclusive).
    async fn run(&self, from: Timestamp, to: Timestamp) {
        let mut t = from.as_second() + 300;
        while t <= to.as_second() {
            self.reconcile(ts(t)).await;
            t += 300;
        }
    }

    fn events(&self, reason: &str) -> usize {
        self.emu
            .list("", "events", Some("bookinfo"))
            .iter()
            .filter(|e| e["reason"].as_str() == Some(reason))
            .count()
    }
}

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Berlin wall-clock time `YYYY-MM-DDTHH:MM` (must exist and be unambiguous) as an instant.
fn berlin(civil: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = civil.parse().unwrap();
    dt.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap()).unwrap().timestamp()
}

#[tokio::test]
async fn winter_night_waits_for_two_holds_after_five_and_aborts_a_failure_any_time() {
    let sb = sandbox().await;
    let untouched = sb.vs()["spec"].clone();

    // 01:59 Berlin: the revision is seen, but the window is not open yet.
    sb.reconcile(berlin("2026-11-23T01:59")).await;
    let s = sb.state();
    assert_eq!(s.phase, Phase::Pending, "{s:?}");
    assert_eq!(sb.vs()["spec"], untouched, "a pending rollout does not touch the route");
    assert_eq!(sb.weights(), (100, 0));
    // One more second before the window, still pending.
    sb.reconcile(ts(berlin("2026-11-23T02:00").as_second() - 1)).await;
    assert_eq!(sb.state().phase, Phase::Pending);
    assert_eq!(sb.weights(), (100, 0));

    // 02:00 Berlin = 01:00 UTC: the window opens and the rollout starts.
    let two = berlin("2026-11-23T02:00");
    assert_eq!(two, utc("2026-11-23T01:00:00Z"));
    sb.reconcile(two).await;
    let s = sb.state();
    assert_eq!(s.phase, Phase::Progressing, "{s:?}");
    assert_eq!(s.started, Some(two.as_second()));
    assert_eq!(sb.weights(), (90, 10));

    // Inside the window the healthy canary advances after step 1's bake (03:00).
    sb.run(two, berlin("2026-11-23T04:55")).await;
    let s = sb.state();
    assert_eq!((s.phase, s.step), (Phase::Progressing, 1), "{s:?}");
    assert_eq!(sb.weights(), (70, 30));

    // 05:01 and later: outside the window. Step 2's bake ends at 06:00 with passing evidence,
    // but a step never advances outside a window: the weights stay at 30%.
    sb.reconcile(berlin("2026-11-23T05:01")).await;
    assert_eq!(sb.weights(), (70, 30));
    sb.run(berlin("2026-11-23T05:01"), berlin("2026-11-23T06:46")).await;
    let s = sb.state();
    assert_eq!((s.phase, s.step), (Phase::Progressing, 1), "held outside the window: {s:?}");
    assert!(
        s.last_verdict.as_ref().is_some_and(|v| v.verdict.as_str() == "pass"),
        "the canary is healthy, it is the window that holds it: {:?}",
        s.last_verdict
    );
    assert!(s.observed_until.unwrap() >= berlin("2026-11-23T06:00").as_second(), "still judged");
    assert_eq!(sb.weights(), (70, 30));
    assert_eq!(sb.events("Promoted"), 0);

    // 06:50: the canary starts failing 30% of its requests. Aborting needs no window.
    sb.driver.metrics.set_behaviour(V2_IMAGE, Behaviour { error_rate: 0.3, ..Behaviour::HEALTHY });
    let fail_from = berlin("2026-11-23T06:46");
    sb.run(fail_from, berlin("2026-11-23T07:16")).await;
    let s = sb.state();
    assert_eq!(s.phase, Phase::Aborted, "{s:?}");
    let finished = s.finished.unwrap();
    assert!(finished > fail_from.as_second() && finished <= berlin("2026-11-23T07:16").as_second());
    assert!(s.reason.as_deref().unwrap_or_default().contains("check failed"), "{:?}", s.reason);
    assert_eq!(sb.weights(), (100, 0), "the abort's weights are on the cluster");
}

/// 2026-03-29, spring forward: Berlin jumps from 02:00 CET to 03:00 CEST, so 02:00 never
/// happens. The window opens once, at 03:00 CEST (01:00 UTC), and lasts 3 real hours.
#[tokio::test]
async fn spring_forward_opens_the_window_once_at_three() {
    let sb = sandbox().await;
    // 01:59 CET = 00:59 UTC: pending.
    let before = berlin("2026-03-29T01:59");
    assert_eq!(before, utc("2026-03-29T00:59:00Z"));
    sb.reconcile(before).await;
    assert_eq!(sb.state().phase, Phase::Pending);
    sb.reconcile(utc("2026-03-29T00:59:59Z")).await;
    assert_eq!(sb.state().phase, Phase::Pending, "no window in the skipped hour");
    assert_eq!(sb.weights(), (100, 0));

    // 03:00 CEST = 01:00 UTC: starts.
    let open = berlin("2026-03-29T03:00");
    assert_eq!(open, utc("2026-03-29T01:00:00Z"));
    sb.reconcile(open).await;
    let s = sb.state();
    assert_eq!(s.phase, Phase::Progressing, "{s:?}");
    assert_eq!(s.started, Some(open.as_second()));
    assert_eq!(sb.weights(), (90, 10));

    // The window is 3 real hours: step 2 (04:00 CEST) still starts, and nothing advances after
    // 06:00 CEST (04:00 UTC) although step 2's bake ends at 07:00 CEST.
    sb.run(open, utc("2026-03-29T06:30:00Z")).await;
    let s = sb.state();
    assert_eq!((s.phase, s.step), (Phase::Progressing, 1), "{s:?}");
    assert_eq!(s.started, Some(open.as_second()), "started once");
    assert_eq!(sb.weights(), (70, 30));
    assert_eq!(sb.events("StepStarted"), 2, "one start, one advance: no second window that day");
}

/// 2026-10-25, fall back: 02:00 Berlin happens twice (00:00 and 01:00 UTC). The window opens
/// once, at the first pass, and is not reopened by the second.
#[tokio::test]
async fn fall_back_opens_the_window_once_at_the_first_two() {
    let sb = sandbox().await;
    sb.reconcile(utc("2026-10-24T23:59:00Z")).await; // 01:59 CEST
    assert_eq!(sb.state().phase, Phase::Pending);
    sb.reconcile(utc("2026-10-25T00:00:00Z")).await; // 02:00 CEST, first pass
    let s = sb.state();
    assert_eq!(s.phase, Phase::Progressing, "{s:?}");
    assert_eq!(s.started, Some(utc("2026-10-25T00:00:00Z").as_second()));
    // The window closes 3 h later (04:00 CET = 03:00 UTC); step 2 started at 01:00 UTC and
    // bakes until 04:00 UTC: held, not advanced, not restarted by the repeated 02:00.
    sb.run(utc("2026-10-25T00:00:00Z"), utc("2026-10-25T05:00:00Z")).await;
    let s = sb.state();
    assert_eq!((s.phase, s.step), (Phase::Progressing, 1), "{s:?}");
    assert_eq!(s.started, Some(utc("2026-10-25T00:00:00Z").as_second()));
    assert_eq!(sb.weights(), (70, 30));
    assert_eq!(sb.events("StepStarted"), 2);
}
