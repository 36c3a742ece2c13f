//! Tenant confinement of custom PromQL against a real Prometheus (Debian's `prometheus`,
//! backfilled through promtool), through the code the daemon and `backtest` judge with
//! (`prometheus::observation`): a RolloutPolicy resource's custom queries read only its own
//! namespace's series, whatever they name; an operator's policy file is sent as written. And
//! `canaryd validate` reports a PromQL syntax error at file:line:col.
//!
//! These tests never skip: without the binaries they fail and say what to install.

use std::collections::HashMap;
use std::process::Command;

use canaryd::observation::Observation;
use canaryd::policy::{from_resource, parse_policy, Policy, RolloutPolicy, RolloutPolicySpec};
use canaryd::prometheus::{self, PrometheusClient, PrometheusConfig};
use canaryd::promql::TenantLabel;
use canaryd_testkit::prometheus::PrometheusServer;

/// 2025-01-01T00:00:00Z.
const START: i64 = 1_735_689_600;
/// Samples every 10 s for 10 minutes.
const STEPS: i64 = 60;

/// Per namespace: requests per 10 s step (so rate = value / 10 per second) and a queue depth.
/// `shop` is the tenant; `other` is someone else's.
const NAMESPACES: &[(&str, i64, i64)] = &[("shop", 1, 7), ("other", 100, 1000)];

/// Istio's request counter as scraped through kubernetes_sd (with `namespace`), and a gauge
/// whose namespace is in a differently named label (`tenant`).
fn data() -> String {
    let mut out = String::from("# TYPE istio_requests counter\n");
    for (ns, per_step, _) in NAMESPACES {
        for k in 0..=STEPS {
            out.push_str(&format!(
                "istio_requests_total{{namespace=\"{ns}\",reporter=\"destination\",destination_workload=\"reviews-v2\"}} {} {}\n",
                k * per_step,
                START + 10 * k
            ));
        }
    }
    out.push_str("# TYPE app_queue_depth gauge\n");
    for (ns, _, depth) in NAMESPACES {
        for k in 0..=STEPS {
            out.push_str(&format!("app_queue_depth{{tenant=\"{ns}\"}} {depth} {}\n", START + 10 * k));
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Custom checks that try to read beyond their namespace (or do not say which).
const CHECKS: &str = r#"
target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}
analysis:
  custom:
    - {name: names-other, query: 'sum(rate(istio_requests_total{namespace="other"}[1m]))', max: 1000000}
    - {name: names-none, query: 'sum(rate(istio_requests_total[1m]))', max: 1000000}
    - {name: regex-all, query: 'sum(rate(istio_requests_total{namespace=~".+"}[{{ interval }}]))', max: 1000000}
    - {name: other-label, query: 'max(app_queue_depth{tenant="other"})', max: 1000000}
"#;

fn resource_policy() -> Policy {
    let spec: RolloutPolicySpec = serde_saphyr::from_str(CHECKS).unwrap();
    let mut rp = RolloutPolicy::new("reviews", spec);
    rp.metadata.namespace = Some("shop".into());
    from_resource(&rp).unwrap()
}

fn file_policy() -> Policy {
    let text = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: shop}}\nspec:{}",
        CHECKS.replace('\n', "\n  ")
    );
    parse_policy("reviews.yaml", &text).unwrap()
}

async fn prometheus() -> (PrometheusServer, PrometheusClient) {
    let server = PrometheusServer::start_with_backfill(data())
        .await
        .unwrap_or_else(|e| panic!("cannot start a real Prometheus for this test: {e}"));
    let client = PrometheusClient::new(PrometheusConfig::new(server.url())).unwrap();
    (server, client)
}

/// The custom values of one look at the end of the data (a 60 s window), as the daemon takes it.
async fn look(
    client: &PrometheusClient,
    policy: &Policy,
    label: &TenantLabel,
) -> HashMap<String, Option<f64>> {
    let now = jiff::Timestamp::from_second(START + 10 * STEPS).unwrap();
    let observation: Observation =
        prometheus::observation(client, policy, &HashMap::new(), now.as_second() - 60, now, label).await;
    observation.custom.into_iter().map(|v| (v.name, v.canary)).collect()
}

fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() < 1e-9)
}

#[tokio::test]
async fn a_resource_reads_only_its_own_namespace_whatever_its_query_names() {
    let (server, client) = prometheus().await;
    let got = look(&client, &resource_policy(), &TenantLabel::default()).await;
    // shop serves 1 request per 10 s: 0.1/s. `other` (10/s) never shows, named or not.
    for check in ["names-other", "names-none", "regex-all"] {
        assert!(close(got[check], 0.1), "{check}: {:?}\n{}", got[check], server.log());
    }
    // On `namespace`, a gauge labelled only by `tenant` is not this namespace's series.
    assert_eq!(got["other-label"], None);

    // An operator whose Prometheus puts the namespace in `tenant` says so (--tenant-label).
    let tenant: TenantLabel = "tenant".parse().unwrap();
    let got = look(&client, &resource_policy(), &tenant).await;
    assert!(close(got["other-label"], 7.0), "{:?}", got["other-label"]);
}

#[tokio::test]
async fn a_policy_file_is_sent_as_written() {
    let (_server, client) = prometheus().await;
    let got = look(&client, &file_policy(), &TenantLabel::default()).await;
    assert!(close(got["names-other"], 10.0), "{:?}", got["names-other"]);
    assert!(close(got["names-none"], 10.1), "{:?}", got["names-none"]);
    assert!(close(got["regex-all"], 10.1), "{:?}", got["regex-all"]);
    assert!(close(got["other-label"], 1000.0), "{:?}", got["other-label"]);
}

#[test]
fn validate_reports_a_promql_syntax_error_at_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queue.yaml");
    let policy = "apiVersion: canaryd.io/v1alpha1
kind: RolloutPolicy
metadata: {name: reviews, namespace: shop}
spec:
  target: {virtualService: reviews, stable: {subset: v1}, canary: {subset: v2}}
  analysis:
    custom:
      - name: queue-depth
        query: |
          sum(app_queue_depth{namespace=\"{{ namespace }}\"})
            by (pod) max
        max: 10
";
    std::fs::write(&file, policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd")).arg("validate").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // `max` on line 11: after `by (pod)` an aggregation is complete.
    let want = format!(
        "error: {}:11:22: spec.analysis.custom[0].query: not valid PromQL: unexpected `max` (invalid promql query)",
        file.display()
    );
    assert!(stderr.contains(&want), "want {want}\nin:\n{stderr}");
    assert!(stderr.contains("\n  the query is parsed with its variables replaced"), "{stderr}");
}

#[test]
fn run_refuses_a_tenant_label_that_is_no_label_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["run", "--policies", "/nonexistent", "--prometheus", "http://127.0.0.1:9", "--once"])
        .args(["--tenant-label", "__name__"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tenant-label") && stderr.contains("is not a label name"), "{stderr}");
}
