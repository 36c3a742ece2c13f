//! Webhook alerts against a real HTTP server on loopback (axum): the signed generic JSON, Slack
//! and Teams bodies, retries after a 500, and webhook URLs kept out of logs and errors.

mod alert_support;

use alert_support::fixtures::{self, all_channels_policy, engine_abort, policy, LogCapture};
use canaryd::alert::MapSecretStore;
use canaryd_testkit::http::HttpServer;
use canaryd_testkit::smtp::SmtpServer;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);
const SIGNING_KEY: &str = "s3cret-signing-key";

fn hooks(http: &HttpServer) -> MapSecretStore {
    MapSecretStore::new()
        .with("shop", "hooks", "json", http.url("/hooks/json/T0KEN-json"))
        .with("shop", "hooks", "slack", http.url("/hooks/slack/T0KEN-slack"))
        .with("shop", "hooks", "teams", http.url("/hooks/teams/T0KEN-teams"))
        .with("shop", "hooks", "signing", format!("{SIGNING_KEY}\n"))
}

fn verify(body: &[u8], header: &str) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(body);
    let Some(hex_sig) = header.strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    mac.verify_slice(&sig).is_ok()
}

#[tokio::test]
async fn abort_reaches_email_and_every_webhook_once_with_the_evidence() {
    let http = HttpServer::start().await;
    let smtp = SmtpServer::start().await;
    let p = all_channels_policy();
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(Some(fixtures::loopback_mailer(smtp.addr())), hooks(&http), 3);

    let results = d.spawn(p.clone(), alert.clone(), fixtures::facts(&p, &state)).await.unwrap();

    let mut delivered: Vec<_> =
        results.iter().filter(|r| r.delivered()).map(|r| r.channel.as_str()).collect();
    delivered.sort();
    assert_eq!(delivered, ["email", "ops-json", "ops-slack", "ops-teams"], "{results:?}");
    assert_eq!(smtp.messages().len(), 1);
    let ev = &alert.verdict.as_ref().unwrap().decisive_check().unwrap().evidence;

    // Generic JSON: signed, versioned, with the judge's numbers.
    let json = http.requests_to("/hooks/json/T0KEN-json");
    assert_eq!(json.len(), 1);
    let sig = json[0].header("x-canaryd-signature").expect("signature header");
    assert!(verify(&json[0].body, &sig), "bad signature {sig}");
    assert!(!verify(b"tampered", &sig));
    let v = json[0].json();
    assert_eq!(v["version"], "canaryd.io/alert/v1");
    assert_eq!(v["event"], "abort");
    assert_eq!(v["policy"], "reviews");
    assert_eq!(v["namespace"], "shop");
    assert_eq!(v["revision"], "7f9c2d");
    assert_eq!(v["headline"], alert.headline.as_str());
    assert_eq!(v["traffic"]["canaryWeight"], 0);
    let check = &v["verdict"]["checks"][0];
    assert_eq!(check["check"], "success-rate");
    assert_eq!(check["evidence"]["canaryBad"], ev.canary_bad);
    assert_eq!(check["evidence"]["canaryRequests"], ev.canary_requests);
    assert_eq!(check["evidence"]["baselineBad"], ev.baseline_bad);
    assert_eq!(check["evidence"]["effect"], ev.effect.unwrap());
    assert_eq!(json[0].header("content-type").as_deref(), Some("application/json"));

    // Slack and Teams: valid JSON carrying the headline; unsigned (no signing secret).
    let slack = http.requests_to("/hooks/slack/T0KEN-slack");
    assert_eq!(slack.len(), 1);
    assert!(slack[0].header("x-canaryd-signature").is_none());
    let s = slack[0].json();
    assert!(s["text"].as_str().unwrap().contains(&alert.headline), "{s}");
    assert!(s["blocks"].as_array().unwrap().len() >= 3);
    let teams = http.requests_to("/hooks/teams/T0KEN-teams");
    assert_eq!(teams.len(), 1);
    let t = teams[0].json();
    assert_eq!(t["type"], "message");
    assert_eq!(t["attachments"][0]["content"]["body"][1]["text"], alert.headline.as_str());
    assert!(t.to_string().contains(&format!("{:+.2} pp", ev.effect.unwrap() * 100.0)));
}

#[tokio::test]
async fn a_500_is_retried_until_the_hook_accepts_and_it_arrives_once_accepted() {
    let http = HttpServer::start().await;
    http.respond_with(&[(500, "boom"), (502, "bad gateway")]);
    let p = policy("    webhooks:\n      - {name: ops, urlFrom: {secretKeyRef: {name: hooks, key: json}}}\n");
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(None, hooks(&http), 10);

    let r = d.spawn(p.clone(), alert, fixtures::facts(&p, &state)).await.unwrap();

    assert!(r[0].delivered(), "{:?}", r[0].outcome);
    assert_eq!(r[0].attempts, 3);
    let statuses: Vec<u16> = http.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 502, 200]);
    let m = d.metrics().channel("ops");
    assert_eq!((m.attempts, m.failed_attempts, m.delivered, m.gave_up), (3, 2, 1, 0));
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let http = HttpServer::start().await;
    http.respond_with(&[(404, "no such hook")]);
    let p = policy("    webhooks:\n      - {name: ops, urlFrom: {secretKeyRef: {name: hooks, key: json}}}\n");
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(None, hooks(&http), 10);
    let r = d.spawn(p.clone(), alert, fixtures::facts(&p, &state)).await.unwrap();
    assert_eq!(r[0].attempts, 1);
    assert_eq!(r[0].outcome.as_ref().unwrap_err().to_string(), "webhook: HTTP status 404");
    assert_eq!(http.requests().len(), 1);
}

#[tokio::test]
async fn failures_name_the_channel_never_the_url_in_logs_or_errors() {
    let (logs, _guard) = LogCapture::install();
    let http = HttpServer::start().await;
    http.respond_with(&[(500, "boom"); 3]);
    let refused = format!("http://{}/hooks/T0KEN-refused", fixtures::unused_addr());
    let store = hooks(&http).with("shop", "hooks", "refused", refused.clone());
    let p = policy(
        "    webhooks:\n      - {name: ops-500, urlFrom: {secretKeyRef: {name: hooks, key: json}}, signingSecretFrom: {secretKeyRef: {name: hooks, key: signing}}}\n      - {name: ops-refused, urlFrom: {secretKeyRef: {name: hooks, key: refused}}}\n      - {name: ops-missing, urlFrom: {secretKeyRef: {name: hooks, key: nope}}}\n",
    );
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(None, store, 3);

    let results = d.spawn(p.clone(), alert, fixtures::facts(&p, &state)).await.unwrap();

    assert!(results.iter().all(|r| !r.delivered()));
    let errors: Vec<String> = results.iter().map(|r| r.outcome.as_ref().unwrap_err().to_string()).collect();
    // Every crate's logs at TRACE: the URL's secret path and the signing key never appear.
    let text = logs.text();
    for secret in ["T0KEN", SIGNING_KEY] {
        assert!(!text.contains(secret), "{secret:?} leaked into logs:\n{text}");
    }
    // canaryd's own lines and errors do not even name the host (hyper's TRACE lines do:
    // the daemon's default filter keeps dependencies at info).
    let ours: String = text.lines().filter(|l| l.contains("canaryd::")).collect::<Vec<_>>().join("\n");
    for secret in ["T0KEN", "127.0.0.1", "http://", SIGNING_KEY] {
        assert!(!ours.contains(secret), "{secret:?} leaked into canaryd logs:\n{ours}");
        for e in &errors {
            assert!(!e.contains(secret), "{secret:?} leaked into {e:?}");
        }
    }
    for channel in ["ops-500", "ops-refused", "ops-missing"] {
        assert!(ours.contains(&format!("channel=\"{channel}\"")), "no log names {channel}:\n{ours}");
    }
    assert!(errors.iter().any(|e| e.starts_with("webhook: connection failed")), "{errors:?}");
    assert!(errors.iter().any(|e| e == "url: secret shop/hooks has no key nope"), "{errors:?}");
    assert_eq!(d.metrics().channel("ops-500").gave_up, 1);
    assert_eq!(d.metrics().channel("ops-refused").failed_attempts, 3);
}

#[tokio::test]
async fn channels_already_delivered_are_not_sent_again() {
    let http = HttpServer::start().await;
    let p = all_channels_policy();
    let (state, mut alert) = engine_abort(&p);
    alert.delivered = vec!["email".into(), "ops-json".into(), "ops-teams".into()];
    let d = fixtures::deliverer(None, hooks(&http), 3);
    let r = d.spawn(p.clone(), alert, fixtures::facts(&p, &state)).await.unwrap();
    let channels: Vec<_> = r.iter().map(|r| r.channel.as_str()).collect();
    assert_eq!(channels, ["ops-slack"]);
    let _ = http.wait_for(1, LIMIT).await;
    assert_eq!(http.requests().len(), 1);
}

/// A cycle that read the state before the last acknowledgement was written still lists the
/// alert as owed: the deliverer must not send it again (a race the daemon hits under load).
#[tokio::test]
async fn an_alert_delivered_by_this_process_is_not_sent_again_before_its_ack_is_written() {
    let http = HttpServer::start().await;
    let p = all_channels_policy().revise(|s| s.alerts.email = None).unwrap();
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(None, hooks(&http), 3);
    let first = d.spawn(p.clone(), alert.clone(), fixtures::facts(&p, &state)).await.unwrap();
    assert!(first.iter().all(|r| r.delivered()), "{first:?}");
    let sent = http.requests().len();
    assert_eq!(sent, 3, "one request per webhook");
    // The same owed alert again, as a stale cycle would hand it over.
    let again = d.spawn(p.clone(), alert.clone(), fixtures::facts(&p, &state)).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(http.requests().len(), sent, "nothing sent twice");
}
