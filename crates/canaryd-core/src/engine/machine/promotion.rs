//! How a release ends once its last step passed: shift (the canary keeps 100%), copy (the
//! stable Deployment gets the canary's template; see `workloads.rs` for the copy itself) or
//! blue-green (switch at once, keep the old version for the rollback window, then copy).

use super::{workloads, Machine, Phase};
use crate::engine::history::Outcome;
use crate::plan::Traffic;
use crate::policy::{AlertEvent, GateKind, PromotionMode};

impl Machine<'_> {
    pub(super) fn promote(&mut self) {
        if self.has_gate(GateKind::ConfirmPromotion) {
            self.await_gate(GateKind::ConfirmPromotion);
        } else {
            self.promote_now();
        }
    }

    pub(super) fn promote_now(&mut self) {
        self.s.awaiting_gate = None;
        self.set_traffic(Traffic::canary_only());
        match self.policy.spec().promotion.mode {
            PromotionMode::Shift => {
                self.finish_promoted("the canary serves 100%; the old version can be taken offline")
            }
            PromotionMode::Copy => {
                // The copy itself is driven by the Deployments as read at each reconcile
                // (`workloads`), so a failed or interrupted copy is simply done again.
                self.s.phase = Phase::Promoting;
                self.s.copy_target = None;
                self.s.copy_admitted = None;
                self.s.copy_refused = None;
                self.record("Promoting", "copying the canary pod template to the stable workload".into());
            }
            PromotionMode::BlueGreen => {
                self.s.phase = Phase::Promoting;
                self.s.copy_target = None;
                self.s.copy_admitted = None;
                self.s.copy_refused = None;
                let until = self.now + workloads::rollback_window_secs(self.policy);
                self.s.switched_until = Some(until);
                let msg = format!(
                    "switched: the new version serves 100%; the old one stays ready for an instant rollback (`canaryd abort`) for {}",
                    crate::format::human_secs((until - self.now) as f64)
                );
                // The release ends (and alerts `promote`) when the old version is replaced.
                self.alert(AlertEvent::Step, msg.clone(), self.s.last_verdict.clone());
                self.record("Switched", msg);
            }
        }
    }

    pub(super) fn finish_promoted(&mut self, how: &str) {
        self.s.phase = Phase::Promoted;
        self.s.finished = Some(self.now);
        let msg = format!("revision {} promoted: {how}", self.s.revision.as_deref().unwrap_or("?"));
        self.s.reason = Some(msg.clone());
        let weight = self.s.traffic.canary_weight;
        self.s.archive(Outcome::Promoted, self.now, weight, None);
        self.alert(AlertEvent::Promote, msg.clone(), self.s.last_verdict.clone());
        self.record("Promoted", msg);
    }
}
