//! Email alerts against a real SMTP conversation over TCP (the test server in
//! `alert_support/smtp.rs`): what arrives, and exactly one message when the server is down at
//! first and comes back.

mod alert_support;

use alert_support::fixtures::{self, email_policy, engine_abort, loopback_mailer, unused_addr};
use canaryd::alert::{missing_channels, Mailer, MapSecretStore, SmtpConfig, SmtpTls};
use canaryd::engine::step;
use canaryd_testkit::smtp::SmtpServer;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn abort_email_arrives_with_the_evidence_numbers_in_text_and_html() {
    let smtp = SmtpServer::start().await;
    let p = email_policy();
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(Some(loopback_mailer(smtp.addr())), MapSecretStore::new(), 3);

    let results = d.spawn(p.clone(), alert.clone(), fixtures::facts(&p, &state)).await.unwrap();

    assert_eq!(results.len(), 1);
    assert!(results[0].delivered(), "{:?}", results[0].outcome);
    let msgs = smtp.wait_for(1, LIMIT).await;
    let m = &msgs[0];
    assert_eq!(m.from, "canaryd@example.com");
    assert_eq!(m.to, ["oncall@example.com", "release@example.com"]);
    let subject = m.header("Subject").unwrap();
    assert!(subject.contains("ABORTED shop/reviews revision 7f9c2d"), "{subject}");
    assert!(m.header("Message-ID").unwrap().contains(&format!("alert-{}-", alert.id)));

    let text = m.part("text/plain").expect("plain part");
    let html = m.part("text/html").expect("html part");
    let ev = &alert.verdict.as_ref().unwrap().decisive_check().unwrap().evidence;
    // The numbers the judge produced, as a person reads them.
    let canary = format!(
        "{:.2}% errors ({} of {} requests)",
        ev.canary_value.unwrap() * 100.0,
        ev.canary_bad,
        ev.canary_requests
    );
    let baseline = format!(
        "{:.2}% errors ({} of {} requests)",
        ev.baseline_value.unwrap() * 100.0,
        ev.baseline_bad,
        ev.baseline_requests
    );
    let effect = format!("{:+.2} pp", ev.effect.unwrap() * 100.0);
    for body in [&text, &html] {
        assert!(body.contains(&canary), "missing {canary:?} in\n{body}");
        assert!(body.contains(&baseline), "missing {baseline:?} in\n{body}");
        assert!(body.contains(&effect), "missing {effect:?} in\n{body}");
        assert!(body.contains("canaryd status shop/reviews"));
        assert!(body.contains("to 0% (all on stable)"), "{body}");
    }
    let step = format!("Step:      {}/3 (canary {}%)", state.step + 1, [10, 30, 60][state.step]);
    assert!(text.contains(&step), "missing {step:?} in\n{text}");
    assert!(text.contains("Prometheus: https://prom.example/graph?g0.expr="), "{text}");
    assert!(html.contains("<a href=\"https://prom.example/graph?"), "{html}");
}

#[tokio::test]
async fn smtp_down_at_first_then_back_delivers_exactly_one_message() {
    let addr = unused_addr();
    let p = email_policy();
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(Some(loopback_mailer(addr)), MapSecretStore::new(), 200);
    let metrics = d.metrics();

    let task = d.spawn(p.clone(), alert.clone(), fixtures::facts(&p, &state));
    // Bring the server up only once a delivery attempt has failed against the closed port.
    tokio::time::timeout(LIMIT, async {
        while metrics.channel("email").failed_attempts == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a failed attempt while the server is down");
    // A spawn while the first is still retrying must not start a second delivery.
    let again = d.spawn(p.clone(), alert.clone(), fixtures::facts(&p, &state)).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    let smtp = SmtpServer::start_on(addr).await.expect("rebind the port");

    let results = task.await.unwrap();
    assert!(results[0].delivered(), "{:?}", results[0].outcome);
    assert!(results[0].attempts >= 2);
    let counts = metrics.channel("email");
    assert_eq!(counts.delivered, 1);
    assert!(counts.failed_attempts >= 1);
    assert_eq!(counts.gave_up, 0);

    // Feed the delivery back: the engine drops the alert from its outbox, so a restarted
    // daemon owes nothing and sends nothing more.
    let input = results[0].to_input().unwrap();
    let after = step(&p, &state, input, jiff::Timestamp::from_second(alert.at + 5).unwrap()).state;
    assert!(after.outbox.is_empty(), "{:?}", after.outbox);
    assert!(missing_channels(&p, &{
        let mut a = alert.clone();
        a.delivered.push("email".into());
        a
    })
    .is_empty());
    // The delivery task has ended, so no retry is left that could send a second copy.
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn starttls_is_required_not_opportunistic() {
    // The test server does not offer STARTTLS: a StartTls mailer must refuse to send in clear.
    let smtp = SmtpServer::start().await;
    let mut cfg = SmtpConfig::new("localhost", "canaryd@example.com");
    cfg.port = smtp.addr().port();
    cfg.tls = SmtpTls::StartTls;
    cfg.timeout = Duration::from_secs(5);
    let mailer = Mailer::new(&cfg).unwrap();
    let msg = canaryd::alert::AlertMessage { subject: "s".into(), text: "t".into(), html: "<p>h</p>".into() };
    let err = mailer.send(&["a@example.com".to_string()], &msg, None).await.unwrap_err();
    assert!(err.to_string().contains("STARTTLS is not supported"), "{err}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_against_a_plaintext_server_fails_without_sending() {
    let smtp = SmtpServer::start().await;
    let mut cfg = SmtpConfig::new("localhost", "canaryd@example.com");
    cfg.port = smtp.addr().port();
    cfg.tls = SmtpTls::Implicit;
    cfg.timeout = Duration::from_secs(5);
    let msg = canaryd::alert::AlertMessage { subject: "s".into(), text: "t".into(), html: "h".into() };
    let err = Mailer::new(&cfg).unwrap().send(&["a@example.com".to_string()], &msg, None).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn no_smtp_configuration_is_a_clear_non_retried_failure() {
    let p = email_policy();
    let (state, alert) = engine_abort(&p);
    let d = fixtures::deliverer(None, MapSecretStore::new(), 5);
    let r = d.spawn(p.clone(), alert, fixtures::facts(&p, &state)).await.unwrap();
    assert_eq!(r[0].attempts, 1);
    assert_eq!(
        r[0].outcome.as_ref().unwrap_err().to_string(),
        "no SMTP server is configured for email alerts"
    );
    assert_eq!(d.metrics().channel("email").gave_up, 1);
}
