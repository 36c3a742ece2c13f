//! One policy's Kubernetes objects besides its VirtualService: what the reconcile reads (the
//! canary's revision, whether the stable Deployment rolled out, the DestinationRule subsets
//! before a rollout starts) and what it does after its write (copy promotion, scaling the
//! canary down, Events).

use super::cache::Caches;
use super::kube_io::{destination_rule_resource, pod_template_revision};
use super::DaemonError;
use crate::istio::RouteView;
use crate::policy::{host_short_name, Policy};
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
}

impl<'p> KubeSide<'p> {
    pub(super) fn new(client: &kube::Client, policy: &'p Policy, cache: Option<&'p Caches>) -> Self {
        KubeSide {
            client: client.clone(),
            deployments: Api::namespaced(client.clone(), policy.namespace()),
            policy,
            cache,
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
        Ok(pod_template_revision(&serde_json::to_value(&canary).unwrap_or_default()))
    }

    /// Copy promotion: the stable Deployment has seen its latest spec and updated every replica.
    pub(super) async fn stable_rolled_out(&self) -> Result<bool, DaemonError> {
        let Some(d) = self.deployment(&self.policy.workloads().stable).await? else {
            return Ok(false);
        };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(0);
        let status = d.status.unwrap_or_default();
        Ok(status.observed_generation.unwrap_or(0) >= generation
            && status.updated_replicas.unwrap_or(0) >= want)
    }

    /// Before a rollout starts: the DestinationRule for the host must define both subsets.
    pub(super) async fn check_subsets(&self, view: &RouteView) -> Result<(), DaemonError> {
        let rules: Vec<DynamicObject> =
            match self.cache.and_then(|c| c.destination_rules(self.policy.namespace())) {
                Some(cached) => cached.iter().map(|r| (**r).clone()).collect(),
                None => {
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        self.client.clone(),
                        self.policy.namespace(),
                        &destination_rule_resource(),
                    );
                    api.list(&Default::default()).await?.items
                }
            };
        let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
        let t = &self.policy.spec().target;
        for (host, subset) in [(&view.stable_host, &t.stable.subset), (&view.canary_host, &t.canary.subset)] {
            let found = rules.iter().any(|dr| {
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

    /// Copy promotion: the stable Deployment gets the canary's pod template.
    pub(super) async fn copy_canary_to_stable(&self) -> Result<(), kube::Error> {
        let canary = self.deployments.get(&self.policy.workloads().canary).await?;
        let stable_name = &self.policy.workloads().stable;
        let stable = self.deployments.get(stable_name).await?;
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
        self.deployments
            .patch(
                stable_name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"template": template}})),
            )
            .await?;
        Ok(())
    }

    /// Copy promotion: the canary Deployment is no longer needed once stable runs its template.
    pub(super) async fn scale_canary_down(&self) -> Result<(), kube::Error> {
        let patch = json!({"spec": {"replicas": 0}});
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
                api_version: Some("networking.istio.io/v1".into()),
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
