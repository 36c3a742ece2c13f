//! What the tests read back from the emulator's bookinfo `reviews` VirtualService: the object,
//! the weights canaryd wrote and the rollout state it recorded next to them.

#![allow(dead_code)] // each test binary uses part of it

use canaryd::engine::RolloutState;
use kube_emulator::EmulatorHandle;
use serde_json::Value;

/// The stored `bookinfo/reviews` VirtualService.
pub fn reviews_vs(emu: &EmulatorHandle) -> Value {
    emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap()
}

/// Weights (stable, canary) of the first route.
pub fn reviews_weights(emu: &EmulatorHandle) -> (u64, u64) {
    let route = &reviews_vs(emu)["spec"]["http"][0]["route"];
    (route[0]["weight"].as_u64().unwrap_or(0), route[1]["weight"].as_u64().unwrap_or(0))
}

/// The rollout state canaryd recorded on the VirtualService (default before the first write).
pub fn reviews_state(emu: &EmulatorHandle) -> RolloutState {
    reviews_vs(emu)["metadata"]["annotations"]["canaryd.io/state-reviews"]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or_default()
}
