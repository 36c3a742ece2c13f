//! Pods as the emulated Deployment controller makes them: named and labelled like a
//! ReplicaSet's pods, owned by their Deployment, Running, and Ready once their time has come.
//! Also the read-side helpers tests (and the mesh emulation) use to see them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::objects;

/// Template annotation that marks a broken release: its pods run but never become ready.
pub const NEVER_READY_ANNOTATION: &str = "emulator.canaryd.io/never-ready";

/// The label the Deployment controller puts on every pod of one template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            // Sorted explicitly: the hash must not depend on how the map was built.
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (k, v) in sorted {
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(v, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for v in a {
                canonical(v, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A stable hash of a pod template, rendered like `pod-template-hash` (up to 10 safe
/// characters). FNV-1a: stable across runs and builds, unlike the std hasher.
pub fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = String::new();
    for _ in 0..10 {
        out.push(SAFE_ALPHABET[(h % SAFE_ALPHABET.len() as u64) as usize] as char);
        h /= SAFE_ALPHABET.len() as u64;
    }
    out
}

/// A random 5-character suffix like the ones generated names get.
pub fn random_suffix() -> String {
    (0..5).map(|_| SAFE_ALPHABET[rand::random::<u32>() as usize % SAFE_ALPHABET.len()] as char).collect()
}

/// Whether a Deployment's template is marked never-ready.
pub fn never_ready(template: &Value) -> bool {
    template["metadata"]["annotations"][NEVER_READY_ANNOTATION].as_str() == Some("true")
}

fn condition(kind: &str, ready: bool, now: &str) -> Value {
    let mut c = json!({"type": kind, "status": if ready { "True" } else { "False" },
                       "lastProbeTime": null, "lastTransitionTime": now});
    if !ready && kind != "PodScheduled" && kind != "Initialized" {
        c["reason"] = json!("ContainersNotReady");
    }
    c
}

/// The status of a running pod, ready or not.
pub fn status(spec: &Value, ip: &str, started: &str, ready: bool) -> Value {
    let now = objects::now();
    let containers: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "ready": ready, "restartCount": 0,
                   "started": true, "state": {"running": {"startedAt": started}}})
        })
        .collect();
    json!({
        "phase": "Running",
        "conditions": [
            condition("PodScheduled", true, started),
            condition("Initialized", true, started),
            condition("ContainersReady", ready, &now),
            condition("Ready", ready, &now),
        ],
        "hostIP": "10.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": started,
        "containerStatuses": containers,
    })
}

/// A new pod of `deployment`'s current template (`hash`), not yet ready.
pub fn new_pod(deployment: &Value, hash: &str, ip: &str) -> Value {
    let md = &deployment["metadata"];
    let template = &deployment["spec"]["template"];
    let name = format!("{}-{hash}-{}", md["name"].as_str().unwrap_or_default(), random_suffix());
    let mut labels = template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.into(), json!(hash));
    let mut metadata = json!({
        "name": name,
        "namespace": md["namespace"],
        "generateName": format!("{}-{hash}-", md["name"].as_str().unwrap_or_default()),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": md["name"], "uid": md["uid"],
            "controller": true, "blockOwnerDeletion": true,
        }],
    });
    if let Some(a) = template["metadata"]["annotations"].as_object().filter(|a| !a.is_empty()) {
        metadata["annotations"] = Value::Object(a.clone());
    }
    let mut spec = template["spec"].as_object().cloned().unwrap_or_else(Map::new);
    spec.insert("nodeName".into(), json!("emulator-node"));
    let spec = Value::Object(spec);
    let status = status(&spec, ip, &objects::now(), false);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status})
}

/// Whether the pod's `Ready` condition is `True` (and it is not being deleted).
pub fn is_ready(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none_or(Value::is_null)
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The uid of the pod's controlling owner, if any.
pub fn owner_uid(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["controller"] == json!(true))
        .and_then(|r| r["uid"].as_str())
}

/// Whether every `(key, value)` of `labels` is on the pod.
pub fn has_labels(pod: &Value, labels: &BTreeMap<String, String>) -> bool {
    let on = &pod["metadata"]["labels"];
    labels.iter().all(|(k, v)| on[k].as_str() == Some(v))
}

/// The `kubectl get pods` columns: name, ready containers, phase, restarts, age.
pub fn table_cells(pod: &Value, age: String) -> Vec<Value> {
    let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == json!(true)).count();
    let restarts: i64 = statuses.iter().map(|s| s["restartCount"].as_i64().unwrap_or(0)).sum();
    let phase = if pod["metadata"].get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
        json!("Terminating")
    } else {
        pod["status"]["phase"].clone()
    };
    vec![
        pod["metadata"]["name"].clone(),
        json!(format!("{ready}/{total}")),
        phase,
        json!(restarts),
        json!(age),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_order_independent() {
        let a = json!({"metadata": {"labels": {"app": "r", "version": "v2"}}, "spec": {"containers": []}});
        let b: Value = serde_json::from_str(
            r#"{"spec":{"containers":[]},"metadata":{"labels":{"version":"v2","app":"r"}}}"#,
        )
        .unwrap();
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
        assert_ne!(template_hash(&a), template_hash(&json!({})));
    }

    #[test]
    fn new_pods_belong_to_their_deployment() {
        let d = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
                       "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                                             "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let p = new_pod(&d, "abc", "10.244.0.1");
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-abc-") && name.len() == "web-abc-".len() + 5, "{name}");
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], "abc");
        assert_eq!(owner_uid(&p), Some("u-1"));
        assert!(!is_ready(&p));
        assert_eq!(table_cells(&p, "1s".into())[1], "0/1");
    }
}
