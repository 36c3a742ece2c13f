//! The Deployment controller of `RolloutMode::Controlled`: pods per Deployment, rolling
//! updates bounded by maxSurge/maxUnavailable, and status (counts, `Available`,
//! `Progressing`, the progress deadline) computed from the pods, as kube-controller-manager
//! does. Every change goes through the normal write path, so watches see it and
//! resourceVersions move; `observedGeneration` moves only when the controller has synced.
//!
//! Time is virtual: `advance` moves the controller's clock, so tests can step a rollout
//! deterministically; the handle's ticker feeds it real elapsed time instead. ReplicaSets are
//! not modelled: pods are owned by their Deployment and grouped by `pod-template-hash`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::objects::{self, Target, WriteOpts};
use super::pods::{self, POD_TEMPLATE_HASH};
use super::resources::ResourceInfo;
use super::store::Key;
use super::Inner;

/// Timing of the emulated Deployment controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// How long a new pod takes to become Ready (unless its template is marked never-ready).
    pub ready_after: Duration,
    /// Progress deadline for Deployments without `spec.progressDeadlineSeconds`.
    pub progress_deadline: Duration,
    /// How often the handle's background ticker syncs; zero starts no ticker, leaving the
    /// controller to `EmulatorHandle::advance_controller` alone.
    pub tick: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            ready_after: Duration::from_secs(1),
            progress_deadline: Duration::from_secs(600),
            tick: Duration::from_millis(100),
        }
    }
}

/// When a Deployment last made progress, on the controller's clock.
struct Progress {
    at: Duration,
    generation: i64,
}

/// What the controller remembers between syncs.
#[derive(Default)]
pub(crate) struct State {
    /// Virtual time since the controller first ran.
    clock: Duration,
    /// Creation time of each pod, on the virtual clock.
    born: HashMap<Key, Duration>,
    /// Progress per Deployment uid.
    progress: HashMap<String, Progress>,
    next_ip: u32,
}

/// Field manager of the controller's writes, as on a real cluster.
const MANAGER: &str = "kube-controller-manager";

/// Upper bound of sync rounds in one `advance`: each round either changes something or ends
/// the loop, so this only guards against a bug spinning forever.
const MAX_ROUNDS: usize = 10_000;

fn opts() -> WriteOpts {
    WriteOpts { field_manager: Some(MANAGER.into()), ..WriteOpts::default() }
}

/// Moves the controller's clock by `elapsed` and syncs every Deployment until nothing more
/// changes at this instant. Does nothing unless the rollout mode is `Controlled`.
pub(crate) fn advance(inner: &mut Inner, elapsed: Duration) {
    let super::RolloutMode::Controlled(cfg) = inner.rollout else {
        return;
    };
    inner.controller.clock += elapsed;
    for _ in 0..MAX_ROUNDS {
        if !sync_all(inner, &cfg) {
            break;
        }
    }
}

fn infos(inner: &Inner) -> (ResourceInfo, ResourceInfo) {
    let pods = inner.registry.find("", "v1", "pods").cloned().expect("pods are built in");
    let deploys = inner.registry.find("apps", "v1", "deployments").cloned().expect("built in");
    (pods, deploys)
}

/// One round over all Deployments; whether any pod changed.
fn sync_all(inner: &mut Inner, cfg: &ControllerConfig) -> bool {
    let (pod_info, deploy_info) = infos(inner);
    let deployments: Vec<Value> =
        inner.store.list("apps", "deployments", None).into_iter().cloned().collect();
    let uids: HashSet<&str> = deployments.iter().filter_map(|d| d["metadata"]["uid"].as_str()).collect();
    // The garbage collector: pods whose Deployment is gone go too.
    let orphans: Vec<Value> = inner
        .store
        .list("", "pods", None)
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
                && pods::owner_uid(p).is_some_and(|u| !uids.contains(u))
        })
        .cloned()
        .collect();
    let mut changed = !orphans.is_empty();
    for p in &orphans {
        delete_pod(inner, &pod_info, p);
    }
    inner.controller.progress.retain(|uid, _| uids.contains(uid.as_str()));
    // Pods can also go with their namespace; forget those.
    let live: HashSet<Key> = inner.store.keys_of("", "pods", None).into_iter().collect();
    inner.controller.born.retain(|k, _| live.contains(k));
    for d in &deployments {
        if d["metadata"].get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
            continue;
        }
        changed |= sync_one(inner, cfg, &pod_info, &deploy_info, d);
    }
    changed
}

fn ns_name(obj: &Value) -> (&str, &str) {
    (
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn pod_key(p: &Value) -> Key {
    let (namespace, name) = ns_name(p);
    Key { group: String::new(), resource: "pods".into(), namespace: namespace.into(), name: name.into() }
}

fn delete_pod(inner: &mut Inner, info: &ResourceInfo, p: &Value) {
    let (namespace, name) = ns_name(p);
    let t = Target { info, namespace, name, subresource: "" };
    // Already gone is fine: the goal is that it does not exist.
    let _ = objects::delete(inner, &t);
    inner.controller.born.remove(&pod_key(p));
}

fn create_pod(inner: &mut Inner, info: &ResourceInfo, d: &Value, hash: &str) {
    let n = inner.controller.next_ip;
    inner.controller.next_ip += 1;
    let ip = format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2);
    let pod = pods::new_pod(d, hash, &ip);
    let t = Target { info, namespace: ns_name(d).0, name: "", subresource: "" };
    if let Ok(w) = objects::create(inner, &t, pod, &opts()) {
        let clock = inner.controller.clock;
        inner.controller.born.insert(pod_key(&w.object), clock);
    }
}

/// `maxSurge` or `maxUnavailable`: an int, or a percentage of `want` rounded up (surge) or
/// down (unavailable), as the Deployment controller resolves them.
fn resolve(v: &Value, want: i64, default_pct: i64, round_up: bool) -> i64 {
    let pct = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()).unwrap_or(default_pct),
        _ => default_pct,
    };
    let scaled = pct * want;
    if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    }
}

/// (maxSurge, maxUnavailable) for `want` replicas; never both zero.
fn rolling_params(d: &Value, want: i64) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    if d["spec"]["strategy"]["type"] == "Recreate" {
        // Recreate: everything old goes before anything new comes.
        return (0, want.max(1));
    }
    let surge = resolve(&ru["maxSurge"], want, 25, true);
    let unavailable = resolve(&ru["maxUnavailable"], want, 25, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Pods to remove first when scaling down: not ready before ready, newest before oldest.
fn deletion_order(mut pods: Vec<Value>, born: &HashMap<Key, Duration>) -> Vec<Value> {
    pods.sort_by_key(|p| (pods::is_ready(p), std::cmp::Reverse(born.get(&pod_key(p)).copied())));
    pods
}

/// Marks pods whose time has come Ready; whether any changed.
fn update_readiness(inner: &mut Inner, cfg: &ControllerConfig, info: &ResourceInfo, owned: &[Value]) -> bool {
    let mut changed = false;
    for p in owned {
        if pods::is_ready(p) || pods::never_ready(p) {
            continue;
        }
        let clock = inner.controller.clock;
        let born = *inner.controller.born.entry(pod_key(p)).or_insert(clock);
        if clock.saturating_sub(born) < cfg.ready_after {
            continue;
        }
        let mut ready = p.clone();
        let started = p["status"]["startTime"].as_str().unwrap_or_default().to_string();
        let ip = p["status"]["podIP"].as_str().unwrap_or_default().to_string();
        ready["status"] = pods::status(&p["spec"], &ip, &started, true);
        let (namespace, name) = ns_name(p);
        let t = Target { info, namespace, name, subresource: "" };
        changed |= objects::update(inner, &t, ready, &opts()).is_ok();
    }
    changed
}

/// Creates and deletes pods of one Deployment toward its spec; whether any changed.
fn scale(inner: &mut Inner, info: &ResourceInfo, d: &Value, hash: &str, owned: Vec<Value>) -> bool {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let (new, old): (Vec<Value>, Vec<Value>) =
        owned.into_iter().partition(|p| p["metadata"]["labels"][POD_TEMPLATE_HASH] == hash);
    let count = |v: &[Value]| v.len() as i64;
    let ready = |v: &[Value]| v.iter().filter(|p| pods::is_ready(p)).count() as i64;
    let remove = |inner: &mut Inner, pods: Vec<Value>, n: i64| {
        let order = deletion_order(pods, &inner.controller.born);
        for p in order.iter().take(n.max(0) as usize) {
            delete_pod(inner, info, p);
        }
        n > 0
    };
    if want == 0 {
        let mut all = new;
        all.extend(old);
        let n = count(&all);
        return remove(inner, all, n);
    }
    if count(&new) > want {
        let n = count(&new) - want;
        return remove(inner, new, n);
    }
    let (surge, unavailable) = rolling_params(d, want);
    let total = count(&new) + count(&old);
    let room =
        if old.is_empty() { want - count(&new) } else { (want + surge - total).min(want - count(&new)) };
    if room > 0 {
        for _ in 0..room {
            create_pod(inner, info, d, hash);
        }
        // Like the real controller, scale-up and scale-down happen in separate syncs.
        return true;
    }
    if old.is_empty() {
        return false;
    }
    let min_available = want - unavailable;
    let new_unavailable = count(&new) - ready(&new);
    let budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return false;
    }
    // Old pods that are not ready serve nothing: they go first, within the budget.
    let (old_unready, old_ready): (Vec<Value>, Vec<Value>) =
        old.into_iter().partition(|p| !pods::is_ready(p));
    let n = count(&old_unready).min(budget);
    let mut changed = remove(inner, old_unready, n);
    let available = ready(&new) + count(&old_ready);
    let n = (available - min_available).min(count(&old_ready));
    changed |= remove(inner, old_ready, n);
    changed
}

fn owned_pods(inner: &Inner, namespace: &str, uid: &str) -> Vec<Value> {
    inner
        .store
        .list("", "pods", Some(namespace))
        .into_iter()
        .filter(|p| pods::owner_uid(p) == Some(uid))
        .cloned()
        .collect()
}

fn sync_one(
    inner: &mut Inner,
    cfg: &ControllerConfig,
    pod_info: &ResourceInfo,
    deploy_info: &ResourceInfo,
    d: &Value,
) -> bool {
    let (namespace, _) = ns_name(d);
    let uid = d["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let hash = pods::template_hash(&d["spec"]["template"]);
    let owned = owned_pods(inner, namespace, &uid);
    let mut changed = update_readiness(inner, cfg, pod_info, &owned);
    if !changed && d["spec"]["paused"] != json!(true) {
        changed = scale(inner, pod_info, d, &hash, owned);
    }
    let owned = owned_pods(inner, namespace, &uid);
    write_status(inner, cfg, deploy_info, d, &hash, &owned);
    changed
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    prev: Option<&Value>,
    touched: bool,
) -> Value {
    let now = objects::now();
    let status = if status { "True" } else { "False" };
    let same = |f: &str, v: &str| prev.is_some_and(|p| p[f] == v);
    let transition =
        if same("status", status) { prev.map(|p| p["lastTransitionTime"].clone()) } else { None };
    let update = if !touched && same("status", status) && same("reason", reason) {
        prev.map(|p| p["lastUpdateTime"].clone())
    } else {
        None
    };
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastUpdateTime": update.unwrap_or_else(|| json!(now)),
           "lastTransitionTime": transition.unwrap_or_else(|| json!(now))})
}

/// Computes the Deployment's status from its pods and writes it through `/status`.
fn write_status(
    inner: &mut Inner,
    cfg: &ControllerConfig,
    info: &ResourceInfo,
    d: &Value,
    hash: &str,
    owned: &[Value],
) {
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let (namespace, name) = ns_name(d);
    let replicas = owned.len() as i64;
    let updated = owned.iter().filter(|p| p["metadata"]["labels"][POD_TEMPLATE_HASH] == hash).count() as i64;
    let ready = owned.iter().filter(|p| pods::is_ready(p)).count() as i64;
    let prev = &d["status"];
    let prev_n = |f: &str| prev[f].as_i64().unwrap_or(0);
    let progressed = updated > prev_n("updatedReplicas")
        || replicas - updated < prev_n("replicas") - prev_n("updatedReplicas")
        || ready > prev_n("readyReplicas")
        || ready > prev_n("availableReplicas");
    let clock = inner.controller.clock;
    let uid = d["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let entry = inner.controller.progress.entry(uid).or_insert(Progress { at: clock, generation });
    let new_generation = entry.generation != generation;
    if progressed || new_generation {
        *entry = Progress { at: clock, generation };
    }
    let since = clock.saturating_sub(entry.at);
    let deadline = d["spec"]["progressDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs)
        .unwrap_or(cfg.progress_deadline);
    let (_, unavailable) = rolling_params(d, want);
    let conds: Vec<Value> = prev["conditions"].as_array().cloned().unwrap_or_default();
    let prev_cond = |t: &str| conds.iter().find(|c| c["type"] == t);
    let available = if ready >= want - unavailable {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            prev_cond("Available"),
            false,
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            prev_cond("Available"),
            false,
        )
    };
    let rs = format!("{name}-{hash}");
    let complete = updated == want && replicas == want && ready == want;
    let prev_progressing = prev_cond("Progressing");
    let progressing = if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs}\" has successfully progressed."),
            prev_progressing,
            false,
        )
    } else if !progressed && !new_generation && since > deadline {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs}\" has timed out progressing."),
            prev_progressing,
            false,
        )
    } else {
        let touched = progressed || new_generation;
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs}\" is progressing."),
            prev_progressing,
            touched,
        )
    };
    // Zero counts are omitted, as the apiserver's JSON (omitempty) does.
    let mut status = json!({"observedGeneration": generation});
    for (field, n) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", ready),
        ("unavailableReplicas", (replicas - ready).max(0)),
    ] {
        if n > 0 {
            status[field] = json!(n);
        }
    }
    status["conditions"] = json!([available, progressing]);
    let mut body = d.clone();
    body["status"] = status;
    let t = Target { info, namespace, name, subresource: "status" };
    // A conflict cannot happen under the lock; a failure would only mean the object went away.
    let _ = objects::update(inner, &t, body, &opts());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let d = json!({"spec": {}});
        assert_eq!(rolling_params(&d, 4), (1, 1));
        assert_eq!(rolling_params(&d, 2), (1, 0));
        assert_eq!(rolling_params(&d, 1), (1, 0));
        assert_eq!(rolling_params(&d, 10), (3, 2));
        let fixed = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}});
        assert_eq!(rolling_params(&fixed, 3), (0, 1));
    }
}
