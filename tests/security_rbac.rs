//! Least privilege, proven against the real binary: `canaryd run --crds --leader-election`
//! runs against the API emulator in authorizing mode with exactly the Roles/ClusterRoles that
//! `kubectl kustomize` builds from deploy/ (cluster-wide install) and deploy/namespaced/
//! (namespaced install, `--namespace bookinfo`) bound to the daemon's token. A whole release
//! cycle — start, copy promotion over several `--once` runs, a second release aborted by an
//! operator while the daemon runs continuously and alerts a webhook whose URL is in a
//! Kubernetes Secret — must work without a single 401/403, every granted (verb, resource) must
//! be used at least once (else the rule is excess), and requests outside the rules must be
//! refused. The namespaced install must never make a request outside its namespaces.

mod alert_support;
mod security_support;

use canaryd::demo::FIXTURES;
use canaryd::policy::parse_policy;
use canaryd_testkit::http::HttpServer;
use kube_emulator::{Emulator, EmulatorHandle, Rbac};
use security_support::*;
use std::collections::BTreeSet;
use std::time::Duration;

const TOKEN: &str = "canaryd-serviceaccount-token";
const LIMIT: Duration = Duration::from_secs(60);

const POLICY: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  target: {virtualService: reviews, stable: {subset: v1, workload: reviews-v1}, canary: {subset: v2, workload: reviews-v2}}\n  promotion: {mode: copy}\n  alerts:\n    on: [abort]\n    webhooks:\n      - {name: ops, urlFrom: {secretKeyRef: {name: hooks, key: url}}}\n";

/// (verb, group/resource) pairs granted by the Role/ClusterRole documents of `yaml`.
fn granted(yaml: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for doc in kube_emulator::parse_yaml_docs(yaml).unwrap() {
        if !matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for v in list("verbs") {
                        assert!(g != "*" && r != "*" && v != "*", "wildcard in deploy/: {rule}");
                        out.insert((v.clone(), format!("{g}/{r}")));
                    }
                }
            }
        }
    }
    out
}

/// The manifests `kubectl apply -k deploy/<dir>` would apply (kubectl is installed by .ci/run).
fn kustomize(dir: &str) -> String {
    let path = format!("{}/deploy/{dir}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", &path])
        .output()
        .expect("kubectl is needed to build deploy/ (bash .ci/run installs it)");
    assert!(out.status.success(), "kubectl kustomize {path}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The API group of a request path (`/api/v1/...` is the core group `""`).
fn group_of(path: &str) -> String {
    match path.strip_prefix("/apis/") {
        Some(rest) => rest.split('/').next().unwrap_or_default().to_string(),
        None => String::new(),
    }
}

fn setup(emu: &EmulatorHandle, hook_url: &str) {
    use base64::Engine as _;
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: canaryd-system}\n").unwrap();
    emu.apply_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hooks", "namespace": "bookinfo"},
        "data": {"url": base64::engine::general_purpose::STANDARD.encode(hook_url)},
    }))
    .unwrap();
    emu.apply_yaml(POLICY).unwrap();
}

/// One release cycle of the real daemon under `rbac`, with `scope` added to its arguments;
/// returns the API requests made with the daemon's token (all of them succeeded).
async fn release_cycle(
    emu: &EmulatorHandle,
    rbac: &str,
    scope: &[&str],
) -> Vec<kube_emulator::RequestRecord> {
    let hook = HttpServer::start().await;
    setup(emu, &hook.url("/hooks/ops"));
    emu.enable_rbac(Rbac::new().bind(TOKEN, rbac).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(emu, &kubeconfig, Some(TOKEN));
    let policy = parse_policy("p.yaml", POLICY).unwrap();
    let command_key = canaryd::istio::command_annotation_key(&policy);
    let mut once = vec![
        "run",
        "--crds",
        "--leader-election",
        "--once",
        "--prometheus",
        "http://127.0.0.1:9",
        "--metrics-addr",
        "127.0.0.1:0",
        "--egress-allow",
        "127.0.0.0/8",
    ];
    once.extend_from_slice(scope);
    let run_once = || async {
        let out = output(canaryd(&kubeconfig, &once)).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "colour codes in logs that are not a terminal:\n{stderr}");
        stderr
    };
    // 1. First run: the lease is created, the rollout starts (subsets checked, weights and
    //    state written, an event), the status is written.
    let logs = run_once().await;
    let rp = rollout_policy(emu, "reviews");
    assert_eq!(rp["status"]["phase"], "Progressing", "{rp}\n{logs}");
    assert_eq!(rp["status"]["canaryWeight"], 10);
    assert_eq!(virtual_service(emu)["spec"]["http"][0]["route"][1]["weight"], 10);
    let lease = emu.get("coordination.k8s.io", "v1", "leases", "canaryd-system", "canaryd-leader").unwrap();
    // Acquired for the run, released when it ended (so another replica need not wait).
    assert!(lease["spec"]["acquireTime"].is_string(), "{lease}");
    assert!(lease["spec"]["holderIdentity"].is_null(), "released on exit: {lease}");

    // 2. Operator promotes: copy promotion patches the stable Deployment's template; the lease
    //    is renewed (update).
    annotate_vs(emu, &command_key, "promote");
    let logs = run_once().await;
    let rp = rollout_policy(emu, "reviews");
    assert_eq!(rp["status"]["phase"], "Promoting", "{rp}\n{logs}");
    let stable = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v1").unwrap();
    assert_eq!(
        stable["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/istio/examples-bookinfo-reviews-v2:1.20.1",
        "the canary's template was copied to stable"
    );

    // 3. Stable rolled out: routed back to stable, canary scaled down, Promoted.
    let logs = run_once().await;
    let rp = rollout_policy(emu, "reviews");
    assert_eq!(rp["status"]["phase"], "Promoted", "{rp}\n{logs}");
    let vs = virtual_service(emu);
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 100, "{vs}");
    let canary = emu.get("apps", "v1", "deployments", "bookinfo", "reviews-v2").unwrap();
    assert_eq!(canary["spec"]["replicas"], 0, "canary scaled down");

    // 4. A second release, the daemon running continuously; the operator aborts it and the
    //    alert goes to the webhook whose URL the daemon reads from the Secret.
    new_canary_release(emu, "docker.io/istio/examples-bookinfo-reviews-v3:1.20.1");
    // With the dashboard on: it must need no rule of its own (it reads the daemon's memory).
    let ui = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut args: Vec<&str> = once.iter().copied().filter(|a| *a != "--once").collect();
    args.extend(["--ui-addr", &ui]);
    let mut daemon = Daemon::spawn(canaryd(&kubeconfig, &args), dir.path().join("daemon.log"));
    eventually(LIMIT, "the second release to start", || {
        (rollout_policy(emu, "reviews")["status"]["phase"] == "Progressing").then_some(())
    })
    .await;
    annotate_vs(emu, &command_key, "abort: security test");
    hook.wait_for(1, LIMIT).await;
    eventually(LIMIT, "the abort in the status", || {
        (rollout_policy(emu, "reviews")["status"]["phase"] == "Aborted").then_some(())
    })
    .await;
    for page in ["/", "/rollouts/bookinfo/reviews"] {
        let body = reqwest::get(format!("http://{ui}{page}")).await.unwrap().error_for_status().unwrap();
        let body = body.text().await.unwrap();
        assert!(body.contains("reviews") && body.contains("Aborted"), "{page}: {body}");
    }
    daemon.stop();
    let vs = virtual_service(emu);
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 100, "{vs}");
    let body = hook.requests()[0].json();
    assert_eq!(body["event"], "abort", "{body}");

    let reasons: Vec<String> =
        events(emu, "bookinfo").iter().filter_map(|e| e["reason"].as_str().map(String::from)).collect();
    for want in ["Promoting", "Promoted", "Aborted"] {
        assert!(reasons.iter().any(|r| r == want), "no {want} event in {reasons:?}");
    }

    let log: Vec<_> = emu.requests().into_iter().filter(|r| r.user.as_deref() == Some(TOKEN)).collect();
    let refused: Vec<_> = log.iter().filter(|r| r.status == 401 || r.status == 403).collect();
    assert!(refused.is_empty(), "the daemon was refused:\n{refused:#?}\n{}", daemon.logs());
    log
}

/// Every granted (verb, group/resource) was used and nothing else was; prints the usage.
fn assert_granted_is_used(rbac: &str, log: &[kube_emulator::RequestRecord]) {
    let used: BTreeSet<(String, String)> = log
        .iter()
        .filter(|r| !r.verb.is_empty() && !r.resource.is_empty())
        .map(|r| (r.verb.clone(), format!("{}/{}", group_of(&r.path), r.resource)))
        .collect();
    println!("(verb, group/resource) the daemon used over {} requests:", log.len());
    for (verb, resource) in &used {
        let n = log
            .iter()
            .filter(|r| r.verb == *verb && format!("{}/{}", group_of(&r.path), r.resource) == *resource)
            .count();
        println!("  {verb:<7} {resource:<40} x{n}");
    }
    let grants = granted(rbac);
    let excess: Vec<_> = grants.difference(&used).collect();
    let missing: Vec<_> = used.difference(&grants).collect();
    assert!(excess.is_empty(), "granted but never used (excess rules): {excess:?}");
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
    // Lease access is namespaced: only canaryd-system.
    assert!(log.iter().filter(|r| r.resource == "leases").all(|r| r.namespace == "canaryd-system"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_wide_install_needs_exactly_its_rules() {
    let rbac = kustomize("");
    let emu = Emulator::start().await.unwrap();
    let log = release_cycle(&emu, &rbac, &[]).await;
    assert_granted_is_used(&rbac, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_install_needs_exactly_its_rules_and_stays_in_its_namespaces() {
    let rbac = kustomize("namespaced");
    assert!(
        !rbac.contains("kind: ClusterRole"),
        "the namespaced install grants nothing cluster-wide:\n{rbac}"
    );
    let emu = Emulator::start().await.unwrap();
    // A tenant outside the managed namespaces, with a policy resource and a policy file.
    emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n").unwrap();
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    emu.apply_yaml(&POLICY.replace("namespace: bookinfo", "namespace: other")).unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("other.yaml"),
        POLICY.replace("namespace: bookinfo", "namespace: other"),
    )
    .unwrap();
    let files_dir = files.path().display().to_string();
    let log = release_cycle(&emu, &rbac, &["--namespace", "bookinfo", "--policies", &files_dir]).await;
    assert_granted_is_used(&rbac, &log);
    let outside: Vec<_> = log
        .iter()
        .filter(|r| !r.resource.is_empty() && !["bookinfo", "canaryd-system"].contains(&r.namespace.as_str()))
        .collect();
    assert!(outside.is_empty(), "requests outside bookinfo/canaryd-system:\n{outside:#?}");
    let other = rollout_policy_in(&emu, "other", "reviews");
    assert!(other["status"].is_null(), "the other namespace's policy was acted on: {other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_rules_are_refused() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};

    let emu = Emulator::start().await.unwrap();
    setup(&emu, "http://127.0.0.1:9/hooks/ops");
    emu.enable_rbac(Rbac::new().bind(TOKEN, &kustomize("")).unwrap());
    let client = emu.client_as(TOKEN);
    let code = |r: Result<(), kube::Error>| match r {
        Ok(()) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    let vs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "bookinfo", &canaryd::daemon::virtual_service_resource());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "bookinfo");
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "bookinfo");
    let all_secrets: Api<Secret> = Api::all(client.clone());
    let leases_default: Api<Lease> = Api::namespaced(client.clone(), "default");
    let leases_own: Api<Lease> = Api::namespaced(client.clone(), "canaryd-system");

    // Allowed: what the daemon does.
    assert_eq!(code(vs.get("reviews").await.map(|_| ())), 200);
    assert_eq!(code(secrets.get("hooks").await.map(|_| ())), 200);
    assert_eq!(code(leases_own.get_opt("canaryd-leader").await.map(|_| ())), 200);

    // Refused: everything else.
    let mut refused: Vec<(&str, u16)> = vec![
        ("delete virtualservice", code(vs.delete("reviews", &DeleteParams::default()).await.map(|_| ()))),
        // Watching VirtualServices is granted now (list + watch wake the daemon); reading
        // ConfigMaps never was.
        ("list configmaps", code(configmaps.list(&Default::default()).await.map(|_| ()))),
        ("list secrets (namespace)", code(secrets.list(&Default::default()).await.map(|_| ()))),
        ("list secrets (cluster)", code(all_secrets.list(&Default::default()).await.map(|_| ()))),
        ("delete secret", code(secrets.delete("hooks", &DeleteParams::default()).await.map(|_| ()))),
    ];
    let lease = Lease {
        metadata: kube::api::ObjectMeta { name: Some("canaryd-leader".into()), ..Default::default() },
        spec: None,
    };
    refused.push((
        "create lease outside canaryd-system",
        code(leases_default.create(&PostParams::default(), &lease).await.map(|_| ())),
    ));
    refused.push((
        "delete own lease",
        code(leases_own.delete("canaryd-leader", &DeleteParams::default()).await.map(|_| ())),
    ));
    for (what, status) in &refused {
        assert_eq!(*status, 403, "{what}: expected 403, got {status}");
    }
    // No token at all: 401.
    let anon: Api<Secret> = Api::namespaced(emu.client(), "bookinfo");
    assert_eq!(code(anon.get("hooks").await.map(|_| ())), 401);
    assert!(emu.get("networking.istio.io", "v1", "virtualservices", "bookinfo", "reviews").is_some());
    assert!(emu.get("", "v1", "secrets", "bookinfo", "hooks").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_install_cannot_reach_other_namespaces() {
    use canaryd::policy::RolloutPolicy;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;

    let emu = Emulator::start().await.unwrap();
    setup(&emu, "http://127.0.0.1:9/hooks/ops");
    emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n").unwrap();
    emu.apply_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hooks", "namespace": "other"},
        "data": {"url": "aHR0cDovL2V4YW1wbGU="},
    }))
    .unwrap();
    emu.enable_rbac(Rbac::new().bind(TOKEN, &kustomize("namespaced")).unwrap());
    let client = emu.client_as(TOKEN);
    let status = |r: Result<(), kube::Error>| match r {
        Ok(()) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    };
    let own: Api<Secret> = Api::namespaced(client.clone(), "bookinfo");
    let other: Api<Secret> = Api::namespaced(client.clone(), "other");
    let all_policies: Api<RolloutPolicy> = Api::all(client.clone());
    let own_policies: Api<RolloutPolicy> = Api::namespaced(client.clone(), "bookinfo");
    assert_eq!(status(own.get("hooks").await.map(|_| ())), 200);
    assert_eq!(status(own_policies.list(&Default::default()).await.map(|_| ())), 200);
    assert_eq!(status(other.get("hooks").await.map(|_| ())), 403, "another namespace's Secret");
    assert_eq!(status(all_policies.list(&Default::default()).await.map(|_| ())), 403, "cluster-wide list");
}
