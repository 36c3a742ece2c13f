//! A minimal SMTP server for tests: speaks EHLO/HELO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET,
//! NOOP and QUIT over real TCP on loopback, keeps every accepted message and every decoded
//! credential (so a test can prove the daemon authenticated with the password it was given, and
//! then that the password appears nowhere else), and decodes MIME bodies so tests can read what
//! a person would see.

use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One message the server accepted (250 after DATA).
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The raw message (headers and MIME body), dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Received {
    /// The value of the first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// Every leaf MIME part as `(content type, decoded text)`.
    pub fn parts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out);
        out
    }

    /// The decoded text of the first part whose content type starts with `ty`.
    pub fn part(&self, ty: &str) -> Option<String> {
        self.parts().into_iter().find(|(t, _)| t.starts_with(ty)).map(|(_, b)| b)
    }
}

fn collect_parts(entity: &str, out: &mut Vec<(String, String)>) {
    let (head, body) = entity.split_once("\r\n\r\n").unwrap_or((entity, ""));
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = |name: &str| {
        unfolded.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let ctype = header("Content-Type").unwrap_or_else(|| "text/plain".into());
    if ctype.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = ctype
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_string())
            .expect("multipart without boundary");
        let delim = format!("--{boundary}");
        for chunk in body.split(&delim).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            collect_parts(chunk.trim_start_matches("\r\n"), out);
        }
        return;
    }
    let cte = header("Content-Transfer-Encoding").unwrap_or_default().to_ascii_lowercase();
    let text = match cte.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(compact).expect("base64 body"))
                .expect("utf-8 body")
        }
        "quoted-printable" => decode_qp(body),
        _ => body.to_string(),
    };
    out.push((ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase(), text));
}

fn decode_qp(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 body")
}

/// A running SMTP server; stops when dropped.
pub struct SmtpServer {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<Received>>>,
    auth: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    /// Starts on a free loopback port.
    pub async fn start() -> SmtpServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await.expect("bind smtp")
    }

    /// Starts on `addr` (to bring a server "back" on the port a client already knows).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<SmtpServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let auth = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let shared = Shared { messages: messages.clone(), auth: auth.clone(), arrived: arrived.clone() };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = session(stream, shared).await;
                });
            }
        });
        Ok(SmtpServer { addr, messages, auth, arrived, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every AUTH exchange so far, decoded: `"<authzid> <user> <password>"` for PLAIN,
    /// `"<user> <password>"` for LOGIN.
    pub fn auth(&self) -> Vec<String> {
        self.auth.lock().unwrap().clone()
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived (panics after `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.arrived.notified();
                if self.messages.lock().unwrap().len() >= n {
                    return self.messages();
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} messages, got {}", self.messages().len()))
    }
}

#[derive(Clone)]
struct Shared {
    messages: Arc<Mutex<Vec<Received>>>,
    auth: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

fn unbase64(s: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads one line of a multi-line AUTH exchange.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    Ok(line.trim_end().to_string())
}

async fn session(stream: TcpStream, shared: Shared) -> std::io::Result<()> {
    let Shared { messages, auth, arrived } = shared;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 localhost canaryd-test ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-localhost\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("AUTH PLAIN") {
            let mut arg = cmd["AUTH PLAIN".len()..].trim().to_string();
            if arg.is_empty() {
                w.write_all(b"334 \r\n").await?;
                arg = next_line(&mut r).await?;
            }
            auth.lock().unwrap().push(unbase64(&arg).replace('\0', " "));
            b"235 2.7.0 Authentication successful\r\n"
        } else if upper.starts_with("AUTH LOGIN") {
            w.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let user = unbase64(&next_line(&mut r).await?);
            w.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let pass = unbase64(&next_line(&mut r).await?);
            auth.lock().unwrap().push(format!("{user} {pass}"));
            b"235 2.7.0 Authentication successful\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&cmd["MAIL FROM:".len()..]);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&cmd["RCPT TO:".len()..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                // Dot-unstuffing (RFC 5321 4.5.2).
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            messages.lock().unwrap().push(Received { from: from.clone(), to: to.clone(), data });
            arrived.notify_waiters();
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 command not implemented\r\n"
        };
        w.write_all(reply).await?;
    }
}

fn address(arg: &str) -> String {
    let a = arg.trim();
    let a = a.split_whitespace().next().unwrap_or(a);
    a.trim_start_matches('<').trim_end_matches('>').to_string()
}
