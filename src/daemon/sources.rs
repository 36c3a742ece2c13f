//! Where policies come from: the policy directory and RolloutPolicy resources, gathered into
//! the valid, unique policies the loop reconciles (invalid ones logged, and reported in a
//! resource's status), and the finalizer that lets a deleted resource's rollout be retired.

use super::cache::Caches;
use super::policy_dir::PolicyDir;
use super::status::{condition, patch_status};
use super::NamespaceScope;
use crate::policy::{from_resource, parse_policy, Policy, RolloutPolicy, RolloutPolicyStatus};
use kube::api::{Api, Patch, PatchParams};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Where policies come from.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    /// A directory of policy files (`--policies`): its directories stat'ed every 2 s, every
    /// file every 10 s; policies are gathered again only when a file was added, removed or
    /// changed (see `policy_dir.rs`).
    pub dir: Option<PathBuf>,
    /// RolloutPolicy resources (`--crds`).
    pub crds: bool,
}

/// The finalizer that lets the daemon route an unfinished rollout back to stable and remove its
/// state before a RolloutPolicy goes.
pub const FINALIZER: &str = "canaryd.io/route-back";

/// What one turn of the loop found.
pub(super) struct Gathered {
    /// Valid, unique policies to reconcile.
    pub policies: Vec<Policy>,
    /// Keys of those that are RolloutPolicy resources (they get a status).
    pub from_crs: HashSet<String>,
    /// Valid policy files by key.
    pub files: HashMap<String, PathBuf>,
    /// RolloutPolicies being deleted that still carry [`FINALIZER`] (and their policy if valid).
    pub deleting: Vec<(Arc<RolloutPolicy>, Option<Policy>)>,
    /// Valid RolloutPolicies without [`FINALIZER`] yet.
    pub unfinalized: Vec<Arc<RolloutPolicy>>,
}

/// Valid policies from the directory and the custom resources; invalid ones are logged (and,
/// for resources, reported in their status) and never acted on.
pub(super) async fn gather(
    dir: Option<&PolicyDir>,
    crds: bool,
    scope: &NamespaceScope,
    client: &kube::Client,
    cache: Option<&Caches>,
    statuses: &mut HashMap<String, RolloutPolicyStatus>,
    memo: &mut Parsed,
) -> Gathered {
    let mut out = Vec::new();
    let mut file_policies = HashMap::new();
    let mut deleting = Vec::new();
    let mut unfinalized = Vec::new();
    if let Some(dir) = dir {
        for (f, stamp) in dir.files() {
            let name = f.display().to_string();
            let stamp = stamp.map(|s| format!("{s:?}")).unwrap_or_default();
            memo.listed(&name);
            let read = match memo.get(&name, &stamp) {
                Some(p) => Ok(Ok(p)),
                None => {
                    let read = std::fs::read_to_string(f)
                        .map_err(|e| e.to_string())
                        .map(|t| parse_policy(&name, &t));
                    if let Ok(Ok(p)) = &read {
                        memo.put(&name, &stamp, p);
                    }
                    read
                }
            };
            match read {
                Ok(Ok(p)) if !scope.contains(p.namespace()) => tracing::error!(
                    file = %name,
                    namespace = p.namespace(),
                    "policy for a namespace this daemon does not manage (--namespace {scope}); not acted on"
                ),
                Ok(Ok(p)) => {
                    file_policies.insert(p.key(), f.clone());
                    out.push(p);
                }
                Ok(Err(d)) => tracing::error!(file = %name, "invalid policy, not acted on:\n{d}"),
                Err(e) => tracing::error!(file = %name, error = %e, "cannot read policy"),
            }
        }
    }
    let mut from_crs = HashSet::new();
    if crds {
        // One list per managed namespace: a namespaced install has no cluster-wide list right.
        let apis: Vec<(String, Api<RolloutPolicy>)> = match scope.namespaces() {
            Some(names) => names.iter().map(|ns| (ns.clone(), Api::namespaced(client.clone(), ns))).collect(),
            None => vec![("all namespaces".to_string(), Api::all(client.clone()))],
        };
        // The cache's objects are shared, not copied: only those that need a write are kept.
        let cached = cache.and_then(Caches::rollout_policies);
        let lists = match cached {
            Some(items) => vec![("the watch cache".to_string(), Ok(items))],
            None => {
                let mut lists = Vec::new();
                for (where_, api) in apis {
                    let listed = api.list(&Default::default()).await;
                    lists.push((where_, listed.map(|l| l.items.into_iter().map(Arc::new).collect())));
                }
                lists
            }
        };
        for (where_, list) in lists {
            match list {
                Ok(items) => {
                    for rp in items {
                        let ours = rp.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
                        let id = format!(
                            "resource:{}/{}",
                            rp.metadata.namespace.as_deref().unwrap_or_default(),
                            rp.metadata.name.as_deref().unwrap_or_default()
                        );
                        memo.listed(&id);
                        if rp.metadata.deletion_timestamp.is_some() {
                            if ours {
                                // Edited into an invalid spec before deletion: its rollout is
                                // still retired, as last validly parsed.
                                let policy = from_resource(&rp).ok().or_else(|| memo.latest(&id));
                                deleting.push((rp, policy));
                            }
                            continue;
                        }
                        let stamp = format!(
                            "{}/{}",
                            rp.metadata.uid.as_deref().unwrap_or_default(),
                            rp.metadata.generation.unwrap_or_default()
                        );
                        let parsed = match memo.get(&id, &stamp) {
                            Some(p) => Ok(p),
                            None => {
                                let parsed = from_resource(&rp);
                                if let Ok(p) = &parsed {
                                    memo.put(&id, &stamp, p);
                                }
                                parsed
                            }
                        };
                        match parsed {
                            Ok(p) => {
                                if !ours {
                                    unfinalized.push(rp.clone());
                                }
                                from_crs.insert(p.key());
                                out.push(p);
                            }
                            Err(d) => {
                                tracing::error!("invalid RolloutPolicy, not acted on:\n{d}");
                                let ns = rp.metadata.namespace.clone().unwrap_or_default();
                                let name = rp.metadata.name.clone().unwrap_or_default();
                                let status = RolloutPolicyStatus {
                                    phase: Some("Invalid".into()),
                                    conditions: vec![condition(
                                        "Valid",
                                        "False",
                                        "InvalidPolicy",
                                        &d.to_string(),
                                    )],
                                    observed_generation: rp.metadata.generation,
                                    ..Default::default()
                                };
                                patch_status(client, &ns, &name, status, statuses).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, namespace = %where_, "cannot list RolloutPolicy resources")
                }
            }
        }
    }
    // Two definitions of one rollout (two files, or a file and a resource) would fight over
    // its VirtualService: neither is acted on until one goes.
    let duplicated: Vec<String> = crate::policy::duplicates(&out)
        .into_iter()
        .map(|(key, d)| {
            tracing::error!("{d}");
            key
        })
        .collect();
    if !duplicated.is_empty() {
        out.retain(|p| !duplicated.contains(&p.key()));
    }
    Gathered { policies: out, from_crs, files: file_policies, deleting, unfinalized }
}

/// Valid policies parsed at earlier turns, by source (`path` or `resource:ns/name`) and stamp
/// (a file's modification time and size; a resource's uid and generation): with thousands of
/// policies, parsing and validating every one at every turn would dominate the loop's CPU.
/// Sources no longer listed are forgotten once the turn that noticed them is over
/// ([`Parsed::forget_unlisted`]), so files renamed or resources replaced over weeks do not pile up.
#[derive(Default)]
pub struct Parsed {
    entries: HashMap<String, (String, Policy)>,
    /// Sources listed since the last [`Parsed::forget_unlisted`], whatever their parse gave
    /// (a file edited into an invalid policy keeps its last valid parse, for its retirement).
    listed: HashSet<String>,
}

impl Parsed {
    pub(super) fn get(&self, id: &str, stamp: &str) -> Option<Policy> {
        self.entries.get(id).filter(|(s, _)| !stamp.is_empty() && s == stamp).map(|(_, p)| p.clone())
    }

    /// The last valid parse from `id`, whatever its stamp.
    pub(super) fn latest(&self, id: &str) -> Option<Policy> {
        self.entries.get(id).map(|(_, p)| p.clone())
    }

    pub(super) fn put(&mut self, id: &str, stamp: &str, policy: &Policy) {
        self.entries.insert(id.to_string(), (stamp.to_string(), policy.clone()));
    }

    /// `id` was listed this turn.
    pub(super) fn listed(&mut self, id: &str) {
        if !self.listed.contains(id) {
            self.listed.insert(id.to_string());
        }
    }

    /// Drops the parses of sources not listed since the last call. Called after the turn's
    /// lifecycle, which still needs [`Parsed::latest`] of a file removed since the turn before.
    pub(super) fn forget_unlisted(&mut self) {
        let listed = std::mem::take(&mut self.listed);
        self.entries.retain(|id, _| listed.contains(id));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Adds or removes [`FINALIZER`], guarded by the resourceVersion it was decided on.
pub(super) async fn set_finalizer(
    client: &kube::Client,
    rp: &RolloutPolicy,
    present: bool,
) -> Result<(), kube::Error> {
    let ns = rp.metadata.namespace.as_deref().unwrap_or_default();
    let name = rp.metadata.name.as_deref().unwrap_or_default();
    let rv = rp.metadata.resource_version.clone().unwrap_or_default();
    let current = rp.metadata.finalizers.clone();
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    match (present, current) {
        (true, None) => {
            ops.push(serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}))
        }
        (true, Some(_)) => {
            ops.push(serde_json::json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}))
        }
        (false, list) => {
            let rest: Vec<String> = list.into_iter().flatten().filter(|f| f != FINALIZER).collect();
            ops.push(serde_json::json!({"op": "replace", "path": "/metadata/finalizers", "value": rest}));
        }
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    let api: Api<RolloutPolicy> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> Policy {
        let doc = format!("apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  target: {{virtualService: {name}, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n  steps: [{{weight: 10}}]\n");
        parse_policy("test.yaml", &doc).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_of_sources_no_longer_listed_are_forgotten_after_the_turn_that_noticed_them() {
        let mut memo = Parsed::default();
        for (id, name) in [("a.yaml", "a"), ("b.yaml", "b"), ("resource:shop/c", "c")] {
            memo.listed(id);
            memo.put(id, "stamp-1", &policy(name));
        }
        memo.forget_unlisted();
        assert_eq!(memo.len(), 3);
        // Next turn: b.yaml is gone, c's resource was listed but is now invalid (no new put).
        memo.listed("a.yaml");
        memo.listed("resource:shop/c");
        // The lifecycle of this turn still finds b's last policy, to retire its rollout.
        assert_eq!(memo.latest("b.yaml").map(|p| p.key()), Some("shop/b".to_string()));
        memo.forget_unlisted();
        assert!(memo.latest("b.yaml").is_none(), "b.yaml's parse outlived the turn after its removal");
        assert!(memo.latest("resource:shop/c").is_some(), "an invalid edit drops the last valid parse");
        assert!(memo.get("a.yaml", "stamp-1").is_some());
        assert_eq!(memo.len(), 2);
    }
}
