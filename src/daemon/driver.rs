//! One reconcile of one policy: read → decide (pure engine) → one guarded write → effects.

use super::kube_io::{pod_template_revision, virtual_service_resource};
use crate::engine::{self, Action, Input, PendingAlert, Phase, RolloutState};
use crate::istio::{RouteView, VsError};
use crate::observation::SideObservation;
use crate::policy::{host_short_name, Gate, GateKind, Policy};
use crate::prometheus::{self, MetricsSource, WorkloadKey};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Why a reconcile did not complete. The state on the cluster is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("VirtualService {namespace}/{name}: {source}")]
    VirtualService { namespace: String, name: String, source: VsError },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the VirtualService changed while we decided (409/422); re-reading")]
    Conflict,
    #[error("canary workload {0} not found")]
    CanaryMissing(String),
    #[error("no DestinationRule defines subset {subset:?} for host {host:?}; add it before rolling out")]
    MissingSubset { host: String, subset: String },
    #[error("recorded state on the VirtualService is unreadable: {0}")]
    State(String),
}

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

    fn take(&self, key: &str) -> Vec<Input> {
        self.pending.lock().map(|mut p| p.remove(key).unwrap_or_default()).unwrap_or_default()
    }

    fn put_back(&self, key: &str, inputs: Vec<Input>) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(key.to_string()).or_default().splice(0..0, inputs);
        }
    }
}

/// Side effects outside Kubernetes: gates and alert delivery (webhooks, email).
pub trait Effects: Send + Sync {
    /// Asks a gate; `(open, detail)`.
    fn call_gate(
        &self,
        policy: &Policy,
        gate: &Gate,
        state: &RolloutState,
    ) -> impl Future<Output = (bool, String)> + Send;
    /// Starts delivering one outbox alert to the channels that still miss it and reports each
    /// delivered channel as `Input::AlertDelivered` through `feedback`. It must not hold up the
    /// cycle (spawn slow work): the rollback has already been written when this runs.
    fn deliver(
        &self,
        policy: &Policy,
        alert: &PendingAlert,
        state: &RolloutState,
        feedback: Feedback,
    ) -> impl Future<Output = ()> + Send;
}

/// Effects for runs without gates or alert channels.
pub struct NoEffects;

impl Effects for NoEffects {
    async fn call_gate(&self, _: &Policy, _: &Gate, _: &RolloutState) -> (bool, String) {
        (false, "no gate caller configured".into())
    }
    async fn deliver(&self, _: &Policy, _: &PendingAlert, _: &RolloutState, _: Feedback) {}
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
    /// Inputs learnt from effects (gate answers, deliveries), fed to the next reconcile.
    pending: Feedback,
}

impl<M: MetricsSource, E: Effects> Driver<M, E> {
    pub fn new(client: kube::Client, metrics: M, effects: E) -> Self {
        Driver { client, metrics, effects, pending: Feedback::default() }
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
        let mut batches: HashMap<i64, Result<HashMap<WorkloadKey, SideObservation>, String>> = HashMap::new();
        for (window, mut keys) in windows {
            keys.sort();
            keys.dedup();
            let secs = u64::try_from(window.max(1)).unwrap_or(1);
            let result = self
                .metrics
                .observe_sides(&keys, now, std::time::Duration::from_secs(secs))
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
            Api::namespaced_with(self.client.clone(), &policy.namespace(), &virtual_service_resource());
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &policy.namespace());
        let vs_name = &policy.spec().target.virtual_service;
        let vs = serde_json::to_value(vs_api.get(vs_name).await?).unwrap_or_default();
        let view = RouteView::read(&vs, policy).map_err(|source| DaemonError::VirtualService {
            namespace: policy.namespace().to_string(),
            name: vs_name.clone(),
            source,
        })?;
        let before: RolloutState = match &view.state {
            Some(raw) => serde_json::from_str(raw).map_err(|e| DaemonError::State(e.to_string()))?,
            None => RolloutState { traffic: view.traffic.clone(), ..RolloutState::default() },
        };
        let canary_name = &policy.workloads().canary;
        let canary = deployments
            .get_opt(&canary_name)
            .await?
            .ok_or_else(|| DaemonError::CanaryMissing(canary_name.clone()))?;
        let revision = pod_template_revision(&serde_json::to_value(&canary).unwrap_or_default());

        let key = policy.key();
        let mut inputs = self.pending.take(&key);
        let queued = inputs.clone();
        if let Some(raw) = &view.command {
            match parse_command(raw) {
                Some(c) => inputs.push(Input::Command(c)),
                None => tracing::warn!(policy = %key, command = %raw, "ignoring an unknown command"),
            }
        }
        if let Some(rev) = revision.filter(|r| before.revision.as_deref() != Some(r)) {
            // A rollout is about to start: routing to a subset that does not exist would send
            // canary traffic into a 503 black hole, so refuse before touching weights.
            if !before.phase.is_active() {
                self.check_subsets(policy, &view).await?;
                warn_if_hosts_disagree(policy, &view);
            }
            inputs.push(Input::NewRevision(rev));
        }
        if before.phase.is_active() && view.traffic != before.traffic {
            inputs.push(Input::Drift { observed: view.traffic.clone() });
        }
        if before.phase == Phase::Promoting && self.stable_rolled_out(policy, &deployments).await? {
            inputs.push(Input::StableRolledOut);
        }
        let interval = policy.spec().analysis.interval.as_secs_i64();
        let due = before.observed_until.is_none_or(|t| now.as_second() >= t + interval);
        let observe_from = (matches!(before.phase, Phase::Progressing | Phase::Paused) && due)
            .then(|| before.observed_until.unwrap_or(now.as_second() - interval));
        // Keep only what the write needs (the routes and whether annotations exist): with
        // thousands of policies in one cycle, whole objects would dominate memory.
        let vs = serde_json::json!({
            "metadata": {"annotations": vs.pointer("/metadata/annotations").map(|_| serde_json::json!({}))},
            "spec": {"http": vs.pointer("/spec/http").cloned().unwrap_or_default()},
        });
        Ok(Prepared { policy, vs, view, before, inputs, queued, observe_from })
    }

    /// Adds the evidence, steps the engine, writes once, then carries out the effects.
    async fn finish(
        &self,
        prep: Prepared<'_>,
        sides: Option<&Result<HashMap<WorkloadKey, SideObservation>, String>>,
        now: Timestamp,
    ) -> Result<CycleReport, DaemonError> {
        let Prepared { policy, vs, view, before, mut inputs, queued, observe_from } = prep;
        let key = policy.key();
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &policy.namespace(), &virtual_service_resource());
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &policy.namespace());
        if let (Some(from), Some(sides)) = (observe_from, sides) {
            let observed = match sides {
                Ok(sides) => Ok(prometheus::observation(&self.metrics, policy, sides, from, now).await),
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
            match vs_api.patch(vs_name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
                Ok(_) => wrote = true,
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => {
                    self.requeue(&key, queued);
                    return Err(DaemonError::Conflict);
                }
                Err(e) => {
                    self.requeue(&key, queued);
                    return Err(e.into());
                }
            }
        }
        let verdict_to_write = wrote.then(|| verdict_ready.elapsed());
        self.carry_out(policy, &state, &actions, &deployments, &view).await;
        Ok(CycleReport { state, actions, wrote, verdict_to_write })
    }

    fn requeue(&self, key: &str, inputs: Vec<Input>) {
        self.pending.put_back(key, inputs);
    }

    async fn stable_rolled_out(&self, policy: &Policy, api: &Api<Deployment>) -> Result<bool, DaemonError> {
        let Some(d) = api.get_opt(&policy.workloads().stable).await? else { return Ok(false) };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let status = d.status.unwrap_or_default();
        Ok(status.observed_generation.unwrap_or(0) >= generation
            && status.updated_replicas.unwrap_or(0) >= want)
    }

    /// Effects after the write: if the daemon dies here, the next reconcile repeats them
    /// (gates are asked again, undelivered outbox alerts are sent again).
    async fn carry_out(
        &self,
        policy: &Policy,
        state: &RolloutState,
        actions: &[Action],
        api: &Api<Deployment>,
        view: &RouteView,
    ) {
        let key = policy.key();
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
                    if let Err(e) = self.copy_template(policy, api).await {
                        tracing::warn!(policy = %key, error = %e, "copying the canary template to stable failed; retrying next cycle");
                    }
                }
                Action::ScaleCanaryDown => {
                    let patch = json!({"spec": {"replicas": 0}});
                    if let Err(e) = api
                        .patch(&policy.workloads().canary, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!(policy = %key, error = %e, "scaling the canary down failed");
                    }
                }
                Action::Record { reason, message } => {
                    self.event(policy, view, reason, message).await;
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

    /// Records a Kubernetes Event on the VirtualService; failures are logged, never fatal.
    async fn event(&self, policy: &Policy, view: &RouteView, reason: &str, message: &str) {
        use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
        let api: Api<Event> = Api::namespaced(self.client.clone(), &policy.namespace());
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let event = Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}-", policy.spec().target.virtual_service)),
                namespace: Some(policy.namespace().to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("networking.istio.io/v1".into()),
                kind: Some("VirtualService".into()),
                name: Some(policy.spec().target.virtual_service.clone()),
                namespace: Some(policy.namespace().to_string()),
                field_path: Some(format!("spec.http[{}]", view.index)),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(format!("{}: {message}", policy.key())),
            type_: Some(
                if reason == "Aborted" || reason.starts_with("Drift") { "Warning" } else { "Normal" }.into(),
            ),
            source: Some(EventSource { component: Some("canaryd".into()), ..Default::default() }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        if let Err(e) = api.create(&kube::api::PostParams::default(), &event).await {
            tracing::debug!(error = %e, "cannot record a Kubernetes Event");
        }
    }

    /// Before a rollout starts: the DestinationRule for the host must define both subsets.
    async fn check_subsets(&self, policy: &Policy, view: &RouteView) -> Result<(), DaemonError> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &policy.namespace(),
            &super::kube_io::destination_rule_resource(),
        );
        let rules = api.list(&Default::default()).await?;
        let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
        let t = &policy.spec().target;
        for (host, subset) in [(&view.stable_host, &t.stable.subset), (&view.canary_host, &t.canary.subset)] {
            let found = rules.items.iter().any(|dr| {
                let spec = &dr.data["spec"];
                spec["host"].as_str().is_some_and(|h| short(h) == short(host))
                    && spec["subsets"]
                        .as_array()
                        .is_some_and(|subs| subs.iter().any(|s| s["name"].as_str() == Some(subset.as_str())))
            });
            if !found {
                return Err(DaemonError::MissingSubset { host: host.clone(), subset: subset.clone() });
            }
        }
        Ok(())
    }

    async fn copy_template(&self, policy: &Policy, api: &Api<Deployment>) -> Result<(), kube::Error> {
        let canary = api.get(&policy.workloads().canary).await?;
        let stable_name = &policy.workloads().stable;
        let stable = api.get(stable_name).await?;
        let mut template = serde_json::to_value(canary.spec.map(|s| s.template)).unwrap_or_default();
        // The stable selector must keep matching its pods: its labels win over the canary's.
        let selector = serde_json::to_value(stable.spec.map(|s| s.selector.match_labels)).unwrap_or_default();
        if let (Some(labels), Some(sel)) =
            (template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut), selector.as_object())
        {
            for (k, v) in sel {
                labels.insert(k.clone(), v.clone());
            }
        }
        api.patch(
            &stable_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": template}})),
        )
        .await?;
        Ok(())
    }
}

/// The workload names come from the policy alone (one rule everywhere); when the policy names
/// neither `host` nor `workload` and the route's host is not the VirtualService's name, the
/// queries probably miss the real Deployments (the judge then holds on "no traffic"): say so.
fn warn_if_hosts_disagree(policy: &Policy, view: &RouteView) {
    let t = &policy.spec().target;
    for (d, host, name) in [
        (&t.stable, &view.stable_host, &policy.workloads().stable),
        (&t.canary, &view.canary_host, &policy.workloads().canary),
    ] {
        if d.workload.is_none() && d.host.is_none() && host_short_name(host) != t.virtual_service {
            tracing::warn!(
                policy = %policy.key(), route_host = %host, workload = %name,
                "the route's host differs from the VirtualService name; querying workload {name} — set target.*.workload or host in the policy if that is wrong"
            );
        }
    }
}

/// Parses the command annotation: `start`, `promote`, `pause`, `resume`, `retry`, `abort[: reason]`.
pub fn parse_command(raw: &str) -> Option<crate::engine::Command> {
    use crate::engine::Command;
    let (verb, rest) = raw.split_once(':').map(|(v, r)| (v.trim(), r.trim())).unwrap_or((raw.trim(), ""));
    Some(match verb {
        "start" => Command::Start,
        "promote" => Command::Promote,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "retry" => Command::Retry,
        "abort" => Command::Abort(if rest.is_empty() { "no reason given".into() } else { rest.to_string() }),
        _ => return None,
    })
}
