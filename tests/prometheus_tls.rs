//! TLS to Prometheus: verified by default, a private CA via `ca_file`, and the opt-in
//! `insecure_skip_verify`. The peer is a real TLS server (`openssl s_server -www`, from the
//! Debian `openssl` package) with a certificate for 127.0.0.1 signed by a throwaway CA.
//!
//! `s_server -www` answers with an HTML status page, so a completed handshake shows up as a
//! `Decode` error (not JSON) and a refused one as `Unreachable`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canaryd::prometheus::{PrometheusClient, PrometheusConfig, QueryError};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl not runnable ({e}); install Debian's `openssl` package"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Kills `openssl s_server` when the test ends, pass or fail.
struct TlsServer(Child, u16);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA, a server certificate for IP 127.0.0.1 signed by it, and `s_server` on a free port.
fn start_tls_server(dir: &Path) -> TlsServer {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=canaryd test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-cert", "server.pem", "-key", "server.key"])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = TlsServer(child, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn config(port: u16) -> PrometheusConfig {
    let mut c = PrometheusConfig::new(format!("https://127.0.0.1:{port}"));
    c.retries = 0;
    c
}

fn at() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_735_689_600).unwrap()
}

#[tokio::test]
async fn untrusted_certificates_are_refused_by_default_and_accepted_with_their_ca_or_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls_server(dir.path());

    let refused = PrometheusClient::new(config(server.1)).unwrap().query_scalar("up", at()).await;
    match &refused {
        Err(QueryError::Unreachable { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("an unknown CA must fail the handshake, got {other:?}"),
    }

    let mut with_ca = config(server.1);
    with_ca.ca_file = Some(dir.path().join("ca.pem"));
    let got = PrometheusClient::new(with_ca).unwrap().query_scalar("up", at()).await;
    assert!(matches!(got, Err(QueryError::Decode(_))), "handshake with the CA should succeed: {got:?}");

    let mut insecure = config(server.1);
    insecure.insecure_skip_verify = true;
    let got = PrometheusClient::new(insecure).unwrap().query_scalar("up", at()).await;
    assert!(matches!(got, Err(QueryError::Decode(_))), "insecure_skip_verify should connect: {got:?}");
}
