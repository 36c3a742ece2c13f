//! The engine against the Deployments behind the subsets: readiness before traffic, copy mode's
//! scale-up, the unreachable canary, and copy promotion that finishes only on a stable running
//! the promoted template on every pod.

use super::tests::{at, obs, policy, started};
use super::*;
use crate::workload::{Capacity, RolloutStatus, WorkloadReport};

fn report(canary_available: u32, canary_desired: u32) -> WorkloadReport {
    WorkloadReport {
        canary_status: Some(if canary_available >= canary_desired && canary_desired > 0 {
            RolloutStatus::Complete
        } else {
            RolloutStatus::Progressing("pods starting".into())
        }),
        canary: Capacity { desired: canary_desired, available: canary_available },
        stable_replicas: 4,
        ..WorkloadReport::default()
    }
}

fn copy_report(target: &str, stable_template: &str, status: RolloutStatus) -> WorkloadReport {
    WorkloadReport {
        copy_target: Some(target.into()),
        stable_template: Some(stable_template.into()),
        stable_status: Some(status),
        ..report(4, 4)
    }
}

/// One reconcile: `inputs` then a tick, all with the same report (as the daemon does).
fn reconcile(
    p: &crate::policy::Policy,
    mut state: RolloutState,
    min: i64,
    inputs: Vec<Input>,
    r: &WorkloadReport,
) -> (RolloutState, Vec<Action>) {
    let mut actions = Vec::new();
    for input in inputs.into_iter().chain([Input::Tick]) {
        let t = step_with(p, &state, input, at(min), Some(r));
        actions.extend(t.actions);
        state = t.state;
    }
    (state, actions)
}

#[test]
fn no_traffic_reaches_a_canary_before_its_pods_are_ready() {
    let p = policy("  promotion: {mode: copy}\n");
    // The last copy promotion left the canary at zero replicas.
    let (s, actions) =
        reconcile(&p, RolloutState::default(), 0, vec![Input::NewRevision("r2".into())], &report(0, 0));
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.traffic, crate::plan::Traffic::stable_only(), "held before the first step");
    assert_eq!(s.waiting_for_canary, Some(0));
    assert!(actions.contains(&Action::ScaleCanary(4)), "scaled to the stable's replicas: {actions:?}");
    // Scaling up: still held, the scale is asked again only while at zero.
    let (s, actions) = reconcile(&p, s, 1, vec![], &report(2, 4));
    assert_eq!(s.traffic.canary_weight, 0);
    assert!(!actions.iter().any(|a| matches!(a, Action::ScaleCanary(_))));
    // Looks while waiting judge nothing.
    let (s, _) = reconcile(&p, s, 1, vec![Input::Observed(Ok(obs(1, (0, 0), (8000, 5))))], &report(2, 4));
    assert_eq!(s.phase, Phase::Progressing);
    let (s, _) = reconcile(&p, s, 2, vec![], &report(4, 4));
    assert_eq!(s.traffic.canary_weight, 10, "step 1 entered once every pod is ready");
    assert_eq!(s.waiting_for_canary, None);
    assert_eq!(s.step_started, Some(at(2).as_second()));
}

#[test]
fn configured_canary_replicas_win_and_a_stuck_canary_aborts() {
    let p = policy("  promotion: {mode: copy, canaryReplicas: 2}\n");
    let (s, actions) =
        reconcile(&p, RolloutState::default(), 0, vec![Input::NewRevision("r2".into())], &report(0, 0));
    assert!(actions.contains(&Action::ScaleCanary(2)), "{actions:?}");
    let stuck = WorkloadReport {
        canary_status: Some(RolloutStatus::Stuck("ProgressDeadlineExceeded: timed out".into())),
        ..report(0, 2)
    };
    let (s, _) = reconcile(&p, s, 11, vec![], &stuck);
    assert_eq!(s.phase, Phase::Aborted);
    assert!(s.reason.as_deref().unwrap_or_default().contains("cannot become ready"), "{:?}", s.reason);
}

#[test]
fn shift_mode_never_scales_but_still_waits() {
    let p = policy("");
    let (s, actions) =
        reconcile(&p, RolloutState::default(), 0, vec![Input::NewRevision("r2".into())], &report(1, 3));
    assert_eq!(s.waiting_for_canary, Some(0));
    assert!(!actions.iter().any(|a| matches!(a, Action::ScaleCanary(_))));
}

#[test]
fn a_canary_that_gets_no_requests_is_aborted() {
    let p = policy("");
    // Right after the weight rose, the canary's series may not exist in Prometheus yet
    // (created at its first request, seen one scrape later): not a fault yet.
    let (early, _) =
        reconcile(&p, started(&p), 0, vec![Input::Observed(Ok(obs(0, (0, 0), (8000, 0))))], &report(4, 4));
    assert_eq!(early.phase, Phase::Progressing, "{:?}", early.reason);
    let s = started(&p);
    // 10%: 8000 stable requests mean ~890 expected at the canary.
    let (s, _) = reconcile(&p, s, 1, vec![Input::Observed(Ok(obs(1, (0, 0), (8000, 0))))], &report(4, 4));
    assert_eq!(s.phase, Phase::Aborted);
    assert!(s.reason.as_deref().unwrap_or_default().contains("no requests"), "{:?}", s.reason);
    // Too little traffic to tell: inconclusive, not a fault.
    let s = started(&p);
    let (s, _) = reconcile(&p, s, 1, vec![Input::Observed(Ok(obs(1, (0, 0), (90, 0))))], &report(4, 4));
    assert_eq!(s.phase, Phase::Progressing);
}

fn promoting(p: &crate::policy::Policy) -> RolloutState {
    let (s, actions) = reconcile(
        p,
        started(p),
        1,
        vec![Input::Command(Command::Promote)],
        &copy_report("t2", "t1", RolloutStatus::Complete),
    );
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only());
    assert!(actions.contains(&Action::CopyCanaryToStable { template_hash: "t2".into() }), "{actions:?}");
    s
}

#[test]
fn copy_promotion_copies_until_the_stable_runs_the_template_then_waits_for_its_rollout() {
    let p = policy("  promotion: {mode: copy}\n");
    let s = promoting(&p);
    assert_eq!(s.copy_target.as_deref(), Some("t2"));
    // The copy failed (or the daemon died before it): an untouched, fully rolled-out stable is
    // NOT a finished promotion — the copy is asked again.
    let (s, actions) = reconcile(&p, s, 2, vec![], &copy_report("t2", "t1", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only());
    assert!(actions.contains(&Action::CopyCanaryToStable { template_hash: "t2".into() }));
    // Copied, still rolling: nothing is routed to the stable's pods yet.
    let (s, actions) = reconcile(
        &p,
        s,
        3,
        vec![],
        &copy_report("t2", "t2", RolloutStatus::Progressing("1 of 4 updated".into())),
    );
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only());
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. } | Action::SetTraffic(_))));
    let (s, actions) = reconcile(&p, s, 4, vec![], &copy_report("t2", "t2", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(s.traffic, crate::plan::Traffic::stable_only());
    assert!(actions.contains(&Action::ScaleCanaryDown));
    // A crash right after that write: the next reconcile scales the canary down again.
    let (_, actions) = reconcile(&p, s, 5, vec![], &copy_report("t2", "t2", RolloutStatus::Complete));
    assert!(actions.contains(&Action::ScaleCanaryDown));
}

#[test]
fn a_stuck_stable_rollout_keeps_the_canary_serving_and_alerts_once() {
    let doc = super::tests::BASE.replace("on: [abort, promote]", "on: [abort, promote, stuck]");
    let p = crate::policy::parse_policy("t.yaml", &format!("{doc}  promotion: {{mode: copy}}\n")).unwrap();
    let s = promoting(&p);
    let stuck = copy_report("t2", "t2", RolloutStatus::Stuck("ProgressDeadlineExceeded: timed out".into()));
    let (s, _) = reconcile(&p, s, 12, vec![], &stuck);
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only());
    assert_eq!(s.outbox.iter().filter(|a| a.event == crate::policy::AlertEvent::Stuck).count(), 1);
    assert!(super::is_warning("PromotionStuck"), "a Warning Event: a person must act");
    let (s, _) = reconcile(&p, s, 13, vec![], &stuck);
    assert_eq!(
        s.outbox.iter().filter(|a| a.event == crate::policy::AlertEvent::Stuck).count(),
        1,
        "alerted once"
    );
    // Fixed by a person: the rollout completes and the promotion finishes.
    let (s, _) = reconcile(&p, s, 20, vec![], &copy_report("t2", "t2", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoted);
}

#[test]
fn a_copy_changed_by_admission_completes_with_the_template_as_admitted_instead_of_copying_forever() {
    // A mutating webhook adds a label to every write of the stable Deployment: the stable
    // never hashes to the canary's template. Before, every reconcile copied again and the
    // promotion never finished.
    let p = policy("  promotion: {mode: copy}\n");
    let s = promoting(&p);
    let admitted = Input::CopyAdmitted {
        target: "t2".into(),
        template_hash: "t2-mutated".into(),
        changed: vec!["metadata.labels.instance".into()],
    };
    let rolling = copy_report("t2", "t2-mutated", RolloutStatus::Progressing("1 of 4 updated".into()));
    let (s, actions) = reconcile(&p, s, 2, vec![admitted.clone()], &rolling);
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. })), "{actions:?}");
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only(), "nothing routed to pods still rolling");
    assert!(s
        .timeline
        .iter()
        .any(|e| e.kind == "CopyAdmitted" && e.message.contains("metadata.labels.instance")));
    // A read from before the copy landed: copied again (the write is guarded and idempotent).
    let (s, actions) = reconcile(&p, s, 3, vec![], &copy_report("t2", "t1", RolloutStatus::Complete));
    assert!(actions.contains(&Action::CopyCanaryToStable { template_hash: "t2".into() }), "{actions:?}");
    // The same answer again is said once.
    let (s, _) = reconcile(&p, s, 4, vec![admitted], &rolling);
    assert_eq!(s.timeline.iter().filter(|e| e.kind == "CopyAdmitted").count(), 1);
    let (s, actions) = reconcile(&p, s, 5, vec![], &copy_report("t2", "t2-mutated", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(s.traffic, crate::plan::Traffic::stable_only());
    assert!(actions.contains(&Action::ScaleCanaryDown));
}

#[test]
fn an_answer_about_another_copy_is_ignored_and_a_webhook_that_stops_mutating_still_finishes() {
    let p = policy("  promotion: {mode: copy}\n");
    let s = promoting(&p);
    // An answer to an earlier revision's copy (queued, then put back): not this promotion's.
    let stale =
        Input::CopyAdmitted { target: "t1".into(), template_hash: "t1-mutated".into(), changed: vec![] };
    let (s, _) = reconcile(&p, s, 2, vec![stale], &copy_report("t2", "t1-mutated", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoting, "never promoted on another copy's template");
    assert_eq!(s.copy_admitted, None);
    // Admitted changed once; the webhook is then removed and the stable runs the plain copy.
    let admitted = Input::CopyAdmitted { target: "t2".into(), template_hash: "t2m".into(), changed: vec![] };
    let (s, _) = reconcile(&p, s, 3, vec![admitted], &copy_report("t2", "t1", RolloutStatus::Complete));
    let (s, actions) = reconcile(&p, s, 4, vec![], &copy_report("t2", "t2", RolloutStatus::Complete));
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. })), "{actions:?}");
    assert_eq!(s.phase, Phase::Promoted);
}

#[test]
fn a_copy_whose_containers_admission_changed_is_refused_alerted_once_and_retried_on_promote() {
    let doc = super::tests::BASE.replace("on: [abort, promote]", "on: [abort, promote, stuck]");
    let p = crate::policy::parse_policy("t.yaml", &format!("{doc}  promotion: {{mode: copy}}\n")).unwrap();
    let s = promoting(&p);
    let rewritten = Input::CopyAdmitted {
        target: "t2".into(),
        template_hash: "t2-other-image".into(),
        changed: vec!["metadata.annotations".into(), "spec.containers".into()],
    };
    let report = copy_report("t2", "t2-other-image", RolloutStatus::Complete);
    let (s, actions) = reconcile(&p, s, 2, vec![rewritten.clone()], &report);
    assert_eq!(s.phase, Phase::Promoting, "never promoted on containers nobody judged");
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only());
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. })), "{actions:?}");
    let stuck =
        |s: &RolloutState| s.outbox.iter().filter(|a| a.event == crate::policy::AlertEvent::Stuck).count();
    assert_eq!(stuck(&s), 1);
    assert!(
        super::is_warning("CopyRefused") && !super::is_warning("CopyAdmitted"),
        "a Warning Event: a person must act"
    );
    let (s, actions) = reconcile(&p, s, 3, vec![rewritten], &report);
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. })), "no copy loop");
    assert_eq!(stuck(&s), 1, "alerted once");
    // The operator fixed the webhook and asks again: copied again.
    let (s, actions) = reconcile(&p, s, 4, vec![Input::Command(Command::Promote)], &report);
    assert!(actions.contains(&Action::CopyCanaryToStable { template_hash: "t2".into() }), "{actions:?}");
    let (s, _) = reconcile(&p, s, 5, vec![], &copy_report("t2", "t2", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoted);
}

#[test]
fn a_canary_changed_during_the_copy_is_not_copied() {
    let p = policy("  promotion: {mode: copy}\n");
    let s = promoting(&p);
    let (s, actions) = reconcile(&p, s, 2, vec![], &copy_report("t3", "t1", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoting);
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. })), "{actions:?}");
}

fn blue_green() -> crate::policy::Policy {
    let doc = super::tests::BASE.replace(
        "steps: [{weight: 10, bake: 2m}, {weight: 50, bake: 2m}]",
        "steps: [{mirror: {percent: 100}, bake: 2m}]",
    );
    crate::policy::parse_policy(
        "t.yaml",
        &format!("{doc}  promotion: {{mode: blueGreen, rollbackWindow: 5m}}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Through the mirror step to the switch: everything on the new version, the old one untouched.
fn switched(p: &crate::policy::Policy) -> RolloutState {
    let ready = copy_report("t2", "t1", RolloutStatus::Complete);
    let (s, _) = reconcile(p, RolloutState::default(), 0, vec![Input::NewRevision("r2".into())], &ready);
    assert_eq!(s.traffic.mirror_percent, Some(100));
    assert_eq!(s.traffic.canary_weight, 0, "no live traffic before the switch");
    let mut s = s;
    for min in 1..=2 {
        s = reconcile(p, s, min, vec![Input::Observed(Ok(obs(min, (8000, 5), (8000, 5))))], &ready).0;
    }
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(s.traffic, crate::plan::Traffic::canary_only());
    assert_eq!(s.switched_until, Some(at(2).as_second() + 300));
    s
}

#[test]
fn blue_green_keeps_the_old_version_for_the_window_then_replaces_it() {
    let p = blue_green();
    let s = switched(&p);
    // Inside the window nothing touches the old version.
    let (s, actions) = reconcile(&p, s, 4, vec![], &copy_report("t2", "t1", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoting);
    assert!(actions.iter().all(|a| !matches!(a, Action::CopyCanaryToStable { .. })), "{actions:?}");
    // After it, the release ends as a copy promotion.
    let (s, actions) = reconcile(&p, s, 8, vec![], &copy_report("t2", "t1", RolloutStatus::Complete));
    assert!(actions.contains(&Action::CopyCanaryToStable { template_hash: "t2".into() }), "{actions:?}");
    let (s, _) = reconcile(&p, s, 9, vec![], &copy_report("t2", "t2", RolloutStatus::Complete));
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(s.traffic, crate::plan::Traffic::stable_only());
}

#[test]
fn blue_green_rolls_back_instantly_inside_the_window() {
    let p = blue_green();
    let s = switched(&p);
    let (s, _) = reconcile(
        &p,
        s,
        3,
        vec![Input::Command(Command::Abort("errors".into()))],
        &copy_report("t2", "t1", RolloutStatus::Complete),
    );
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(
        s.traffic,
        crate::plan::Traffic::stable_only(),
        "back on the old version, which never changed"
    );
}

#[test]
fn blue_green_plans_refuse_live_weight() {
    let doc = format!("{}  promotion: {{mode: blueGreen}}\n", super::tests::BASE);
    let err = crate::policy::parse_policy("t.yaml", &doc).unwrap_err().to_string();
    assert!(err.contains("steps[0].weight") && err.contains("without live traffic"), "{err}");
}
