//! API errors rendered as `metav1.Status`, with the reasons and messages a real apiserver uses.

use serde_json::{json, Value};

/// One field-level cause inside `Status.details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// Machine reason, e.g. `FieldValueTypeInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// Human message, e.g. `Invalid value: "string": ... must be of type integer`.
    pub message: String,
    /// Field path in the apiserver's notation, e.g. `spec.http[0].route[0].weight`.
    pub field: String,
}

/// An error answered to a client as a `metav1.Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `Conflict`, `Invalid`, `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any (name, group, kind, causes).
    pub details: Option<Value>,
}

/// Identifies the object an error is about, for `Status.details`.
pub(crate) struct Subject<'a> {
    pub group: &'a str,
    /// Plural resource name (the apiserver puts the resource, not the kind, into most details).
    pub resource: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    /// `virtualservices.networking.istio.io` or `configmaps` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({"name": self.name, "kind": self.resource});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    /// A bare error without details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 for a path that names no known resource.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
        )
    }

    pub(crate) fn not_found(s: &Subject) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(404, "NotFound", format!("{} \"{}\" not found", s.qualified(), s.name))
        }
    }

    pub(crate) fn already_exists(s: &Subject) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(409, "AlreadyExists", format!("{} \"{}\" already exists", s.qualified(), s.name))
        }
    }

    /// The optimistic-concurrency failure clients retry on.
    pub(crate) fn conflict(s: &Subject) -> Self {
        Self::conflict_msg(
            s,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn conflict_msg(s: &Subject, why: &str) -> Self {
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{}\": {why}", s.qualified(), s.name),
            )
        }
    }

    /// 422 with field causes; `kind` is the object's Kind (the apiserver names the kind here).
    pub(crate) fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let summary: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let summary =
            if summary.len() == 1 { summary[0].clone() } else { format!("[{}]", summary.join(", ")) };
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError {
            details: Some(details),
            ..Self::new(422, "Invalid", format!("{qualified} \"{name}\" is invalid: {summary}"))
        }
    }

    pub(crate) fn forbidden(s: &Subject, user: &str, verb: &str, namespace: &str) -> Self {
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        let head =
            if s.name.is_empty() { s.qualified() } else { format!("{} \"{}\"", s.qualified(), s.name) };
        ApiError {
            details: Some(s.details()),
            ..Self::new(
                403,
                "Forbidden",
                format!(
                    "{head} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
                    s.resource, s.group
                ),
            )
        }
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// A `Status` for a success that returns no object (e.g. a delete in some modes).
pub(crate) fn success_status(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}
