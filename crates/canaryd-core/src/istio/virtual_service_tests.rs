//! Tests of [`super`]: routes, weights, the header route, the route record and keys.

use super::*;
use crate::policy::{parse_policy, HeaderMatch};

fn policy() -> Policy {
    parse_policy("p.yaml", "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1}, canary: {subset: v2}}\n").unwrap()
}

fn vs() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "7", "annotations": {"team": "books"}},
        "spec": {"hosts": ["reviews"], "gateways": ["mesh"], "http": [
            {"name": "debug", "match": [{"headers": {"x-debug": {"exact": "1"}}}], "route": [{"destination": {"host": "reviews", "subset": "v3"}}], "timeout": "3s"},
            {"name": "main", "retries": {"attempts": 3}, "route": [
                {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 90},
                {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 10}]}
        ]}
    })
}

fn apply(vs: &Value, patch: &Value) -> Value {
    let mut doc = vs.clone();
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut doc, &p).unwrap();
    doc
}

#[test]
fn reads_weights_of_the_named_route() {
    let view = RouteView::read(&vs(), &policy()).unwrap();
    assert_eq!(view.index, 1);
    assert_eq!(view.traffic.canary_weight, 10);
    assert_eq!(view.stable_host, "reviews");
}

#[test]
fn patch_changes_only_weights_and_the_state_annotation() {
    let p = policy();
    let original = vs();
    let view = RouteView::read(&original, &p).unwrap();
    let traffic = Traffic { canary_weight: 30, ..Traffic::default() };
    let after = apply(&original, &view.patch(&original, &p, &traffic, "{\"phase\":\"Progressing\"}"));
    assert_eq!(after["spec"]["http"][0], original["spec"]["http"][0], "other routes untouched");
    assert_eq!(after["spec"]["http"][1]["retries"], original["spec"]["http"][1]["retries"]);
    assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 70);
    assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 30);
    assert_eq!(after["spec"]["http"][1]["route"][1]["destination"]["port"]["number"], 9080);
    assert_eq!(after["spec"]["gateways"], original["spec"]["gateways"]);
    assert_eq!(after["metadata"]["annotations"]["team"], "books");
    assert_eq!(after["metadata"]["annotations"]["canaryd.io/state-reviews"], "{\"phase\":\"Progressing\"}");
    let back = RouteView::read(&after, &p).unwrap();
    assert_eq!(back.traffic, traffic);
}

#[test]
fn removal_routes_back_and_removes_only_canaryds_annotations() {
    let p = policy();
    let mut original = vs();
    original["metadata"]["annotations"]["canaryd.io/state-reviews"] = json!("{}");
    original["metadata"]["annotations"]["canaryd.io/command-reviews"] = json!("pause");
    let view = RouteView::read(&original, &p).unwrap();
    let after = apply(&original, &view.removal_patch(&original, &p, Some(&Traffic::stable_only())));
    assert_eq!(after["spec"]["http"][0], original["spec"]["http"][0], "other routes untouched");
    assert_eq!(after["spec"]["http"][1]["retries"], original["spec"]["http"][1]["retries"]);
    assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 100);
    assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 0);
    assert_eq!(after["metadata"]["annotations"], json!({"team": "books"}));
    // A finished rollout keeps its weights; only the annotations go.
    let kept = apply(&original, &view.removal_patch(&original, &p, None));
    assert_eq!(kept["spec"], original["spec"]);
    assert_eq!(kept["metadata"]["annotations"], json!({"team": "books"}));
    // Nothing of canaryd's left: only the resourceVersion test.
    let clean = vs();
    let view = RouteView::read(&clean, &p).unwrap();
    assert_eq!(view.removal_patch(&clean, &p, None).as_array().unwrap().len(), 1);
    // Guarded like every write.
    let mut moved = original.clone();
    moved["metadata"]["resourceVersion"] = json!("8");
    let patch: json_patch::Patch =
        serde_json::from_value(RouteView::read(&original, &p).unwrap().removal_patch(&original, &p, None))
            .unwrap();
    assert!(json_patch::patch(&mut moved, &patch).is_err());
}

fn named(name: &str) -> Policy {
    parse_policy("p.yaml", &format!("apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  target: {{virtualService: reviews, route: main, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n")).unwrap()
}

/// The API server's rule for an annotation key's name part.
fn valid_annotation_name(key: &str) -> bool {
    let name = key.strip_prefix("canaryd.io/").unwrap();
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[test]
fn annotation_keys_are_valid_and_distinct_for_every_policy_name() {
    let prefix = "a".repeat(49);
    // A cut at 50 characters used to end in '-' here, and the two names shared a key.
    let names = [
        "reviews".to_string(),
        format!("{prefix}-x"),
        format!("{prefix}-y"),
        "x".repeat(57),
        "x".repeat(58),
        "c".repeat(63),
        format!("{}-{}", "c".repeat(61), "d"),
    ];
    let mut keys = std::collections::BTreeSet::new();
    for n in &names {
        let p = named(n);
        for key in [state_annotation_key(&p), command_annotation_key(&p)] {
            assert!(valid_annotation_name(&key), "{n}: {key}");
            assert!(keys.insert(key.clone()), "{n}: {key} is shared");
        }
    }
    assert_eq!(state_annotation_key(&named("reviews")), "canaryd.io/state-reviews");
}

#[test]
fn state_under_the_legacy_key_is_read_and_moved() {
    let long = format!("{}-{}", "a".repeat(49), "tail");
    let p = named(&long);
    let legacy = format!("canaryd.io/state-{}", &long[..50]);
    assert_ne!(legacy, state_annotation_key(&p));
    let mut original = vs();
    original["metadata"]["annotations"][&legacy] = json!("{\"phase\":\"Progressing\"}");
    let view = RouteView::read(&original, &p).unwrap();
    assert_eq!(view.state.as_deref(), Some("{\"phase\":\"Progressing\"}"));
    let after = apply(&original, &view.patch(&original, &p, &view.traffic, "{\"phase\":\"Promoted\"}"));
    let annotations = after["metadata"]["annotations"].as_object().unwrap();
    assert!(!annotations.contains_key(&legacy), "{annotations:?}");
    assert_eq!(annotations[&state_annotation_key(&p)], "{\"phase\":\"Promoted\"}");
    assert!(RouteView::read(&after, &p).unwrap().legacy_state_key.is_none());
}

#[test]
fn header_match_and_mirror_routes_are_added_and_removed() {
    let p = policy();
    let original = vs();
    let view = RouteView::read(&original, &p).unwrap();
    let traffic = Traffic {
        canary_weight: 0,
        header_match: Some(HeaderMatch {
            header: "end-user".into(),
            exact: Some("jason".into()),
            prefix: None,
            regex: None,
        }),
        mirror_percent: Some(50),
    };
    let with = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
    assert_eq!(with["spec"]["http"][1]["name"], "canaryd-reviews-header");
    assert_eq!(with["spec"]["http"][2]["mirrorPercentage"]["value"], 50.0);
    let view2 = RouteView::read(&with, &p).unwrap();
    assert_eq!(view2.traffic, traffic);
    let mut with_rv = with.clone();
    with_rv["metadata"]["resourceVersion"] = json!("7");
    let without = apply(&with_rv, &view2.patch(&with_rv, &p, &Traffic::stable_only(), "{}"));
    assert_eq!(without["spec"]["http"].as_array().unwrap().len(), 2);
    assert!(without["spec"]["http"][1].get("mirror").is_none());
    assert_eq!(without["spec"]["http"][0], original["spec"]["http"][0]);
}

#[test]
fn stale_resource_version_fails_the_patch() {
    let p = policy();
    let original = vs();
    let view = RouteView::read(&original, &p).unwrap();
    let mut moved = original.clone();
    moved["metadata"]["resourceVersion"] = json!("8");
    let patch: json_patch::Patch =
        serde_json::from_value(view.patch(&original, &p, &Traffic::canary_only(), "{}")).unwrap();
    assert!(json_patch::patch(&mut moved, &patch).is_err());
}

#[test]
fn malformed_virtual_services_are_clear_errors() {
    let p = policy();
    let mut bad = vs();
    bad["spec"]["http"][1]["route"][0]["weight"] = json!(-95);
    assert!(matches!(RouteView::read(&bad, &p), Err(VsError::BadWeight { .. })));
    // Weights are relative: a sum other than 100 is fine.
    bad["spec"]["http"][1]["route"][0]["weight"] = json!(95);
    assert_eq!(RouteView::read(&bad, &p).unwrap().traffic.canary_weight, 10);
    let mut no_route = vs();
    no_route["spec"]["http"][1]["name"] = json!("other");
    assert!(matches!(RouteView::read(&no_route, &p), Err(VsError::RouteNotFound(..))));
    let mut no_stable = vs();
    no_stable["spec"]["http"][1]["route"][0]["destination"]["subset"] = json!("v9");
    assert!(matches!(RouteView::read(&no_stable, &p), Err(VsError::StableNotFound { .. })));
    assert!(matches!(RouteView::read(&json!({}), &p), Err(VsError::NoHttpRoutes)));
}

fn gateway_vs() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "bookinfo", "resourceVersion": "7"},
        "spec": {"hosts": ["shop.example.com"], "gateways": ["bookinfo/public"], "http": [
            {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api", "subset": "v1"}}]},
            {"name": "main",
             "match": [{"uri": {"prefix": "/shop"}, "gateways": ["bookinfo/public"]}, {"uri": {"exact": "/cart"}, "headers": {"x-tenant": {"exact": "a"}}}],
             "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
             "headers": {"request": {"set": {"x-via": "shop"}}},
             "rewrite": {"uri": "/"},
             "mirror": {"host": "audit"}, "mirrorPercentage": {"value": 5.0},
             "route": [
                {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 100, "headers": {"response": {"add": {"x-side": "stable"}}}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
        ]}
    })
}

fn jason() -> HeaderMatch {
    HeaderMatch { header: "end-user".into(), exact: Some("jason".into()), prefix: None, regex: None }
}

#[test]
fn header_step_clones_the_policy_route_directly_before_it() {
    let p = policy();
    let original = gateway_vs();
    let view = RouteView::read(&original, &p).unwrap();
    let traffic = Traffic { header_match: Some(jason()), ..Traffic::default() };
    let after = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
    let http = after["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 4);
    assert_eq!(http[0], original["spec"]["http"][0], "the route above is untouched");
    assert_eq!(http[3], original["spec"]["http"][2], "the default route is untouched");
    assert_eq!(http[2]["match"], original["spec"]["http"][1]["match"]);
    assert_eq!(http[2]["route"], original["spec"]["http"][1]["route"]);
    let clone = &http[1];
    assert_eq!(clone["name"], "canaryd-reviews-header");
    assert_eq!(
        clone["match"],
        json!([
            {"uri": {"prefix": "/shop"}, "gateways": ["bookinfo/public"], "headers": {"end-user": {"exact": "jason"}}},
            {"uri": {"exact": "/cart"}, "headers": {"x-tenant": {"exact": "a"}, "end-user": {"exact": "jason"}}}
        ])
    );
    for field in ["retries", "timeout", "headers", "rewrite"] {
        assert_eq!(clone[field], original["spec"]["http"][1][field], "{field}");
    }
    assert!(clone.get("mirror").is_none() && clone.get("mirrorPercentage").is_none());
    assert_eq!(
        clone["route"],
        json!([{"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 100, "headers": {"response": {"add": {"x-side": "stable"}}}}])
    );
    let back = RouteView::read(&after, &p).unwrap();
    assert_eq!(back.index, 2);
    assert_eq!(back.traffic.header_match, Some(jason()));
    let removed = apply(&after, &back.patch(&after, &p, &Traffic::stable_only(), "{}"));
    assert_eq!(removed["spec"], original["spec"], "removing the step restores the spec");
}

#[test]
fn header_step_on_a_route_without_match_matches_only_the_header() {
    let p = policy();
    let original = vs();
    let view = RouteView::read(&original, &p).unwrap();
    let traffic = Traffic { canary_weight: 10, header_match: Some(jason()), ..Traffic::default() };
    let after = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
    let http = after["spec"]["http"].as_array().unwrap();
    assert_eq!(http[0], original["spec"]["http"][0]);
    assert_eq!(http[1]["name"], "canaryd-reviews-header");
    assert_eq!(http[1]["match"], json!([{"headers": {"end-user": {"exact": "jason"}}}]));
    assert_eq!(http[1]["retries"], json!({"attempts": 3}));
    assert_eq!(RouteView::read(&after, &p).unwrap().traffic, traffic);
}

#[test]
fn header_step_on_a_route_matching_the_same_header_is_refused() {
    let p = policy();
    let mut original = gateway_vs();
    original["spec"]["http"][1]["match"][1]["headers"]["end-user"] = json!({"prefix": "j"});
    let view = RouteView::read(&original, &p).unwrap();
    let traffic = Traffic { header_match: Some(jason()), ..Traffic::default() };
    let err = view.check_traffic(&original, &p, &traffic).unwrap_err();
    assert!(matches!(err, VsError::HeaderConflict { .. }), "{err}");
    assert!(err.to_string().contains("end-user"), "{err}");
    // Patched anyway, the managed route never matches more than the policy route would.
    let after = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
    let clone = &after["spec"]["http"][1];
    assert_eq!(clone["match"].as_array().unwrap().len(), 1, "{clone}");
    assert_eq!(clone["match"][0]["uri"], json!({"prefix": "/shop"}));
    // The same condition as the step's is no conflict.
    original["spec"]["http"][1]["match"][1]["headers"]["end-user"] = json!({"exact": "jason"});
    assert!(view.check_traffic(&original, &p, &traffic).is_ok());
}

fn weighted(weights: &[(&str, Option<i64>)]) -> Value {
    let mut v = vs();
    let dests: Vec<Value> = weights
        .iter()
        .map(|(subset, w)| {
            let mut d = json!({"destination": {"host": "reviews", "subset": subset}});
            if let Some(w) = w {
                d["weight"] = json!(w);
            }
            d
        })
        .collect();
    v["spec"]["http"][1]["route"] = json!(dests);
    v
}

#[test]
fn weights_are_relative_and_other_destinations_keep_theirs() {
    let p = policy();
    let original = weighted(&[("v3", Some(60)), ("v1", Some(30)), ("v2", Some(10))]);
    let view = RouteView::read(&original, &p).unwrap();
    assert_eq!(view.traffic.canary_weight, 25);
    let traffic = Traffic { canary_weight: 50, ..Traffic::default() };
    let after = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
    assert_eq!(
        after["spec"]["http"][1]["route"],
        json!([
            {"destination": {"host": "reviews", "subset": "v3"}, "weight": 60},
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 20},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}
        ])
    );
    // Weights that do not sum to 100 are fine: Istio treats them as relative.
    let small = weighted(&[("v1", Some(1)), ("v2", Some(1)), ("v3", Some(1))]);
    assert_eq!(RouteView::read(&small, &p).unwrap().traffic.canary_weight, 50);
    let single = weighted(&[("v1", None)]);
    assert_eq!(RouteView::read(&single, &p).unwrap().traffic.canary_weight, 0);
    let only_canary = weighted(&[("v1", Some(0)), ("v2", Some(0)), ("v3", Some(5))]);
    assert_eq!(RouteView::read(&only_canary, &p).unwrap().traffic.canary_weight, 0);
}

#[test]
fn every_canary_weight_reads_back_exactly() {
    let p = policy();
    let cases = [
        weighted(&[("v1", Some(90)), ("v2", Some(10))]),
        weighted(&[("v1", None)]),
        weighted(&[("v1", Some(3)), ("v3", Some(1))]),
        weighted(&[("v1", Some(7)), ("v2", Some(0)), ("v3", Some(3))]),
        weighted(&[("v3", Some(60)), ("v1", Some(30)), ("v2", Some(10))]),
        weighted(&[("v1", Some(1000)), ("v3", Some(1))]),
    ];
    for original in cases {
        let view = RouteView::read(&original, &p).unwrap();
        let others: Vec<Value> = original["spec"]["http"][1]["route"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["destination"]["subset"] == "v3")
            .cloned()
            .collect();
        for w in 0..=100 {
            let traffic = Traffic { canary_weight: w, ..Traffic::default() };
            let after = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
            let back = RouteView::read(&after, &p).unwrap();
            assert_eq!(back.traffic.canary_weight, w, "{original} at {w}: {}", after["spec"]["http"][1]);
            // Other destinations keep their relative share of the whole route.
            let route = after["spec"]["http"][1]["route"].as_array().unwrap();
            let total: i64 = route.iter().map(|d| d["weight"].as_i64().unwrap_or(0)).sum();
            let before: i64 = original["spec"]["http"][1]["route"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["weight"].as_i64().unwrap_or(if route.len() == 1 { 100 } else { 0 }))
                .sum();
            for (o, n) in others.iter().zip(route.iter().filter(|d| d["destination"]["subset"] == "v3")) {
                let (o, n) = (o["weight"].as_i64().unwrap(), n["weight"].as_i64().unwrap());
                assert_eq!(o * total, n * before, "{original} at {w}");
            }
        }
    }
}

#[test]
fn abort_restores_the_recorded_route_byte_for_byte() {
    let p = policy();
    let original = weighted(&[("v1", Some(3)), ("v3", Some(1))]);
    let recorded = original["spec"]["http"][1]["route"].clone();
    let view = RouteView::read(&original, &p).unwrap();
    let ten = Traffic { canary_weight: 10, ..Traffic::default() };
    let step1 = apply(&original, &view.patch(&original, &p, &ten, "{}"));
    let record = step1["metadata"]["annotations"]["canaryd.io/route-reviews"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(record).unwrap(), recorded);
    // A later step keeps the first record.
    let view = RouteView::read(&step1, &p).unwrap();
    let thirty = Traffic { canary_weight: 30, ..Traffic::default() };
    let step2 = apply(&step1, &view.patch(&step1, &p, &thirty, "{}"));
    assert_eq!(step2["metadata"]["annotations"]["canaryd.io/route-reviews"], record);
    // Abort: the route is exactly what it was, and the record is gone.
    let view = RouteView::read(&step2, &p).unwrap();
    let aborted = apply(&step2, &view.patch(&step2, &p, &Traffic::stable_only(), "{}"));
    assert_eq!(aborted["spec"], original["spec"]);
    assert!(aborted["metadata"]["annotations"].get("canaryd.io/route-reviews").is_none());
    // Removal restores too.
    let view = RouteView::read(&step2, &p).unwrap();
    let removed = apply(&step2, &view.removal_patch(&step2, &p, Some(&Traffic::stable_only())));
    assert_eq!(removed["spec"], original["spec"]);
    assert!(removed["metadata"]["annotations"].get("canaryd.io/route-reviews").is_none());
    // Promotion gives the canary the stable's share; other destinations keep theirs, and the
    // record stays so that copy promotion's route back restores the route exactly.
    let promoted = apply(&step2, &view.patch(&step2, &p, &Traffic::canary_only(), "{}"));
    assert!(promoted["metadata"]["annotations"].get("canaryd.io/route-reviews").is_some());
    assert_eq!(RouteView::read(&promoted, &p).unwrap().traffic.canary_weight, 100);
    let route = promoted["spec"]["http"][1]["route"].as_array().unwrap();
    let weight = |s: &str| route.iter().find(|d| d["destination"]["subset"] == s).unwrap()["weight"].clone();
    assert_eq!((weight("v1"), weight("v2"), weight("v3")), (json!(0), json!(3), json!(1)));
    let view = RouteView::read(&promoted, &p).unwrap();
    let back = apply(&promoted, &view.patch(&promoted, &p, &Traffic::stable_only(), "{}"));
    assert_eq!(back["spec"], original["spec"], "copy promotion's route back restores the route");
    assert!(back["metadata"]["annotations"].get("canaryd.io/route-reviews").is_none());
}

#[test]
fn scaling_for_exact_weights_does_not_compound_over_steps() {
    let p = policy();
    let mut doc = weighted(&[("v1", Some(3)), ("v3", Some(1))]);
    for w in 1..=99 {
        let view = RouteView::read(&doc, &p).unwrap();
        let traffic = Traffic { canary_weight: w, ..Traffic::default() };
        doc = apply(&doc, &view.patch(&doc, &p, &traffic, "{}"));
        doc["metadata"]["resourceVersion"] = json!("7");
        assert_eq!(RouteView::read(&doc, &p).unwrap().traffic.canary_weight, w);
        let max = doc["spec"]["http"][1]["route"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["weight"].as_i64().unwrap())
            .max();
        assert!(max.unwrap() <= 400, "{w}: {}", doc["spec"]["http"][1]["route"]);
    }
}

#[test]
fn a_record_that_no_longer_fits_is_ignored() {
    let p = policy();
    let mut running = weighted(&[("v1", Some(70)), ("v2", Some(30))]);
    running["metadata"]["annotations"]["canaryd.io/route-reviews"] =
        json!(r#"[{"destination":{"host":"reviews","subset":"v9"},"weight":100}]"#);
    let view = RouteView::read(&running, &p).unwrap();
    let aborted = apply(&running, &view.patch(&running, &p, &Traffic::stable_only(), "{}"));
    assert_eq!(
        aborted["spec"]["http"][1]["route"],
        json!([
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}
        ])
    );
    assert!(aborted["metadata"]["annotations"].get("canaryd.io/route-reviews").is_none());
    running["metadata"]["annotations"]["canaryd.io/route-reviews"] = json!("{not json");
    let view = RouteView::read(&running, &p).unwrap();
    let aborted = apply(&running, &view.patch(&running, &p, &Traffic::stable_only(), "{}"));
    assert_eq!(aborted["spec"]["http"][1]["route"][0]["weight"], 100);
}

#[test]
fn negative_or_all_zero_weights_are_clear_errors() {
    let p = policy();
    let negative = weighted(&[("v1", Some(-1)), ("v2", Some(10))]);
    assert!(matches!(RouteView::read(&negative, &p), Err(VsError::BadWeight { .. })));
    let twice = weighted(&[("v1", Some(50)), ("v1", Some(50))]);
    let err = RouteView::read(&twice, &p).unwrap_err();
    assert!(matches!(err, VsError::DuplicateDestination { times: 2, .. }), "{err}");
    let zero = weighted(&[("v1", Some(0)), ("v2", Some(0))]);
    let err = RouteView::read(&zero, &p).unwrap_err();
    assert!(matches!(err, VsError::ZeroWeights { .. }), "{err}");
}

#[test]
fn a_pair_without_weight_cannot_shift_traffic() {
    let p = policy();
    let original = weighted(&[("v1", Some(0)), ("v2", Some(0)), ("v3", Some(5))]);
    let view = RouteView::read(&original, &p).unwrap();
    let ten = Traffic { canary_weight: 10, ..Traffic::default() };
    let err = view.check_traffic(&original, &p, &ten).unwrap_err();
    assert!(matches!(err, VsError::NothingToShift { .. }), "{err}");
    assert!(view.check_traffic(&original, &p, &Traffic::stable_only()).is_ok());
    let after = apply(&original, &view.patch(&original, &p, &ten, "{}"));
    assert_eq!(after["spec"]["http"][1]["route"], original["spec"]["http"][1]["route"]);
}

#[test]
fn removal_without_traffic_still_removes_the_header_route() {
    let p = policy();
    let original = vs();
    let view = RouteView::read(&original, &p).unwrap();
    let traffic = Traffic { canary_weight: 10, header_match: Some(jason()), ..Traffic::default() };
    let with = apply(&original, &view.patch(&original, &p, &traffic, "{}"));
    let view = RouteView::read(&with, &p).unwrap();
    let removed = apply(&with, &view.removal_patch(&with, &p, None));
    assert_eq!(removed["spec"], original["spec"]);
    assert_eq!(removed["metadata"]["annotations"], json!({"team": "books"}));
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            (0i64..200).prop_map(Value::from),
            (-1e3f64..1e3).prop_map(Value::from),
            prop_oneof![Just("v1"), Just("v2"), Just("reviews"), Just("main"), Just("end-user"), Just("x")]
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("http"),
                        Just("route"),
                        Just("destination"),
                        Just("subset"),
                        Just("host"),
                        Just("weight"),
                        Just("name"),
                        Just("match"),
                        Just("headers"),
                        Just("end-user"),
                        Just("exact"),
                        Just("mirror"),
                        Just("port"),
                    ]
                    .prop_map(str::to_string),
                    inner,
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn whatever_reads_patches_without_panicking(spec in json_value(), record in json_value(), w in 0u32..=100) {
            let p = policy();
            let mut vs = json!({"metadata": {"name": "reviews", "resourceVersion": "1", "annotations": {}}, "spec": spec});
            vs["metadata"]["annotations"]["canaryd.io/route-reviews"] = json!(record.to_string());
            if let Ok(view) = RouteView::read(&vs, &p) {
                for traffic in [
                    Traffic { canary_weight: w, ..Traffic::default() },
                    Traffic { canary_weight: w, header_match: Some(jason()), mirror_percent: Some(w) },
                    Traffic::stable_only(),
                    Traffic::canary_only(),
                ] {
                    let _ = view.check_traffic(&vs, &p, &traffic);
                    let patch = view.patch(&vs, &p, &traffic, "{}");
                    prop_assert_eq!(&patch[0]["op"], "test");
                    let after = apply(&vs, &patch);
                    if let Ok(back) = RouteView::read(&after, &p) {
                        if view.check_traffic(&vs, &p, &traffic).is_ok() && traffic.mirror_percent.is_none() {
                            prop_assert_eq!(back.traffic.canary_weight, traffic.canary_weight, "{}", after);
                        }
                    }
                    let _ = view.removal_patch(&vs, &p, Some(&traffic));
                }
            }
        }
    }
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    fn destination() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just("v1"), Just("v2"), Just("v3"), Just("v4")],
            proptest::option::of(0i64..500),
            any::<bool>(),
        )
            .prop_map(|(subset, weight, port)| {
                let mut d = json!({"destination": {"host": "reviews", "subset": subset}});
                if port {
                    d["destination"]["port"] = json!({"number": 9080});
                }
                if let Some(w) = weight {
                    d["weight"] = json!(w);
                }
                d
            })
    }

    fn block() -> impl Strategy<Value = Value> {
        (any::<bool>(), prop_oneof![Just(None), Just(Some("jason")), Just(Some("ann"))]).prop_map(
            |(uri, user)| {
                let mut b = json!({});
                if uri {
                    b["uri"] = json!({"prefix": "/shop"});
                }
                if let Some(u) = user {
                    b["headers"] = json!({"end-user": {"exact": u}});
                }
                b
            },
        )
    }

    fn virtual_service() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(destination(), 1..5),
            proptest::collection::vec(block(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(dests, blocks, above)| {
                let mut main = json!({"name": "main", "retries": {"attempts": 2}, "route": dests});
                if !blocks.is_empty() {
                    main["match"] = json!(blocks);
                }
                let mut http = vec![main, json!({"route": [{"destination": {"host": "reviews", "subset": "v1"}}]})];
                if above {
                    http.insert(0, json!({"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api"}}]}));
                }
                json!({"metadata": {"name": "reviews", "resourceVersion": "7"}, "spec": {"hosts": ["reviews"], "http": http}})
            })
    }

    fn others(vs: &Value, index: usize) -> Vec<(Value, i64)> {
        let route = vs["spec"]["http"][index]["route"].as_array().unwrap();
        route
            .iter()
            .filter(|d| !matches!(d["destination"]["subset"].as_str(), Some("v1" | "v2")))
            .map(|d| (d["destination"].clone(), d["weight"].as_i64().unwrap_or(0)))
            .collect()
    }

    fn total(vs: &Value, index: usize) -> i64 {
        let route = vs["spec"]["http"][index]["route"].as_array().unwrap();
        let single = route.len() == 1;
        route.iter().map(|d| d["weight"].as_i64().unwrap_or(if single { 100 } else { 0 })).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn rollouts_round_trip_keep_other_shares_and_abort_exactly(
            original in virtual_service(),
            steps in proptest::collection::vec(0u32..=100, 1..4),
            header in any::<bool>(),
        ) {
            let p = policy();
            let Ok(first) = RouteView::read(&original, &p) else { return Ok(()) };
            let mut doc = original.clone();
            for (i, w) in steps.iter().enumerate() {
                let view = RouteView::read(&doc, &p).unwrap();
                let traffic = Traffic {
                    canary_weight: *w,
                    header_match: (header && i == 0).then(jason),
                    mirror_percent: None,
                };
                if view.check_traffic(&doc, &p, &traffic).is_err() {
                    return Ok(());
                }
                doc = apply(&doc, &view.patch(&doc, &p, &traffic, "{}"));
                let back = RouteView::read(&doc, &p).unwrap();
                prop_assert_eq!(&back.traffic, &traffic, "{}", doc["spec"]);
                let (a, b) = (others(&original, first.index), others(&doc, back.index));
                prop_assert_eq!(a.len(), b.len());
                for ((da, wa), (db, wb)) in a.iter().zip(&b) {
                    prop_assert_eq!(da, db);
                    prop_assert_eq!(wa * total(&doc, back.index), wb * total(&original, first.index), "{}", doc["spec"]);
                }
                for (j, r) in original["spec"]["http"].as_array().unwrap().iter().enumerate() {
                    if j != first.index {
                        let shift = usize::from(back.traffic.header_match.is_some() && j > first.index);
                        prop_assert_eq!(r, &doc["spec"]["http"][j + shift]);
                    }
                }
            }
            let view = RouteView::read(&doc, &p).unwrap();
            let aborted = apply(&doc, &view.patch(&doc, &p, &Traffic::stable_only(), "{}"));
            prop_assert_eq!(RouteView::read(&aborted, &p).unwrap().traffic, Traffic::stable_only());
            prop_assert!(aborted["metadata"]["annotations"].get("canaryd.io/route-reviews").is_none());
            // Promotion (100%) ends the rollout and drops the record; otherwise abort is exact.
            if first.traffic.canary_weight == 0 && first.traffic.header_match.is_none() && !steps.contains(&100) {
                prop_assert_eq!(&aborted["spec"], &original["spec"]);
            }
        }
    }
}
