//! The upstream CRDs the emulator installs at start, embedded so `canaryd demo` runs from a
//! clean clone. Parsed once per process: the two files are ~470 KB of YAML. Other CRDs (Gateway API, canaryd's
//! own) are applied by whoever needs them.

use std::sync::OnceLock;

use serde_json::Value;

/// `virtualservices.networking.istio.io` from Istio 1.30.3 (v1, v1beta1, v1alpha3).
pub const ISTIO_VIRTUALSERVICE_CRD: &str = include_str!("crds/istio-virtualservice.yaml");
/// `destinationrules.networking.istio.io` from Istio 1.30.3.
pub const ISTIO_DESTINATIONRULE_CRD: &str = include_str!("crds/istio-destinationrule.yaml");

/// The embedded CRDs as JSON values.
pub fn parsed() -> &'static [Value] {
    static PARSED: OnceLock<Vec<Value>> = OnceLock::new();
    PARSED.get_or_init(|| {
        [ISTIO_VIRTUALSERVICE_CRD, ISTIO_DESTINATIONRULE_CRD]
            .iter()
            .flat_map(|y| crate::parse_yaml_docs(y).expect("embedded CRDs are valid YAML"))
            .collect()
    })
}
