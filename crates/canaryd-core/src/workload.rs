//! The canary and stable Deployments as the engine needs them: readiness, rollout status the way
//! `kubectl rollout status` judges it, and the exact pod template a copy promotion gives the
//! stable Deployment. Pure functions over the objects' JSON; the daemon reads the objects and
//! hands the engine a [`WorkloadReport`].
//!
//! Why so careful: a Deployment whose `observedGeneration` is current and whose
//! `updatedReplicas` equals its replicas may still have old pods terminating or new ones not
//! ready, and an untouched stable Deployment satisfies both checks. Routing back to it before
//! its pods run the promoted template would serve the old code while saying "promoted".

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Where a Deployment's rollout is, judged like `kubectl rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStatus {
    /// Every replica runs the current template and is available; no old pod is left.
    Complete,
    /// Still rolling; the text says what it waits for.
    Progressing(String),
    /// The controller gave up (`Progressing=False`, reason `ProgressDeadlineExceeded`).
    Stuck(String),
}

impl RolloutStatus {
    /// `kubectl rollout status`'s rules, in its order, on a Deployment's JSON.
    pub fn of(deployment: &Value) -> RolloutStatus {
        let generation = deployment.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        let status = &deployment["status"];
        let num = |field: &str| status.get(field).and_then(Value::as_i64).unwrap_or(0);
        if num("observedGeneration") < generation {
            return RolloutStatus::Progressing("waiting for the controller to observe the new spec".into());
        }
        let stuck = status["conditions"].as_array().and_then(|conds| {
            conds.iter().find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
        });
        if let Some(c) = stuck {
            let message = c["message"].as_str().unwrap_or("progress deadline exceeded");
            return RolloutStatus::Stuck(format!("ProgressDeadlineExceeded: {message}"));
        }
        let want = desired_replicas(deployment);
        let (updated, replicas, available) =
            (num("updatedReplicas"), num("replicas"), num("availableReplicas"));
        if updated < want {
            return RolloutStatus::Progressing(format!("{updated} of {want} replicas updated"));
        }
        if replicas > updated {
            return RolloutStatus::Progressing(format!(
                "{} old replicas pending termination",
                replicas - updated
            ));
        }
        if available < updated {
            return RolloutStatus::Progressing(format!(
                "{available} of {updated} updated replicas available"
            ));
        }
        RolloutStatus::Complete
    }
}

/// `spec.replicas` (the API server defaults it to 1).
pub fn desired_replicas(deployment: &Value) -> i64 {
    deployment.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// How much of a Deployment can take traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// `spec.replicas`.
    pub desired: u32,
    /// Replicas running the current template and available.
    pub available: u32,
}

impl Capacity {
    pub fn of(deployment: &Value) -> Capacity {
        let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        let status = &deployment["status"];
        let num = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
        let desired = desired_replicas(deployment);
        // Available pods of an older template do not count: they run the previous revision.
        let available = if RolloutStatus::of(deployment) == RolloutStatus::Complete {
            num("availableReplicas")
        } else {
            num("availableReplicas").min(num("updatedReplicas")).min(num("readyReplicas").max(0))
        };
        Capacity { desired: clamp(desired), available: clamp(available) }
    }
}

/// What one reconcile read about the policy's Deployments, for the engine
/// ([`Input::Workloads`](crate::engine::Input::Workloads)). Facts only; the engine decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkloadReport {
    /// The canary Deployment: its rollout status and how many of its replicas can serve.
    pub canary_status: Option<RolloutStatus>,
    pub canary: Capacity,
    /// The stable Deployment's `spec.replicas` (the size copy mode scales the canary to).
    pub stable_replicas: u32,
    /// Copy promotion: [`template_hash`] of the template the stable must end up with
    /// ([`copy_template`]), and of the one it has.
    pub copy_target: Option<String>,
    pub stable_template: Option<String>,
    /// The stable Deployment's rollout status.
    pub stable_status: Option<RolloutStatus>,
}

impl WorkloadReport {
    /// The canary can take traffic: its rollout finished and every desired replica is available.
    pub fn canary_ready(&self) -> bool {
        self.canary.desired > 0
            && self.canary.available >= self.canary.desired
            && self.canary_status.as_ref().is_none_or(|s| *s == RolloutStatus::Complete)
    }
}

/// A short stable hash of a pod template (FNV-1a 64 over its canonical JSON: object keys are
/// sorted because serde_json's map is ordered by key), recorded in the rollout state.
pub fn template_hash(template: &Value) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let h = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// Where two pod templates differ, as dotted paths (`metadata.labels.team`): what a mutating
/// admission changed in a copy. Lists compare whole.
pub fn changed_paths(written: &Value, stored: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
        if a == b {
            return;
        }
        match (a.as_object(), b.as_object()) {
            (Some(x), Some(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = Value::Null;
                    let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                    walk(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &path, out);
                }
            }
            _ => out.push(if at.is_empty() { "the whole template".into() } else { at.to_string() }),
        }
    }
    let mut out = Vec::new();
    walk(written, stored, "", &mut out);
    out
}

/// Label keys the stable pods must keep through a copy promotion: those its selector names
/// (`matchLabels` and `matchExpressions`) and those the stable DestinationRule subset selects
/// by. The canary's values for them would move the pods out of their Deployment or subset.
pub fn preserved_label_keys(stable: &Value, stable_subset_labels: &BTreeMap<String, String>) -> Vec<String> {
    let selector = &stable["spec"]["selector"];
    let mut keys: Vec<String> =
        selector["matchLabels"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    if let Some(exprs) = selector["matchExpressions"].as_array() {
        keys.extend(exprs.iter().filter_map(|e| e["key"].as_str().map(str::to_string)));
    }
    keys.extend(stable_subset_labels.keys().cloned());
    keys.sort();
    keys.dedup();
    keys
}

/// The pod template copy promotion gives the stable Deployment: the canary's template, exactly
/// (keys the canary removed are gone), except the [`preserved_label_keys`], which keep the
/// stable template's values (or stay absent where the stable has none).
pub fn copy_template(
    canary: &Value,
    stable: &Value,
    stable_subset_labels: &BTreeMap<String, String>,
) -> Value {
    let mut template = canary["spec"]["template"].clone();
    let stable_labels = stable.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    let labels = template["metadata"]["labels"].as_object_mut().expect("set above");
    for key in preserved_label_keys(stable, stable_subset_labels) {
        match stable_labels.and_then(|l| l.get(&key)) {
            Some(v) => labels.insert(key, v.clone()),
            None => labels.remove(&key),
        };
    }
    template
}

/// The one write of a copy: replace the stable's `spec.template`, guarded by a `test` of the
/// resourceVersion it was computed from (a merge would keep fields the canary removed).
pub fn copy_patch(stable: &Value, template: &Value) -> Value {
    let rv = stable.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
    json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/spec/template", "value": template},
    ])
}

/// Checks, before a rollout starts, that the subsets route where they say: the stable subset
/// selects the stable pods and not the canary's, the canary subset selects the canary pods
/// and — in copy mode — still not the stable pods once they run the canary's template.
/// `Err` says what to change.
pub fn check_subset_labels(
    stable: &Value,
    canary: &Value,
    stable_subset: &BTreeMap<String, String>,
    canary_subset: &BTreeMap<String, String>,
    copy_mode: bool,
) -> Result<(), String> {
    let labels_of = |d: &Value| label_map(&d["spec"]["template"]["metadata"]["labels"]);
    let selects = |subset: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        subset.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let show = |m: &BTreeMap<String, String>| {
        if m.is_empty() {
            "{} (every pod of the host)".to_string()
        } else {
            m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
    };
    let name = |d: &Value| d.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?").to_string();
    let (stable_labels, canary_labels) = (labels_of(stable), labels_of(canary));
    if !selects(stable_subset, &stable_labels) {
        return Err(format!(
            "the stable subset selects {} but Deployment {}'s pods are labelled {}: the stable subset would have no endpoints",
            show(stable_subset), name(stable), show(&stable_labels)
        ));
    }
    if !selects(canary_subset, &canary_labels) {
        return Err(format!(
            "the canary subset selects {} but Deployment {}'s pods are labelled {}: the canary subset would have no endpoints",
            show(canary_subset), name(canary), show(&canary_labels)
        ));
    }
    if selects(stable_subset, &canary_labels) {
        return Err(format!(
            "the stable subset ({}) also selects Deployment {}'s pods: stable traffic would reach the canary; select the subsets by a label that differs (e.g. version)",
            show(stable_subset), name(canary)
        ));
    }
    if selects(canary_subset, &stable_labels) {
        return Err(format!(
            "the canary subset ({}) also selects Deployment {}'s pods: canary traffic would reach the stable; select the subsets by a label that differs (e.g. version)",
            show(canary_subset), name(stable)
        ));
    }
    if copy_mode {
        let copied = copy_template(canary, stable, stable_subset);
        let after = label_map(&copied["metadata"]["labels"]);
        if selects(canary_subset, &after) {
            return Err(format!(
                "copy promotion would give Deployment {}'s pods the labels {}, which the canary subset ({}) selects: after the copy canary traffic would reach the stable pods; select the canary subset by a label the stable subset also uses",
                name(stable), show(&after), show(canary_subset)
            ));
        }
    }
    Ok(())
}

/// A `labels` object as a map (non-string values read as empty).
fn label_map(labels: &Value) -> BTreeMap<String, String> {
    labels
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn changed_paths_name_what_admission_changed() {
        let written = json!({"metadata": {"labels": {"app": "reviews", "version": "v2"}}, "spec": {"containers": [{"image": "r:2"}]}});
        let stored = json!({"metadata": {"labels": {"app": "reviews", "version": "v2", "team": "x"}, "annotations": {"a": "1"}}, "spec": {"containers": [{"image": "r:2@sha256:1"}]}});
        assert_eq!(
            changed_paths(&written, &stored),
            vec!["metadata.annotations", "metadata.labels.team", "spec.containers"]
        );
        assert!(changed_paths(&written, &written).is_empty());
    }

    use super::*;

    fn deployment(name: &str, version: &str, image: &str) -> Value {
        json!({
            "metadata": {"name": name, "generation": 2, "resourceVersion": "41"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "reviews", "version": version}},
                "template": {
                    "metadata": {"labels": {"app": "reviews", "version": version}, "annotations": {"a": "1"}},
                    "spec": {"containers": [{"name": "reviews", "image": image}], "nodeSelector": {"disk": "ssd"}}
                }
            },
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
        })
    }

    fn subset(version: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("version".to_string(), version.to_string())])
    }

    #[test]
    fn rollout_status_follows_kubectl() {
        let done = deployment("reviews-v1", "v1", "r:1");
        assert_eq!(RolloutStatus::of(&done), RolloutStatus::Complete);
        let mut unobserved = done.clone();
        unobserved["metadata"]["generation"] = json!(3);
        assert!(matches!(RolloutStatus::of(&unobserved), RolloutStatus::Progressing(_)));
        let mut terminating = done.clone();
        terminating["status"]["replicas"] = json!(4);
        assert!(
            matches!(RolloutStatus::of(&terminating), RolloutStatus::Progressing(m) if m.contains("old replicas"))
        );
        let mut unavailable = done.clone();
        unavailable["status"]["availableReplicas"] = json!(2);
        assert!(matches!(RolloutStatus::of(&unavailable), RolloutStatus::Progressing(_)));
        let mut stuck = done.clone();
        stuck["status"]["updatedReplicas"] = json!(1);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]);
        assert!(matches!(RolloutStatus::of(&stuck), RolloutStatus::Stuck(m) if m.contains("timed out")));
    }

    #[test]
    fn copy_is_exact_but_keeps_the_stable_selector_and_subset_labels() {
        let stable = deployment("reviews-v1", "v1", "r:1");
        let mut canary = deployment("reviews-v2", "v2", "r:2");
        // The canary removed the nodeSelector and an annotation, and added a label.
        canary["spec"]["template"]["spec"].as_object_mut().unwrap().remove("nodeSelector");
        canary["spec"]["template"]["metadata"].as_object_mut().unwrap().remove("annotations");
        canary["spec"]["template"]["metadata"]["labels"]["track"] = json!("canary");
        let copied = copy_template(&canary, &stable, &subset("v1"));
        assert_eq!(copied["spec"]["containers"][0]["image"], "r:2");
        assert!(copied["spec"].get("nodeSelector").is_none(), "removed keys are removed");
        assert!(copied["metadata"].get("annotations").is_none());
        assert_eq!(
            copied["metadata"]["labels"],
            json!({"app": "reviews", "version": "v1", "track": "canary"})
        );
        // The stable, once copied, hashes equal to the target.
        let mut after = stable.clone();
        after["spec"]["template"] = copied.clone();
        assert_eq!(
            template_hash(&after["spec"]["template"]),
            template_hash(&copy_template(&canary, &after, &subset("v1")))
        );
        assert_ne!(template_hash(&stable["spec"]["template"]), template_hash(&copied));
    }

    #[test]
    fn subset_labels_outside_the_selector_are_kept_too() {
        let mut stable = deployment("reviews-v1", "v1", "r:1");
        stable["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["reviews"]}, {"key": "track", "operator": "DoesNotExist"}]});
        let mut canary = deployment("reviews-v2", "v2", "r:2");
        canary["spec"]["template"]["metadata"]["labels"]["track"] = json!("canary");
        let copied = copy_template(&canary, &stable, &subset("v1"));
        assert_eq!(copied["metadata"]["labels"], json!({"app": "reviews", "version": "v1"}));
    }

    #[test]
    fn copy_patch_replaces_the_template_under_a_resource_version_test() {
        let stable = deployment("reviews-v1", "v1", "r:1");
        let patch = copy_patch(&stable, &json!({"spec": {}}));
        assert_eq!(patch[0], json!({"op": "test", "path": "/metadata/resourceVersion", "value": "41"}));
        assert_eq!(patch[1]["op"], "replace");
        assert_eq!(patch[1]["path"], "/spec/template");
    }

    #[test]
    fn subsets_that_would_misroute_are_refused() {
        let stable = deployment("reviews-v1", "v1", "r:1");
        let canary = deployment("reviews-v2", "v2", "r:2");
        assert_eq!(check_subset_labels(&stable, &canary, &subset("v1"), &subset("v2"), true), Ok(()));
        let app_only = BTreeMap::from([("app".to_string(), "reviews".to_string())]);
        let err = check_subset_labels(&stable, &canary, &app_only, &subset("v2"), false).unwrap_err();
        assert!(err.contains("stable traffic would reach the canary"), "{err}");
        let err = check_subset_labels(&stable, &canary, &subset("v1"), &subset("v3"), false).unwrap_err();
        assert!(err.contains("no endpoints"), "{err}");
        // The canary subset selects by a label only the canary template carries and the
        // copy does not preserve: after the copy, the stable pods carry it too.
        let mut tracked = canary.clone();
        tracked["spec"]["template"]["metadata"]["labels"]["track"] = json!("canary");
        let by_track = BTreeMap::from([("track".to_string(), "canary".to_string())]);
        assert_eq!(check_subset_labels(&stable, &tracked, &subset("v1"), &by_track, false), Ok(()));
        let err = check_subset_labels(&stable, &tracked, &subset("v1"), &by_track, true).unwrap_err();
        assert!(err.contains("copy promotion"), "{err}");
    }

    #[test]
    fn capacity_counts_only_pods_of_the_current_template() {
        let mut d = deployment("reviews-v2", "v2", "r:2");
        assert_eq!(Capacity::of(&d), Capacity { desired: 3, available: 3 });
        d["status"]["updatedReplicas"] = json!(1);
        assert_eq!(Capacity::of(&d), Capacity { desired: 3, available: 1 });
        d["spec"]["replicas"] = json!(0);
        d["status"] = json!({"observedGeneration": 2});
        let report = WorkloadReport { canary: Capacity::of(&d), ..Default::default() };
        assert!(!report.canary_ready());
    }
}
