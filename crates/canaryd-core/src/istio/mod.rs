//! Istio VirtualService routing: reading the policy route's current traffic and computing the
//! one patch that sets new weights and records the rollout state.
//!
//! We keep a small typed view of our own (no Istio crate targets kube 5) and work on the raw
//! JSON so that every field we do not manage survives byte for byte.

mod virtual_service;

pub use virtual_service::{command_annotation_key, state_annotation_key, RouteView, VsError};
