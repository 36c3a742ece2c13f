//! The daemon's IO shell around the pure engine: one `reconcile` per policy per cycle reads the
//! VirtualService (weights + recorded state) and the canary Deployment, gathers evidence,
//! steps the engine, and writes the new weights and state in one guarded patch. Side effects
//! (gates, alerts, Deployment copies, events) happen only after that write succeeded, so a
//! crash at any instant either loses nothing or repeats an idempotent read.

pub mod cache;
mod driver;
mod effects;
mod feedback;
mod inputs;
mod kube_effects;
pub mod kube_io;
pub mod leader;
pub mod metrics;
mod policy_dir;
pub mod run_loop;
mod schedule;
mod scope;
mod sources;
mod status;

pub use driver::{CycleReport, DaemonError, Driver, EVIDENCE_DEADLINE};
pub use effects::{DaemonEffects, Effects, KubeSecretStore, NoEffects};
pub use feedback::Feedback;
pub use kube_io::{pod_template_revision, virtual_service_resource};
pub use scope::NamespaceScope;
