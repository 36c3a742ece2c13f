//! Which engine inputs follow from what a reconcile read: the operator's command, a new canary
//! revision, drift, whether the Deployments must be read, and whether an analysis is due and
//! over which window. Pure — the reads are arguments — so these rules are tested here without
//! an API server; the driver does the reading.

use crate::engine::{self, Command, Input, Phase, RolloutState, UnknownCommand};
use crate::istio::RouteView;
use crate::policy::Policy;
use jiff::Timestamp;

/// The state the engine starts from: the one recorded on the VirtualService or, before the
/// first write, an idle state holding the traffic the route has.
pub(super) fn recorded_state(view: &RouteView) -> Result<RolloutState, serde_json::Error> {
    match &view.state {
        Some(raw) => serde_json::from_str(raw),
        None => Ok(RolloutState { traffic: view.traffic.clone(), ..RolloutState::default() }),
    }
}

/// The canary's revision when the recorded state is about another one: a new release.
fn new_revision<'r>(before: &RolloutState, revision: Option<&'r str>) -> Option<&'r str> {
    revision.filter(|r| before.revision.as_deref() != Some(*r))
}

/// A new release while no rollout is active: one is about to start, so the driver checks the
/// DestinationRule subsets first — routing to a subset that does not exist would send canary
/// traffic into a 503 black hole.
pub(super) fn starts_rollout(before: &RolloutState, revision: Option<&str>) -> bool {
    !before.phase.is_active() && new_revision(before, revision).is_some()
}

/// Whether the engine needs the Deployments ([`WorkloadReport`](crate::workload::WorkloadReport))
/// this reconcile: a rollout may start or is running (steps wait for the canary's pods, a copy
/// promotion follows the stable's rollout), or a copy promotion may still owe the canary's
/// scale-down. Idle and finished policies read nothing more.
pub(super) fn reads_workloads(before: &RolloutState, revision: Option<&str>) -> bool {
    starts_rollout(before, revision)
        || matches!(before.phase, Phase::Pending | Phase::Progressing | Phase::Paused | Phase::Promoting)
        || (before.phase == Phase::Promoted && before.copy_target.is_some())
}

/// What a reconcile read about one policy.
pub(super) struct Reads<'a> {
    /// The recorded state ([`recorded_state`]).
    pub before: &'a RolloutState,
    pub view: &'a RouteView,
    /// The canary Deployment's pod-template revision.
    pub revision: Option<&'a str>,
}

/// The engine's inputs for one reconcile, all but the evidence and the tick.
#[derive(Debug, PartialEq)]
pub(super) struct Derived {
    pub inputs: Vec<Input>,
    /// Start of the evidence window (Unix seconds; it ends at `now`) when an analysis is due.
    pub observe_from: Option<i64>,
    /// A command annotation that names no command: logged by the driver, otherwise ignored.
    pub unknown_command: Option<UnknownCommand>,
}

/// Turns what was read into the engine's inputs. `queued` (feedback from earlier effects) comes
/// first: it was learnt before anything read this cycle.
pub(super) fn derive(policy: &Policy, read: &Reads<'_>, queued: Vec<Input>, now: Timestamp) -> Derived {
    let Reads { before, view, revision } = *read;
    let mut inputs = queued;
    let mut unknown_command = None;
    if let Some(raw) = &view.command {
        match raw.parse::<Command>() {
            Ok(c) => inputs.push(Input::Command(c)),
            Err(e) => unknown_command = Some(e),
        }
    }
    if let Some(rev) = new_revision(before, revision) {
        inputs.push(Input::NewRevision(rev.to_string()));
    }
    if before.phase.is_active() && view.traffic != before.traffic {
        inputs.push(Input::Drift { observed: view.traffic.clone() });
    }
    Derived { inputs, observe_from: observe_from(policy, before, now), unknown_command }
}

/// While a rollout is judged (paused ones too), an analysis is due one cadence
/// ([`engine::cadence_secs`]: with `auto`, the detected scrape interval) after the last window
/// ended; the first window is the cadence before `now`.
fn observe_from(policy: &Policy, before: &RolloutState, now: Timestamp) -> Option<i64> {
    let interval = engine::cadence_secs(policy, before);
    let due = before.observed_until.is_none_or(|t| now.as_second() >= t + interval);
    (matches!(before.phase, Phase::Progressing | Phase::Paused) && due)
        .then(|| before.observed_until.unwrap_or(now.as_second() - interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Traffic;
    use crate::policy::parse_policy;

    const NOW: i64 = 1_700_000_000;

    fn policy() -> Policy {
        let doc = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: shop}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}\n  steps: [{weight: 10}, {weight: 50}]\n  analysis: {interval: 30s}\n";
        parse_policy("test.yaml", doc).unwrap_or_else(|e| panic!("{e}"))
    }

    fn view(canary_weight: u32, command: Option<&str>) -> RouteView {
        RouteView {
            index: 0,
            name: "#0".into(),
            stable_host: "reviews".into(),
            canary_host: "reviews".into(),
            traffic: Traffic { canary_weight, ..Traffic::default() },
            state: None,
            legacy_state_key: None,
            command: command.map(str::to_string),
            resource_version: "1".into(),
        }
    }

    fn state(phase: Phase, revision: &str, canary_weight: u32) -> RolloutState {
        RolloutState {
            phase,
            revision: Some(revision.into()),
            traffic: Traffic { canary_weight, ..Traffic::default() },
            ..RolloutState::default()
        }
    }

    fn derive_at(before: &RolloutState, view: &RouteView, revision: Option<&str>) -> Derived {
        let read = Reads { before, view, revision };
        derive(&policy(), &read, Vec::new(), Timestamp::from_second(NOW).unwrap())
    }

    #[test]
    fn recorded_state_defaults_to_idle_with_the_routes_traffic() {
        let v = view(20, None);
        let s = recorded_state(&v).unwrap();
        assert_eq!(s.phase, Phase::Idle);
        assert_eq!(s.traffic.canary_weight, 20);
        let recorded = state(Phase::Paused, "r1", 10);
        let v = RouteView { state: Some(serde_json::to_string(&recorded).unwrap()), ..view(10, None) };
        assert_eq!(recorded_state(&v).unwrap(), recorded);
        let v = RouteView { state: Some("{not json".into()), ..view(10, None) };
        assert!(recorded_state(&v).is_err());
    }

    #[test]
    fn a_new_revision_is_an_input_and_starts_a_rollout_only_when_none_is_active() {
        let idle = state(Phase::Idle, "r1", 0);
        let d = derive_at(&idle, &view(0, None), Some("r2"));
        assert_eq!(d.inputs, vec![Input::NewRevision("r2".into())]);
        assert!(starts_rollout(&idle, Some("r2")));
        assert!(!starts_rollout(&idle, Some("r1")));
        assert!(!starts_rollout(&idle, None));
        assert!(derive_at(&idle, &view(0, None), Some("r1")).inputs.is_empty());

        let progressing = state(Phase::Progressing, "r1", 10);
        let d = derive_at(&progressing, &view(10, None), Some("r2"));
        assert_eq!(d.inputs, vec![Input::NewRevision("r2".into())]);
        assert!(!starts_rollout(&progressing, Some("r2")));
    }

    #[test]
    fn drift_is_reported_only_while_a_rollout_is_active() {
        for phase in [Phase::Progressing, Phase::Paused, Phase::Promoting] {
            let d = derive_at(&state(phase, "r1", 10), &view(0, None), Some("r1"));
            assert!(d.inputs.contains(&Input::Drift { observed: view(0, None).traffic }), "{phase:?}");
        }
        for phase in [Phase::Idle, Phase::Pending, Phase::Promoted, Phase::Aborted] {
            let d = derive_at(&state(phase, "r1", 10), &view(0, None), Some("r1"));
            assert!(d.inputs.is_empty(), "{phase:?}");
        }
    }

    #[test]
    fn deployments_are_read_only_while_a_rollout_may_start_or_runs() {
        for phase in [Phase::Pending, Phase::Progressing, Phase::Paused, Phase::Promoting] {
            assert!(reads_workloads(&state(phase, "r1", 0), Some("r1")), "{phase:?}");
        }
        for phase in [Phase::Idle, Phase::Promoted, Phase::Aborted] {
            assert!(!reads_workloads(&state(phase, "r1", 0), Some("r1")), "{phase:?}");
            assert!(reads_workloads(&state(phase, "r1", 0), Some("r2")), "{phase:?}: a new revision");
        }
        let copied = RolloutState { copy_target: Some("t".into()), ..state(Phase::Promoted, "r1", 0) };
        assert!(reads_workloads(&copied, Some("r1")), "the canary's scale-down may be owed");
    }

    #[test]
    fn commands_are_parsed_and_unknown_ones_reported_not_fed() {
        let idle = state(Phase::Idle, "r1", 0);
        let d = derive_at(&idle, &view(0, Some("abort: too slow")), Some("r1"));
        assert_eq!(d.inputs, vec![Input::Command(Command::Abort("too slow".into()))]);
        assert_eq!(d.unknown_command, None);
        let d = derive_at(&idle, &view(0, Some("rollback")), Some("r1"));
        assert!(d.inputs.is_empty());
        assert_eq!(d.unknown_command, Some(UnknownCommand("rollback".into())));
    }

    #[test]
    fn queued_feedback_comes_first_then_command_revision_drift() {
        let before = state(Phase::Progressing, "r1", 10);
        let queued = vec![Input::AlertDelivered { id: 1, channel: "email".into() }];
        let v = view(0, Some("pause"));
        let read = Reads { before: &before, view: &v, revision: Some("r2") };
        let d = derive(&policy(), &read, queued.clone(), Timestamp::from_second(NOW).unwrap());
        assert_eq!(
            d.inputs,
            vec![
                queued[0].clone(),
                Input::Command(Command::Pause),
                Input::NewRevision("r2".into()),
                Input::Drift { observed: v.traffic.clone() },
            ]
        );
    }

    #[test]
    fn analysis_is_due_one_interval_after_the_last_window_while_judged() {
        let at = |phase: Phase, observed_until: Option<i64>| {
            let before = RolloutState { observed_until, ..state(phase, "r1", 10) };
            derive_at(&before, &view(10, None), Some("r1")).observe_from
        };
        // First window: the interval before now.
        assert_eq!(at(Phase::Progressing, None), Some(NOW - 30));
        assert_eq!(at(Phase::Paused, None), Some(NOW - 30));
        // Later windows start where the last one ended, once an interval has passed.
        assert_eq!(at(Phase::Progressing, Some(NOW - 45)), Some(NOW - 45));
        assert_eq!(at(Phase::Progressing, Some(NOW - 30)), Some(NOW - 30));
        assert_eq!(at(Phase::Progressing, Some(NOW - 29)), None);
        for phase in [Phase::Idle, Phase::Pending, Phase::Promoting, Phase::Promoted, Phase::Aborted] {
            assert_eq!(at(phase, None), None, "{phase:?}");
        }
    }

    #[test]
    fn with_auto_an_analysis_is_due_at_every_detected_scrape() {
        let doc = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: shop}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}\n  steps: [{weight: 10}, {weight: 50}]\n";
        let auto = parse_policy("test.yaml", doc).unwrap_or_else(|e| panic!("{e}"));
        let due = |observed_until: i64, scrape_ms: Option<u64>| {
            let before = RolloutState {
                observed_until: Some(observed_until),
                scrape_interval_ms: scrape_ms,
                ..state(Phase::Progressing, "r1", 10)
            };
            observe_from(&auto, &before, Timestamp::from_second(NOW).unwrap())
        };
        assert_eq!(due(NOW - 10, Some(10_000)), Some(NOW - 10));
        assert_eq!(due(NOW - 9, Some(10_000)), None);
        // Before any scrape interval is known: the 15 s fallback.
        assert_eq!(due(NOW - 14, None), None);
        assert_eq!(due(NOW - 15, None), Some(NOW - 15));
    }
}
