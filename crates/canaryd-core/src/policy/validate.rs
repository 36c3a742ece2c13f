//! Semantic rules a typed policy must satisfy. Every rule names the field and says what is
//! allowed; all problems are collected, none stops the others.

use super::diagnostic::Diagnostic;
use super::load::PolicyDocument;
use super::locate::LocationIndex;
use super::spec::*;
use super::Origin;
use std::collections::HashSet;

/// Runs every rule over `doc`; positions come from `index` (empty for custom resources).
/// `origin` decides which secret sources the policy may use (see [`Origin`]).
pub fn validate(file: &str, index: &LocationIndex, doc: &PolicyDocument, origin: Origin) -> Vec<Diagnostic> {
    let mut v = Validator { file, index, origin, out: Vec::new() };
    v.header(doc);
    let spec = &doc.spec;
    v.target(&spec.target);
    v.steps(spec);
    v.analysis(&spec.analysis);
    v.custom_queries(doc);
    if let Some(schedule) = &spec.schedule {
        v.schedule(schedule);
    }
    v.alerts(&spec.alerts);
    v.gates(&spec.gates);
    v.out
}

struct Validator<'a> {
    file: &'a str,
    index: &'a LocationIndex,
    origin: Origin,
    out: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>, help: impl Into<String>) {
        let d = Diagnostic::at(self.file, self.index.position(field), field, message.into());
        self.out.push(d.help(help));
    }

    /// An error at byte `offset` of the string `value` of `field`: the position inside the value
    /// when the source is known, else the field's (and the offset in the message).
    fn err_in(&mut self, field: &str, value: &str, offset: usize, message: String, help: impl Into<String>) {
        let (pos, message) = match self.index.position_in_value(field, value, offset) {
            Some(pos) => (Some(pos), message),
            None => (self.index.position(field), format!("{message} (at byte {offset} of the query)")),
        };
        self.out.push(Diagnostic::at(self.file, pos, field, message).help(help));
    }

    /// Every custom query parses as PromQL once its variables have sample values, returns one
    /// number, and — for a RolloutPolicy resource — stays within the tenant bounds and can be
    /// confined to the namespace (see `promql::confine`).
    fn custom_queries(&mut self, doc: &PolicyDocument) {
        use crate::promql::{confine, syntax, Side, TemplateError};
        let spec = &doc.spec;
        // Values of the kind the daemon substitutes: the real names, and a window such as the
        // daemon renders (`60s`), so that `[{{ interval }}]` is a valid range.
        let vars = crate::promql::TemplateVars {
            namespace: doc.metadata.namespace.clone().unwrap_or_else(|| "default".to_string()),
            canary_workload: super::compiled::default_workload(
                &spec.target.canary,
                &spec.target.virtual_service,
            ),
            baseline_workload: super::compiled::default_workload(
                &spec.target.stable,
                &spec.target.virtual_service,
            ),
            virtual_service: spec.target.virtual_service.clone(),
            interval: "60s".to_string(),
        };
        for (i, c) in spec.analysis.custom.iter().enumerate() {
            let field = format!("spec.analysis.custom[{i}].query");
            let q = &c.query;
            if q.trim().is_empty() {
                continue; // reported by `analysis`
            }
            let template_problems = crate::promql::check(q);
            for e in &template_problems {
                // Unknown names are reported by `analysis`, with a suggestion.
                if !matches!(e, TemplateError::Unknown { .. }) {
                    let message = e.to_string();
                    let message = message.split_once(": ").map_or(message.as_str(), |(_, m)| m).to_string();
                    self.err_in(
                        &field,
                        q,
                        e.offset(),
                        message,
                        "variables are written `{{ name }}`, e.g. `{{ namespace }}`",
                    );
                }
            }
            if !template_problems.is_empty() {
                continue;
            }
            let rendered = match vars.render_mapped(q, Side::Canary) {
                Ok(r) => r,
                Err(e) => {
                    let message = e.to_string();
                    let message = message.split_once(": ").map_or(message.as_str(), |(_, m)| m).to_string();
                    self.err_in(&field, q, e.offset(), message, "e.g. `{namespace=\"{{ namespace }}\"}`");
                    continue;
                }
            };
            let expr = match syntax::parse(&rendered.text) {
                Ok(expr) => expr,
                Err(e) => {
                    let offset = rendered.template_offset(e.offset);
                    self.err_in(
                        &field,
                        q,
                        offset,
                        format!("not valid PromQL: {}", e.message),
                        "the query is parsed with its variables replaced by values of their kind \
                         (`{{ interval }}` by `60s`); see prometheus.io/docs/prometheus/latest/querying/basics/",
                    );
                    continue;
                }
            };
            use promql_parser::parser::value::ValueType;
            let returns = expr.value_type();
            if !matches!(returns, ValueType::Scalar | ValueType::Vector) {
                let what = if returns == ValueType::Matrix { "a range vector" } else { "a string" };
                self.err(
                    &field,
                    format!("the query returns {what}, not a number"),
                    "a custom check reads one number: a scalar or an instant vector of one series, \
                     e.g. `sum(rate(x[{{ interval }}]))` rather than `x[{{ interval }}]`",
                );
            }
            if self.origin == Origin::Resource {
                for over in confine::bounds(&expr) {
                    self.err(
                        &field,
                        format!("{} is too large for a RolloutPolicy resource", over.what),
                        format!(
                            "{}; custom queries of resources are bounded so that one tenant cannot load \
                             Prometheus (policy files the operator mounts are not)",
                            over.allowed
                        ),
                    );
                }
                if let Err(e) = confine::confine(&expr, &confine::TenantLabel::default(), &vars.namespace) {
                    self.err(
                        &field,
                        e.to_string(),
                        "a RolloutPolicy resource's queries are rewritten to read only its namespace; \
                         write this part differently (e.g. no `@` before 1970)",
                    );
                }
            }
        }
    }

    fn header(&mut self, doc: &PolicyDocument) {
        if doc.api_version != API_VERSION {
            self.err(
                "apiVersion",
                format!("{:?} is not supported", doc.api_version),
                format!("write `apiVersion: {API_VERSION}`"),
            );
        }
        if doc.kind != "RolloutPolicy" {
            self.err("kind", format!("{:?} is not a policy kind", doc.kind), "write `kind: RolloutPolicy`");
        }
        self.dns_label("metadata.name", &doc.metadata.name);
        if let Some(ns) = &doc.metadata.namespace {
            self.dns_label("metadata.namespace", ns);
        }
    }

    fn dns_label(&mut self, field: &str, value: &str) {
        let ok = !value.is_empty()
            && value.len() <= 63
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !value.starts_with('-')
            && !value.ends_with('-');
        if !ok {
            self.err(field, format!("{value:?} is not a valid name"), "names are 1–63 lower-case letters, digits and '-', starting and ending with a letter or digit");
        }
    }

    fn dns_subdomain(&mut self, field: &str, value: &str) {
        let ok = !value.is_empty()
            && value.len() <= 253
            && value.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            self.err(
                field,
                format!("{value:?} is not a valid name"),
                "names are lower-case letters, digits, '-' and '.', at most 253 characters",
            );
        }
    }

    fn target(&mut self, t: &Target) {
        self.dns_subdomain("spec.target.virtualService", &t.virtual_service);
        if let Some(route) = &t.route {
            if route.is_empty() {
                self.err("spec.target.route", "the route name is empty", "name an entry of the VirtualService's `spec.http[].name`, or leave `route` out when there is only one route");
            }
        }
        for (side, d) in [("stable", &t.stable), ("canary", &t.canary)] {
            if d.subset.is_empty() {
                self.err(
                    &format!("spec.target.{side}.subset"),
                    "the subset is empty",
                    "name a subset of the host's DestinationRule, e.g. `v1`",
                );
            }
            if let Some(host) = &d.host {
                self.dns_subdomain(&format!("spec.target.{side}.host"), host);
            }
            if let Some(w) = &d.workload {
                self.dns_subdomain(&format!("spec.target.{side}.workload"), w);
            }
        }
        if t.stable.subset == t.canary.subset && t.stable.host == t.canary.host {
            self.err(
                "spec.target.canary",
                format!("the canary is the same destination as stable (subset {:?})", t.canary.subset),
                "stable and canary must differ in subset or host",
            );
        }
        if t.stable.workload.is_some() && t.stable.workload == t.canary.workload {
            self.err(
                "spec.target.canary.workload",
                "the canary workload is the stable workload",
                "each side needs its own Deployment",
            );
        }
    }

    fn steps(&mut self, spec: &RolloutPolicySpec) {
        if spec.steps.is_empty() {
            self.err(
                "spec.steps",
                "the plan has no steps",
                "list at least one step, e.g. `- weight: 10`; leave `steps` out for 10, 30, 60",
            );
        }
        let mut last_weight: Option<(usize, u32)> = None;
        for (i, step) in spec.steps.iter().enumerate() {
            let f = format!("spec.steps[{i}]");
            let kinds = [step.weight.is_some(), step.header_match.is_some(), step.mirror.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                self.err(
                    &f,
                    "a step needs exactly one of `weight`, `headerMatch` or `mirror`",
                    "e.g. `- weight: 10` or `- headerMatch: {header: end-user, exact: jason}`",
                );
            }
            if let (Some(_), PromotionMode::BlueGreen) = (step.weight, spec.promotion.mode) {
                self.err(
                    &format!("{f}.weight"),
                    "a blue-green plan judges the new version without live traffic",
                    "use `mirror: {percent: 100}` or `headerMatch` steps (the switch to 100% is the promotion), or `promotion.mode: shift` or `copy` for a weighted canary",
                );
            }
            if let Some(w) = step.weight {
                let field = format!("{f}.weight");
                let prev = last_weight.map(|(j, pw)| format!(" (step {j} has {pw})")).unwrap_or_default();
                if w > 100 {
                    self.err(
                        &field,
                        format!("{w} is not a percentage"),
                        format!("weights are 0–100 and must rise from step to step{prev}"),
                    );
                } else if w == 100 {
                    self.err(
                        &field,
                        "a step at 100% leaves no baseline traffic to compare the canary with",
                        "end the plan below 100 (e.g. 50); promotion then gives the canary 100% (`promotion.mode: shift`)",
                    );
                } else if w == 0 {
                    self.err(
                        &field,
                        "a weight step of 0 sends the canary nothing to judge",
                        "use 1–100; header-match and mirror steps test without weight",
                    );
                } else if let Some((j, pw)) = last_weight {
                    if w <= pw {
                        self.err(
                            &field,
                            format!("{w} does not rise above step {j}'s {pw}"),
                            "weights are 0–100 and must rise from step to step",
                        );
                    }
                }
                last_weight = Some((i, w));
            }
            if let Some(h) = &step.header_match {
                let hf = format!("{f}.headerMatch");
                if h.header.is_empty()
                    || h.header
                        .bytes()
                        .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
                {
                    self.err(
                        &format!("{hf}.header"),
                        format!("{:?} is not a header name", h.header),
                        "header names are lower case, e.g. `end-user`",
                    );
                }
                let conds = [&h.exact, &h.prefix, &h.regex].iter().filter(|c| c.is_some()).count();
                if conds != 1 {
                    self.err(
                        &hf,
                        "a header match needs exactly one of `exact`, `prefix` or `regex`",
                        "e.g. `exact: jason`",
                    );
                }
            }
            if let Some(m) = &step.mirror {
                if m.percent == 0 || m.percent > 100 {
                    self.err(
                        &format!("{f}.mirror.percent"),
                        format!("{} is not a mirror percentage", m.percent),
                        "mirror 1–100 percent of requests",
                    );
                }
            }
            let bake = step.bake.unwrap_or(spec.analysis.default_bake);
            // With `auto` the judge looks at every scrape: any bake holds a look.
            if let Some(interval) = spec.analysis.interval.fixed().filter(|i| bake < *i) {
                let field = if step.bake.is_some() {
                    format!("{f}.bake")
                } else {
                    "spec.analysis.defaultBake".to_string()
                };
                self.err(
                    &field,
                    format!("bake {bake} is shorter than the analysis interval {interval}"),
                    "the judge would never look at this step; bake at least one interval",
                );
            }
        }
    }

    fn analysis(&mut self, a: &Analysis) {
        if let Some(interval) = a.interval.fixed().filter(|i| !(10..=3600).contains(&i.as_secs())) {
            self.err(
                "spec.analysis.interval",
                format!("{interval} is out of range"),
                "the interval is 10s–1h (Prometheus needs a few scrapes per interval), or auto to look at every scrape",
            );
        }
        if !(0.8..=0.9999).contains(&a.confidence) {
            self.err(
                "spec.analysis.confidence",
                format!("{} is out of range", a.confidence),
                "confidence is 0.8–0.9999, e.g. 0.99",
            );
        }
        let sr = &a.success_rate;
        if !(sr.tolerance > 0.0 && sr.tolerance <= 50.0) {
            self.err(
                "spec.analysis.successRate.tolerance",
                format!("{} is out of range", sr.tolerance),
                "the tolerance is in percentage points, more than 0 and at most 50, e.g. 1",
            );
        }
        if let Some(m) = sr.max_error_rate {
            if !(m > 0.0 && m <= 100.0) {
                self.err(
                    "spec.analysis.successRate.maxErrorRate",
                    format!("{m} is not a percentage"),
                    "a percentage of requests, more than 0 and at most 100",
                );
            }
        }
        let lat = &a.latency;
        if !(0.5..=0.999).contains(&lat.quantile) {
            self.err(
                "spec.analysis.latency.quantile",
                format!("{} is out of range", lat.quantile),
                "the quantile is 0.5–0.999, e.g. 0.99 for p99",
            );
        }
        if !(lat.tolerance > 0.0 && lat.tolerance <= 1000.0) {
            self.err("spec.analysis.latency.tolerance", format!("{} is out of range", lat.tolerance), "the tolerance is a percentage of the baseline's latency, more than 0 and at most 1000, e.g. 20");
        }
        if let Some(m) = lat.max_ms {
            if !(m > 0.0 && m.is_finite()) {
                self.err(
                    "spec.analysis.latency.maxMs",
                    format!("{m} is not a latency"),
                    "milliseconds, more than 0",
                );
            }
        }
        let mut names = HashSet::new();
        for (i, c) in a.custom.iter().enumerate() {
            let f = format!("spec.analysis.custom[{i}]");
            self.dns_label(&format!("{f}.name"), &c.name);
            if ["success-rate", "success-rate-guardrail", "latency", "latency-guardrail"]
                .contains(&c.name.as_str())
                || !names.insert(c.name.clone())
            {
                self.err(
                    &format!("{f}.name"),
                    format!("the check name {:?} is taken", c.name),
                    "custom check names are unique and differ from the built-in checks",
                );
            }
            if c.query.trim().is_empty() {
                self.err(
                    &format!("{f}.query"),
                    "the query is empty",
                    "write a PromQL expression that returns one value",
                );
            }
            for (var, _) in crate::promql::template_variables(&c.query) {
                if !crate::promql::TEMPLATE_VARIABLES.contains(&var.as_str()) {
                    let hint = super::diagnostic::did_you_mean(
                        &var,
                        crate::promql::TEMPLATE_VARIABLES.iter().copied(),
                    )
                    .map(|s| format!("did you mean `{{{{ {s} }}}}`? "))
                    .unwrap_or_default();
                    self.err(
                        &format!("{f}.query"),
                        format!("the template variable `{{{{ {var} }}}}` does not exist"),
                        format!("{hint}variables: {}", crate::promql::TEMPLATE_VARIABLES.join(", ")),
                    );
                }
            }
            match c.mode {
                CustomMode::Threshold => {
                    if c.min.is_none() && c.max.is_none() {
                        self.err(&f, "a threshold check needs `min`, `max` or both", "e.g. `max: 0.5`");
                    }
                    if let (Some(lo), Some(hi)) = (c.min, c.max) {
                        if lo > hi {
                            self.err(
                                &format!("{f}.min"),
                                format!("min {lo} is above max {hi}"),
                                "min must not exceed max",
                            );
                        }
                    }
                }
                CustomMode::Compare => match c.tolerance {
                    None => self.err(
                        &f,
                        "a compare check needs `tolerance`",
                        "the allowed increase over the baseline in percent, e.g. `tolerance: 10`",
                    ),
                    Some(t) if !(0.0..=1000.0).contains(&t) => {
                        self.err(&format!("{f}.tolerance"), format!("{t} is out of range"), "0–1000 percent")
                    }
                    Some(_) => {}
                },
            }
        }
        if a.on_inconclusive.max_extensions > 100 {
            self.err(
                "spec.analysis.onInconclusive.maxExtensions",
                format!("{} is too many", a.on_inconclusive.max_extensions),
                "at most 100 extensions; use `action: hold` to wait indefinitely",
            );
        }
        if a.max_consecutive_errors == 0 {
            self.err(
                "spec.analysis.maxConsecutiveErrors",
                "0 would abort on the first unreadable interval",
                "at least 1; the default is 4",
            );
        }
    }

    fn schedule(&mut self, s: &Schedule) {
        if let Err(e) = crate::schedule::parse_cron(&s.cron) {
            self.err(
                "spec.schedule.cron",
                format!("{:?} is not a cron expression: {e}", s.cron),
                "five fields: minute hour day-of-month month day-of-week, e.g. `0 2 * * *` for 02:00 daily",
            );
        }
        if jiff::tz::TimeZone::get(&s.time_zone).is_err() {
            let hint = ["Europe/Berlin", "America/New_York", "Asia/Shanghai", "UTC"];
            self.err(
                "spec.schedule.timeZone",
                format!("{:?} is not a known time zone", s.time_zone),
                format!("use an IANA name such as {}", hint.join(", ")),
            );
        }
        let w = s.window.as_secs();
        if !(60..=7 * 86_400).contains(&w) {
            self.err("spec.schedule.window", format!("{} is out of range", s.window), "a window lasts 1m–7d");
        }
        let mut seen = HashSet::new();
        for (i, d) in s.days.iter().enumerate() {
            if !seen.insert(*d) {
                self.err(
                    &format!("spec.schedule.days[{i}]"),
                    format!("{d:?} is listed twice"),
                    "list each day once",
                );
            }
        }
    }

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

    fn alerts(&mut self, a: &Alerts) {
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

    fn gates(&mut self, gates: &[Gate]) {
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

#[cfg(test)]
mod query_tests {
    use crate::policy::{from_resource, parse_policy, RolloutPolicy, RolloutPolicySpec};

    /// A policy file whose first custom check has `query` (already indented YAML after `query:`).
    fn policy(query: &str) -> String {
        format!(
            "apiVersion: canaryd.io/v1alpha1\n\
             kind: RolloutPolicy\n\
             metadata: {{name: reviews, namespace: shop}}\n\
             spec:\n\
             \x20 target: {{virtualService: reviews, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n\
             \x20 analysis:\n\
             \x20   custom:\n\
             \x20     - name: queue-depth\n\
             \x20       query: {query}\n\
             \x20       max: 10\n"
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_policy("p.yaml", text) {
            Ok(_) => vec![],
            Err(d) => d.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_promql_syntax_error_is_located_inside_a_multi_line_query() {
        let text = policy(
            ">-\n          sum(rate(queue_depth{namespace=\"{{ namespace }}\"}[{{ interval }}]))\n            * * 2",
        );
        assert_eq!(text.lines().nth(10), Some("            * * 2"));
        assert_eq!(
            errors(&text),
            ["error: p.yaml:11:15: spec.analysis.custom[0].query: not valid PromQL: unexpected `*` (invalid \
              promql query)\n  the query is parsed with its variables replaced by values of their kind \
              (`{{ interval }}` by `60s`); see prometheus.io/docs/prometheus/latest/querying/basics/"]
        );
    }

    #[test]
    fn the_position_survives_substitution_and_yaml_escapes() {
        // Double-quoted YAML: `\"` is one character of the query, the variables are longer
        // than their values; the error is at `y`.
        let text = policy(r#""sum(x{a=\"{{ canaryWorkload }}\", b=\"{{ virtualService }}\"}) by (le) y""#);
        let line = text.lines().nth(8).unwrap();
        let col = line.find(" y\"").unwrap() + 2;
        let err = errors(&text);
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with(&format!(
                "error: p.yaml:9:{col}: spec.analysis.custom[0].query: not valid PromQL: unexpected `y`"
            )),
            "{err:?}"
        );
        // A type error points at the function it names.
        let text = policy("rate(x[1m]) + rate(x)");
        assert!(errors(&text)[0].starts_with("error: p.yaml:9:30: spec.analysis.custom[0].query: not valid PromQL: expected type matrix in call to function 'rate', got vector"), "{:?}", errors(&text));
    }

    #[test]
    fn templates_in_every_place_cause_no_false_syntax_error() {
        for query in [
            r#"sum(rate(x{namespace="{{ namespace }}",pod=~'{{ workload }}-.*'}[{{ interval }}]))"#,
            r#"max_over_time(rate(x{vs=`{{ virtualService }}`}[1m] offset {{ interval }})[{{ interval }}:])"#,
            r#"sum(x{w="{{ canaryWorkload }}"}) / sum(x{w="{{ baselineWorkload }}"}) # {{ interval }}"#,
            r#"histogram_quantile(0.9, sum by (le) (rate(app_seconds_bucket{workload="{{ workload }}"}[{{ interval }}])))"#,
        ] {
            let text = policy(&format!("'{}'", query.replace('\'', "''")));
            assert_eq!(errors(&text), Vec::<String>::new(), "{query}");
        }
        // A bare variable whose value is no plain token would fail at run time: said now.
        let err = errors(&policy("x{a=\"b\"} + {{ canaryWorkload }}"));
        assert!(err[0].contains("p.yaml:9:27: spec.analysis.custom[0].query: the value of `canaryWorkload` is not a plain token"), "{err:?}");
        // A malformed variable is located too.
        let err = errors(&policy("x{a=\"{{ namespace\"}"));
        assert!(err[0].contains("p.yaml:9:21:") && err[0].contains("is not closed"), "{err:?}");
    }

    #[test]
    fn a_query_must_return_a_number() {
        let err = errors(&policy("x[{{ interval }}]"));
        assert!(err[0].contains("the query returns a range vector, not a number"), "{err:?}");
    }

    fn resource(queries: &[&str]) -> RolloutPolicy {
        let custom: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| format!("{{name: c{i}, query: '{q}', max: 1}}"))
            .collect();
        let spec = format!(
            "target: {{virtualService: reviews, stable: {{subset: v1}}, canary: {{subset: v2}}}}\nanalysis: {{custom: [{}]}}",
            custom.join(", ")
        );
        let spec: RolloutPolicySpec = serde_saphyr::from_str(&spec).unwrap();
        let mut rp = RolloutPolicy::new("reviews", spec);
        rp.metadata.namespace = Some("shop".into());
        rp
    }

    #[test]
    fn a_resource_query_is_bounded_and_must_be_confinable() {
        let queries = [
            "sum(rate(x[2h]))",
            "x offset 2d",
            "max_over_time(x[30m:1s])",
            "x @ -100",
            "rate(x[1h]) + y offset 1d",
            "sum(x) * * 2",
        ];
        let err = from_resource(&resource(&queries)).unwrap_err().to_string();
        assert!(err.contains("custom[0].query: range [2h] of `x[2h]` is too large for a RolloutPolicy resource\n  ranges are at most 1h"), "{err}");
        assert!(err.contains("custom[1].query: offset 2d of `x offset 2d` is too large"), "{err}");
        assert!(err.contains("custom[2].query: subquery step 1s of `x[30m:1s]` is too large"), "{err}");
        assert!(err.contains("custom[3].query: the query cannot be confined to its namespace"), "{err}");
        assert!(!err.contains("custom[4]"), "{err}");
        // Without a file, the position is the byte in the query.
        assert!(err.contains("custom[5].query: not valid PromQL: unexpected `*` (invalid promql query) (at byte 9 of the query)"), "{err}");
        // The same queries in an operator's file are not bounded (only the syntax error remains).
        let file = policy("'rate(x[2h] offset 2d) + max_over_time(x[30m:1s]) + (x @ -100)'");
        assert_eq!(errors(&file), Vec::<String>::new());
    }
}
