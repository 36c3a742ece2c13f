//! Policies, an abort produced by the real engine, deliverers with fast retries, and a tracing
//! capture for "no URL in logs" checks.

use canaryd::alert::egress::parse_range;
use canaryd::alert::{
    AlertFacts, Deliverer, DelivererConfig, EgressPolicy, Mailer, MapSecretStore, RenderOptions, RetryPolicy,
    SmtpConfig, SmtpTls, WebhookSender,
};
use canaryd::engine::{step, Input, PendingAlert, Phase, RolloutState};
use canaryd::observation::{Observation, SideObservation};
use canaryd::policy::{parse_policy, Policy};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A policy in namespace `shop` named `reviews` with three steps and the given `alerts:` block
/// (YAML, indented by two spaces).
pub fn policy(alerts: &str) -> Policy {
    let doc = format!(
        "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  target: {{virtualService: reviews, stable: {{subset: v1, workload: reviews-v1}}, canary: {{subset: v2, workload: reviews-v2}}}}\n  steps: [{{weight: 10, bake: 2m}}, {{weight: 30, bake: 2m}}, {{weight: 60, bake: 2m}}]\n  analysis: {{interval: 1m, latency: {{enabled: false}}}}\n  alerts:\n{alerts}"
    );
    parse_policy("alerts-test.yaml", &doc).unwrap_or_else(|e| panic!("{e}"))
}

/// Email only.
pub fn email_policy() -> Policy {
    policy("    email: {to: [oncall@example.com, release@example.com]}\n")
}

/// Email plus json (signed), slack and teams webhooks whose URLs live in Secret `shop/hooks`.
pub fn all_channels_policy() -> Policy {
    policy(
        "    email: {to: [oncall@example.com]}\n    webhooks:\n      - {name: ops-json, format: json, urlFrom: {secretKeyRef: {name: hooks, key: json}}, signingSecretFrom: {secretKeyRef: {name: hooks, key: signing}}}\n      - {name: ops-slack, format: slack, urlFrom: {secretKeyRef: {name: hooks, key: slack}}}\n      - {name: ops-teams, format: teams, urlFrom: {secretKeyRef: {name: hooks, key: teams}}}\n",
    )
}

/// 2026-03-10T01:00:00Z.
pub const T0: i64 = 1_773_104_400;

fn ts(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).unwrap()
}

/// Runs the real engine: a new revision starts, one healthy interval, then the canary fails
/// with 10% errors against 0.06% on the baseline. Returns the aborted state and its outbox alert.
pub fn engine_abort(p: &Policy) -> (RolloutState, PendingAlert) {
    let mut s = step(p, &RolloutState::default(), Input::NewRevision("7f9c2d".into()), ts(T0)).state;
    let obs = |min: i64, canary: (u64, u64), baseline: (u64, u64)| Observation {
        start: T0 + (min - 1) * 60,
        end: T0 + min * 60,
        canary: SideObservation { requests: canary.0, errors: canary.1, latency: None },
        baseline: SideObservation { requests: baseline.0, errors: baseline.1, latency: None },
        custom: vec![],
    };
    s = step(p, &s, Input::Observed(Ok(obs(1, (2000, 1), (8000, 5)))), ts(T0 + 60)).state;
    for min in 2..10 {
        s = step(p, &s, Input::Observed(Ok(obs(min, (2000, 200), (8000, 5)))), ts(T0 + min * 60)).state;
        if s.phase == Phase::Aborted {
            break;
        }
    }
    assert_eq!(s.phase, Phase::Aborted, "{s:?}");
    let alert = s.outbox.last().cloned().expect("abort alert in the outbox");
    (s, alert)
}

/// Facts for `alert` from the state that holds it.
pub fn facts(p: &Policy, s: &RolloutState) -> AlertFacts {
    AlertFacts::from_state(p, s)
}

/// Plain SMTP to a loopback address (the test server speaks no TLS).
pub fn loopback_mailer(addr: SocketAddr) -> Mailer {
    let mut cfg = SmtpConfig::new(addr.ip().to_string(), "canaryd <canaryd@example.com>");
    cfg.port = addr.port();
    cfg.tls = SmtpTls::None;
    cfg.timeout = Duration::from_secs(5);
    Mailer::new(&cfg).expect("mailer")
}

/// First wait 20–40 ms, doubling to at most 200 ms, `attempts` in all: production's backoff shape,
/// compressed.
pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy { initial: Duration::from_millis(40), max: Duration::from_millis(200), attempts, jitter: 0.5 }
}

/// The default egress policy with IPv4 loopback allowed (`--egress-allow 127.0.0.0/8`): the
/// test peers listen on 127.0.0.1.
pub fn loopback_egress() -> EgressPolicy {
    EgressPolicy::new(&[], &[parse_range("127.0.0.0/8").unwrap()])
}

/// A deliverer with fast retries, graph links to `https://prom.example`, loopback allowed.
pub fn deliverer(mailer: Option<Mailer>, secrets: MapSecretStore, attempts: u32) -> Deliverer {
    deliverer_with(mailer, secrets, attempts, loopback_egress())
}

/// [`deliverer`] with its own egress policy.
pub fn deliverer_with(
    mailer: Option<Mailer>,
    secrets: MapSecretStore,
    attempts: u32,
    egress: EgressPolicy,
) -> Deliverer {
    Deliverer::new(DelivererConfig {
        mailer,
        webhooks: WebhookSender::new(Duration::from_secs(5), egress).unwrap(),
        secrets: Arc::new(secrets),
        render: RenderOptions { prometheus_url: Some("https://prom.example".into()), ui_url: None },
        retry: fast_retry(attempts),
    })
}

/// A free loopback port with nothing listening on it (yet).
pub fn unused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Collects everything tracing writes on this thread while the guard lives.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the capture as this thread's default subscriber (current-thread runtimes run
    /// spawned tasks on this thread too).
    pub fn install() -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let cap = LogCapture::default();
        let writer = cap.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(sub);
        (cap, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
