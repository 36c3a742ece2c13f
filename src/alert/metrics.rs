//! Delivery counters the daemon exports on `/metrics` (e.g. as
//! `canaryd_alert_deliveries_total{channel, outcome}`). Channel names, never URLs.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counts for one channel name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    /// Send attempts, successful or not.
    pub attempts: u64,
    /// Alerts delivered (acknowledged by the peer).
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Alerts given up on after the last retry (the daemon tries again next cycle, since the
    /// alert stays in the outbox).
    pub gave_up: u64,
}

/// Thread-safe delivery counters, shared by every delivery task of a [`super::Deliverer`].
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    by_channel: Mutex<BTreeMap<String, ChannelCounts>>,
}

impl DeliveryMetrics {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn update(&self, channel: &str, f: impl FnOnce(&mut ChannelCounts)) {
        // A poisoned lock only means another task panicked mid-increment; counts stay usable.
        let mut map = self.by_channel.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(channel.to_string()).or_default());
    }

    /// A copy of the counters, by channel name.
    pub fn snapshot(&self) -> BTreeMap<String, ChannelCounts> {
        self.by_channel.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The counters of one channel (zeros if it never sent).
    pub fn channel(&self, channel: &str) -> ChannelCounts {
        self.snapshot().get(channel).copied().unwrap_or_default()
    }

    /// Failed attempts over all channels.
    pub fn total_failed_attempts(&self) -> u64 {
        self.snapshot().values().map(|c| c.failed_attempts).sum()
    }
}
