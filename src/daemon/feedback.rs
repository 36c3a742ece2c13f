//! The queue from effects back to the engine: what gates and alert deliveries learnt after a
//! cycle's write reaches the engine on the next reconcile of that policy.

use crate::engine::Input;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where effects report what they learnt (gate answers, delivered alerts): the next
/// reconcile of that policy feeds it to the engine. Cloneable into spawned tasks.
/// A push wakes the daemon's loop, so an acknowledged delivery is written to the state within
/// moments rather than at the policy's next scheduled visit (the window in which a crash would
/// send that alert again).
#[derive(Clone, Default)]
pub struct Feedback {
    pending: Arc<Mutex<HashMap<String, Vec<Input>>>>,
    arrived: Arc<tokio::sync::Notify>,
    /// Every delivery acknowledged in this process, per policy: (alert id, channel). Reads
    /// come from watch caches that may lag the write recording an acknowledgement by a moment;
    /// this keeps such a read from sending the alert again.
    acknowledged: Arc<Mutex<HashMap<String, Acknowledged>>>,
}

/// One policy's acknowledged deliveries: (alert id, channel).
type Acknowledged = std::collections::BTreeSet<(u64, String)>;

/// Acknowledgements remembered per policy (the outbox holds at most 16 alerts).
const REMEMBERED: usize = 256;

impl Feedback {
    /// Queues `input` for the policy `key` (`namespace/name`); an acknowledged delivery or an
    /// open gate wakes the loop. A closed gate does not: it is asked again at every visit, so
    /// waking on its answer would ask it in a tight loop.
    pub fn push(&self, key: &str, input: Input) {
        let wakes = wakes(&input);
        if let Input::AlertDelivered { id, channel } = &input {
            if let Ok(mut a) = self.acknowledged.lock() {
                let seen = a.entry(key.to_string()).or_default();
                seen.insert((*id, channel.clone()));
                while seen.len() > REMEMBERED {
                    seen.pop_first();
                }
            }
        }
        if let Ok(mut p) = self.pending.lock() {
            p.entry(key.to_string()).or_default().push(input);
        }
        if wakes {
            self.arrived.notify_one();
        }
    }

    /// True when an acknowledged delivery or an open gate for `key` is not yet written: its
    /// policy is due now.
    pub fn has_acknowledgement(&self, key: &str) -> bool {
        self.pending.lock().map(|p| p.get(key).is_some_and(|v| v.iter().any(wakes))).unwrap_or(false)
    }

    /// The policies with something queued that wakes the loop ([`Feedback::has_acknowledgement`]).
    pub fn waiting(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|p| p.iter().filter(|(_, v)| v.iter().any(wakes)).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }

    /// Resolves at the next acknowledged delivery (or at once if one arrived since the last
    /// wait).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Channels known (in this process) to have alert `id` of policy `key`.
    pub fn delivered(&self, key: &str, id: u64) -> Vec<String> {
        self.acknowledged
            .lock()
            .map(|a| {
                a.get(key)
                    .map(|s| s.iter().filter(|(i, _)| *i == id).map(|(_, c)| c.clone()).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Takes everything queued for `key`, oldest first.
    pub(super) fn take(&self, key: &str) -> Vec<Input> {
        self.pending.lock().map(|mut p| p.remove(key).unwrap_or_default()).unwrap_or_default()
    }

    /// Returns inputs whose write failed to the front of the queue, so that they are fed
    /// again, in their order and before anything learnt since.
    pub(super) fn put_back(&self, key: &str, inputs: Vec<Input>) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(key.to_string()).or_default().splice(0..0, inputs);
        }
    }
}

/// What is worth a visit now: an acknowledged delivery (not yet written, a crash would send it
/// again) and an open gate (the rollout may move, or a rollback gate aborts). An admitted copy
/// is not: the copy's own watch event brings the visit, with the stored template in the cache
/// (waking before it would read the old template and copy again).
fn wakes(input: &Input) -> bool {
    matches!(input, Input::AlertDelivered { .. } | Input::Gate { open: true, .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::GateKind;
    use std::time::Duration;

    #[tokio::test]
    async fn a_delivery_or_an_open_gate_wakes_the_loop_and_a_closed_gate_does_not() {
        let f = Feedback::default();
        f.push(
            "shop/reviews",
            Input::Gate { kind: GateKind::ConfirmStep, open: false, detail: "HTTP 503".into() },
        );
        assert!(!f.has_acknowledgement("shop/reviews"));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), f.arrived()).await.is_err(),
            "woken by a gate answer"
        );
        f.push("shop/reviews", Input::AlertDelivered { id: 1, channel: "ops".into() });
        assert!(f.has_acknowledgement("shop/reviews"));
        assert!(!f.has_acknowledgement("shop/other"));
        tokio::time::timeout(Duration::from_millis(50), f.arrived())
            .await
            .expect("a delivery wakes the loop");
        assert_eq!(f.waiting(), vec!["shop/reviews".to_string()]);
        assert_eq!(f.delivered("shop/reviews", 1), vec!["ops".to_string()]);
        assert!(f.delivered("shop/reviews", 2).is_empty());
        assert_eq!(f.take("shop/reviews").len(), 2);
        assert!(!f.has_acknowledgement("shop/reviews"));
        f.push("shop/other", Input::Gate { kind: GateKind::Rollback, open: true, detail: "HTTP 200".into() });
        assert!(f.has_acknowledgement("shop/other"));
        tokio::time::timeout(Duration::from_millis(50), f.arrived())
            .await
            .expect("an open gate wakes the loop");
    }
}
