//! Commands against a cluster: `run` (the daemon) and `status`, `start`, `promote`, `abort`,
//! `pause`, `resume`, `retry`. They honour kubeconfig and in-cluster config like kubectl.

use super::plan::load;
use super::validate::collect;
use crate::daemon::{virtual_service_resource, Driver, NoEffects};
use crate::engine::RolloutState;
use crate::istio::{command_annotation_key, RouteView};
use crate::policy::{parse_policy, Policy};
use crate::prometheus::{PrometheusClient, PrometheusConfig};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use std::collections::HashMap;
use std::path::Path;

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        2
    })
}

async fn client() -> Result<kube::Client, i32> {
    kube::Client::try_default().await.map_err(|e| {
        eprintln!("error: cannot reach the cluster: {e}\n  set KUBECONFIG or run inside a cluster");
        2
    })
}

/// Loads every valid policy under `dir`, logging the located errors of invalid ones (which are
/// never acted on).
fn load_dir(dir: &Path) -> Vec<Policy> {
    let files = collect(&[dir.to_path_buf()]).unwrap_or_default();
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(&f).map_err(|e| e.to_string()).map(|t| parse_policy(&name, &t)) {
            Ok(Ok(p)) => out.push(p),
            Ok(Err(d)) => tracing::error!(file = %name, "invalid policy, not acted on:\n{d}"),
            Err(e) => tracing::error!(file = %name, error = %e, "cannot read policy"),
        }
    }
    out
}

/// `canaryd run`: reconcile every policy in `dir` at its interval until SIGTERM / Ctrl-C.
pub fn run(dir: &Path, prometheus: &str, token_file: Option<&Path>, once: bool) -> i32 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(async {
        let mut config = PrometheusConfig::new(prometheus);
        if let Some(path) = token_file {
            match std::fs::read_to_string(path) {
                Ok(t) => config.bearer_token = Some(crate::prometheus::Secret::new(t.trim())),
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", path.display());
                    return 2;
                }
            }
        }
        let metrics = match PrometheusClient::new(config) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: Prometheus: {e}");
                return 2;
            }
        };
        let client = match client().await {
            Ok(c) => c,
            Err(c) => return c,
        };
        let driver = Driver::new(client, metrics, NoEffects);
        let mut next_due: HashMap<String, i64> = HashMap::new();
        tracing::info!(policies = %dir.display(), "canaryd running");
        loop {
            let now = jiff::Timestamp::now();
            // Every due policy in one cycle: one grouped Prometheus query set for all of them.
            let due: Vec<Policy> = load_dir(dir)
                .into_iter()
                .filter(|p| next_due.get(&p.key()).is_none_or(|t| *t <= now.as_second()))
                .collect();
            for (policy, result) in due.iter().zip(driver.cycle(&due, now).await) {
                let key = policy.key();
                match result {
                    Ok(r) => {
                        let interval = policy.spec.analysis.interval.as_secs_i64();
                        next_due.insert(key.clone(), now.as_second() + interval.min(30));
                        if let Some(d) = r.verdict_to_write {
                            tracing::debug!(policy = %key, micros = d.as_micros() as u64, "verdict to write");
                        }
                    }
                    Err(e) => tracing::warn!(policy = %key, error = %e, "reconcile failed; state unchanged, retrying"),
                }
            }
            if once {
                return 0;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = shutdown_signal() => {
                    tracing::info!("shutting down between cycles: every decision is already written");
                    return 0;
                }
            }
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn read_view(policy: &Policy, client: kube::Client) -> Result<(RouteView, RolloutState), String> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, &policy.namespace, &virtual_service_resource());
    let vs = api.get(&policy.spec.target.virtual_service).await.map_err(|e| e.to_string())?;
    let vs = serde_json::to_value(vs).map_err(|e| e.to_string())?;
    let view = RouteView::read(&vs, policy).map_err(|e| e.to_string())?;
    let state = match &view.state {
        Some(raw) => serde_json::from_str(raw).map_err(|e| e.to_string())?,
        None => RolloutState::default(),
    };
    Ok((view, state))
}

/// `canaryd status POLICY`: phase, step, weights and the last verdict's numbers.
pub fn status(policy: &Path, json: bool) -> i32 {
    let policy = match load(policy) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(async {
        let client = match client().await {
            Ok(c) => c,
            Err(c) => return c,
        };
        let (view, state) = match read_view(&policy, client).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {}: {e}", policy.key());
                return 2;
            }
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&state).unwrap_or_default());
            return 0;
        }
        println!(
            "{}  {}  step {}/{}  canary {}",
            policy.key(),
            state.phase.as_str(),
            state.step + 1,
            policy.spec.steps.len(),
            view.traffic.describe()
        );
        if let Some(r) = &state.revision {
            println!("revision   {r}");
        }
        if let Some(r) = &state.reason {
            println!("reason     {r}");
        }
        if let Some(v) = &state.last_verdict {
            println!("verdict    {}", v.verdict);
            for c in &v.checks {
                println!("  {:<20} {:<12} {}", c.check, c.verdict.as_str(), c.evidence.summary);
            }
        }
        if !state.outbox.is_empty() {
            println!("alerts     {} awaiting delivery", state.outbox.len());
        }
        0
    })
}

/// `canaryd start|promote|abort|pause|resume|retry POLICY`: leaves the command on the
/// VirtualService for the daemon, which applies and clears it in its next write.
pub fn command(policy: &Path, verb: &str, reason: Option<&str>) -> i32 {
    let policy = match load(policy) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(async {
        let client = match client().await {
            Ok(c) => c,
            Err(c) => return c,
        };
        let value = match reason {
            Some(r) => format!("{verb}: {r}"),
            None => verb.to_string(),
        };
        let patch =
            serde_json::json!({"metadata": {"annotations": {command_annotation_key(&policy): value}}});
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, &policy.namespace, &virtual_service_resource());
        match api
            .patch(&policy.spec.target.virtual_service, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                println!("{verb} requested for {}; the daemon applies it in its next cycle", policy.key());
                0
            }
            Err(e) => {
                eprintln!("error: {}: {e}", policy.key());
                2
            }
        }
    })
}
