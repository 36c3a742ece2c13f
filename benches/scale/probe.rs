//! The driver's last measurement: the API round trip without a cycle around it.

use canaryd::policy::Policy;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::time::{Duration, Instant};

/// Bare VirtualService patch round trips (a merge patch of one annotation) against the same
/// emulator, one at a time and 32 in flight (the driver's `buffered(32)`): separates the
/// loopback round trip from queueing behind the cycle's other requests. Sorted, per request.
pub async fn probe_patches(client: &kube::Client, policies: &[Policy]) -> (Vec<Duration>, Vec<Duration>) {
    let sample = &policies[..policies.len().min(1000)];
    let one = |p: &Policy, tag: usize| {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), p.namespace(), &canaryd::daemon::virtual_service_resource());
        async move {
            let patch = json!({"metadata": {"annotations": {"bench/probe": tag.to_string()}}});
            let t = Instant::now();
            api.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("probe patch");
            t.elapsed()
        }
    };
    let mut serial = Vec::new();
    for (i, p) in sample.iter().enumerate() {
        serial.push(one(p, i).await);
    }
    let mut parallel: Vec<Duration> =
        futures::stream::iter(sample.iter().enumerate()).map(|(i, p)| one(p, i)).buffered(32).collect().await;
    serial.sort();
    parallel.sort();
    (serial, parallel)
}
