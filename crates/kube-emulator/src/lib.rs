//! In-process Kubernetes API emulator for tests, benchmarks and the demo sandbox.
//!
//! A strict stand-in for a kube-apiserver on loopback HTTP: CRDs with schema validation and
//! pruning, resourceVersion conflicts, the four patch types with the apiserver's status codes,
//! resumable watches, legacy discovery and server-side tables (enough for `kubectl`), fault
//! injection, a request log, and an optional RBAC mode.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_emulator::EmulatorError> {
//! let emu = kube_emulator::Emulator::start().await?;
//! emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n")?;
//! let client = emu.client();
//! # drop(client); Ok(()) }
//! ```

mod admission;
mod builtin_crds;
mod controller;
mod deployments;
mod discovery;
mod error;
mod faults;
mod handle;
mod managed_fields;
pub mod mesh;
mod objects;
mod openapi;
mod patch;
mod pods;
mod rbac;
mod resources;
mod schema;
mod selectors;
mod server;
mod store;
mod table;
mod validation;
mod watch;

use std::sync::{Arc, Mutex};

use serde_json::Value;

pub use admission::Mutation;
pub use builtin_crds::{ISTIO_DESTINATIONRULE_CRD, ISTIO_VIRTUALSERVICE_CRD};
pub use controller::ControllerConfig;
pub use deployments::RolloutMode;
pub use error::{ApiError, Cause};
pub use faults::{Fault, FaultKind, Matcher, RequestRecord};
pub use handle::{Emulator, EmulatorHandle};
pub use pods::{NEVER_READY_ANNOTATION, POD_TEMPLATE_HASH};
pub use rbac::{Rbac, Rule};
pub use resources::ResourceInfo;

/// Errors of the emulator's own API (not answers to HTTP clients).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A fixture document is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// A fixture object was rejected the way the API would reject it.
    #[error("{}: {}", .0.reason, .0.message)]
    Api(ApiError),
    /// Binding the socket or writing a kubeconfig failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Building a kube client failed.
    #[error("kube client: {0}")]
    Kube(String),
}

impl From<ApiError> for EmulatorError {
    fn from(e: ApiError) -> Self {
        EmulatorError::Api(e)
    }
}

/// Parses a multi-document YAML string into JSON values, skipping empty documents.
pub fn parse_yaml_docs(yaml: &str) -> Result<Vec<Value>, EmulatorError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| EmulatorError::Yaml(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Everything behind the lock.
pub(crate) struct Inner {
    pub store: store::Store,
    pub registry: resources::Registry,
    pub faults: Vec<Fault>,
    pub mutations: Vec<admission::Mutation>,
    pub log: Vec<RequestRecord>,
    pub rbac: Option<Rbac>,
    pub rollout: RolloutMode,
    pub controller: controller::State,
    pub open_watches: Vec<watch::OpenWatch>,
    pub next_watch_id: u64,
}

pub(crate) type Shared = Arc<Mutex<Inner>>;
