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
        ui_addr: None,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_dashboard_with_both_releases_in_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions { ui_addr: Some("127.0.0.1:0".parse().unwrap()), ..options(Fault::Errors, &dir) };
    let outcome = run(&opts).await.unwrap();
    let url = outcome.dashboard_url.expect("the demo prints its dashboard URL");
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}rollouts/bookinfo/reviews"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["rollout"]["phase"], "Aborted", "{page:#}");
    let outcomes: Vec<&str> =
        page["history"].as_array().unwrap().iter().filter_map(|h| h["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["Aborted", "Promoted"]);
    assert!(page["chart"]["unavailable"].as_str().unwrap().contains("simulated mesh"));
    let html = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(html.contains(">reviews</a>") && html.contains("Aborted"), "{html}");
}
