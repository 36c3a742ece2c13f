//! Istio's host names: how a short name in a rule becomes a fully qualified one, and how a
//! rule's (possibly wildcard) host matches a service's.
//!
//! Istio's rule (VirtualService `hosts`, `Destination.host`, DestinationRule `host`): "When
//! short names are used (e.g. `reviews` instead of `reviews.default.svc.cluster.local`), Istio
//! will interpret the short name based on the namespace of the rule, not the service", and a
//! short name is one **without dots**. A name with a dot is taken as written: `reviews.other`
//! is *not* expanded to `reviews.other.svc.cluster.local` (Kubernetes DNS search paths would
//! resolve it for a client, but Istio's configuration matching does not), so a rule naming
//! `reviews.other` does not apply to `reviews.other.svc.cluster.local`. `*`, IP addresses and
//! names with dots (`reviews.other.svc.cluster.local`, `api.example.com`) stay as they are.

/// The cluster DNS domain when nothing says otherwise.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The fully qualified form of `host` in a rule of `namespace`: a name without dots becomes
/// `<host>.<namespace>.svc.<domain>`; anything else is returned as written (see the module
/// docs).
pub fn fqdn(host: &str, namespace: &str, domain: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') || host.contains(':') {
        return host.to_string();
    }
    format!("{host}.{namespace}.svc.{domain}")
}

/// The namespace of a Kubernetes service host `<name>.<namespace>.svc.<domain>`, and its
/// domain; `None` for other hosts (external names, ServiceEntry hosts).
pub fn service_namespace(host: &str) -> Option<(&str, &str)> {
    let mut parts = host.splitn(4, '.');
    let (_name, ns, svc, domain) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (svc == "svc" && !ns.is_empty() && !domain.is_empty()).then_some((ns, domain))
}

/// The Kubernetes service a host names, as Istio's telemetry labels it
/// (`destination_service_namespace`, `destination_service_name`): a short name is a service of
/// `namespace`; `name.ns…` (`name.ns`, `name.ns.svc`, an FQDN) a service of `ns`.
pub fn service_of<'h>(host: &'h str, namespace: &'h str) -> (&'h str, &'h str) {
    let mut labels = host.split('.');
    let name = labels.next().unwrap_or(host);
    (labels.next().filter(|ns| !ns.is_empty()).unwrap_or(namespace), name)
}

/// Whether a rule's host `pattern` (fully qualified; `*` or `*.suffix` wildcards) covers the
/// service `host`, as Istio matches them: `*.bookinfo.svc.cluster.local` covers every host
/// ending in `.bookinfo.svc.cluster.local`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// How specific a matching pattern is: an exact name beats every wildcard, a longer wildcard
/// beats a shorter one.
pub(super) fn specificity(pattern: &str) -> (bool, usize) {
    (!pattern.starts_with('*'), pattern.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_expanded_in_the_rules_namespace_and_dotted_names_kept() {
        let d = DEFAULT_DOMAIN;
        assert_eq!(fqdn("reviews", "bookinfo", d), "reviews.bookinfo.svc.cluster.local");
        assert_eq!(fqdn("reviews", "bookinfo", "corp.internal"), "reviews.bookinfo.svc.corp.internal");
        assert_eq!(fqdn("reviews.other", "bookinfo", d), "reviews.other");
        assert_eq!(fqdn("reviews.other.svc", "bookinfo", d), "reviews.other.svc");
        assert_eq!(fqdn("reviews.other.svc.cluster.local", "bookinfo", d), "reviews.other.svc.cluster.local");
        assert_eq!(fqdn("api.example.com", "bookinfo", d), "api.example.com");
        assert_eq!(fqdn("*", "bookinfo", d), "*");
        assert_eq!(fqdn("10.0.0.1", "bookinfo", d), "10.0.0.1");
        assert_eq!(fqdn("::1", "bookinfo", d), "::1");
    }

    #[test]
    fn service_hosts_name_their_namespace() {
        assert_eq!(
            service_namespace("reviews.bookinfo.svc.cluster.local"),
            Some(("bookinfo", "cluster.local"))
        );
        assert_eq!(service_namespace("api.example.com"), None);
        assert_eq!(service_namespace("reviews"), None);
    }

    #[test]
    fn wildcards_match_by_suffix() {
        let host = "reviews.bookinfo.svc.cluster.local";
        assert!(host_matches("*", host));
        assert!(host_matches("*.bookinfo.svc.cluster.local", host));
        assert!(host_matches("*.svc.cluster.local", host));
        assert!(host_matches(host, host));
        assert!(!host_matches("*.other.svc.cluster.local", host));
        assert!(!host_matches("*.reviews.bookinfo.svc.cluster.local", host));
        assert!(!host_matches("ratings.bookinfo.svc.cluster.local", host));
        assert!(specificity(host) > specificity("*.bookinfo.svc.cluster.local"));
        assert!(specificity("*.bookinfo.svc.cluster.local") > specificity("*.svc.cluster.local"));
    }

    #[test]
    fn a_host_names_the_service_istios_telemetry_labels() {
        assert_eq!(service_of("reviews", "bookinfo"), ("bookinfo", "reviews"));
        assert_eq!(service_of("reviews.shop", "bookinfo"), ("shop", "reviews"));
        assert_eq!(service_of("reviews.shop.svc.cluster.local", "bookinfo"), ("shop", "reviews"));
    }
}
