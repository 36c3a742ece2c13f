//! An HTTP server on loopback (axum) that records every request and answers from a script:
//! a queue of status codes (200 once the queue is empty); paths under `/slow` answer after
//! 3 seconds, for timeout tests.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the server answered with.
    pub status: u16,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

#[derive(Clone, Default)]
struct Shared {
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<(u16, String)>>>,
    arrived: Arc<Notify>,
}

/// A running server; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if uri.path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (status, text) = s.script.lock().unwrap().pop_front().unwrap_or((200, "ok".into()));
    s.requests.lock().unwrap().push(Recorded { path: uri.path().to_string(), headers, body, status });
    s.arrived.notify_waiters();
    (StatusCode::from_u16(status).unwrap(), text)
}

impl HttpServer {
    /// Starts on a free loopback port.
    pub async fn start() -> HttpServer {
        let shared = Shared::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpServer { addr, shared, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with these statuses and bodies, in order.
    pub fn respond_with(&self, answers: &[(u16, &str)]) {
        self.shared.script.lock().unwrap().extend(answers.iter().map(|(s, b)| (*s, b.to_string())));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until at least `n` requests arrived (panics after `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.shared.arrived.notified();
                if self.shared.requests.lock().unwrap().len() >= n {
                    return self.requests();
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} requests, got {}", self.requests().len()))
    }
}
