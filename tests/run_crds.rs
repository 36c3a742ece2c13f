//! `canaryd run --crds` as a process against the API emulator: a valid RolloutPolicy starts its
//! rollout and gets a status that `kubectl get rolloutpolicies` shows; an invalid one is
//! reported in its status and never acted on.

use canaryd::demo::FIXTURES;
use kube_emulator::Emulator;
use std::process::Command;

const GOOD: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n";
const BAD: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: broken, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v1}}\n";

#[tokio::test(flavor = "multi_thread")]
async fn run_once_starts_valid_resources_and_reports_invalid_ones() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    emu.apply_yaml(GOOD).unwrap();
    emu.apply_yaml(BAD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let bin = env!("CARGO_BIN_EXE_canaryd");
    let out = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        move || {
            Command::new(bin)
                .args([
                    "run",
                    "--crds",
                    "--once",
                    "--prometheus",
                    "http://127.0.0.1:9",
                    "--metrics-addr",
                    "127.0.0.1:0",
                ])
                .env("KUBECONFIG", &kubeconfig)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = emu.get("canaryd.io", "v1alpha1", "rolloutpolicies", "bookinfo", "reviews").unwrap();
    assert_eq!(good["status"]["phase"], "Progressing", "{good}");
    assert_eq!(good["status"]["canaryWeight"], 10);
    assert_eq!(good["status"]["step"], "1/3");
    let vs = emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap();
    assert_eq!(vs["spec"]["http"][0]["route"][1]["weight"], 10, "the rollout really started");
    let bad = emu.get("canaryd.io", "v1alpha1", "rolloutpolicies", "bookinfo", "broken").unwrap();
    assert_eq!(bad["status"]["phase"], "Invalid");
    let msg = bad["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(msg.contains("spec.target.canary"), "{msg}");

    // The operator CLI works on resources by namespace/name, and lists them all.
    let cli = |args: Vec<&'static str>| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(bin).args(args).env("KUBECONFIG", &kubeconfig).output().unwrap()
        })
    };
    let all = cli(vec!["status"]).await.unwrap();
    let all_text = String::from_utf8_lossy(&all.stdout);
    assert!(
        all.status.success() && all_text.contains("bookinfo/reviews") && all_text.contains("Progressing"),
        "{all_text}"
    );
    let one = cli(vec!["status", "bookinfo/reviews"]).await.unwrap();
    let one_text = String::from_utf8_lossy(&one.stdout);
    assert!(one_text.contains("step 1/3") && one_text.contains("10%"), "{one_text}");
    let abort = cli(vec!["abort", "bookinfo/reviews", "--reason", "bad release"]).await.unwrap();
    assert!(abort.status.success(), "{}", String::from_utf8_lossy(&abort.stderr));
    let vs = emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap();
    assert_eq!(vs["metadata"]["annotations"]["canaryd.io/command-reviews"], "abort: bad release");
    let invalid = cli(vec!["status", "bookinfo/broken"]).await.unwrap();
    assert_eq!(invalid.status.code(), Some(1), "an invalid resource is reported as invalid");

    let table = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "get", "rolloutpolicies", "-n", "bookinfo"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(text.contains("PHASE") && text.contains("CANARY") && text.contains("VERDICT"), "{text}");
    let row = text.lines().find(|l| l.starts_with("reviews")).unwrap_or_default();
    assert!(row.contains("Progressing") && row.contains("1/3") && row.contains("10"), "{text}");
}
