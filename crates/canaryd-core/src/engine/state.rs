//! The persisted state of one policy's rollout. Serialised into an annotation on the
//! VirtualService, so it changes in the same atomic write as the weights.

use super::history::{RolloutRecord, TimelineEntry};
use crate::judge::{IntervalVerdict, JudgeState};
use crate::plan::Traffic;
use crate::policy::AlertEvent;
use serde::{Deserialize, Serialize};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    /// No rollout: stable serves everything and no new revision is known.
    #[default]
    Idle,
    /// A new revision is known; waiting for a window, a gate or the start.
    Pending,
    /// Running the step plan.
    Progressing,
    /// Stopped by an operator, a `pause` step or drift; judged but never advanced.
    Paused,
    /// Copy promotion: the stable Deployment is being rolled out with the canary's template.
    Promoting,
    /// The release is done.
    Promoted,
    /// The release failed or was aborted; all traffic is on stable.
    Aborted,
}

impl Phase {
    /// Name as shown in status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoting => "Promoting",
            Phase::Promoted => "Promoted",
            Phase::Aborted => "Aborted",
        }
    }

    /// True for phases in which canary traffic may be flowing.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused | Phase::Promoting)
    }
}

/// An alert waiting to be delivered. Written with the decision that caused it, so a crash
/// between decision and delivery cannot lose it; removed once every channel acknowledged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingAlert {
    /// Unique per rollout state (the decision number); channels deduplicate on it.
    pub id: u64,
    pub event: AlertEvent,
    /// When the event happened, Unix seconds.
    pub at: i64,
    /// One-line headline, e.g. "aborted at step 2/3 (30%): success-rate failed".
    pub headline: String,
    /// The revision the event is about (a later revision must not relabel this alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// 0-based step the event happened at; `None` before the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// Routing right after the event (for an abort: stable only).
    #[serde(default)]
    pub traffic: Traffic,
    /// The verdict behind the event, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<IntervalVerdict>,
    /// Channels (by name: `email`, webhook names) that already have it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<String>,
}

/// Everything the engine remembers about one policy's rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    pub phase: Phase,
    /// The canary revision this rollout is about (pod template hash or similar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Current step (0-based), meaningful while active.
    #[serde(default)]
    pub step: usize,
    /// When the current step started, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<i64>,
    /// How many times the current step was extended for inconclusive evidence.
    #[serde(default)]
    pub extensions: u32,
    /// Consecutive intervals whose evidence could not be read.
    #[serde(default)]
    pub consecutive_errors: u32,
    /// Start of the next analysis window (end of the last one judged), Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_until: Option<i64>,
    /// The metrics source's scrape interval as last detected (milliseconds): the cadence of
    /// `analysis.interval: auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval_ms: Option<u64>,
    /// The routing canaryd last decided (and wrote with this state).
    #[serde(default)]
    pub traffic: Traffic,
    /// Accumulated statistical evidence of this rollout.
    #[serde(default)]
    pub judge: JudgeState,
    /// The latest interval verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<IntervalVerdict>,
    /// Why the rollout is paused, held, aborted or promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A gate the rollout waits for, by kind name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_gate: Option<String>,
    /// The schedule was overridden by `canaryd start`.
    #[serde(default)]
    pub forced_start: bool,
    /// Traffic was sent back to stable because the window closed (`outsideWindow: reset`).
    #[serde(default)]
    pub reset_outside_window: bool,
    /// The current step passed and waits for `canaryd resume` (a `pause: true` step).
    #[serde(default)]
    pub step_passed: bool,
    /// Last alert id handed out.
    #[serde(default)]
    pub alert_seq: u64,
    /// Number of decisions taken; every write carries it, so a replayed write is detectable.
    #[serde(default)]
    pub decisions: u64,
    /// When the rollout started, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    /// When the rollout ended (promoted or aborted), Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<i64>,
    /// Alerts decided but not yet delivered to every channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<PendingAlert>,
    /// When the phase last changed, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<i64>,
    /// What the current (or last) rollout did, oldest first; at most
    /// [`MAX_TIMELINE`](super::MAX_TIMELINE) entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// A step (0-based) to enter once the canary's pods are ready; traffic stays as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_canary: Option<usize>,
    /// Copy promotion: the hash of the pod template the stable Deployment must run
    /// ([`template_hash`](crate::workload::template_hash)), fixed when the copy starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_target: Option<String>,
    /// Copy promotion: the template hash the API server stored for the copy when its admission
    /// changed it ([`Input::CopyAdmitted`](super::Input::CopyAdmitted)); the stable must then
    /// run this one (writing the copy again gives the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_admitted: Option<String>,
    /// Copy promotion: the template hash the API server stored for the copy when its admission
    /// changed the containers: refused (the stable would run something never judged), not
    /// copied again until an operator's `promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_refused: Option<String>,
    /// Blue-green: until when (Unix seconds) the old version is kept ready after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_until: Option<i64>,
    /// Copy promotion: the stable rollout is stuck and that was alerted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy_stuck: bool,
    /// Finished rollouts of this policy, oldest first; at most [`MAX_HISTORY`](super::MAX_HISTORY).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RolloutRecord>,
}
