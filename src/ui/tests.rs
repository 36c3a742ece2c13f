//! The pages as data and as HTML: escaping, filters, order, and a chart that cannot be had.

use super::view::{self, Filter};
use super::{render, Dashboard, Known};
use crate::engine::{step, Command, Input, RolloutState};
use crate::observation::SideObservation;
use crate::policy::{parse_policy, Policy};
use crate::prometheus::{MetricsSource, QueryError, WorkloadKey};
use jiff::Timestamp;
use std::collections::HashMap;

fn policy(ns: &str, name: &str) -> Policy {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  target: {{virtualService: {name}, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n"
    );
    parse_policy("t.yaml", &text).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_795_392_000 + secs).unwrap()
}

/// `policy` started at 0 and, with `abort`, aborted by an operator at 60 with that reason.
fn known(p: Policy, revision: &str, abort: Option<&str>) -> Known {
    let mut s = step(&p, &RolloutState::default(), Input::NewRevision(revision.into()), at(0)).state;
    if let Some(reason) = abort {
        s = step(&p, &s, Input::Command(Command::Abort(reason.into())), at(60)).state;
    }
    Known { policy: p, state: s, seen: at(60).as_second(), error: None }
}

#[test]
fn every_value_from_a_policy_or_an_operator_is_escaped() {
    let k = known(policy("shop", "reviews"), "<img src=x>", Some("<script>alert(1)</script> & more"));
    let list = render::rollouts(&view::rollouts(std::slice::from_ref(&k), &Filter::default(), at(120)));
    let page = render::detail(&view::detail(&k, view::ChartData::unavailable("<b>no</b>"), at(120)));
    for html in [&list, &page] {
        assert!(!html.contains("<script>") && !html.contains("<img") && !html.contains("<b>no"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"), "{html}");
        assert!(!html.contains("<script") && !html.contains("src=\"http"), "no scripts, no external assets");
    }
    assert!(page.contains("&lt;img src=x&gt;"));
    assert!(page.contains("No chart: &lt;b&gt;no&lt;/b&gt;"));
}

#[test]
fn filters_by_namespace_and_phase_and_lists_recent_rollouts_first() {
    let mut old = known(policy("a", "old"), "r1", Some("x"));
    old.state.finished = Some(at(60).as_second() - 3 * 86_400);
    old.state.phase_since = old.state.finished;
    let rows =
        vec![old, known(policy("a", "aborted"), "r2", Some("y")), known(policy("b", "running"), "r3", None)];
    let names = |f: Filter| -> Vec<String> {
        view::rollouts(&rows, &f, at(120)).rollouts.into_iter().map(|r| r.name).collect()
    };
    assert_eq!(names(Filter::default()), ["aborted", "running", "old"], "recent first, most recent first");
    assert_eq!(names(Filter { namespace: Some("a".into()), phase: None }), ["aborted", "old"]);
    assert_eq!(names(Filter { namespace: None, phase: Some("progressing".into()) }), ["running"]);
    assert_eq!(names(Filter { namespace: Some("c".into()), phase: None }), Vec::<String>::new());
    let row = view::row(&rows[2], at(120));
    assert_eq!((row.step, row.steps, row.canary_weight, row.time_in_phase_secs), (1, 3, 10, Some(120)));
}

#[test]
fn a_failing_reconcile_keeps_the_last_state_and_says_why() {
    let d = Dashboard::default();
    let k = known(policy("shop", "reviews"), "r", None);
    d.update(&k.policy, &k.state, at(60));
    d.failed(&k.policy, "VirtualService shop/reviews: not found", at(62));
    let (got, _) = d.get("shop", "reviews");
    let got = got.unwrap();
    assert_eq!(got.state, k.state);
    let html = render::rollouts(&view::rollouts(&[got], &Filter::default(), at(70)));
    assert!(html.contains("reconcile failing: VirtualService shop/reviews: not found"), "{html}");
}

struct Down;

impl MetricsSource for Down {
    async fn observe_sides(
        &self,
        _: &[WorkloadKey],
        _: Timestamp,
        _: std::time::Duration,
    ) -> Result<HashMap<WorkloadKey, SideObservation>, QueryError> {
        Err(QueryError::EmptyResult)
    }

    async fn query_scalar(&self, _: &str, _: Timestamp) -> Result<f64, QueryError> {
        Err(QueryError::EmptyResult)
    }
}

#[tokio::test]
async fn without_prometheus_the_page_says_so_and_shows_everything_else() {
    let k = known(policy("shop", "reviews"), "r", Some("bad"));
    let chart = view::chart(&k, &Down, at(120)).await;
    assert!(
        chart.unavailable.as_deref().unwrap_or_default().starts_with("Prometheus is unreachable"),
        "{chart:?}"
    );
    let page = render::detail(&view::detail(&k, chart, at(120)));
    assert!(page.contains("id=\"chart-unavailable\"") && !page.contains("<svg"));
    assert!(page.contains("id=\"timeline\"") && page.contains("id=\"history\""));
}
