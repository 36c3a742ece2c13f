//! The queue from effects back to the engine: what gates and alert deliveries learnt after a
//! cycle's write reaches the engine on the next reconcile of that policy.

use crate::engine::Input;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where effects report what they learnt (gate answers, delivered alerts): the next
/// reconcile of that policy feeds it to the engine. Cloneable into spawned tasks.
#[derive(Clone, Default)]
pub struct Feedback {
    pending: Arc<Mutex<HashMap<String, Vec<Input>>>>,
}

impl Feedback {
    /// Queues `input` for the policy `key` (`namespace/name`).
    pub fn push(&self, key: &str, input: Input) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(key.to_string()).or_default().push(input);
        }
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
