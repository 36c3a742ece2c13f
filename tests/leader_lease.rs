//! Leader election against the API emulator, with client-go's semantics: expiry judged on the
//! observer's own clock (a skewed holder clock cannot cause a takeover), writes only inside the
//! renew deadline, and the Lease released on shutdown.

use canaryd::daemon::leader::LeaderElector;
use jiff::{Timestamp, ToSpan};
use kube_emulator::Emulator;
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(2);

async fn pair() -> (kube_emulator::EmulatorHandle, LeaderElector, LeaderElector) {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: canaryd-system}\n").unwrap();
    let elector =
        |id: &str| LeaderElector::with_duration(emu.client(), "canaryd-system", "canaryd-leader", id, LEASE);
    let (a, b) = (elector("replica-a"), elector("replica-b"));
    (emu, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_with_a_slow_clock_keeps_the_lease() {
    let (_emu, a, b) = pair().await;
    // replica-a's node clock is a minute behind: every renewTime it writes looks long expired
    // to a replica that compares it with its own wall clock.
    let skewed = || Timestamp::now() - 60.seconds();
    assert!(a.try_lead(skewed()).await);
    let until = Instant::now() + LEASE * 3;
    while Instant::now() < until {
        assert!(a.try_lead(skewed()).await, "replica-a lost a lease it renews");
        assert!(!b.try_lead(Timestamp::now()).await, "replica-b took over from a live leader");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_replaced_after_a_whole_lease_seen_unchanged() {
    let (_emu, a, b) = pair().await;
    assert!(a.try_lead(Timestamp::now()).await);
    assert!(a.may_write());
    let silent_since = Instant::now();
    let taken = loop {
        if b.try_lead(Timestamp::now()).await {
            break Instant::now();
        }
        assert!(silent_since.elapsed() < LEASE * 4, "replica-b never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        taken - silent_since >= LEASE,
        "took over after {:?}, before a lease passed",
        taken - silent_since
    );
    // replica-a stopped writing before that: its renew deadline (2/3 of the lease) passed.
    assert!(!a.may_write());
    assert!(!a.try_lead(Timestamp::now()).await, "two leaders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_budget_runs_from_the_renewal_not_the_cycle() {
    let (_emu, a, _b) = pair().await;
    assert!(a.try_lead(Timestamp::now()).await);
    let budget = a.write_budget();
    assert!(budget <= LEASE * 2 / 3 && budget > Duration::ZERO, "{budget:?}");
    tokio::time::sleep(LEASE * 2 / 3).await;
    assert!(!a.may_write(), "still writing {:?} after the renewal", LEASE * 2 / 3);
    assert!(a.try_lead(Timestamp::now()).await, "renewing its own lease");
    assert!(a.may_write());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once() {
    let (emu, a, b) = pair().await;
    assert!(a.try_lead(Timestamp::now()).await);
    assert!(!b.try_lead(Timestamp::now()).await);
    a.release().await;
    assert!(!a.may_write());
    let lease = emu.get("coordination.k8s.io", "v1", "leases", "canaryd-system", "canaryd-leader").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert!(b.try_lead(Timestamp::now()).await, "the standby waited for a released lease");
}
