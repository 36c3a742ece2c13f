//! Fault injection and the request log.

use std::time::Duration;

use serde_json::json;

use super::error::ApiError;

/// Which requests a fault applies to. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matcher {
    /// A Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`) or an
    /// HTTP method (`GET`, `PUT`, ...).
    pub verb: Option<String>,
    /// Resource, with subresource if any: `virtualservices`, `deployments/scale`, `leases`.
    pub resource: Option<String>,
    /// Object name.
    pub name: Option<String>,
}

impl Matcher {
    /// Matches every resource request.
    pub fn any() -> Self {
        Matcher::default()
    }

    /// Restricts to a verb or HTTP method.
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.into());
        self
    }

    /// Restricts to a resource (`virtualservices`, `deployments/scale`).
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Restricts to one object name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn matches(&self, r: &RequestInfo) -> bool {
        self.verb.as_ref().is_none_or(|v| v == &r.verb || v.eq_ignore_ascii_case(&r.method))
            && self.resource.as_ref().is_none_or(|res| res == &r.resource_path())
            && self.name.as_ref().is_none_or(|n| n == &r.name)
    }
}

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status (500, 429, 503, 409, 504 ...) and a matching `Status`
    /// body, without touching the store.
    Status(u16),
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// End matching watch streams: open ones immediately when injected, later ones as soon as
    /// they start (before any event). Each dropped stream uses up one of `times`.
    DropWatch,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Which requests it hits.
    pub matcher: Matcher,
    /// What it does.
    pub kind: FaultKind,
    /// How many matching requests it hits before it is used up.
    pub times: usize,
}

impl Fault {
    /// A fault that hits the next matching request once.
    pub fn new(matcher: Matcher, kind: FaultKind) -> Self {
        Fault { matcher, kind, times: 1 }
    }

    /// Hits `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    /// Hits every matching request until cleared.
    pub fn always(self) -> Self {
        self.times(usize::MAX)
    }
}

/// The error body an injected status fault answers with.
pub(crate) fn injected_error(code: u16) -> ApiError {
    let (reason, message) = match code {
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        ),
        429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
        503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504 => ("Timeout", "the server was unable to return a response in the time allotted"),
        404 => ("NotFound", "the server could not find the requested resource"),
        403 => ("Forbidden", "forbidden (injected fault)"),
        _ => ("InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
    };
    let mut e = ApiError::new(code, reason, message);
    if code == 429 || code == 503 {
        e.details = Some(json!({"retryAfterSeconds": 1}));
    }
    e
}

/// What the router learned about a request; shared by faults, RBAC and the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub method: String,
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl RequestInfo {
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// One served request, as recorded by the emulator.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string (empty if none).
    pub query: String,
    /// `Content-Type` header, if sent.
    pub content_type: Option<String>,
    /// HTTP status answered (for watches: the status the stream started with).
    pub status: u16,
    /// The bearer token the request carried (the emulator uses tokens as user names).
    pub user: Option<String>,
    /// Kubernetes verb (`get`, `list`, `watch`, `patch`, ...); empty for non-resource paths.
    pub verb: String,
    /// Resource with subresource (`virtualservices`, `deployments/scale`); empty if none.
    pub resource: String,
    /// Namespace, empty if none.
    pub namespace: String,
    /// Object name, empty for collections.
    pub name: String,
}
