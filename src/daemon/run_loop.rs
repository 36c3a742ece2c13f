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
//!   evidence ([`Driver::cycle_without_evidence`]); looks that need Prometheus run in
//!   background cycles, each bounded by the evidence deadline, that start at most every
//!   `CYCLE_SPACING` and may overlap (one waiting on a hung tenant holds up no other);
//!   gates and alerts run in the background. A hung Prometheus, gate or webhook delays no
//!   other policy's commands, aborts, looks or drift handling. The paths may race on one
//!   VirtualService: every write is guarded by its resourceVersion, so the later one gets a
//!   conflict and re-reads.
//! - **Paced.** Looks that fall due together (rollouts started by one schedule window, or
//!   every rollout after a restart) are spread over the next cycles, a share of the looks in
//!   each (`Schedule::look_budget`); a look lands where it ran, so they stay spread and no
//!   burst of decisions queues its writes behind each other.

use super::cache::Caches;
use super::leader::LeaderElector;
use super::metrics::DaemonMetrics;
use super::policy_dir::PolicyDir;
use super::schedule::{Catalog, Schedule};
use super::sources::{gather, set_finalizer, Gathered, Parsed};
use super::status::write_status;
use super::{CycleReport, DaemonError, Driver, Effects, NamespaceScope};
use crate::engine::Phase;
use crate::policy::{Policy, RolloutPolicyStatus};
use crate::prometheus::MetricsSource;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::sources::{PolicySource, FINALIZER};

/// Longest time between two visits of a policy with a rollout in progress (or pending).
pub const MAX_REVISIT: i64 = 30;
/// Longest time between two visits of an idle policy: a safety net under the watches.
pub const IDLE_RESYNC: i64 = 300;
/// The most policies the background cycles visit at once (the longest due first; the others
/// stay due for later cycles). A cycle holds every visited policy's reads until it decides:
/// at startup, when every policy is due, thousands at once would set the process's memory
/// high-water mark.
const MAX_CYCLE: usize = 500;
/// How long the loop sleeps when nothing wakes it.
const TICK: Duration = Duration::from_secs(2);
/// Background cycles start at most this often, each with the policies due by then and at
/// most its share of looks (`Schedule::look_budget`); a cycle waiting on a hung tenant's
/// evidence does not hold up the next one.
const CYCLE_SPACING: Duration = Duration::from_millis(250);
/// Background cycles in flight at once (each ends within the evidence deadline).
const MAX_CYCLES_IN_FLIGHT: usize = 32;
/// Policies are gathered again at least this often even when no stamp or watch says they
/// changed: a safety net, and the retry of a failed status write.
const RESYNC_SOURCES: Duration = Duration::from_secs(30);

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
        let mut schedule = Schedule::default();
        let mut statuses: HashMap<String, RolloutPolicyStatus> = HashMap::new();
        // Background cycles in flight, with the keys of the policies each visits.
        let mut cycles: Vec<(Vec<String>, tokio::task::JoinHandle<Finished>)> = Vec::new();
        let mut cycle_started: Option<Instant> = None;
        let analysed = Arc::new(tokio::sync::Notify::new());
        // Policy files seen at the last turn, and removed ones not yet retired.
        let mut known_files: HashMap<String, PathBuf> = HashMap::new();
        let mut retiring: HashMap<String, Policy> = HashMap::new();
        let mut parsed = Parsed::default();
        // The policies as last gathered, indexed by the objects that wake them. Gathered again
        // when the policy directory's listing or stamps changed (looked at every TICK), when a
        // RolloutPolicy changed, while a removal or finalizer is pending, and every
        // RESYNC_SOURCES; so a turn costs what its changes concern, not a walk over every
        // policy.
        let mut catalog = Catalog::default();
        let mut policy_dir = self.source.dir.clone().map(PolicyDir::new);
        let mut gathered_at: Option<Instant> = None;
        let mut scanned_at: Option<Instant> = None;
        let mut lifecycle_pending = false;
        let mut last_renewal: Option<Instant> = None;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let now = jiff::Timestamp::now();
            let mut more_due = false;
            // Renew (or try to take) the lease every TICK, as client-go's retry period; between
            // renewals a turn woken by a watch relies on the renew deadline checked at writes.
            let leading = match &self.elector {
                Some(e) if last_renewal.is_none_or(|t| t.elapsed() >= TICK) => {
                    last_renewal = Some(Instant::now());
                    e.try_lead(now).await
                }
                Some(e) => e.may_write(),
                None => true,
            };
            if leading {
                // Objects that changed since the last turn.
                let changed = touched.take();
                let sources_changed = changed.iter().any(|k| k.starts_with("policy:"));
                let look = scanned_at.is_none_or(|t| t.elapsed() >= TICK);
                let dir_changed = look && policy_dir.as_mut().is_some_and(PolicyDir::rescan);
                if look {
                    scanned_at = Some(Instant::now());
                }
                let resync = gathered_at.is_none_or(|t| t.elapsed() >= RESYNC_SOURCES);
                if sources_changed || dir_changed || resync || (look && lifecycle_pending) {
                    gathered_at = Some(Instant::now());
                    let gathered = gather(
                        policy_dir.as_ref(),
                        self.source.crds,
                        &self.scope,
                        &self.client,
                        self.cache.as_deref(),
                        &mut statuses,
                        &mut parsed,
                    )
                    .await;
                    // A turn whose lifecycle did not run (not the leader at that moment) keeps
                    // the parses: a file removed meanwhile is retired as last parsed.
                    if self.lifecycle(&gathered, &parsed, &mut known_files, &mut retiring).await {
                        parsed.forget_unlisted();
                    }
                    lifecycle_pending = !retiring.is_empty()
                        || !gathered.deleting.is_empty()
                        || !gathered.unfinalized.is_empty();
                    if !catalog.holds(&gathered.policies) {
                        self.dashboard.retain(&gathered.policies.iter().map(Policy::key).collect());
                    }
                    // Added to, not replaced: after a turn whose lifecycle did not run, the files
                    // known before still count (one removed meanwhile is retired later).
                    known_files.extend(catalog.update(gathered));
                    schedule.track(catalog.keys());
                }
                let (finished, running): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut cycles).into_iter().partition(|(_, h)| h.is_finished());
                cycles = running;
                for (keys, handle) in finished {
                    schedule.landed(&keys);
                    if let Ok((due, results)) = handle.await {
                        self.record(&due, results, &catalog.from_crs, &mut schedule, &mut statuses, false)
                            .await;
                    }
                }
                // The fast path: objects that changed and feedback that wants a visit. A policy
                // never visited yet that a background cycle is visiting is left to it: at
                // startup the watches' first lists touch every object while the first cycles
                // visit every policy, and visiting them on both paths would only race writes.
                let mut fast = catalog.woken(&changed, &self.driver.feedback().waiting());
                fast.retain(|p| {
                    let key = p.key();
                    schedule.visited_before(&key) || !schedule.is_in_flight(&key)
                });
                if !fast.is_empty() && !self.once {
                    let results = self.bounded(self.driver.cycle_without_evidence(&fast, now)).await;
                    self.record(&fast, results, &catalog.from_crs, &mut schedule, &mut statuses, true).await;
                }
                // Looks (and everything else due), in background cycles that start at most
                // every CYCLE_SPACING, each with its share of the looks.
                if self.once {
                    let (due, _) = catalog.due(&schedule, now.as_second(), usize::MAX, usize::MAX);
                    let results = self.bounded(self.driver.cycle(&due, now)).await;
                    self.record(&due, results, &catalog.from_crs, &mut schedule, &mut statuses, false).await;
                } else if cycles.len() < MAX_CYCLES_IN_FLIGHT
                    && cycle_started.is_none_or(|t| t.elapsed() >= CYCLE_SPACING)
                {
                    let looks = schedule.look_budget(CYCLE_SPACING);
                    // All cycles together hold at most MAX_CYCLE policies' reads.
                    let room = MAX_CYCLE.saturating_sub(schedule.in_flight());
                    let (due, more) = catalog.due(&schedule, now.as_second(), room, looks);
                    more_due = more;
                    if !due.is_empty() {
                        cycle_started = Some(Instant::now());
                        let keys: Vec<String> = due.iter().map(Policy::key).collect();
                        schedule.started(&keys);
                        let (driver, elector, metrics, done) = (
                            self.driver.clone(),
                            self.elector.clone(),
                            self.metrics.clone(),
                            analysed.clone(),
                        );
                        let handle = tokio::spawn(async move {
                            let results = bounded(&elector, &metrics, driver.cycle(&due, now)).await;
                            done.notify_one();
                            (due, results)
                        });
                        cycles.push((keys, handle));
                    }
                } else {
                    more_due = true;
                }
            }
            self.metrics.cycle_done();
            if self.once {
                return Ok(());
            }
            // While rollouts are judged, turn often enough to start each look's cycle on time.
            let pause = if more_due || schedule.judging() { CYCLE_SPACING } else { TICK };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // A changed VirtualService or Deployment: an operator command, drift, a release.
                _ = touched.changed() => {}
                // An acknowledged delivery (not yet written, the window in which a crash sends
                // an alert twice) or an open gate.
                _ = self.driver.feedback().arrived() => {}
                // A background cycle finished: record it.
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
    /// finalizer. Files removed while the daemon was not running are not known to it. False when
    /// it did not run (not the leader at that moment).
    async fn lifecycle(
        &self,
        gathered: &Gathered,
        parsed: &Parsed,
        known_files: &mut HashMap<String, PathBuf>,
        retiring: &mut HashMap<String, Policy>,
    ) -> bool {
        if self.elector.as_ref().is_some_and(|e| !e.may_write()) {
            return false;
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
        true
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
        schedule: &mut Schedule,
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
                    let judged = matches!(r.state.phase, Phase::Progressing | Phase::Paused);
                    schedule.judging_at(&key, judged.then_some(cadence));
                    match r.wake_at {
                        // The fast path gathers no evidence: a wake-up already past is the
                        // look schedule's business, not a reason to look now.
                        Some(at) if fast && at <= now => schedule.next_due(&key).unwrap_or(now),
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
            schedule.visited(&key, next, fast);
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
