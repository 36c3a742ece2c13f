//! Commands against a cluster: `status`, `start`, `promote`, `abort`,
//! `pause`, `resume`, `retry`. They honour kubeconfig and in-cluster config like kubectl.

use super::plan::load;
use crate::daemon::virtual_service_resource;
use crate::engine::RolloutState;
use crate::istio::{command_annotation_key, RouteView};
use crate::policy::{from_resource, Policy, RolloutPolicy};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use std::path::Path;

/// Starts a runtime, connects to the cluster (kubeconfig or in-cluster) and runs `f`.
fn on_cluster<F, Fut>(f: F) -> i32
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    rt.block_on(async move {
        match kube::Client::try_default().await {
            Ok(client) => f(client).await,
            Err(e) => {
                eprintln!("error: cannot reach the cluster: {e}\n  set KUBECONFIG or run inside a cluster");
                2
            }
        }
    })
}

/// Connects to the cluster (kubeconfig or in-cluster), resolves `target` — a policy file, or
/// `namespace/name` of a RolloutPolicy resource — and runs `f`.
fn with_cluster<F, Fut>(target: &str, f: F) -> i32
where
    F: FnOnce(Policy, kube::Client) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let from_file = Path::new(target).exists() || target.ends_with(".yaml") || target.ends_with(".yml");
    let file_policy = if from_file {
        match load(Path::new(target)) {
            Ok(p) => Some(p),
            Err(c) => return c,
        }
    } else {
        None
    };
    on_cluster(move |client| async move {
        let policy = match file_policy {
            Some(p) => p,
            None => match resource_policy(target, &client).await {
                Ok(p) => p,
                Err((code, msg)) => {
                    eprintln!("error: {msg}");
                    return code;
                }
            },
        };
        f(policy, client).await
    })
}

/// A RolloutPolicy resource named `namespace/name`, validated like a file.
async fn resource_policy(target: &str, client: &kube::Client) -> Result<Policy, (i32, String)> {
    let Some((ns, name)) = target.split_once('/') else {
        return Err((
            2,
            format!("{target:?} is neither a policy file nor namespace/name of a RolloutPolicy"),
        ));
    };
    let api: Api<RolloutPolicy> = Api::namespaced(client.clone(), ns);
    let rp = api.get(name).await.map_err(|e| (2, format!("RolloutPolicy {target}: {e}")))?;
    from_resource(&rp).map_err(|d| (1, d.to_string()))
}

/// `canaryd status` without a policy: every RolloutPolicy's status, as a table.
pub(crate) fn status_all(json: bool) -> i32 {
    on_cluster(move |client| async move {
        let list = match Api::<RolloutPolicy>::all(client).list(&Default::default()).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot list RolloutPolicy resources: {e}");
                return 2;
            }
        };
        if json {
            let out: Vec<_> = list
                .items
                .iter()
                .map(|rp| serde_json::json!({"namespace": rp.metadata.namespace, "name": rp.metadata.name, "status": rp.status}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            return 0;
        }
        let mut rows = vec![vec![
            "NAMESPACE/NAME".to_string(),
            "PHASE".into(),
            "STEP".into(),
            "CANARY".into(),
            "VERDICT".into(),
        ]];
        for rp in &list.items {
            let st = rp.status.clone().unwrap_or_default();
            rows.push(vec![
                format!(
                    "{}/{}",
                    rp.metadata.namespace.clone().unwrap_or_default(),
                    rp.metadata.name.clone().unwrap_or_default()
                ),
                st.phase.unwrap_or_else(|| "-".into()),
                st.step.unwrap_or_else(|| "-".into()),
                st.canary_weight.map(|w| format!("{w}%")).unwrap_or_else(|| "-".into()),
                st.last_verdict.unwrap_or_else(|| "-".into()),
            ]);
        }
        print!("{}", crate::format::table(&rows));
        0
    })
}

async fn read_view(policy: &Policy, client: kube::Client) -> Result<(RouteView, RolloutState), String> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, policy.namespace(), &virtual_service_resource());
    let vs = api.get(&policy.spec().target.virtual_service).await.map_err(|e| e.to_string())?;
    let vs = serde_json::to_value(vs).map_err(|e| e.to_string())?;
    let view = RouteView::read(&vs, policy).map_err(|e| e.to_string())?;
    let state = match &view.state {
        Some(raw) => serde_json::from_str(raw).map_err(|e| e.to_string())?,
        None => RolloutState::default(),
    };
    Ok((view, state))
}

/// `canaryd status POLICY`: phase, step, weights and the last verdict's numbers.
pub fn status(target: &str, json: bool) -> i32 {
    with_cluster(target, |policy, client| async move {
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
            policy.spec().steps.len(),
            view.traffic.describe()
        );
        if let Some(r) = &state.revision {
            println!("revision   {r}");
        }
        if let Some(r) = &state.reason {
            println!("reason     {r}");
        }
        if let Some(cs) = policy.schedule() {
            let now = jiff::Timestamp::now();
            let tz = cs.time_zone().clone();
            let show =
                |t: jiff::Timestamp| t.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M %Z").to_string();
            match cs.window_at(now) {
                Some(w) => println!("window     open until {}", show(w.end)),
                None => {
                    if let Some(w) = cs.next_windows(now, 1).first() {
                        println!("window     closed; next opens {}", show(w.start));
                    }
                }
            }
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
pub fn command(target: &str, verb: &str, reason: Option<&str>) -> i32 {
    with_cluster(target, |policy, client| async move {
        let value = match reason {
            Some(r) => format!("{verb}: {r}"),
            None => verb.to_string(),
        };
        let patch =
            serde_json::json!({"metadata": {"annotations": {command_annotation_key(&policy): value}}});
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, policy.namespace(), &virtual_service_resource());
        match api
            .patch(&policy.spec().target.virtual_service, &PatchParams::default(), &Patch::Merge(&patch))
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
