//! Watch streams: newline-delimited JSON events over a chunked response, resumable from a
//! resourceVersion, `410 Expired` as an `ERROR` event when that version was compacted away,
//! `sendInitialEvents` with the closing bookmark, and fault-driven drops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use super::faults::{FaultKind, RequestInfo};
use super::objects::as_version;
use super::resources::ResourceInfo;
use super::selectors::Selector;
use super::store::Event;
use super::{Inner, Shared};

/// A watch stream the emulator can cut (for `FaultKind::DropWatch`).
pub(crate) struct OpenWatch {
    pub id: u64,
    pub req: RequestInfo,
    pub drop: Option<oneshot::Sender<()>>,
}

/// Watch parameters from the query string.
pub(crate) struct WatchParams {
    pub resource_version: Option<String>,
    pub selector: Selector,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

fn expired(rv: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("too old resource version: {rv}"), "reason": "Expired", "code": 410})
}

/// Takes one `DropWatch` use for this request, if a fault matches it.
fn take_drop_fault(inner: &mut Inner, req: &RequestInfo) -> bool {
    let hit = inner
        .faults
        .iter_mut()
        .find(|f| f.kind == FaultKind::DropWatch && f.times > 0 && f.matcher.matches(req));
    match hit {
        Some(f) => {
            f.times -= 1;
            true
        }
        None => false,
    }
}

/// Starts a watch; the response streams until the timeout, a drop, or the client leaves.
pub(crate) fn start(shared: &Shared, info: &ResourceInfo, req: RequestInfo, p: WatchParams) -> Response {
    let (mut tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let namespace = (!req.namespace.is_empty()).then(|| req.namespace.clone());
    let name = req.name.clone();
    let filter = {
        let info = info.clone();
        move |e: &Event| {
            e.key.group == info.group
                && e.key.resource == info.plural
                && namespace.as_ref().is_none_or(|ns| *ns == e.key.namespace)
                && (name.is_empty() || name == e.key.name)
        }
    };
    let mut initial: Vec<Bytes> = vec![];
    let (sub, drop_rx, drop_now, id);
    let mut expired_now = false;
    {
        let mut inner = shared.lock().expect("emulator lock");
        let current = inner.store.current_rv();
        match p.resource_version.as_deref() {
            None | Some("") | Some("0") => {
                // No version: the current state as synthetic ADDED events, then changes.
                let ns = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
                for obj in inner.store.list(&info.group, &info.plural, ns) {
                    if (req.name.is_empty() || obj["metadata"]["name"] == json!(req.name))
                        && p.selector.matches(obj)
                    {
                        initial.push(line("ADDED", &as_version(info, obj.clone())));
                    }
                }
            }
            Some(rv) => {
                let since = rv.parse::<u64>().ok().and_then(|n| inner.store.events_since(n));
                match since {
                    None => {
                        initial.push(line("ERROR", &expired(rv)));
                        expired_now = true;
                    }
                    Some(events) => {
                        for e in events.iter().filter(|e| filter(e)) {
                            if p.selector.matches(&e.object) {
                                initial.push(line(e.kind.as_str(), &as_version(info, e.object.clone())));
                            }
                        }
                    }
                }
            }
        }
        if p.send_initial_events {
            let bookmark = json!({"kind": info.kind, "apiVersion": info.api_version(),
                "metadata": {"resourceVersion": current.to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}}});
            initial.push(line("BOOKMARK", &bookmark));
        }
        // A watch hit by a pending drop ends before delivering anything, so the client has to
        // resume from the version it already has.
        let dropped = !expired_now && take_drop_fault(&mut inner, &req);
        if dropped {
            initial.clear();
        }
        drop_now = expired_now || dropped;
        sub = inner.store.subscribe();
        let (dtx, drx) = oneshot::channel();
        inner.next_watch_id += 1;
        id = inner.next_watch_id;
        inner.open_watches.push(OpenWatch { id, req: req.clone(), drop: Some(dtx) });
        drop_rx = drx;
    }
    let info = info.clone();
    let selector = p.selector;
    let timeout = p.timeout.unwrap_or(Duration::from_secs(1800));
    let shared2 = shared.clone();
    tokio::spawn(async move {
        let _ = pump(&mut tx, initial, drop_now, sub, drop_rx, timeout, |e| {
            (filter(e) && selector.matches(&e.object))
                .then(|| line(e.kind.as_str(), &as_version(&info, e.object.clone())))
        })
        .await;
        shared2.lock().expect("emulator lock").open_watches.retain(|w| w.id != id);
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(rx))
        .expect("static response parts")
}

async fn pump(
    tx: &mut mpsc::Sender<Result<Bytes, Infallible>>,
    initial: Vec<Bytes>,
    drop_now: bool,
    mut sub: broadcast::Receiver<Arc<Event>>,
    mut drop_rx: oneshot::Receiver<()>,
    timeout: Duration,
    render: impl Fn(&Event) -> Option<Bytes>,
) -> Result<(), mpsc::SendError> {
    // Initial events may already contain changes also queued in `sub`; skip those by version.
    let mut seen = 0u64;
    for l in initial {
        if let Ok(v) = serde_json::from_slice::<Value>(&l) {
            if let Some(rv) = v["object"]["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok())
            {
                seen = seen.max(rv);
            }
        }
        tx.send(Ok(l)).await?;
    }
    if drop_now {
        return Ok(());
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            // A drop injected before a change must win over that change.
            biased;
            _ = &mut drop_rx => return Ok(()),
            ev = sub.recv() => match ev {
                Ok(e) if e.rv <= seen => {}
                Ok(e) => {
                    if let Some(l) = render(&e) {
                        tx.send(Ok(l)).await?;
                    }
                }
                // Lagging behind or shutdown: end the stream; clients re-watch from their version.
                Err(_) => return Ok(()),
            },
            _ = &mut deadline => return Ok(()),
        }
    }
}

/// Drops open watches matching a `DropWatch` fault, using up its `times`.
pub(crate) fn drop_open(inner: &mut Inner, fault: &mut super::faults::Fault) {
    for w in inner.open_watches.iter_mut() {
        if fault.times == 0 {
            break;
        }
        if fault.matcher.matches(&w.req) {
            if let Some(d) = w.drop.take() {
                let _ = d.send(());
                fault.times -= 1;
            }
        }
    }
}
