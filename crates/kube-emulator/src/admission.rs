//! Mutating admission: what a mutating webhook or a policy engine (Kyverno, Gatekeeper's
//! mutation) does to writes. A real API server runs it on create and update — a patch is an
//! update: the patch is applied to the live object first — before validation and storage, and
//! answers with the object as mutated; watches see only that.

use serde_json::Value;

/// One mutation, applied to every write of the matching objects until cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// Resource (plural, no subresource): `deployments`, `virtualservices`.
    pub resource: String,
    /// Object name; `None` matches every object of the resource.
    pub name: Option<String>,
    /// A JSON merge patch applied to the written object.
    pub merge: Value,
}

impl Mutation {
    /// Mutates writes of the named object of `resource` by `merge`.
    pub fn named(resource: &str, name: &str, merge: Value) -> Self {
        Mutation { resource: resource.into(), name: Some(name.into()), merge }
    }
}

/// Applies the mutations that match a write of `resource`/`name` (main resource only: a
/// webhook registered for `deployments` does not see `deployments/status` or `/scale`).
pub(crate) fn mutate(mutations: &[Mutation], resource: &str, subresource: &str, name: &str, obj: &mut Value) {
    if !subresource.is_empty() {
        return;
    }
    for m in mutations {
        if m.resource == resource && m.name.as_deref().is_none_or(|n| n == name) {
            json_patch::merge(obj, &m.merge);
        }
    }
}
