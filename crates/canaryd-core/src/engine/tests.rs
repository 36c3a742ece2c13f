//! State-machine tests: transitions, aborts from every phase, resumption from serialised state.
//! Observations are synthetic; the judge is the real one.

use super::*;
use crate::observation::{Observation, SideObservation};
use crate::policy::{parse_policy, AlertEvent, Policy};
use jiff::Timestamp;

pub(super) const BASE: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}\n  steps: [{weight: 10, bake: 2m}, {weight: 50, bake: 2m}]\n  analysis: {interval: 1m, latency: {enabled: false}}\n  alerts: {on: [abort, promote], email: {to: [a@example.com]}}\n";

pub(super) fn policy(extra: &str) -> Policy {
    parse_policy("test.yaml", &format!("{BASE}{extra}")).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn at(min: i64) -> Timestamp {
    // 2026-11-23 00:00 UTC plus `min` minutes.
    Timestamp::from_second(1_795_392_000 + min * 60).unwrap()
}

pub(super) fn obs(min: i64, canary: (u64, u64), baseline: (u64, u64)) -> Observation {
    Observation {
        start: at(min - 1).as_second(),
        end: at(min).as_second(),
        canary: SideObservation { requests: canary.0, errors: canary.1, latency: None },
        baseline: SideObservation { requests: baseline.0, errors: baseline.1, latency: None },
        custom: vec![],
    }
}

pub(super) fn healthy(min: i64) -> Input {
    Input::Observed(Ok(obs(min, (2000, 1), (8000, 5))))
}

/// Drives `inputs` (minute, input) from `state`, returning the final transition.
pub(super) fn run(
    p: &Policy,
    mut state: RolloutState,
    inputs: Vec<(i64, Input)>,
) -> (RolloutState, Vec<Action>) {
    let mut actions = Vec::new();
    for (min, input) in inputs {
        let t = step(p, &state, input, at(min));
        actions.extend(t.actions);
        state = t.state;
    }
    (state, actions)
}

pub(super) fn started(p: &Policy) -> RolloutState {
    run(p, RolloutState::default(), vec![(0, Input::NewRevision("rev-2".into()))]).0
}

#[test]
fn new_revision_without_schedule_starts_at_first_step() {
    let p = policy("");
    let s = started(&p);
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.step, 0);
    assert_eq!(s.traffic.canary_weight, 10);
}

#[test]
fn healthy_canary_advances_after_bake_and_promotes() {
    let p = policy("");
    let s = started(&p);
    let (s, actions) = run(&p, s, vec![(1, healthy(1)), (2, healthy(2))]);
    assert_eq!(s.step, 1, "advances only when the bake is over");
    assert_eq!(s.traffic.canary_weight, 50);
    assert!(actions
        .contains(&Action::SetTraffic(crate::plan::Traffic { canary_weight: 50, ..Default::default() })));
    let (s, _) = run(&p, s, vec![(3, healthy(3)), (4, healthy(4))]);
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(s.traffic.canary_weight, 100);
    assert_eq!(s.outbox.iter().map(|a| a.event).collect::<Vec<_>>(), [AlertEvent::Promote]);
}

#[test]
fn does_not_advance_before_the_bake_time() {
    let p = policy("");
    let (s, _) = run(&p, started(&p), vec![(1, healthy(1))]);
    assert_eq!(s.step, 0);
}

#[test]
fn aborts_when_canary_error_rate_exceeds_tolerance() {
    let p = policy("");
    let (s, actions) = run(&p, started(&p), vec![(1, Input::Observed(Ok(obs(1, (200, 100), (800, 1)))))]);
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(s.traffic, crate::plan::Traffic::stable_only());
    assert!(actions.iter().any(|a| matches!(a, Action::SetTraffic(t) if t.canary_weight == 0)));
    let alert = &s.outbox[0];
    assert_eq!(alert.event, AlertEvent::Abort);
    assert!(alert.headline.contains("step 1/2"), "{}", alert.headline);
    assert!(alert.verdict.is_some(), "the abort alert carries the evidence");
    assert_eq!(alert.revision.as_deref(), Some("rev-2"), "the alert remembers its own revision");
    assert_eq!(alert.step, Some(0));
    assert_eq!(alert.traffic.canary_weight, 0, "the routing after the abort");
}

#[test]
fn inconclusive_never_promotes_and_extends_then_holds() {
    let p = policy("  \n");
    let mut s = started(&p);
    // Almost no traffic: the judge cannot conclude.
    for min in 1..=12 {
        s = step(&p, &s, Input::Observed(Ok(obs(min, (1, 0), (3, 0)))), at(min)).state;
    }
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.step, 0, "inconclusive evidence never advances");
    assert_eq!(s.extensions, 3);
    assert!(s.reason.as_deref().unwrap_or_default().contains("holding"));
}

#[test]
fn an_extended_step_passes_at_the_first_look_whose_evidence_suffices() {
    let p = policy("");
    let thin = |min| Input::Observed(Ok(obs(min, (1, 0), (3, 0))));
    // Too little traffic for the 2-minute bake: extended at minute 2 (to minute 4).
    let (s, _) = run(&p, started(&p), vec![(1, thin(1)), (2, thin(2))]);
    assert_eq!((s.step, s.extensions), (0, 1));
    // Traffic arrives: the step passes at once, not at the extension's end — the bake was
    // served, and the extension only waits for evidence.
    let (s, _) = run(&p, s, vec![(3, healthy(3))]);
    assert_eq!(s.step, 1, "passed inside the extension: {:?}", s.last_verdict.map(|v| v.verdict));
    assert_eq!(s.extensions, 0);
}

#[test]
fn inconclusive_abort_policy_aborts() {
    let p = policy("  \n")
        .revise(|s| s.analysis.on_inconclusive.action = crate::policy::InconclusiveAction::Abort)
        .unwrap();
    let (s, _) = run(
        &p,
        started(&p),
        vec![
            (1, Input::Observed(Ok(obs(1, (1, 0), (3, 0))))),
            (2, Input::Observed(Ok(obs(2, (1, 0), (3, 0))))),
        ],
    );
    assert_eq!(s.phase, Phase::Aborted);
}

#[test]
fn metrics_errors_abort_after_the_limit_and_never_advance() {
    let p = policy("");
    let errs: Vec<_> = (1..=4).map(|m| (m, Input::Observed(Err("prometheus unreachable".into())))).collect();
    let (s, _) = run(&p, started(&p), errs[..3].to_vec());
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.step, 0);
    assert_eq!(s.consecutive_errors, 3);
    let (s, _) = run(&p, s, errs[3..].to_vec());
    assert_eq!(s.phase, Phase::Aborted);
    assert!(s.reason.unwrap().contains("unreadable"));
}

#[test]
fn operator_abort_works_in_every_phase() {
    let p = policy("  promotion: {mode: copy}\n");
    let abort = || Input::Command(Command::Abort("manual".into()));
    // Pending (with a schedule that is closed).
    let sched = policy("  schedule: {cron: \"0 2 * * *\", timeZone: UTC, window: 1h}\n");
    let pending = run(&sched, RolloutState::default(), vec![(600, Input::NewRevision("r".into()))]).0;
    assert_eq!(pending.phase, Phase::Pending);
    // Progressing, Paused, Promoting.
    let progressing = started(&p);
    let paused = run(&p, progressing.clone(), vec![(1, Input::Command(Command::Pause))]).0;
    assert_eq!(paused.phase, Phase::Paused);
    let promoting = run(&p, progressing.clone(), vec![(1, Input::Command(Command::Promote))]).0;
    assert_eq!(promoting.phase, Phase::Promoting);
    for (pol, s) in [(&sched, pending), (&p, progressing), (&p, paused), (&p, promoting)] {
        let from = s.phase;
        let (s, _) = run(pol, s, vec![(700, abort())]);
        assert_eq!(s.phase, Phase::Aborted, "abort from {from:?}");
        assert_eq!(s.traffic, crate::plan::Traffic::stable_only(), "abort from {from:?} restores stable");
    }
}

#[test]
fn resumes_identically_from_serialised_state() {
    let p = policy("");
    let inputs = |from: i64| (from..=4).map(|m| (m, healthy(m))).collect::<Vec<_>>();
    let (direct, _) = run(&p, started(&p), inputs(1));
    // Persist after minute 2, as the daemon does with every write, then continue.
    let (mid, _) = run(&p, started(&p), inputs(1)[..2].to_vec());
    let json = serde_json::to_string(&mid).unwrap();
    let restored: RolloutState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, mid);
    let (resumed, _) = run(&p, restored, inputs(3));
    assert_eq!(resumed, direct);
    assert_eq!(resumed.phase, Phase::Promoted);
}

#[test]
fn replaying_the_same_observation_does_not_advance_twice() {
    let p = policy("");
    let s = run(&p, started(&p), vec![(1, healthy(1)), (2, healthy(2))]).0;
    assert_eq!(s.step, 1);
    // The same input at the same time again (a crash between decision and ack, replayed).
    let again = step(&p, &s, healthy(2), at(2)).state;
    assert_eq!(again.step, 1, "bake of step 2 started at minute 2, so nothing advances");
}

#[test]
fn schedule_holds_start_until_window_and_abort_is_allowed_outside() {
    let p = policy("  schedule: {cron: \"0 2 * * *\", timeZone: UTC, window: 1h}\n");
    let s =
        run(&p, RolloutState::default(), vec![(119, Input::NewRevision("r".into())), (119, Input::Tick)]).0;
    assert_eq!(s.phase, Phase::Pending, "01:59 is before the window");
    let s = run(&p, s, vec![(120, Input::Tick)]).0;
    assert_eq!(s.phase, Phase::Progressing, "02:00 opens it");
    // Healthy but outside the window (03:05): no advance.
    let s = run(&p, s, vec![(185, healthy(185))]).0;
    assert_eq!(s.step, 0);
    // A failing check outside the window still aborts.
    let s = run(&p, s, vec![(186, Input::Observed(Ok(obs(186, (200, 100), (800, 1)))))]).0;
    assert_eq!(s.phase, Phase::Aborted);
}

#[test]
fn start_command_overrides_the_schedule() {
    let p = policy("  schedule: {cron: \"0 2 * * *\", timeZone: UTC, window: 1h}\n");
    let s = run(
        &p,
        RolloutState::default(),
        vec![(600, Input::NewRevision("r".into())), (601, Input::Command(Command::Start))],
    )
    .0;
    assert_eq!(s.phase, Phase::Progressing);
}

#[test]
fn gates_hold_until_open() {
    let p = policy("  gates: [{name: freeze, kind: confirm-rollout, url: \"http://gate/\"}, {name: qa, kind: confirm-promotion, url: \"http://qa/\"}]\n");
    let (s, actions) = run(&p, RolloutState::default(), vec![(0, Input::NewRevision("r".into()))]);
    assert_eq!(s.phase, Phase::Pending);
    assert!(actions.contains(&Action::CallGate(crate::policy::GateKind::ConfirmRollout)));
    let gate = |kind, open| Input::Gate { kind, open, detail: "503".into() };
    let s = run(&p, s, vec![(1, gate(crate::policy::GateKind::ConfirmRollout, false))]).0;
    assert_eq!(s.phase, Phase::Pending);
    let s = run(&p, s, vec![(2, gate(crate::policy::GateKind::ConfirmRollout, true))]).0;
    assert_eq!(s.phase, Phase::Progressing);
    let s = run(&p, s, (3..=6).map(|m| (m, healthy(m))).collect()).0;
    assert_eq!(s.phase, Phase::Progressing, "promotion waits for its gate");
    assert_eq!(s.awaiting_gate.as_deref(), Some("confirm-promotion"));
    let s = run(&p, s, vec![(7, gate(crate::policy::GateKind::ConfirmPromotion, true))]).0;
    assert_eq!(s.phase, Phase::Promoted);
}

#[test]
fn drift_is_reasserted_by_default() {
    let p = policy("");
    let (s, actions) =
        run(&p, started(&p), vec![(1, Input::Drift { observed: crate::plan::Traffic::stable_only() })]);
    assert_eq!(s.traffic.canary_weight, 10);
    assert!(actions.iter().any(|a| matches!(a, Action::SetTraffic(t) if t.canary_weight == 10)));
}

#[test]
fn alerts_leave_the_outbox_once_every_channel_has_them() {
    let p = policy("");
    let (s, _) = run(&p, started(&p), vec![(1, Input::Observed(Ok(obs(1, (200, 100), (800, 1)))))]);
    let id = s.outbox[0].id;
    let s = step(&p, &s, Input::AlertDelivered { id, channel: "email".into() }, at(2)).state;
    assert!(s.outbox.is_empty());
}

#[test]
fn retry_restarts_an_aborted_revision() {
    let p = policy("");
    let (s, _) = run(&p, started(&p), vec![(1, Input::Command(Command::Abort("x".into())))]);
    let s = run(&p, s, vec![(2, Input::NewRevision("rev-2".into()))]).0;
    assert_eq!(s.phase, Phase::Aborted, "the same revision is not retried by itself");
    let s = run(&p, s, vec![(3, Input::Command(Command::Retry))]).0;
    assert_eq!(s.phase, Phase::Progressing);
}

#[test]
fn auto_interval_wakes_at_the_detected_scrape_and_a_fixed_one_ignores_it() {
    let auto =
        parse_policy("test.yaml", &BASE.replace("interval: 1m, ", "")).unwrap_or_else(|e| panic!("{e}"));
    let s = started(&auto);
    assert_eq!(cadence_secs(&auto, &s), 15, "15 s until a scrape interval is known");
    let t = step(&auto, &s, Input::ScrapeInterval(std::time::Duration::from_secs(30)), at(0));
    assert_eq!(t.state.scrape_interval_ms, Some(30_000));
    assert_eq!(t.wake_at, Some(at(0).as_second() + 30));
    // The detection survives the state's round trip through the annotation.
    let back: RolloutState = serde_json::from_str(&serde_json::to_string(&t.state).unwrap()).unwrap();
    assert_eq!(cadence_secs(&auto, &back), 30);

    let fixed = policy("");
    let t = step(&fixed, &started(&fixed), Input::ScrapeInterval(std::time::Duration::from_secs(30)), at(0));
    assert_eq!(cadence_secs(&fixed, &t.state), 60);
}

#[test]
fn an_undeliverable_outbox_is_bounded_and_says_what_it_dropped() {
    use super::machine::{ALERT_DROPPED, MAX_OUTBOX};
    let p = policy("");
    let mut s = started(&p);
    let mut dropped = 0;
    // Abort, retry, abort, … with no channel ever acknowledging (e.g. email without SMTP).
    for i in 0..40 {
        let (next, actions) = run(
            &p,
            s,
            vec![
                (10 * i + 1, Input::Command(Command::Abort(format!("abort {i}")))),
                (10 * i + 2, Input::Command(Command::Retry)),
            ],
        );
        s = next;
        dropped += actions
            .iter()
            .filter(|a| matches!(a, Action::Record { reason, .. } if *reason == ALERT_DROPPED))
            .count();
        assert!(s.outbox.len() <= MAX_OUTBOX, "outbox grew to {}", s.outbox.len());
    }
    assert_eq!(s.outbox.len(), MAX_OUTBOX);
    assert_eq!(dropped, 40 - MAX_OUTBOX, "one Event per dropped alert");
    // The newest are kept, oldest first.
    let ids: Vec<u64> = s.outbox.iter().map(|a| a.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && *ids.last().unwrap() == s.alert_seq, "{ids:?}");
    let bytes = serde_json::to_string(&s).unwrap().len();
    assert!(bytes < 64 * 1024, "state is {bytes} bytes");
}

// ---- timeline and history -------------------------------------------------------------------

fn kinds(s: &RolloutState) -> Vec<&str> {
    s.timeline.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn a_promoted_rollout_has_its_steps_on_the_timeline_and_one_history_record() {
    let p = policy("");
    let s = started(&p);
    assert_eq!(kinds(&s), ["NewRevision", "StepStarted"]);
    assert_eq!(s.phase_since, Some(at(0).as_second()));
    let (s, _) = run(&p, s, (1..=4).map(|m| (m, healthy(m))).collect());
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(kinds(&s), ["NewRevision", "StepStarted", "StepStarted", "Promoted"]);
    let weights: Vec<u32> = s.timeline.iter().map(|e| e.weight).collect();
    assert_eq!(weights, [0, 10, 50, 100], "each entry carries the weight right after it");
    assert_eq!(s.timeline[3].at, at(4).as_second());
    assert_eq!(s.phase_since, Some(at(4).as_second()));
    assert_eq!(s.history.len(), 1);
    let h = &s.history[0];
    assert_eq!(
        (h.outcome, h.revision.as_deref(), h.step, h.weight),
        (Outcome::Promoted, Some("rev-2"), 1, 100)
    );
    assert_eq!((h.started, h.finished), (Some(at(0).as_second()), at(4).as_second()));
    assert_eq!(h.failing_check, None);
}

#[test]
fn an_abort_on_evidence_records_the_failing_check_reason_and_weight_it_ended_at() {
    let p = policy("");
    let (s, _) = run(&p, started(&p), vec![(1, Input::Observed(Ok(obs(1, (200, 100), (800, 1)))))]);
    assert_eq!(kinds(&s), ["NewRevision", "StepStarted", "Aborted"]);
    let h = &s.history[0];
    assert_eq!(h.outcome, Outcome::Aborted);
    assert_eq!(h.failing_check.as_deref(), Some("success-rate"));
    assert_eq!(h.weight, 10, "the weight it was rolled back from");
    assert!(h.reason.as_deref().unwrap_or_default().starts_with("check failed: "), "{h:?}");
    // The delivery of the abort alert is on the timeline too.
    let id = s.outbox[0].id;
    let s = step(&p, &s, Input::AlertDelivered { id, channel: "email".into() }, at(2)).state;
    assert_eq!(
        s.timeline.last().map(|e| e.message.as_str()),
        Some(format!("abort alert #{id} delivered to email").as_str())
    );
}

#[test]
fn an_operator_abort_is_archived_without_a_failing_check() {
    let p = policy("");
    let (s, _) = run(&p, started(&p), vec![(1, Input::Command(Command::Abort("bad deploy".into())))]);
    let h = &s.history[0];
    assert_eq!((h.outcome, h.failing_check.as_deref()), (Outcome::Aborted, None));
    assert_eq!(h.reason.as_deref(), Some("aborted by operator: bad deploy"));
}

#[test]
fn a_new_revision_keeps_the_history_starts_a_new_timeline_and_archives_the_superseded_one() {
    let p = policy("");
    let (s, _) = run(&p, started(&p), vec![(1, Input::Command(Command::Abort("x".into())))]);
    let (s, _) =
        run(&p, s, vec![(2, Input::NewRevision("rev-3".into())), (3, Input::NewRevision("rev-4".into()))]);
    assert_eq!(kinds(&s), ["NewRevision", "StepStarted"], "the timeline is the current rollout's");
    let outcomes: Vec<_> =
        s.history.iter().map(|h| (h.outcome, h.revision.clone().unwrap_or_default())).collect();
    assert_eq!(outcomes, [(Outcome::Aborted, "rev-2".into()), (Outcome::Superseded, "rev-3".into())]);
}

#[test]
fn gates_asked_held_and_opened_are_on_the_timeline_once_each() {
    let p = policy("  gates: [{name: freeze, kind: confirm-rollout, url: \"http://gate/\"}]\n");
    let gate =
        |open| Input::Gate { kind: crate::policy::GateKind::ConfirmRollout, open, detail: "503".into() };
    let (s, _) = run(
        &p,
        RolloutState::default(),
        vec![(0, Input::NewRevision("r".into())), (1, gate(false)), (2, gate(false)), (3, gate(true))],
    );
    assert_eq!(kinds(&s), ["NewRevision", "GateAsked", "GateHeld", "GateOpened", "StepStarted"]);
}

#[test]
fn timeline_and_history_stay_bounded_and_short() {
    let p = policy("");
    let mut s = started(&p);
    for i in 0..200 {
        let long = "x".repeat(1000);
        s = step(&p, &s, Input::Command(Command::Abort(long)), at(1 + 2 * i)).state;
        s = step(&p, &s, Input::Command(Command::Retry), at(2 + 2 * i)).state;
        s = step(&p, &s, Input::Drift { observed: crate::plan::Traffic::stable_only() }, at(2 + 2 * i)).state;
    }
    assert_eq!(s.history.len(), MAX_HISTORY);
    assert!(s.timeline.len() <= MAX_TIMELINE);
    assert!(s.history.iter().all(|h| h.reason.as_ref().is_some_and(|r| r.chars().count() <= MAX_TEXT)));
    let mut busy = started(&p);
    for i in 0..200 {
        busy =
            step(&p, &busy, Input::Drift { observed: crate::plan::Traffic::stable_only() }, at(1 + i)).state;
    }
    assert_eq!(busy.timeline.len(), MAX_TIMELINE);
    assert_eq!(busy.timeline[0].kind, "NewRevision", "the first entry is kept");
    assert_eq!(busy.timeline.last().map(|e| e.at), Some(at(200).as_second()), "the newest entries are kept");
    let json = serde_json::to_string(&busy).unwrap();
    assert!(json.len() < 32 * 1024, "state annotation stays small: {} bytes", json.len());
}

#[test]
fn states_written_before_the_timeline_existed_still_decode() {
    let old = r#"{"phase":"Aborted","revision":"r","step":1,"traffic":{"canaryWeight":0},"reason":"x"}"#;
    let s: RolloutState = serde_json::from_str(old).unwrap();
    assert!(s.timeline.is_empty() && s.history.is_empty() && s.phase_since.is_none());
}
