//! `canaryd demo` end to end, non-interactively: the real reconcile loop against the API
//! emulator promotes the healthy release and aborts the faulty one, and the abort alert with
//! its evidence lands in the mailbox.

use canaryd::demo::{run, DemoOptions, Fault};
use canaryd::engine::Phase;

fn options(fault: Fault, dir: &tempfile::TempDir) -> DemoOptions {
    DemoOptions {
        policy: None,
        fault,
        rps: 100.0,
        speed: 1_000_000.0,
        mailbox: dir.path().join("demo.mbox"),
        verbose: false,
    }
}

#[tokio::test]
async fn demo_promotes_v2_and_aborts_v3_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(&options(Fault::Errors, &dir)).await.unwrap();
    assert_eq!(outcome.first, Phase::Promoted);
    assert_eq!(outcome.second, Phase::Aborted);
    assert!(outcome.mailbox.contains("Subject: [canaryd] bookinfo/reviews: abort"), "{}", outcome.mailbox);
    assert!(outcome.mailbox.contains("errors vs baseline"), "the abort alert carries the numbers");
    assert_eq!(
        outcome.mailbox.matches("Subject: [canaryd] bookinfo/reviews: abort").count(),
        1,
        "exactly one abort email"
    );
}

#[tokio::test]
async fn demo_aborts_a_slow_release() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(&options(Fault::Latency, &dir)).await.unwrap();
    assert_eq!(outcome.first, Phase::Promoted);
    assert_eq!(outcome.second, Phase::Aborted);
    assert!(outcome.mailbox.contains("latency"), "{}", outcome.mailbox);
}
