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
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
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

/// One reflector per kind and namespace.
struct Reflected<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores: Vec<Store<K>>,
    dyntype: K::DynamicType,
    ready: Arc<Vec<AtomicBool>>,
}

impl<K> Reflected<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    fn start(kind: &'static str, apis: Vec<Api<K>>, dyntype: K::DynamicType, touched: &Arc<Touched>) -> Self {
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
                let slim = watcher(api, watcher::Config::default()).default_backoff().modify(|o: &mut K| {
                    let meta = o.meta_mut();
                    meta.managed_fields = None;
                    if let Some(a) = meta.annotations.as_mut() {
                        a.remove("kubectl.kubernetes.io/last-applied-configuration");
                    }
                });
                let stream = reflector::reflector(writer, slim);
                let mut events = std::pin::pin!(stream.touched_objects());
                while let Some(event) = events.next().await {
                    match event {
                        Ok(obj) => {
                            let meta = obj.meta();
                            let ns = meta.namespace.as_deref().unwrap_or_default();
                            let name = meta.name.as_deref().unwrap_or_default();
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

impl<K> Reflected<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn is_ready(&self) -> bool {
        self.ready.iter().all(|r| r.load(Ordering::Relaxed))
    }

    /// The cached object, or `None` when the caches are not ready yet (read the API instead).
    /// `Some(None)`: the object does not exist.
    fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<K>>> {
        if !self.is_ready() {
            return None;
        }
        let key = ObjectRef::new_with(name, self.dyntype.clone()).within(namespace);
        Some(self.stores.iter().find_map(|s| s.get(&key)))
    }

    fn in_namespace(&self, namespace: &str) -> Option<Vec<Arc<K>>> {
        if !self.is_ready() {
            return None;
        }
        Some(
            self.stores
                .iter()
                .flat_map(|s| s.state())
                .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
                .collect(),
        )
    }

    fn all(&self) -> Option<Vec<Arc<K>>> {
        self.is_ready().then(|| self.stores.iter().flat_map(|s| s.state()).collect())
    }
}

/// The watch caches of one daemon.
pub struct Caches {
    virtual_services: Reflected<DynamicObject>,
    deployments: Reflected<Deployment>,
    destination_rules: Reflected<DynamicObject>,
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
) -> Reflected<DynamicObject> {
    let apis: Vec<Api<DynamicObject>> = namespaces
        .iter()
        .map(|ns| match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        })
        .collect();
    Reflected::start(kind, apis, resource, touched)
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
            deployments: Reflected::start("deploy", typed(client, &namespaces), (), &touched),
            destination_rules: dynamic("dr", client, &namespaces, destination_rule_resource(), &touched),
            policies: crds.then(|| Reflected::start("policy", typed(client, &namespaces), (), &touched)),
            touched,
        })
    }

    /// A VirtualService from the cache (`None`: not ready, read the API).
    pub fn virtual_service(&self, namespace: &str, name: &str) -> Option<Option<Arc<DynamicObject>>> {
        self.virtual_services.get(namespace, name)
    }

    /// A Deployment from the cache (`None`: not ready, read the API).
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Option<Arc<Deployment>>> {
        self.deployments.get(namespace, name)
    }

    /// The DestinationRules of a namespace (`None`: not ready, list them from the API).
    pub fn destination_rules(&self, namespace: &str) -> Option<Vec<Arc<DynamicObject>>> {
        self.destination_rules.in_namespace(namespace)
    }

    /// Every RolloutPolicy in scope (`None`: not watched, or not ready).
    pub fn rollout_policies(&self) -> Option<Vec<Arc<RolloutPolicy>>> {
        self.policies.as_ref()?.all()
    }
}
