//! One reconcile of one policy: read → decide (pure engine) → one guarded write → effects.
//! Which inputs follow from the reads is `inputs`; the Kubernetes objects besides the
//! VirtualService are `kube_effects`; gates and alerts are the `Effects` the caller supplies.

use super::inputs::{self, Reads};
use super::kube_effects::{warn_if_hosts_disagree, KubeSide};
use super::kube_io::virtual_service_resource;
use super::{Effects, Feedback};
use crate::engine::{self, Action, Input, RolloutState};
use crate::istio::{RouteView, VsError};
use crate::policy::{GateKind, Policy};
use crate::prometheus::{self, MetricsSource, ObservedSides, WorkloadKey};
use crate::promql::TenantLabel;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use std::collections::HashMap;

/// Why a reconcile did not complete. The state on the cluster is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("VirtualService {namespace}/{name}: {source}")]
    VirtualService { namespace: String, name: String, source: VsError },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the VirtualService changed while we decided (409/422); re-reading")]
    Conflict,
    /// Leader election: the renew deadline passed before the write; another replica may lead.
    #[error("not writing: the leader lease was not renewed within its deadline")]
    NotLeader,
    /// The API server refused the write for another reason (a validating webhook, a schema
    /// rule): retrying the same write cannot help, so it is reported, not hidden as a conflict.
    #[error("the API server rejected the write to VirtualService {namespace}/{name} ({code}): {message}; the rollout cannot move until that is fixed (nothing was changed)")]
    Rejected { namespace: String, name: String, code: u16, message: String },
    #[error("canary workload {0} not found")]
    CanaryMissing(String),
    #[error("no DestinationRule defines subset {subset:?} for host {host:?}; add it before rolling out")]
    MissingSubset { host: String, subset: String },
    #[error("recorded state on the VirtualService is unreadable: {0}")]
    State(String),
}

/// What one reconcile did, for logs, the demo's view and metrics.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub state: RolloutState,
    pub actions: Vec<Action>,
    /// The weights and state were written this cycle.
    pub wrote: bool,
    /// Wall time from the verdict being available to the write being acknowledged.
    pub verdict_to_write: Option<std::time::Duration>,
}

/// One policy's reads, ready for the cycle's grouped evidence.
struct Prepared<'p> {
    policy: &'p Policy,
    vs: Value,
    view: RouteView,
    before: RolloutState,
    inputs: Vec<Input>,
    /// Inputs taken from the pending queue; put back if the write fails.
    queued: Vec<Input>,
    /// Start of the evidence window when an analysis is due.
    observe_from: Option<i64>,
}

/// Drives policies against one cluster and one metrics source.
pub struct Driver<M, E> {
    pub client: kube::Client,
    pub metrics: M,
    pub effects: E,
    /// The label custom queries of RolloutPolicy resources are confined on (`--tenant-label`).
    tenant_label: TenantLabel,
    /// Inputs learnt from effects (gate answers, deliveries), fed to the next reconcile.
    pending: Feedback,
    /// Asked right before every VirtualService write; false stops the write (a leader past its
    /// renew deadline). Always true without leader election.
    may_write: std::sync::Arc<dyn Fn() -> bool + Send + Sync>,
}

impl<M: MetricsSource, E: Effects> Driver<M, E> {
    pub fn new(client: kube::Client, metrics: M, effects: E) -> Self {
        Driver {
            client,
            metrics,
            effects,
            tenant_label: TenantLabel::default(),
            pending: Feedback::default(),
            may_write: std::sync::Arc::new(|| true),
        }
    }

    /// What effects reported back and the next reconcile will feed to the engine.
    pub fn feedback(&self) -> &Feedback {
        &self.pending
    }

    /// Guards every write with `may_write` (leader election's renew deadline).
    pub fn with_write_guard(mut self, may_write: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.may_write = std::sync::Arc::new(may_write);
        self
    }

    /// Confines RolloutPolicy resources' custom queries on `label` instead of `namespace`.
    pub fn with_tenant_label(mut self, label: TenantLabel) -> Self {
        self.tenant_label = label;
        self
    }

    /// Reconciles one policy at time `now` (the caller's clock: real or compressed).
    pub async fn reconcile(&self, policy: &Policy, now: Timestamp) -> Result<CycleReport, DaemonError> {
        self.cycle(std::slice::from_ref(policy), now).await.pop().unwrap_or(Err(DaemonError::Conflict))
    }

    /// Reconciles many policies in one cycle: reads concurrently, then asks the metrics source
    /// once per distinct window length for every due workload (so the number of Prometheus
    /// queries does not grow with the number of rollouts), then decides and writes each.
    /// Results are in the order of `policies`.
    pub async fn cycle(&self, policies: &[Policy], now: Timestamp) -> Vec<Result<CycleReport, DaemonError>> {
        use futures::StreamExt;
        let prepared: Vec<Result<Prepared<'_>, DaemonError>> =
            futures::stream::iter(policies).map(|p| self.prepare(p, now)).buffered(32).collect().await;
        let mut windows: HashMap<i64, Vec<WorkloadKey>> = HashMap::new();
        for prep in prepared.iter().flatten() {
            if let Some(from) = prep.observe_from {
                let (canary, baseline) = prometheus::workload_keys(prep.policy);
                let keys = windows.entry(now.as_second() - from).or_default();
                keys.push(canary);
                keys.push(baseline);
            }
        }
        let mut batches: HashMap<i64, Result<ObservedSides, String>> = HashMap::new();
        for (window, mut keys) in windows {
            keys.sort();
            keys.dedup();
            let secs = u64::try_from(window.max(1)).unwrap_or(1);
            let result = self
                .metrics
                .observe_sides_with_scrape(&keys, now, std::time::Duration::from_secs(secs))
                .await
                .map_err(|e| e.to_string());
            batches.insert(window, result);
        }
        let batches = &batches;
        // Fewer writes in flight keeps each one's verdict-to-acknowledgement time short when
        // the API server is the bottleneck; throughput is the server's either way.
        futures::stream::iter(prepared)
            .map(|prep| async move {
                let prep = prep?;
                let sides = prep.observe_from.and_then(|from| batches.get(&(now.as_second() - from)));
                self.finish(prep, sides, now).await
            })
            .buffered(8)
            .collect()
            .await
    }

    /// Reads what the cluster says and turns it into the engine's inputs (all but evidence).
    async fn prepare<'p>(&self, policy: &'p Policy, now: Timestamp) -> Result<Prepared<'p>, DaemonError> {
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), policy.namespace(), &virtual_service_resource());
        let kube = KubeSide::new(&self.client, policy);
        let vs_name = &policy.spec().target.virtual_service;
        let vs = serde_json::to_value(vs_api.get(vs_name).await?).unwrap_or_default();
        let view = RouteView::read(&vs, policy).map_err(|source| DaemonError::VirtualService {
            namespace: policy.namespace().to_string(),
            name: vs_name.clone(),
            source,
        })?;
        let before = inputs::recorded_state(&view).map_err(|e| DaemonError::State(e.to_string()))?;
        let revision = kube.canary_revision().await?;
        let key = policy.key();
        if inputs::starts_rollout(&before, revision.as_deref()) {
            kube.check_subsets(&view).await?;
            warn_if_hosts_disagree(policy, &view);
        }
        let stable_rolled_out = inputs::awaits_stable(&before) && kube.stable_rolled_out().await?;
        // Take what effects reported only after the last read that can fail: an error above
        // returns early, and inputs taken before it (delivery acknowledgements, gate answers)
        // would be lost — a lost acknowledgement means the alert is sent again after a restart.
        let queued = self.pending.take(&key);

        let read = Reads { before: &before, view: &view, revision: revision.as_deref(), stable_rolled_out };
        let derived = inputs::derive(policy, &read, queued.clone(), now);
        if let Some(e) = &derived.unknown_command {
            tracing::warn!(policy = %key, command = %e.0, "ignoring an unknown command");
        }
        // Keep only what the write needs (the routes and whether annotations exist): with
        // thousands of policies in one cycle, whole objects would dominate memory.
        let vs = serde_json::json!({
            "metadata": {"annotations": vs.pointer("/metadata/annotations").map(|_| serde_json::json!({}))},
            "spec": {"http": vs.pointer("/spec/http").cloned().unwrap_or_default()},
        });
        Ok(Prepared {
            policy,
            vs,
            view,
            before,
            inputs: derived.inputs,
            queued,
            observe_from: derived.observe_from,
        })
    }

    /// Adds the evidence, steps the engine, writes once, then carries out the effects.
    async fn finish(
        &self,
        prep: Prepared<'_>,
        sides: Option<&Result<ObservedSides, String>>,
        now: Timestamp,
    ) -> Result<CycleReport, DaemonError> {
        let Prepared { policy, vs, view, before, mut inputs, queued, observe_from } = prep;
        let key = policy.key();
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), policy.namespace(), &virtual_service_resource());
        if let (Some(from), Some(sides)) = (observe_from, sides) {
            let observed = match sides {
                Ok(looked) => {
                    let (canary, baseline) = prometheus::workload_keys(policy);
                    if let Some(scrape) = looked.scrape_interval(&canary, &baseline) {
                        inputs.push(Input::ScrapeInterval(scrape));
                    }
                    Ok(prometheus::observation(
                        &self.metrics,
                        policy,
                        &looked.sides,
                        from,
                        now,
                        &self.tenant_label,
                    )
                    .await)
                }
                Err(e) => Err(e.clone()),
            };
            inputs.push(Input::Observed(observed));
        }
        inputs.push(Input::Tick);

        let mut state = before.clone();
        let mut actions = Vec::new();
        for input in inputs {
            let t = engine::step(policy, &state, input, now);
            state = t.state;
            actions.extend(t.actions);
        }
        let verdict_ready = std::time::Instant::now();
        let mut wrote = false;
        if state != before || view.command.is_some() {
            let body = serde_json::to_string(&state).map_err(|e| DaemonError::State(e.to_string()))?;
            let patch = view.patch(&vs, policy, &state.traffic, &body);
            let patch: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| DaemonError::State(e.to_string()))?;
            let vs_name = &policy.spec().target.virtual_service;
            if !(self.may_write)() {
                self.pending.put_back(&key, queued);
                return Err(DaemonError::NotLeader);
            }
            match vs_api.patch(vs_name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
                Ok(_) => wrote = true,
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    self.pending.put_back(&key, queued);
                    return Err(DaemonError::Conflict);
                }
                // A failed `test` of the resourceVersion is a 422 too (the apiserver's
                // applyJSPatch), as is a real validation failure. Tell them apart by what
                // changed: a newer resourceVersion means someone else wrote first.
                Err(kube::Error::Api(e)) if e.code == 422 => {
                    self.pending.put_back(&key, queued);
                    let current = vs_api.get(vs_name).await.ok().and_then(|o| o.metadata.resource_version);
                    if current.as_deref() != Some(view.resource_version.as_str()) {
                        return Err(DaemonError::Conflict);
                    }
                    return Err(DaemonError::Rejected {
                        namespace: policy.namespace().to_string(),
                        name: vs_name.clone(),
                        code: e.code,
                        message: e.message,
                    });
                }
                Err(e) => {
                    self.pending.put_back(&key, queued);
                    return Err(e.into());
                }
            }
        }
        let verdict_to_write = wrote.then(|| verdict_ready.elapsed());
        self.carry_out(policy, &state, &actions, &view).await;
        Ok(CycleReport { state, actions, wrote, verdict_to_write })
    }

    /// Effects after the write: if the daemon dies here, the next reconcile repeats them
    /// (gates are asked again, undelivered outbox alerts are sent again).
    async fn carry_out(&self, policy: &Policy, state: &RolloutState, actions: &[Action], view: &RouteView) {
        let key = policy.key();
        let kube = KubeSide::new(&self.client, policy);
        let mut feedback = Vec::new();
        for action in actions {
            match action {
                Action::CallGate(kind) => {
                    for gate in policy.spec().gates.iter().filter(|g| g.kind == *kind) {
                        let (open, detail) = self.effects.call_gate(policy, gate, state).await;
                        feedback.push(Input::Gate { kind: *kind, open, detail });
                        if !open && *kind != GateKind::Rollback {
                            break;
                        }
                    }
                }
                Action::CopyCanaryToStable => {
                    if let Err(e) = kube.copy_canary_to_stable().await {
                        tracing::warn!(policy = %key, error = %e, "copying the canary template to stable failed; retrying next cycle");
                    }
                }
                Action::ScaleCanaryDown => {
                    if let Err(e) = kube.scale_canary_down().await {
                        tracing::warn!(policy = %key, error = %e, "scaling the canary down failed");
                    }
                }
                Action::Record { reason, message } => {
                    kube.record(view, reason, message).await;
                    tracing::info!(policy = %key, reason, phase = state.phase.as_str(), step = state.step + 1, canary_weight = state.traffic.canary_weight, "{message}");
                }
                Action::SetTraffic(_) | Action::Deliver(_) => {}
            }
        }
        // Every undelivered alert, not only this cycle's: after a restart the outbox is the
        // only record of what is owed.
        for alert in &state.outbox {
            self.effects.deliver(policy, alert, state, self.pending.clone()).await;
        }
        for input in feedback {
            self.pending.push(&key, input);
        }
    }
}
