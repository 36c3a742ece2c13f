//! kubectl fidelity: the installed `kubectl` run against the emulator.

mod emulator_support;

use emulator_support::*;
use kube_emulator::{Emulator, EmulatorHandle};

struct Kubectl {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(emu: &EmulatorHandle) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&config).unwrap();
        Kubectl { _dir: dir, config }
    }

    /// Runs kubectl without blocking the runtime the emulator serves on.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.config).args(args);
        cmd.env("HOME", self._dir.path()).env_remove("KUBECONFIG");
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

async fn bookinfo() -> (EmulatorHandle, Kubectl) {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}---{REVIEWS_V2_DEPLOYMENT}")).unwrap();
    let k = Kubectl::new(&emu);
    (emu, k)
}

fn stored_vs(emu: &EmulatorHandle) -> serde_json::Value {
    emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").unwrap()
}

#[tokio::test]
async fn kubectl_get_virtualservices_as_json_shows_the_seed_weights() {
    let (_emu, k) = bookinfo().await;
    let o = k.run(&["get", "virtualservices", "-n", "bookinfo", "-o", "json"], None).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let list: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "reviews");
    assert_eq!(weights(&list["items"][0]), vec![90, 10]);
}

#[tokio::test]
async fn kubectl_get_prints_printer_columns_and_deployment_readiness() {
    let (_emu, k) = bookinfo().await;
    let o = k.run(&["get", "vs", "-n", "bookinfo"], None).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("HOSTS") && lines[0].contains("AGE"),
        "{}",
        o.stdout
    );
    assert!(lines[1].starts_with("reviews") && lines[1].contains(r#"["reviews"]"#), "{}", o.stdout);

    let o = k.run(&["get", "deployments", "-n", "bookinfo"], None).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let row: Vec<&str> = o.stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], &["reviews-v2", "2/2", "2", "2"]);

    let o = k.run(&["get", "vs", "nope", "-n", "bookinfo"], None).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains(r#"virtualservices.networking.istio.io "nope" not found"#), "{}", o.stderr);
}

#[tokio::test]
async fn kubectl_apply_creates_configures_and_leaves_a_destinationrule_unchanged() {
    let (emu, k) = bookinfo().await;
    let o = k.run(&["apply", "-f", "-"], Some(REVIEWS_DR)).await;
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "destinationrule.networking.istio.io/reviews created"),
        "{}",
        o.stderr
    );

    let with_v3 = format!("{REVIEWS_DR}  - name: v3\n    labels:\n      version: v3\n");
    let o = k.run(&["apply", "-f", "-"], Some(&with_v3)).await;
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "destinationrule.networking.istio.io/reviews configured"),
        "{}",
        o.stderr
    );
    let o = k.run(&["apply", "-f", "-"], Some(&with_v3)).await;
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "destinationrule.networking.istio.io/reviews unchanged"),
        "{}",
        o.stderr
    );

    let dr = emu.get("networking.istio.io", "v1", "destinationrules", "bookinfo", "reviews").unwrap();
    assert_eq!(dr["spec"]["subsets"].as_array().unwrap().len(), 3);
    let patch = emu.requests().into_iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));
    assert!(patch.query.contains("fieldValidation=Strict"), "{}", patch.query);
}

#[tokio::test]
async fn kubectl_apply_rejects_schema_violations_and_unknown_fields() {
    let (_emu, k) = bookinfo().await;
    let bad = REVIEWS_VS.replace("weight: 10", "weight: ten");
    let o = k.run(&["apply", "-f", "-"], Some(&bad)).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("spec.http[0].route[1].weight"), "{}", o.stderr);

    let unknown = REVIEWS_DR.replace("  host: reviews\n", "  host: reviews\n  hostt: typo\n");
    let o = k.run(&["apply", "-f", "-"], Some(&unknown)).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains(r#"unknown field "spec.hostt""#), "{}", o.stderr);
}

#[tokio::test]
async fn kubectl_json_patch_shifts_weights_and_a_failing_test_op_fails() {
    let (emu, k) = bookinfo().await;
    let shift = r#"[{"op":"test","path":"/spec/http/0/route/0/weight","value":90},
                    {"op":"replace","path":"/spec/http/0/route/0/weight","value":70},
                    {"op":"replace","path":"/spec/http/0/route/1/weight","value":30}]"#;
    let args = ["patch", "virtualservice", "reviews", "-n", "bookinfo", "--type=json", "-p", shift];
    let o = k.run(&args, None).await;
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "virtualservice.networking.istio.io/reviews patched"),
        "{}",
        o.stderr
    );
    assert_eq!(weights(&stored_vs(&emu)), vec![70, 30]);

    // The same patch again: the test op now fails and nothing changes.
    let o = k.run(&args, None).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("The request is invalid"), "{}", o.stderr);
    assert_eq!(weights(&stored_vs(&emu)), vec![70, 30]);
}

#[tokio::test]
async fn kubectl_default_strategic_patch_on_a_virtualservice_is_refused() {
    let (emu, k) = bookinfo().await;
    let o =
        k.run(&["patch", "vs", "reviews", "-n", "bookinfo", "-p", r#"{"spec":{"hosts":["r"]}}"#], None).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("application/strategic-merge-patch+json"), "{}", o.stderr);
    assert_eq!(stored_vs(&emu)["spec"]["hosts"][0], "reviews");
    let o = k
        .run(
            &[
                "patch",
                "vs",
                "reviews",
                "-n",
                "bookinfo",
                "--type=merge",
                "-p",
                r#"{"spec":{"hosts":["r"]}}"#,
            ],
            None,
        )
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(stored_vs(&emu)["spec"]["hosts"][0], "r");
}

#[tokio::test]
async fn kubectl_server_side_apply_and_rollout_status_work() {
    let (emu, k) = bookinfo().await;
    let o = k.run(&["apply", "--server-side", "-f", "-"], Some(REVIEWS_DR)).await;
    assert_eq!(
        (o.code, o.stdout.trim()),
        (0, "destinationrule.networking.istio.io/reviews serverside-applied"),
        "{}",
        o.stderr
    );
    let dr = emu.get("networking.istio.io", "v1", "destinationrules", "bookinfo", "reviews").unwrap();
    assert_eq!(dr["metadata"]["managedFields"][0]["manager"], "kubectl");

    let o =
        k.run(&["rollout", "status", "deployment/reviews-v2", "-n", "bookinfo", "--timeout=5s"], None).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("successfully rolled out"), "{}", o.stdout);
}

#[tokio::test]
async fn kubectl_registers_a_new_crd_and_serves_its_objects() {
    let (_emu, k) = bookinfo().await;
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.canaryd.io
spec:
  group: example.canaryd.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
"#;
    let o = k.run(&["apply", "-f", "-"], Some(crd)).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let widget = "apiVersion: example.canaryd.io/v1\nkind: Widget\nmetadata: {name: w, namespace: bookinfo}\nspec: {size: 0}\n";
    let o = k.run(&["apply", "-f", "-"], Some(widget)).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("spec.size"), "{}", o.stderr);
    let o = k.run(&["apply", "-f", "-"], Some(&widget.replace("size: 0", "size: 2"))).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = k.run(&["get", "wd", "-n", "bookinfo", "-o", "jsonpath={.items[0].spec.size}"], None).await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "2"), "{}", o.stderr);
}

#[tokio::test]
async fn kubectl_with_a_token_is_forbidden_outside_its_role() {
    let (emu, _) = bookinfo().await;
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: bookinfo}\n\
                rules:\n- apiGroups: [networking.istio.io]\n  resources: [virtualservices]\n  verbs: [get, list]\n";
    emu.enable_rbac(kube_emulator::Rbac::new().bind("reader", role).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    emu.write_kubeconfig_as(&config, "reader").unwrap();
    let k = Kubectl { _dir: dir, config };
    let o = k.run(&["get", "vs", "-n", "bookinfo", "-o", "name"], None).await;
    assert_eq!((o.code, o.stdout.trim()), (0, "virtualservice.networking.istio.io/reviews"), "{}", o.stderr);
    let o = k.run(&["delete", "vs", "reviews", "-n", "bookinfo"], None).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("Error from server (Forbidden)"), "{}", o.stderr);
    assert!(o.stderr.contains(r#"User "reader" cannot delete resource "virtualservices""#), "{}", o.stderr);
}
