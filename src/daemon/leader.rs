//! Leader election on a coordination.k8s.io/v1 Lease with client-go's semantics: of several
//! replicas only the holder reconciles, and two replicas never both believe they lead.
//!
//! - **Expiry is judged by the observer's own clock.** A standby never compares the holder's
//!   `renewTime` with its local wall clock (clock skew between nodes would let it take over from
//!   a live leader): it notes, on its monotonic clock, when it last saw the Lease *change*, and
//!   takes over only after a whole `leaseDurationSeconds` without a change.
//! - **The leader acts only inside its renew deadline**, measured from the moment it *sent* the
//!   renewal that succeeded (not from the start of its cycle): [`LeaderElector::may_write`] is
//!   checked before every write, and the deadline is well inside the lease duration, so a
//!   leader that was paused (GC, SIGSTOP, a slow API) stops writing before anyone else can
//!   start.
//! - **Release on shutdown**: on SIGTERM the holder clears `holderIdentity`, so the standby
//!   takes over at its next attempt instead of waiting out the lease.
//!
//! A takeover is an update guarded by resourceVersion, so two replicas racing for an expired
//! Lease cannot both win.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One replica's view of the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a lease stays valid without renewal.
    duration: Duration,
    /// How long after sending a successful renewal the leader may still write (client-go's
    /// RenewDeadline; 2/3 of the duration, as client-go's defaults 10 s of 15 s).
    renew_deadline: Duration,
    observed: Mutex<Observed>,
}

/// What this replica last saw of the Lease, on its own clock.
#[derive(Default)]
struct Observed {
    /// resourceVersion of the Lease when last seen; every renewal changes it.
    version: Option<String>,
    /// When `version` was first seen (monotonic).
    since: Option<Instant>,
    /// While leading: when the last successful renewal was sent.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self::with_duration(client, namespace, name, identity, Duration::from_secs(15))
    }

    /// An elector with a lease of `duration` (tests use short leases).
    pub fn with_duration(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            renew_deadline: duration * 2 / 3,
            observed: Mutex::new(Observed::default()),
        }
    }

    /// The lease duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How long this replica may still write: zero when it does not lead or its renew deadline
    /// has passed. Checked before every write; a cycle is cut to it.
    pub fn write_budget(&self) -> Duration {
        let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        observed.renewed_at.map(|t| self.renew_deadline.saturating_sub(t.elapsed())).unwrap_or_default()
    }

    /// True while this replica leads and is inside its renew deadline.
    pub fn may_write(&self) -> bool {
        !self.write_budget().is_zero()
    }

    /// Acquires or renews the lease; true when this replica holds it afterwards. `now` is only
    /// written into the Lease (for people reading it), never compared with another replica's
    /// times. Any API error counts as "not leader": a replica that cannot reach the API must
    /// not act.
    pub async fn try_lead(&self, now: Timestamp) -> bool {
        let sent = Instant::now();
        let result = self.try_lead_inner(now).await;
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(true) => {
                observed.renewed_at = Some(sent);
                true
            }
            Ok(false) => {
                observed.renewed_at = None;
                false
            }
            Err(e) => {
                // Keep `renewed_at`: the deadline from the last success still bounds writes.
                drop(observed);
                tracing::warn!(error = %e, "lease: cannot acquire or renew; not acting");
                self.may_write()
            }
        }
    }

    /// Gives the lease up (on SIGTERM) if this replica holds it, so a standby takes over at
    /// once. Best effort: a failure leaves the lease to expire.
    pub async fn release(&self) {
        self.observed.lock().unwrap_or_else(|e| e.into_inner()).renewed_at = None;
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!("lease released"),
            Err(e) => tracing::warn!(error = %e, "lease: cannot release; it expires on its own"),
        }
    }

    async fn try_lead_inner(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let micro = |t: Timestamp| MicroTime(t);
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(micro(now)),
                    renew_time: Some(micro(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_other = !holder.is_empty() && holder != self.identity;
        if held_by_other && !self.expired(&lease, &spec) {
            return Ok(false);
        }
        let mut new_spec = spec.clone();
        if holder != self.identity {
            new_spec.holder_identity = Some(self.identity.clone());
            new_spec.acquire_time = Some(micro(now));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.renew_time = Some(micro(now));
        new_spec.lease_duration_seconds = Some(seconds);
        lease.spec = Some(new_spec);
        // replace() sends the resourceVersion we read: a concurrent winner makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when the Lease has not changed for its whole duration, on this replica's clock.
    fn expired(&self, lease: &Lease, spec: &LeaseSpec) -> bool {
        let version = lease.metadata.resource_version.clone();
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        if observed.version != version || observed.since.is_none() {
            observed.version = version;
            observed.since = Some(Instant::now());
            return false;
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.duration);
        observed.since.is_some_and(|t| t.elapsed() >= duration)
    }
}
