//! Small helpers over kube for the objects the daemon touches.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The VirtualService resource (networking.istio.io/v1), read and written as dynamic objects.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// The DestinationRule resource (networking.istio.io/v1).
pub(crate) fn destination_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
        "destinationrules",
    )
}

/// A Deployment's revision: a short hash of its pod template. A new template means a new
/// release; replicas, annotations outside the template and status do not count.
pub fn pod_template_revision(deployment: &Value) -> Option<String> {
    let template = deployment.pointer("/spec/template")?;
    let canonical = serde_json::to_string(template).ok()?;
    let digest = Sha256::digest(canonical.as_bytes());
    Some(hex::encode(&digest[..5]))
}
