//! The four patch content types, applied as the apiserver treats them.

use serde_json::{Map, Value};

use super::error::ApiError;

/// A patch body, classified by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json` (built-in types only).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// Classifies a content type (parameters such as `charset` are ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// The 415 a real server answers for an unknown or (on custom resources) strategic patch type.
pub fn unsupported_media_type(custom: bool) -> ApiError {
    let accepted = if custom {
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    } else {
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
    };
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: {accepted}"
        ),
    )
}

/// Parses a JSON body, mapping syntax errors to 400 as the apiserver does.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Applies a JSON merge patch or JSON patch to `target` (a copy of the live object).
pub fn apply_json_kind(kind: PatchKind, target: &mut Value, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge => {
            let p = parse_json(body)?;
            json_patch::merge(target, &p);
            Ok(())
        }
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            // A failed `test` or a missing path is a 422, exactly like the apiserver's
            // applyJSPatch; the live object stays untouched because we patched a copy.
            json_patch::patch(target, &p).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))
        }
        PatchKind::Strategic => {
            let p = parse_json(body)?;
            strategic_merge(target, &p);
            Ok(())
        }
        PatchKind::Apply => unreachable!("apply patches go through managed_fields::apply"),
    }
}

/// Keys by which built-in lists of objects are merged (an approximation of the
/// `patchMergeKey` tags of the Go types).
const MERGE_KEYS: &[&str] = &["name", "containerPort", "port", "mountPath", "devicePath", "ip", "type"];

fn merge_key(patch_items: &[Value], target_items: &[Value]) -> Option<&'static str> {
    MERGE_KEYS.iter().copied().find(|k| {
        !patch_items.is_empty() && patch_items.iter().chain(target_items).all(|i| i.get(k).is_some())
    })
}

/// A strategic merge patch approximated: maps merge, `null` deletes, lists of objects with a
/// recognisable merge key merge by that key, other lists replace; `$patch: replace|delete`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match pmap.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = pmap.clone();
            m.remove("$patch");
            *target = Value::Object(m);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tmap = target.as_object_mut().expect("made an object above");
    for (k, pv) in pmap {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            tmap.remove(k);
            continue;
        }
        let existing = tmap.entry(k.clone()).or_insert(Value::Null);
        match (existing, pv) {
            (Value::Array(titems), Value::Array(pitems)) => {
                if let Some(key) = merge_key(pitems, titems) {
                    for p in pitems {
                        let id = &p[key];
                        match titems.iter_mut().position(|t| &t[key] == id) {
                            Some(i) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                                titems.remove(i);
                            }
                            Some(i) => strategic_merge(&mut titems[i], p),
                            None => titems.push(p.clone()),
                        }
                    }
                } else {
                    *titems = pitems.clone();
                }
            }
            (slot, pv) => strategic_merge(slot, pv),
        }
    }
}
