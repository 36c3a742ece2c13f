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
    Observation {
        start: from,
        end: now.as_second(),
        canary: sides.get(&canary).cloned().unwrap_or_default(),
        baseline: sides.get(&baseline).cloned().unwrap_or_default(),
        custom,
    }
}
