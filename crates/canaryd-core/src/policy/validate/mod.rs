//! Semantic rules a typed policy must satisfy. Every rule names the field and says what is
//! allowed; all problems are collected, none stops the others. Custom queries are checked in
//! `queries.rs`, secrets, alerts and gates in `notify.rs`.

use super::diagnostic::Diagnostic;
use super::load::PolicyDocument;
use super::locate::LocationIndex;
use super::spec::*;
use super::Origin;
use std::collections::HashSet;

mod notify;
mod queries;

pub use notify::is_email_address;

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
}
