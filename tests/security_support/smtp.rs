//! An SMTP server on loopback that advertises `AUTH PLAIN LOGIN`, accepts any credentials and
//! records them (decoded), so a test can prove the daemon authenticated with the password it
//! was given — and then check that the password appears nowhere else.

use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What one session sent: the decoded AUTH exchange and every accepted message (raw DATA).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub auth: Vec<String>,
    pub messages: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<Session>>>);

/// A running server; stops when dropped.
pub struct AuthSmtpServer {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthSmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64(s: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn session(stream: TcpStream, shared: Shared) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let idx = {
        let mut s = shared.0.lock().unwrap();
        s.push(Session::default());
        s.len() - 1
    };
    let record = |f: &dyn Fn(&mut Session)| f(&mut shared.0.lock().unwrap()[idx]);
    w.write_all(b"220 localhost ESMTP test\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 localhost\r\n").await?;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = line[10..].trim().to_string();
            let arg = if arg.is_empty() {
                w.write_all(b"334 \r\n").await?;
                lines.next_line().await?.unwrap_or_default()
            } else {
                arg
            };
            let decoded = b64(&arg).replace('\0', " ");
            record(&|s| s.auth.push(decoded.clone()));
            w.write_all(b"235 2.7.0 Authentication successful\r\n").await?;
        } else if upper.starts_with("AUTH LOGIN") {
            w.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let user = b64(&lines.next_line().await?.unwrap_or_default());
            w.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let pass = b64(&lines.next_line().await?.unwrap_or_default());
            record(&|s| s.auth.push(format!("{user} {pass}")));
            w.write_all(b"235 2.7.0 Authentication successful\r\n").await?;
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 end with .\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            record(&|s| s.messages.push(data.clone()));
            w.write_all(b"250 2.0.0 queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            // MAIL, RCPT, RSET, NOOP
            w.write_all(b"250 ok\r\n").await?;
        }
    }
    Ok(())
}

impl AuthSmtpServer {
    pub async fn start() -> AuthSmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(stream, s).await;
                });
            }
        });
        AuthSmtpServer { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.shared.0.lock().unwrap().clone()
    }

    /// Every accepted message, raw.
    pub fn messages(&self) -> Vec<String> {
        self.sessions().into_iter().flat_map(|s| s.messages).collect()
    }
}
