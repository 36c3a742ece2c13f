//! One policy's Kubernetes objects besides its VirtualService: what the reconcile reads (the
//! canary's revision, whether the stable Deployment rolled out, the DestinationRule subsets
//! before a rollout starts) and what it does after its write (copy promotion, scaling the
//! canary down, Events).

use super::cache::Caches;
use super::kube_io::{destination_rule_resource, pod_template_revision};
use super::DaemonError;
use super::NamespaceScope;
use crate::istio::{self, RouteView};
use crate::policy::{host_short_name, Policy};
use crate::workload::{self, Capacity, RolloutStatus, WorkloadReport};
use std::collections::BTreeMap;

/// A DestinationRule subset's labels.
pub(super) type Labels = BTreeMap<String, String>;

fn to_json(d: &Deployment) -> Value {
    serde_json::to_value(d).unwrap_or_default()
}
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};

/// The Deployments, DestinationRules and Events of one policy's namespace.
pub(super) struct KubeSide<'p> {
    client: kube::Client,
    deployments: Api<Deployment>,
    policy: &'p Policy,
    /// The watch caches, read instead of the API once they are ready.
    cache: Option<&'p Caches>,
    /// Where reads outside the policy's namespace may go.
    scope: &'p NamespaceScope,
    /// Istio's root namespace (mesh-wide DestinationRules).
    istio_root: &'p str,
}

impl<'p> KubeSide<'p> {
    pub(super) fn new(
        client: &kube::Client,
        policy: &'p Policy,
        cache: Option<&'p Caches>,
        scope: &'p NamespaceScope,
        istio_root: &'p str,
    ) -> Self {
        KubeSide {
            client: client.clone(),
            deployments: Api::namespaced(client.clone(), policy.namespace()),
            policy,
            cache,
            scope,
            istio_root,
        }
    }

    /// A Deployment of the policy's namespace, from the cache when it is ready.
    async fn deployment(&self, name: &str) -> Result<Option<Deployment>, kube::Error> {
        match self.cache.and_then(|c| c.deployment(self.policy.namespace(), name)) {
            Some(cached) => Ok(cached.map(|d| (*d).clone())),
            None => self.deployments.get_opt(name).await,
        }
    }

    /// The canary Deployment's pod-template revision; a missing canary is an error because
    /// nothing could be rolled out or judged without it.
    pub(super) async fn canary_revision(&self) -> Result<Option<String>, DaemonError> {
        let name = &self.policy.workloads().canary;
        let canary = self.deployment(name).await?.ok_or_else(|| DaemonError::CanaryMissing(name.clone()))?;
        Ok(pod_template_revision(&to_json(&canary)))
    }

    /// The DestinationRules Istio would consult for this policy's route: those of the policy's
    /// namespace (the VirtualService's, where its callers' sidecars look first), of each host's
    /// namespace and of Istio's root namespace (`--istio-root-namespace`) — those in [`NamespaceScope`] only.
    async fn destination_rules(&self, view: &RouteView) -> Result<Vec<Value>, DaemonError> {
        let own = self.policy.namespace();
        let mut namespaces = vec![own.to_string()];
        for host in [&view.stable_host, &view.canary_host] {
            if let Some((ns, _)) = istio::service_namespace(&istio::fqdn(host, own, istio::DEFAULT_DOMAIN)) {
                namespaces.push(ns.to_string());
            }
        }
        namespaces.push(self.istio_root.to_string());
        let mut seen = std::collections::BTreeSet::new();
        namespaces.retain(|ns| seen.insert(ns.clone()));
        let mut rules = Vec::new();
        for ns in namespaces.iter().filter(|ns| self.scope.contains(ns)) {
            let found: Vec<DynamicObject> = match self.cache.and_then(|c| c.destination_rules(ns)) {
                Some(cached) => cached.iter().map(|r| (**r).clone()).collect(),
                None => {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(self.client.clone(), ns, &destination_rule_resource());
                    match api.list(&Default::default()).await {
                        Ok(list) => list.items,
                        // Another namespace may be closed to this install (RBAC): only the
                        // policy's own must be readable.
                        Err(kube::Error::Api(e)) if ns != own && (e.code == 403 || e.code == 404) => {
                            Vec::new()
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            rules.extend(found.into_iter().map(|r| serde_json::to_value(r).unwrap_or_default()));
        }
        Ok(rules)
    }

    /// The DestinationRule subsets' labels (stable, canary) for the route's hosts, found as
    /// Istio finds them ([`istio::find_subset`]); a missing subset is an error, because routing
    /// to it would send traffic into a 503 black hole.
    pub(super) async fn subset_labels(&self, view: &RouteView) -> Result<(Labels, Labels), DaemonError> {
        let rules = self.destination_rules(view).await?;
        let t = &self.policy.spec().target;
        let own = self.policy.namespace();
        let find = |host: &String, subset: &String| {
            let fqdn = istio::fqdn(host, own, istio::DEFAULT_DOMAIN);
            istio::find_subset(&rules, &fqdn, own, self.istio_root, subset).map(|found| found.labels).map_err(
                |e| DaemonError::MissingSubset {
                    host: host.clone(),
                    subset: subset.clone(),
                    detail: e.to_string(),
                },
            )
        };
        Ok((find(&view.stable_host, &t.stable.subset)?, find(&view.canary_host, &t.canary.subset)?))
    }

    /// Before a rollout starts: both subsets exist and select the pods they name — the stable
    /// subset the stable's, the canary subset the canary's and, in copy mode, still not the
    /// stable's once they run the canary's template ([`workload::check_subset_labels`]).
    pub(super) async fn check_subsets(&self, view: &RouteView) -> Result<(), DaemonError> {
        let (stable_subset, canary_subset) = self.subset_labels(view).await?;
        let w = self.policy.workloads();
        let copy = self.policy.spec().promotion.mode.copies();
        let canary =
            self.deployment(&w.canary).await?.ok_or_else(|| DaemonError::CanaryMissing(w.canary.clone()))?;
        let stable = match self.deployment(&w.stable).await? {
            Some(d) => d,
            None if copy => return Err(DaemonError::StableMissing(w.stable.clone())),
            // Shift mode needs no stable Deployment of that name (the subset may select pods of
            // any workload); only the canary's side can be checked.
            None => return Ok(()),
        };
        let (stable, canary) = (to_json(&stable), to_json(&canary));
        workload::check_subset_labels(&stable, &canary, &stable_subset, &canary_subset, copy)
            .map_err(DaemonError::Subsets)
    }

    /// What the engine needs of the Deployments this reconcile ([`WorkloadReport`]).
    pub(super) async fn workload_report(&self, view: &RouteView) -> Result<WorkloadReport, DaemonError> {
        let w = self.policy.workloads();
        let canary =
            self.deployment(&w.canary).await?.ok_or_else(|| DaemonError::CanaryMissing(w.canary.clone()))?;
        let canary = to_json(&canary);
        let stable = self.deployment(&w.stable).await?.map(|d| to_json(&d));
        let mut report = WorkloadReport {
            canary_status: Some(RolloutStatus::of(&canary)),
            canary: Capacity::of(&canary),
            stable_replicas: stable.as_ref().map(|s| Capacity::of(s).desired).unwrap_or(0),
            ..WorkloadReport::default()
        };
        if self.policy.spec().promotion.mode.copies() {
            if let Some(stable) = &stable {
                let (stable_subset, _) = self.subset_labels(view).await?;
                let target = workload::copy_template(&canary, stable, &stable_subset);
                report.copy_target = Some(workload::template_hash(&target));
                report.stable_template = Some(workload::template_hash(&stable["spec"]["template"]));
                report.stable_status = Some(RolloutStatus::of(stable));
            }
        }
        Ok(report)
    }

    /// Copy promotion: the stable Deployment gets exactly the canary's pod template (but the
    /// labels its selector and subset need), by one JSON patch that replaces `spec.template`
    /// under a `test` of the resourceVersion — read fresh from the API, not the cache, so the
    /// test guards against a concurrent writer. Nothing is written when the canary's template
    /// no longer hashes to what the engine promoted. The answer is the object as stored: a
    /// mutating admission webhook may have changed the template, which the engine is told.
    pub(super) async fn copy_canary_to_stable(
        &self,
        view: &RouteView,
        template_hash: &str,
    ) -> Result<CopyOutcome, DaemonError> {
        let w = self.policy.workloads();
        let canary = to_json(&self.deployments.get(&w.canary).await?);
        let stable = to_json(&self.deployments.get(&w.stable).await?);
        let (stable_subset, _) = self.subset_labels(view).await?;
        let template = workload::copy_template(&canary, &stable, &stable_subset);
        if workload::template_hash(&template) != template_hash {
            return Ok(CopyOutcome::CanaryChanged);
        }
        let patch: json_patch::Patch = serde_json::from_value(workload::copy_patch(&stable, &template))
            .map_err(|e| DaemonError::State(e.to_string()))?;
        let stored =
            self.deployments.patch(&w.stable, &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
        let stored = to_json(&stored)["spec"]["template"].clone();
        let stored_hash = workload::template_hash(&stored);
        if stored_hash == template_hash {
            Ok(CopyOutcome::Copied)
        } else {
            Ok(CopyOutcome::Admitted {
                changed: workload::changed_paths(&template, &stored),
                template_hash: stored_hash,
            })
        }
    }

    /// Copy promotion: the canary Deployment is no longer needed once stable runs its template.
    pub(super) async fn scale_canary_down(&self) -> Result<(), kube::Error> {
        self.scale_canary(0).await
    }

    /// Sets the canary Deployment's replicas (copy mode brings it back for a new revision).
    pub(super) async fn scale_canary(&self, replicas: u32) -> Result<(), kube::Error> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.deployments
            .patch(&self.policy.workloads().canary, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Records a Kubernetes Event on the VirtualService; failures are logged, never fatal.
    pub(super) async fn record(&self, view: &RouteView, reason: &str, message: &str) {
        use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
        let policy = self.policy;
        let api: Api<Event> = Api::namespaced(self.client.clone(), policy.namespace());
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let event = Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}-", policy.spec().target.virtual_service)),
                namespace: Some(policy.namespace().to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(format!("networking.istio.io/{}", super::kube_io::istio_version())),
                kind: Some("VirtualService".into()),
                name: Some(policy.spec().target.virtual_service.clone()),
                namespace: Some(policy.namespace().to_string()),
                field_path: Some(format!("spec.http[{}]", view.index)),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(format!("{}: {message}", policy.key())),
            type_: Some(if crate::engine::is_warning(reason) { "Warning" } else { "Normal" }.into()),
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
}

/// The workload names come from the policy alone (one rule everywhere); when the policy names
/// neither `host` nor `workload` and the route's host is not the VirtualService's name, the
/// queries probably miss the real Deployments (the judge then holds on "no traffic"): say so.
pub(super) fn warn_if_hosts_disagree(policy: &Policy, view: &RouteView) {
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

/// What a copy promotion's write did.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum CopyOutcome {
    /// The stable Deployment has the canary's template.
    Copied,
    /// The canary's template changed since promotion started; nothing was written.
    CanaryChanged,
    /// Written, but the API server's admission changed the template: it stored this one.
    Admitted { template_hash: String, changed: Vec<String> },
}
