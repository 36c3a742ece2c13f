//! Bad input from the cluster never panics and never half-applies: arbitrary VirtualService
//! JSON is read into a route view or a typed error, arbitrary state annotations are refused
//! cleanly, and the engine keeps its invariants under any sequence of inputs.

use canaryd::engine::{step, Command, Input, Phase, RolloutState};
use canaryd::istio::RouteView;
use canaryd::observation::{Observation, SideObservation};
use canaryd::plan::Traffic;
use canaryd::policy::{parse_policy, Policy};
use proptest::prelude::*;
use serde_json::{json, Value};

fn policy() -> Policy {
    parse_policy(
        "p.yaml",
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}\n  steps: [{weight: 10, bake: 1m}, {weight: 40, bake: 1m}]\n  analysis: {interval: 30s}\n",
    )
    .unwrap()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z0-9]{0,4}".prop_map(Value::from),
        Just(json!("v1")),
        Just(json!("v2")),
        Just(json!("reviews")),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("spec".to_string()),
                    Just("http".to_string()),
                    Just("route".to_string()),
                    Just("destination".to_string()),
                    Just("subset".to_string()),
                    Just("host".to_string()),
                    Just("weight".to_string()),
                    Just("name".to_string()),
                    Just("mirror".to_string()),
                    Just("metadata".to_string()),
                    Just("annotations".to_string()),
                    "[a-z]{1,3}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn inputs() -> impl Strategy<Value = Vec<(i64, Input)>> {
    let input = prop_oneof![
        Just(Input::Tick),
        "[ab]".prop_map(Input::NewRevision),
        (0u64..400, 0u64..400, 0u64..4000, 0u64..40).prop_map(|(cr, ce, br, be)| {
            Input::Observed(Ok(Observation {
                start: 0,
                end: 0,
                canary: SideObservation { requests: cr, errors: ce.min(cr), latency: None },
                baseline: SideObservation { requests: br, errors: be.min(br), latency: None },
                custom: vec![],
            }))
        }),
        Just(Input::Observed(Err("prometheus down".into()))),
        Just(Input::Command(Command::Abort("test".into()))),
        Just(Input::Command(Command::Pause)),
        Just(Input::Command(Command::Resume)),
        Just(Input::Command(Command::Retry)),
        (0u32..=100)
            .prop_map(|w| Input::Drift { observed: Traffic { canary_weight: w, ..Traffic::default() } }),
    ];
    proptest::collection::vec((1i64..120, input), 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_virtual_services_read_or_error_and_patch_cleanly(spec in json_value()) {
        let p = policy();
        let vs = json!({"metadata": {"name": "reviews", "resourceVersion": "1"}, "spec": spec});
        if let Ok(view) = RouteView::read(&vs, &p) {
            // Whatever was readable must also be writable without panicking, and the patch
            // always guards on the resourceVersion first.
            let patch = view.patch(&vs, &p, &Traffic { canary_weight: 30, ..Traffic::default() }, "{}");
            prop_assert_eq!(&patch[0]["op"], "test");
        }
    }

    #[test]
    fn arbitrary_state_annotations_are_refused_not_trusted(raw in ".{0,200}") {
        let _ = serde_json::from_str::<RolloutState>(&raw);
    }

    #[test]
    fn engine_invariants_hold_under_any_input_sequence(seq in inputs()) {
        let p = policy();
        let mut state = RolloutState::default();
        let mut now = 1_795_392_000i64;
        for (dt, input) in seq {
            now += dt;
            let before = state.clone();
            let t = step(&p, &state, input, jiff::Timestamp::from_second(now).unwrap());
            state = t.state;
            // An aborted rollout sends nothing to the canary.
            if state.phase == Phase::Aborted {
                prop_assert_eq!(state.traffic.canary_weight, 0);
                prop_assert!(state.traffic.header_match.is_none() && state.traffic.mirror_percent.is_none());
            }
            // Steps advance one at a time.
            if before.phase == Phase::Progressing && state.phase == Phase::Progressing && before.revision == state.revision {
                prop_assert!(state.step == before.step || state.step == before.step + 1);
            }
            // Promotion only ever follows a Pass (an operator's promote aside — not generated here).
            if state.phase == Phase::Promoted && before.phase != Phase::Promoted {
                let last = state.last_verdict.as_ref().map(|v| v.verdict);
                prop_assert_eq!(last, Some(canaryd::judge::Verdict::Pass));
            }
            // The state always survives its own persistence.
            let back: RolloutState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
            prop_assert_eq!(back, state.clone());
        }
    }
}
