//! A skeletal OpenAPI v3 publication: the `/openapi/v3` index and per group-version documents
//! with one operation per verb and its query parameters. kubectl reads these to learn that the
//! server validates fields itself (`fieldValidation` on PATCH), so `kubectl apply` validates
//! server-side instead of downloading full schemas. No component schemas are published.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{json, Map, Value};

use super::resources::{Registry, ResourceInfo};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash_of(reg: &Registry, group: &str, version: &str) -> String {
    let mut h = DefaultHasher::new();
    for r in reg.all().iter().filter(|r| r.group == group && r.version == version) {
        (&r.plural, &r.kind, r.namespaced, r.status_subresource).hash(&mut h);
    }
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`.
pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, versions) in reg.groups() {
        for v in versions {
            let p = gv_path(&g, &v);
            let url = format!("/openapi/v3/{p}?hash={}", hash_of(reg, &g, &v));
            paths.insert(p, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(r: &ResourceInfo, action: &str, params: &[&str]) -> Value {
    let mut parameters: Vec<Value> = params.iter().map(|p| param(p)).collect();
    parameters.push(param("pretty"));
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
    })
}

fn paths_for(r: &ResourceInfo, out: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(&r.group, &r.version));
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let writes = ["dryRun", "fieldManager", "fieldValidation"];
    let mut patch_params = writes.to_vec();
    patch_params.push("force");
    out.insert(
        collection.clone(),
        json!({
            "get": operation(r, "list", &["labelSelector", "fieldSelector", "resourceVersion", "watch", "limit"]),
            "post": operation(r, "post", &writes),
        }),
    );
    let item = format!("{collection}/{{name}}");
    out.insert(
        item.clone(),
        json!({
            "get": operation(r, "get", &[]),
            "put": operation(r, "put", &writes),
            "patch": operation(r, "patch", &patch_params),
            "delete": operation(r, "delete", &["dryRun"]),
        }),
    );
    for (enabled, sub) in [(r.status_subresource, "status"), (r.scale_subresource, "scale")] {
        if enabled {
            out.insert(
                format!("{item}/{sub}"),
                json!({"get": operation(r, "get", &[]), "put": operation(r, "put", &writes),
                       "patch": operation(r, "patch", &patch_params)}),
            );
        }
    }
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`, if served.
pub fn group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in reg.all().iter().filter(|r| r.group == group && r.version == version) {
        paths_for(r, &mut paths);
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
