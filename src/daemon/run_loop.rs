//! The loop of `canaryd run`: which policies to reconcile when, and which reconciles may wait
//! for what.
//!
//! - **Watch-triggered.** Watches on the managed namespaces' VirtualServices and Deployments
//!   wake the loop when one of a policy's objects changes (an operator command, drift, a new
//!   canary template, a stable rollout); that policy is reconciled at once.
//! - **Engine-timed.** Otherwise a policy is visited when its engine asks (`wake_at`: the next
//!   look, a schedule window), at least every [`MAX_REVISIT`] while it has something to do, and
//!   an idle one only every [`IDLE_RESYNC`] (the watches bring its changes).
//! - **Isolated.** Changes and effects' feedback are decided on a fast path that gathers no
//!   evidence ([`Driver::cycle_without_evidence`]); looks that need Prometheus run in one
//!   background cycle at a time, bounded by the evidence deadline; gates and alerts run in the
//!   background. A hung Prometheus, gate or webhook delays no other policy's commands, aborts
//!   or drift handling. The two paths may race on one VirtualService: every write is guarded by
//!   its resourceVersion, so the later one gets a conflict and re-reads.

use super::cache::Caches;
use super::leader::LeaderElector;
use super::metrics::DaemonMetrics;
use super::{CycleReport, DaemonError, Driver, Effects, NamespaceScope};
use crate::policy::{from_resource, parse_policy, Condition, Policy, RolloutPolicy, RolloutPolicyStatus};
use crate::prometheus::MetricsSource;
use kube::api::{Api, Patch, PatchParams};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest time between two visits of a policy with a rollout in progress (or pending).
pub const MAX_REVISIT: i64 = 30;
/// Longest time between two visits of an idle policy: a safety net under the watches.
pub const IDLE_RESYNC: i64 = 300;
/// The most policies one background cycle visits (the longest due first; the others stay due
/// for the next cycle, which starts as soon as this one ends). A cycle holds every visited
/// policy's reads until it decides: at startup, when every policy is due, thousands at once
/// would set the process's memory high-water mark.
const MAX_CYCLE: usize = 500;
/// How long the loop sleeps when nothing wakes it.
const TICK: Duration = Duration::from_secs(2);

/// Where policies come from.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    /// A directory of policy files (`--policies`), re-read every 2 s (a file is parsed
    /// again only when its modification time or size changed).
    pub dir: Option<PathBuf>,
    /// RolloutPolicy resources (`--crds`).
    pub crds: bool,
}

/// The watch keys of a policy's objects (see [`super::cache::Touched`]).
fn object_keys(policy: &Policy) -> [String; 4] {
    let ns = policy.namespace();
    [
        format!("vs:{ns}/{}", policy.spec().target.virtual_service),
        format!("deploy:{ns}/{}", policy.workloads().canary),
        format!("deploy:{ns}/{}", policy.workloads().stable),
        format!("policy:{ns}/{}", policy.name()),
    ]
}

/// The daemon's loop and what it carries between turns.
pub struct RunLoop<M, E> {
    pub driver: Arc<Driver<M, E>>,
    pub client: kube::Client,
    pub source: PolicySource,
    pub scope: NamespaceScope,
    pub elector: Option<Arc<LeaderElector>>,
    pub metrics: Arc<DaemonMetrics>,
    /// The watch caches (also given to the driver); without them (`--once`) policies are
    /// listed and objects read from the API.
    pub cache: Option<Arc<Caches>>,
    /// One cycle (with evidence), then return.
    pub once: bool,
    /// The dashboard's snapshot (a no-op unless `--ui-addr`), updated after every reconcile.
    pub dashboard: crate::ui::Dashboard,
}

type Finished = (Vec<Policy>, Vec<Result<CycleReport, DaemonError>>);

impl<M: MetricsSource + 'static, E: Effects + 'static> RunLoop<M, E> {
    /// Runs until `shutdown` resolves (between turns: every decision is already written) or,
    /// with `once`, after one cycle.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let never = Arc::new(super::cache::Touched::default());
        let touched = self.cache.as_ref().map_or(never, |c| c.touched.clone());
        let mut next_due: HashMap<String, i64> = HashMap::new();
        let mut statuses: HashMap<String, RolloutPolicyStatus> = HashMap::new();
        let mut analysis: Option<tokio::task::JoinHandle<Finished>> = None;
        let analysed = Arc::new(tokio::sync::Notify::new());
        // Policy files seen at the last turn, and removed ones not yet retired.
        let mut known_files: HashMap<String, PathBuf> = HashMap::new();
        let mut retiring: HashMap<String, Policy> = HashMap::new();
        let mut parsed = Parsed::default();
        // The policies as last gathered, indexed by the objects that wake them; gathered again
        // every TICK (files re-stat'ed, resources re-listed from the cache) or when a
        // RolloutPolicy changed, so a turn woken by one object's change costs what that change
        // concerns, not a walk over every policy.
        let mut catalog = Catalog::default();
        let mut gathered_at: Option<std::time::Instant> = None;
        let mut last_renewal: Option<std::time::Instant> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let now = jiff::Timestamp::now();
            // Renew (or try to take) the lease every TICK, as client-go's retry period; between
            // renewals a turn woken by a watch relies on the renew deadline checked at writes.
            let leading = match &self.elector {
                Some(e) if last_renewal.is_none_or(|t| t.elapsed() >= TICK) => {
                    last_renewal = Some(std::time::Instant::now());
                    e.try_lead(now).await
                }
                Some(e) => e.may_write(),
                None => true,
            };
            if leading {
                // Objects that changed since the last turn.
                let changed = touched.take();
                let sources_changed = changed.iter().any(|k| k.starts_with("policy:"));
                if sources_changed || gathered_at.is_none_or(|t| t.elapsed() >= TICK) {
                    gathered_at = Some(std::time::Instant::now());
                    let gathered = gather(
                        &self.source,
                        &self.scope,
                        &self.client,
                        self.cache.as_deref(),
                        &mut statuses,
                        &mut parsed,
                    )
                    .await;
                    self.lifecycle(&gathered, &parsed, &mut known_files, &mut retiring).await;
                    if !catalog.holds(&gathered.policies) {
                        self.dashboard.retain(&gathered.policies.iter().map(Policy::key).collect());
                    }
                    known_files = catalog.update(gathered);
                }
                if let Some(h) = analysis.take_if(|h| h.is_finished()) {
                    if let Ok((due, results)) = h.await {
                        self.record(&due, results, &catalog.from_crs, &mut next_due, &mut statuses, false)
                            .await;
                    }
                }
                // The fast path: objects that changed and feedback that wants a visit.
                let fast = catalog.woken(&changed, &self.driver.feedback().waiting());
                if !fast.is_empty() && !self.once {
                    let results = self.bounded(self.driver.cycle_without_evidence(&fast, now)).await;
                    self.record(&fast, results, &catalog.from_crs, &mut next_due, &mut statuses, true).await;
                }
                // Looks (and everything else due), in the background, one cycle at a time.
                if analysis.is_none() {
                    let limit = if self.once { usize::MAX } else { MAX_CYCLE };
                    let due = catalog.due(&next_due, now.as_second(), limit);
                    if self.once {
                        let results = self.bounded(self.driver.cycle(&due, now)).await;
                        self.record(&due, results, &catalog.from_crs, &mut next_due, &mut statuses, false)
                            .await;
                    } else if !due.is_empty() {
                        let (driver, elector, metrics, done) = (
                            self.driver.clone(),
                            self.elector.clone(),
                            self.metrics.clone(),
                            analysed.clone(),
                        );
                        analysis = Some(tokio::spawn(async move {
                            let results = bounded(&elector, &metrics, driver.cycle(&due, now)).await;
                            done.notify_one();
                            (due, results)
                        }));
                    }
                }
            }
            self.metrics.cycle_done();
            if self.once {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                // A changed VirtualService or Deployment: an operator command, drift, a release.
                _ = touched.changed() => {}
                // An acknowledged delivery (not yet written, the window in which a crash sends
                // an alert twice) or an open gate.
                _ = self.driver.feedback().arrived() => {}
                // The background cycle finished: record it and start the next one.
                _ = analysed.notified() => {}
                _ = &mut shutdown => {
                    tracing::info!("shutting down between cycles: every decision is already written");
                    return Ok(());
                }
            }
        }
    }

    /// Policies that went away: a RolloutPolicy being deleted (our finalizer holds it) and a
    /// file removed since the last turn are retired ([`Driver::retire`]: an unfinished rollout
    /// back to stable, state removed); then the finalizer goes. New RolloutPolicies get the
    /// finalizer. Files removed while the daemon was not running are not known to it.
    async fn lifecycle(
        &self,
        gathered: &Gathered,
        parsed: &Parsed,
        known_files: &mut HashMap<String, PathBuf>,
        retiring: &mut HashMap<String, Policy>,
    ) {
        if self.elector.as_ref().is_some_and(|e| !e.may_write()) {
            return;
        }
        let current: HashSet<String> = gathered.policies.iter().map(Policy::key).collect();
        for (key, path) in known_files.drain() {
            if !gathered.files.contains_key(&key) && !current.contains(&key) && !path.exists() {
                // The policy as last parsed from that file.
                if let Some(policy) = parsed.latest(&path.display().to_string()) {
                    tracing::info!(policy = %key, file = %path.display(), "policy file removed; retiring its rollout");
                    retiring.insert(key, policy);
                }
            }
        }
        let mut done = Vec::new();
        for (key, policy) in retiring.iter() {
            if current.contains(key) {
                done.push(key.clone());
                continue;
            }
            match self.driver.retire(policy).await {
                Ok(_) => done.push(key.clone()),
                Err(e) => {
                    tracing::warn!(policy = %key, error = %e, "cannot retire a removed policy yet; retrying")
                }
            }
        }
        for key in done {
            retiring.remove(&key);
        }
        for (rp, policy) in &gathered.deleting {
            let retired = match policy {
                Some(p) => self.driver.retire(p).await.map(|_| ()),
                None => Ok(()),
            };
            let key = format!(
                "{}/{}",
                rp.metadata.namespace.as_deref().unwrap_or_default(),
                rp.metadata.name.as_deref().unwrap_or_default()
            );
            match retired {
                Ok(()) => match set_finalizer(&self.client, rp, false).await {
                    Ok(()) => {
                        tracing::info!(policy = %key, "RolloutPolicy deleted: rollout retired, finalizer removed")
                    }
                    Err(e) => {
                        tracing::warn!(policy = %key, error = %e, "cannot remove the finalizer yet; retrying")
                    }
                },
                Err(e) => {
                    tracing::warn!(policy = %key, error = %e, "cannot retire a deleted RolloutPolicy yet; retrying")
                }
            }
        }
        for rp in &gathered.unfinalized {
            if let Err(e) = set_finalizer(&self.client, rp, true).await {
                tracing::debug!(error = %e, "cannot add the finalizer yet; retrying");
            }
        }
    }

    async fn bounded(
        &self,
        cycle: impl Future<Output = Vec<Result<CycleReport, DaemonError>>>,
    ) -> Vec<Result<CycleReport, DaemonError>> {
        bounded(&self.elector, &self.metrics, cycle).await
    }

    /// Metrics, logs, statuses and the next visit of each reconciled policy.
    async fn record(
        &self,
        policies: &[Policy],
        results: Vec<Result<CycleReport, DaemonError>>,
        from_crs: &HashSet<String>,
        next_due: &mut HashMap<String, i64>,
        statuses: &mut HashMap<String, RolloutPolicyStatus>,
        fast: bool,
    ) {
        let at = jiff::Timestamp::now();
        let now = at.as_second();
        for (policy, result) in policies.iter().zip(results) {
            let key = policy.key();
            let next = match &result {
                Ok(r) => {
                    self.metrics.observe(&key, r);
                    self.dashboard.update(policy, &r.state, at);
                    // A look whose evidence could not be read leaves the window open (the next
                    // look covers it), so the engine's wake-up is already past: the next try is
                    // one cadence later, so that `maxConsecutiveErrors` counts intervals.
                    let cadence = crate::engine::cadence_secs(policy, &r.state);
                    match r.wake_at {
                        // The fast path gathers no evidence: a wake-up already past is the
                        // look schedule's business, not a reason to look now.
                        Some(at) if fast && at <= now => next_due.get(&key).copied().unwrap_or(now),
                        Some(at) if fast => at.min(now + MAX_REVISIT),
                        Some(at) => at.max(now + cadence).min(now + MAX_REVISIT),
                        None => now + IDLE_RESYNC,
                    }
                }
                Err(e) => {
                    self.metrics.error(error_kind(e));
                    self.dashboard.failed(policy, &e.to_string(), at);
                    tracing::warn!(policy = %key, error = %e, "reconcile failed; state unchanged, retrying");
                    now + 2
                }
            };
            // A fast-path visit brings a visit forward (a rollout that just started), never
            // pushes one back.
            let entry = next_due.entry(key.clone()).or_insert(next);
            *entry = if fast { (*entry).min(next) } else { next };
            if from_crs.contains(&key) && self.elector.as_ref().is_none_or(|e| e.may_write()) {
                write_status(&self.client, policy, &result, statuses).await;
            }
        }
    }
}

/// A leader must not write after its lease could have passed to another replica: a cycle ends
/// at the renew deadline (counted from when the renewal was sent), and every write checks it
/// too; whatever is unfinished waits for the next cycle (each write is atomic, so a cut cycle
/// leaves nothing half done).
async fn bounded(
    elector: &Option<Arc<LeaderElector>>,
    metrics: &DaemonMetrics,
    cycle: impl Future<Output = Vec<Result<CycleReport, DaemonError>>>,
) -> Vec<Result<CycleReport, DaemonError>> {
    let Some(budget) = elector.as_ref().map(|e| e.write_budget()) else { return cycle.await };
    match tokio::time::timeout(budget, cycle).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(seconds = budget.as_secs(), "cycle cut short to stay within the leader lease");
            metrics.error("lease");
            Vec::new()
        }
    }
}

fn error_kind(e: &DaemonError) -> &'static str {
    match e {
        DaemonError::Conflict => "conflict",
        DaemonError::Rejected { .. } => "rejected",
        DaemonError::NotLeader => "lease",
        DaemonError::Kube(_) => "kubernetes",
        _ => "policy",
    }
}

/// Valid policies from the directory and the custom resources; invalid ones are logged (and,
/// for resources, reported in their status) and never acted on.
async fn gather(
    source: &PolicySource,
    scope: &NamespaceScope,
    client: &kube::Client,
    cache: Option<&Caches>,
    statuses: &mut HashMap<String, RolloutPolicyStatus>,
    memo: &mut Parsed,
) -> Gathered {
    let mut out = Vec::new();
    let mut file_policies = HashMap::new();
    let mut deleting = Vec::new();
    let mut unfinalized = Vec::new();
    if let Some(dir) = &source.dir {
        let files = crate::cli::validate::collect(std::slice::from_ref(dir)).unwrap_or_default();
        for f in files {
            let name = f.display().to_string();
            let stamp = std::fs::metadata(&f)
                .map(|m| format!("{:?}/{}", m.modified().ok(), m.len()))
                .unwrap_or_default();
            let read = match memo.get(&name, &stamp) {
                Some(p) => Ok(Ok(p)),
                None => {
                    let read = std::fs::read_to_string(&f)
                        .map_err(|e| e.to_string())
                        .map(|t| parse_policy(&name, &t));
                    if let Ok(Ok(p)) = &read {
                        memo.put(&name, &stamp, p);
                    }
                    read
                }
            };
            match read {
                Ok(Ok(p)) if !scope.contains(p.namespace()) => tracing::error!(
                    file = %name,
                    namespace = p.namespace(),
                    "policy for a namespace this daemon does not manage (--namespace {scope}); not acted on"
                ),
                Ok(Ok(p)) => {
                    file_policies.insert(p.key(), f.clone());
                    out.push(p);
                }
                Ok(Err(d)) => tracing::error!(file = %name, "invalid policy, not acted on:\n{d}"),
                Err(e) => tracing::error!(file = %name, error = %e, "cannot read policy"),
            }
        }
    }
    let mut from_crs = HashSet::new();
    if source.crds {
        // One list per managed namespace: a namespaced install has no cluster-wide list right.
        let apis: Vec<(String, Api<RolloutPolicy>)> = match scope.namespaces() {
            Some(names) => names.iter().map(|ns| (ns.clone(), Api::namespaced(client.clone(), ns))).collect(),
            None => vec![("all namespaces".to_string(), Api::all(client.clone()))],
        };
        // The cache's objects are shared, not copied: only those that need a write are kept.
        let cached = cache.and_then(Caches::rollout_policies);
        let lists = match cached {
            Some(items) => vec![("the watch cache".to_string(), Ok(items))],
            None => {
                let mut lists = Vec::new();
                for (where_, api) in apis {
                    let listed = api.list(&Default::default()).await;
                    lists.push((where_, listed.map(|l| l.items.into_iter().map(Arc::new).collect())));
                }
                lists
            }
        };
        for (where_, list) in lists {
            match list {
                Ok(items) => {
                    for rp in items {
                        let ours = rp.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER);
                        if rp.metadata.deletion_timestamp.is_some() {
                            if ours {
                                let policy = from_resource(&rp).ok();
                                deleting.push((rp, policy));
                            }
                            continue;
                        }
                        let id = format!(
                            "resource:{}/{}",
                            rp.metadata.namespace.as_deref().unwrap_or_default(),
                            rp.metadata.name.as_deref().unwrap_or_default()
                        );
                        let stamp = format!(
                            "{}/{}",
                            rp.metadata.uid.as_deref().unwrap_or_default(),
                            rp.metadata.generation.unwrap_or_default()
                        );
                        let parsed = match memo.get(&id, &stamp) {
                            Some(p) => Ok(p),
                            None => {
                                let parsed = from_resource(&rp);
                                if let Ok(p) = &parsed {
                                    memo.put(&id, &stamp, p);
                                }
                                parsed
                            }
                        };
                        match parsed {
                            Ok(p) => {
                                if !ours {
                                    unfinalized.push(rp.clone());
                                }
                                from_crs.insert(p.key());
                                out.push(p);
                            }
                            Err(d) => {
                                tracing::error!("invalid RolloutPolicy, not acted on:\n{d}");
                                let ns = rp.metadata.namespace.clone().unwrap_or_default();
                                let name = rp.metadata.name.clone().unwrap_or_default();
                                let status = RolloutPolicyStatus {
                                    phase: Some("Invalid".into()),
                                    conditions: vec![condition(
                                        "Valid",
                                        "False",
                                        "InvalidPolicy",
                                        &d.to_string(),
                                    )],
                                    observed_generation: rp.metadata.generation,
                                    ..Default::default()
                                };
                                patch_status(client, &ns, &name, status, statuses).await;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, namespace = %where_, "cannot list RolloutPolicy resources")
                }
            }
        }
    }
    // Two definitions of one rollout (two files, or a file and a resource) would fight over
    // its VirtualService: neither is acted on until one goes.
    let duplicated: Vec<String> = crate::policy::duplicates(&out)
        .into_iter()
        .map(|(key, d)| {
            tracing::error!("{d}");
            key
        })
        .collect();
    if !duplicated.is_empty() {
        out.retain(|p| !duplicated.contains(&p.key()));
    }
    Gathered { policies: out, from_crs, files: file_policies, deleting, unfinalized }
}

/// Valid policies parsed at earlier turns, by source (`path` or `resource:ns/name`) and stamp
/// (a file's modification time and size; a resource's uid and generation): with thousands of
/// policies, parsing and validating every one at every turn would dominate the loop's CPU.
#[derive(Default)]
pub struct Parsed(HashMap<String, (String, Policy)>);

impl Parsed {
    fn get(&self, id: &str, stamp: &str) -> Option<Policy> {
        self.0.get(id).filter(|(s, _)| !stamp.is_empty() && s == stamp).map(|(_, p)| p.clone())
    }

    /// The last valid parse from `id`, whatever its stamp.
    fn latest(&self, id: &str) -> Option<Policy> {
        self.0.get(id).map(|(_, p)| p.clone())
    }

    fn put(&mut self, id: &str, stamp: &str, policy: &Policy) {
        self.0.insert(id.to_string(), (stamp.to_string(), policy.clone()));
    }
}

/// The gathered policies, indexed for a turn of the loop: by key, and by the watch keys of
/// their objects (see [`object_keys`]).
#[derive(Default)]
struct Catalog {
    policies: Vec<Policy>,
    /// `Policy::key` of each of `policies`, in order.
    keys: Vec<String>,
    /// Indexes into `policies` by policy key and by object key.
    by_key: HashMap<String, usize>,
    by_object: HashMap<String, Vec<usize>>,
    /// Keys of the policies that are RolloutPolicy resources (they get a status).
    from_crs: HashSet<String>,
}

impl Catalog {
    /// Whether `policies` are exactly the ones held (the same compiled policies, in order).
    fn holds(&self, policies: &[Policy]) -> bool {
        self.policies.len() == policies.len() && self.policies.iter().zip(policies).all(|(a, b)| a.same(b))
    }

    /// Takes a new gathering (re-indexing only when its policies changed); returns its files.
    fn update(&mut self, gathered: Gathered) -> HashMap<String, PathBuf> {
        let Gathered { policies, from_crs, files, .. } = gathered;
        self.from_crs = from_crs;
        if !self.holds(&policies) {
            self.keys = policies.iter().map(Policy::key).collect();
            self.by_key = self.keys.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect();
            self.by_object.clear();
            for (i, p) in policies.iter().enumerate() {
                for k in object_keys(p) {
                    self.by_object.entry(k).or_default().push(i);
                }
            }
            self.policies = policies;
        }
        files
    }

    /// The policies one of whose objects is in `changed`, or that feedback is `waiting` for,
    /// in gathering order.
    fn woken(&self, changed: &HashSet<String>, waiting: &[String]) -> Vec<Policy> {
        let mut hit: std::collections::BTreeSet<usize> =
            changed.iter().filter_map(|k| self.by_object.get(k)).flatten().copied().collect();
        hit.extend(waiting.iter().filter_map(|k| self.by_key.get(k)));
        hit.into_iter().map(|i| self.policies[i].clone()).collect()
    }

    /// The policies whose next visit has come (or that were never visited), at most `limit`
    /// of them, the longest due first; in gathering order.
    fn due(&self, next_due: &HashMap<String, i64>, now: i64, limit: usize) -> Vec<Policy> {
        let mut due: Vec<(i64, usize)> = self
            .keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let at = next_due.get(k).copied().unwrap_or(i64::MIN);
                (at <= now).then_some((at, i))
            })
            .collect();
        if due.len() > limit {
            due.sort_unstable();
            due.truncate(limit);
            due.sort_unstable_by_key(|(_, i)| *i);
        }
        due.into_iter().map(|(_, i)| self.policies[i].clone()).collect()
    }
}

/// The finalizer that lets the daemon route an unfinished rollout back to stable and remove its
/// state before a RolloutPolicy goes.
pub const FINALIZER: &str = "canaryd.io/route-back";

/// What one turn of the loop found.
struct Gathered {
    /// Valid, unique policies to reconcile.
    policies: Vec<Policy>,
    /// Keys of those that are RolloutPolicy resources (they get a status).
    from_crs: HashSet<String>,
    /// Valid policy files by key.
    files: HashMap<String, PathBuf>,
    /// RolloutPolicies being deleted that still carry [`FINALIZER`] (and their policy if valid).
    deleting: Vec<(Arc<RolloutPolicy>, Option<Policy>)>,
    /// Valid RolloutPolicies without [`FINALIZER`] yet.
    unfinalized: Vec<Arc<RolloutPolicy>>,
}

/// Adds or removes [`FINALIZER`], guarded by the resourceVersion it was decided on.
async fn set_finalizer(client: &kube::Client, rp: &RolloutPolicy, present: bool) -> Result<(), kube::Error> {
    let ns = rp.metadata.namespace.as_deref().unwrap_or_default();
    let name = rp.metadata.name.as_deref().unwrap_or_default();
    let rv = rp.metadata.resource_version.clone().unwrap_or_default();
    let current = rp.metadata.finalizers.clone();
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    match (present, current) {
        (true, None) => {
            ops.push(serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}))
        }
        (true, Some(_)) => {
            ops.push(serde_json::json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}))
        }
        (false, list) => {
            let rest: Vec<String> = list.into_iter().flatten().filter(|f| f != FINALIZER).collect();
            ops.push(serde_json::json!({"op": "replace", "path": "/metadata/finalizers", "value": rest}));
        }
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    let api: Api<RolloutPolicy> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map(|_| ())
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.chars().take(1000).collect(),
        last_transition_time: jiff::Timestamp::now().to_string(),
    }
}

async fn write_status(
    client: &kube::Client,
    policy: &Policy,
    result: &Result<CycleReport, DaemonError>,
    statuses: &mut HashMap<String, RolloutPolicyStatus>,
) {
    let status = match result {
        Ok(r) => {
            let s = &r.state;
            let verdict = s.last_verdict.as_ref().map(|v| {
                let why = v.decisive_check().map(|c| format!(": {}", c.check)).unwrap_or_default();
                format!("{}{why}", v.verdict)
            });
            RolloutPolicyStatus {
                phase: Some(s.phase.as_str().into()),
                step: Some(format!("{}/{}", s.step + 1, policy.spec().steps.len())),
                canary_weight: Some(s.traffic.canary_weight),
                last_verdict: verdict,
                revision: s.revision.clone(),
                conditions: vec![condition("Valid", "True", "Valid", "policy is valid")],
                observed_generation: None,
            }
        }
        Err(e) => RolloutPolicyStatus {
            conditions: vec![condition("Reconciled", "False", "Error", &e.to_string())],
            ..statuses.get(&policy.key()).cloned().unwrap_or_default()
        },
    };
    patch_status(client, policy.namespace(), policy.name(), status, statuses).await;
}

/// Writes a status only when it changed (conditions' times aside), to keep API traffic flat.
async fn patch_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: RolloutPolicyStatus,
    cache: &mut HashMap<String, RolloutPolicyStatus>,
) {
    let key = format!("{namespace}/{name}");
    let strip = |s: &RolloutPolicyStatus| {
        let mut s = s.clone();
        s.conditions.iter_mut().for_each(|c| c.last_transition_time.clear());
        s
    };
    if cache.get(&key).map(strip) == Some(strip(&status)) {
        return;
    }
    let api: Api<RolloutPolicy> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"status": status});
    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            cache.insert(key, status);
        }
        Err(e) => tracing::warn!(policy = %key, error = %e, "cannot write RolloutPolicy status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(namespace: &str) -> Policy {
        let doc = format!("apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: {namespace}}}\nspec:\n  target: {{virtualService: reviews, stable: {{subset: v1}}, canary: {{subset: v2}}}}\n  steps: [{{weight: 10}}]\n  analysis: {{interval: 30s}}\n");
        parse_policy("test.yaml", &doc).unwrap_or_else(|e| panic!("{e}"))
    }

    fn catalog(policies: Vec<Policy>) -> Catalog {
        let mut catalog = Catalog::default();
        let gathered = Gathered {
            policies,
            from_crs: HashSet::new(),
            files: HashMap::new(),
            deleting: Vec::new(),
            unfinalized: Vec::new(),
        };
        catalog.update(gathered);
        catalog
    }

    fn namespaces(policies: &[Policy]) -> Vec<&str> {
        policies.iter().map(Policy::namespace).collect()
    }

    #[test]
    fn a_turn_wakes_the_policies_whose_objects_changed_or_whose_feedback_waits() {
        let c = catalog(vec![policy("a"), policy("b"), policy("c")]);
        let changed: HashSet<String> =
            ["deploy:c/reviews-v2", "vs:a/reviews", "vs:elsewhere/x"].iter().map(|k| k.to_string()).collect();
        assert_eq!(namespaces(&c.woken(&changed, &[])), ["a", "c"]);
        assert_eq!(namespaces(&c.woken(&HashSet::new(), &["b/reviews".to_string()])), ["b"]);
        assert!(c.woken(&HashSet::new(), &[]).is_empty());
    }

    #[test]
    fn a_cycle_takes_the_longest_due_first_up_to_its_limit_in_gathering_order() {
        let c = catalog(vec![policy("a"), policy("b"), policy("c"), policy("d")]);
        let next_due: HashMap<String, i64> = [("a/reviews", 50), ("b/reviews", 10), ("c/reviews", 200)]
            .iter()
            .map(|(k, t)| (k.to_string(), *t))
            .collect();
        // d was never visited: first of all.
        assert_eq!(namespaces(&c.due(&next_due, 100, usize::MAX)), ["a", "b", "d"]);
        assert_eq!(namespaces(&c.due(&next_due, 100, 2)), ["b", "d"]);
    }

    #[test]
    fn the_index_is_kept_while_the_same_policies_are_gathered() {
        let (a, b) = (policy("a"), policy("b"));
        let mut c = catalog(vec![a.clone(), b.clone()]);
        assert!(c.holds(&[a.clone(), b.clone()]));
        // The same text compiled again is a new policy: re-indexed.
        assert!(!c.holds(&[a.clone(), policy("b")]));
        let gathered = Gathered {
            policies: vec![b.clone()],
            from_crs: HashSet::new(),
            files: HashMap::new(),
            deleting: Vec::new(),
            unfinalized: Vec::new(),
        };
        c.update(gathered);
        let changed: HashSet<String> = ["vs:a/reviews".to_string()].into();
        assert!(c.woken(&changed, &[]).is_empty(), "a removed policy is not woken");
        assert_eq!(namespaces(&c.due(&HashMap::new(), 0, usize::MAX)), ["b"]);
    }
}
