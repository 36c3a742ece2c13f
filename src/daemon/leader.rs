//! Leader election on a coordination.k8s.io/v1 Lease: of several replicas, only the holder
//! reconciles. A holder that stops renewing loses the lease after its duration; a takeover is
//! an update guarded by resourceVersion, so two replicas can never both win.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

/// One replica's view of the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// Seconds a lease stays valid without renewal.
    pub duration_secs: i32,
}

impl LeaderElector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration_secs: 15,
        }
    }

    /// Acquires or renews the lease at `now`; true when this replica holds it afterwards.
    /// Any API error counts as "not leader" — a replica that cannot reach the API must not act.
    pub async fn try_lead(&self, now: Timestamp) -> bool {
        match self.try_lead_inner(now).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "lease: cannot acquire or renew; not acting");
                false
            }
        }
    }

    async fn try_lead_inner(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let micro = |t: Timestamp| MicroTime(t);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_secs),
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
        let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(self.duration_secs));
        let expired = now.as_second() >= renewed.as_second() + duration;
        if holder != self.identity && !expired {
            return Ok(false);
        }
        let mut new_spec = spec.clone();
        if holder != self.identity {
            new_spec.holder_identity = Some(self.identity.clone());
            new_spec.acquire_time = Some(micro(now));
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.renew_time = Some(micro(now));
        new_spec.lease_duration_seconds = Some(self.duration_secs);
        lease.spec = Some(new_spec);
        // replace() sends the resourceVersion we read: a concurrent winner makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
