//! Shared pieces of the fault matrix: cluster fixtures per namespace, the invariant checks, and
//! each suite's tally of runs, faults and violations.

use canaryd::engine::{Phase, RolloutState};
use kube_emulator::EmulatorHandle;
use serde_json::Value;
use std::time::{Duration, Instant};

// ---- per-suite tally ----------------------------------------------------------------------

/// One suite's runs, injected faults and invariant violations. Each test owns its tally, so a
/// filtered run (any subset of suites, in parallel) still gets the summary of every suite it
/// ran. The summary prints when the tally is dropped: at the end of the test, and also when a
/// failed assertion ends it early, where the counts matter most.
pub struct SuiteTally {
    suite: &'static str,
    started: Instant,
    runs: usize,
    faults: usize,
    violations: usize,
    lines: Vec<String>,
}

impl SuiteTally {
    /// Starts the suite's clock; `suite` names it in the summary and the summary file.
    pub fn start(suite: &'static str) -> SuiteTally {
        SuiteTally { suite, started: Instant::now(), runs: 0, faults: 0, violations: 0, lines: Vec::new() }
    }

    /// Records one finished scenario run: its faults, violations and a summary line.
    pub fn record(&mut self, line: String, faults: usize, violations: &[String]) {
        self.runs += 1;
        self.faults += faults;
        self.violations += violations.len();
        let line = format!("{line} faults={faults} violations={}", violations.len());
        println!("{line}");
        for v in violations {
            println!("  VIOLATION: {v}");
        }
        self.lines.push(line);
    }

    /// Time since `start`: the runtime in the summary and in the real-daemon suites' run lines.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for SuiteTally {
    /// Prints the suite's summary, and writes it after the run lines to
    /// `target/fault_matrix_summary_<suite>.txt` so CI can quote it without --nocapture.
    fn drop(&mut self) {
        let summary = format!(
            "fault matrix/{}: runs={} faults_injected={} invariant_violations={} runtime={:.1}s",
            self.suite,
            self.runs,
            self.faults,
            self.violations,
            self.elapsed().as_secs_f64()
        );
        let mut lines = std::mem::take(&mut self.lines);
        lines.push(summary.clone());
        let _ = std::fs::write(
            format!("{}/target/fault_matrix_summary_{}.txt", env!("CARGO_MANIFEST_DIR"), self.suite),
            lines.join("\n") + "\n",
        );
        println!("{summary}");
    }
}

// ---- fixtures ---------------------------------------------------------------------------

/// A VirtualService with fields that belong to other writers: a debug route, gateways,
/// retries, labels and an owner annotation. canaryd may only touch route `main`'s weights and
/// its own annotations.
pub fn virtual_service(ns: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: {ns}
  annotations: {{owner: books-team}}
  labels: {{app: reviews}}
spec:
  hosts: [reviews, reviews.{ns}.svc.cluster.local]
  gateways: [mesh, bookinfo-gateway]
  http:
    - name: debug
      match: [{{headers: {{x-debug: {{exact: "1"}}}}}}]
      route: [{{destination: {{host: reviews, subset: v1}}}}]
      timeout: 3s
    - name: main
      retries: {{attempts: 3, perTryTimeout: 2s}}
      route:
        - destination: {{host: reviews, subset: v1, port: {{number: 9080}}}}
          weight: 100
        - destination: {{host: reviews, subset: v2, port: {{number: 9080}}}}
          weight: 0
"#
    )
}

/// Loads bookinfo's fixtures into namespace `ns`, with the VirtualService above.
pub fn load_namespace(emu: &EmulatorHandle, ns: &str) {
    emu.apply_yaml(&canaryd::demo::FIXTURES.replace("bookinfo", ns)).unwrap();
    emu.apply_yaml(&virtual_service(ns)).unwrap();
}

pub fn vs(emu: &EmulatorHandle, ns: &str) -> Value {
    emu.get("networking.istio.io", "v1", "virtualservices", ns, "reviews").unwrap()
}

/// The recorded state of policy `reviews` on the VirtualService.
pub fn state_of(vs: &Value) -> RolloutState {
    vs["metadata"]["annotations"]["canaryd.io/state-reviews"]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or_default()
}

/// The canary weight of route `main` as written on the cluster.
pub fn canary_weight(vs: &Value) -> u32 {
    vs["spec"]["http"][1]["route"][1]["weight"].as_u64().unwrap_or(0) as u32
}

/// One observation of a rollout on the cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snap {
    pub phase: Phase,
    pub step: usize,
    pub weight: u32,
    pub state_weight: u32,
    pub errors: u32,
}

pub fn snap(emu: &EmulatorHandle, ns: &str) -> Snap {
    let v = vs(emu, ns);
    let s = state_of(&v);
    Snap {
        phase: s.phase,
        step: s.step,
        weight: canary_weight(&v),
        state_weight: s.traffic.canary_weight,
        errors: s.consecutive_errors,
    }
}

/// The other writers' fields of a VirtualService, to compare before and after.
pub fn foreign_fields(vs: &Value) -> Value {
    let mut annotations = vs["metadata"]["annotations"].clone();
    if let Some(a) = annotations.as_object_mut() {
        a.retain(|k, _| !k.starts_with("canaryd.io/"));
    }
    serde_json::json!({
        "hosts": vs["spec"]["hosts"],
        "gateways": vs["spec"]["gateways"],
        "debug": vs["spec"]["http"][0],
        "retries": vs["spec"]["http"][1]["retries"],
        "destinations": [vs["spec"]["http"][1]["route"][0]["destination"], vs["spec"]["http"][1]["route"][1]["destination"]],
        "labels": vs["metadata"]["labels"],
        "annotations": annotations,
    })
}

// ---- invariants ---------------------------------------------------------------------------

/// Checks a trajectory of snapshots; `missing[i]` says the evidence of the cycle that produced
/// `snaps[i]` was unreadable (or empty). Returns the violations.
pub fn check_trajectory(name: &str, snaps: &[Snap], missing: &[bool]) -> Vec<String> {
    let mut out = Vec::new();
    // Never promoted on missing evidence.
    for i in 1..snaps.len() {
        let (prev, cur) = (snaps[i - 1], snaps[i]);
        if !missing.get(i).copied().unwrap_or(false) {
            continue;
        }
        let advanced = (prev.phase == Phase::Progressing
            && cur.phase == Phase::Progressing
            && cur.step > prev.step)
            || (prev.phase == Phase::Progressing && matches!(cur.phase, Phase::Promoting | Phase::Promoted))
            || cur.weight > prev.weight;
        if advanced {
            out.push(format!("{name}: advanced on missing evidence: {prev:?} -> {cur:?}"));
        }
    }
    out.extend(check_steps(name, snaps));
    out
}

/// No double advance (steps entered in order, once each, weights never back mid-rollout),
/// aborts carry weight 0 on the VirtualService, an abort is never lost.
pub fn check_steps(name: &str, snaps: &[Snap]) -> Vec<String> {
    let mut out = Vec::new();
    let mut entered: Vec<usize> = Vec::new();
    let mut last_weight = 0;
    for s in snaps.iter().filter(|s| s.phase == Phase::Progressing) {
        if entered.last() != Some(&s.step) {
            if entered.contains(&s.step) {
                out.push(format!("{name}: step {} entered twice: {entered:?}", s.step));
            } else if s.step != entered.last().map_or(0, |l| l + 1) {
                out.push(format!("{name}: step {} entered out of order after {entered:?}", s.step));
            }
            entered.push(s.step);
        }
        if s.weight < last_weight {
            out.push(format!("{name}: weight went back mid-rollout {last_weight} -> {}", s.weight));
        }
        last_weight = s.weight;
    }
    let mut aborted = false;
    for s in snaps {
        if s.phase == Phase::Aborted {
            aborted = true;
            if s.weight != 0 || s.state_weight != 0 {
                out.push(format!(
                    "{name}: aborted but canary weight {} / state {}",
                    s.weight, s.state_weight
                ));
            }
        } else if aborted && s.phase != Phase::Idle {
            out.push(format!("{name}: abort lost: {s:?} after Aborted"));
        }
    }
    out
}
