//! Secrets, alerts and gates: where credentials may come from, and addresses and URLs that
//! will work at 02:00.

use super::Validator;
use crate::policy::spec::*;
use crate::policy::Origin;
use std::collections::HashSet;

impl Validator<'_> {
    fn secret(&mut self, field: &str, s: &SecretSource) {
        let n =
            [s.env.is_some(), s.file.is_some(), s.secret_key_ref.is_some()].iter().filter(|b| **b).count();
        if n != 1 {
            self.err(
                field,
                "a secret source needs exactly one of `env`, `file` or `secretKeyRef`",
                "e.g. `urlFrom: {secretKeyRef: {name: alerts, key: slack-url}}`",
            );
        }
        // A custom resource is a tenant's text acting through canaryd's identity: the
        // daemon's environment and files hold the operator's secrets (SMTP password, platform
        // webhook URLs), so only Secrets in the policy's own namespace may be named.
        if self.origin == Origin::Resource {
            for (set, kind) in [(s.env.is_some(), "env"), (s.file.is_some(), "file")] {
                if set {
                    self.err(
                        &format!("{field}.{kind}"),
                        format!("a RolloutPolicy resource may not read secrets from the daemon's `{kind}`"),
                        "store the value in a Secret in the policy's namespace and use \
                         `secretKeyRef: {name: <secret>, key: <key>}`; `env`/`file` are for \
                         policy files the operator mounts with --policies",
                    );
                }
            }
        }
    }

    pub(super) fn alerts(&mut self, a: &Alerts) {
        if let Some(email) = &a.email {
            if email.to.is_empty() {
                self.err(
                    "spec.alerts.email.to",
                    "no recipients",
                    "list at least one address, or leave `email` out",
                );
            }
            for (i, addr) in email.to.iter().enumerate() {
                if !is_email_address(addr) {
                    self.err(
                        &format!("spec.alerts.email.to[{i}]"),
                        format!("{addr:?} is not an email address"),
                        "write a plain address such as oncall@example.com",
                    );
                }
            }
        }
        let mut names = HashSet::new();
        for (i, w) in a.webhooks.iter().enumerate() {
            let f = format!("spec.alerts.webhooks[{i}]");
            if w.name.is_empty() || !names.insert(w.name.clone()) {
                self.err(
                    &format!("{f}.name"),
                    format!("webhook name {:?} is empty or taken", w.name),
                    "each webhook has its own name; it is what logs show instead of the URL",
                );
            }
            self.secret(&format!("{f}.urlFrom"), &w.url_from);
            if let Some(s) = &w.signing_secret_from {
                self.secret(&format!("{f}.signingSecretFrom"), s);
            }
        }
    }

    pub(super) fn gates(&mut self, gates: &[Gate]) {
        let mut names = HashSet::new();
        for (i, g) in gates.iter().enumerate() {
            let f = format!("spec.gates[{i}]");
            if g.name.is_empty() || !names.insert(g.name.clone()) {
                self.err(
                    &format!("{f}.name"),
                    format!("gate name {:?} is empty or taken", g.name),
                    "each gate has its own name",
                );
            }
            match (&g.url, &g.url_from) {
                (Some(url), None) => {
                    let ok = url::Url::parse(url)
                        .map(|u| u.scheme() == "http" || u.scheme() == "https")
                        .unwrap_or(false);
                    if !ok {
                        self.err(
                            &format!("{f}.url"),
                            format!("{url:?} is not an http(s) URL"),
                            "e.g. http://gate.ci.svc:8080/approve",
                        );
                    }
                }
                (None, Some(src)) => self.secret(&format!("{f}.urlFrom"), src),
                _ => self.err(
                    &f,
                    "a gate needs exactly one of `url` or `urlFrom`",
                    "write the URL, or `urlFrom` when it is a secret",
                ),
            }
            if g.timeout.as_secs() == 0 || g.timeout.as_secs() > 300 {
                self.err(&format!("{f}.timeout"), format!("{} is out of range", g.timeout), "1s–5m");
            }
        }
    }
}

/// A plain address `local@domain`: a dot-atom local part (RFC 5322 atext, no quoted strings)
/// and a DNS host name or a bracketed IP literal. Deliberately no stricter than the mail
/// adapter (lettre), which must accept every address this does (tested there), and no looser:
/// a policy never fails at 02:00 on an address validation let through.
pub fn is_email_address(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else { return false };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| !atom.is_empty() && atom.chars().all(atext));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let domain_ok = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        Some(ip) => ip.parse::<std::net::IpAddr>().is_ok(),
        None => domain.len() <= 253 && domain.split('.').all(label_ok),
    };
    local_ok && domain_ok
}

#[cfg(test)]
mod email_tests {
    use super::is_email_address;

    #[test]
    fn accepts_plain_addresses_and_rejects_the_rest() {
        for ok in ["oncall@example.com", "a.b+tag@sub.example.io", "x@localhost", "ops@[10.0.0.1]"] {
            assert!(is_email_address(ok), "{ok}");
        }
        for bad in [
            "",
            "oncall",
            "@example.com",
            "a@",
            "a..b@example.com",
            ".a@example.com",
            "a@-x.com",
            "a@x_y.com",
            "a b@example.com",
            "\"q\"@example.com",
            "a@[not-an-ip]",
            "a@example..com",
        ] {
            assert!(!is_email_address(bad), "{bad}");
        }
    }
}
