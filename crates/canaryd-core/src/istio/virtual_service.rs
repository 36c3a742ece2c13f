//! Pure functions over a VirtualService's JSON: find the policy's route, read its traffic,
//! and build the JSON patch that changes only that route (and canaryd's managed header-match
//! route) plus the state annotation, guarded by a `test` of the resourceVersion.

use crate::plan::Traffic;
use crate::policy::HeaderMatch;
use crate::policy::Policy;
use serde_json::{json, Value};

/// Why a VirtualService cannot be driven by a policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VsError {
    #[error("VirtualService has no spec.http routes")]
    NoHttpRoutes,
    #[error("VirtualService has no HTTP route named {0:?}; routes: {1}")]
    RouteNotFound(String, String),
    #[error("VirtualService has {0} HTTP routes; set spec.target.route to one of: {1}")]
    AmbiguousRoute(usize, String),
    #[error("route {route:?} has no destination with subset {subset:?} (the stable side)")]
    StableNotFound { route: String, subset: String },
    #[error("route {route:?} weights sum to {sum}, not 100")]
    BadWeights { route: String, sum: i64 },
    #[error("the state annotation is not canaryd state: {0}")]
    BadState(String),
}

/// Annotation that holds a policy's rollout state on its VirtualService.
pub fn state_annotation_key(policy: &Policy) -> String {
    annotation_key("state", policy.name())
}

/// Annotation through which `canaryd promote|abort|pause|resume|retry|start` reach the daemon;
/// the daemon removes it in the same write that applies it.
pub fn command_annotation_key(policy: &Policy) -> String {
    annotation_key("command", policy.name())
}

/// The name part of an annotation key is at most 63 characters and must end with a letter or
/// digit. A policy name (a DNS label, up to 63 characters) that does not fit keeps a readable prefix and
/// gets a hash of the whole name, so two long names sharing a prefix never share state and the
/// key is always valid.
fn annotation_key(kind: &str, policy_name: &str) -> String {
    const MAX_NAME: usize = 63;
    let name = format!("{kind}-{policy_name}");
    if name.len() <= MAX_NAME {
        return format!("canaryd.io/{name}");
    }
    let head: String = name.chars().take(MAX_NAME - 9).collect();
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("canaryd.io/{head}-{:08x}", fnv1a32(policy_name))
}

/// FNV-1a, 32 bits: stable across versions and platforms (the key is persisted), no
/// dependency; collisions only matter between two long names with the same 54-character prefix.
fn fnv1a32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The key versions before 0.2 used: the name cut at 50 characters (could end in `-` or `.`,
/// and two long names could share it). Read when the current key is absent, removed on write.
fn legacy_state_annotation_key(policy: &Policy) -> String {
    let name: String = policy.name().chars().take(50).collect();
    format!("canaryd.io/state-{name}")
}

fn managed_route_name(policy: &Policy) -> String {
    format!("canaryd-{}-header", policy.name())
}

/// The policy's view of one VirtualService.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteView {
    /// Index of the policy route in `spec.http`.
    pub index: usize,
    /// Name of the route (or `#index` when unnamed).
    pub name: String,
    /// Resolved destination hosts (stable, canary).
    pub stable_host: String,
    pub canary_host: String,
    /// The traffic as found.
    pub traffic: Traffic,
    /// The raw state annotation, if any.
    pub state: Option<String>,
    /// The pre-0.2 key the state was also found under (long policy names); the next write
    /// moves the state to the current key and removes this one.
    pub legacy_state_key: Option<String>,
    /// A pending operator command (`abort: reason`, `promote`, ...), if any.
    pub command: Option<String>,
    /// metadata.resourceVersion as read.
    pub resource_version: String,
}

impl RouteView {
    /// Reads the policy's route out of a VirtualService object.
    pub fn read(vs: &Value, policy: &Policy) -> Result<RouteView, VsError> {
        let http = vs.pointer("/spec/http").and_then(Value::as_array).ok_or(VsError::NoHttpRoutes)?;
        let managed = managed_route_name(policy);
        let names: Vec<String> = http.iter().enumerate().map(|(i, r)| route_name(r, i)).collect();
        let candidates: Vec<usize> = (0..http.len()).filter(|i| names[*i] != managed).collect();
        let index = match &policy.spec().target.route {
            Some(want) => *candidates
                .iter()
                .find(|i| names[**i] == *want)
                .ok_or_else(|| VsError::RouteNotFound(want.clone(), names.join(", ")))?,
            None => match candidates.as_slice() {
                [only] => *only,
                [] => return Err(VsError::NoHttpRoutes),
                many => return Err(VsError::AmbiguousRoute(many.len(), names.join(", "))),
            },
        };
        let route = &http[index];
        let dests = route.get("route").and_then(Value::as_array).cloned().unwrap_or_default();
        let t = &policy.spec().target;
        let stable_pos = dests
            .iter()
            .position(|d| {
                dest_subset(d) == Some(t.stable.subset.as_str()) && host_ok(d, t.stable.host.as_deref())
            })
            .ok_or_else(|| VsError::StableNotFound {
                route: names[index].clone(),
                subset: t.stable.subset.clone(),
            })?;
        let stable_host = dest_host(&dests[stable_pos]).unwrap_or_default().to_string();
        let canary_host = t.canary.host.clone().unwrap_or_else(|| stable_host.clone());
        let weight_of = |d: &Value| d.get("weight").and_then(Value::as_i64);
        let sum: i64 = dests.iter().map(|d| weight_of(d).unwrap_or(0)).sum();
        if dests.len() > 1 && sum != 100 {
            return Err(VsError::BadWeights { route: names[index].clone(), sum });
        }
        let canary_weight = dests
            .iter()
            .find(|d| {
                dest_subset(d) == Some(t.canary.subset.as_str()) && dest_host(d) == Some(canary_host.as_str())
            })
            .map(|d| weight_of(d).unwrap_or(if dests.len() == 1 { 100 } else { 0 }))
            .unwrap_or(0);
        let mirror_percent =
            route.get("mirror").filter(|m| dest_subset(m) == Some(t.canary.subset.as_str())).map(|_| {
                route.pointer("/mirrorPercentage/value").and_then(Value::as_f64).unwrap_or(100.0).round()
                    as u32
            });
        let header_match = http
            .iter()
            .find(|r| route_name(r, usize::MAX) == managed)
            .and_then(|r| r.pointer("/match/0/headers"))
            .and_then(Value::as_object)
            .and_then(|h| h.iter().next())
            .map(|(header, cond)| HeaderMatch {
                header: header.clone(),
                exact: cond.get("exact").and_then(Value::as_str).map(str::to_string),
                prefix: cond.get("prefix").and_then(Value::as_str).map(str::to_string),
                regex: cond.get("regex").and_then(Value::as_str).map(str::to_string),
            });
        let annotation = |key: &str| {
            vs.pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (current_key, legacy_key) = (state_annotation_key(policy), legacy_state_annotation_key(policy));
        let legacy_state = annotation(&legacy_key).filter(|_| legacy_key != current_key);
        let state = annotation(&current_key);
        let legacy_state_key = legacy_state.is_some().then_some(legacy_key);
        let state = state.or(legacy_state);
        let command = vs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(command_annotation_key(policy)))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(RouteView {
            command,
            index,
            name: names[index].clone(),
            stable_host,
            canary_host,
            traffic: Traffic {
                canary_weight: u32::try_from(canary_weight.clamp(0, 100)).unwrap_or(0),
                header_match,
                mirror_percent,
            },
            state,
            legacy_state_key,
            resource_version: vs
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// The JSON patch that makes the route carry `traffic` and stores `state` — one atomic
    /// write, rejected by the API server if anyone changed the object since it was read.
    pub fn patch(&self, vs: &Value, policy: &Policy, traffic: &Traffic, state: &str) -> Value {
        let mut http = vs.pointer("/spec/http").and_then(Value::as_array).cloned().unwrap_or_default();
        let t = &policy.spec().target;
        let managed = managed_route_name(policy);
        let stable_dest = json!({"host": self.stable_host, "subset": t.stable.subset});
        let canary_dest = json!({"host": self.canary_host, "subset": t.canary.subset});
        {
            let route = &mut http[self.index];
            let dests = route.get("route").and_then(Value::as_array).cloned().unwrap_or_default();
            // Keep the user's destination objects (ports, headers) and change weights only.
            let find = |subset: &str, host: &str| {
                dests.iter().find(|d| dest_subset(d) == Some(subset) && dest_host(d) == Some(host)).cloned()
            };
            let mut stable = find(&t.stable.subset, &self.stable_host)
                .unwrap_or_else(|| json!({"destination": stable_dest}));
            let mut canary = find(&t.canary.subset, &self.canary_host).unwrap_or_else(|| {
                let mut c = stable.clone();
                c["destination"] = json!({"host": self.canary_host, "subset": t.canary.subset});
                if let Some(port) = stable.pointer("/destination/port") {
                    c["destination"]["port"] = port.clone();
                }
                c
            });
            stable["weight"] = json!(100 - traffic.canary_weight.min(100));
            canary["weight"] = json!(traffic.canary_weight.min(100));
            let is = |d: &Value, subset: &str, host: &str| {
                dest_subset(d) == Some(subset) && dest_host(d) == Some(host)
            };
            let others = dests.iter().filter(|d| {
                !is(d, &t.stable.subset, &self.stable_host) && !is(d, &t.canary.subset, &self.canary_host)
            });
            let mut new_dests = vec![stable, canary];
            new_dests.extend(others.cloned().map(|mut d| {
                d["weight"] = json!(0);
                d
            }));
            route["route"] = Value::Array(new_dests);
            let obj = route.as_object_mut().expect("route is an object");
            match traffic.mirror_percent {
                Some(p) => {
                    obj.insert("mirror".into(), canary_dest.clone());
                    obj.insert("mirrorPercentage".into(), json!({"value": f64::from(p)}));
                }
                None => {
                    if obj.get("mirror").is_some_and(|m| dest_subset(m) == Some(t.canary.subset.as_str())) {
                        obj.remove("mirror");
                        obj.remove("mirrorPercentage");
                    }
                }
            }
        }
        http.retain(|r| route_name(r, usize::MAX) != managed);
        if let Some(h) = &traffic.header_match {
            let mut cond = serde_json::Map::new();
            for (k, v) in [("exact", &h.exact), ("prefix", &h.prefix), ("regex", &h.regex)] {
                if let Some(v) = v {
                    cond.insert(k.into(), json!(v));
                }
            }
            let route = json!({
                "name": managed,
                "match": [{"headers": {h.header.clone(): cond}}],
                "route": [{"destination": canary_dest, "weight": 100}],
            });
            http.insert(0, route);
        }
        let key = state_annotation_key(policy).replace('~', "~0").replace('/', "~1");
        let mut ops = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version}),
            json!({"op": "replace", "path": "/spec/http", "value": http}),
        ];
        if vs.pointer("/metadata/annotations").and_then(Value::as_object).is_none() {
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        }
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": state}));
        if let Some(legacy) = &self.legacy_state_key {
            let legacy = legacy.replace('~', "~0").replace('/', "~1");
            ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{legacy}")}));
        }
        if self.command.is_some() {
            let ckey = command_annotation_key(policy).replace('~', "~0").replace('/', "~1");
            ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{ckey}")}));
        }
        Value::Array(ops)
    }

    /// The JSON patch that retires the policy from this VirtualService (its RolloutPolicy was
    /// deleted, or its file removed): the route carries `traffic` when one is given (the
    /// engine's [`route_on_removal`](crate::engine::route_on_removal)), and the state and any
    /// command annotation are removed. The resourceVersion is tested as for every write, and
    /// the other writers' fields are untouched.
    pub fn removal_patch(&self, vs: &Value, policy: &Policy, traffic: Option<&Traffic>) -> Value {
        let escape = |k: String| k.replace('~', "~0").replace('/', "~1");
        let mut ops =
            vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version})];
        if let Some(traffic) = traffic {
            let routed = self.patch(vs, policy, traffic, "");
            if let Some(replace) =
                routed.as_array().and_then(|o| o.iter().find(|op| op["path"] == "/spec/http"))
            {
                ops.push(replace.clone());
            }
        }
        let annotations = vs.pointer("/metadata/annotations").and_then(Value::as_object);
        let present = |k: &str| annotations.is_some_and(|a| a.contains_key(k));
        let mut keys = vec![state_annotation_key(policy), command_annotation_key(policy)];
        keys.extend(self.legacy_state_key.clone());
        for key in keys {
            if present(&key) {
                ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", escape(key))}));
            }
        }
        Value::Array(ops)
    }
}

fn route_name(route: &Value, index: usize) -> String {
    route.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("#{index}"))
}

fn dest_subset(d: &Value) -> Option<&str> {
    d.pointer("/destination/subset").or_else(|| d.get("subset")).and_then(Value::as_str)
}

fn dest_host(d: &Value) -> Option<&str> {
    d.pointer("/destination/host").or_else(|| d.get("host")).and_then(Value::as_str)
}

fn host_ok(d: &Value, want: Option<&str>) -> bool {
    want.is_none_or(|w| dest_host(d) == Some(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    fn policy() -> Policy {
        parse_policy("p.yaml", "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1}, canary: {subset: v2}}\n").unwrap()
    }

    fn vs() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "7", "annotations": {"team": "books"}},
            "spec": {"hosts": ["reviews"], "gateways": ["mesh"], "http": [
                {"name": "debug", "match": [{"headers": {"x-debug": {"exact": "1"}}}], "route": [{"destination": {"host": "reviews", "subset": "v3"}}], "timeout": "3s"},
                {"name": "main", "retries": {"attempts": 3}, "route": [
                    {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 10}]}
            ]}
        })
    }

    fn apply(vs: &Value, patch: &Value) -> Value {
        let mut doc = vs.clone();
        let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        json_patch::patch(&mut doc, &p).unwrap();
        doc
    }

    #[test]
    fn reads_weights_of_the_named_route() {
        let view = RouteView::read(&vs(), &policy()).unwrap();
        assert_eq!(view.index, 1);
        assert_eq!(view.traffic.canary_weight, 10);
        assert_eq!(view.stable_host, "reviews");
    }

    #[test]
    fn patch_changes_only_weights_and_the_state_annotation() {
        let p = policy();
        let original = vs();
        let view = RouteView::read(&original, &p).unwrap();
        let traffic = Traffic { canary_weight: 30, ..Traffic::default() };
        let after = apply(&original, &view.patch(&original, &p, &traffic, "{\"phase\":\"Progressing\"}"));
        assert_eq!(after["spec"]["http"][0], original["spec"]["http"][0], "other routes untouched");
        assert_eq!(after["spec"]["http"][1]["retries"], original["spec"]["http"][1]["retries"]);
        assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 70);
        assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 30);
        assert_eq!(after["spec"]["http"][1]["route"][1]["destination"]["port"]["number"], 9080);
        assert_eq!(after["spec"]["gateways"], original["spec"]["gateways"]);
        assert_eq!(after["metadata"]["annotations"]["team"], "books");
        assert_eq!(
            after["metadata"]["annotations"]["canaryd.io/state-reviews"],
            "{\"phase\":\"Progressing\"}"
        );
        let back = RouteView::read(&after, &p).unwrap();
        assert_eq!(back.traffic, traffic);
    }

    #[test]
    fn removal_routes_back_and_removes_only_canaryds_annotations() {
        let p = policy();
        let mut original = vs();
        original["metadata"]["annotations"]["canaryd.io/state-reviews"] = json!("{}");
        original["metadata"]["annotations"]["canaryd.io/command-reviews"] = json!("pause");
        let view = RouteView::read(&original, &p).unwrap();
        let after = apply(&original, &view.removal_patch(&original, &p, Some(&Traffic::stable_only())));
        assert_eq!(after["spec"]["http"][0], original["spec"]["http"][0], "other routes untouched");
        assert_eq!(after["spec"]["http"][1]["retries"], original["spec"]["http"][1]["retries"]);
        assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 100);
        assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 0);
        assert_eq!(after["metadata"]["annotations"], json!({"team": "books"}));
        // A finished rollout keeps its weights; only the annotations go.
        let kept = apply(&original, &view.removal_patch(&original, &p, None));
        assert_eq!(kept["spec"], original["spec"]);
        assert_eq!(kept["metadata"]["annotations"], json!({"team": "books"}));
        // Nothing of canaryd's left: only the resourceVersion test.
        let clean = vs();
        let view = RouteView::read(&clean, &p).unwrap();
        assert_eq!(view.removal_patch(&clean, &p, None).as_array().unwrap().len(), 1);
        // Guarded like every write.
        let mut moved = original.clone();
        moved["metadata"]["resourceVersion"] = json!("8");
        let patch: json_patch::Patch = serde_json::from_value(
            RouteView::read(&original, &p).unwrap().removal_patch(&original, &p, None),
        )
        .unwrap();
        assert!(json_patch::patch(&mut moved, &patch).is_err());
    }

    fn named(name: &str) -> Policy {
        parse_policy("p.yaml", &format!("apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  target: {{virtualService: reviews, route: main, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n")).unwrap()
    }

    /// The API server's rule for an annotation key's name part.
    fn valid_annotation_name(key: &str) -> bool {
        let name = key.strip_prefix("canaryd.io/").unwrap();
        name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }

    #[test]
    fn annotation_keys_are_valid_and_distinct_for_every_policy_name() {
        let prefix = "a".repeat(49);
        // A cut at 50 characters used to end in '-' here, and the two names shared a key.
        let names = [
            "reviews".to_string(),
            format!("{prefix}-x"),
            format!("{prefix}-y"),
            "x".repeat(57),
            "x".repeat(58),
            "c".repeat(63),
            format!("{}-{}", "c".repeat(61), "d"),
        ];
        let mut keys = std::collections::BTreeSet::new();
        for n in &names {
            let p = named(n);
            for key in [state_annotation_key(&p), command_annotation_key(&p)] {
                assert!(valid_annotation_name(&key), "{n}: {key}");
                assert!(keys.insert(key.clone()), "{n}: {key} is shared");
            }
        }
        assert_eq!(state_annotation_key(&named("reviews")), "canaryd.io/state-reviews");
    }

    #[test]
    fn state_under_the_legacy_key_is_read_and_moved() {
        let long = format!("{}-{}", "a".repeat(49), "tail");
        let p = named(&long);
        let legacy = format!("canaryd.io/state-{}", &long[..50]);
        assert_ne!(legacy, state_annotation_key(&p));
        let mut original = vs();
        original["metadata"]["annotations"][&legacy] = json!("{\"phase\":\"Progressing\"}");
        let view = RouteView::read(&original, &p).unwrap();
        assert_eq!(view.state.as_deref(), Some("{\"phase\":\"Progressing\"}"));
        let after = apply(&original, &view.patch(&original, &p, &view.traffic, "{\"phase\":\"Promoted\"}"));
        let annotations = after["metadata"]["annotations"].as_object().unwrap();
        assert!(!annotations.contains_key(&legacy), "{annotations:?}");
        assert_eq!(annotations[&state_annotation_key(&p)], "{\"phase\":\"Promoted\"}");
        assert!(RouteView::read(&after, &p).unwrap().legacy_state_key.is_none());
    }

    #[test]
    fn header_match_and_mirror_routes_are_added_and_removed() {
        let p = policy();
        let original = vs();
        let view = RouteView::read(&original, &p).unwrap();
        let traffic = Traffic {
            canary_weight: 0,
            header_match: Some(HeaderMatch {
                header: "end-user".into(),
                exact: Some("jason".into()),
                prefix: None,
                regex: None,
            }),
            mirror_percent: Some(50),
        };
        let with = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
        assert_eq!(with["spec"]["http"][0]["name"], "canaryd-reviews-header");
        assert_eq!(with["spec"]["http"][2]["mirrorPercentage"]["value"], 50.0);
        let view2 = RouteView::read(&with, &p).unwrap();
        assert_eq!(view2.traffic, traffic);
        let mut with_rv = with.clone();
        with_rv["metadata"]["resourceVersion"] = json!("7");
        let without = apply(&with_rv, &view2.patch(&with_rv, &p, &Traffic::stable_only(), "{}"));
        assert_eq!(without["spec"]["http"].as_array().unwrap().len(), 2);
        assert!(without["spec"]["http"][1].get("mirror").is_none());
        assert_eq!(without["spec"]["http"][0], original["spec"]["http"][0]);
    }

    #[test]
    fn stale_resource_version_fails_the_patch() {
        let p = policy();
        let original = vs();
        let view = RouteView::read(&original, &p).unwrap();
        let mut moved = original.clone();
        moved["metadata"]["resourceVersion"] = json!("8");
        let patch: json_patch::Patch =
            serde_json::from_value(view.patch(&original, &p, &Traffic::canary_only(), "{}")).unwrap();
        assert!(json_patch::patch(&mut moved, &patch).is_err());
    }

    #[test]
    fn malformed_virtual_services_are_clear_errors() {
        let p = policy();
        let mut bad = vs();
        bad["spec"]["http"][1]["route"][0]["weight"] = json!(95);
        assert!(matches!(RouteView::read(&bad, &p), Err(VsError::BadWeights { sum: 105, .. })));
        let mut no_route = vs();
        no_route["spec"]["http"][1]["name"] = json!("other");
        assert!(matches!(RouteView::read(&no_route, &p), Err(VsError::RouteNotFound(..))));
        let mut no_stable = vs();
        no_stable["spec"]["http"][1]["route"][0]["destination"]["subset"] = json!("v9");
        assert!(matches!(RouteView::read(&no_stable, &p), Err(VsError::StableNotFound { .. })));
        assert!(matches!(RouteView::read(&json!({}), &p), Err(VsError::NoHttpRoutes)));
    }
}
