//! Pure functions over a VirtualService's JSON: find the policy's route, read its traffic,
//! and build the JSON patch that changes only that route (and canaryd's managed header-match
//! route) plus canaryd's annotations, guarded by a `test` of the resourceVersion.
//!
//! Rules (see [`route_patch`](super::route_patch) for the arithmetic):
//! - Weights are relative, as in Istio. The canary weight is the canary's share of the
//!   stable+canary pair (`round(100·canary/(stable+canary))`, 0 when both weigh 0); other
//!   destinations of the route keep their weights (scaled together with the pair only when the
//!   pair is too light to express a percentage exactly).
//! - A header-match step inserts `canaryd-<policy>-header` directly before the policy route: a
//!   clone of it (its matches ANDed with the header condition) sending to the canary.
//! - The first write of non-stable-only traffic records the policy route's `route` array as
//!   found in the `canaryd.io/route-<policy>` annotation; writing stable-only traffic (abort,
//!   removal, copy promotion's route back) puts that array back byte for byte and drops the
//!   record. After a shift promotion (canary 100%) the record stays until traffic next returns
//!   to stable only. While the record fits the route (same destinations), weights are computed
//!   from it rather than from the current ones, so exactness scaling never compounds; a record
//!   that no longer fits the route is ignored.

use super::route_patch::{
    canary_share, effective_weights, header_clone, header_conflicts, read_header_match, record_base,
    set_canary_weight, usable_record,
};
use crate::plan::Traffic;
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
    /// A weight that is negative, not an integer, or beyond Istio's `int32`.
    #[error(
        "route {route:?}: destination {destination} has weight {weight}; weights are whole numbers from 0 to 2147483647 (relative shares)"
    )]
    BadWeight { route: String, destination: String, weight: String },
    /// Every destination of the route weighs 0.
    #[error("route {route:?}: every destination has weight 0, so the route sends no traffic; give the stable destination a weight")]
    ZeroWeights { route: String },
    /// The policy route already matches the step's header with another condition in some
    /// match blocks (0-based); Istio cannot AND two conditions on one header in one block.
    #[error(
        "route {route:?} already matches header {header:?} in match block(s) {blocks:?} with another condition, so the header step cannot be added to them; use another header for the step, or move those blocks to a route of their own"
    )]
    HeaderConflict { route: String, header: String, blocks: Vec<usize> },
    /// The stable or canary destination is listed more than once in the route.
    #[error("route {route:?} lists destination {destination} {times} times; list it once so canaryd knows which weight to change")]
    DuplicateDestination { route: String, destination: String, times: usize },
    /// The canary should get a share of the stable+canary pair, but the pair weighs 0.
    #[error("route {route:?}: the stable and canary destinations both have weight 0, so there is no traffic to shift to the canary; give the stable destination a weight")]
    NothingToShift { route: String },
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

/// Annotation that records the policy route's `route` array (JSON) as it was before the
/// rollout, so an abort restores it exactly.
pub fn route_record_annotation_key(policy: &Policy) -> String {
    annotation_key("route", policy.name())
}

/// The annotation key `canaryd.io/<kind>-<name>`. The name part of an annotation key is at
/// most 63 characters and must end with a letter or digit. A policy name (a DNS label, up to
/// 63 characters) that does not fit keeps a readable prefix and gets a hash of the whole name,
/// so two long names sharing a prefix never share a key and the key is always valid.
pub fn annotation_key(kind: &str, policy_name: &str) -> String {
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

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn annotation<'a>(vs: &'a Value, key: &str) -> Option<&'a str> {
    vs.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
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
        for (subset, host) in [(&t.stable.subset, &stable_host), (&t.canary.subset, &canary_host)] {
            let times = dests.iter().filter(|d| is_dest(d, subset, host)).count();
            if times > 1 {
                let destination = format!("{host}/{subset}");
                return Err(VsError::DuplicateDestination {
                    route: names[index].clone(),
                    destination,
                    times,
                });
            }
        }
        let weights = effective_weights(&names[index], &dests)?;
        let canary_weight = dests
            .iter()
            .position(|d| {
                dest_subset(d) == Some(t.canary.subset.as_str()) && dest_host(d) == Some(canary_host.as_str())
            })
            .map_or(0, |c| canary_share(weights[stable_pos], weights[c]));
        let mirror_percent =
            route.get("mirror").filter(|m| dest_subset(m) == Some(t.canary.subset.as_str())).map(|_| {
                route.pointer("/mirrorPercentage/value").and_then(Value::as_f64).unwrap_or(100.0).round()
                    as u32
            });
        let header_match = http
            .iter()
            .find(|r| route_name(r, usize::MAX) == managed)
            .and_then(|r| read_header_match(r, route));
        let (current_key, legacy_key) = (state_annotation_key(policy), legacy_state_annotation_key(policy));
        let legacy_state = annotation(vs, &legacy_key).filter(|_| legacy_key != current_key);
        let state = annotation(vs, &current_key);
        let legacy_state_key = legacy_state.is_some().then_some(legacy_key);
        let state = state.or(legacy_state).map(str::to_string);
        let command = annotation(vs, &command_annotation_key(policy)).map(str::to_string);
        Ok(RouteView {
            command,
            index,
            name: names[index].clone(),
            stable_host,
            canary_host,
            traffic: Traffic { canary_weight, header_match, mirror_percent },
            state,
            legacy_state_key,
            resource_version: vs
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// Whether `traffic` can be written to this route as Istio would apply it. Call before
    /// [`patch`](Self::patch): [`VsError::HeaderConflict`] when the policy route already matches
    /// a header step's header with another condition (`patch` would then leave those match
    /// blocks out of the managed route); [`VsError::NothingToShift`] when the canary should get
    /// traffic but the stable and canary destinations both weigh 0 (`patch` would leave the
    /// weights as they are).
    pub fn check_traffic(&self, vs: &Value, policy: &Policy, traffic: &Traffic) -> Result<(), VsError> {
        let Some(route) = vs.pointer(&format!("/spec/http/{}", self.index)) else {
            return Ok(());
        };
        if let Some(h) = &traffic.header_match {
            let blocks = header_conflicts(route, h);
            if !blocks.is_empty() {
                let (route, header) = (self.name.clone(), h.header.clone());
                return Err(VsError::HeaderConflict { route, header, blocks });
            }
        }
        if traffic.canary_weight > 0 {
            let t = &policy.spec().target;
            let is_stable = |d: &Value| is_dest(d, &t.stable.subset, &self.stable_host);
            let is_canary = |d: &Value| is_dest(d, &t.canary.subset, &self.canary_host);
            let mut dests = route.get("route").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(base) = annotation(vs, &route_record_annotation_key(policy))
                .and_then(|r| record_base(r, &self.name, &dests, is_stable, is_canary))
            {
                dests = base;
            }
            let eff = effective_weights(&self.name, &dests)?;
            let pair: i64 =
                dests.iter().zip(&eff).filter(|(d, _)| is_stable(d) || is_canary(d)).map(|(_, w)| w).sum();
            if pair == 0 {
                return Err(VsError::NothingToShift { route: self.name.clone() });
            }
        }
        Ok(())
    }

    /// The JSON patch that makes the route carry `traffic` and stores `state` — one atomic
    /// write, rejected by the API server if anyone changed the object since it was read. It
    /// also keeps the route record (see the module docs): added with the first
    /// non-stable-only traffic, put back and removed with stable-only traffic.
    pub fn patch(&self, vs: &Value, policy: &Policy, traffic: &Traffic, state: &str) -> Value {
        let mut ops = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version}),
            json!({"op": "replace", "path": "/spec/http", "value": self.routes(vs, policy, traffic)}),
        ];
        if vs.pointer("/metadata/annotations").and_then(Value::as_object).is_none() {
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        }
        let key = escape(&state_annotation_key(policy));
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": state}));
        let record_key = route_record_annotation_key(policy);
        let recorded = annotation(vs, &record_key).is_some();
        let ends = *traffic == Traffic::stable_only();
        if !recorded && !ends {
            let found = vs.pointer(&format!("/spec/http/{}/route", self.index)).cloned().unwrap_or(json!([]));
            ops.push(json!({
                "op": "add",
                "path": format!("/metadata/annotations/{}", escape(&record_key)),
                "value": found.to_string(),
            }));
        }
        if recorded && ends {
            ops.push(
                json!({"op": "remove", "path": format!("/metadata/annotations/{}", escape(&record_key))}),
            );
        }
        if let Some(legacy) = &self.legacy_state_key {
            ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", escape(legacy))}));
        }
        if self.command.is_some() {
            let ckey = escape(&command_annotation_key(policy));
            ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{ckey}")}));
        }
        Value::Array(ops)
    }

    /// `spec.http` carrying `traffic`.
    fn routes(&self, vs: &Value, policy: &Policy, traffic: &Traffic) -> Vec<Value> {
        let mut http = vs.pointer("/spec/http").and_then(Value::as_array).cloned().unwrap_or_default();
        if self.index >= http.len() {
            return http;
        }
        let t = &policy.spec().target;
        let managed = managed_route_name(policy);
        let canary_dest = json!({"host": self.canary_host, "subset": t.canary.subset});
        let is_stable = |d: &Value| is_dest(d, &t.stable.subset, &self.stable_host);
        let is_canary = |d: &Value| is_dest(d, &t.canary.subset, &self.canary_host);
        let original = http[self.index].clone();
        let stable_rd = {
            let route = &mut http[self.index];
            let mut dests = route.get("route").and_then(Value::as_array).cloned().unwrap_or_default();
            let record = annotation(vs, &route_record_annotation_key(policy));
            let restored = (*traffic == Traffic::stable_only())
                .then_some(record)
                .flatten()
                .and_then(|r| usable_record(r, &self.name, &dests, is_stable, is_canary));
            match restored {
                Some(r) => route["route"] = Value::Array(r),
                None => {
                    if let Some(base) =
                        record.and_then(|r| record_base(r, &self.name, &dests, is_stable, is_canary))
                    {
                        dests = base;
                    }
                    if let Some(s) = dests.iter().position(is_stable) {
                        let c = dests.iter().position(is_canary);
                        set_canary_weight(&self.name, &mut dests, s, c, &canary_dest, traffic.canary_weight);
                        route["route"] = Value::Array(dests.clone());
                    }
                }
            }
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
            dests.into_iter().find(is_stable)
        };
        let mut index = self.index;
        let mut i = 0;
        http.retain(|r| {
            let keep = route_name(r, usize::MAX) != managed;
            if !keep && i < self.index {
                index -= 1;
            }
            i += 1;
            keep
        });
        if let Some(h) = &traffic.header_match {
            if let Some(clone) = header_clone(&original, h, &managed, stable_rd.as_ref(), &canary_dest) {
                http.insert(index, clone);
            }
        }
        http
    }

    /// The JSON patch that retires the policy from this VirtualService (its RolloutPolicy was
    /// deleted, or its file removed): the route carries `traffic` when one is given (the
    /// engine's [`route_on_removal`](crate::engine::route_on_removal); stable-only traffic puts
    /// the recorded route back), and the state, route record and any command annotation are
    /// removed. The resourceVersion is tested as for every write, and the other writers'
    /// fields are untouched.
    pub fn removal_patch(&self, vs: &Value, policy: &Policy, traffic: Option<&Traffic>) -> Value {
        let mut ops =
            vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": self.resource_version})];
        let http = vs.pointer("/spec/http").and_then(Value::as_array).cloned().unwrap_or_default();
        let managed = managed_route_name(policy);
        if let Some(traffic) = traffic {
            ops.push(
                json!({"op": "replace", "path": "/spec/http", "value": self.routes(vs, policy, traffic)}),
            );
        } else if http.iter().any(|r| route_name(r, usize::MAX) == managed) {
            // The weights stay, but canaryd's header route goes with the policy.
            let kept: Vec<&Value> = http.iter().filter(|r| route_name(r, usize::MAX) != managed).collect();
            ops.push(json!({"op": "replace", "path": "/spec/http", "value": kept}));
        }
        let annotations = vs.pointer("/metadata/annotations").and_then(Value::as_object);
        let present = |k: &str| annotations.is_some_and(|a| a.contains_key(k));
        let mut keys = vec![
            state_annotation_key(policy),
            command_annotation_key(policy),
            route_record_annotation_key(policy),
        ];
        keys.extend(self.legacy_state_key.clone());
        for key in keys {
            if present(&key) {
                ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", escape(&key))}));
            }
        }
        Value::Array(ops)
    }
}

fn route_name(route: &Value, index: usize) -> String {
    route.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("#{index}"))
}

pub(super) fn dest_subset(d: &Value) -> Option<&str> {
    d.pointer("/destination/subset").or_else(|| d.get("subset")).and_then(Value::as_str)
}

pub(super) fn dest_host(d: &Value) -> Option<&str> {
    d.pointer("/destination/host").or_else(|| d.get("host")).and_then(Value::as_str)
}

fn is_dest(d: &Value, subset: &str, host: &str) -> bool {
    dest_subset(d) == Some(subset) && dest_host(d) == Some(host)
}

fn host_ok(d: &Value, want: Option<&str>) -> bool {
    want.is_none_or(|w| dest_host(d) == Some(w))
}

#[cfg(test)]
#[path = "virtual_service_tests.rs"]
mod tests;
