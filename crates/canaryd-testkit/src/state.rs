//! What tests read back from the cluster: the VirtualService a policy routes, the weights on it
//! and the rollout state canaryd recorded there — under the key the product itself computes
//! ([`state_annotation_key`]), so a change of key cannot leave the tests reading nothing.

use canaryd_core::engine::RolloutState;
use canaryd_core::istio::state_annotation_key;
use canaryd_core::policy::Policy;
use kube_emulator::EmulatorHandle;
use serde_json::Value;

/// The stored VirtualService of `policy` (networking.istio.io/v1).
pub fn virtual_service(emu: &EmulatorHandle, policy: &Policy) -> Value {
    let name = &policy.spec().target.virtual_service;
    emu.get("networking.istio.io", "v1", "virtualservices", policy.namespace(), name)
        .unwrap_or_else(|| panic!("VirtualService {}/{name} not found", policy.namespace()))
}

/// Weights (first, second destination) of the VirtualService's first http route, read from the
/// object itself rather than through canaryd's own route reader.
pub fn first_route_weights(emu: &EmulatorHandle, policy: &Policy) -> (u64, u64) {
    let route = &virtual_service(emu, policy)["spec"]["http"][0]["route"];
    (route[0]["weight"].as_u64().unwrap_or(0), route[1]["weight"].as_u64().unwrap_or(0))
}

/// The rollout state canaryd recorded for `policy` (default before its first write).
pub fn recorded_state(emu: &EmulatorHandle, policy: &Policy) -> RolloutState {
    state_in(&virtual_service(emu, policy), policy)
}

/// The rollout state recorded for `policy` in an already read VirtualService.
pub fn state_in(vs: &Value, policy: &Policy) -> RolloutState {
    vs["metadata"]["annotations"][state_annotation_key(policy)]
        .as_str()
        .map(|s| serde_json::from_str(s).expect("recorded state is canaryd state"))
        .unwrap_or_default()
}
