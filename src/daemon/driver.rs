//! One reconcile of one policy: read → decide (pure engine) → one guarded write → effects.
//! Which inputs follow from the reads is `inputs`; the Kubernetes objects besides the
//! VirtualService are `kube_effects`; gates and alerts are the `Effects` the caller supplies.

use super::cache::Caches;
use super::inputs::{self, Reads};
use super::kube_effects::{warn_if_hosts_disagree, CopyOutcome, KubeSide};
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
    VirtualService { namespace: String, name: String, source: Box<VsError> },
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
    #[error("no DestinationRule defines subset {subset:?} for host {host:?} ({detail}); add it before rolling out")]
    MissingSubset { host: String, subset: String, detail: String },
    #[error("stable workload {0} not found: copy promotion copies the canary's template into it")]
    StableMissing(String),
    #[error("the DestinationRule subsets would misroute: {0}")]
    Subsets(String),
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
    /// When the engine wants to look again (Unix seconds; `None`: only when something changes).
    pub wake_at: Option<i64>,
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
    /// An operator command, drift or an open rollback gate: decided without waiting for
    /// evidence.
    urgent: bool,
    /// The Deployments as read, when the engine needs them ([`inputs::reads_workloads`]).
    workloads: Option<crate::workload::WorkloadReport>,
}

/// How long a cycle waits for its evidence (the grouped Prometheus queries and every custom
/// query) before it decides without it: well inside a leader's renew deadline (10 s), so a hung
/// Prometheus can neither hold up a write past the lease nor stall the loop.
pub const EVIDENCE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// How many of a cycle's policies are read (and, when they need no evidence, decided) at once;
/// each takes a write slot only when it writes.
const READS_IN_FLIGHT: usize = 64;

/// One policy's visit after its reads: decided already, or waiting for the cycle's evidence.
// A `Visit` only passes from a finished future into the cycle's lists: its size costs nothing.
#[allow(clippy::large_enum_variant)]
enum Visit<'p> {
    Done(Result<CycleReport, DaemonError>),
    NeedsEvidence(Box<Prepared<'p>>),
}

/// A boxed future, `Send`.
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Gate calls in flight, one per policy and gate kind: a gate that never answers holds one
/// task, however often the engine asks for it.
type GateCalls = std::sync::Arc<std::sync::Mutex<HashMap<(String, GateKind), tokio::task::JoinHandle<()>>>>;

/// Drives policies against one cluster and one metrics source.
pub struct Driver<M, E> {
    pub client: kube::Client,
    pub metrics: M,
    /// Gates and alert channels; shared with the background tasks that carry them out.
    pub effects: std::sync::Arc<E>,
    /// The label custom queries of RolloutPolicy resources are confined on (`--tenant-label`).
    tenant_label: TenantLabel,
    /// Inputs learnt from effects (gate answers, deliveries), fed to the next reconcile.
    pending: Feedback,
    /// Asked right before every VirtualService write; false stops the write (a leader past its
    /// renew deadline). Always true without leader election.
    may_write: std::sync::Arc<dyn Fn() -> bool + Send + Sync>,
    /// See [`EVIDENCE_DEADLINE`].
    evidence_deadline: std::time::Duration,
    gate_calls: GateCalls,
    /// Watch caches to read from instead of GETting each object (the daemon's).
    cache: Option<std::sync::Arc<Caches>>,
    /// The namespaces the daemon may read (`--namespace`): DestinationRules are looked up
    /// only there.
    scope: super::NamespaceScope,
    /// Istio's root namespace (`--istio-root-namespace`).
    istio_root: String,
}

impl<M: MetricsSource, E: Effects + 'static> Driver<M, E> {
    pub fn new(client: kube::Client, metrics: M, effects: E) -> Self {
        Driver {
            client,
            metrics,
            effects: std::sync::Arc::new(effects),
            tenant_label: TenantLabel::default(),
            pending: Feedback::default(),
            may_write: std::sync::Arc::new(|| true),
            evidence_deadline: EVIDENCE_DEADLINE,
            gate_calls: Default::default(),
            cache: None,
            scope: super::NamespaceScope::All,
            istio_root: crate::istio::DEFAULT_ROOT_NAMESPACE.to_string(),
        }
    }

    /// Looks up mesh-wide DestinationRules in `namespace` instead of `istio-system`.
    pub fn with_istio_root_namespace(mut self, namespace: &str) -> Self {
        self.istio_root = namespace.to_string();
        self
    }

    /// Limits reads outside the policy's namespace (DestinationRules in the host's and Istio's
    /// root namespace) to `scope`.
    pub fn with_scope(mut self, scope: super::NamespaceScope) -> Self {
        self.scope = scope;
        self
    }

    /// Reads objects from the watch caches once they are ready (the API before that); writes
    /// still test the resourceVersion, so a stale cache costs a conflict and a re-read.
    pub fn with_cache(mut self, cache: std::sync::Arc<Caches>) -> Self {
        self.cache = Some(cache);
        self
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

    /// Sets how long a cycle waits for evidence ([`EVIDENCE_DEADLINE`] by default).
    pub fn with_evidence_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.evidence_deadline = deadline;
        self
    }

    /// Waits for the gate calls in flight (their answers are then in [`Driver::feedback`]).
    /// Step-by-step harnesses (tests, the demo) call it between reconciles; the daemon never
    /// does: a gate answers when it answers.
    pub async fn settle_gates(&self) {
        let calls: Vec<_> =
            self.gate_calls.lock().map(|mut c| c.drain().map(|(_, h)| h).collect()).unwrap_or_default();
        futures::future::join_all(calls).await;
    }

    /// Reconciles one policy at time `now` (the caller's clock: real or compressed).
    pub async fn reconcile(&self, policy: &Policy, now: Timestamp) -> Result<CycleReport, DaemonError> {
        self.cycle(std::slice::from_ref(policy), now).await.pop().unwrap_or(Err(DaemonError::Conflict))
    }

    /// Reconciles many policies in one cycle: reads concurrently, then asks the metrics source
    /// once per distinct window length for every due workload (so the number of Prometheus
    /// queries does not grow with the number of rollouts), then decides and writes each.
    /// Results are in the order of `policies`.
    ///
    /// Nothing waits on the evidence that does not need it: a policy with an operator command
    /// or drift is decided and written at once, without this cycle's evidence (its analysis
    /// stays due, and the next look covers the whole window), while the others' evidence is
    /// gathered. Evidence not gathered within the evidence deadline is an `Error` observation
    /// of those policies (it counts towards `maxConsecutiveErrors`; it never passes a step).
    pub async fn cycle(&self, policies: &[Policy], now: Timestamp) -> Vec<Result<CycleReport, DaemonError>> {
        self.cycle_with(policies, now, true).await
    }

    /// Like [`Driver::cycle`] without gathering any evidence: commands, drift, new revisions,
    /// effects' feedback and the clock are decided and written; due analyses stay due. The
    /// daemon's fast path (a changed VirtualService, an acknowledged delivery), which must not
    /// wait on Prometheus.
    pub async fn cycle_without_evidence(
        &self,
        policies: &[Policy],
        now: Timestamp,
    ) -> Vec<Result<CycleReport, DaemonError>> {
        self.cycle_with(policies, now, false).await
    }

    /// Boxed so that its `Send`-ness is proven here, for every caller (the daemon spawns it).
    fn cycle_with<'a>(
        &'a self,
        policies: &'a [Policy],
        now: Timestamp,
        with_evidence: bool,
    ) -> Boxed<'a, Vec<Result<CycleReport, DaemonError>>> {
        use futures::StreamExt;
        Box::pin(async move {
            // Every write is limited to a few in flight, which keeps each one's
            // verdict-to-acknowledgement time short when the API server is the bottleneck
            // (throughput is the server's either way). Commands have their own slots, so they
            // never queue behind a cycle's looks.
            let (urgent_writes, evidence_writes) =
                (tokio::sync::Semaphore::new(8), tokio::sync::Semaphore::new(8));
            let (urgent_writes, evidence_writes) = (&urgent_writes, &evidence_writes);
            // Each policy is read, and — unless it needs this cycle's evidence — decided and
            // written at once: commands and drift never wait on Prometheus (their evidence
            // waits for the next look), and a policy with nothing to look at holds no memory
            // past its own visit. Futures are boxed one by one (the compiler cannot prove
            // closures in stream combinators `Send` for every lifetime) and made as they run,
            // at most READS_IN_FLIGHT at a time: a read's future is several KB, and a cycle
            // may visit hundreds of policies.
            let mut done: Vec<(usize, Result<CycleReport, DaemonError>)> = Vec::with_capacity(policies.len());
            let mut waiting: Vec<(usize, Box<Prepared<'a>>)> = Vec::new();
            let mut visits = futures::stream::FuturesUnordered::new();
            let mut next = policies.iter().enumerate();
            loop {
                while visits.len() < READS_IN_FLIGHT {
                    let Some((i, p)) = next.next() else { break };
                    let visit: Boxed<'_, (usize, Visit<'a>)> = Box::pin(async move {
                        let visit = match self.prepare(p, now).await {
                            Ok(prep) if with_evidence && !prep.urgent && prep.observe_from.is_some() => {
                                Visit::NeedsEvidence(Box::new(prep))
                            }
                            Ok(mut prep) => {
                                prep.observe_from = None;
                                Visit::Done(self.finish(prep, urgent_writes, Vec::new(), now).await)
                            }
                            Err(e) => Visit::Done(Err(e)),
                        };
                        (i, visit)
                    });
                    visits.push(visit);
                }
                match visits.next().await {
                    Some((i, Visit::Done(result))) => done.push((i, result)),
                    Some((i, Visit::NeedsEvidence(prep))) => waiting.push((i, prep)),
                    None => break,
                }
            }
            if !waiting.is_empty() {
                let deadline = tokio::time::Instant::now() + self.evidence_deadline;
                let windows: Vec<(&Policy, i64)> =
                    waiting.iter().filter_map(|(_, p)| Some((p.policy, p.observe_from?))).collect();
                let batches = self.gather(&windows, now, deadline).await;
                let batches = &batches;
                // Every policy waits for its own evidence only: one hung custom query holds
                // no other policy.
                let decided = waiting.into_iter().map(
                    |(i, prep)| -> Boxed<'_, (usize, Result<CycleReport, DaemonError>)> {
                        Box::pin(async move {
                            let evidence = match prep.observe_from {
                                Some(from) => self.evidence(prep.policy, batches, from, now, deadline).await,
                                None => Vec::new(),
                            };
                            (i, self.finish(*prep, evidence_writes, evidence, now).await)
                        })
                    },
                );
                done.extend(futures::future::join_all(decided).await);
            }
            done.sort_by_key(|(i, _)| *i);
            done.into_iter().map(|(_, r)| r).collect()
        })
    }

    /// The grouped Istio queries for the due windows, one per distinct window length, run
    /// concurrently and cut at `deadline` (a hung Prometheus becomes an error, not a wait).
    async fn gather(
        &self,
        due: &[(&Policy, i64)],
        now: Timestamp,
        deadline: tokio::time::Instant,
    ) -> HashMap<i64, Result<ObservedSides, String>> {
        let mut windows: HashMap<i64, Vec<WorkloadKey>> = HashMap::new();
        for (policy, from) in due {
            let (canary, baseline) = prometheus::workload_keys(policy);
            let keys = windows.entry(now.as_second() - from).or_default();
            keys.push(canary);
            keys.push(baseline);
        }
        let limit = self.evidence_deadline;
        let queries = windows.into_iter().map(|(window, mut keys)| async move {
            keys.sort();
            keys.dedup();
            let secs = u64::try_from(window.max(1)).unwrap_or(1);
            let query =
                self.metrics.observe_sides_with_scrape(&keys, now, std::time::Duration::from_secs(secs));
            let result = match tokio::time::timeout_at(deadline, query).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(evidence_timeout(limit)),
            };
            (window, result)
        });
        futures::future::join_all(queries).await.into_iter().collect()
    }

    /// One policy's evidence inputs (scrape interval, observation) from the grouped answers and
    /// its custom queries; whatever is not answered by `deadline` is an `Error` observation.
    async fn evidence(
        &self,
        policy: &Policy,
        batches: &HashMap<i64, Result<ObservedSides, String>>,
        from: i64,
        now: Timestamp,
        deadline: tokio::time::Instant,
    ) -> Vec<Input> {
        let mut inputs = Vec::new();
        let observed = match batches.get(&(now.as_second() - from)) {
            Some(Ok(looked)) => {
                let (canary, baseline) = prometheus::workload_keys(policy);
                if let Some(scrape) = looked.scrape_interval(&canary, &baseline) {
                    inputs.push(Input::ScrapeInterval(scrape));
                }
                let custom = prometheus::observation(
                    &self.metrics,
                    policy,
                    &looked.sides,
                    from,
                    now,
                    &self.tenant_label,
                );
                tokio::time::timeout_at(deadline, custom)
                    .await
                    .map_err(|_| evidence_timeout(self.evidence_deadline))
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err(evidence_timeout(self.evidence_deadline)),
        };
        inputs.push(Input::Observed(observed));
        inputs
    }

    /// Retires a policy that went away (its RolloutPolicy is being deleted, or its file was
    /// removed): an unfinished rollout's route goes back to stable ([`engine::route_on_removal`])
    /// and the state and command annotations are removed, in one guarded patch read fresh from
    /// the API. `Ok(true)` when something was written, `Ok(false)` when nothing of canaryd's was
    /// left (or the VirtualService is gone).
    pub async fn retire(&self, policy: &Policy) -> Result<bool, DaemonError> {
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), policy.namespace(), &virtual_service_resource());
        let vs_name = &policy.spec().target.virtual_service;
        let Some(obj) = vs_api.get_opt(vs_name).await? else { return Ok(false) };
        let vs = serde_json::to_value(obj).unwrap_or_default();
        let view = RouteView::read(&vs, policy).map_err(|source| DaemonError::VirtualService {
            namespace: policy.namespace().to_string(),
            name: vs_name.clone(),
            source: Box::new(source),
        })?;
        let state = inputs::recorded_state(&view).map_err(|e| DaemonError::State(e.to_string()))?;
        let traffic = if view.state.is_some() { engine::route_on_removal(&state) } else { None };
        let patch = view.removal_patch(&vs, policy, traffic.as_ref());
        if patch.as_array().is_none_or(|ops| ops.len() <= 1) {
            return Ok(false);
        }
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| DaemonError::State(e.to_string()))?;
        if !(self.may_write)() {
            return Err(DaemonError::NotLeader);
        }
        match vs_api.patch(vs_name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(_) => {
                tracing::info!(policy = %policy.key(), phase = state.phase.as_str(), routed_back = traffic.is_some(), "policy removed: state annotation removed{}", if traffic.is_some() { ", traffic back on stable" } else { "" });
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => Err(DaemonError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what the cluster says and turns it into the engine's inputs (all but evidence).
    async fn prepare<'p>(&self, policy: &'p Policy, now: Timestamp) -> Result<Prepared<'p>, DaemonError> {
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), policy.namespace(), &virtual_service_resource());
        let kube = KubeSide::new(&self.client, policy, self.cache.as_deref(), &self.scope, &self.istio_root);
        let vs_name = &policy.spec().target.virtual_service;
        let vs = match self.cache.as_ref().and_then(|c| c.virtual_service(policy.namespace(), vs_name)) {
            Some(Some(cached)) => serde_json::to_value(&*cached).unwrap_or_default(),
            // Not cached (not ready, or missing): the API's answer, or its 404.
            _ => serde_json::to_value(vs_api.get(vs_name).await?).unwrap_or_default(),
        };
        let view = RouteView::read(&vs, policy).map_err(|source| DaemonError::VirtualService {
            namespace: policy.namespace().to_string(),
            name: vs_name.clone(),
            source: Box::new(source),
        })?;
        let before = inputs::recorded_state(&view).map_err(|e| DaemonError::State(e.to_string()))?;
        let revision = kube.canary_revision().await?;
        let key = policy.key();
        if inputs::starts_rollout(&before, revision.as_deref()) {
            // Every step's routing must be writable before any of it is written.
            for step in policy.plan() {
                view.check_traffic(&vs, policy, &step.traffic).map_err(|source| {
                    DaemonError::VirtualService {
                        namespace: policy.namespace().to_string(),
                        name: vs_name.clone(),
                        source: Box::new(source),
                    }
                })?;
            }
            kube.check_subsets(&view).await?;
            warn_if_hosts_disagree(policy, &view);
        }
        let workloads = if inputs::reads_workloads(&before, revision.as_deref()) {
            Some(kube.workload_report(&view).await?)
        } else {
            None
        };
        // Take what effects reported only after the last read that can fail: an error above
        // returns early, and inputs taken before it (delivery acknowledgements, gate answers)
        // would be lost — a lost acknowledgement means the alert is sent again after a restart.
        let queued = self.pending.take(&key);

        let read = Reads { before: &before, view: &view, revision: revision.as_deref() };
        let derived = inputs::derive(policy, &read, queued.clone(), now);
        if let Some(e) = &derived.unknown_command {
            tracing::warn!(policy = %key, command = %e.0, "ignoring an unknown command");
        }
        let urgent = view.command.is_some()
            || derived.inputs.iter().any(|i| {
                matches!(
                    i,
                    Input::Command(_)
                        | Input::Drift { .. }
                        | Input::Gate { kind: GateKind::Rollback, open: true, .. }
                )
            });
        // Keep only what the write needs (the routes and whether annotations exist): with
        // thousands of policies in one cycle, whole objects would dominate memory.
        // The route record (the route as it was before the rollout) is what an abort restores.
        let record_key = crate::istio::route_record_annotation_key(policy);
        let annotations = vs.pointer("/metadata/annotations").map(|a| {
            let kept = a.get(&record_key).map(|r| (record_key.clone(), r.clone()));
            serde_json::Value::Object(kept.into_iter().collect())
        });
        let vs = serde_json::json!({
            "metadata": {"annotations": annotations},
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
            urgent,
            workloads,
        })
    }

    /// Adds the evidence, steps the engine, writes once, then carries out the effects.
    async fn finish(
        &self,
        prep: Prepared<'_>,
        writes: &tokio::sync::Semaphore,
        evidence: Vec<Input>,
        now: Timestamp,
    ) -> Result<CycleReport, DaemonError> {
        let Prepared { policy, vs, view, before, mut inputs, queued, workloads, .. } = prep;
        let key = policy.key();
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), policy.namespace(), &virtual_service_resource());
        inputs.extend(evidence);
        inputs.push(Input::Tick);

        let mut state = before.clone();
        let mut actions = Vec::new();
        let mut wake_at = None;
        for input in inputs {
            let t = engine::step_with(policy, &state, input, now, workloads.as_ref());
            state = t.state;
            actions.extend(t.actions);
            wake_at = t.wake_at;
        }
        let verdict_ready = std::time::Instant::now();
        let mut wrote = false;
        if state != before || view.command.is_some() {
            let body = serde_json::to_string(&state).map_err(|e| DaemonError::State(e.to_string()))?;
            view.check_traffic(&vs, policy, &state.traffic).map_err(|source| {
                DaemonError::VirtualService {
                    namespace: policy.namespace().to_string(),
                    name: policy.spec().target.virtual_service.clone(),
                    source: Box::new(source),
                }
            })?;
            let patch = view.patch(&vs, policy, &state.traffic, &body);
            let patch: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| DaemonError::State(e.to_string()))?;
            let vs_name = &policy.spec().target.virtual_service;
            // Waiting for a write slot counts in verdict-to-write: it is how long the decision
            // waited to land.
            let _slot = writes.acquire().await;
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
        Ok(CycleReport { state, actions, wrote, verdict_to_write, wake_at })
    }

    /// Effects after the write: if the daemon dies here, the next reconcile repeats them
    /// (gates are asked again, undelivered outbox alerts are sent again).
    async fn carry_out(&self, policy: &Policy, state: &RolloutState, actions: &[Action], view: &RouteView) {
        let key = policy.key();
        let kube = KubeSide::new(&self.client, policy, self.cache.as_deref(), &self.scope, &self.istio_root);
        for action in actions {
            match action {
                Action::CallGate(kind) => {
                    self.ask_gates(policy, *kind, state);
                }
                Action::CopyCanaryToStable { template_hash } => {
                    match kube.copy_canary_to_stable(view, template_hash).await {
                        Ok(CopyOutcome::Copied) => {
                            tracing::info!(policy = %key, template = %template_hash, "stable Deployment given the canary's pod template")
                        }
                        Ok(CopyOutcome::CanaryChanged) => {
                            tracing::info!(policy = %key, "the canary's template changed since promotion; not copied")
                        }
                        Ok(CopyOutcome::Admitted { template_hash: stored, changed }) => {
                            tracing::info!(policy = %key, template = %template_hash, stored = %stored, changed = ?changed, "stable Deployment given the canary's pod template; the API server's admission changed it");
                            let target = template_hash.clone();
                            self.pending
                                .push(&key, Input::CopyAdmitted { target, template_hash: stored, changed });
                        }
                        Err(e) => {
                            tracing::warn!(policy = %key, error = %e, "copying the canary template to stable failed; the canary keeps serving and the copy is retried")
                        }
                    }
                }
                Action::ScaleCanary(replicas) => {
                    if let Err(e) = kube.scale_canary(*replicas).await {
                        tracing::warn!(policy = %key, error = %e, replicas, "scaling the canary up failed; retried while the rollout waits for it");
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
            // A channel acknowledged in this process but not yet in what was read (a watch
            // cache a moment behind the write) is not sent again.
            let mut alert = alert.clone();
            for channel in self.pending.delivered(&key, alert.id) {
                if !alert.delivered.contains(&channel) {
                    alert.delivered.push(channel);
                }
            }
            self.effects.deliver(policy, &alert, state, self.pending.clone()).await;
        }
    }

    /// Asks the policy's gates of `kind` in the background, in order, until one is closed
    /// (every rollback gate is asked); the answers come back through [`Feedback`] to the
    /// policy's next reconcile. A call still in flight is not repeated, so a gate that never
    /// answers (up to its `timeout`) holds nothing but its own task.
    fn ask_gates(&self, policy: &Policy, kind: GateKind, state: &RolloutState) {
        let Ok(mut calls) = self.gate_calls.lock() else { return };
        calls.retain(|_, h| !h.is_finished());
        let slot = (policy.key(), kind);
        if calls.contains_key(&slot) {
            return;
        }
        let (effects, feedback, policy, state) =
            (self.effects.clone(), self.pending.clone(), policy.clone(), state.clone());
        let task = tokio::spawn(async move {
            let key = policy.key();
            for gate in policy.spec().gates.iter().filter(|g| g.kind == kind) {
                let (open, detail) = effects.call_gate(&policy, gate, &state).await;
                feedback.push(&key, Input::Gate { kind, open, detail });
                if !open && kind != GateKind::Rollback {
                    break;
                }
            }
        });
        calls.insert(slot, task);
    }
}

/// The observation error of evidence not gathered in time.
fn evidence_timeout(limit: std::time::Duration) -> String {
    format!("Prometheus did not answer within {} s; no evidence for this look", limit.as_secs())
}
