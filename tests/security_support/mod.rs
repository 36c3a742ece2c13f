//! Shared pieces of the security tests: running the real `canaryd` binary against the API
//! emulator (once, or as a daemon whose stderr is captured), a kubeconfig that authenticates
//! with a bearer token, and an SMTP server that requires AUTH and records the credentials.
#![allow(dead_code)]

use kube_emulator::EmulatorHandle;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A kubeconfig for the emulator that sends `token` as a bearer token (kube-rs sends it over
/// plain HTTP too), or no credentials at all.
pub fn write_kubeconfig(emu: &EmulatorHandle, path: &Path, token: Option<&str>) {
    let user = match token {
        Some(t) => format!("    token: {t}\n"),
        None => "    {}\n".to_string(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n\
         contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\n\
         current-context: emulator\nusers:\n- name: emulator\n  user:\n{user}",
        emu.url()
    );
    std::fs::write(path, text).unwrap();
}

/// The `canaryd` command with a kubeconfig and a fixed pod identity.
pub fn canaryd(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_canaryd"));
    cmd.args(args).env("KUBECONFIG", kubeconfig).env("POD_NAME", "canaryd-0").env_remove("RUST_LOG");
    cmd
}

/// Runs `cmd` to completion off the async runtime.
pub async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// A running `canaryd run` whose stderr goes to a file; SIGTERM on drop.
pub struct Daemon {
    child: Child,
    pub stderr: PathBuf,
}

impl Daemon {
    pub fn spawn(mut cmd: Command, stderr: PathBuf) -> Daemon {
        let file = std::fs::File::create(&stderr).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Daemon { child, stderr }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM (the daemon stops between cycles) and wait; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: signalling the child this test spawned, by its pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The RolloutPolicy `bookinfo/<name>`.
pub fn rollout_policy(emu: &EmulatorHandle, name: &str) -> Value {
    rollout_policy_in(emu, "bookinfo", name)
}

/// The RolloutPolicy `<namespace>/<name>`.
pub fn rollout_policy_in(emu: &EmulatorHandle, namespace: &str, name: &str) -> Value {
    emu.get("canaryd.io", "v1alpha1", "rolloutpolicies", namespace, name).unwrap()
}

/// The VirtualService `bookinfo/reviews`.
pub fn virtual_service(emu: &EmulatorHandle) -> Value {
    emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap()
}

/// Sets an annotation on the VirtualService `bookinfo/reviews` (as an operator would).
pub fn annotate_vs(emu: &EmulatorHandle, key: &str, value: &str) {
    let mut vs = virtual_service(emu);
    let ann =
        vs["metadata"].as_object_mut().unwrap().entry("annotations").or_insert_with(|| serde_json::json!({}));
    ann[key] = Value::String(value.to_string());
    emu.apply_value(vs).unwrap();
}

/// Changes the canary Deployment's pod template (a new release).
pub fn new_canary_release(emu: &EmulatorHandle, image: &str) {
    let mut d = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["image"] = Value::String(image.to_string());
    d["spec"]["replicas"] = Value::from(1);
    emu.apply_value(d).unwrap();
}

/// Events recorded in namespace `ns`.
pub fn events(emu: &EmulatorHandle, ns: &str) -> Vec<Value> {
    emu.list("", "events", Some(ns))
}
