//! An authorizing mode: Role/ClusterRole rules bound to bearer tokens, checked like the
//! apiserver's RBAC authorizer (groups, resources with subresources, verbs, resourceNames).

use serde_json::Value;

use super::error::{ApiError, Subject};
use super::faults::RequestInfo;
use super::EmulatorError;

/// One `PolicyRule`, with the namespace it is limited to (`None` for ClusterRoles).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `apiGroups` (`""` for core, `*` for any).
    pub api_groups: Vec<String>,
    /// `resources`, possibly `deployments/scale`, `*`, `*/scale`.
    pub resources: Vec<String>,
    /// `verbs` or `*`.
    pub verbs: Vec<String>,
    /// `resourceNames`; empty allows any name.
    pub resource_names: Vec<String>,
    /// The Role's namespace; `None` for a ClusterRole (granted cluster-wide here, as with a
    /// ClusterRoleBinding).
    pub namespace: Option<String>,
}

/// Tokens and what they may do.
#[derive(Debug, Clone, Default)]
pub struct Rbac {
    bindings: Vec<(String, Rule)>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

impl Rbac {
    /// No grants: every token is forbidden everything but discovery.
    pub fn new() -> Self {
        Rbac::default()
    }

    /// Grants `token` the rules of every Role/ClusterRole document in `yaml` (other kinds,
    /// such as bindings or service accounts in the same file, are skipped).
    pub fn bind(mut self, token: &str, yaml: &str) -> Result<Self, EmulatorError> {
        for doc in super::parse_yaml_docs(yaml)? {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let namespace = match kind {
                "Role" => Some(doc["metadata"]["namespace"].as_str().unwrap_or("default").to_string()),
                "ClusterRole" => None,
                _ => continue,
            };
            for r in doc["rules"].as_array().into_iter().flatten() {
                self.bindings.push((
                    token.to_string(),
                    Rule {
                        api_groups: strings(&r["apiGroups"]),
                        resources: strings(&r["resources"]),
                        verbs: strings(&r["verbs"]),
                        resource_names: strings(&r["resourceNames"]),
                        namespace: namespace.clone(),
                    },
                ));
            }
        }
        Ok(self)
    }

    /// Grants `token` one rule directly.
    pub fn grant(mut self, token: &str, rule: Rule) -> Self {
        self.bindings.push((token.to_string(), rule));
        self
    }

    /// Checks a resource request; `Ok` if allowed, 401/403 otherwise.
    pub(crate) fn authorize(&self, user: Option<&str>, req: &RequestInfo) -> Result<(), ApiError> {
        let Some(user) = user else {
            return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
        };
        let resource = req.resource_path();
        let allowed = self.bindings.iter().filter(|(t, _)| t == user).any(|(_, rule)| {
            let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
            any(&rule.api_groups, &req.group)
                && any(&rule.verbs, &req.verb)
                && rule.resources.iter().any(|r| {
                    r == "*"
                        || *r == resource
                        || (r.starts_with("*/") && r[2..] == req.subresource && !req.subresource.is_empty())
                        || (r.ends_with("/*")
                            && r[..r.len() - 2] == req.resource
                            && !req.subresource.is_empty())
                })
                && (rule.resource_names.is_empty()
                    || (!req.name.is_empty() && rule.resource_names.contains(&req.name)))
                && rule.namespace.as_ref().is_none_or(|ns| *ns == req.namespace)
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                &Subject { group: &req.group, resource: &resource, name: &req.name },
                user,
                &req.verb,
                &req.namespace,
            ))
        }
    }
}
