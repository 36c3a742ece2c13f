//! Custom queries: valid PromQL once their variables have sample values, one number, and —
//! for a RolloutPolicy resource — bounded and confinable to its namespace.

use super::Validator;
use crate::policy::load::PolicyDocument;
use crate::policy::Origin;

impl Validator<'_> {
    /// Every custom query parses as PromQL once its variables have sample values, returns one
    /// number, and — for a RolloutPolicy resource — stays within the tenant bounds and can be
    /// confined to the namespace (see `promql::confine`).
    pub(super) fn custom_queries(&mut self, doc: &PolicyDocument) {
        use crate::promql::{confine, syntax, Side, TemplateError};
        let spec = &doc.spec;
        // Values of the kind the daemon substitutes: the real names, and a window such as the
        // daemon renders (`60s`), so that `[{{ interval }}]` is a valid range.
        let vars = crate::promql::TemplateVars {
            namespace: doc.metadata.namespace.clone().unwrap_or_else(|| "default".to_string()),
            canary_workload: crate::policy::compiled::default_workload(
                &spec.target.canary,
                &spec.target.virtual_service,
            ),
            baseline_workload: crate::policy::compiled::default_workload(
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
