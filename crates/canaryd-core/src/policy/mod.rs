//! The policy model: RolloutPolicy documents, their defaults and their validation.
//!
//! Raw text → [`parse_policy`] → [`Policy`] (typed, defaulted, validated) or every problem as a
//! located [`Diagnostic`]. Nothing downstream sees an unvalidated policy.

mod compiled;
mod diagnostic;
pub mod duration;
mod interval;
mod load;
pub(crate) mod locate;
mod schema;
pub mod spec;
pub mod status;
mod validate;

pub use compiled::{duplicates, host_short_name, CustomQueryError, Origin, Policy, Workloads};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use duration::Duration;
pub use interval::{AnalysisInterval, AUTO_FALLBACK, AUTO_FLOOR};
pub use load::{from_resource, parse_policy, Metadata, PolicyDocument};
pub use locate::Position;
pub use schema::{crd_yaml, editor_schema};
pub use spec::*;
pub use status::{Condition, RolloutPolicyStatus};
pub use validate::is_email_address;
