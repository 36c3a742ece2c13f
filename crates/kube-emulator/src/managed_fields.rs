//! Server-side apply, approximated: field ownership per manager in `metadata.managedFields`
//! (FieldsV1 with maps as `f:` entries and lists/scalars as atomic leaves), conflicts when
//! another manager owns a field the applier sets to a different value, `force` to take it
//! over, and removal of fields a manager stops applying.

use serde_json::{json, Map, Value};

use super::error::{ApiError, Cause, Subject};

type Path = Vec<String>;

/// Leaf paths of a value: maps recurse, everything else is atomic. System metadata is skipped.
fn leaves(v: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, sub) in m {
                if prefix.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                if prefix.len() == 1
                    && prefix[0] == "metadata"
                    && !matches!(k.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
                {
                    continue;
                }
                prefix.push(k.clone());
                leaves(sub, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => out.push(prefix.clone()),
        _ => {}
    }
}

fn leaf_paths(v: &Value) -> Vec<Path> {
    let mut out = vec![];
    leaves(v, &mut vec![], &mut out);
    out
}

fn to_fields_v1(paths: &[Path]) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p {
            node = node
                .entry(format!("f:{seg}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
    let children: Vec<(&String, &Value)> =
        v.as_object().map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect()).unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix.clone());
        }
        return;
    }
    for (k, sub) in children {
        prefix.push(k[2..].to_string());
        from_fields_v1(sub, prefix, out);
        prefix.pop();
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

fn lookup<'a>(v: &'a Value, p: &Path) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn remove_path(v: &mut Value, p: &Path) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// One manager's entry as stored.
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    paths: Vec<Path>,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut paths = vec![];
            from_fields_v1(&e["fieldsV1"], &mut vec![], &mut paths);
            Entry {
                manager: e["manager"].as_str().unwrap_or_default().into(),
                operation: e["operation"].as_str().unwrap_or("Update").into(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                paths,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: &[Entry], now: &str) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.paths.is_empty())
        .map(|e| {
            json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.paths),
            })
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(list);
}

fn deep_merge(target: &mut Value, src: &Value) {
    match (target.as_object_mut(), src.as_object()) {
        (Some(t), Some(s)) => {
            for (k, v) in s {
                deep_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = src.clone(),
    }
}

/// Server-side apply of `applied` by `manager` onto `live` (or onto an empty object on create).
/// Returns the merged object with updated `managedFields`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subject: &Subject,
    now: &str,
) -> Result<Value, ApiError> {
    let mut obj = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = read_entries(&obj);
    let applied_paths = leaf_paths(applied);
    let mut conflicts = vec![];
    for e in entries.iter_mut().filter(|e| e.manager != manager) {
        let mut keep = vec![];
        for owned in e.paths.drain(..) {
            let contested = applied_paths
                .iter()
                .any(|a| overlaps(a, &owned) && lookup(&obj, &owned) != lookup(applied, &owned));
            if contested && !force {
                conflicts.push(Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with \"{}\" using {}", e.manager, e.api_version),
                    field: format!(".{}", owned.join(".")),
                });
            }
            // Shared ownership when values agree; forced appliers take contested fields.
            if !(contested && force) {
                keep.push(owned);
            }
        }
        e.paths = keep;
    }
    if !conflicts.is_empty() {
        let n = conflicts.len();
        let list: Vec<String> = conflicts.iter().map(|c| format!("- {}: {}", c.message, c.field)).collect();
        let mut err = ApiError::new(
            409,
            "Conflict",
            format!("Apply failed with {n} conflict{}: {}", if n == 1 { "" } else { "s" }, list.join("\n")),
        );
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut details = json!({"name": subject.name, "kind": subject.resource, "causes": causes});
        if !subject.group.is_empty() {
            details["group"] = json!(subject.group);
        }
        err.details = Some(details);
        return Err(err);
    }
    // Fields this manager applied before but no longer does are removed, unless shared.
    if let Some(prev) = entries.iter().find(|e| e.manager == manager && e.operation == "Apply") {
        for old in &prev.paths {
            let still_applied = applied_paths.iter().any(|a| overlaps(a, old));
            let owned_elsewhere = entries
                .iter()
                .filter(|e| !(e.manager == manager && e.operation == "Apply"))
                .any(|e| e.paths.iter().any(|p| overlaps(p, old)));
            if !still_applied && !owned_elsewhere {
                remove_path(&mut obj, old);
            }
        }
    }
    let mut merged_applied = applied.clone();
    if let Some(m) = merged_applied.as_object_mut() {
        m.remove("status");
    }
    deep_merge(&mut obj, &merged_applied);
    entries.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    entries.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: applied["apiVersion"].as_str().unwrap_or_default().into(),
        paths: applied_paths,
    });
    write_entries(&mut obj, &entries, now);
    Ok(obj)
}

/// Records a non-apply write: fields that changed between `old` and `new` move to `manager`
/// (operation `Update`), so a later apply by someone else conflicts on them.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let changed: Vec<Path> =
        leaf_paths(new).into_iter().filter(|p| old.and_then(|o| lookup(o, p)) != lookup(new, p)).collect();
    if changed.is_empty() && old.is_some() {
        // Keep the previous bookkeeping (clients may have sent stale managedFields).
        if let Some(o) = old {
            new["metadata"]["managedFields"] = o["metadata"]["managedFields"].clone();
        }
        return;
    }
    for e in entries.iter_mut() {
        e.paths.retain(|p| !changed.iter().any(|c| overlaps(c, p)) && lookup(new, p).is_some());
    }
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
    match entries.iter_mut().find(|e| e.manager == manager && e.operation == "Update") {
        Some(e) => e.paths.extend(changed),
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version,
            paths: changed,
        }),
    }
    write_entries(new, &entries, now);
}
