//! Gate and webhook URLs are chosen by policy authors (tenants, in RolloutPolicy resources) and
//! fetched from canaryd's network position, so they must not become a way to read what only
//! canaryd can reach. Proven with the library's gate and webhook calls against loopback peers,
//! and with the real `canaryd run` binary against the API emulator:
//!
//! - blocked destinations (cloud metadata, loopback, unspecified, operator-denied), as IP
//!   literals in every spelling and as DNS names (`localhost`), are refused before any
//!   connection, naming the address and range — never the URL;
//! - `--egress-allow` opens exactly the ranges it names;
//! - a 3xx is the answer, never followed (the peer sees one request);
//! - nothing a peer answers but its status reaches the gate detail, the rollout state on the
//!   VirtualService, events, the RolloutPolicy, alert bodies or the daemon's logs.

mod alert_support;
mod security_support;

use alert_support::fixtures::{self, LogCapture};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use canaryd::alert::egress::parse_range;
use canaryd::alert::{call_gate, EgressClient, EgressPolicy, GateAnswer, MapSecretStore};
use canaryd::demo::FIXTURES;
use canaryd::engine::{step, Input, RolloutState};
use canaryd::policy::{parse_policy, Gate, GateKind, Policy};
use kube_emulator::Emulator;
use security_support::*;
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const METADATA: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
const METADATA_REFUSED: &str = "destination refused: 169.254.169.254 is in a blocked range (169.254.0.0/16, link-local); allow it with --egress-allow";
/// What a peer's answer body carries: it must never show anywhere canaryd writes.
const MARKER: &str = "MARKER-aws-secret-key-wJalrXUtnFEMI";
const LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// One scripted answer.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

fn answer(status: u16, body: &str) -> Answer {
    Answer { status, location: None, body: body.to_string() }
}

fn redirect(status: u16, location: &str) -> Answer {
    Answer { status, location: Some(location.to_string()), body: format!("moved; {MARKER}") }
}

/// A loopback HTTP peer that answers per path (a queue of one-off answers, then a standing
/// answer; 200 "ok" by default) — with `Location` headers and bodies, which
/// `canaryd_testkit::http` does not script — and records every request.
#[derive(Clone, Default)]
struct Peer {
    once: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
    standing: Arc<Mutex<HashMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request the peer saw: path and body.
struct Seen {
    path: String,
    body: Vec<u8>,
}

async fn serve(State(p): State<Peer>, uri: Uri, body: axum::body::Bytes) -> (StatusCode, HeaderMap, String) {
    let path = uri.path().to_string();
    p.seen.lock().unwrap().push(Seen { path: path.clone(), body: body.to_vec() });
    let next = p.once.lock().unwrap().get_mut(&path).and_then(VecDeque::pop_front);
    let a =
        next.or_else(|| p.standing.lock().unwrap().get(&path).cloned()).unwrap_or_else(|| answer(200, "ok"));
    let mut headers = HeaderMap::new();
    if let Some(l) = a.location {
        headers.insert("location", l.parse().unwrap());
    }
    (StatusCode::from_u16(a.status).unwrap(), headers, a.body)
}

impl Peer {
    async fn start() -> (Peer, String) {
        let p = Peer::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(serve).with_state(p.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (p, base)
    }

    fn always(&self, path: &str, a: Answer) {
        self.standing.lock().unwrap().insert(path.to_string(), a);
    }

    fn then(&self, path: &str, answers: &[Answer]) {
        self.once.lock().unwrap().entry(path.to_string()).or_default().extend(answers.iter().cloned());
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|s| s.path.clone()).collect()
    }

    fn bodies(&self) -> String {
        self.seen.lock().unwrap().iter().map(|s| String::from_utf8_lossy(&s.body).into_owned()).collect()
    }
}

/// A loopback port whose connections are only queued: `assert_no_connection` sees any that
/// was made (the kernel completes the handshake without an `accept`), without waiting.
struct Listener(TcpListener);

impl Listener {
    fn open() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn assert_no_connection(&self, what: &str) {
        match self.0.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, from)) => panic!("{what}: a connection was made (from {from})"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn allow(ranges: &[&str]) -> EgressPolicy {
    let nets: Vec<_> = ranges.iter().map(|r| parse_range(r).unwrap()).collect();
    EgressPolicy::new(&[], &nets)
}

fn client(policy: EgressPolicy) -> EgressClient {
    EgressClient::new(Duration::from_secs(5), policy).unwrap()
}

/// A started rollout of the alert fixtures' policy (`shop/reviews`) with one confirm-step gate.
fn rollout(url: &str) -> (Policy, Gate, RolloutState) {
    let g = Gate {
        name: "qa".into(),
        kind: GateKind::ConfirmStep,
        url: Some(url.to_string()),
        url_from: None,
        timeout: canaryd::policy::Duration::from_secs(5),
    };
    let p = fixtures::email_policy().revise(|s| s.gates = vec![g.clone()]).unwrap();
    let t0 = jiff::Timestamp::from_second(fixtures::T0).unwrap();
    let s = step(&p, &RolloutState::default(), Input::NewRevision("7f9c2d".into()), t0).state;
    (p, g, s)
}

async fn ask(client: &EgressClient, url: &str) -> GateAnswer {
    let (p, g, s) = rollout(url);
    call_gate(client, &p, &g, &s, &MapSecretStore::new()).await
}

/// An aborted rollout's alert delivered once (`attempts` allowed) to one webhook at `url`;
/// the outcome as text and the attempts made.
async fn deliver(egress: EgressPolicy, url: &str, attempts: u32) -> (Result<(), String>, u32) {
    let p = fixtures::policy(
        "    webhooks:\n      - {name: ops, urlFrom: {secretKeyRef: {name: hooks, key: url}}}\n",
    );
    let (state, alert) = fixtures::engine_abort(&p);
    let store = MapSecretStore::new().with("shop", "hooks", "url", url);
    let d = fixtures::deliverer_with(None, store, attempts, egress);
    let r = d.spawn(p.clone(), alert, fixtures::facts(&p, &state)).await.unwrap();
    (r[0].outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()), r[0].attempts)
}

// ---------------------------------------------------------------------------------------------
// Blocked destinations

#[tokio::test]
async fn a_cloud_metadata_gate_url_is_refused_without_a_connection() {
    let started = Instant::now();
    let a = ask(&client(EgressPolicy::default()), METADATA).await;
    assert!(!a.open);
    assert_eq!(a.detail, METADATA_REFUSED);
    // Not a connect attempt that failed or timed out: nothing was tried.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // Every spelling of the address is the address.
    for url in [
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
        "https://169.254.169.254:443/latest/meta-data/",
    ] {
        let a = ask(&client(EgressPolicy::default()), url).await;
        assert!(!a.open, "{url}");
        assert!(a.detail.starts_with("destination refused: "), "{url}: {}", a.detail);
        assert!(a.detail.contains("(169.254.0.0/16, link-local)"), "{url}: {}", a.detail);
        assert!(!a.detail.contains("meta-data"), "the URL never shows: {}", a.detail);
    }
}

#[tokio::test]
async fn a_cloud_metadata_webhook_url_fails_at_once_and_is_not_retried() {
    let (logs, _guard) = LogCapture::install();
    let (outcome, attempts) = deliver(EgressPolicy::default(), METADATA, 5).await;
    assert_eq!(outcome, Err(format!("webhook: {METADATA_REFUSED}")));
    assert_eq!(attempts, 1, "a refused destination is not retried");
    let text = logs.text();
    assert!(text.contains("destination refused: 169.254.169.254"), "{text}");
    assert!(!text.contains("security-credentials"), "the URL never shows:\n{text}");
}

#[tokio::test]
async fn loopback_and_unspecified_literals_are_refused_before_any_connection() {
    let l = Listener::open();
    let port = l.port();
    let c = client(EgressPolicy::default());
    for (url, range) in [
        (format!("http://127.0.0.1:{port}/gate"), "(127.0.0.0/8, loopback)"),
        (format!("http://127.1:{port}/gate"), "(127.0.0.0/8, loopback)"),
        (format!("http://2130706433:{port}/gate"), "(127.0.0.0/8, loopback)"),
        (format!("http://[::ffff:127.0.0.1]:{port}/gate"), "(127.0.0.0/8, loopback)"),
        (format!("http://[::1]:{port}/gate"), "(::1/128, loopback)"),
        (format!("http://0.0.0.0:{port}/gate"), "(0.0.0.0/8, unspecified)"),
        (format!("http://[::]:{port}/gate"), "(::/128, unspecified)"),
        (format!("http://[fe80::1]:{port}/gate"), "(fe80::/10, link-local)"),
    ] {
        let a = ask(&c, &url).await;
        assert!(!a.open, "{url}");
        assert!(
            a.detail.starts_with("destination refused: ") && a.detail.contains(range),
            "{url}: {}",
            a.detail
        );
        l.assert_no_connection(&url);
    }
    let (outcome, attempts) =
        deliver(EgressPolicy::default(), &format!("http://127.0.0.1:{port}/hook"), 5).await;
    assert_eq!(
        outcome,
        Err("webhook: destination refused: 127.0.0.1 is in a blocked range (127.0.0.0/8, loopback); allow it with --egress-allow".into())
    );
    assert_eq!(attempts, 1);
    l.assert_no_connection("webhook");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_by_default_and_allowed_with_the_allowlist() {
    // `localhost` goes through DNS (the resolver), not the literal check.
    let l = Listener::open();
    let url = format!("http://localhost:{}/gate", l.port());
    let a = ask(&client(EgressPolicy::default()), &url).await;
    assert!(!a.open);
    assert!(a.detail.starts_with("destination refused: "), "{}", a.detail);
    assert!(a.detail.contains("loopback); allow it with --egress-allow"), "{}", a.detail);
    assert!(!a.detail.contains("localhost"), "the URL never shows: {}", a.detail);
    l.assert_no_connection("gate via localhost");
    let (outcome, attempts) = deliver(EgressPolicy::default(), &url, 5).await;
    assert!(outcome.as_ref().unwrap_err().starts_with("webhook: destination refused: "), "{outcome:?}");
    assert_eq!(attempts, 1);
    l.assert_no_connection("webhook via localhost");

    // Allowed: the same name reaches the peer (an IPv6 answer for localhost is dropped, the
    // IPv4 one is used).
    let (peer, base) = Peer::start().await;
    let url = base.replace("127.0.0.1", "localhost") + "/gate";
    let a = ask(&client(allow(&["127.0.0.0/8"])), &url).await;
    assert!(a.open, "{a:?}");
    assert_eq!(a.detail, "HTTP 200");
    let (outcome, _) =
        deliver(allow(&["127.0.0.0/8"]), &(base.replace("127.0.0.1", "localhost") + "/hook"), 1).await;
    assert_eq!(outcome, Ok(()));
    assert_eq!(peer.seen(), ["/gate", "/hook"]);
}

#[tokio::test]
async fn an_allowlist_opens_only_the_ranges_it_names() {
    let l = Listener::open();
    let c = client(allow(&["127.0.0.0/8"]));
    let a = ask(&c, METADATA).await;
    assert_eq!((a.open, a.detail.as_str()), (false, METADATA_REFUSED));
    for (url, range) in [
        (format!("http://[::1]:{}/gate", l.port()), "(::1/128, loopback)"),
        (format!("http://0.0.0.0:{}/gate", l.port()), "(0.0.0.0/8, unspecified)"),
    ] {
        let a = ask(&c, &url).await;
        assert!(!a.open && a.detail.contains(range), "{url}: {}", a.detail);
        l.assert_no_connection(&url);
    }
    // Even "everything" does not open a narrower blocked range.
    let a = ask(&client(allow(&["0.0.0.0/0", "::/0"])), METADATA).await;
    assert_eq!((a.open, a.detail.as_str()), (false, METADATA_REFUSED));
    // An operator-denied range is refused like the defaults, naming the flag.
    let denied = EgressPolicy::new(&[parse_range("10.0.0.0/8").unwrap()], &[]);
    let a = ask(&client(denied), "http://10.1.2.3:8080/approve").await;
    assert_eq!(
        a.detail,
        "destination refused: 10.1.2.3 is in a blocked range (10.0.0.0/8, --egress-deny); allow it with --egress-allow"
    );
}

// ---------------------------------------------------------------------------------------------
// Redirects and answer bodies

#[tokio::test]
async fn a_redirect_to_cloud_metadata_is_not_followed() {
    let (peer, base) = Peer::start().await;
    peer.always("/gate", redirect(302, METADATA));
    let a = ask(&client(allow(&["127.0.0.0/8"])), &format!("{base}/gate")).await;
    assert!(!a.open);
    assert_eq!(a.detail, "HTTP 302 (redirects are not followed)");
    assert_eq!(peer.seen(), ["/gate"], "exactly one request");
}

#[tokio::test]
async fn a_redirect_is_never_followed_even_to_an_allowed_address() {
    // A followed redirect would show here as a second request, and open the gate.
    let (peer, base) = Peer::start().await;
    for status in [301, 302, 303, 307, 308] {
        peer.then("/gate", &[redirect(status, &format!("{base}/landed"))]);
    }
    let c = client(allow(&["127.0.0.0/8"]));
    for status in [301, 302, 303, 307, 308] {
        let a = ask(&c, &format!("{base}/gate")).await;
        assert!(!a.open, "{status}");
        assert_eq!(a.detail, format!("HTTP {status} (redirects are not followed)"));
    }
    peer.then("/hook", &[redirect(307, &format!("{base}/landed"))]);
    let (outcome, attempts) = deliver(allow(&["127.0.0.0/8"]), &format!("{base}/hook"), 5).await;
    assert_eq!(outcome, Err("webhook: HTTP status 307 (redirects are not followed)".into()));
    assert_eq!(attempts, 1, "a redirect is not retried");
    assert!(!peer.seen().contains(&"/landed".to_string()), "{:?}", peer.seen());
    assert_eq!(peer.seen().len(), 6);
}

#[tokio::test]
async fn an_answer_body_never_reaches_the_gate_detail_errors_or_logs() {
    let (logs, _guard) = LogCapture::install();
    let (peer, base) = Peer::start().await;
    peer.always("/gate", answer(503, &format!("{MARKER}\n")));
    peer.then("/hook", &[answer(500, MARKER), answer(404, MARKER)]);
    let c = client(allow(&["127.0.0.0/8"]));
    let a = ask(&c, &format!("{base}/gate")).await;
    assert_eq!((a.open, a.detail.as_str()), (false, "HTTP 503"));
    let (outcome, attempts) = deliver(allow(&["127.0.0.0/8"]), &format!("{base}/hook"), 5).await;
    assert_eq!(outcome, Err("webhook: HTTP status 404".into()));
    assert_eq!(attempts, 2);
    let text = logs.text();
    assert!(text.contains("HTTP status 500"), "{text}");
    assert!(!text.contains("MARKER"), "an answer body reached the logs:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// The daemon

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_answer_bodies_out_of_state_events_alerts_and_logs() {
    let (peer, base) = Peer::start().await;
    peer.always("/gate", answer(503, &format!("{MARKER} (gate)")));
    peer.then("/hook", &[answer(500, &format!("{MARKER} (hook)"))]);
    let prometheus = canaryd_testkit::http::HttpServer::start().await;
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(FIXTURES).unwrap();
    emu.apply_yaml(include_str!("../deploy/crd.yaml")).unwrap();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    emu.apply_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hooks", "namespace": "bookinfo"},
        "data": {"ops": b64(&format!("{base}/hook")), "metadata": b64(METADATA)},
    }))
    .unwrap();
    let doc = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  target: {{virtualService: reviews, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  analysis: {{interval: 10s, latency: {{enabled: false}}}}\n  gates:\n    - {{name: qa, kind: confirm-rollout, url: \"{base}/gate\", timeout: 2s}}\n  alerts:\n    on: [abort]\n    webhooks:\n      - {{name: ops, urlFrom: {{secretKeyRef: {{name: hooks, key: ops}}}}}}\n      - {{name: metadata, urlFrom: {{secretKeyRef: {{name: hooks, key: metadata}}}}}}\n"
    );
    emu.apply_yaml(&doc).unwrap();
    let policy = parse_policy("p.yaml", &doc).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    write_kubeconfig(&emu, &kubeconfig, None);
    let prom_url = prometheus.url("");
    let args = [
        "run",
        "--log-format",
        "json",
        "--crds",
        "--prometheus",
        &prom_url,
        "--metrics-addr",
        "127.0.0.1:0",
        "--egress-allow",
        "127.0.0.0/8",
    ];
    let mut cmd = canaryd(&kubeconfig, &args);
    cmd.env("RUST_LOG", "trace");
    let mut daemon = Daemon::spawn(cmd, dir.path().join("daemon.log"));

    // The closed gate holds the rollout; its detail reaches the recorded state.
    let reason = eventually(LIMIT, "the gate's answer in the recorded state", || {
        let vs = virtual_service(&emu);
        let s = canaryd_testkit::state::state_in(&vs, &policy);
        s.reason.filter(|r| r.starts_with("waiting for gate confirm-rollout"))
    })
    .await;
    assert_eq!(reason, "waiting for gate confirm-rollout: HTTP 503");

    // The operator aborts: the abort alert goes to both webhooks; `ops` answers 500 first.
    annotate_vs(&emu, &canaryd::istio::command_annotation_key(&policy), "abort: egress test");
    eventually(LIMIT, "the alert delivered and the refusal logged", || {
        let logs = daemon.logs();
        let delivered =
            logs.lines().any(|l| l.contains("alert delivered") && l.contains("\"channel\":\"ops\""));
        let refused =
            logs.lines().any(|l| l.contains("\"channel\":\"metadata\"") && l.contains("destination refused"));
        (delivered && refused).then_some(())
    })
    .await;
    daemon.stop();
    let logs = daemon.logs();

    assert!(peer.seen().iter().filter(|p| *p == "/gate").count() >= 2, "{:?}", peer.seen());
    assert_eq!(peer.seen().iter().filter(|p| *p == "/hook").count(), 2, "500, then delivered");
    let refusal = logs.lines().find(|l| l.contains("\"channel\":\"metadata\"")).unwrap();
    assert!(refusal.contains(METADATA_REFUSED), "{refusal}");
    assert!(
        refusal.contains("alert delivery failed; the alert stays in the outbox"),
        "not retried: {refusal}"
    );
    assert!(!logs.contains("security-credentials"), "a webhook URL reached the logs");

    let vs = serde_json::to_string(&virtual_service(&emu)).unwrap();
    assert!(vs.contains("Aborted"), "{vs}");
    let surfaces = [
        ("VirtualService (state annotation)", vs),
        ("Kubernetes Events", serde_json::to_string(&events(&emu, "bookinfo")).unwrap()),
        ("RolloutPolicy (status)", serde_json::to_string(&rollout_policy(&emu, "reviews")).unwrap()),
        ("alert bodies", peer.bodies()),
        ("daemon stderr (json, RUST_LOG=trace)", logs),
    ];
    for (name, text) in &surfaces {
        assert!(!text.is_empty(), "{name} is empty");
        assert!(!text.contains("MARKER"), "an answer body reached {name}:\n{text}");
    }
}

#[tokio::test]
async fn egress_flags_take_cidrs_or_addresses_and_refuse_anything_else() {
    let out = output(canaryd(std::path::Path::new("/nonexistent"), &["run", "--help"])).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--egress-allow <CIDR>") && help.contains("--egress-deny <CIDR>"), "{help}");
    let out = output(canaryd(
        std::path::Path::new("/nonexistent"),
        &["run", "--crds", "--prometheus", "http://127.0.0.1:9", "--egress-allow", "localhost"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--egress-allow") && stderr.contains("is not an address range"), "{stderr}");
}
