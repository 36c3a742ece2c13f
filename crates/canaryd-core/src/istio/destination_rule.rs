//! Which DestinationRule subset a route destination means, found the way Istio finds it.
//!
//! Istio's lookup for a client (sidecar or gateway) in namespace `C` calling a service host `H`
//! (its deployment guidelines, "Cross-namespace configuration sharing"):
//! 1. the rules in `C`, then
//! 2. the rules in the service's namespace (the `<ns>` of `H` = `<name>.<ns>.svc.<domain>`), then
//! 3. the rules in the configuration root namespace (`istio-system` by default).
//!
//! In each namespace only rules visible to `C` count: `spec.exportTo` missing or `*` = every
//! namespace, `.` = the rule's own namespace, otherwise the namespaces listed (the mesh-wide
//! `defaultDestinationRuleExportTo` is assumed to be `*`). A rule's `spec.host` is resolved in
//! the rule's own namespace ([`fqdn`]); among the rules of one namespace whose host covers `H`
//! the most specific host wins (exact name, then the longest wildcard). The first namespace with
//! an applicable rule decides — rules in later namespaces are not consulted even if they have
//! the subset. Istio merges the rules of one namespace that name the *same* host: their subsets
//! are combined, and for a subset name defined twice the older rule (creation time, then name)
//! wins; rules for different hosts (a wildcard and an exact name) are never merged.
//! Rules with a `workloadSelector` apply only to the workloads they select and are not
//! considered here.

use super::hosts::{fqdn, host_matches, service_namespace, specificity, DEFAULT_DOMAIN};
use serde_json::Value;
use std::collections::BTreeMap;

/// The namespace Istio reads mesh-wide configuration from unless the mesh config says otherwise.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// A subset found in a DestinationRule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetRef {
    /// Namespace of the DestinationRule that defines the subset.
    pub namespace: String,
    /// Name of that DestinationRule.
    pub name: String,
    /// The rule's host, fully qualified (may be a wildcard).
    pub host: String,
    /// The subset's name.
    pub subset: String,
    /// The subset's pod labels (`subsets[].labels`).
    pub labels: BTreeMap<String, String>,
}

/// Why a destination's subset cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubsetError {
    /// No DestinationRule covers the host from the client's namespace.
    #[error(
        "no DestinationRule for host {host} is visible from namespace {client_namespace} (looked in namespaces: {}); create one there, or check the rules' spec.host (short names are resolved in the rule's own namespace) and spec.exportTo",
        looked_in.join(", ")
    )]
    NoRule { host: String, client_namespace: String, looked_in: Vec<String> },
    /// The DestinationRule Istio uses for the host does not define the subset.
    #[error("{0}")]
    NoSubset(Box<MissingSubset>),
}

/// The details of [`SubsetError::NoSubset`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "DestinationRule {namespace}/{name} (host {host}) is the one Istio uses for {service} and has no subset {subset:?} (subsets: {}); add it with the pods' labels",
    if subsets.is_empty() { "none".to_string() } else { subsets.join(", ") }
)]
pub struct MissingSubset {
    /// Namespace of the rule (or merged rules) Istio uses.
    pub namespace: String,
    /// Its name; merged rules of one host are joined with `+`.
    pub name: String,
    /// The rule's host, fully qualified (may be a wildcard).
    pub host: String,
    /// The service host looked up.
    pub service: String,
    /// The subset asked for.
    pub subset: String,
    /// The subsets the rule does define.
    pub subsets: Vec<String>,
}

/// Finds `subset` of the service `host` (fully qualified, as [`fqdn`] resolves a route
/// destination in its VirtualService's namespace) for clients in `client_namespace`, among
/// `rules` (DestinationRule objects of any namespaces), following Istio's lookup (module docs).
/// `root_namespace` is the mesh config root ([`DEFAULT_ROOT_NAMESPACE`] by default). Short rule
/// hosts are expanded with the domain of `host` when it is a `.svc.` name, else `cluster.local`.
pub fn find_subset(
    rules: &[Value],
    host: &str,
    client_namespace: &str,
    root_namespace: &str,
    subset: &str,
) -> Result<SubsetRef, SubsetError> {
    let (service_ns, domain) = service_namespace(host).unwrap_or(("", DEFAULT_DOMAIN));
    let mut order: Vec<&str> = Vec::new();
    for ns in [client_namespace, service_ns, root_namespace] {
        if !ns.is_empty() && !order.contains(&ns) {
            order.push(ns);
        }
    }
    for ns in &order {
        let applicable: Vec<(&Value, String)> = rules
            .iter()
            .filter(|r| text(r, "/metadata/namespace") == *ns)
            .filter(|r| r.pointer("/spec/workloadSelector").is_none())
            .filter(|r| visible(r, ns, client_namespace))
            .map(|r| (r, fqdn(text(r, "/spec/host"), ns, domain)))
            .filter(|(_, h)| host_matches(h, host))
            .collect();
        let Some(best) = applicable.iter().map(|(_, h)| h.as_str()).max_by_key(|h| specificity(h)) else {
            continue;
        };
        let best = best.to_string();
        let mut merged: Vec<&Value> =
            applicable.iter().filter(|(_, h)| *h == best).map(|(r, _)| *r).collect();
        merged.sort_by_key(|r| (text(r, "/metadata/creationTimestamp"), text(r, "/metadata/name")));
        let mut names = Vec::new();
        for rule in &merged {
            for s in rule.pointer("/spec/subsets").and_then(Value::as_array).into_iter().flatten() {
                let name = text(s, "/name");
                if name == subset {
                    let labels = s
                        .get("labels")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect();
                    return Ok(SubsetRef {
                        namespace: ns.to_string(),
                        name: text(rule, "/metadata/name").to_string(),
                        host: best,
                        subset: subset.to_string(),
                        labels,
                    });
                }
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        return Err(SubsetError::NoSubset(Box::new(MissingSubset {
            namespace: ns.to_string(),
            name: merged.iter().map(|r| text(r, "/metadata/name")).collect::<Vec<_>>().join("+"),
            host: best,
            service: host.to_string(),
            subset: subset.to_string(),
            subsets: names,
        })));
    }
    Err(SubsetError::NoRule {
        host: host.to_string(),
        client_namespace: client_namespace.to_string(),
        looked_in: order.iter().map(|s| s.to_string()).collect(),
    })
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Whether a rule in `rule_ns` is exported to `client_ns`.
fn visible(rule: &Value, rule_ns: &str, client_ns: &str) -> bool {
    let Some(list) = rule.pointer("/spec/exportTo").and_then(Value::as_array).filter(|l| !l.is_empty())
    else {
        return true;
    };
    list.iter()
        .filter_map(Value::as_str)
        .any(|e| e == "*" || e == client_ns || (e == "." && rule_ns == client_ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";

    fn rule(ns: &str, name: &str, host: &str, subsets: &[&str]) -> Value {
        let subsets: Vec<Value> =
            subsets.iter().map(|s| json!({"name": s, "labels": {"version": s, "app": "reviews"}})).collect();
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"namespace": ns, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"host": host, "subsets": subsets}})
    }

    fn found(r: Result<SubsetRef, SubsetError>) -> (String, String) {
        let r = r.unwrap();
        (r.namespace, r.name)
    }

    #[test]
    fn a_rule_in_the_clients_namespace_comes_first_then_the_services_then_the_root() {
        let service = rule("bookinfo", "reviews", "reviews", &["v1", "v2"]);
        let client = rule("frontend", "reviews-for-frontend", REVIEWS, &["v1", "v2"]);
        let root = rule("istio-system", "mesh-reviews", REVIEWS, &["v1", "v2"]);
        let all = [root.clone(), service.clone(), client.clone()];
        assert_eq!(
            found(find_subset(&all, REVIEWS, "frontend", "istio-system", "v2")),
            ("frontend".into(), "reviews-for-frontend".into())
        );
        assert_eq!(
            found(find_subset(&all, REVIEWS, "shop", "istio-system", "v2")),
            ("bookinfo".into(), "reviews".into())
        );
        let r = find_subset(&[root], REVIEWS, "shop", "istio-system", "v2").unwrap();
        assert_eq!(r.name, "mesh-reviews");
        assert_eq!(
            r.labels,
            BTreeMap::from([("app".into(), "reviews".into()), ("version".into(), "v2".into())])
        );
    }

    #[test]
    fn the_first_applicable_rule_decides_even_without_the_subset() {
        let client = rule("frontend", "reviews", REVIEWS, &["v1"]);
        let service = rule("bookinfo", "reviews", "reviews", &["v1", "v2"]);
        let err = find_subset(&[client, service], REVIEWS, "frontend", "istio-system", "v2").unwrap_err();
        assert!(matches!(&err, SubsetError::NoSubset(m) if m.namespace == "frontend" && m.subsets == ["v1"]));
        let text = err.to_string();
        assert!(
            text.contains("frontend/reviews") && text.contains("\"v2\"") && text.contains("v1"),
            "{text}"
        );
    }

    #[test]
    fn short_hosts_resolve_in_the_rules_own_namespace() {
        // `reviews` in namespace `other` means reviews.other.svc.cluster.local.
        let elsewhere = rule("other", "reviews", "reviews", &["v2"]);
        let dotted = rule("bookinfo", "dotted", "reviews.bookinfo", &["v2"]);
        let err = find_subset(&[elsewhere, dotted], REVIEWS, "other", "istio-system", "v2").unwrap_err();
        assert!(
            matches!(&err, SubsetError::NoRule { looked_in, .. } if looked_in == &["other", "bookinfo", "istio-system"])
        );
        let text = err.to_string();
        assert!(text.contains(REVIEWS) && text.contains("other, bookinfo, istio-system"), "{text}");
    }

    #[test]
    fn export_to_limits_who_sees_a_rule() {
        let mut private = rule("bookinfo", "private", "reviews", &["v2"]);
        private["spec"]["exportTo"] = json!(["."]);
        assert!(
            find_subset(std::slice::from_ref(&private), REVIEWS, "bookinfo", "istio-system", "v2").is_ok()
        );
        assert!(matches!(
            find_subset(std::slice::from_ref(&private), REVIEWS, "shop", "istio-system", "v2"),
            Err(SubsetError::NoRule { .. })
        ));
        let mut listed = rule("bookinfo", "listed", "reviews", &["v2"]);
        listed["spec"]["exportTo"] = json!(["shop"]);
        assert!(find_subset(std::slice::from_ref(&listed), REVIEWS, "shop", "istio-system", "v2").is_ok());
        assert!(find_subset(std::slice::from_ref(&listed), REVIEWS, "web", "istio-system", "v2").is_err());
        // A private rule in the service namespace is skipped; the root's exported one applies.
        let root = rule("istio-system", "mesh", REVIEWS, &["v2"]);
        assert_eq!(found(find_subset(&[private, root], REVIEWS, "shop", "istio-system", "v2")).1, "mesh");
    }

    #[test]
    fn the_most_specific_host_wins_and_same_host_rules_merge() {
        let wide = rule("bookinfo", "all", "*.bookinfo.svc.cluster.local", &["v1", "v2"]);
        let exact = rule("bookinfo", "reviews", "reviews", &["v1"]);
        let err = find_subset(&[wide.clone(), exact.clone()], REVIEWS, "bookinfo", "istio-system", "v2")
            .unwrap_err();
        assert!(matches!(&err, SubsetError::NoSubset(m) if m.name == "reviews"), "{err}");
        assert_eq!(
            found(find_subset(std::slice::from_ref(&wide), REVIEWS, "bookinfo", "istio-system", "v2")).1,
            "all"
        );
        // Two rules for the same host in one namespace: subsets combine, the older wins a name.
        let mut newer = rule("bookinfo", "reviews-canary", REVIEWS, &["v1", "v2"]);
        newer["metadata"]["creationTimestamp"] = json!("2026-02-01T00:00:00Z");
        newer["spec"]["subsets"][1]["labels"]["track"] = json!("canary");
        let r =
            find_subset(&[newer.clone(), exact.clone()], REVIEWS, "bookinfo", "istio-system", "v2").unwrap();
        assert_eq!((r.name.as_str(), r.labels["track"].as_str()), ("reviews-canary", "canary"));
        let r = find_subset(&[newer, exact], REVIEWS, "bookinfo", "istio-system", "v1").unwrap();
        assert_eq!(r.name, "reviews");
    }

    #[test]
    fn workload_scoped_rules_and_external_hosts() {
        let mut scoped = rule("bookinfo", "scoped", "reviews", &["v2"]);
        scoped["spec"]["workloadSelector"] = json!({"matchLabels": {"app": "x"}});
        assert!(find_subset(&[scoped], REVIEWS, "bookinfo", "istio-system", "v2").is_err());
        let external = rule("shop", "payments", "api.example.com", &["v2"]);
        assert_eq!(
            found(find_subset(&[external], "api.example.com", "shop", "istio-system", "v2")).1,
            "payments"
        );
    }
}
