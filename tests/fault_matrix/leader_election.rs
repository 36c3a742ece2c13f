//! Two replicas of the real daemon with leader election, the leader killed and then frozen:
//! at most one writer at a time, and a change of writer waits out the lease.

use crate::real_daemon::{add_rollout, log_tail, process_cluster, spawn_daemon, spawn_monitor};
use crate::support::{canary_weight, check_steps, snap, vs, SuiteTally};
use canaryd::engine::Phase;
use kube_emulator::EmulatorHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Successful VirtualService PATCHes seen by a poller: (time seen, user).
fn spawn_write_log(
    emu: Arc<EmulatorHandle>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, String, String)>> {
    tokio::spawn(async move {
        let mut seen = 0;
        let mut out = Vec::new();
        loop {
            let log = emu.requests();
            let now = Instant::now();
            for r in &log[seen.min(log.len())..] {
                if r.method == "PATCH" && r.resource == "virtualservices" && (200..300).contains(&r.status) {
                    out.push((now, r.user.clone().unwrap_or_default(), r.namespace.clone()));
                }
            }
            seen = log.len();
            if stop.load(Ordering::SeqCst) {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lease_holder(emu: &EmulatorHandle) -> Option<String> {
    emu.get("coordination.k8s.io", "v1", "leases", "canaryd-system", "canaryd-leader")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// Two replicas with leader election. Rollout 1: the leader is SIGKILLed mid-rollout, the
/// follower takes over after the lease expires and finishes. Rollout 2: the new leader is
/// frozen (SIGSTOP) so its lease expires without it knowing, the other replica takes over and
/// finishes; the frozen one is thawed (SIGCONT) and must not write again. From the emulator's
/// request log: VirtualService PATCHes of the two users never interleave, and a change of
/// writer waits out a lease period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election() {
    const LEASE: Duration = Duration::from_secs(15);
    let mut tally = SuiteTally::start("leader");
    let (emu, prom, dir) = process_cluster().await;
    let (ka, kb) = (dir.path().join("kube-a"), dir.path().join("kube-b"));
    emu.write_kubeconfig_as(&ka, "replica-a").unwrap();
    emu.write_kubeconfig_as(&kb, "replica-b").unwrap();
    let log = dir.path().join("daemons.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = spawn_write_log(emu.clone(), stop.clone());
    let namespaces = vec!["lead1".to_string(), "lead2".to_string()];
    let monitor = spawn_monitor(emu.clone(), namespaces.clone(), stop.clone());

    let mut a = spawn_daemon(&ka, &prom.url, "replica-a", true, &log);
    wait_for("replica-a to lead", Duration::from_secs(20), || {
        lease_holder(&emu).as_deref() == Some("replica-a")
    })
    .await;
    let mut b = spawn_daemon(&kb, &prom.url, "replica-b", true, &log);
    add_rollout(&emu, &prom, "lead1", 0.003);
    wait_for("rollout 1 to start", Duration::from_secs(20), || {
        snap(&emu, "lead1").phase == Phase::Progressing
    })
    .await;
    a.kill9();
    let killed_at = Instant::now();
    wait_for("rollout 1 to finish under replica-b", Duration::from_secs(90), || {
        snap(&emu, "lead1").phase == Phase::Promoted
    })
    .await;
    let takeover1 = lease_holder(&emu);
    let a2 = spawn_daemon(&ka, &prom.url, "replica-a", true, &log);
    drop(a);
    let mut a = a2;

    add_rollout(&emu, &prom, "lead2", 0.003);
    wait_for("rollout 2 to start", Duration::from_secs(20), || {
        snap(&emu, "lead2").phase == Phase::Progressing
    })
    .await;
    b.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    wait_for("rollout 2 to finish under replica-a", Duration::from_secs(90), || {
        snap(&emu, "lead2").phase == Phase::Promoted
    })
    .await;
    b.signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let takeover2 = lease_holder(&emu);
    a.kill9();
    b.kill9();
    stop.store(true, Ordering::SeqCst);
    let writes = writes.await.unwrap();
    let seen = monitor.await.unwrap();

    let mut v = Vec::new();
    if takeover1.as_deref() != Some("replica-b") || takeover2.as_deref() != Some("replica-a") {
        v.push(format!("leader: holders after the handovers: {takeover1:?}, {takeover2:?}"));
    }
    // At most one writer at any time: writers form blocks, and a change of writer is at least
    // (nearly) a lease period after the previous writer's last write.
    let mut handovers = 0;
    let mut blocks: Vec<String> = Vec::new();
    for w in writes.windows(2) {
        let ((t1, u1, _), (t2, u2, _)) = (&w[0], &w[1]);
        if u1 != u2 {
            handovers += 1;
            let gap = t2.duration_since(*t1);
            if gap + Duration::from_secs(1) < LEASE {
                v.push(format!("leader: {u2} wrote {gap:?} after {u1}, within one lease period"));
            }
        }
    }
    for (_, u, _) in &writes {
        if blocks.last() != Some(u) {
            blocks.push(u.clone());
        }
    }
    if writes.iter().any(|(_, u, _)| u.is_empty()) {
        v.push("leader: a VirtualService PATCH without a user".into());
    }
    if blocks != ["replica-a", "replica-b", "replica-a"] {
        v.push(format!("leader: writers in order {blocks:?}, want a, b, a"));
    }
    for ns in &namespaces {
        let snaps = seen.get(ns).cloned().unwrap_or_default();
        v.extend(check_steps(&format!("leader/{ns}"), &snaps));
        if canary_weight(&vs(&emu, ns)) != 100 {
            v.push(format!("leader/{ns}: final weight {}", canary_weight(&vs(&emu, ns))));
        }
    }
    let _ = (killed_at, frozen_at);
    tally.record(
        format!(
            "leader/kill+lease-expiry     vs_patches={} handovers={handovers} writers={blocks:?} runtime={:.0}s",
            writes.len(),
            tally.elapsed().as_secs_f64()
        ),
        2,
        &v,
    );
    assert!(v.is_empty(), "{v:#?}\n--- daemon log tail ---\n{}", log_tail(&log));
}
