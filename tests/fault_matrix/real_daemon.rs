//! The harness of the SIGKILL and leader-election suites: the real `canaryd run --crds`
//! binary as a child process, in real time, against the API emulator (with the CRD installed)
//! and the fake Prometheus, and a monitor recording every change of the rollouts.

use crate::fake_prometheus::FakeProm;
use crate::support::{load_namespace, snap, Snap};
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CRD_POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: NS}\nspec:\n  target: {virtualService: reviews, route: main, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  steps: [{weight: 20, bake: 10s}, {weight: 50, bake: 10s}]\n  analysis: {interval: 10s}\n";

/// An emulator with the RolloutPolicy CRD and the daemon's namespace, a fake Prometheus, and a
/// directory for kubeconfigs and daemon logs.
pub async fn process_cluster() -> (Arc<EmulatorHandle>, FakeProm, tempfile::TempDir) {
    let emu = Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(include_str!("../../deploy/crd.yaml")).unwrap();
    emu.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "canaryd-system"}}))
        .unwrap();
    let prom = FakeProm::start().await;
    (emu, prom, tempfile::tempdir().unwrap())
}

/// A namespace with bookinfo's fixtures, its traffic, and a RolloutPolicy the daemon picks up.
pub fn add_rollout(emu: &EmulatorHandle, prom: &FakeProm, ns: &str, canary_errors: f64) {
    load_namespace(emu, ns);
    prom.set_namespace(ns, canary_errors);
    emu.apply_yaml(&CRD_POLICY.replace("NS", ns)).unwrap();
}

/// A running `canaryd run --crds`; dropping it SIGKILLs it, so a failed test leaves no daemon.
pub struct Daemon {
    child: std::process::Child,
}

/// Starts the daemon as `identity`, appending its log to `log`.
pub fn spawn_daemon(
    kubeconfig: &std::path::Path,
    prom: &str,
    identity: &str,
    leader: bool,
    log: &std::path::Path,
) -> Daemon {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"));
    cmd.args(["run", "--crds", "--prometheus", prom, "--metrics-addr", "127.0.0.1:0"]);
    if leader {
        cmd.arg("--leader-election");
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", identity)
        .env("POD_NAMESPACE", "canaryd-system")
        .env("RUST_LOG", "canaryd=info")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    Daemon { child: cmd.spawn().unwrap() }
}

impl Daemon {
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls the rollouts of `namespaces` every 20 ms, recording each change.
pub fn spawn_monitor(
    emu: Arc<EmulatorHandle>,
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<HashMap<String, Vec<Snap>>> {
    tokio::spawn(async move {
        let mut seen: HashMap<String, Vec<Snap>> = HashMap::new();
        while !stop.load(Ordering::SeqCst) {
            for ns in &namespaces {
                if emu.get("networking.istio.io", "v1", "virtualservices", ns, "reviews").is_none() {
                    continue;
                }
                let s = snap(&emu, ns);
                let v = seen.entry(ns.clone()).or_default();
                if v.last() != Some(&s) {
                    v.push(s);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

/// The end of the daemons' log, for a failure message.
pub fn log_tail(log: &std::path::Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    log[log.len().saturating_sub(4000)..].to_string()
}
