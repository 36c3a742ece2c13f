//! Create, update, patch and delete against the store, with the apiserver's admission rules:
//! system metadata, resourceVersion preconditions, status subresource semantics, generation,
//! schema validation and pruning, managed fields, CRD registration.

use serde_json::{json, Value};

use super::deployments;
use super::error::{ApiError, Cause, Subject};
use super::managed_fields;
use super::patch::{self, PatchKind};
use super::resources::ResourceInfo;
use super::schema;
use super::store::Key;
use super::validation;
use super::Inner;

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and warn (the server default).
    #[default]
    Warn,
    /// Reject unknown fields with 400.
    Strict,
}

/// Per-request write options from the query string.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `force=true` (server-side apply).
    pub force: bool,
    /// A `/scale` write carried out on the main object: mutating admission registered for the
    /// resource does not see it (as on a real API server).
    pub via_scale: bool,
}

/// A successful write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as it would be, on dry run).
    pub object: Value,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
    /// Whether the object was created (201) rather than changed (200).
    pub created: bool,
}

/// Where a write goes.
pub struct Target<'a> {
    /// The resource version/endpoint addressed.
    pub info: &'a ResourceInfo,
    /// Namespace (empty for cluster-scoped).
    pub namespace: &'a str,
    /// Name from the URL (empty for create on the collection).
    pub name: &'a str,
    /// `status`, `scale` or empty.
    pub subresource: &'a str,
}

impl Target<'_> {
    pub fn key(&self, name: &str) -> Key {
        Key {
            group: self.info.group.clone(),
            resource: self.info.plural.clone(),
            namespace: self.namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn subject<'b>(&'b self, name: &'b str) -> Subject<'b> {
        Subject { group: &self.info.group, resource: &self.info.plural, name }
    }
}

/// The current time in the apiserver's RFC 3339 seconds format.
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn name_valid(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// Presents a stored object through the requested version.
pub fn as_version(info: &ResourceInfo, mut obj: Value) -> Value {
    obj["apiVersion"] = json!(info.api_version());
    obj["kind"] = json!(info.kind);
    obj
}

/// Whether anything outside metadata and status differs (the apiserver bumps generation then).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Creates an object on the collection endpoint.
pub fn create(inner: &mut Inner, t: &Target, mut body: Value, opts: &WriteOpts) -> Result<Written, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    let mut name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        if let Some(prefix) = body["metadata"]["generateName"].as_str() {
            let suffix: String = (0..5).map(|_| (b'a' + rand::random::<u8>() % 26) as char).collect();
            name = format!("{prefix}{suffix}");
            body["metadata"]["name"] = json!(name);
        }
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            &t.info.group,
            &t.info.kind,
            "",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    if inner.store.get(&t.key(&name)).is_some() {
        return Err(ApiError::already_exists(&t.subject(&name)));
    }
    commit(inner, t, &name, None, body, opts, false)
}

/// Replaces an object (PUT), enforcing the resourceVersion precondition.
pub fn update(inner: &mut Inner, t: &Target, body: Value, opts: &WriteOpts) -> Result<Written, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    if let Some(n) = body["metadata"]["name"].as_str() {
        if n != t.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                t.name
            )));
        }
    }
    let old = inner.store.get(&t.key(t.name)).cloned();
    let Some(old) = old else {
        return Err(ApiError::not_found(&t.subject(t.name)));
    };
    if t.subresource == "scale" {
        return deployments::write_scale(inner, t, &old, body, opts);
    }
    let rv = body["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    if rv.is_empty() && t.info.custom {
        return Err(ApiError::invalid(
            &t.info.group,
            &t.info.kind,
            t.name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: 0x0: must be specified for an update".into(),
                field: "metadata.resourceVersion".into(),
            }],
        ));
    }
    commit(inner, t, t.name, Some(old), body, opts, false)
}

/// Patches an object with any of the four patch types.
pub fn patch(
    inner: &mut Inner,
    t: &Target,
    kind: PatchKind,
    body: &[u8],
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    if kind == PatchKind::Strategic && t.info.custom {
        return Err(patch::unsupported_media_type(true));
    }
    let old = inner.store.get(&t.key(t.name)).cloned();
    if kind == PatchKind::Apply {
        return apply(inner, t, old, body, opts);
    }
    let Some(old) = old else {
        return Err(ApiError::not_found(&t.subject(t.name)));
    };
    if t.subresource == "scale" {
        let mut scale = deployments::scale_of(&old);
        patch::apply_json_kind(kind, &mut scale, body)?;
        return deployments::write_scale(inner, t, &old, scale, opts);
    }
    let mut new = as_version(t.info, old.clone());
    patch::apply_json_kind(kind, &mut new, body)?;
    commit(inner, t, t.name, Some(old), new, opts, false)
}

fn apply(
    inner: &mut Inner,
    t: &Target,
    old: Option<Value>,
    body: &[u8],
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    let Some(manager) = opts.field_manager.clone() else {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let applied: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if let Some(n) = applied["metadata"]["name"].as_str() {
        if n != t.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                t.name
            )));
        }
    }
    let mut applied = applied;
    applied["metadata"]["name"] = json!(t.name);
    let merged =
        managed_fields::apply(old.as_ref(), &applied, &manager, opts.force, &t.subject(t.name), &now())?;
    commit(inner, t, t.name, old, merged, opts, true)
}

fn is_deleting(o: &Value) -> bool {
    o["metadata"].get("deletionTimestamp").is_some_and(|v| !v.is_null())
}

fn has_finalizers(o: &Value) -> bool {
    o["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty())
}

/// Deletes an object; CRDs take their instances with them, namespaces their contents. An
/// object with finalizers is only marked (`deletionTimestamp`, a MODIFIED event) and goes when
/// a write removes its last finalizer, as the apiserver does.
pub fn delete(inner: &mut Inner, t: &Target) -> Result<Value, ApiError> {
    let key = t.key(t.name);
    if let Some(live) = inner.store.get(&key).cloned() {
        if has_finalizers(&live) {
            if is_deleting(&live) {
                return Ok(live);
            }
            let mut marked = live;
            marked["metadata"]["deletionTimestamp"] = json!(now());
            return Ok(inner.store.put(key, marked));
        }
    }
    let Some(gone) = inner.store.delete(&key) else {
        return Err(ApiError::not_found(&t.subject(t.name)));
    };
    if t.info.plural == "customresourcedefinitions" {
        let group = gone["spec"]["group"].as_str().unwrap_or_default().to_string();
        let plural = gone["spec"]["names"]["plural"].as_str().unwrap_or_default().to_string();
        inner.registry.unregister(&group, &plural);
        for k in inner.store.keys_of(&group, &plural, None) {
            inner.store.delete(&k);
        }
    }
    if t.info.plural == "namespaces" && t.info.group.is_empty() {
        for k in inner.store.keys_in_namespace(t.name) {
            inner.store.delete(&k);
        }
    }
    Ok(gone)
}

/// The shared tail of every write: checks, system metadata, validation, storage.
fn commit(
    inner: &mut Inner,
    t: &Target,
    name: &str,
    old: Option<Value>,
    mut new: Value,
    opts: &WriteOpts,
    applied: bool,
) -> Result<Written, ApiError> {
    let info = t.info;
    for (field, want) in [("apiVersion", info.api_version()), ("kind", info.kind.clone())] {
        match new[field].as_str() {
            Some(got) if got != want => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({got}) does not match the expected {field} ({want})"
                )))
            }
            _ => new[field] = json!(want),
        }
    }
    let ns_in_body = new["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    if info.namespaced {
        if !ns_in_body.is_empty() && ns_in_body != t.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        new["metadata"]["namespace"] = json!(t.namespace);
        let ns_key = Key {
            group: String::new(),
            resource: "namespaces".into(),
            namespace: String::new(),
            name: t.namespace.into(),
        };
        if old.is_none() && inner.store.get(&ns_key).is_none() {
            return Err(ApiError::not_found(&Subject {
                group: "",
                resource: "namespaces",
                name: t.namespace,
            }));
        }
    } else if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if old.is_none() && !name_valid(name) {
        return Err(ApiError::invalid(&info.group, &info.kind, name, vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            field: "metadata.name".into(),
        }]));
    }
    // Status subresource semantics: the main resource ignores status, /status ignores the rest.
    if t.subresource == "status" {
        let status = new["status"].clone();
        let rv = new["metadata"]["resourceVersion"].clone();
        new = as_version(info, old.clone().unwrap_or_default());
        new["status"] = status;
        new["metadata"]["resourceVersion"] = rv;
    } else if info.status_subresource {
        match &old {
            Some(o) if o.get("status").is_some() => new["status"] = o["status"].clone(),
            _ => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if !opts.via_scale {
        crate::admission::mutate(&inner.mutations, &info.plural, t.subresource, name, &mut new);
    }
    let mut warnings = vec![];
    if let Some(schema) = &info.schema {
        let outcome = schema::validate(schema, &mut new);
        if !outcome.unknown.is_empty() {
            match opts.field_validation {
                FieldValidation::Strict => {
                    let list: Vec<String> =
                        outcome.unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
                    return Err(ApiError::bad_request(format!(
                        "{}.{} \"{name}\" is invalid: strict decoding error: {}",
                        info.kind,
                        info.group,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(outcome.unknown.iter().map(|u| format!("unknown field \"{u}\"")))
                }
                FieldValidation::Ignore => {}
            }
        }
        if !outcome.causes.is_empty() {
            return Err(ApiError::invalid(&info.group, &info.kind, name, outcome.causes));
        }
    }
    let mut causes = validation::metadata(&new);
    if info.plural == "deployments" && info.group == "apps" && t.subresource != "status" {
        causes.extend(validation::deployment(&new, old.as_ref()));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&info.group, &info.kind, name, causes));
    }
    let now = now();
    match &old {
        Some(o) => {
            let live_rv = o["metadata"]["resourceVersion"].as_str().unwrap_or_default();
            let sent_rv = new["metadata"]["resourceVersion"].as_str().unwrap_or_default();
            if !sent_rv.is_empty() && sent_rv != live_rv {
                return Err(ApiError::conflict(&t.subject(name)));
            }
            for f in ["uid", "creationTimestamp", "deletionTimestamp"] {
                match o["metadata"].get(f) {
                    Some(v) => new["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            let gen = o["metadata"]["generation"].as_i64().unwrap_or(1);
            let bump = spec_changed(o, &new);
            new["metadata"]["generation"] = json!(if bump { gen + 1 } else { gen });
        }
        None => {
            new["metadata"]["uid"] = json!(new_uid());
            new["metadata"]["creationTimestamp"] = json!(now);
            new["metadata"]["generation"] = json!(1);
        }
    }
    if !applied {
        let manager = opts.field_manager.clone().unwrap_or_else(|| "unknown".into());
        managed_fields::record_update(old.as_ref(), &mut new, &manager, &now);
    }
    if info.plural == "deployments" && info.group == "apps" && t.subresource != "status" {
        deployments::simulate(&mut new, old.as_ref(), inner.rollout);
    }
    if info.plural == "customresourcedefinitions" {
        let (group, plural) = inner.registry.register_crd(&new)?;
        new["status"] = json!({
            "acceptedNames": new["spec"]["names"].clone(),
            "storedVersions": new["spec"]["versions"].as_array().into_iter().flatten()
                .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
        if opts.dry_run {
            inner.registry.unregister(&group, &plural);
        }
    }
    let created = old.is_none();
    if let Some(o) = &old {
        let mut probe = new.clone();
        probe["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
        if *o == probe {
            // A no-op write keeps the resourceVersion and emits no event, as the apiserver does.
            return Ok(Written { object: probe, warnings, created });
        }
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let object = if opts.dry_run {
        let mut o = new;
        if let Some(old) = &old {
            o["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        o
    } else if is_deleting(&new) && !has_finalizers(&new) {
        // The last finalizer of an object being deleted is gone: the deletion completes.
        inner.store.put(t.key(name), new);
        inner.store.delete(&t.key(name)).unwrap_or_default()
    } else {
        inner.store.put(t.key(name), new)
    };
    Ok(Written { object, warnings, created })
}
