//! The daemon's watch caches: reflectors of the VirtualServices, Deployments, DestinationRules
//! and (with `--crds`) RolloutPolicies of the managed namespaces (one watch per namespace of
//! `--namespace`, or cluster-wide). Reconciles read from them instead of GETting each object,
//! so an idle policy costs no API request, and every change reports the object it touched, so
//! the loop reconciles exactly the policies whose objects changed.
//!
//! A cache may lag the API server by a moment. That is safe: every write is a JSON patch that
//! tests the resourceVersion it was decided on, so a decision on a stale object is refused
//! (a conflict) and made again on the next read.

use super::kube_io::{destination_rule_resource, virtual_service_resource};
use super::NamespaceScope;
use crate::policy::RolloutPolicy;
use futures::StreamExt;
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Objects changed since the loop last looked, as `vs:ns/name`, `deploy:ns/name`, `dr:ns/name`
/// and `policy:ns/name`.
#[derive(Default)]
pub struct Touched {
    keys: Mutex<HashSet<String>>,
    notify: tokio::sync::Notify,
    /// Watch events received (for the scale benchmark and /metrics).
    pub events: AtomicU64,
}

impl Touched {
    fn add(&self, key: String) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut k) = self.keys.lock() {
            k.insert(key);
        }
        self.notify.notify_one();
    }

    /// The keys touched since the last call.
    pub fn take(&self) -> HashSet<String> {
        self.keys.lock().map(|mut k| std::mem::take(&mut *k)).unwrap_or_default()
    }

    /// Resolves at the next change (or at once if one came since the last wait).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// An object as a reflector keeps it: its identity, and the object itself as compact JSON,
/// unpacked when read. Typed Kubernetes objects are mostly empty optional fields (a Deployment
/// with one container is ~6 KB in memory, ~1 KB as JSON), and with thousands of policies the
/// caches would hold most of the daemon's memory. Unpacking gives back the object exactly as
/// it was packed (a serde round trip), so nothing computed from it (a template's hash) changes.
#[derive(Clone)]
pub struct Packed<K: Lookup> {
    name: String,
    namespace: Option<String>,
    resource_version: Option<String>,
    uid: Option<String>,
    json: Box<[u8]>,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Lookup + serde::Serialize + serde::de::DeserializeOwned> Packed<K> {
    fn pack(object: &K) -> Packed<K> {
        let text = |c: Option<std::borrow::Cow<'_, str>>| c.map(std::borrow::Cow::into_owned);
        Packed {
            name: text(object.name()).unwrap_or_default(),
            namespace: text(object.namespace()),
            resource_version: text(object.resource_version()),
            uid: text(object.uid()),
            json: serde_json::to_vec(object).unwrap_or_default().into_boxed_slice(),
            kind: std::marker::PhantomData,
        }
    }

    /// The object as it was packed (`None` only if it could not be serialised, never seen).
    fn unpack(&self) -> Option<K> {
        serde_json::from_slice(&self.json).ok()
    }
}

impl<K: Lookup> Lookup for Packed<K> {
    type DynamicType = K::DynamicType;

    fn kind(dyntype: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dyntype)
    }

    fn group(dyntype: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dyntype)
    }

    fn version(dyntype: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dyntype)
    }

    fn plural(dyntype: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dyntype)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        self.resource_version.as_deref().map(Cow::Borrowed)
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        self.uid.as_deref().map(Cow::Borrowed)
    }
}

/// One reflector per kind and namespace, keeping each object as `S` (the object itself, or
/// [`Packed`]).
struct Reflected<S: Lookup + 'static>
where
    S::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores: Vec<Store<S>>,
    dyntype: S::DynamicType,
    ready: Arc<Vec<AtomicBool>>,
}

impl<S> Reflected<S>
where
    S: Lookup + Clone + Send + Sync + 'static,
    S::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    /// Watches `apis`, keeping each object as `keep` makes it.
    fn start<K>(
        kind: &'static str,
        apis: Vec<Api<K>>,
        dyntype: S::DynamicType,
        keep: fn(K) -> S,
        touched: &Arc<Touched>,
    ) -> Self
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let ready: Arc<Vec<AtomicBool>> = Arc::new(apis.iter().map(|_| AtomicBool::new(false)).collect());
        let mut stores = Vec::new();
        for (i, api) in apis.into_iter().enumerate() {
            let writer = reflector::store::Writer::new(dyntype.clone());
            let store = writer.as_reader();
            stores.push(store.clone());
            let (touched, ready) = (touched.clone(), ready.clone());
            tokio::spawn(async move {
                // Only what the daemon reads is kept: managed fields and the last-applied
                // annotation are most of an object's size and never read.
                let slim = watcher(api, watcher::Config::default()).default_backoff().map_ok(move |event| {
                    let slim = |mut o: K| {
                        let meta = o.meta_mut();
                        meta.managed_fields = None;
                        if let Some(a) = meta.annotations.as_mut() {
                            a.remove("kubectl.kubernetes.io/last-applied-configuration");
                        }
                        keep(o)
                    };
                    match event {
                        watcher::Event::Apply(o) => watcher::Event::Apply(slim(o)),
                        watcher::Event::Delete(o) => watcher::Event::Delete(slim(o)),
                        watcher::Event::Init => watcher::Event::Init,
                        watcher::Event::InitApply(o) => watcher::Event::InitApply(slim(o)),
                        watcher::Event::InitDone => watcher::Event::InitDone,
                    }
                });
                let stream = reflector::reflector(writer, slim);
                let mut events = std::pin::pin!(stream.touched_objects());
                while let Some(event) = events.next().await {
                    match event {
                        Ok(obj) => {
                            let ns = obj.namespace().unwrap_or_default();
                            let name = obj.name().unwrap_or_default();
                            touched.add(format!("{kind}:{ns}/{name}"));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, watch = kind, "watch failed; retrying with backoff")
                        }
                    }
                }
            });
            let ready_flag = ready.clone();
            tokio::spawn(async move {
                if store.wait_until_ready().await.is_ok() {
                    ready_flag[i].store(true, Ordering::Relaxed);
                }
            });
        }
        Reflected { stores, dyntype, ready }
    }
}

impl<S> Reflected<S>
where
    S: Lookup + Clone + 'static,
    S::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn is_ready(&self) -> bool {
        self.ready.iter().all(|r| r.load(Ordering::Relaxed))
    }

    /// The cached object, or `None` when the caches are not ready yet (read the API instead).
    /// `Some(None)`: the object does not exist.
    fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<S>>> {
        if !self.is_ready() {
            return None;
        }
        let key = ObjectRef::new_with(name, self.dyntype.clone()).within(namespace);
        Some(self.stores.iter().find_map(|s| s.get(&key)))
    }

    fn in_namespace(&self, namespace: &str) -> Option<Vec<Arc<S>>> {
        if !self.is_ready() {
            return None;
        }
        Some(
            self.stores
                .iter()
                .flat_map(|s| s.state())
                .filter(|o| o.namespace().as_deref() == Some(namespace))
                .collect(),
        )
    }

    fn all(&self) -> Option<Vec<Arc<S>>> {
        self.is_ready().then(|| self.stores.iter().flat_map(|s| s.state()).collect())
    }
}

/// The watch caches of one daemon.
pub struct Caches {
    virtual_services: Reflected<Packed<DynamicObject>>,
    deployments: Reflected<Packed<Deployment>>,
    destination_rules: Reflected<Packed<DynamicObject>>,
    policies: Option<Reflected<RolloutPolicy>>,
    /// What changed; the loop drains it.
    pub touched: Arc<Touched>,
}

/// The API of `resource` in each of `namespaces` (`None`: cluster-wide).
fn dynamic(
    kind: &'static str,
    client: &kube::Client,
    namespaces: &[Option<String>],
    resource: kube::core::ApiResource,
    touched: &Arc<Touched>,
) -> Reflected<Packed<DynamicObject>> {
    let apis: Vec<Api<DynamicObject>> = namespaces
        .iter()
        .map(|ns| match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        })
        .collect();
    Reflected::start(kind, apis, resource, |o| Packed::pack(&o), touched)
}

/// Unpacks a cached object (`None`: not ready; `Some(None)`: not there).
fn unpacked<K>(found: Option<Option<Arc<Packed<K>>>>) -> Option<Option<Arc<K>>>
where
    K: Lookup + serde::Serialize + serde::de::DeserializeOwned,
{
    found.map(|o| o.and_then(|p| p.unpack()).map(Arc::new))
}

impl Caches {
    /// Starts the watches of `scope` (RolloutPolicies too with `crds`).
    pub fn start(client: &kube::Client, scope: &NamespaceScope, crds: bool) -> Arc<Caches> {
        let touched = Arc::new(Touched::default());
        let namespaces: Vec<Option<String>> = match scope.namespaces() {
            Some(names) => names.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        fn typed<K: kube::Resource<Scope = kube::core::NamespaceResourceScope>>(
            client: &kube::Client,
            namespaces: &[Option<String>],
        ) -> Vec<Api<K>>
        where
            K::DynamicType: Default,
        {
            namespaces
                .iter()
                .map(|ns| match ns {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                })
                .collect()
        }
        Arc::new(Caches {
            virtual_services: dynamic("vs", client, &namespaces, virtual_service_resource(), &touched),
            deployments: Reflected::start(
                "deploy",
                typed(client, &namespaces),
                (),
                |o| Packed::pack(&o),
                &touched,
            ),
            destination_rules: dynamic("dr", client, &namespaces, destination_rule_resource(), &touched),
            policies: crds
                .then(|| Reflected::start("policy", typed(client, &namespaces), (), |o| o, &touched)),
            touched,
        })
    }

    /// A VirtualService from the cache (`None`: not ready, read the API).
    pub fn virtual_service(&self, namespace: &str, name: &str) -> Option<Option<Arc<DynamicObject>>> {
        unpacked(self.virtual_services.get(namespace, name))
    }

    /// A Deployment from the cache (`None`: not ready, read the API).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Option<Arc<Deployment>>> {
        unpacked(self.deployments.get(namespace, name))
    }

    /// The DestinationRules of a namespace (`None`: not ready, list them from the API).
    pub fn destination_rules(&self, namespace: &str) -> Option<Vec<Arc<DynamicObject>>> {
        let packed = self.destination_rules.in_namespace(namespace)?;
        Some(packed.iter().filter_map(|p| p.unpack()).map(Arc::new).collect())
    }

    /// Every RolloutPolicy in scope (`None`: not watched, or not ready).
    pub fn rollout_policies(&self) -> Option<Vec<Arc<RolloutPolicy>>> {
        self.policies.as_ref()?.all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_deployment_unpacks_to_the_same_object_and_template_hash() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "uid": "u-1", "generation": 3,
                         "labels": {"app": "web"}, "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}],
                                             "env": [{"name": "X", "value": ""}], "args": []}],
                             "tolerations": []}
                }
            },
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                       "conditions": [{"type": "Available", "status": "True"}]}
        }))
        .expect("deployment");
        let packed = Packed::pack(&deployment);
        assert_eq!(packed.name().as_deref(), Some("web"));
        assert_eq!(packed.namespace().as_deref(), Some("shop"));
        assert_eq!(packed.resource_version().as_deref(), Some("7"));
        let unpacked = packed.unpack().expect("unpacks");
        assert_eq!(unpacked, deployment);
        let revision =
            |d: &Deployment| super::super::pod_template_revision(&serde_json::to_value(d).expect("json"));
        assert_eq!(revision(&unpacked), revision(&deployment));
    }
}
