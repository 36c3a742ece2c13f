//! Confining a tenant's PromQL to its namespace, the way prom-label-proxy does.
//!
//! A RolloutPolicy resource is written by whoever may create one in its namespace and its
//! custom queries run with canaryd's Prometheus credentials, which read every namespace. So
//! before such a query is sent, every vector and matrix selector in it (inside functions,
//! aggregations, subqueries, both sides of binary operations) loses its matchers on the tenant
//! label and gains `<label>="<namespace>"`: whatever the query names, it reads only series
//! scraped in the policy's namespace. The rewritten syntax tree is printed back to PromQL and
//! parsed again; unless that gives the same tree the query is refused, never sent altered.
//!
//! Tenant queries are also bounded in cost ([`bounds`]), checked when the policy is validated.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::{Expr, LabelModifier, Offset, VectorSelector};

use super::syntax::{self, SyntaxError};

/// Longest range a tenant query may read through a range vector (`x[1h]`) or a subquery
/// (`(…)[1h:1m]`): a check judges one analysis window, and windows are at most 1h (the longest
/// `analysis.interval`). Longer ranges make Prometheus load more samples per series for no
/// judgement of the canary.
pub const MAX_RANGE: Duration = Duration::from_secs(3600);

/// Furthest back a tenant query may look with `offset`: the same time yesterday is the oldest
/// comparison a canary check needs; older data is usually on disk rather than in the head block.
pub const MAX_OFFSET: Duration = Duration::from_secs(86_400);

/// Finest subquery resolution a tenant query may ask for: one evaluation of the inner query
/// per step, so `[1h:10s]` is 360 evaluations; a millisecond step would be millions.
pub const MIN_SUBQUERY_STEP: Duration = Duration::from_secs(10);

/// The label that carries each series' namespace, on which tenant queries are confined.
/// `namespace` by default: the label Prometheus' usual `kubernetes_sd` relabelling puts on every
/// scraped series, Istio's sidecar metrics included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantLabel(String);

impl TenantLabel {
    /// The label name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantLabel {
    fn default() -> Self {
        TenantLabel("namespace".to_string())
    }
}

impl fmt::Display for TenantLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant label that is not a usable Prometheus label name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a label name: use letters, digits and '_', not starting with a digit or '__' \
     (e.g. namespace)"
)]
pub struct BadTenantLabel(String);

impl FromStr for TenantLabel {
    type Err = BadTenantLabel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            // `__name__` and the other `__` labels are Prometheus' own.
            && !s.starts_with("__");
        if ok {
            Ok(TenantLabel(s.to_string()))
        } else {
            Err(BadTenantLabel(s.to_string()))
        }
    }
}

/// Why a tenant query cannot be confined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfineError {
    /// The query is not valid PromQL.
    #[error("invalid PromQL: {0}")]
    Syntax(#[from] SyntaxError),
    /// The rewritten query does not print back to the same PromQL (a construct
    /// promql-parser cannot write faithfully), so sending it could read something else.
    #[error(
        "the query cannot be confined to its namespace: rewritten, it would read back as \
         `{printed}`, which is not the same query"
    )]
    NotFaithful {
        /// What promql-parser printed for the rewritten query.
        printed: String,
    },
}

/// Parses `query` (rendered: no template variables left) and confines it; see [`confine`].
pub fn confine_query(query: &str, label: &TenantLabel, namespace: &str) -> Result<String, ConfineError> {
    confine(&syntax::parse(query)?, label, namespace)
}

/// The PromQL text of `expr` with every vector and matrix selector confined to `namespace`:
/// every matcher on `label` removed and `label="namespace"` added (in each alternative of an
/// `or` of matchers). Refused unless the text parses back to exactly the rewritten tree.
pub fn confine(expr: &Expr, label: &TenantLabel, namespace: &str) -> Result<String, ConfineError> {
    let mut confined = expr.clone();
    rewrite(&mut confined, Some((label.as_str(), namespace)));
    faithful(&confined)
}

/// The text of `expr` if promql-parser prints it faithfully: it parses back to `expr` (up to
/// the printer's own spelling of the same query, see [`rewrite`]).
pub fn faithful(expr: &Expr) -> Result<String, ConfineError> {
    let mut expr = expr.clone();
    rewrite(&mut expr, None);
    let printed = expr.to_string();
    match syntax::parse(&printed) {
        Ok(back) if back == expr => Ok(printed),
        _ => Err(ConfineError::NotFaithful { printed }),
    }
}

/// Confines every selector to `(label, namespace)` when given, and writes two things the way
/// the printer does, so that "parses back to the same tree" can be checked exactly: label
/// matchers sorted (a conjunction, so order is meaningless; the printer sorts them) and an
/// empty `by ()` dropped (`sum by () (x)` is `sum(x)`, as printed).
fn rewrite(expr: &mut Expr, confine: Option<(&str, &str)>) {
    match expr {
        Expr::VectorSelector(vs) => selector(vs, confine),
        Expr::MatrixSelector(ms) => selector(&mut ms.vs, confine),
        Expr::Aggregate(a) => {
            if matches!(&a.modifier, Some(LabelModifier::Include(l)) if l.is_empty()) {
                a.modifier = None;
            }
            rewrite(&mut a.expr, confine);
            if let Some(param) = &mut a.param {
                rewrite(param, confine);
            }
        }
        Expr::Unary(u) => rewrite(&mut u.expr, confine),
        Expr::Binary(b) => {
            rewrite(&mut b.lhs, confine);
            rewrite(&mut b.rhs, confine);
        }
        Expr::Paren(p) => rewrite(&mut p.expr, confine),
        Expr::Subquery(s) => rewrite(&mut s.expr, confine),
        Expr::Call(c) => {
            for arg in &mut c.args.args {
                rewrite(arg, confine);
            }
        }
        // Literals read no series. The parser never produces an extension; one printed back
        // would not parse, so `faithful` refuses it.
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector(vs: &mut VectorSelector, confine: Option<(&str, &str)>) {
    let Matchers { matchers, or_matchers } = &mut vs.matchers;
    if let Some((label, namespace)) = confine {
        let own = Matcher::new(MatchOp::Equal, label, namespace);
        matchers.retain(|m| m.name != label);
        if or_matchers.is_empty() {
            matchers.push(own);
        } else {
            // `{a="1" or b="2"}` selects the union of its alternatives: each one is confined.
            for alternative in or_matchers.iter_mut() {
                alternative.retain(|m| m.name != label);
                alternative.push(own.clone());
            }
        }
    }
    matchers.sort_by_cached_key(ToString::to_string);
}

/// A part of a tenant query over its cost bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBound {
    /// What is too large, e.g. "range [2h] of `rate(x[2h])`".
    pub what: String,
    /// What is allowed, e.g. "ranges are at most 1h".
    pub allowed: String,
}

/// Every range, subquery step and offset of `expr` outside [`MAX_RANGE`], [`MIN_SUBQUERY_STEP`]
/// and [`MAX_OFFSET`].
pub fn bounds(expr: &Expr) -> Vec<OverBound> {
    let mut out = Vec::new();
    walk_bounds(expr, &mut out);
    out
}

fn walk_bounds(expr: &Expr, out: &mut Vec<OverBound>) {
    let range = |range: &Duration, of: &dyn fmt::Display, out: &mut Vec<OverBound>| {
        if *range > MAX_RANGE {
            out.push(OverBound {
                what: format!("range [{}] of `{of}`", show(range)),
                allowed: format!("ranges are at most {}", show(&MAX_RANGE)),
            });
        }
    };
    let offset = |offset: &Option<Offset>, of: &dyn fmt::Display, out: &mut Vec<OverBound>| {
        let d = match offset {
            Some(Offset::Pos(d) | Offset::Neg(d)) => d,
            None => return,
        };
        if *d > MAX_OFFSET {
            out.push(OverBound {
                what: format!(
                    "offset {} of `{of}`",
                    offset.as_ref().map(ToString::to_string).unwrap_or_default()
                ),
                allowed: format!("offsets are at most {}", show(&MAX_OFFSET)),
            });
        }
    };
    match expr {
        Expr::VectorSelector(vs) => offset(&vs.offset, vs, out),
        Expr::MatrixSelector(ms) => {
            range(&ms.range, ms, out);
            offset(&ms.vs.offset, ms, out);
        }
        Expr::Subquery(s) => {
            range(&s.range, s, out);
            offset(&s.offset, s, out);
            if let Some(step) = s.step.filter(|step| *step < MIN_SUBQUERY_STEP) {
                out.push(OverBound {
                    what: format!("subquery step {} of `{s}`", show(&step)),
                    allowed: format!("subquery steps are at least {}", show(&MIN_SUBQUERY_STEP)),
                });
            }
            walk_bounds(&s.expr, out);
        }
        Expr::Aggregate(a) => {
            walk_bounds(&a.expr, out);
            if let Some(p) = &a.param {
                walk_bounds(p, out);
            }
        }
        Expr::Unary(u) => walk_bounds(&u.expr, out),
        Expr::Binary(b) => {
            walk_bounds(&b.lhs, out);
            walk_bounds(&b.rhs, out);
        }
        Expr::Paren(p) => walk_bounds(&p.expr, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk_bounds(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// A duration as PromQL writes it (`1h`, `1d`, `90s` as `1m30s`).
fn show(d: &Duration) -> String {
    promql_parser::util::display_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> TenantLabel {
        TenantLabel::default()
    }

    fn confined(q: &str) -> String {
        confine_query(q, &ns(), "shop").unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    #[test]
    fn a_query_naming_another_namespace_reads_its_own() {
        assert_eq!(
            confined(r#"sum(rate(istio_requests_total{namespace="other",response_code=~"5.."}[1m]))"#),
            r#"sum(rate(istio_requests_total{namespace="shop",response_code=~"5.."}[1m]))"#
        );
    }

    #[test]
    fn regex_and_negative_matchers_on_the_label_are_replaced() {
        assert_eq!(confined(r#"up{namespace=~".*"}"#), r#"up{namespace="shop"}"#);
        assert_eq!(confined(r#"up{namespace!="x"}"#), r#"up{namespace="shop"}"#);
        assert_eq!(confined(r#"up{namespace!~"shop",namespace=~"a|b"}"#), r#"up{namespace="shop"}"#);
        assert_eq!(confined(r#"{namespace=~".+"}"#), r#"{namespace="shop"}"#);
    }

    #[test]
    fn a_selector_without_the_label_gains_it() {
        assert_eq!(confined("up"), r#"up{namespace="shop"}"#);
        assert_eq!(confined("rate(x[5m] offset 1h)"), r#"rate(x{namespace="shop"}[5m] offset 1h)"#);
    }

    #[test]
    fn name_matchers_are_kept_and_confined() {
        assert_eq!(
            confined(r#"sum({__name__=~"istio_.*_total"})"#),
            r#"sum({__name__=~"istio_.*_total",namespace="shop"})"#
        );
        assert_eq!(confined(r#"{"my.metric"}"#), r#"{__name__="my.metric",namespace="shop"}"#);
    }

    #[test]
    fn both_sides_of_binary_operations_and_every_argument_are_confined() {
        assert_eq!(
            confined(r#"a{namespace="x"} / on(pod) group_left b"#),
            r#"a{namespace="shop"} / on (pod) group_left () b{namespace="shop"}"#
        );
        assert_eq!(
            confined(r#"label_replace(up, "namespace", "other", "", "") or absent(x)"#),
            r#"label_replace(up{namespace="shop"}, "namespace", "other", "", "") or absent(x{namespace="shop"})"#
        );
        assert_eq!(
            confined("topk(scalar(y), x)"),
            r#"topk(scalar(y{namespace="shop"}), x{namespace="shop"})"#
        );
    }

    #[test]
    fn nested_subqueries_are_confined_at_every_level() {
        assert_eq!(
            confined(r#"max_over_time(avg_over_time(rate(x{namespace="o"}[1m])[10m:1m])[30m:])"#),
            r#"max_over_time(avg_over_time(rate(x{namespace="shop"}[1m])[10m:1m])[30m:])"#
        );
    }

    #[test]
    fn every_alternative_of_an_or_matcher_is_confined() {
        assert_eq!(
            confined(r#"x{a="1" or namespace="other"}"#),
            r#"x{a="1", namespace="shop" or namespace="shop"}"#
        );
    }

    #[test]
    fn the_namespace_value_is_escaped_and_the_label_configurable() {
        let label: TenantLabel = "kubernetes_namespace".parse().unwrap();
        assert_eq!(
            confine_query(r#"x{kubernetes_namespace="a",namespace="b"}"#, &label, "we\"ird").unwrap(),
            r#"x{kubernetes_namespace="we\"ird",namespace="b"}"#
        );
        for bad in ["", "1a", "__name__", "name-space", "a b"] {
            assert!(bad.parse::<TenantLabel>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_construct_the_printer_loses_is_refused_not_sent() {
        // promql-parser prints `@` timestamps before 1970 as `@ 0.000`.
        assert!(matches!(
            confine_query("x @ -100", &ns(), "shop"),
            Err(ConfineError::NotFaithful { printed }) if printed.contains("@ 0.000")
        ));
    }

    #[test]
    fn ranges_offsets_and_subquery_steps_are_bounded() {
        let over =
            |q: &str| bounds(&syntax::parse(q).unwrap()).into_iter().map(|b| b.what).collect::<Vec<_>>();
        assert!(over("rate(x[1h]) + max_over_time(y[30m:10s] offset 1d) + z offset -1d").is_empty());
        assert_eq!(over("rate(x[2h])"), ["range [2h] of `x[2h]`"]);
        assert_eq!(over("x offset 2d"), ["offset 2d of `x offset 2d`"]);
        assert_eq!(over("x offset -1w"), ["offset -1w of `x offset -1w`"]);
        assert_eq!(
            over("max_over_time(rate(x[5m])[2h:1s])"),
            ["range [2h] of `rate(x[5m])[2h:1s]`", "subquery step 1s of `rate(x[5m])[2h:1s]`"]
        );
        assert_eq!(over("sum(rate(x[5m] offset 3d))"), ["offset 3d of `x[5m] offset 3d`"]);
    }

    /// Realistic queries: promql-parser's printer gives text that parses back to the same tree,
    /// before and after confinement.
    const REALISTIC: &[&str] = &[
        r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination",response_code=~"5.."}[1m]))"#,
        r#"sum(rate(x[5m])) without (pod, instance)"#,
        r#"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{destination_workload="reviews-v2"}[60s])))"#,
        r#"label_replace(rate(x[1m]), "dst", "$1", "destination_workload", "(.*)-v[0-9]+")"#,
        r#"sum(a) / on() group_left sum(b)"#,
        r#"a * on(pod, namespace) group_left(node) b"#,
        r#"a - ignoring(code) group_right c"#,
        r#"a > bool 0.5"#,
        r#"a and on(x) b or c unless d"#,
        r#"rate(x[5m] offset 1h)"#,
        r#"x offset -30m"#,
        r#"x @ 1700000000"#,
        r#"rate(x[5m] @ end())"#,
        r#"x @ start() offset 5m"#,
        r#"max_over_time(rate(x[5m])[30m:1m])"#,
        r#"avg_over_time((a + b)[10m:])"#,
        r#"max_over_time(deriv(rate(x[1m])[5m:30s])[30m:1m] offset 1h)"#,
        r#"x{pod=~"reviews-v2-.*",code!~"2..|3..",a!="b"}"#,
        r#"{__name__=~"istio_requests_total|istio_tcp_.*"}"#,
        r#"{__name__="x", pod="a\"b\\c"}"#,
        r#"x{a="tab\tnew\nline"}"#,
        r#"-x ^ 2 % 3"#,
        r#"(1 - sum(rate(ok[1m]))) / 2"#,
        r#"topk(3, sum by (pod) (rate(x[1m])))"#,
        r#"quantile(0.9, x)"#,
        r#"count_values("version", build_info)"#,
        r#"absent(x{job="a"})"#,
        r#"vector(1) + scalar(sum(x))"#,
        r#"1e-3 * x + 0x1f - Inf"#,
        r#"clamp_max(x / y, 1)"#,
        r#"sum(x) by (a) # a comment"#,
        r#"sum by () (x)"#,
        "time() - timestamp(x)",
        r#"x{a="1" or b="2"}"#,
    ];

    #[test]
    fn the_printer_round_trips_realistic_queries_before_and_after_confinement() {
        for q in REALISTIC {
            let expr = syntax::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            faithful(&expr).unwrap_or_else(|e| panic!("{q}: {e}"));
            let text = confined(q);
            let mut want = expr.clone();
            rewrite(&mut want, Some(("namespace", "shop")));
            assert_eq!(syntax::parse(&text).unwrap(), want, "{q} → {text}");
            // Confining twice changes nothing more.
            assert_eq!(confined(&text), text, "{q}");
        }
    }
}
