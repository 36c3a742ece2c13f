//! No secret value ever leaves the place it is meant for. The real `canaryd run` daemon (JSON
//! logs, `canaryd=trace`) runs a rollout from a policy file (env/file secret sources are for
//! the operator's files; a RolloutPolicy resource may only use `secretKeyRef`) that aborts because Prometheus answers garbage,
//! with every kind of secret in play: webhook URLs from a Kubernetes Secret, an env var and a
//! file; HMAC signing keys from a Secret and an env var; an SMTP password from a file; a
//! Prometheus bearer token from a file; one more webhook URL (from a Secret) whose receiver
//! refuses connections, so delivery errors get logged. The receivers prove each secret was used (paths,
//! signatures, AUTH, Authorization); then the daemon's stderr, the Kubernetes Events, the
//! VirtualService (state annotation included) and the
//! delivered alert bodies and headers are grepped for every secret value: zero hits.

mod alert_support;
mod security_support;

use base64::Engine as _;
use canaryd::demo::FIXTURES;
use canaryd_testkit::http::HttpServer;
use canaryd_testkit::smtp::SmtpServer;
use hmac::{Hmac, Mac};
use kube_emulator::Emulator;
use security_support::*;
use sha2::Sha256;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);
const HOOK_SECRET: &str = "sekret-HOOKSECRET-123";
const HOOK_ENV: &str = "sekret-HOOKENV-456";
const HOOK_FILE: &str = "sekret-HOOKFILE-789";
const HMAC_SECRET: &str = "sekret-HMAC-321";
const HMAC_ENV: &str = "sekret-HMACENV-322";
const SMTP_PASSWORD: &str = "sekret-SMTPPW-654";
const PROM_TOKEN: &str = "sekret-PROMTOKEN-987";
/// In the URL of a webhook whose receiver refuses connections: delivery errors are logged.
const HOOK_REFUSED: &str = "sekret-HOOKREFUSED-555";
const SECRETS: [&str; 8] =
    [HOOK_SECRET, HOOK_ENV, HOOK_FILE, HOOK_REFUSED, HMAC_SECRET, HMAC_ENV, SMTP_PASSWORD, PROM_TOKEN];

fn verify(key: &str, body: &[u8], header: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    let Some(sig) = header.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else { return false };
    mac.verify_slice(&sig).is_ok()
}

/// Every form a secret could leak in: as is, base64 (as in a Secret's data or Basic auth).
fn forms(secret: &str) -> Vec<String> {
    vec![secret.to_string(), base64::engine::general_purpose::STANDARD.encode(secret)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_in_logs_events_status_or_alerts() {
    let hooks = HttpServer::start().await;
    let prometheus = HttpServer::start().await; // 200 "ok": not Prometheus JSON → Error verdict
    let smtp = SmtpServer::start().await;
    let emu = Emulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{text}\n")).unwrap();
        p
    };
    let hook_file = file("hook-url", &hooks.url(&format!("/hooks/{HOOK_FILE}")));
    let smtp_pw = file("smtp-password", SMTP_PASSWORD);
    let prom_token = file("prometheus-token", PROM_TOKEN);

    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    emu.apply_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hooks", "namespace": "bookinfo"},
        "data": {"url": b64(hooks.url(&format!("/hooks/{HOOK_SECRET}"))), "signing": b64(HMAC_SECRET.into()),
                 "refused": b64(format!("http://{unused}/hooks/{HOOK_REFUSED}"))},
    }))
    .unwrap();
    let policy = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  target: {{virtualService: reviews, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  steps: [{{weight: 10, bake: 30s}}, {{weight: 50, bake: 30s}}]\n  analysis: {{interval: 10s, maxConsecutiveErrors: 1, latency: {{enabled: false}}}}\n  alerts:\n    on: [abort]\n    email: {{to: [oncall@example.com]}}\n    webhooks:\n      - {{name: from-secret, format: json, urlFrom: {{secretKeyRef: {{name: hooks, key: url}}}}, signingSecretFrom: {{secretKeyRef: {{name: hooks, key: signing}}}}}}\n      - {{name: from-env, format: slack, urlFrom: {{env: CANARYD_TEST_HOOK_URL}}}}\n      - {{name: from-file, format: json, urlFrom: {{file: {}}}, signingSecretFrom: {{env: CANARYD_TEST_SIGNING}}}}\n      - {{name: refused, urlFrom: {{secretKeyRef: {{name: hooks, key: refused}}}}}}\n",
        hook_file.display()
    );
    // env/file sources are the operator's: only a policy file may use them.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("reviews.yaml"), &policy).unwrap();
    let parsed = canaryd::policy::parse_policy("reviews.yaml", &policy).unwrap();
    let policies_arg = policies.display().to_string();

    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&emu, &kubeconfig, None);
    let smtp_port = smtp.addr().port().to_string();
    let prom_url = prometheus.url("");
    let mut cmd = canaryd(
        &kubeconfig,
        &[
            "run",
            "--log-format",
            "json",
            "--policies",
            &policies_arg,
            "--prometheus",
            &prom_url,
            "--prometheus-token-file",
            prom_token.to_str().unwrap(),
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &smtp_port,
            "--smtp-tls",
            "none",
            "--smtp-username",
            "canaryd",
            "--smtp-password-file",
            smtp_pw.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--egress-allow",
            "127.0.0.0/8",
        ],
    );
    cmd.env("RUST_LOG", "info,canaryd=trace")
        .env("CANARYD_TEST_HOOK_URL", hooks.url(&format!("/hooks/{HOOK_ENV}")))
        .env("CANARYD_TEST_SIGNING", HMAC_ENV);
    let mut daemon = Daemon::spawn(cmd, dir.path().join("daemon.log"));

    // The rollout starts, Prometheus answers garbage, the rollout aborts, every channel alerts.
    hooks.wait_for(3, LIMIT).await;
    eventually(LIMIT, "the email", || (!smtp.messages().is_empty()).then_some(())).await;
    eventually(LIMIT, "Aborted in the state", || {
        (canaryd_testkit::state::recorded_state(&emu, &parsed).phase == canaryd::engine::Phase::Aborted)
            .then_some(())
    })
    .await;
    // Let the deliveries be logged, and the refused channel's failure too, before stopping.
    eventually(LIMIT, "delivery logs", || {
        let logs = daemon.logs();
        let delivered = logs.lines().filter(|l| l.contains("alert delivered")).count();
        (delivered >= 4 && logs.contains("\"channel\":\"refused\"")).then_some(())
    })
    .await;
    daemon.stop();
    let logs = daemon.logs();

    // Each secret was really used, where it belongs.
    let to = |s: &str| hooks.requests_to(&format!("/hooks/{s}"));
    let (from_secret, from_env, from_file) = (to(HOOK_SECRET), to(HOOK_ENV), to(HOOK_FILE));
    assert_eq!((from_secret.len(), from_env.len(), from_file.len()), (1, 1, 1), "{:?}", hooks.requests());
    let sig = from_secret[0].header("x-canaryd-signature").expect("signed");
    assert!(verify(HMAC_SECRET, &from_secret[0].body, &sig), "signed with the Secret's key");
    let sig = from_file[0].header("x-canaryd-signature").expect("signed");
    assert!(verify(HMAC_ENV, &from_file[0].body, &sig), "signed with the env key");
    let auth = smtp.auth();
    assert!(auth.iter().any(|a| a.ends_with(&format!("canaryd {SMTP_PASSWORD}"))), "{auth:?}");
    let prom = prometheus.requests();
    assert!(!prom.is_empty(), "Prometheus was asked");
    assert!(
        prom.iter().all(|r| r.header("authorization").as_deref() == Some(&format!("Bearer {PROM_TOKEN}"))),
        "bearer token sent to Prometheus"
    );
    assert!(logs.lines().all(|l| l.starts_with('{')), "JSON logs:\n{logs}");
    let failure = logs.lines().find(|l| l.contains("\"channel\":\"refused\"")).unwrap();
    assert!(failure.contains("alert delivery failed") && failure.contains("connection"), "{failure}");

    // Everywhere else: zero hits.
    let events = serde_json::to_string(&events(&emu, "bookinfo")).unwrap();
    assert!(events.contains("Aborted"), "{events}");
    let vs = serde_json::to_string(&virtual_service(&emu)).unwrap();
    let mut alerts = String::new();
    for r in hooks.requests() {
        alerts.push_str(&String::from_utf8_lossy(&r.body));
        for (k, v) in &r.headers {
            alerts.push_str(&format!("\n{k}: {}", v.to_str().unwrap_or_default()));
        }
    }
    for m in smtp.messages() {
        alerts.push_str(&m.data);
    }
    let surfaces = [
        ("daemon stderr (json, canaryd=trace)", &logs),
        ("Kubernetes Events", &events),
        ("VirtualService (annotations)", &vs),
        ("alert bodies + headers (3 webhooks, 1 email)", &alerts),
    ];
    let mut total = 0;
    println!("secret hits per surface ({} secrets, raw and base64):", SECRETS.len());
    for (name, text) in surfaces {
        let hits: usize =
            SECRETS.iter().flat_map(|s| forms(s)).map(|f| text.matches(f.as_str()).count()).sum();
        println!("  {name:<48} {:>8} bytes  {hits} hits", text.len());
        for s in SECRETS {
            for f in forms(s) {
                assert!(!text.contains(&f), "{s:?} ({f}) leaked into {name}:\n{text}");
            }
        }
        total += hits;
    }
    assert_eq!(total, 0);
}
