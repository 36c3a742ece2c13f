//! Reading policy files: bytes → YAML → typed document → validated [`Policy`], collecting every
//! problem with its position.

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use super::locate::{join_key, LocationIndex, Position};
use super::spec::{RolloutPolicy, RolloutPolicySpec, API_VERSION};
use super::validate;
use super::{Origin, Policy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Largest policy file accepted; policies are a page or two, anything larger is a mistake.
pub(crate) const MAX_POLICY_BYTES: usize = 256 * 1024;

/// The policy document as written in a file (and as applied to a cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "RolloutPolicy", description = "A canaryd rollout policy (canaryd.io/v1alpha1).")]
pub struct PolicyDocument {
    /// Always `canaryd.io/v1alpha1`.
    pub api_version: String,
    /// Always `RolloutPolicy`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: RolloutPolicySpec,
}

/// The parts of Kubernetes object metadata a policy file may carry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Policy name (DNS-1123 label).
    pub name: String,
    /// Namespace of the policy and of its VirtualService. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Parses and validates one policy file's text. `file` names it in messages.
pub fn parse_policy(file: &str, source: &str) -> Result<Policy, Diagnostics> {
    let at = |pos: Option<Position>, field: &str, msg: String| Diagnostic::at(file, pos, field, msg);
    if source.len() > MAX_POLICY_BYTES {
        return Err(Diagnostics(vec![at(
            None,
            "",
            format!("file is {} bytes; policies are limited to {MAX_POLICY_BYTES}", source.len()),
        )
        .help("split the file, or check that it is the right file")]));
    }
    let index = LocationIndex::build(source);
    let mut problems = unknown_fields(file, &index);
    let doc = match serde_saphyr::from_str::<PolicyDocument>(source) {
        Ok(doc) => doc,
        Err(err) => {
            problems.push(from_yaml_error(file, &index, &err));
            return Err(Diagnostics(problems));
        }
    };
    problems.extend(validate::validate(file, &index, &doc, Origin::File));
    if !problems.is_empty() {
        problems.sort_by_key(|d| (d.line, d.column));
        return Err(Diagnostics(problems));
    }
    let namespace = doc.metadata.namespace.unwrap_or_else(|| "default".to_string());
    Policy::compile(file, Origin::File, doc.metadata.name, namespace, doc.spec)
}

/// Parses a policy that arrived as a custom resource (already typed by the API server).
pub fn from_resource(rp: &RolloutPolicy) -> Result<Policy, Diagnostics> {
    let namespace = rp.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let name = rp.metadata.name.clone().unwrap_or_default();
    let file = format!("rolloutpolicy/{namespace}/{name}");
    let doc = PolicyDocument {
        api_version: API_VERSION.to_string(),
        kind: "RolloutPolicy".to_string(),
        metadata: Metadata { name: name.clone(), namespace: Some(namespace.clone()), ..Metadata::default() },
        spec: rp.spec.clone(),
    };
    let problems = validate::validate(&file, &LocationIndex::default(), &doc, Origin::Resource);
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    Policy::compile(&file, Origin::Resource, name, namespace, rp.spec.clone())
}

fn from_yaml_error(file: &str, index: &LocationIndex, err: &serde_saphyr::Error) -> Diagnostic {
    let pos = err.location().map(|l| Position { line: l.line() as usize, column: l.column() as usize });
    // The crate's Display includes a source snippet and its own position prefix; keep the
    // message alone, since ours carries file:line:column.
    let text = err.to_string();
    let mut message = text.lines().next().unwrap_or("invalid YAML").trim();
    message = message.strip_prefix("error: ").unwrap_or(message);
    if let Some(rest) = message.strip_prefix("line ") {
        message = rest.split_once(": ").map(|(_, m)| m).unwrap_or(rest);
    }
    let field = pos.and_then(|p| index.path_at(p)).unwrap_or_default();
    Diagnostic::at(file, pos, &field, message.to_string())
        .help("fix the value at this position; see README.md, \"Policy reference\"")
}

/// Every key the schema does not know, with a suggestion. Walks the YAML's keys against the
/// JSON Schema generated from the Rust types, so the rule can never disagree with serde.
fn unknown_fields(file: &str, index: &LocationIndex) -> Vec<Diagnostic> {
    let schema = serde_json::to_value(schemars::schema_for!(PolicyDocument)).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(file, index, &schema, &schema, "", &mut out);
    out
}

fn walk(
    file: &str,
    index: &LocationIndex,
    root: &Value,
    node: &Value,
    path: &str,
    out: &mut Vec<Diagnostic>,
) {
    let node = resolve(root, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        let known: Vec<&str> = props.keys().map(String::as_str).collect();
        for key in index.keys_of(path) {
            let child = join_key(path, key);
            match props.get(key) {
                Some(sub) => walk(file, index, root, sub, &child, out),
                None => {
                    let mut d =
                        Diagnostic::at(file, index.key_position(&child), &child, "unknown field".to_string());
                    d = match did_you_mean(key, known.iter().copied()) {
                        Some(s) => d.help(format!("did you mean `{s}`? fields here: {}", known.join(", "))),
                        None => d.help(format!("fields here: {}", known.join(", "))),
                    };
                    out.push(d);
                }
            }
        }
    } else if let Some(items) = node.get("items") {
        let mut i = 0;
        while index.has_value(&format!("{path}[{i}]")) {
            walk(file, index, root, items, &format!("{path}[{i}]"), out);
            i += 1;
        }
    }
}

/// Follows `$ref` and unwraps `Option` (`anyOf: [T, null]`) to the schema that has structure.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(n) => node = n,
                None => return node,
            }
        } else if let Some(alts) = node.get("anyOf").or_else(|| node.get("oneOf")).and_then(Value::as_array) {
            match alts.iter().find(|a| a.get("type").and_then(Value::as_str) != Some("null")) {
                Some(n) => node = n,
                None => return node,
            }
        } else {
            return node;
        }
    }
    node
}

#[cfg(test)]
mod origin_tests {
    use super::*;

    const SPEC: &str = r#"
target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}
alerts:
  on: [abort]
  webhooks:
    - {name: env-hook, urlFrom: {env: PLATFORM_WEBHOOK}}
    - {name: file-hook, urlFrom: {secretKeyRef: {name: hooks, key: url}}, signingSecretFrom: {file: /etc/canaryd/key}}
    - {name: own-hook, urlFrom: {secretKeyRef: {name: hooks, key: url}}}
"#;

    fn resource(spec: &str) -> RolloutPolicy {
        let spec: RolloutPolicySpec = serde_saphyr::from_str(spec).unwrap();
        let mut rp = RolloutPolicy::new("reviews", spec);
        rp.metadata.namespace = Some("shop".into());
        rp
    }

    #[test]
    fn a_resource_may_not_read_the_daemons_environment_or_files() {
        let err = from_resource(&resource(SPEC)).unwrap_err().to_string();
        assert!(err.contains("spec.alerts.webhooks[0].urlFrom.env"), "{err}");
        assert!(err.contains("spec.alerts.webhooks[1].signingSecretFrom.file"), "{err}");
        assert!(!err.contains("webhooks[2]"), "{err}");
        assert!(err.contains("secretKeyRef"), "the help says what to use instead: {err}");
    }

    #[test]
    fn a_policy_file_may_and_a_secret_key_ref_resource_may() {
        let file = format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews}}\nspec:{}",
            SPEC.replace('\n', "\n  ")
        );
        let p = parse_policy("reviews.yaml", &file).unwrap();
        assert_eq!(p.origin(), Origin::File);
        let own_only =
            SPEC.lines().filter(|l| !l.contains("env-hook") && !l.contains("file-hook")).collect::<Vec<_>>();
        let p = from_resource(&resource(&own_only.join("\n"))).unwrap();
        assert_eq!(p.origin(), Origin::Resource);
    }
}

#[cfg(test)]
mod custom_query_tests {
    use super::*;
    use crate::promql::{Side, TenantLabel};

    const SPEC: &str = r#"
target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}
analysis:
  custom:
    - {name: other, query: 'sum(rate(x{namespace="other",pod=~"{{ workload }}-.*"}[{{ interval }}]))', max: 1}
"#;

    #[test]
    fn a_resource_query_is_confined_and_a_file_query_is_not() {
        let spec: RolloutPolicySpec = serde_saphyr::from_str(SPEC).unwrap();
        let mut rp = RolloutPolicy::new("reviews", spec.clone());
        rp.metadata.namespace = Some("shop".into());
        let resource = from_resource(&rp).unwrap();
        let check = &resource.spec().analysis.custom[0];
        let label = TenantLabel::default();
        assert_eq!(
            resource.custom_query(check, Side::Baseline, 30, &label).unwrap(),
            r#"sum(rate(x{namespace="shop",pod=~"reviews-v1-.*"}[30s]))"#
        );
        let other_label: TenantLabel = "kubernetes_namespace".parse().unwrap();
        assert_eq!(
            resource.custom_query(check, Side::Canary, 60, &other_label).unwrap(),
            r#"sum(rate(x{kubernetes_namespace="shop",namespace="other",pod=~"reviews-v2-.*"}[1m]))"#
        );
        let file = format!(
            "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: shop}}\nspec:{}",
            SPEC.replace('\n', "\n  ")
        );
        let file = parse_policy("reviews.yaml", &file).unwrap();
        assert_eq!(
            file.custom_query(&file.spec().analysis.custom[0], Side::Canary, 60, &label).unwrap(),
            r#"sum(rate(x{namespace="other",pod=~"reviews-v2-.*"}[60s]))"#
        );
    }
}
