//! The validated, compiled policy: what every consumer downstream of parsing works with.
//!
//! A [`Policy`] can only be made by [`super::parse_policy`], [`super::from_resource`] or
//! [`Policy::revise`], all of which validate first; its fields are private, so nothing can
//! change it afterwards. The things derived from the spec — the step plan, the schedule and the
//! workload names — are computed here once, so the engine, the daemon, `backtest`, alerts,
//! `plan` and `status` cannot disagree about them, and a schedule that does not compile is a
//! validation error instead of a rollout that ignores its windows.

use super::diagnostic::{Diagnostic, Diagnostics};
use super::load::{Metadata, PolicyDocument};
use super::locate::LocationIndex;
use super::spec::{CustomCheck, Destination, RolloutPolicySpec, API_VERSION};
use super::validate;
use crate::plan::{self, PlanStep};
use crate::promql::confine::{self, ConfineError};
use crate::promql::{Side, TemplateError, TemplateVars, TenantLabel};
use crate::schedule::CompiledSchedule;

/// The Deployment names Istio reports for each side (its `destination_workload` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workloads {
    /// The stable (baseline) side.
    pub stable: String,
    /// The canary side.
    pub canary: String,
}

/// Where a policy came from, which decides what it may ask the daemon to do.
///
/// A policy file is mounted by the operator who runs canaryd, so it is trusted like the
/// daemon's own configuration. A RolloutPolicy custom resource is written by whoever may create
/// one in its namespace — a tenant — and acts through canaryd's identity: it may only name
/// Secrets in its own namespace (never the daemon's environment or files), and its custom
/// queries are confined to its namespace's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A policy file the operator mounted (`--policies`), or one given on the command line.
    File,
    /// A RolloutPolicy custom resource.
    Resource,
}

/// A validated policy with its plan, schedule and workloads compiled; see the module docs.
/// Immutable and shared: a clone is a reference count, so the daemon's loop, its caches and
/// its background cycles can hold the same policy without copying it (10,000 policies of
/// ~17 KB each were held in several copies).
#[derive(Debug, Clone)]
pub struct Policy {
    inner: std::sync::Arc<Compiled>,
}

/// What a [`Policy`] holds.
#[derive(Debug)]
struct Compiled {
    source: String,
    origin: Origin,
    name: String,
    namespace: String,
    spec: RolloutPolicySpec,
    plan: Vec<PlanStep>,
    schedule: Option<CompiledSchedule>,
    workloads: Workloads,
}

impl PartialEq for Policy {
    /// Two policies are equal when they say the same thing; everything else is derived.
    fn eq(&self, other: &Self) -> bool {
        (&self.inner.source, self.inner.origin, &self.inner.name, &self.inner.namespace, &self.inner.spec)
            == (
                &other.inner.source,
                other.inner.origin,
                &other.inner.name,
                &other.inner.namespace,
                &other.inner.spec,
            )
    }
}

impl Policy {
    /// Compiles an already validated spec. `file` names the source in messages.
    pub(super) fn compile(
        file: &str,
        origin: Origin,
        name: String,
        namespace: String,
        spec: RolloutPolicySpec,
    ) -> Result<Policy, Diagnostics> {
        let schedule = match &spec.schedule {
            None => None,
            // Validation parsed the cron and the zone already; a failure here is a bug, and it
            // must stop the policy rather than let it run without windows.
            Some(s) => Some(CompiledSchedule::new(s).map_err(|e| {
                Diagnostics(vec![Diagnostic::at(file, None, "spec.schedule", e)
                    .help("fix the schedule; see README.md, \"Policy reference\"")])
            })?),
        };
        let workloads = Workloads {
            stable: default_workload(&spec.target.stable, &spec.target.virtual_service),
            canary: default_workload(&spec.target.canary, &spec.target.virtual_service),
        };
        let plan = plan::compile(&spec);
        let compiled =
            Compiled { source: file.to_string(), origin, name, namespace, spec, plan, schedule, workloads };
        Ok(Policy { inner: std::sync::Arc::new(compiled) })
    }

    /// Validates `edit` applied to a copy of this policy's spec and returns the new policy
    /// (for tests and tools that derive one policy from another).
    pub fn revise(&self, edit: impl FnOnce(&mut RolloutPolicySpec)) -> Result<Policy, Diagnostics> {
        let mut spec = self.inner.spec.clone();
        edit(&mut spec);
        let doc = PolicyDocument {
            api_version: API_VERSION.to_string(),
            kind: "RolloutPolicy".to_string(),
            metadata: Metadata {
                name: self.inner.name.clone(),
                namespace: Some(self.inner.namespace.clone()),
                ..Metadata::default()
            },
            spec,
        };
        let problems =
            validate::validate(&self.inner.source, &LocationIndex::default(), &doc, self.inner.origin);
        if !problems.is_empty() {
            return Err(Diagnostics(problems));
        }
        Policy::compile(
            &self.inner.source,
            self.inner.origin,
            self.inner.name.clone(),
            self.inner.namespace.clone(),
            doc.spec,
        )
    }

    /// File path, or `rolloutpolicy/<namespace>/<name>` for a custom resource; for messages.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Whether the policy is an operator's file or a tenant's custom resource.
    pub fn origin(&self) -> Origin {
        self.inner.origin
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The namespace of the policy and of its VirtualService.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// `namespace/name`, the key used in logs, metrics and state.
    pub fn key(&self) -> String {
        format!("{}/{}", self.inner.namespace, self.inner.name)
    }

    /// Whether both are the same compiled policy (one compilation, shared), which implies
    /// equality; two compilations of one text are equal but not the same.
    pub fn same(&self, other: &Policy) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The validated spec, read-only.
    pub fn spec(&self) -> &RolloutPolicySpec {
        &self.inner.spec
    }

    /// The resolved step plan.
    pub fn plan(&self) -> &[PlanStep] {
        &self.inner.plan
    }

    /// The compiled schedule, if the policy has one.
    pub fn schedule(&self) -> Option<&CompiledSchedule> {
        self.inner.schedule.as_ref()
    }

    /// The Deployment names of both sides: the one rule every query, link and message uses.
    pub fn workloads(&self) -> &Workloads {
        &self.inner.workloads
    }

    /// The values of custom-check template variables for a window of `window_secs` seconds.
    pub fn template_vars(&self, window_secs: i64) -> TemplateVars {
        TemplateVars {
            namespace: self.inner.namespace.clone(),
            canary_workload: self.inner.workloads.canary.clone(),
            baseline_workload: self.inner.workloads.stable.clone(),
            virtual_service: self.inner.spec.target.virtual_service.clone(),
            interval: format!("{}s", window_secs.max(1)),
        }
    }

    /// The PromQL a custom check sends for `side` over a window of `window_secs` seconds: its
    /// template rendered with this policy's values (escaped) and, for a RolloutPolicy resource,
    /// every selector confined to the policy's namespace on `tenant_label` (see
    /// [`crate::promql::confine`]). The one rule the daemon and `backtest` both use.
    pub fn custom_query(
        &self,
        check: &CustomCheck,
        side: Side,
        window_secs: i64,
        tenant_label: &TenantLabel,
    ) -> Result<String, CustomQueryError> {
        let rendered = self.template_vars(window_secs).render(&check.query, side)?;
        match self.inner.origin {
            Origin::File => Ok(rendered),
            Origin::Resource => Ok(confine::confine_query(&rendered, tenant_label, &self.inner.namespace)?),
        }
    }
}

/// Why a custom check's query cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomQueryError {
    /// The template does not render with this window's values.
    #[error("the query template does not render: {0}")]
    Template(#[from] TemplateError),
    /// A resource's query cannot be confined to its namespace.
    #[error(transparent)]
    Confine(#[from] ConfineError),
}

/// Every policy whose `namespace/name` another policy in `policies` already has: two
/// definitions of one rollout would fight over its VirtualService, so neither may be acted on.
/// One `(namespace/name, diagnostic)` per later definition, naming the first.
pub fn duplicates(policies: &[Policy]) -> Vec<(String, Diagnostic)> {
    let mut first: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for p in policies {
        let key = p.key();
        match first.get(&key) {
            None => {
                first.insert(key, p.source());
            }
            Some(earlier) => out.push((
                key,
                Diagnostic::at(
                    p.source(),
                    None,
                    "metadata.name",
                    format!("policy {} is also defined in {earlier}; neither is acted on", p.key()),
                )
                .help(
                    "each namespace/name may be defined once: rename one (metadata.name) or delete the copy",
                ),
            )),
        }
    }
    out
}

/// A side's Deployment: its `workload`, else `<short host>-<subset>` where the host is the
/// destination's `host` or, when the policy names none, the VirtualService's name — the
/// bookinfo convention (`reviews` + `v2` → `reviews-v2`). A route whose host differs from the
/// VirtualService's name needs `host:` or `workload:` in the policy; the daemon warns when the
/// route it reads disagrees with this.
pub(super) fn default_workload(d: &Destination, virtual_service: &str) -> String {
    if let Some(w) = &d.workload {
        return w.clone();
    }
    let host = d.host.as_deref().unwrap_or(virtual_service);
    format!("{}-{}", host_short_name(host), d.subset)
}

/// The first DNS label of a host (`reviews.bookinfo.svc.cluster.local` → `reviews`).
pub fn host_short_name(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}
