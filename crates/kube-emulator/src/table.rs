//! Server-side `meta.k8s.io/v1` Table rendering, which kubectl asks for in human output:
//! `additionalPrinterColumns` for custom resources, the usual columns for a few built-ins.

use serde_json::{json, Value};

use super::resources::ResourceInfo;

/// Whether the `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 timestamp, as kubectl prints ages.
fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn at_path<'a>(obj: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .try_fold(obj, |cur, seg| cur.get(seg))
        .unwrap_or(&Value::Null)
}

fn cell(v: &Value, kind: &str) -> Value {
    match (v, kind) {
        (Value::Null, _) => json!("<none>"),
        (_, "date") => json!(age(v)),
        (Value::String(_) | Value::Number(_) | Value::Bool(_), _) => v.clone(),
        (other, _) => json!(other.to_string()),
    }
}

fn column(name: &str, kind: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" },
           "description": "", "priority": 0})
}

/// Renders one object's cells.
type CellFn = Box<dyn Fn(&Value) -> Vec<Value>>;

/// Columns and a per-object cell function for a resource.
fn columns(info: &ResourceInfo) -> (Vec<Value>, CellFn) {
    let name = |o: &Value| o["metadata"]["name"].clone();
    let created = |o: &Value| json!(age(&o["metadata"]["creationTimestamp"]));
    if info.custom && !info.printer_columns.is_empty() {
        let pcs = info.printer_columns.clone();
        let mut cols = vec![column("Name", "string")];
        for pc in &pcs {
            let mut c =
                column(pc["name"].as_str().unwrap_or_default(), pc["type"].as_str().unwrap_or("string"));
            c["priority"] = pc["priority"].clone();
            cols.push(c);
        }
        return (
            cols,
            Box::new(move |o| {
                let mut row = vec![name(o)];
                row.extend(pcs.iter().map(|pc| {
                    cell(
                        at_path(o, pc["jsonPath"].as_str().unwrap_or_default()),
                        pc["type"].as_str().unwrap_or("string"),
                    )
                }));
                row
            }),
        );
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("apps", "deployments") => (
            ["Name", "Ready", "Up-to-date", "Available", "Age"].iter().map(|c| column(c, "string")).collect(),
            Box::new(move |o| {
                let s = &o["status"];
                let n = |v: &Value| v.as_i64().unwrap_or(0);
                vec![
                    name(o),
                    json!(format!(
                        "{}/{}",
                        n(&s["readyReplicas"]),
                        o["spec"]["replicas"].as_i64().unwrap_or(1)
                    )),
                    json!(n(&s["updatedReplicas"])),
                    json!(n(&s["availableReplicas"])),
                    created(o),
                ]
            }),
        ),
        ("", "pods") => (
            ["Name", "Ready", "Status", "Restarts", "Age"]
                .iter()
                .map(|c| column(c, if *c == "Restarts" { "integer" } else { "string" }))
                .collect(),
            Box::new(move |o| super::pods::table_cells(o, age(&o["metadata"]["creationTimestamp"]))),
        ),
        ("", "namespaces") => (
            vec![column("Name", "string"), column("Status", "string"), column("Age", "string")],
            Box::new(move |o| vec![name(o), json!("Active"), created(o)]),
        ),
        ("", "configmaps") => (
            vec![column("Name", "string"), column("Data", "integer"), column("Age", "string")],
            Box::new(move |o| {
                let n = o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len());
                vec![name(o), json!(n), created(o)]
            }),
        ),
        ("coordination.k8s.io", "leases") => (
            vec![column("Name", "string"), column("Holder", "string"), column("Age", "string")],
            Box::new(move |o| vec![name(o), cell(&o["spec"]["holderIdentity"], "string"), created(o)]),
        ),
        _ => (
            vec![column("Name", "string"), column("Age", "string")],
            Box::new(move |o| vec![name(o), created(o)]),
        ),
    }
}

/// A Table for `objects`; `include` is the `includeObject` parameter (`None`, `Metadata`,
/// `Object`; default `Metadata`).
pub fn render(info: &ResourceInfo, objects: &[Value], resource_version: &str, include: &str) -> Value {
    let (cols, cells) = columns(info);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": cells(o), "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
           "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": cols, "rows": rows})
}
