//! The one way an [`Observation`] is built from a metrics source, used by the daemon and by
//! `backtest` alike, so that a backtest judges exactly what the daemon would have judged.

use std::collections::HashMap;

use jiff::Timestamp;

use super::{MetricsSource, WorkloadKey};
use crate::observation::{CustomValue, Observation, SideObservation};
use crate::policy::{CustomMode, Policy};
use crate::promql::{Side, TenantLabel};

/// The workload keys of a policy's canary and baseline, from [`Policy::workloads`].
pub fn workload_keys(policy: &Policy) -> (WorkloadKey, WorkloadKey) {
    let w = policy.workloads();
    (WorkloadKey::new(policy.namespace(), &w.canary), WorkloadKey::new(policy.namespace(), &w.stable))
}

/// The key of the requests to the canary's service that no workload answered
/// ([`WorkloadKey::no_upstream`]): the service the canary host names ([`crate::istio::service_of`]).
pub fn no_upstream_key(policy: &Policy) -> WorkloadKey {
    let t = &policy.spec().target;
    let host = t.canary.host.as_deref().unwrap_or(&t.virtual_service);
    let (namespace, service) = crate::istio::service_of(host, policy.namespace());
    WorkloadKey::no_upstream(namespace, service)
}

/// The observation of `policy` over `[from, now)`: Istio counts and histograms from `sides`
/// (an answer of [`MetricsSource::observe_sides`] that covers this window, possibly shared with
/// other policies), plus each custom check queried at `now`.
///
/// Custom queries are written by [`Policy::custom_query`]: a RolloutPolicy resource's are
/// confined to its namespace on `tenant_label`. A query that cannot be written or answered is a
/// missing value: the judge turns it into an Error verdict for that check, never a Pass. A side
/// missing from `sides` has zero requests (Inconclusive).
pub async fn observation<M: MetricsSource>(
    metrics: &M,
    policy: &Policy,
    sides: &HashMap<WorkloadKey, SideObservation>,
    from: i64,
    now: Timestamp,
    tenant_label: &TenantLabel,
) -> Observation {
    let (canary, baseline) = workload_keys(policy);
    let window = now.as_second() - from;
    let mut custom = Vec::new();
    for check in &policy.spec().analysis.custom {
        let value = |side| async move {
            match policy.custom_query(check, side, window, tenant_label) {
                Ok(q) => metrics.query_scalar(&q, now).await.ok(),
                Err(e) => {
                    tracing::warn!(policy = %policy.key(), check = %check.name, error = %e, "custom query not sent");
                    None
                }
            }
        };
        let c = value(Side::Canary).await;
        let b = match check.mode {
            CustomMode::Compare => value(Side::Baseline).await,
            CustomMode::Threshold => None,
        };
        custom.push(CustomValue { name: check.name.clone(), canary: c, baseline: b });
    }
    let mut canary = sides.get(&canary).cloned().unwrap_or_default();
    // Requests to the service that no pod answered (a subset without ready endpoints) are
    // the canary's: the stable side is the one that was serving before the rollout.
    if let Some(unanswered) = sides.get(&no_upstream_key(policy)) {
        canary.requests += unanswered.requests;
        canary.errors += unanswered.errors;
    }
    Observation {
        start: from,
        end: now.as_second(),
        canary,
        baseline: sides.get(&baseline).cloned().unwrap_or_default(),
        custom,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::QueryError;
    use std::time::Duration;

    /// A source without custom values (the test policy has no custom checks).
    struct NoCustom;

    impl MetricsSource for NoCustom {
        async fn observe_sides(
            &self,
            _: &[WorkloadKey],
            _: Timestamp,
            _: Duration,
        ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
            Ok(HashMap::new())
        }

        async fn query_scalar(&self, _: &str, _: Timestamp) -> Result<f64, QueryError> {
            Err(QueryError::EmptyResult)
        }
    }

    #[tokio::test]
    async fn requests_no_pod_answered_count_as_canary_errors() {
        let doc = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: shop}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2, host: reviews.shop.svc.cluster.local}}\n";
        let policy = crate::policy::parse_policy("p.yaml", doc).unwrap();
        let (canary, baseline) = workload_keys(&policy);
        let side = |requests, errors| SideObservation { requests, errors, latency: None };
        let sides: HashMap<WorkloadKey, SideObservation> = [
            (canary, side(100, 1)),
            (baseline, side(900, 9)),
            (WorkloadKey::no_upstream("shop", "reviews"), side(40, 40)),
            (WorkloadKey::no_upstream("shop", "ratings"), side(7, 7)),
        ]
        .into();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let obs =
            observation(&NoCustom, &policy, &sides, now.as_second() - 60, now, &TenantLabel::default()).await;
        assert_eq!((obs.canary.requests, obs.canary.errors), (140, 41));
        assert_eq!((obs.baseline.requests, obs.baseline.errors), (900, 9), "the stable is not blamed");
    }
}
