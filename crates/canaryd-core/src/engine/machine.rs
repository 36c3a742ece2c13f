//! The transition function. One method per input; helpers for the shared moves (start, enter a
//! step, promote, abort) so each rule is written once.

use super::history::Outcome;
use super::{Action, Command, Input, PendingAlert, Phase, RolloutState, Transition};
use crate::judge::{self, CheckResult, Evidence, IntervalVerdict, JudgeState, Verdict};
use crate::observation::Observation;
use crate::plan::{PlanStep, Traffic};
use crate::policy::{AlertEvent, DriftAction, GateKind, InconclusiveAction, OutsideWindow, Policy};
use crate::schedule::CompiledSchedule;
use crate::workload::WorkloadReport;
use jiff::Timestamp;

mod promotion;
mod workloads;

/// Applies one input at time `now` and returns the new state and the actions to carry out.
/// Nothing is known of the Deployments: no step waits for the canary's pods (a backtest).
pub fn step(policy: &Policy, state: &RolloutState, input: Input, now: Timestamp) -> Transition {
    step_with(policy, state, input, now, None)
}

/// [`step`] with what this reconcile read of the canary and stable Deployments: steps wait for
/// the canary's pods, and a copy promotion follows the stable's rollout. The daemon passes the
/// same report with every input of one reconcile; it is a fact of the moment, never stored.
pub fn step_with(
    policy: &Policy,
    state: &RolloutState,
    input: Input,
    now: Timestamp,
    workloads: Option<&WorkloadReport>,
) -> Transition {
    let mut m = Machine {
        policy,
        workloads,
        plan: policy.plan(),
        schedule: policy.schedule(),
        s: state.clone(),
        actions: Vec::new(),
        now: now.as_second(),
    };
    m.handle(input);
    if m.s.phase != state.phase {
        m.s.phase_since = Some(m.now);
    }
    if m.s != *state {
        m.s.decisions = state.decisions + 1;
    }
    let wake_at = m.wake_at();
    Transition { state: m.s, actions: m.actions, wake_at }
}

struct Machine<'a> {
    policy: &'a Policy,
    workloads: Option<&'a WorkloadReport>,
    plan: &'a [PlanStep],
    schedule: Option<&'a CompiledSchedule>,
    s: RolloutState,
    actions: Vec<Action>,
    now: i64,
}

impl Machine<'_> {
    fn handle(&mut self, input: Input) {
        match input {
            Input::Tick => self.tick(),
            Input::NewRevision(rev) => self.new_revision(rev),
            Input::Observed(result) => self.observed(result),
            Input::Gate { kind, open, detail } => self.gate(kind, open, &detail),
            Input::Command(c) => self.command(c),
            Input::Drift { observed } => self.drift(observed),
            Input::AlertDelivered { id, channel } => self.delivered(id, channel),
            Input::ScrapeInterval(every) => {
                self.s.scrape_interval_ms = Some(u64::try_from(every.as_millis()).unwrap_or(u64::MAX));
            }
            Input::CopyAdmitted { target, template_hash, changed } => {
                self.copy_admitted(&target, template_hash, &changed)
            }
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    fn tick(&mut self) {
        self.workloads_tick();
        match self.s.phase {
            Phase::Pending => {
                if !self.may_advance() {
                    return;
                }
                if self.has_gate(GateKind::ConfirmRollout) {
                    self.await_gate(GateKind::ConfirmRollout);
                } else {
                    self.start();
                }
            }
            Phase::Progressing | Phase::Paused => {
                if self.may_advance() {
                    if self.s.reset_outside_window {
                        // Back inside a window: restore the step's routing and bake it afresh.
                        self.s.reset_outside_window = false;
                        let step = self.s.step;
                        self.enter_step(step, "window opened again; restarting the step");
                    }
                    if let Some(kind) = self.awaiting() {
                        self.actions.push(Action::CallGate(kind));
                    }
                    return;
                }
                match self.schedule_outside() {
                    OutsideWindow::Hold => {}
                    OutsideWindow::Reset => {
                        if !self.s.reset_outside_window {
                            self.s.reset_outside_window = true;
                            self.set_traffic(Traffic::stable_only());
                            self.record(
                                "WindowClosed",
                                "window closed: traffic back on stable until the next window".into(),
                            );
                        }
                    }
                    OutsideWindow::Abort => {
                        self.abort("the schedule window closed before the rollout finished".into(), None)
                    }
                }
            }
            _ => {}
        }
    }

    fn new_revision(&mut self, rev: String) {
        if self.s.revision.as_deref() == Some(rev.as_str()) {
            return;
        }
        if self.s.phase.is_active() {
            let weight = self.s.traffic.canary_weight;
            self.s.reason = Some(format!("superseded by revision {rev}"));
            self.s.archive(Outcome::Superseded, self.now, weight, None);
            self.set_traffic(Traffic::stable_only());
            self.record(
                "Superseded",
                format!(
                    "revision {rev} replaces {} mid-rollout; starting over",
                    self.s.revision.as_deref().unwrap_or("?")
                ),
            );
        }
        let keep = RolloutState {
            decisions: self.s.decisions,
            alert_seq: self.s.alert_seq,
            outbox: std::mem::take(&mut self.s.outbox),
            history: std::mem::take(&mut self.s.history),
            traffic: self.s.traffic.clone(),
            ..RolloutState::default()
        };
        self.s = RolloutState { phase: Phase::Pending, revision: Some(rev.clone()), ..keep };
        self.record("NewRevision", format!("revision {rev} is pending"));
        self.tick();
    }

    fn observed(&mut self, result: Result<Observation, String>) {
        if !matches!(self.s.phase, Phase::Progressing | Phase::Paused) || self.s.reset_outside_window {
            return;
        }
        if self.has_gate(GateKind::Rollback) {
            self.actions.push(Action::CallGate(GateKind::Rollback));
        }
        if self.s.waiting_for_canary.is_some() {
            // No step is running: this window judged nothing the rollout decided.
            self.s.observed_until = Some(self.now);
            return;
        }
        let obs = match result {
            Ok(obs) => obs,
            Err(msg) => {
                let verdict = error_verdict(&msg, self.now);
                return self.unreadable(verdict, msg);
            }
        };
        if let Some(why) = self.canary_unreachable(&obs) {
            self.s.observed_until = Some(self.now);
            return self.abort(why, None);
        }
        // The step's bake is served: from now on a look with conclusive pass evidence passes
        // the step — in an extension too, which exists only to gather evidence (the pass
        // evidence is an e-process, valid at every look). An extension's end only decides
        // what an inconclusive step does next.
        let baked = self.now >= self.bake_end(0);
        let end_of_step = self.now >= self.step_deadline();
        let (judge_state, verdict) = judge::judge(&self.policy.spec().analysis, &self.s.judge, &obs, baked);
        self.s.judge = judge_state;
        self.s.observed_until = Some(self.now);
        self.s.last_verdict = Some(verdict.clone());
        match verdict.verdict {
            Verdict::Fail => {
                let why = verdict.decisive_check().map(|c| c.evidence.summary.clone()).unwrap_or_default();
                self.abort(format!("check failed: {why}"), Some(verdict));
            }
            Verdict::Error => {
                let why = verdict.decisive_check().map(|c| c.evidence.summary.clone()).unwrap_or_default();
                self.unreadable(verdict, why);
            }
            Verdict::Pass => {
                self.s.consecutive_errors = 0;
                // Outside a window a passing step waits: steps advance only inside windows.
                if baked
                    && self.s.phase == Phase::Progressing
                    && self.s.awaiting_gate.is_none()
                    && self.may_advance()
                {
                    self.step_passed();
                }
            }
            Verdict::Inconclusive => {
                self.s.consecutive_errors = 0;
                if end_of_step && self.s.phase == Phase::Progressing && self.s.awaiting_gate.is_none() {
                    self.inconclusive(verdict);
                }
            }
        }
    }

    fn gate(&mut self, kind: GateKind, open: bool, detail: &str) {
        if kind == GateKind::Rollback {
            if open && self.s.phase.is_active() {
                self.abort(format!("rollback gate answered 2xx: {detail}"), None);
            }
            return;
        }
        if self.awaiting() != Some(kind) {
            return;
        }
        if !open {
            let reason = format!("waiting for gate {}: {detail}", gate_name(kind));
            if self.s.reason.as_ref() != Some(&reason) {
                self.s.note(self.now, "GateHeld", &reason);
                self.s.reason = Some(reason);
            }
            return;
        }
        self.s.awaiting_gate = None;
        self.s.reason = None;
        self.s.note(self.now, "GateOpened", &format!("gate {} opened: {detail}", gate_name(kind)));
        match kind {
            GateKind::ConfirmRollout => self.start(),
            GateKind::ConfirmStep => {
                let next = self.s.step + 1;
                self.enter_step(next, "gate confirm-step opened");
            }
            GateKind::ConfirmPromotion => self.promote_now(),
            GateKind::Rollback => {}
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Start => {
                if matches!(self.s.phase, Phase::Pending) || (self.s.phase.is_active() && !self.may_advance())
                {
                    self.s.forced_start = true;
                    self.record("Started", "schedule overridden by canaryd start".into());
                    self.tick();
                }
            }
            Command::Promote => {
                if matches!(self.s.phase, Phase::Progressing | Phase::Paused) {
                    self.record(
                        "ManualPromote",
                        "promoted by operator (remaining steps and gates skipped)".into(),
                    );
                    self.promote_now();
                } else if self.s.phase == Phase::Promoting && self.s.copy_refused.is_some() {
                    // A copy refused for changed containers: the operator fixed the webhook.
                    self.s.copy_refused = None;
                    self.s.reason = None;
                    self.record(
                        "ManualPromote",
                        "copy to the stable Deployment asked again by operator".into(),
                    );
                }
            }
            Command::Abort(reason) => {
                if matches!(
                    self.s.phase,
                    Phase::Pending | Phase::Progressing | Phase::Paused | Phase::Promoting
                ) {
                    self.abort(format!("aborted by operator: {reason}"), None);
                }
            }
            Command::Pause => {
                if self.s.phase == Phase::Progressing {
                    self.s.phase = Phase::Paused;
                    self.s.reason = Some("paused by operator".into());
                    self.record("Paused", "paused by operator".into());
                }
            }
            Command::Resume => {
                if self.s.phase == Phase::Paused {
                    self.s.phase = Phase::Progressing;
                    self.s.reason = None;
                    self.record("Resumed", "resumed by operator".into());
                    if self.s.step_passed {
                        self.next_step();
                    }
                }
            }
            Command::Retry => {
                if self.s.phase == Phase::Aborted {
                    let rev = self.s.revision.take().unwrap_or_default();
                    self.s.phase = Phase::Idle;
                    self.new_revision(rev);
                }
            }
        }
    }

    fn drift(&mut self, observed: Traffic) {
        if !self.s.phase.is_active() || observed == self.s.traffic {
            return;
        }
        let msg = format!(
            "routing changed outside canaryd: found {}, expected {}",
            observed.describe(),
            self.s.traffic.describe()
        );
        match self.policy.spec().on_drift {
            DriftAction::Reassert => {
                self.actions.push(Action::SetTraffic(self.s.traffic.clone()));
                self.record("DriftReasserted", msg);
            }
            DriftAction::Hold => {
                self.s.traffic = observed;
                self.s.phase = Phase::Paused;
                self.s.reason = Some(msg.clone());
                self.record("DriftHeld", msg);
            }
        }
    }

    fn delivered(&mut self, id: u64, channel: String) {
        let channels = |event| channels_for(self.policy, event);
        let mut newly = None;
        if let Some(alert) = self.s.outbox.iter_mut().find(|a| a.id == id) {
            if !alert.delivered.contains(&channel) {
                newly = Some(format!("{:?} alert #{id} delivered to {channel}", alert.event).to_lowercase());
                alert.delivered.push(channel);
            }
        }
        if let Some(msg) = newly {
            self.s.note(self.now, "AlertDelivered", &msg);
        }
        self.s.outbox.retain(|a| !channels(a.event).iter().all(|c| a.delivered.contains(c)));
    }

    // ---- moves ---------------------------------------------------------------------------

    fn start(&mut self) {
        self.s.phase = Phase::Progressing;
        self.s.started = Some(self.now);
        self.s.judge = JudgeState::default();
        self.s.observed_until = Some(self.now);
        self.s.reason = None;
        let rev = self.s.revision.clone().unwrap_or_default();
        self.alert(AlertEvent::Start, format!("rollout of revision {rev} started"), None);
        self.enter_step(0, "rollout started");
    }

    fn enter_step(&mut self, index: usize, why: &str) {
        let Some(step) = self.plan.get(index).cloned() else {
            return self.promote();
        };
        if self.hold_for_canary(index, &step.traffic) {
            return;
        }
        self.s.step = index;
        self.s.step_started = Some(self.now);
        self.s.extensions = 0;
        self.s.step_passed = false;
        self.s.judge.start_step();
        self.set_traffic(step.traffic.clone());
        let msg = format!(
            "step {}/{}: {} for at least {} ({why})",
            index + 1,
            self.plan.len(),
            step.traffic.describe(),
            step.bake
        );
        if index > 0 {
            self.alert(AlertEvent::Step, msg.clone(), self.s.last_verdict.clone());
        }
        self.record("StepStarted", msg);
    }

    fn step_passed(&mut self) {
        let pause = self.plan.get(self.s.step).is_some_and(|s| s.pause);
        self.s.step_passed = true;
        if pause {
            self.s.phase = Phase::Paused;
            self.s.reason = Some(format!("step {} passed; paused until `canaryd resume`", self.s.step + 1));
            self.record("StepPaused", self.s.reason.clone().unwrap_or_default());
        } else {
            self.next_step();
        }
    }

    fn next_step(&mut self) {
        let next = self.s.step + 1;
        match self.plan.get(next) {
            Some(step) => {
                let rises = step.traffic.canary_weight > self.s.traffic.canary_weight;
                if rises && self.has_gate(GateKind::ConfirmStep) {
                    self.await_gate(GateKind::ConfirmStep);
                } else {
                    self.enter_step(next, "previous step passed");
                }
            }
            None => self.promote(),
        }
    }

    fn inconclusive(&mut self, verdict: IntervalVerdict) {
        let policy = &self.policy.spec().analysis.on_inconclusive;
        let exhausted = self.s.extensions >= policy.max_extensions;
        match policy.action {
            InconclusiveAction::Extend if !exhausted => {
                self.s.extensions += 1;
                // An extension is a new segment of the judge's abort e-processes (fresh restart
                // weights); the step's pass evidence carries on.
                self.s.judge.start_segment();
                self.record(
                    "StepExtended",
                    format!(
                        "step {} inconclusive; extended ({}/{})",
                        self.s.step + 1,
                        self.s.extensions,
                        policy.max_extensions
                    ),
                );
            }
            InconclusiveAction::Abort => {
                self.abort("evidence inconclusive at the end of the step".into(), Some(verdict))
            }
            InconclusiveAction::Extend if policy.abort_when_exhausted => self.abort(
                format!("evidence still inconclusive after {} extensions", policy.max_extensions),
                Some(verdict),
            ),
            _ => {
                if self.s.reason.is_none() {
                    let msg = format!(
                        "step {} inconclusive; holding at {} until the evidence is conclusive",
                        self.s.step + 1,
                        self.s.traffic.describe()
                    );
                    self.s.reason = Some(msg.clone());
                    self.alert(AlertEvent::Inconclusive, msg.clone(), Some(verdict));
                    self.record("Holding", msg);
                }
            }
        }
    }

    /// Abort: traffic back to stable in this very transition, then the alert.
    fn abort(&mut self, reason: String, verdict: Option<IntervalVerdict>) {
        let at = format!("step {}/{} ({})", self.s.step + 1, self.plan.len(), self.s.traffic.describe());
        let was_active = self.s.phase.is_active();
        let weight = self.s.traffic.canary_weight;
        self.set_traffic(Traffic::stable_only());
        self.s.phase = Phase::Aborted;
        self.s.finished = Some(self.now);
        self.s.awaiting_gate = None;
        self.s.waiting_for_canary = None;
        self.s.reason = Some(reason.clone());
        self.s.archive(Outcome::Aborted, self.now, weight, verdict.as_ref());
        let headline = if was_active {
            format!("aborted at {at}: {reason}")
        } else {
            format!("aborted before start: {reason}")
        };
        self.alert(AlertEvent::Abort, headline.clone(), verdict);
        self.record("Aborted", headline);
    }

    fn unreadable(&mut self, verdict: IntervalVerdict, why: String) {
        self.s.consecutive_errors += 1;
        self.s.last_verdict = Some(verdict.clone());
        let limit = self.policy.spec().analysis.max_consecutive_errors;
        if self.s.consecutive_errors >= limit {
            self.abort(
                format!("evidence unreadable for {limit} consecutive intervals (last: {why})"),
                Some(verdict),
            );
        } else {
            self.record(
                "EvidenceError",
                format!("evidence unreadable ({}/{limit}): {why}", self.s.consecutive_errors),
            );
        }
    }

    // ---- helpers -------------------------------------------------------------------------

    fn set_traffic(&mut self, t: Traffic) {
        if t != self.s.traffic {
            self.s.traffic = t.clone();
            self.actions.push(Action::SetTraffic(t));
        }
    }

    /// An Event and log line for the shell, and the same entry in the rollout's timeline.
    fn record(&mut self, reason: &'static str, message: String) {
        self.s.note(self.now, reason, &message);
        self.actions.push(Action::Record { reason, message });
    }

    fn alert(&mut self, event: AlertEvent, headline: String, verdict: Option<IntervalVerdict>) {
        if channels_for(self.policy, event).is_empty() {
            return;
        }
        self.s.alert_seq += 1;
        let id = self.s.alert_seq;
        // An alert no channel can take (email with no SMTP relay, a webhook that always 404s)
        // would otherwise stay forever and grow the state annotation toward the API server's
        // 256 KiB limit: the oldest goes, with an Event saying so.
        while self.s.outbox.len() >= MAX_OUTBOX {
            let dropped = self.s.outbox.remove(0);
            let missing: Vec<String> = channels_for(self.policy, dropped.event)
                .into_iter()
                .filter(|c| !dropped.delivered.contains(c))
                .collect();
            self.record(
                ALERT_DROPPED,
                format!(
                    "alert #{} ({}) dropped undelivered (not acknowledged by {}): the outbox keeps the {MAX_OUTBOX} newest",
                    dropped.id,
                    dropped.headline,
                    missing.join(", ")
                ),
            );
        }
        self.s.outbox.push(PendingAlert {
            id,
            event,
            at: self.now,
            headline,
            revision: self.s.revision.clone(),
            step: self.s.started.map(|_| self.s.step),
            traffic: self.s.traffic.clone(),
            verdict,
            delivered: Vec::new(),
        });
        self.actions.push(Action::Deliver(id));
    }

    fn has_gate(&self, kind: GateKind) -> bool {
        self.policy.spec().gates.iter().any(|g| g.kind == kind)
    }

    fn await_gate(&mut self, kind: GateKind) {
        self.s.note(self.now, "GateAsked", &format!("asked gate {}", gate_name(kind)));
        self.s.awaiting_gate = Some(gate_name(kind).to_string());
        self.actions.push(Action::CallGate(kind));
    }

    fn awaiting(&self) -> Option<GateKind> {
        let name = self.s.awaiting_gate.as_deref()?;
        [GateKind::ConfirmRollout, GateKind::ConfirmStep, GateKind::ConfirmPromotion]
            .into_iter()
            .find(|k| gate_name(*k) == name)
    }

    /// Steps may start and advance: no schedule, inside a window, or `canaryd start`.
    fn may_advance(&self) -> bool {
        self.s.forced_start
            || self
                .schedule
                .as_ref()
                .is_none_or(|s| Timestamp::from_second(self.now).ok().and_then(|t| s.window_at(t)).is_some())
    }

    fn schedule_outside(&self) -> OutsideWindow {
        self.policy.spec().schedule.as_ref().map(|s| s.outside_window).unwrap_or_default()
    }

    /// When the step's bake and `extensions` extensions (one bake each) are over.
    fn bake_end(&self, extensions: u32) -> i64 {
        let bake = self.plan.get(self.s.step).map(|s| s.bake.as_secs_i64()).unwrap_or(0);
        self.s.step_started.unwrap_or(self.now).saturating_add(bake.saturating_mul(i64::from(extensions) + 1))
    }

    /// When the step (with its extensions so far) ends if its evidence stays inconclusive.
    fn step_deadline(&self) -> i64 {
        self.bake_end(self.s.extensions)
    }

    fn wake_at(&self) -> Option<i64> {
        let interval = cadence_secs(self.policy, &self.s);
        match self.s.phase {
            Phase::Pending if !self.may_advance() => {
                let now = Timestamp::from_second(self.now).ok()?;
                self.schedule.as_ref()?.next_windows(now, 1).first().map(|w| w.start.as_second())
            }
            // Waiting on Deployments: look again soon (their watch also wakes the policy).
            Phase::Promoting => Some(match self.s.switched_until {
                Some(until) if until > self.now => until.min(self.now + interval),
                _ => self.now + workloads::RECHECK_SECS,
            }),
            Phase::Progressing if self.s.waiting_for_canary.is_some() => {
                Some(self.now + workloads::RECHECK_SECS)
            }
            Phase::Pending => Some(self.now + interval),
            Phase::Progressing | Phase::Paused => Some(self.s.observed_until.unwrap_or(self.now) + interval),
            _ => None,
        }
    }
}

/// Seconds between looks for this rollout: `analysis.interval`, with `auto` resolved from the
/// scrape interval last detected ([`Input::ScrapeInterval`]). The engine's wake-ups, the
/// daemon's "analysis due" rule, `backtest` and the demo all use this one rule.
pub fn cadence_secs(policy: &Policy, state: &RolloutState) -> i64 {
    let detected = state.scrape_interval_ms.map(std::time::Duration::from_millis);
    policy.spec().analysis.interval.cadence_secs(detected)
}

/// Most undelivered alerts a state keeps (each is ~1–2 KB of JSON with its verdict; the
/// annotation must stay far below the API server's 256 KiB limit).
pub const MAX_OUTBOX: usize = 16;

/// Reason of the Event recorded when an undeliverable alert leaves a full outbox.
pub const ALERT_DROPPED: &str = "AlertDropped";

/// Whether the Event for a transition with this reason is a `Warning` (something a person
/// should look at) rather than `Normal`.
pub fn is_warning(reason: &str) -> bool {
    matches!(reason, "Aborted" | ALERT_DROPPED | "PromotionStuck" | "CopyRefused")
        || reason.starts_with("Drift")
}

/// Channels (`email`, webhook names) that want `event` under this policy.
pub fn channels_for(policy: &Policy, event: AlertEvent) -> Vec<String> {
    let alerts = &policy.spec().alerts;
    let wants = |on: &Option<Vec<AlertEvent>>| on.as_ref().unwrap_or(&alerts.on).contains(&event);
    let mut out = Vec::new();
    if let Some(email) = &alerts.email {
        if wants(&email.on) {
            out.push("email".to_string());
        }
    }
    for w in &alerts.webhooks {
        if wants(&w.on) {
            out.push(w.name.clone());
        }
    }
    out
}

/// Kebab-case gate kind, as in policies.
pub fn gate_name(kind: GateKind) -> &'static str {
    match kind {
        GateKind::ConfirmRollout => "confirm-rollout",
        GateKind::ConfirmStep => "confirm-step",
        GateKind::ConfirmPromotion => "confirm-promotion",
        GateKind::Rollback => "rollback",
    }
}

fn error_verdict(msg: &str, at: i64) -> IntervalVerdict {
    let check = CheckResult {
        check: "metrics".to_string(),
        verdict: Verdict::Error,
        evidence: Evidence { summary: format!("metrics unreadable: {msg}"), ..Evidence::default() },
        dry_run: false,
    };
    IntervalVerdict::from_checks(vec![check], at)
}
