//! `canaryd demo`: the real daemon code (engine, judge, VirtualService writer, kube client) on
//! a laptop, against the in-process Kubernetes API emulator holding bookinfo's `reviews`
//! VirtualService, with a simulated mesh as the metrics source and time compressed.
//!
//! Release 1 (reviews v2, healthy) is promoted 10 → 30 → 60 → copy; release 2 (v3, with 5xx
//! errors or slow responses) is aborted and its weights return to stable. The abort alert is
//! written to a local mailbox file.

mod mesh;
mod view;

pub use mesh::{Behaviour, SimulatedMesh};

use crate::daemon::{Driver, Effects, Feedback};
use crate::engine::{Input, PendingAlert, Phase, RolloutState};
use crate::policy::{parse_policy, Gate, Policy};
use jiff::Timestamp;
use kube_emulator::Emulator;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// The default policy, embedded so the demo runs from a fresh clone.
pub const DEFAULT_POLICY: &str = include_str!("policy.yaml");
pub const FIXTURES: &str = include_str!("fixtures.yaml");
const V3_IMAGE: &str = "docker.io/istio/examples-bookinfo-reviews-v3:1.20.1";

/// What goes wrong with the second release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// 8% of the canary's requests fail with 5xx.
    Errors,
    /// The canary is three times slower with a heavy tail.
    Latency,
    /// No fault: both releases are promoted.
    None,
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A policy file to try instead of the embedded one (its target must be bookinfo `reviews`
    /// with subsets v1/v2, or the sandbox's fixtures will not match).
    pub policy: Option<PathBuf>,
    pub fault: Fault,
    /// Total requests per second on the route.
    pub rps: f64,
    /// Time compression: simulated seconds per real second.
    pub speed: f64,
    /// Where the alert emails are written (mbox format).
    pub mailbox: PathBuf,
    /// Print the live view (false in tests).
    pub verbose: bool,
    /// Serve the dashboard here while the demo runs (port 0: one the OS chooses).
    pub ui_addr: Option<std::net::SocketAddr>,
}

/// How the demo ended.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOutcome {
    pub first: Phase,
    pub second: Phase,
    /// The mailbox's content at the end.
    pub mailbox: String,
    /// The dashboard's URL, when it was served; it stays up while the runtime runs.
    pub dashboard_url: Option<String>,
}

/// Runs the demo; `Err` carries a message for the person at the terminal.
pub async fn run(opts: &DemoOptions) -> Result<DemoOutcome, String> {
    let (name, text) = match &opts.policy {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
        None => ("<embedded demo policy>".to_string(), DEFAULT_POLICY.to_string()),
    };
    let policy = parse_policy(&name, &text).map_err(|e| e.to_string())?;
    let emulator =
        Arc::new(Emulator::start().await.map_err(|e| format!("cannot start the API emulator: {e}"))?);
    emulator.apply_yaml(FIXTURES).map_err(|e| format!("cannot load the sandbox fixtures: {e}"))?;
    let _ = std::fs::remove_file(&opts.mailbox);
    let mesh = SimulatedMesh::new(emulator.clone(), policy.clone(), opts.rps, 7);
    match opts.fault {
        Fault::Errors => mesh.set_behaviour(V3_IMAGE, Behaviour { error_rate: 0.08, ..Behaviour::HEALTHY }),
        Fault::Latency => {
            mesh.set_behaviour(V3_IMAGE, Behaviour { median_ms: 90.0, sigma: 0.9, ..Behaviour::HEALTHY })
        }
        Fault::None => {}
    }
    let effects = MailboxEffects { path: opts.mailbox.clone() };
    let driver = Driver::new(emulator.client(), mesh, effects);
    let mut view = view::View::new(opts.verbose, &policy);
    view.banner(&policy, opts);
    let dashboard = crate::ui::Dashboard::default();
    let dashboard_url = match opts.ui_addr {
        None => None,
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("--ui-addr {addr}: {e}"))?;
            let url = format!("http://{}/", listener.local_addr().map_err(|e| e.to_string())?);
            view.note(&format!("dashboard: {url}"));
            // The simulated mesh answers for "now" only, so there is nothing to chart from.
            let why =
                "the demo's simulated mesh keeps no history to chart (canaryd run charts from Prometheus)";
            let ui = dashboard.clone();
            tokio::spawn(crate::ui::serve::<SimulatedMesh>(listener, ui, None, why));
            Some(url)
        }
    };

    let mut clock = Timestamp::now();
    view.release("release 1: reviews v2 (healthy)");
    let first = drive(&driver, &policy, &mut clock, opts, &mut view, &dashboard).await?;
    view.release(&format!(
        "release 2: reviews v3 ({})",
        match opts.fault {
            Fault::Errors => "returns 5xx for 8% of requests",
            Fault::Latency => "3x slower, heavy tail",
            Fault::None => "healthy",
        }
    ));
    release_v3(&emulator, &policy)?;
    let second = drive(&driver, &policy, &mut clock, opts, &mut view, &dashboard).await?;
    let mailbox = std::fs::read_to_string(&opts.mailbox).unwrap_or_default();
    view.finish(first, second, &opts.mailbox, &mailbox);
    Ok(DemoOutcome { first, second, mailbox, dashboard_url })
}

/// Runs reconcile cycles until the current release ends; returns its final phase.
async fn drive<E: Effects + 'static>(
    driver: &Driver<SimulatedMesh, E>,
    policy: &Policy,
    clock: &mut Timestamp,
    opts: &DemoOptions,
    view: &mut view::View,
    dashboard: &crate::ui::Dashboard,
) -> Result<Phase, String> {
    // The simulated mesh has no scrapes: `auto` looks at its 15 s fallback.
    let mut interval = crate::engine::cadence_secs(policy, &RolloutState::default());
    let mut revision: Option<String> = None;
    for _ in 0..2000 {
        let report = match driver.reconcile(policy, *clock).await {
            Ok(r) => r,
            Err(e) => {
                view.note(&format!("cycle failed, retrying: {e}"));
                advance(clock, interval, opts.speed).await;
                continue;
            }
        };
        // Compressed time: the gates' answers are due at the next look, so wait for them.
        driver.settle_gates().await;
        view.cycle(*clock, &report);
        dashboard.update(policy, &report.state, *clock);
        let s: &RolloutState = &report.state;
        interval = crate::engine::cadence_secs(policy, s);
        if revision.is_none() {
            revision = s.revision.clone();
        }
        let done = matches!(s.phase, Phase::Promoted | Phase::Aborted)
            && s.revision == revision
            && s.outbox.is_empty();
        if done {
            return Ok(s.phase);
        }
        advance(clock, interval, opts.speed).await;
    }
    Err("the release did not finish within 2000 cycles".into())
}

async fn advance(clock: &mut Timestamp, secs: i64, speed: f64) {
    *clock = Timestamp::from_second(clock.as_second() + secs).unwrap_or(*clock);
    let real = secs as f64 / speed.max(1.0);
    tokio::time::sleep(std::time::Duration::from_secs_f64(real)).await;
}

/// Puts v3 into the canary Deployment (and scales it back up after the copy promotion).
fn release_v3(emulator: &kube_emulator::EmulatorHandle, policy: &Policy) -> Result<(), String> {
    let ns = &policy.namespace();
    let name = policy.spec().target.canary.workload.clone().unwrap_or_else(|| "reviews-v2".into());
    let mut d = emulator.get("apps", "v1", "deployments", ns, &name).ok_or("canary Deployment missing")?;
    d["spec"]["template"]["spec"]["containers"][0]["image"] = V3_IMAGE.into();
    d["spec"]["replicas"] = 2.into();
    emulator.apply_value(d).map_err(|e| e.to_string())?;
    Ok(())
}

/// Alert delivery into a local mbox file: what the team would find in its inbox.
struct MailboxEffects {
    path: PathBuf,
}

impl Effects for MailboxEffects {
    async fn call_gate(&self, _: &Policy, gate: &Gate, _: &RolloutState) -> (bool, String) {
        (true, format!("demo sandbox opens gate {}", gate.name))
    }

    async fn deliver(&self, policy: &Policy, alert: &PendingAlert, _: &RolloutState, feedback: Feedback) {
        for channel in crate::alert::missing_channels(policy, alert) {
            match self.write_mail(policy, alert, &channel) {
                Ok(()) => feedback.push(&policy.key(), Input::AlertDelivered { id: alert.id, channel }),
                Err(e) => tracing::warn!(error = %e, "cannot write the demo mailbox"),
            }
        }
    }
}

impl MailboxEffects {
    fn write_mail(&self, policy: &Policy, alert: &PendingAlert, channel: &str) -> Result<(), String> {
        let to = policy.spec().alerts.email.as_ref().map(|e| e.to.join(", ")).unwrap_or_default();
        let mut text = format!(
            "From canaryd@localhost {}\nFrom: canaryd <canaryd@localhost>\nTo: {to}\nSubject: [canaryd] {}: {}\nX-Canaryd-Channel: {channel}\n\n{}\n",
            Timestamp::from_second(alert.at).map(|t| t.to_string()).unwrap_or_default(),
            policy.key(),
            format!("{:?}", alert.event).to_lowercase(),
            alert.headline
        );
        if let Some(v) = &alert.verdict {
            text.push_str(&format!("\nverdict: {}\n", v.verdict));
            for c in &v.checks {
                text.push_str(&format!(
                    "  {:<18} {:<12} {}\n",
                    c.check,
                    c.verdict.as_str(),
                    c.evidence.summary
                ));
            }
        }
        text.push_str(&format!("\nlook further: canaryd status {}\n\n", policy.key()));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| e.to_string())?;
        f.write_all(text.as_bytes()).map_err(|e| e.to_string())
    }
}
