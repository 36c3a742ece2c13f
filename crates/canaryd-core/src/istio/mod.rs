//! Istio VirtualService routing: reading the policy route's current traffic and computing the
//! one patch that sets new weights and records the rollout state; and Istio's host-name and
//! DestinationRule lookup rules, to find the subsets a route's destinations mean.
//!
//! We keep a small typed view of our own (no Istio crate targets kube 5) and work on the raw
//! JSON so that every field we do not manage survives byte for byte.

mod destination_rule;
mod hosts;
mod route_patch;
mod virtual_service;

pub use destination_rule::{find_subset, MissingSubset, SubsetError, SubsetRef, DEFAULT_ROOT_NAMESPACE};
pub use hosts::{fqdn, host_matches, service_namespace, service_of, DEFAULT_DOMAIN};
pub use virtual_service::{
    annotation_key, command_annotation_key, route_record_annotation_key, state_annotation_key, RouteView,
    VsError,
};
