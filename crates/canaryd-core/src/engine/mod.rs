//! The rollout engine: a pure state machine. `step(policy, state, input, now)` returns the new
//! state and the actions the IO shell must carry out. No IO and no clock: time is an argument,
//! observations are inputs — which is what makes backtests, the demo's compressed time and the
//! crash-recovery tests possible.
//!
//! Invariants (tested in `tests.rs`):
//! - a step advances only on a Pass verdict for that step, after its bake time, inside a window
//!   (or after `canaryd start`), with its gates open — never on Inconclusive or Error;
//! - every path to Aborted sets the traffic to stable-only in the same transition;
//! - an abort is allowed in every phase and at any time, outside windows included;
//! - every alert is put in the state's outbox in the same transition as its cause;
//! - every recorded event enters the rollout's timeline, and every end (promoted, aborted,
//!   superseded) the policy's history, in the transition that causes it; both are bounded.

mod history;
mod machine;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod workload_tests;

pub use history::{Outcome, RolloutRecord, TimelineEntry, MAX_HISTORY, MAX_TEXT, MAX_TIMELINE};
pub use machine::{
    cadence_secs, channels_for, gate_name, is_warning, step, step_with, ALERT_DROPPED, MAX_OUTBOX,
};
pub use state::{PendingAlert, Phase, RolloutState};

use crate::observation::Observation;
use crate::plan::Traffic;
use crate::policy::GateKind;
use serde::{Deserialize, Serialize};

/// Something that happened, fed to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed; re-evaluate windows and deadlines.
    Tick,
    /// The canary workload's pod template changed to this revision.
    NewRevision(String),
    /// Evidence for the window `[state.observed_until, now)`, or why it could not be read.
    Observed(Result<Observation, String>),
    /// A gate answered: `open` is true on a 2xx answer.
    Gate { kind: GateKind, open: bool, detail: String },
    /// An operator command.
    Command(Command),
    /// Someone else changed the route's routing (GitOps revert, a person).
    Drift { observed: Traffic },
    /// An alert was delivered to a channel.
    AlertDelivered { id: u64, channel: String },
    /// The metrics source's scrape interval, detected from the samples of the last look; sets
    /// the cadence of `analysis.interval: auto` ([`cadence_secs`]).
    ScrapeInterval(std::time::Duration),
    /// Copy promotion: the API server stored the copy of `target` (the template hash written)
    /// changed by its admission chain (a mutating webhook or policy engine); `template_hash`
    /// is what the stable Deployment now has, `changed` every field that differs.
    CopyAdmitted { target: String, template_hash: String, changed: Vec<String> },
}

/// Operator commands (`canaryd start|promote|abort|pause|resume|retry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Start a pending rollout now, whatever the schedule says.
    Start,
    /// Skip the remaining steps and promote.
    Promote,
    /// Abort with the operator's reason.
    Abort(String),
    Pause,
    Resume,
    /// Roll out an aborted revision again.
    Retry,
}

/// A command annotation that names no command; the daemon logs it and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command {0:?} (expected start, promote, pause, resume, retry or abort[: reason])")]
pub struct UnknownCommand(pub String);

impl std::str::FromStr for Command {
    type Err = UnknownCommand;

    /// Parses the command annotation: `start`, `promote`, `pause`, `resume`, `retry`,
    /// `abort[: reason]`. Only `abort` uses the text after the colon; the others ignore it.
    fn from_str(raw: &str) -> Result<Command, UnknownCommand> {
        let (verb, rest) = raw.split_once(':').map(|(v, r)| (v.trim(), r.trim())).unwrap_or((raw.trim(), ""));
        Ok(match verb {
            "start" => Command::Start,
            "promote" => Command::Promote,
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "retry" => Command::Retry,
            // The reason ends up in the abort alert: an empty one would read as a bug.
            "abort" => {
                Command::Abort(if rest.is_empty() { "no reason given".into() } else { rest.to_string() })
            }
            _ => return Err(UnknownCommand(raw.to_string())),
        })
    }
}

/// What the IO shell must do after a transition. Traffic and state are written together.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make the route look like this (written atomically with the new state).
    SetTraffic(Traffic),
    /// Ask a gate; its answer comes back as [`Input::Gate`].
    CallGate(GateKind),
    /// Copy promotion: give the stable Deployment the canary's pod template
    /// ([`copy_template`](crate::workload::copy_template)) if it still hashes to this (the
    /// canary may have changed since; then a new revision follows instead).
    CopyCanaryToStable { template_hash: String },
    /// Copy promotion: scale the canary Deployment to zero.
    ScaleCanaryDown,
    /// Copy mode, a new revision: scale the canary Deployment (left at zero by the last
    /// promotion) to this many replicas before it gets traffic.
    ScaleCanary(u32),
    /// Deliver the outbox alert with this id.
    Deliver(u64),
    /// Record a Kubernetes Event and a log line for this transition.
    Record { reason: &'static str, message: String },
}

/// The result of one engine step.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: RolloutState,
    pub actions: Vec<Action>,
    /// When the engine next wants to be woken (Unix seconds), if it has a deadline.
    pub wake_at: Option<i64>,
}

/// The traffic a VirtualService should carry when its policy goes away (its RolloutPolicy is
/// deleted, or its file removed) with `state` recorded: an unfinished rollout (pending,
/// progressing, paused, promoting) is routed back to stable-only; a finished or idle one keeps
/// the weights it has (`None`) — after a shift promotion the canary *is* the release.
pub fn route_on_removal(state: &RolloutState) -> Option<Traffic> {
    (state.phase.is_active() || state.phase == Phase::Pending).then(Traffic::stable_only)
}

#[cfg(test)]
mod removal {
    use super::*;

    #[test]
    fn an_unfinished_rollout_goes_back_to_stable_and_a_finished_one_keeps_its_weights() {
        for phase in [Phase::Pending, Phase::Progressing, Phase::Paused, Phase::Promoting] {
            let s = RolloutState {
                phase,
                traffic: Traffic { canary_weight: 30, ..Traffic::default() },
                ..RolloutState::default()
            };
            assert_eq!(route_on_removal(&s), Some(Traffic::stable_only()), "{phase:?}");
        }
        for phase in [Phase::Idle, Phase::Promoted, Phase::Aborted] {
            let s = RolloutState { phase, traffic: Traffic::canary_only(), ..RolloutState::default() };
            assert_eq!(route_on_removal(&s), None, "{phase:?}");
        }
    }
}

#[cfg(test)]
mod command_parsing {
    use super::{Command, UnknownCommand};

    fn parse(raw: &str) -> Result<Command, UnknownCommand> {
        raw.parse()
    }

    #[test]
    fn every_verb_parses_and_surrounding_space_is_ignored() {
        assert_eq!(parse("start"), Ok(Command::Start));
        assert_eq!(parse(" promote "), Ok(Command::Promote));
        assert_eq!(parse("pause\n"), Ok(Command::Pause));
        assert_eq!(parse("resume"), Ok(Command::Resume));
        assert_eq!(parse("retry"), Ok(Command::Retry));
    }

    #[test]
    fn abort_carries_its_reason_or_says_none_was_given() {
        assert_eq!(parse("abort: p99 too high"), Ok(Command::Abort("p99 too high".into())));
        assert_eq!(parse("abort:bad: really"), Ok(Command::Abort("bad: really".into())));
        assert_eq!(parse("abort"), Ok(Command::Abort("no reason given".into())));
        assert_eq!(parse("abort:   "), Ok(Command::Abort("no reason given".into())));
    }

    #[test]
    fn text_after_other_verbs_is_ignored() {
        assert_eq!(parse("promote: looks good"), Ok(Command::Promote));
    }

    #[test]
    fn unknown_verbs_are_rejected_with_the_raw_text() {
        assert_eq!(parse("Promote"), Err(UnknownCommand("Promote".into())));
        assert_eq!(parse(""), Err(UnknownCommand(String::new())));
        assert_eq!(parse("rollback: now"), Err(UnknownCommand("rollback: now".into())));
    }
}
