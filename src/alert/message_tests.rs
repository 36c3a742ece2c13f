//! Rendering tests: what a person reads in an abort alert, and that user values are escaped.

use super::*;
use crate::alert::payload;
use crate::engine::{PendingAlert, Phase, RolloutState};
use crate::judge::{CheckResult, Evidence, IntervalVerdict, Verdict};
use crate::policy::{parse_policy, AlertEvent, Policy};

fn policy(name: &str, extra: &str) -> Policy {
    let doc = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  target: {{virtualService: reviews, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  steps: [{{weight: 10}}, {{weight: 30}}, {{weight: 60}}]\n  alerts: {{email: {{to: [oncall@example.com]}}}}\n{extra}"
    );
    parse_policy("test.yaml", &doc).unwrap_or_else(|e| panic!("{e}"))
}

fn failing_verdict() -> IntervalVerdict {
    let sr = CheckResult {
        check: "success-rate".into(),
        verdict: Verdict::Fail,
        evidence: Evidence {
            canary_requests: 1000,
            baseline_requests: 2000,
            canary_bad: 51,
            baseline_bad: 2,
            canary_value: Some(0.051),
            baseline_value: Some(0.001),
            effect: Some(0.05),
            ci_low: Some(0.039),
            ci_high: Some(0.061),
            confidence: Some(0.99),
            threshold: Some(0.01),
            statistic: Some(6.2),
            summary: "canary 5.10% errors vs baseline 0.10% exceeds tolerance 1.00 pp".into(),
        },
        dry_run: false,
    };
    let lat = CheckResult {
        check: "latency".into(),
        verdict: Verdict::Pass,
        evidence: Evidence {
            canary_value: Some(120.4),
            baseline_value: Some(110.0),
            summary: "p99 fine".into(),
            ..Evidence::default()
        },
        dry_run: false,
    };
    IntervalVerdict::from_checks(vec![lat, sr], 1_773_105_240)
}

fn abort_alert() -> PendingAlert {
    PendingAlert {
        id: 7,
        event: AlertEvent::Abort,
        // 2026-03-10T01:14:00Z
        at: 1_773_105_240,
        headline: "aborted at step 2/3 (30%): success-rate failed".into(),
        revision: Some("7f9c2d".into()),
        step: Some(1),
        traffic: Default::default(),
        verdict: Some(failing_verdict()),
        delivered: vec![],
    }
}

fn aborted_state() -> RolloutState {
    RolloutState {
        phase: Phase::Aborted,
        revision: Some("7f9c2d".into()),
        step: 1,
        started: Some(1_773_100_000),
        ..RolloutState::default()
    }
}

fn report(p: &Policy) -> Report {
    let facts = AlertFacts::from_state(p, &aborted_state());
    let opts = RenderOptions { prometheus_url: Some("https://prom.example".into()), ui_url: None };
    Report::build(&abort_alert(), p, &facts, &opts)
}

#[test]
fn abort_text_names_policy_release_step_numbers_action_and_where_to_look() {
    let p = policy("reviews", "  schedule: {cron: '0 2 * * *', timeZone: Europe/Berlin}\n");
    let m = report(&p).message();
    assert_eq!(
        m.subject,
        "[canaryd] ABORTED shop/reviews revision 7f9c2d: aborted at step 2/3 (30%): success-rate failed"
    );
    for needle in [
        "Revision:  7f9c2d",
        "Step:      2/3 (canary 30%)",
        "Decisive check: success-rate (fail)",
        "canary:    5.10% errors (51 of 1000 requests)",
        "baseline:  0.10% errors (2 of 2000 requests)",
        "effect:    +5.00 pp (99% CI +3.90 pp to +6.10 pp)",
        "threshold: 1.00 pp (tolerance)",
        "canary traffic went from 30% to 0% (all on stable) at 2026-03-10T01:14:00Z (2026-03-10T02:14:00+01:00 Europe/Berlin)",
        "canaryd status shop/reviews",
        "Prometheus: https://prom.example/graph?g0.expr=",
    ] {
        assert!(m.text.contains(needle), "missing {needle:?} in\n{}", m.text);
    }
    // The decisive check comes before the passing one.
    assert!(m.text.find("success-rate").unwrap() < m.text.find("Check: latency").unwrap());
    assert!(m.text.contains("canary:    120 ms"), "{}", m.text);
}

#[test]
fn graph_link_queries_both_workloads_error_ratio() {
    let p = policy("reviews", "");
    let link = report(&p).graph_link.unwrap();
    let expr = link.split("g0.expr=").nth(1).unwrap().split('&').next().unwrap();
    assert!(expr.contains("istio_requests_total"), "{expr}");
    assert!(expr.contains("reviews-v1%7Creviews-v2"), "{expr}");
    assert!(expr.contains("response_code%3D~%225..%22"), "{expr}");
}

#[test]
fn without_schedule_times_are_utc_only_and_without_base_no_link() {
    let p = policy("reviews", "");
    let facts = AlertFacts::from_state(&p, &aborted_state());
    let r = Report::build(&abort_alert(), &p, &facts, &RenderOptions::default());
    assert_eq!(r.at_utc, "2026-03-10T01:14:00Z");
    assert_eq!(r.at_local, None);
    assert_eq!(r.graph_link, None);
    assert!(!r.text().contains("Prometheus:"));
}

#[test]
fn html_escapes_a_policy_name_with_a_script_tag() {
    let p = policy("reviews", "");
    let mut alert = abort_alert();
    alert.headline = "aborted: \"quoted\" & <b>bold</b>".into();
    let facts = AlertFacts::from_state(&p, &aborted_state());
    let mut report = Report::build(&alert, &p, &facts, &RenderOptions::default());
    // A name no validated policy has: the renderer must not rely on validation to be safe.
    report.policy = "<script>alert(1)</script>".into();
    let html = report.html();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(html.contains("&quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;"), "{html}");
    assert!(html.contains("+5.00 pp"));
    assert!(html.contains("5.10% errors"));
}

#[test]
fn subject_is_one_line() {
    let p = policy("reviews", "");
    let mut alert = abort_alert();
    alert.headline = "line one\nBcc: evil@example.com".into();
    let facts = AlertFacts::from_state(&p, &aborted_state());
    let s = Report::build(&alert, &p, &facts, &RenderOptions::default()).subject();
    assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
}

#[test]
fn abort_before_start_has_no_step() {
    let p = policy("reviews", "");
    let state =
        RolloutState { phase: Phase::Aborted, revision: Some("r1".into()), ..RolloutState::default() };
    let facts = AlertFacts::from_state(&p, &state);
    let mut alert = abort_alert();
    alert.verdict = None;
    let r = Report::build(&alert, &p, &facts, &RenderOptions::default());
    assert_eq!(r.step, None);
    assert!(r.action.contains("before any traffic reached the canary"), "{}", r.action);
    assert_eq!(payload::generic_json(&r)["step"], serde_json::Value::Null);
    assert_eq!(payload::generic_json(&r)["verdict"], serde_json::Value::Null);
}

#[test]
fn generic_json_has_the_documented_shape() {
    let p = policy("reviews", "");
    let v = payload::generic_json(&report(&p));
    assert_eq!(v["version"], "canaryd.io/alert/v1");
    assert_eq!(v["id"], 7);
    assert_eq!(v["event"], "abort");
    assert_eq!(v["policy"], "reviews");
    assert_eq!(v["namespace"], "shop");
    assert_eq!(v["revision"], "7f9c2d");
    assert_eq!(v["at"], "2026-03-10T01:14:00Z");
    assert_eq!(v["step"]["number"], 2);
    assert_eq!(v["step"]["of"], 3);
    assert_eq!(v["step"]["traffic"]["canaryWeight"], 30);
    assert_eq!(v["traffic"]["canaryWeight"], 0);
    assert_eq!(v["verdict"]["verdict"], "fail");
    let decisive = &v["verdict"]["checks"][0];
    assert_eq!(decisive["check"], "success-rate");
    assert_eq!(decisive["decisive"], true);
    assert_eq!(decisive["evidence"]["canaryBad"], 51);
    assert_eq!(decisive["evidence"]["ciHigh"], 0.061);
    assert_eq!(v["links"]["status"], "canaryd status shop/reviews");
    assert!(v["links"]["graph"].as_str().unwrap().starts_with("https://prom.example/graph?"));
}

#[test]
fn slack_and_teams_carry_the_headline_and_escape_mrkdwn() {
    let mut r = report(&policy("reviews", ""));
    r.policy = "<!channel>".into();
    let s = payload::slack(&r);
    let text = s.to_string();
    assert!(s["text"].as_str().unwrap().contains("aborted at step 2/3 (30%): success-rate failed"));
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains("+5.00 pp"));
    let t = payload::teams(&r);
    let card = &t["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][1]["text"], "aborted at step 2/3 (30%): success-rate failed");
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
}

#[test]
fn with_a_dashboard_url_every_format_links_to_the_rollout_page() {
    let p = policy("reviews", "");
    let facts = AlertFacts::from_state(&p, &aborted_state());
    let opts = RenderOptions { prometheus_url: None, ui_url: Some("https://canaryd.example/".into()) };
    let r = Report::build(&abort_alert(), &p, &facts, &opts);
    let link = "https://canaryd.example/rollouts/shop/reviews";
    assert_eq!(r.dashboard_link.as_deref(), Some(link));
    let m = r.message();
    assert!(m.text.contains(&format!("Dashboard: {link}")), "{}", m.text);
    assert!(m.html.contains(&format!("<a href=\"{link}\">")), "{}", m.html);
    assert_eq!(payload::generic_json(&r)["links"]["dashboard"], link);
    assert!(payload::slack(&r).to_string().contains(&format!("<{link}|Dashboard>")));
    assert!(payload::teams(&r).to_string().contains(link));
    assert_eq!(report(&p).dashboard_link, None, "no link without --ui-url");
}
