//! What a rollout did, kept in its persisted state so that it outlives Kubernetes Events: the
//! current (or last) rollout's **timeline** and a short **history** of finished rollouts. Both
//! are appended by the engine in the transitions that cause them (see `machine.rs`), and both
//! are bounded so the state annotation stays small.

use super::RolloutState;
use crate::judge::{IntervalVerdict, Verdict};
use serde::{Deserialize, Serialize};

/// Most timeline entries kept per rollout; beyond it the oldest but the first are dropped.
pub const MAX_TIMELINE: usize = 50;
/// Most finished rollouts kept per policy; beyond it the oldest is dropped.
pub const MAX_HISTORY: usize = 10;
/// Longest message or reason kept, in characters (longer ones end with `…`).
pub const MAX_TEXT: usize = 240;

/// One decision or event of a rollout, e.g. a step started, a step extended, a gate answered,
/// an alert delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When, Unix seconds.
    pub at: i64,
    /// What kind of event (the Kubernetes Event reason: `StepStarted`, `Aborted`,
    /// `GateAsked`, `AlertDelivered`, …).
    pub kind: String,
    /// One line for people.
    pub message: String,
    /// 0-based step at the event.
    #[serde(default)]
    pub step: usize,
    /// Canary weight right after the event, percent.
    #[serde(default)]
    pub weight: u32,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Promoted,
    Aborted,
    /// A newer revision replaced it before it finished.
    Superseded,
}

impl Outcome {
    /// Name as shown in the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "Promoted",
            Outcome::Aborted => "Aborted",
            Outcome::Superseded => "Superseded",
        }
    }
}

/// A finished rollout, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub outcome: Outcome,
    /// When it started and ended, Unix seconds (`started` is `None` if it never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    pub finished: i64,
    /// 0-based step it ended at, and the canary weight it had there, percent.
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub weight: u32,
    /// The check that failed (or could not be read), for an abort on evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_check: Option<String>,
    /// The engine's reason (for a check failure, with the numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `text` cut to [`MAX_TEXT`] characters.
pub(crate) fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_TEXT - 1).collect();
    out.push('…');
    out
}

impl RolloutState {
    /// Appends a timeline entry at `at` with the state's current step and weight.
    pub(crate) fn note(&mut self, at: i64, kind: &str, message: &str) {
        if self.timeline.len() >= MAX_TIMELINE {
            // Keep the first entry (how the rollout began) and the most recent ones.
            self.timeline.remove(1.min(self.timeline.len() - 1));
        }
        let entry = TimelineEntry {
            at,
            kind: kind.to_string(),
            message: clip(message),
            step: self.step,
            weight: self.traffic.canary_weight,
        };
        self.timeline.push(entry);
    }

    /// Records the rollout as finished with `outcome` at `at` (from the state as it is now).
    /// `weight` is the canary weight it ended at (before an abort restored stable); `verdict`
    /// the verdict that ended it, if one did.
    pub(crate) fn archive(
        &mut self,
        outcome: Outcome,
        at: i64,
        weight: u32,
        verdict: Option<&IntervalVerdict>,
    ) {
        let failing_check = verdict
            .and_then(|v| v.decisive_check())
            .filter(|c| matches!(c.verdict, Verdict::Fail | Verdict::Error))
            .map(|c| c.check.clone());
        let record = RolloutRecord {
            revision: self.revision.as_deref().map(clip),
            outcome,
            started: self.started,
            finished: at,
            step: self.step,
            weight,
            failing_check,
            reason: self.reason.as_deref().map(clip),
        };
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(0);
        }
        self.history.push(record);
    }
}
