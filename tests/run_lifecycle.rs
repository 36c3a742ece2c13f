//! Removing a policy while `canaryd run` runs, against the API emulator: deleting a
//! RolloutPolicy mid-rollout (its finalizer holds it) and removing a policy file both route the
//! traffic back to stable and remove the state annotation; the resource then goes.

use canaryd::demo::FIXTURES;
use kube_emulator::{Emulator, EmulatorHandle};
use serde_json::Value;
use std::time::{Duration, Instant};

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n";
const LIMIT: Duration = Duration::from_secs(30);

/// `canaryd run` as a child; killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(kubeconfig: &std::path::Path, args: &[&str], log: &std::path::Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("run")
        .args(args)
        .args(["--prometheus", "http://127.0.0.1:9", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "canaryd=info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon(child)
}

fn vs(emu: &EmulatorHandle) -> Value {
    emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap()
}

fn canary_weight(vs: &Value) -> u64 {
    vs["spec"]["http"][0]["route"][1]["weight"].as_u64().unwrap_or(0)
}

fn has_state(vs: &Value) -> bool {
    vs["metadata"]["annotations"].get("canaryd.io/state-reviews").is_some()
}

async fn wait_for(what: &str, log: &std::path::Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > LIMIT {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what}: not within {LIMIT:?}\n{}", &log[log.len().saturating_sub(4000)..]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cluster() -> (std::sync::Arc<EmulatorHandle>, tempfile::TempDir) {
    let emu = std::sync::Arc::new(Emulator::start().await.unwrap());
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    emu.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
    (emu, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_rolloutpolicy_mid_rollout_routes_back_to_stable_and_removes_the_state() {
    let (emu, dir) = cluster().await;
    emu.apply_yaml(POLICY).unwrap();
    let log = dir.path().join("daemon.log");
    let _d = spawn(&dir.path().join("kubeconfig"), &["--crds"], &log);
    let rp = || emu.get("canaryd.io", "v1alpha1", "rolloutpolicies", "bookinfo", "reviews");
    wait_for("rollout started and finalizer added", &log, || {
        canary_weight(&vs(&emu)) == 10
            && rp()
                .is_some_and(|r| r["metadata"]["finalizers"] == serde_json::json!(["canaryd.io/route-back"]))
    })
    .await;
    assert!(emu.delete("canaryd.io", "rolloutpolicies", "bookinfo", "reviews"));
    assert!(rp().is_some_and(|r| r["metadata"]["deletionTimestamp"].is_string()), "held by the finalizer");
    wait_for("routed back, state removed, resource gone", &log, || {
        let v = vs(&emu);
        canary_weight(&v) == 0 && !has_state(&v) && rp().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_policy_file_mid_rollout_routes_back_to_stable_and_removes_the_state() {
    let (emu, dir) = cluster().await;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let file = policies.join("reviews.yaml");
    std::fs::write(&file, POLICY).unwrap();
    let log = dir.path().join("daemon.log");
    let _d = spawn(&dir.path().join("kubeconfig"), &["--policies", policies.to_str().unwrap()], &log);
    wait_for("rollout started", &log, || canary_weight(&vs(&emu)) == 10 && has_state(&vs(&emu))).await;
    std::fs::remove_file(&file).unwrap();
    wait_for("routed back and state removed", &log, || {
        let v = vs(&emu);
        canary_weight(&v) == 0 && !has_state(&v)
    })
    .await;
}
