//! The engine's rules about the Deployments behind the subsets: traffic reaches the canary only
//! once its pods are ready, copy mode scales the canary back up for a new revision, a canary
//! that gets no requests at a weight that should bring them is a fault, and a copy promotion is
//! finished only when the stable Deployment runs the promoted template on every pod.

use super::{Action, Machine, Phase};
use crate::observation::Observation;
use crate::plan::Traffic;
use crate::policy::{AlertEvent, GateKind, Policy};
use crate::workload::{RolloutStatus, WorkloadReport};

/// Seconds between reconciles while waiting on Deployments (their watch events also wake the
/// policy; this bounds a missed event).
pub(super) const RECHECK_SECS: i64 = 5;

/// Fewest canary requests a window must be expected to bring before none at all is a fault:
/// P(0 | Poisson(20)) ≈ 2·10⁻⁹, so a healthy canary is never blamed by chance.
const EXPECTED_BEFORE_UNREACHABLE: f64 = 20.0;

/// How long a step runs before a canary without requests counts as unreachable: two scrape
/// intervals (at least a minute). Istio creates a workload's request series at its first
/// request and Prometheus sees it one scrape later, so right after the weight rises the
/// canary's counts can be missing while the stable's are there.
fn unreachable_grace_secs(scrape_interval_ms: Option<u64>) -> i64 {
    let scrape = scrape_interval_ms.map_or(30, |ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX));
    scrape.saturating_mul(2).max(60)
}

/// The canary got no request in a window where its weight should have brought at least
/// [`EXPECTED_BEFORE_UNREACHABLE`] (the stable's requests scaled by the weights): its pods are
/// not reached — no endpoints, a subset that selects nothing, a route that does not lead there.
/// Holding "inconclusive" would leave users facing 503s indefinitely.
fn unreachable(obs: &Observation, traffic: &Traffic) -> Option<String> {
    let w = f64::from(traffic.canary_weight.min(100));
    if obs.canary.requests > 0 || w <= 0.0 || w >= 100.0 {
        return None;
    }
    let expected = obs.baseline.requests as f64 * w / (100.0 - w);
    (expected >= EXPECTED_BEFORE_UNREACHABLE).then(|| {
        format!(
            "the canary received no requests at {w}% while the stable served {} (≈{expected:.0} expected): its pods are not reachable (no ready endpoints in the canary subset, or a route that does not lead to them)",
            obs.baseline.requests
        )
    })
}

/// Blue-green's rollback window in seconds (`promotion.rollbackWindow`, default 10 minutes).
pub(super) fn rollback_window_secs(policy: &Policy) -> i64 {
    policy.spec().promotion.rollback_window.map(|d| d.as_secs_i64()).unwrap_or(600)
}

/// Whether a step's routing sends any request to the canary (weight, header match or mirror).
fn reaches_canary(t: &Traffic) -> bool {
    t.canary_weight > 0 || t.header_match.is_some() || t.mirror_percent.is_some()
}

impl Machine<'_> {
    /// [`unreachable`], once the step has run [`unreachable_grace_secs`].
    pub(super) fn canary_unreachable(&self, obs: &Observation) -> Option<String> {
        let running = self.now - self.s.step_started.unwrap_or(self.now);
        (running >= unreachable_grace_secs(self.s.scrape_interval_ms))
            .then(|| unreachable(obs, &self.s.traffic))
            .flatten()
    }

    /// At every tick: blue-green's rollback window (no report needed), then what this
    /// reconcile read of the Deployments (nothing without a report).
    pub(super) fn workloads_tick(&mut self) {
        if self.in_rollback_window() {
            return;
        }
        let Some(report) = self.workloads else { return };
        match self.s.phase {
            Phase::Progressing => {
                if let Some(index) = self.s.waiting_for_canary {
                    self.recheck_canary(index, report);
                }
            }
            Phase::Promoting => self.copy_progress(report),
            // Copy promotion scales the canary down after routing back; repeated until done so
            // a crash right after the write does not leave it running.
            Phase::Promoted
                if self.policy.spec().promotion.mode.copies()
                    && self.s.copy_target.is_some()
                    && report.canary.desired > 0 =>
            {
                self.actions.push(Action::ScaleCanaryDown);
            }
            _ => {}
        }
    }

    /// Blue-green, after the switch: while the rollback window lasts the old version stays
    /// as it is (rollback gates are asked at every tick); then the release ends like `copy`.
    /// True while the window lasts.
    fn in_rollback_window(&mut self) -> bool {
        match self.s.switched_until {
            Some(until) if self.s.phase == Phase::Promoting && self.now < until => {
                if self.has_gate(GateKind::Rollback) {
                    self.actions.push(Action::CallGate(GateKind::Rollback));
                }
                true
            }
            _ => false,
        }
    }

    /// Replicas copy mode scales a canary at zero to: `promotion.canaryReplicas`, else the
    /// stable's count, at least one.
    fn scale_to(&self, report: &WorkloadReport) -> u32 {
        self.policy.spec().promotion.canary_replicas.unwrap_or(report.stable_replicas).max(1)
    }

    /// Entering step `index` with `traffic`: held (traffic unchanged) when the step sends more
    /// requests to a canary whose pods are not all ready. True when held.
    pub(super) fn hold_for_canary(&mut self, index: usize, traffic: &Traffic) -> bool {
        let Some(report) = self.workloads else { return false };
        let rises = traffic.canary_weight > self.s.traffic.canary_weight
            || (reaches_canary(traffic) && !reaches_canary(&self.s.traffic));
        if !rises || report.canary_ready() {
            return false;
        }
        let scale_to = self.scale_to(report);
        if report.canary.desired == 0 && self.policy.spec().promotion.mode.copies() {
            self.actions.push(Action::ScaleCanary(scale_to));
        }
        if self.s.waiting_for_canary != Some(index) {
            self.s.waiting_for_canary = Some(index);
            let copies = self.policy.spec().promotion.mode.copies();
            let msg = match (report.canary.desired, copies) {
                (0, false) => format!(
                    "waiting for the canary's pods before step {} ({}): its Deployment has 0 replicas — scale it up (promotion modes copy and blueGreen do that themselves)",
                    index + 1,
                    traffic.describe()
                ),
                (desired, _) => format!(
                    "waiting for the canary's pods before step {} ({}): {} of {} ready",
                    index + 1,
                    traffic.describe(),
                    report.canary.available,
                    if desired == 0 { scale_to } else { desired }
                ),
            };
            self.s.reason = Some(msg.clone());
            self.record("WaitingForCanary", msg);
        }
        true
    }

    fn recheck_canary(&mut self, index: usize, report: &WorkloadReport) {
        if report.canary_ready() {
            self.s.waiting_for_canary = None;
            self.s.reason = None;
            self.enter_step(index, "the canary's pods are ready");
        } else if let Some(RolloutStatus::Stuck(why)) = &report.canary_status {
            self.abort(format!("the canary Deployment cannot become ready: {why}"), None);
        } else if report.canary.desired == 0 && self.policy.spec().promotion.mode.copies() {
            self.actions.push(Action::ScaleCanary(self.scale_to(report)));
        }
    }
    /// Copy promotion, at every reconcile while `Promoting`: copy until the stable's template
    /// is the promoted one, then wait for its rollout to complete before routing back to it.
    /// Until then the canary keeps serving everything.
    fn copy_progress(&mut self, report: &WorkloadReport) {
        let target = match (&self.s.copy_target, &report.copy_target) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) => {
                self.s.copy_target = Some(t.clone());
                t.clone()
            }
            (None, None) => return,
        };
        if report.copy_target.as_ref() != Some(&target) {
            // The canary's template changed after promotion started: the new revision supersedes
            // this one (`new_revision`); copying either template now would be wrong.
            return;
        }
        // The stable runs the copy: as written, or as the API server admitted it.
        let landed = report.stable_template.as_ref();
        let runs_copy = landed == Some(&target)
            || (self.s.copy_admitted.is_some() && landed == self.s.copy_admitted.as_ref());
        if !runs_copy {
            // A copy whose containers admission changed is not written again (it would give the
            // same); an operator's `promote` asks for it again.
            if self.s.copy_refused.is_none() || landed != self.s.copy_refused.as_ref() {
                self.actions.push(Action::CopyCanaryToStable { template_hash: target });
            }
            return;
        }
        match &report.stable_status {
            Some(RolloutStatus::Complete) => {
                self.set_traffic(Traffic::stable_only());
                self.actions.push(Action::ScaleCanaryDown);
                self.finish_promoted("stable now runs the canary's pod template on every replica");
            }
            Some(RolloutStatus::Stuck(why)) if !self.s.copy_stuck => {
                self.s.copy_stuck = true;
                let msg = format!(
                    "the stable Deployment cannot roll out the promoted template ({why}); the canary keeps serving 100% — fix the stable Deployment or `canaryd abort`"
                );
                self.s.reason = Some(msg.clone());
                self.alert(AlertEvent::Stuck, msg.clone(), None);
                self.record("PromotionStuck", msg);
            }
            Some(RolloutStatus::Stuck(_)) => {}
            Some(RolloutStatus::Progressing(what)) => {
                let msg =
                    format!("waiting for the stable Deployment to roll out the promoted template: {what}");
                if self.s.copy_stuck || self.s.reason.as_ref() != Some(&msg) {
                    self.s.copy_stuck = false;
                    self.s.reason = Some(msg);
                }
            }
            None => {}
        }
    }

    /// The API server changed the copy of `target` on admission and stored `hash`. Writing it
    /// again would give the same, so (before, it copied at every reconcile and never finished):
    /// * a change outside the containers (labels, annotations, defaults a policy engine adds):
    ///   the promotion completes when the stable runs the template as admitted;
    /// * a change to the containers: the stable would run something never judged — refused,
    ///   alerted `stuck`; the canary keeps serving 100 % until an operator acts.
    pub(super) fn copy_admitted(&mut self, target: &str, hash: String, changed: &[String]) {
        let copying = self.s.phase == Phase::Promoting && self.s.copy_target.as_deref() == Some(target);
        let known =
            [&self.s.copy_admitted, &self.s.copy_refused].iter().any(|h| h.as_deref() == Some(&*hash));
        if !copying || hash == target || known {
            return;
        }
        let mut fields = changed.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if changed.len() > 5 {
            fields.push_str(&format!(" and {} more", changed.len() - 5));
        }
        if changed.iter().any(|p| touches_containers(p)) {
            self.s.copy_refused = Some(hash);
            let msg = format!(
                "the API server's admission changed the containers of the copied pod template ({fields}): the stable Deployment would run something never judged, so the promotion does not finish on it; the canary keeps serving 100% — exempt the stable Deployment from that mutation and `canaryd promote` to copy again, or `canaryd abort`"
            );
            self.s.reason = Some(msg.clone());
            self.alert(AlertEvent::Stuck, msg.clone(), None);
            self.record("CopyRefused", msg);
            return;
        }
        self.s.copy_admitted = Some(hash);
        self.record(
            "CopyAdmitted",
            format!(
                "the API server's admission (a mutating webhook or policy engine) changed the copied pod template ({fields}); the promotion completes when the stable Deployment runs the template as admitted"
            ),
        );
    }
}

/// A changed path (of [`crate::workload::changed_paths`]) inside what the pods run.
fn touches_containers(path: &str) -> bool {
    let inside = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}."));
    path == "the whole template"
        || path == "spec"
        || ["spec.containers", "spec.initContainers", "spec.ephemeralContainers"].into_iter().any(inside)
}
