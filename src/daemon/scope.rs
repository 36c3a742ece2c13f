//! Which namespaces the daemon manages: all of them (a cluster-wide install) or a fixed list
//! (`--namespace a,b`: a namespaced install whose RBAC is a Role per listed namespace).
//!
//! The list is enforced in the daemon as well as by RBAC, so a namespaced install behaves the
//! same whatever its Roles grant: RolloutPolicies are listed per namespace, a policy file for
//! another namespace is refused with a message instead of failing on 403s, and no Secret is
//! read outside the list.

use std::collections::BTreeSet;
use std::fmt;

/// The namespaces the daemon may act in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NamespaceScope {
    /// Every namespace (`--namespace` not given).
    #[default]
    All,
    /// Only these (non-empty, valid DNS-1123 labels).
    Only(BTreeSet<String>),
}

impl NamespaceScope {
    /// The scope of `--namespace` values (each may itself be a comma-separated list); an empty
    /// list is every namespace. Names must be DNS-1123 labels, as Kubernetes requires.
    pub fn from_flags(values: &[String]) -> Result<Self, String> {
        let mut names = BTreeSet::new();
        for name in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
            if !is_dns_label(name) {
                return Err(format!(
                    "--namespace {name:?}: not a namespace name (lower-case letters, digits and '-', \
                     at most 63 characters, starting and ending with a letter or digit)"
                ));
            }
            names.insert(name.to_string());
        }
        Ok(if names.is_empty() { NamespaceScope::All } else { NamespaceScope::Only(names) })
    }

    /// True when the daemon may act in `namespace`.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            NamespaceScope::All => true,
            NamespaceScope::Only(names) => names.contains(namespace),
        }
    }

    /// The listed namespaces; `None` for every namespace.
    pub fn namespaces(&self) -> Option<&BTreeSet<String>> {
        match self {
            NamespaceScope::All => None,
            NamespaceScope::Only(names) => Some(names),
        }
    }
}

impl fmt::Display for NamespaceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamespaceScope::All => f.write_str("all namespaces"),
            NamespaceScope::Only(names) => {
                f.write_str(&names.iter().map(String::as_str).collect::<Vec<_>>().join(","))
            }
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_a_scope() {
        assert_eq!(NamespaceScope::from_flags(&[]).unwrap(), NamespaceScope::All);
        let s = NamespaceScope::from_flags(&["shop,bookinfo".into(), "payments".into()]).unwrap();
        assert!(s.contains("shop") && s.contains("bookinfo") && s.contains("payments"));
        assert!(!s.contains("kube-system") && !s.contains(""));
        assert_eq!(s.to_string(), "bookinfo,payments,shop");
        assert!(NamespaceScope::All.contains("anything"));
    }

    #[test]
    fn invalid_names_are_refused_with_the_rule() {
        for bad in ["Shop", "-shop", "shop-", "a_b", &"x".repeat(64)] {
            let e = NamespaceScope::from_flags(&[bad.to_string()]).unwrap_err();
            assert!(e.contains("not a namespace name"), "{bad}: {e}");
        }
    }
}
