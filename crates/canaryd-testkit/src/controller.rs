//! The emulator's Deployment controller in its deterministic mode, as the strict-emulator
//! tests use it: pods get ready a fixed time after they are created, and controller time moves
//! only when a test advances it.

use kube_emulator::{ControllerConfig, EmulatorHandle, RolloutMode};
use std::time::Duration;

/// Turns the controller on: pods ready `ready_after` after creation, the default 600 s
/// progress deadline, no ticker (time moves with [`EmulatorHandle::advance_controller`]).
pub fn deterministic(emu: &EmulatorHandle, ready_after: Duration) {
    emu.set_rollout_mode(RolloutMode::Controlled(ControllerConfig {
        ready_after,
        progress_deadline: Duration::from_secs(600),
        tick: Duration::ZERO,
    }));
}

/// Lets the controller create the pods of what was applied, then waits (controller time) until
/// they are ready.
pub fn settle(emu: &EmulatorHandle, ready_after: Duration) {
    emu.advance_controller(Duration::ZERO);
    emu.advance_controller(ready_after);
}
