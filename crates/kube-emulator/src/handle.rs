//! Starting the emulator and the handle tests drive it with: clients, kubeconfigs, fixtures,
//! faults, the request log, RBAC and rollout progress.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::deployments::{self, RolloutMode};
use super::error::ApiError;
use super::faults::{Fault, FaultKind, RequestRecord};
use super::objects::{self, as_version, Target, WriteOpts};
use super::rbac::Rbac;
use super::resources::{Registry, ResourceInfo};
use super::selectors::Selector;
use super::server::{self, App};
use super::store::{Key, Store};
use super::{builtin_crds, parse_yaml_docs, watch, EmulatorError, Inner, Shared};
use super::{controller, pods};

/// Entry point: `Emulator::start().await`.
pub struct Emulator;

/// A running emulator. Dropping it stops the server.
pub struct EmulatorHandle {
    shared: Shared,
    url: String,
    task: Option<JoinHandle<()>>,
    /// The Deployment controller's ticker, while `RolloutMode::Controlled` asks for one.
    ticker: Mutex<Option<JoinHandle<()>>>,
}

/// Field manager used for fixtures written through the handle.
const FIXTURE_MANAGER: &str = "emulator-fixture";

impl Emulator {
    /// Starts an emulator on `127.0.0.1` with a random port, the built-in resources, the
    /// embedded Istio and Gateway API CRDs, and the `default`, `kube-system` and
    /// `kube-public` namespaces.
    pub async fn start() -> Result<EmulatorHandle, EmulatorError> {
        let inner = Inner {
            store: Store::default(),
            registry: Registry::with_builtins(),
            faults: vec![],
            mutations: vec![],
            log: vec![],
            rbac: None,
            rollout: RolloutMode::Instant,
            controller: Default::default(),
            open_watches: vec![],
            next_watch_id: 0,
        };
        let shared: Shared = Arc::new(Mutex::new(inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let app = App { shared: shared.clone(), addr: addr.clone() };
        let router = axum::Router::new().fallback(server::handle).with_state(app);
        let task = tokio::spawn(async move {
            // Serving ends only when the task is aborted by shutdown or drop.
            let _ = axum::serve(listener, router).await;
        });
        let handle = EmulatorHandle {
            shared,
            url: format!("http://{addr}"),
            task: Some(task),
            ticker: Mutex::new(None),
        };
        for ns in ["default", "kube-system", "kube-public"] {
            handle.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
        }
        for crd in builtin_crds::parsed() {
            handle.apply_value(crd.clone())?;
        }
        Ok(handle)
    }
}

fn kubeconfig(url: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("    token: {t}\n"),
        None => "    {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\n\
         contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\n\
         current-context: emulator\nusers:\n- name: emulator\n  user:\n{user}"
    )
}

impl EmulatorHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.lock().expect("emulator lock")
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A kube client pointed at the emulator, without credentials. Call inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        self.make_client(None)
    }

    /// A kube client that authenticates with `token` (the emulator's user name for it).
    pub fn client_as(&self, token: &str) -> kube::Client {
        self.make_client(Some(token))
    }

    fn make_client(&self, token: Option<&str>) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("emulator URL is a valid URI"));
        config.default_namespace = "default".into();
        config.auth_info.token = token.map(|t| secrecy::SecretString::from(t.to_string()));
        kube::Client::try_from(config).expect("plain-HTTP kube client")
    }

    /// Writes a kubeconfig for `kubectl --kubeconfig <path>` (no credentials).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), EmulatorError> {
        Ok(std::fs::write(path, kubeconfig(&self.url, None))?)
    }

    /// Writes a kubeconfig that makes kubectl act as user `token`.
    ///
    /// client-go sends kubeconfig credentials only over TLS, so a plain-HTTP kubeconfig token
    /// would be silently dropped. Instead the token goes into the server URL's userinfo, which
    /// Go's HTTP client sends as Basic auth; the emulator takes that user name as the token.
    pub fn write_kubeconfig_as(&self, path: impl AsRef<Path>, token: &str) -> Result<(), EmulatorError> {
        let url = self.url.replacen("http://", &format!("http://{token}:x@"), 1);
        Ok(std::fs::write(path, kubeconfig(&url, Some(token)))?)
    }

    /// Stops serving. Open watch streams end.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.ticker.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Creates or replaces every object in a multi-document YAML string, with the same
    /// validation as the API (CRD documents register their resources). Namespaced objects
    /// without a namespace go to `default`; missing namespaces are created, unlike over HTTP.
    /// Returns the stored objects.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, EmulatorError> {
        parse_yaml_docs(yaml)?.into_iter().map(|d| self.apply_value(d)).collect()
    }

    /// Creates or replaces one object given as JSON.
    pub fn apply_value(&self, mut obj: Value) -> Result<Value, EmulatorError> {
        let mut inner = self.lock();
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let info = inner
            .registry
            .find_kind(&api_version, &kind)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("no resource serves {api_version} {kind}")))?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let namespace = if info.namespaced {
            obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string()
        } else {
            String::new()
        };
        if info.namespaced {
            let ns_key = Key {
                group: String::new(),
                resource: "namespaces".into(),
                namespace: String::new(),
                name: namespace.clone(),
            };
            if inner.store.get(&ns_key).is_none() {
                let ns_info = inner.registry.find("", "v1", "namespaces").cloned().expect("built-in");
                let t = Target { info: &ns_info, namespace: "", name: "", subresource: "" };
                let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
                objects::create(&mut inner, &t, ns, &fixture_opts())?;
            }
        }
        let t = Target { info: &info, namespace: &namespace, name: &name, subresource: "" };
        let live = inner.store.get(&t.key(&name)).cloned();
        let written = match live {
            None => objects::create(&mut inner, &t, obj, &fixture_opts())?,
            Some(live) => {
                obj["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
                if info.status_subresource && obj.get("status").is_some() {
                    // Fixtures may set status directly, which the main resource would ignore.
                    let status = Target {
                        subresource: "status",
                        ..Target { info: &info, namespace: &namespace, name: &name, subresource: "" }
                    };
                    objects::update(&mut inner, &status, obj.clone(), &fixture_opts())?;
                    obj["metadata"]["resourceVersion"] = inner
                        .store
                        .get(&t.key(&name))
                        .map(|o| o["metadata"]["resourceVersion"].clone())
                        .unwrap_or_default();
                }
                objects::update(&mut inner, &t, obj, &fixture_opts())?
            }
        };
        Ok(written.object)
    }

    /// The stored object at `group/version/resource`, namespace (empty for cluster-scoped)
    /// and name, presented in `version`.
    pub fn get(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let inner = self.lock();
        let info = inner.registry.find(group, version, resource)?.clone();
        let key = Key {
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        inner.store.get(&key).cloned().map(|o| as_version(&info, o))
    }

    /// All objects of a resource (any version), optionally in one namespace.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.lock().store.list(group, resource, namespace).into_iter().cloned().collect()
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, group: &str, resource: &str, namespace: &str, name: &str) -> bool {
        let mut inner = self.lock();
        let Some(info) = inner.registry.find_any_version(group, resource).cloned() else {
            return false;
        };
        let t = Target { info: &info, namespace, name, subresource: "" };
        objects::delete(&mut inner, &t).is_ok()
    }

    /// The served resources (for introspection and demos).
    pub fn resources(&self) -> Vec<ResourceInfo> {
        self.lock().registry.all().to_vec()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().store.current_rv()
    }

    /// Forgets watch history, so resuming from any older resourceVersion gets 410 Expired.
    pub fn compact(&self) {
        self.lock().store.compact();
    }

    /// Adds a fault. A `DropWatch` fault first ends matching open watches.
    pub fn inject(&self, mut fault: Fault) {
        let mut inner = self.lock();
        if fault.kind == FaultKind::DropWatch {
            watch::drop_open(&mut inner, &mut fault);
        }
        inner.faults.retain(|f| f.times > 0);
        inner.faults.push(fault);
    }

    /// Adds a mutating admission rule: every later write of the matching objects is changed by
    /// it before validation and storage, as a mutating webhook would.
    pub fn add_mutation(&self, mutation: crate::admission::Mutation) {
        self.lock().mutations.push(mutation);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.lock().faults.iter().filter(|f| f.times > 0).cloned().collect()
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Turns on authorization: only bearer tokens granted by `rbac` may touch resources.
    /// Discovery stays open to everyone. Fixture access through the handle is not checked.
    pub fn enable_rbac(&self, rbac: Rbac) {
        self.lock().rbac = Some(rbac);
    }

    /// How the simulated Deployment controller finishes rollouts from now on.
    ///
    /// `RolloutMode::Controlled(config)` turns on the Deployment controller (pods, rolling
    /// updates, status from pods). With a non-zero `config.tick` and a Tokio runtime around, a
    /// background ticker syncs it every tick with real elapsed time; with `tick` zero only
    /// `advance_controller` moves it, which makes rollouts deterministic in unit tests.
    pub fn set_rollout_mode(&self, mode: RolloutMode) {
        self.lock().rollout = mode;
        let mut ticker = self.ticker.lock().expect("ticker lock");
        if let Some(t) = ticker.take() {
            t.abort();
        }
        let RolloutMode::Controlled(cfg) = mode else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if cfg.tick.is_zero() {
            return;
        }
        let shared = self.shared.clone();
        *ticker = Some(runtime.spawn(async move {
            let mut interval = tokio::time::interval(cfg.tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = tokio::time::Instant::now();
            loop {
                interval.tick().await;
                let now = tokio::time::Instant::now();
                let elapsed = now - last;
                last = now;
                controller::advance(&mut shared.lock().expect("emulator lock"), elapsed);
            }
        }));
    }

    /// Moves the Deployment controller's clock by `elapsed` and lets it sync until nothing
    /// more changes at that instant (pods created, readied, deleted; status written). A no-op
    /// unless the rollout mode is `Controlled`. `advance_controller(Duration::ZERO)` just syncs.
    pub fn advance_controller(&self, elapsed: Duration) {
        controller::advance(&mut self.lock(), elapsed);
    }

    /// Pods in `namespace` matching `label_selector` (the `labelSelector` query syntax;
    /// empty for all), ordered by name.
    ///
    /// # Panics
    /// If the selector does not parse (a bug in the calling test).
    pub fn pods(&self, namespace: &str, label_selector: &str) -> Vec<Value> {
        let selector = Selector::parse(Some(label_selector).filter(|s| !s.is_empty()), None)
            .unwrap_or_else(|e| panic!("label selector {label_selector:?}: {}", e.message));
        let inner = self.lock();
        inner
            .store
            .list("", "pods", Some(namespace))
            .into_iter()
            .filter(|p| selector.matches(p))
            .cloned()
            .collect()
    }

    /// The endpoints traffic would reach for a subset: Ready pods (not being deleted) in
    /// `namespace` whose labels include every entry of `labels` (e.g. a DestinationRule
    /// subset's labels plus the Service selector). Pods of a template annotated
    /// `emulator.canaryd.io/never-ready: "true"` never appear. Each item is the pod object;
    /// its address is `status.podIP`.
    pub fn ready_endpoints(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<Value> {
        let inner = self.lock();
        inner
            .store
            .list("", "pods", Some(namespace))
            .into_iter()
            .filter(|p| pods::is_ready(p) && pods::has_labels(p, labels))
            .cloned()
            .collect()
    }

    /// Sets how many replicas of a deployment run the newest template (clamped to
    /// `spec.replicas`; equal means the rollout is finished). Emits a watch event.
    pub fn set_rollout_progress(
        &self,
        namespace: &str,
        name: &str,
        updated_replicas: u32,
    ) -> Result<Value, EmulatorError> {
        let mut inner = self.lock();
        let key = Key {
            group: "apps".into(),
            resource: "deployments".into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let Some(mut d) = inner.store.get(&key).cloned() else {
            return Err(ApiError::not_found(&super::error::Subject {
                group: "apps",
                resource: "deployments",
                name,
            })
            .into());
        };
        d["status"] = deployments::status_with(&d, i64::from(updated_replicas));
        Ok(inner.store.put(key, d))
    }
}

fn fixture_opts() -> WriteOpts {
    WriteOpts { field_manager: Some(FIXTURE_MANAGER.into()), ..WriteOpts::default() }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
