//! The RolloutPolicy document: the same Rust types serve the policy file in a repo, the custom
//! resource in a cluster, the CRD schema and the editor JSON Schema.
//!
//! Every field has a default where one makes sense, so that a five-line policy (a
//! VirtualService and two subsets) is a useful 10 → 30 → 60 → promote plan.

use super::duration::Duration;
use super::interval::AnalysisInterval;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of canaryd's custom resources.
pub const GROUP: &str = "canaryd.io";
/// API version of the RolloutPolicy resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in policy files.
pub const API_VERSION: &str = "canaryd.io/v1alpha1";

/// A release team's rollout policy: what to shift, in which steps, judged by which checks,
/// when, and who to tell.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "canaryd.io",
    version = "v1alpha1",
    kind = "RolloutPolicy",
    plural = "rolloutpolicies",
    shortname = "rp",
    namespaced,
    status = "super::status::RolloutPolicyStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Canary","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.lastVerdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicySpec {
    /// What traffic to shift: the VirtualService route and its stable and canary destinations.
    pub target: Target,
    /// The step plan, in order. Default: 10%, 30%, 60% with the default bake each.
    #[serde(default = "default_steps")]
    pub steps: Vec<Step>,
    /// What happens after the last step passes.
    #[serde(default)]
    pub promotion: Promotion,
    /// How the canary is judged.
    #[serde(default)]
    pub analysis: Analysis,
    /// When rollouts may start and advance. Absent: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Who is told, on which events.
    #[serde(default)]
    pub alerts: Alerts,
    /// Webhook checks that must pass before starting, each weight increase and promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// What to do when someone else changes the weights mid-rollout (GitOps revert, a person).
    #[serde(default)]
    pub on_drift: DriftAction,
}

/// The VirtualService route canaryd drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of the Istio VirtualService in the policy's namespace.
    pub virtual_service: String,
    /// Name of the HTTP route in the VirtualService (`spec.http[].name`). Default: the only route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The version serving traffic before the rollout.
    pub stable: Destination,
    /// The new version.
    pub canary: Destination,
}

/// One side of the split: an Istio destination (host + DestinationRule subset) and the
/// Deployment behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Destination host. Default: the host the route already uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// DestinationRule subset name, e.g. `v1`.
    pub subset: String,
    /// Deployment serving this subset; also the `destination_workload` Prometheus label.
    /// Default: `<host short name>-<subset>` (bookinfo's `reviews-v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// One stage of the plan: exactly one of `weight`, `headerMatch` or `mirror`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percentage of the route's traffic sent to the canary (0–100, rising from step to step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Send only requests whose header matches to the canary (e.g. `end-user: jason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_match: Option<HeaderMatch>,
    /// Mirror (shadow) a percentage of traffic to the canary; responses are discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Minimum time the step lasts. Default: `analysis.defaultBake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<Duration>,
    /// After this step passes, wait for `canaryd resume` before going on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pause: bool,
}

/// A request header condition, as in Istio's `HTTPMatchRequest.headers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name, lower case (e.g. `end-user`).
    pub header: String,
    /// Exact value to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Traffic mirroring to the canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Percentage of requests mirrored (1–100).
    #[serde(default = "default_mirror_percent")]
    pub percent: u32,
}

/// How the release ends after the last step passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromotionMode {
    /// The canary takes 100% of traffic; the old version can be taken offline.
    #[default]
    Shift,
    /// Copy the canary pod template to the stable Deployment, route back to stable, scale the
    /// canary down (Flagger style; the next release starts clean).
    Copy,
    /// Blue-green: the steps judge the new version without live traffic (mirror and header
    /// steps), then all traffic switches at once; the old version stays ready for
    /// `rollbackWindow` (an abort switches back instantly), then the release ends as `copy`.
    #[serde(rename = "blueGreen")]
    BlueGreen,
}

impl std::fmt::Display for PromotionMode {
    /// As written in policies.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PromotionMode::Shift => "shift",
            PromotionMode::Copy => "copy",
            PromotionMode::BlueGreen => "blueGreen",
        })
    }
}

impl PromotionMode {
    /// The release ends with the canary's template copied into the stable Deployment.
    pub fn copies(self) -> bool {
        matches!(self, PromotionMode::Copy | PromotionMode::BlueGreen)
    }
}

/// Promotion settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// `shift` (default) or `copy`.
    #[serde(default)]
    pub mode: PromotionMode,
    /// Copy mode: replicas the canary Deployment is scaled to for a new revision (the last
    /// promotion left it at zero). Default: the stable Deployment's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_replicas: Option<u32>,
    /// Blue-green: how long after the switch the old version stays ready for an instant
    /// rollback before it is replaced. Default: 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<Duration>,
}

/// What to do when an interval's evidence is not enough for a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum InconclusiveAction {
    /// Extend the step by one bake time, up to `maxExtensions`, passing it at the first look
    /// whose evidence suffices; then hold.
    #[default]
    Extend,
    /// Stay at the current weight until the evidence is conclusive or someone acts.
    Hold,
    /// Abort the rollout.
    Abort,
}

/// Inconclusive-evidence policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnInconclusive {
    /// `extend` (default), `hold` or `abort`.
    #[serde(default)]
    pub action: InconclusiveAction,
    /// How many times a step may be extended before the rollout holds (extend) or aborts.
    #[serde(default = "default_max_extensions")]
    pub max_extensions: u32,
    /// With `extend`: abort instead of holding when the extensions are used up.
    #[serde(default, skip_serializing_if = "is_false")]
    pub abort_when_exhausted: bool,
}

impl Default for OnInconclusive {
    fn default() -> Self {
        OnInconclusive {
            action: InconclusiveAction::Extend,
            max_extensions: default_max_extensions(),
            abort_when_exhausted: false,
        }
    }
}

/// Canary vs baseline success rate (errors are 5xx responses by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessRateCheck {
    /// Run this check (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The regression of the canary's error rate over the baseline's that is allowed, in
    /// percentage points (0 < tolerance ≤ 50). Default 1. A canary worse by at most this much is
    /// aborted with probability ≤ 1 − confidence over the whole rollout; one worse by twice this
    /// or more is aborted once the traffic shows it; a step passes on its own evidence that the
    /// canary is less than twice this worse.
    #[serde(default = "default_success_tolerance")]
    pub tolerance: f64,
    /// Absolute guardrail: the canary's error rate may never exceed this percentage, whatever
    /// the baseline does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Report only; never fail the rollout.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

impl Default for SuccessRateCheck {
    fn default() -> Self {
        SuccessRateCheck {
            enabled: true,
            tolerance: default_success_tolerance(),
            max_error_rate: None,
            dry_run: false,
        }
    }
}

/// Canary vs baseline latency, compared on the histograms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyCheck {
    /// Run this check (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The quantile compared (0.5–0.999). Default 0.99.
    #[serde(default = "default_quantile")]
    pub quantile: f64,
    /// The slowdown of the canary's configured quantile over the baseline's that is allowed, in
    /// percent (0 < tolerance ≤ 1000). Default 20. Histogram buckets limit what can be shown:
    /// with Istio's default buckets only about 2× slowdowns are distinguishable, so the check is
    /// abort-only unless finer buckets resolve twice the tolerance.
    #[serde(default = "default_latency_tolerance")]
    pub tolerance: f64,
    /// Absolute guardrail on the canary's quantile, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Report only; never fail the rollout.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

impl Default for LatencyCheck {
    fn default() -> Self {
        LatencyCheck {
            enabled: true,
            quantile: default_quantile(),
            tolerance: default_latency_tolerance(),
            max_ms: None,
            dry_run: false,
        }
    }
}

/// How a custom check judges its PromQL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum CustomMode {
    /// The canary's value must stay within `min` / `max`.
    #[default]
    Threshold,
    /// The query runs once per side (`{{ workload }}` is the side's workload); the canary's value
    /// may exceed the baseline's by at most `tolerance` percent.
    Compare,
}

/// A check on a PromQL query of the team's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomCheck {
    /// Name shown in verdicts and alerts (lower-case, dashes).
    pub name: String,
    /// PromQL template. Variables: `{{ namespace }}`, `{{ workload }}`, `{{ canaryWorkload }}`,
    /// `{{ baselineWorkload }}`, `{{ virtualService }}`, `{{ interval }}`. Values are escaped.
    /// Must parse as PromQL and return one number. In a RolloutPolicy resource every selector
    /// is confined to the policy's namespace; ranges at most 1h, offsets at most 1d.
    pub query: String,
    /// `threshold` (default) or `compare`.
    #[serde(default)]
    pub mode: CustomMode,
    /// Lowest acceptable value (threshold mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest acceptable value (threshold mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed increase of the canary over the baseline, percent (compare mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Report only; never fail the rollout.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// How the canary is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// How often the judge looks: `auto` (the default) looks at every scrape, at the scrape
    /// interval detected from the data (at least 5s; 15s until detected); or a duration.
    #[serde(default)]
    pub interval: AnalysisInterval,
    /// Bake time of steps that do not set their own. Default 5m.
    #[serde(default = "default_bake")]
    pub default_bake: Duration,
    /// Confidence of verdicts (0.8–0.9999). The chance that a healthy canary is aborted over the
    /// whole rollout stays below 1 − confidence. Default 0.99.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Fewest canary requests in a step before it may pass. Default 50.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Canary vs baseline success rate.
    #[serde(default)]
    pub success_rate: SuccessRateCheck,
    /// Canary vs baseline latency.
    #[serde(default)]
    pub latency: LatencyCheck,
    /// Checks on PromQL of your own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomCheck>,
    /// What to do when the evidence is inconclusive at the end of a step.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// Abort after this many consecutive intervals whose evidence could not be read. Default 4.
    #[serde(default = "default_max_errors")]
    pub max_consecutive_errors: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: AnalysisInterval::default(),
            default_bake: default_bake(),
            confidence: default_confidence(),
            min_requests: default_min_requests(),
            success_rate: SuccessRateCheck::default(),
            latency: LatencyCheck::default(),
            custom: Vec::new(),
            on_inconclusive: OnInconclusive::default(),
            max_consecutive_errors: default_max_errors(),
        }
    }
}

/// What to do with a rollout outside its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutsideWindow {
    /// Keep the current weight; advance again in the next window.
    #[default]
    Hold,
    /// Send all traffic back to stable until the next window (the step restarts there).
    Reset,
    /// Abort the rollout when its window closes before it is done.
    Abort,
}

/// Day of the week, for `schedule.days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// When rollouts may start and advance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Standard 5-field cron expression for window starts, e.g. `0 2 * * *`.
    pub cron: String,
    /// IANA time zone the cron expression is read in. Default `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// How long each window stays open. Default 3h.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// Only these days may open a window (in the policy's time zone). Default: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
    /// What a rollout does when its window closes before it is done: `hold` (default),
    /// `reset` or `abort`.
    #[serde(default)]
    pub outside_window: OutsideWindow,
}

/// Where a secret value comes from. Exactly one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    /// Name of an environment variable of the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file mounted into the daemon (e.g. from a Secret volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A key of a Kubernetes Secret in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key in a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// Rollout events that can be alerted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AlertEvent {
    Start,
    Step,
    Promote,
    Abort,
    Inconclusive,
    WindowMissed,
    /// Copy promotion: the stable Deployment cannot roll out the promoted template.
    Stuck,
}

/// Email alert settings (the SMTP server is the daemon's configuration, not the policy's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailAlert {
    /// Recipient addresses.
    pub to: Vec<String>,
    /// Events for this channel. Default: `alerts.on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<AlertEvent>>,
}

/// Webhook payload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// canaryd's versioned JSON payload, HMAC-signed when a signing secret is set.
    #[default]
    Json,
    /// Slack incoming webhook.
    Slack,
    /// Microsoft Teams incoming webhook.
    Teams,
}

/// A webhook alert channel. The URL is a secret: it comes from `urlFrom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// Channel name shown in logs and metrics (never the URL).
    pub name: String,
    /// `json` (default), `slack` or `teams`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Where the URL comes from.
    pub url_from: SecretSource,
    /// Where the HMAC-SHA256 signing key comes from (json format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_from: Option<SecretSource>,
    /// Events for this channel. Default: `alerts.on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<AlertEvent>>,
}

/// Who is told, on which events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alerts {
    /// Events alerted on by every channel that does not set its own. Default: `[abort]`.
    #[serde(default = "default_alert_events")]
    pub on: Vec<AlertEvent>,
    /// Email recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAlert>,
    /// Webhook channels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookAlert>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts { on: default_alert_events(), email: None, webhooks: Vec::new() }
    }
}

/// When a gate is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    /// Before a pending rollout starts (2xx: go; otherwise hold).
    ConfirmRollout,
    /// Before each weight increase (2xx: go; otherwise hold).
    ConfirmStep,
    /// Before promotion (2xx: go; otherwise hold).
    ConfirmPromotion,
    /// Asked every interval; a 2xx answer aborts the rollout.
    Rollback,
}

/// A webhook gate, as Flagger's confirm-* and rollback hooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Gate name shown in status and logs.
    pub name: String,
    /// When the gate is asked.
    pub kind: GateKind,
    /// Gate URL (not secret; use `urlFrom` for one that is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the URL comes from when it is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<SecretSource>,
    /// How long to wait for an answer; no answer counts as "not yet". Default 10s.
    #[serde(default = "default_gate_timeout")]
    pub timeout: Duration,
}

/// Reaction to weights changed by someone else mid-rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DriftAction {
    /// Write canaryd's weights back and record an event (default).
    #[default]
    Reassert,
    /// Record an event and hold the rollout until someone resumes it.
    Hold,
}

fn default_steps() -> Vec<Step> {
    [10, 30, 60].into_iter().map(|w| Step { weight: Some(w), ..Step::default() }).collect()
}
fn default_mirror_percent() -> u32 {
    100
}
fn default_max_extensions() -> u32 {
    3
}
fn default_true() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_success_tolerance() -> f64 {
    1.0
}
fn default_quantile() -> f64 {
    0.99
}
fn default_latency_tolerance() -> f64 {
    20.0
}
fn default_bake() -> Duration {
    Duration::from_mins(5)
}
fn default_confidence() -> f64 {
    0.99
}
fn default_min_requests() -> u64 {
    50
}
fn default_max_errors() -> u32 {
    4
}
fn default_time_zone() -> String {
    "UTC".to_string()
}
fn default_window() -> Duration {
    Duration::from_mins(180)
}
fn default_alert_events() -> Vec<AlertEvent> {
    vec![AlertEvent::Abort, AlertEvent::Stuck]
}
fn default_gate_timeout() -> Duration {
    Duration::from_secs(10)
}
