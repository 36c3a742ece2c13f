//! Small helpers over kube for the objects the daemon touches.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `networking.istio.io` version this process talks: `v1` unless discovery found a
/// cluster that serves only `v1beta1` (Istio before 1.22). Set once at startup
/// ([`discover_istio_version`]); the objects are the same in both versions.
static ISTIO_VERSION: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The Istio networking API version in use (see [`ISTIO_VERSION`]).
pub fn istio_version() -> &'static str {
    ISTIO_VERSION.get().copied().unwrap_or("v1")
}

/// Asks the API server which `networking.istio.io` versions it serves and picks `v1`, else
/// `v1beta1`. Errs when neither is served (Istio's CRDs are not installed).
pub async fn discover_istio_version(client: &kube::Client) -> Result<&'static str, String> {
    let version = if client.list_api_group_resources("networking.istio.io/v1").await.is_ok() {
        "v1"
    } else {
        match client.list_api_group_resources("networking.istio.io/v1beta1").await {
            Ok(_) => "v1beta1",
            Err(e) => {
                return Err(format!(
                    "the cluster serves neither networking.istio.io/v1 nor v1beta1 ({e}); install Istio's CRDs first"
                ))
            }
        }
    };
    let chosen = *ISTIO_VERSION.get_or_init(|| version);
    Ok(chosen)
}

/// The VirtualService resource ([`istio_version`]), read and written as dynamic objects.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", istio_version(), "VirtualService"),
        "virtualservices",
    )
}

/// The DestinationRule resource ([`istio_version`]).
pub(crate) fn destination_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", istio_version(), "DestinationRule"),
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
