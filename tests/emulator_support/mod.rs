//! Fixtures shared by the emulator tests: the bookinfo `reviews` objects from the seed
//! articles and kube-rs handles for them.
#![allow(dead_code)]

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

/// The bookinfo `reviews` VirtualService: 90 % to subset v1, 10 % to subset v2.
pub const REVIEWS_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v2
      weight: 10
"#;

/// The bookinfo `reviews` DestinationRule with subsets v1 and v2.
pub const REVIEWS_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"#;

/// The `bookinfo` namespace.
pub const BOOKINFO_NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bookinfo\n";

/// A two-replica `reviews-v2` Deployment in bookinfo.
pub const REVIEWS_V2_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
  namespace: bookinfo
  labels: {app: reviews, version: v2}
spec:
  replicas: 2
  selector:
    matchLabels: {app: reviews, version: v2}
  template:
    metadata:
      labels: {app: reviews, version: v2}
    spec:
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v2:1.20.2
"#;

pub fn vs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

pub fn dr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule"),
        "destinationrules",
    )
}

pub fn virtual_services(client: kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client, "bookinfo", &vs_resource())
}

/// Parses a single YAML document into a `DynamicObject`.
pub fn dynamic(yaml: &str) -> DynamicObject {
    let v = kube_emulator::parse_yaml_docs(yaml).unwrap().remove(0);
    serde_json::from_value(v).unwrap()
}

/// The weights of the first http route, in order.
pub fn weights(vs: &serde_json::Value) -> Vec<i64> {
    vs["spec"]["http"][0]["route"].as_array().unwrap().iter().map(|d| d["weight"].as_i64().unwrap()).collect()
}
