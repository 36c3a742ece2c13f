//! Which policies a turn of the loop visits: the policies as last gathered, indexed by the
//! watch keys of their objects (a change wakes only the policies it concerns), and which are
//! due for a background cycle.

use super::sources::Gathered;
use crate::policy::Policy;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

/// The watch keys of a policy's objects (see [`super::cache::Touched`]).
pub(super) fn object_keys(policy: &Policy) -> [String; 4] {
    let ns = policy.namespace();
    [
        format!("vs:{ns}/{}", policy.spec().target.virtual_service),
        format!("deploy:{ns}/{}", policy.workloads().canary),
        format!("deploy:{ns}/{}", policy.workloads().stable),
        format!("policy:{ns}/{}", policy.name()),
    ]
}

/// The gathered policies, indexed for a turn of the loop: by key, and by the watch keys of
/// their objects (see [`object_keys`]).
#[derive(Default)]
pub(super) struct Catalog {
    policies: Vec<Policy>,
    /// `Policy::key` of each of `policies`, in order.
    keys: Vec<String>,
    /// Indexes into `policies` by policy key and by object key.
    by_key: HashMap<String, usize>,
    by_object: HashMap<String, Vec<usize>>,
    /// Keys of the policies that are RolloutPolicy resources (they get a status).
    pub from_crs: HashSet<String>,
}

impl Catalog {
    /// Whether `policies` are exactly the ones held (the same compiled policies, in order).
    pub(super) fn holds(&self, policies: &[Policy]) -> bool {
        self.policies.len() == policies.len() && self.policies.iter().zip(policies).all(|(a, b)| a.same(b))
    }

    /// Takes a new gathering (re-indexing only when its policies changed); returns its files.
    pub(super) fn update(&mut self, gathered: Gathered) -> HashMap<String, PathBuf> {
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
    pub(super) fn woken(&self, changed: &HashSet<String>, waiting: &[String]) -> Vec<Policy> {
        let mut hit: BTreeSet<usize> =
            changed.iter().filter_map(|k| self.by_object.get(k)).flatten().copied().collect();
        hit.extend(waiting.iter().filter_map(|k| self.by_key.get(k)));
        hit.into_iter().map(|i| self.policies[i].clone()).collect()
    }

    /// The policies whose next visit has come (or that were never visited) and that no
    /// background cycle is visiting: at most `limit` of them, of which at most `looks` are
    /// rollouts being judged, the longest due first; in gathering order. Also whether more
    /// were due than taken. The caller starts them ([`Schedule::started`]).
    ///
    /// Costs what is due, not a walk over every policy: the loop turns every cycle spacing.
    pub(super) fn due(
        &self,
        schedule: &Schedule,
        now: i64,
        limit: usize,
        looks: usize,
    ) -> (Vec<Policy>, bool) {
        let (mut picked, mut judged, mut more) = (Vec::new(), 0, false);
        for (at, key) in &schedule.queue {
            if *at > now {
                break;
            }
            if schedule.in_flight.contains(key) {
                continue;
            }
            let Some(&i) = self.by_key.get(key) else { continue };
            if picked.len() >= limit {
                more = true;
                break;
            }
            if schedule.judging.contains_key(key) {
                if judged >= looks {
                    more = true;
                    continue;
                }
                judged += 1;
            }
            picked.push(i);
        }
        picked.sort_unstable();
        (picked.into_iter().map(|i| self.policies[i].clone()).collect(), more)
    }

    /// The keys of the gathered policies, in gathering order.
    pub(super) fn keys(&self) -> &[String] {
        &self.keys
    }
}

/// When each policy is next visited, and what the background cycles are doing.
#[derive(Default)]
pub(super) struct Schedule {
    /// When each policy is next due (Unix seconds; `i64::MIN`: never visited, due at once).
    next_due: HashMap<String, i64>,
    /// The same, ordered by time: a turn reads only its front.
    queue: BTreeSet<(i64, String)>,
    /// Looks per second of each rollout being judged (1 / its cadence).
    judging: HashMap<String, f64>,
    /// Policies a background cycle is visiting now.
    in_flight: HashSet<String>,
}

/// The fewest looks a background cycle may take, however few rollouts are judged.
const MIN_LOOKS: usize = 4;

impl Schedule {
    pub(super) fn next_due(&self, key: &str) -> Option<i64> {
        self.next_due.get(key).copied()
    }

    /// Whether the policy was visited (its next visit is known).
    pub(super) fn visited_before(&self, key: &str) -> bool {
        self.next_due.get(key).is_some_and(|at| *at != i64::MIN)
    }

    fn set(&mut self, key: &str, at: i64) {
        if let Some(old) = self.next_due.insert(key.to_string(), at) {
            self.queue.remove(&(old, key.to_string()));
        }
        self.queue.insert((at, key.to_string()));
    }

    /// Follows the gathered policies: new ones are due at once, gone ones forgotten.
    pub(super) fn track(&mut self, keys: &[String]) {
        let current: HashSet<&String> = keys.iter().collect();
        self.next_due.retain(|k, _| current.contains(k));
        self.queue.retain(|(_, k)| current.contains(k));
        self.judging.retain(|k, _| current.contains(k));
        for k in keys {
            if !self.next_due.contains_key(k) {
                self.set(k, i64::MIN);
            }
        }
    }

    /// Records a visit's outcome: the policy is next due at `next`. A fast-path visit brings a
    /// visit forward (a rollout that just started), never pushes one back.
    pub(super) fn visited(&mut self, key: &str, next: i64, fast: bool) {
        let at = match self.next_due.get(key) {
            Some(&at) if fast => at.min(next),
            _ => next,
        };
        self.set(key, at);
    }

    /// Whether the policy's rollout is being judged, and at which cadence (seconds).
    pub(super) fn judging_at(&mut self, key: &str, cadence: Option<i64>) {
        match cadence {
            Some(c) => {
                self.judging.insert(key.to_string(), 1.0 / c.max(1) as f64);
            }
            None => {
                self.judging.remove(key);
            }
        }
    }

    /// Whether any rollout is being judged (the loop then turns every cycle spacing).
    pub(super) fn judging(&self) -> bool {
        !self.judging.is_empty()
    }

    /// A background cycle started visiting these policies.
    pub(super) fn started(&mut self, keys: &[String]) {
        self.in_flight.extend(keys.iter().cloned());
    }

    /// Whether a background cycle is visiting the policy now.
    pub(super) fn is_in_flight(&self, key: &str) -> bool {
        self.in_flight.contains(key)
    }

    /// How many policies background cycles are visiting now.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A background cycle ended (recorded or not).
    pub(super) fn landed(&mut self, keys: &[String]) {
        for k in keys {
            self.in_flight.remove(k);
        }
    }

    /// The looks one background cycle may take: twice the judged rollouts' combined rate of
    /// looks over one `spacing` (at least [`MIN_LOOKS`]). Looks that fall due together — a
    /// schedule window opening for many rollouts, every rollout after a restart — are spread
    /// over the following cycles instead of being decided in one burst whose writes queue
    /// behind each other; twice the average rate leaves room for the spread ones to catch up.
    pub(super) fn look_budget(&self, spacing: std::time::Duration) -> usize {
        let per_second: f64 = self.judging.values().sum();
        ((2.0 * per_second * spacing.as_secs_f64()).ceil() as usize).max(MIN_LOOKS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

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

    /// The schedule of `c`'s policies, some visited and next due as given.
    fn tracked(c: &Catalog, next: &[(&str, i64)]) -> Schedule {
        let mut schedule = Schedule::default();
        schedule.track(c.keys());
        for (k, t) in next {
            schedule.visited(k, *t, false);
        }
        schedule
    }

    #[test]
    fn a_cycle_takes_the_longest_due_first_up_to_its_limit_in_gathering_order() {
        let c = catalog(vec![policy("a"), policy("b"), policy("c"), policy("d")]);
        let schedule = tracked(&c, &[("a/reviews", 50), ("b/reviews", 10), ("c/reviews", 200)]);
        // d was never visited: first of all.
        assert_eq!(namespaces(&c.due(&schedule, 100, usize::MAX, usize::MAX).0), ["a", "b", "d"]);
        let (due, more) = c.due(&schedule, 100, 2, usize::MAX);
        assert_eq!((namespaces(&due), more), (vec!["b", "d"], true));
    }

    #[test]
    fn looks_due_together_are_spread_over_cycles_and_in_flight_policies_are_skipped() {
        let names = ["a", "b", "c", "d", "e", "f"];
        let c = catalog(names.iter().map(|n| policy(n)).collect());
        let due_at: Vec<String> = names.iter().map(|n| format!("{n}/reviews")).collect();
        let mut schedule = tracked(&c, &due_at.iter().map(|k| (k.as_str(), 100)).collect::<Vec<_>>());
        // Five rollouts judged every 10 s (0.5 looks/s together); f is idle but due.
        for n in &names[..5] {
            schedule.judging_at(&format!("{n}/reviews"), Some(10));
        }
        assert_eq!(schedule.look_budget(std::time::Duration::from_secs(4)), 4, "at least MIN_LOOKS");
        assert_eq!(schedule.look_budget(std::time::Duration::from_secs(10)), 10);
        // Two looks per cycle: the idle one is not held back by the budget.
        let (due, more) = c.due(&schedule, 100, usize::MAX, 2);
        assert_eq!((namespaces(&due), more), (vec!["a", "b", "f"], true));
        schedule.started(&due.iter().map(Policy::key).collect::<Vec<_>>());
        let (due, more) = c.due(&schedule, 100, usize::MAX, 2);
        assert_eq!((namespaces(&due), more), (vec!["c", "d"], true));
        schedule.started(&due.iter().map(Policy::key).collect::<Vec<_>>());
        let (due, more) = c.due(&schedule, 100, usize::MAX, 2);
        assert_eq!((namespaces(&due), more), (vec!["e"], false));
        // A cycle that ended gives its policies back (still due until recorded).
        schedule.landed(&["a/reviews".to_string()]);
        assert_eq!(namespaces(&c.due(&schedule, 100, usize::MAX, 2).0), ["a", "e"]);
        // Recorded: next due later; a fast-path visit brings a visit forward, never back.
        schedule.visited("a/reviews", 130, false);
        schedule.visited("a/reviews", 200, true);
        assert_eq!(schedule.next_due("a/reviews"), Some(130));
        schedule.judging_at("a/reviews", None);
        assert!(schedule.judging());
    }

    #[test]
    fn when_every_judged_rollout_falls_due_at_once_each_look_is_at_most_half_a_cadence_late() {
        // 1,000 rollouts judged every 30 s, all due at t = 0 (a schedule window opened, or the
        // daemon restarted); cycles every 250 ms, each taking its look budget.
        let names: Vec<String> = (0..1000).map(|i| format!("ns{i:04}")).collect();
        let c = catalog(names.iter().map(|n| policy(n)).collect());
        let mut schedule = tracked(&c, &[]);
        for k in c.keys() {
            schedule.visited(k, 0, false);
            schedule.judging_at(k, Some(30));
        }
        let spacing = std::time::Duration::from_millis(250);
        let budget = schedule.look_budget(spacing);
        assert_eq!(budget, 17, "twice 1000/30 looks per second over 250 ms");
        let (mut taken, mut ms) = (0, 0i64);
        while taken < 1000 {
            let (due, _) = c.due(&schedule, ms / 1000, usize::MAX, budget);
            assert!(due.len() <= budget);
            taken += due.len();
            schedule.started(&due.iter().map(Policy::key).collect::<Vec<_>>());
            ms += 250;
        }
        assert!(ms - 250 <= 15_000, "the last look started {} ms late", ms - 250);
    }

    #[test]
    fn policies_are_due_in_time_order_new_ones_at_once_and_gone_ones_forgotten() {
        let c = catalog(vec![policy("a"), policy("b")]);
        let mut schedule = tracked(&c, &[("a/reviews", 130), ("b/reviews", 160)]);
        assert!(c.due(&schedule, 100, usize::MAX, usize::MAX).0.is_empty());
        assert_eq!(namespaces(&c.due(&schedule, 130, usize::MAX, usize::MAX).0), ["a"]);
        schedule.visited("a/reviews", 190, false);
        // A fast-path visit that brings b forward is seen at once.
        schedule.visited("b/reviews", 140, true);
        assert!(c.due(&schedule, 139, usize::MAX, usize::MAX).0.is_empty());
        assert_eq!(namespaces(&c.due(&schedule, 140, usize::MAX, usize::MAX).0), ["b"]);
        let c = catalog(vec![policy("b"), policy("c")]);
        schedule.track(c.keys());
        assert_eq!(namespaces(&c.due(&schedule, 141, usize::MAX, usize::MAX).0), ["b", "c"]);
        assert_eq!(schedule.next_due("a/reviews"), None, "a is gone");
        assert!(schedule.visited_before("b/reviews") && !schedule.visited_before("c/reviews"));
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
        assert_eq!(namespaces(&c.due(&tracked(&c, &[]), 0, usize::MAX, usize::MAX).0), ["b"]);
    }
}
