//! The N rollouts: the cluster objects the emulator process holds and the policies the
//! driver process parses, both derived from the rollout's index so the two processes agree
//! without talking.

use crate::INTERVAL_S;
use canaryd::policy::{parse_policy, Policy};
use serde_json::{json, Value};

/// Ten steps of one minute (two analysis intervals) each: no rollout finishes within the
/// bench, so every cycle analyses and writes every rollout (the busiest steady state).
pub const STEPS: &str = "[{weight: 5, bake: 1m}, {weight: 10, bake: 1m}, {weight: 20, bake: 1m}, \
                     {weight: 30, bake: 1m}, {weight: 40, bake: 1m}, {weight: 50, bake: 1m}, \
                     {weight: 60, bake: 1m}, {weight: 70, bake: 1m}, {weight: 80, bake: 1m}, \
                     {weight: 90, bake: 1m}]";

pub fn namespace(i: usize) -> String {
    format!("scale-{i:05}")
}

/// Rollout `i`: a VirtualService `web` routing stable/canary subsets, their DestinationRule
/// and the two Deployments.
pub fn fixtures(i: usize) -> Vec<Value> {
    let ns = namespace(i);
    let deployment = |name: &str, version: &str, image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web", "version": version}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web", "version": version}},
                "template": {
                    "metadata": {"labels": {"app": "web", "version": version}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        })
    };
    vec![
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "hosts": ["web"],
                "http": [{
                    "name": "main",
                    "route": [
                        {"destination": {"host": "web", "subset": "stable"}, "weight": 100},
                        {"destination": {"host": "web", "subset": "canary"}, "weight": 0}
                    ],
                    "retries": {"attempts": 2, "perTryTimeout": "2s"}
                }]
            }
        }),
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "host": "web",
                "subsets": [
                    {"name": "stable", "labels": {"version": "stable"}},
                    {"name": "canary", "labels": {"version": "canary"}}
                ]
            }
        }),
        deployment("web-stable", "stable", "registry.example/web:1.0.0"),
        deployment("web-canary", "canary", "registry.example/web:1.1.0"),
    ]
}

pub fn policy(i: usize) -> Policy {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  \
         target: {{virtualService: web, route: main, stable: {{subset: stable, workload: web-stable}}, canary: {{subset: canary, workload: web-canary}}}}\n  \
         steps: {STEPS}\n  \
         analysis: {{interval: {INTERVAL_S}s, successRate: {{tolerance: 2}}, latency: {{tolerance: 50}}}}\n",
        ns = namespace(i)
    );
    parse_policy("scale.yaml", &text).unwrap_or_else(|e| panic!("generated policy {i} is invalid: {e}"))
}
