//! Structural-schema validation, defaulting and pruning of custom resources against a CRD
//! version's `openAPIV3Schema`, with the apiserver's field paths and messages.
//!
//! Not evaluated: `x-kubernetes-validations` (CEL rules), `format`, list-type uniqueness.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::error::Cause;

/// What validation found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Violations (empty = valid).
    pub causes: Vec<Cause>,
    /// Paths of fields that were not declared in the schema and were pruned.
    pub unknown: Vec<String>,
}

/// Validates `object` against `schema`, inserting defaults and pruning undeclared fields.
/// `apiVersion`, `kind` and `metadata` at the root are left to the caller.
pub fn validate(schema: &Value, object: &mut Value) -> Outcome {
    let mut out = Outcome::default();
    let Some(obj) = object.as_object_mut() else {
        out.causes.push(type_cause("", "object", object));
        return out;
    };
    let props = &schema["properties"];
    let keys: Vec<String> = obj.keys().cloned().collect();
    for key in keys {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.get(&key) {
            Some(sub) => {
                if let Some(v) = obj.get_mut(&key) {
                    check(sub, v, &key, true, &mut out);
                }
            }
            None if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) => {}
            None => {
                obj.remove(&key);
                out.unknown.push(key);
            }
        }
    }
    apply_defaults(schema, obj);
    for req in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = req.as_str() {
            if !obj.contains_key(r) && r != "metadata" {
                out.causes.push(required(&join(r, "")));
            }
        }
    }
    out
}

fn join(key: &str, path: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field: field.into() }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_cause(path: &str, want: &str, v: &Value) -> Cause {
    let got = type_name(v);
    Cause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!("Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""),
        field: path.into(),
    }
}

fn invalid(path: &str, v: &Value, what: &str) -> Cause {
    let shown = match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(_) | Value::Array(_) => format!("\"{}\"", type_name(v)),
        other => other.to_string(),
    };
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {path} in body {what}"),
        field: path.into(),
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        // A float with no fractional part decodes as an integer in the apiserver too.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn regex_matches(pattern: &str, s: &str) -> bool {
    thread_local! {
        static CACHE: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|c| {
        c.borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok())
            .as_ref()
            // A pattern Rust cannot compile (rare RE2 differences) is not enforced.
            .is_none_or(|re| re.is_match(s))
    })
}

fn apply_defaults(schema: &Value, obj: &mut Map<String, Value>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            if let Some(d) = sub.get("default") {
                obj.entry(k.clone()).or_insert_with(|| d.clone());
            }
        }
    }
}

/// Does `v` satisfy `schema` as a value constraint (no pruning, no defaulting)?
fn satisfies(schema: &Value, v: &Value, path: &str) -> bool {
    let mut copy = v.clone();
    let mut out = Outcome::default();
    check(schema, &mut copy, path, false, &mut out);
    out.causes.is_empty()
}

/// Recursively validates `v` at `path`; `prune` is false inside `oneOf`/`anyOf`/`not`
/// branches, which only constrain values and declare no fields.
fn check(schema: &Value, v: &mut Value, path: &str, prune: bool, out: &mut Outcome) {
    if v.is_null() {
        if schema["nullable"] != Value::Bool(true) && schema.get("type").is_some() {
            let want = schema["type"].as_str().unwrap_or("object");
            out.causes.push(type_cause(path, want, v));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    if int_or_string {
        if !(type_ok("integer", v) || v.is_string()) {
            out.causes.push(type_cause(path, "integer-or-string", v));
            return;
        }
    } else if let Some(want) = schema["type"].as_str() {
        if !type_ok(want, v) {
            out.causes.push(type_cause(path, want, v));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(v) {
            let supported: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            out.causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!("Unsupported value: {v}: supported values: {}", supported.join(", ")),
                field: path.into(),
            });
        }
    }
    check_scalar(schema, v, path, out);
    check_combinators(schema, v, path, out);
    match v {
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(max) = schema["maxItems"].as_u64().filter(|m| n > *m) {
                out.causes.push(Cause {
                    reason: "FieldValueTooMany".into(),
                    message: format!("Too many: {n}: must have at most {max} items"),
                    field: path.into(),
                });
            }
            if let Some(min) = schema["minItems"].as_u64().filter(|m| n < *m) {
                out.causes.push(invalid(path, &Value::Null, &format!("should have at least {min} items")));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), prune, out);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, prune, out),
        _ => {}
    }
}

fn check_scalar(schema: &Value, v: &Value, path: &str, out: &mut Outcome) {
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(max) = schema["maxLength"].as_u64().filter(|m| len > *m) {
            out.causes.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: may not be more than {max} bytes"),
                field: path.into(),
            });
        }
        if let Some(min) = schema["minLength"].as_u64().filter(|m| len < *m) {
            out.causes.push(invalid(path, v, &format!("should be at least {min} chars long")));
        }
        if let Some(p) = schema["pattern"].as_str() {
            if !regex_matches(p, s) {
                out.causes.push(invalid(path, v, &format!("should match '{p}'")));
            }
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(max) = schema["maximum"].as_f64() {
            let excl = schema["exclusiveMaximum"] == Value::Bool(true);
            if x > max || (excl && x == max) {
                let op = if excl { "less than" } else { "less than or equal to" };
                out.causes.push(invalid(path, v, &format!("should be {op} {}", schema["maximum"])));
            }
        }
        if let Some(min) = schema["minimum"].as_f64() {
            let excl = schema["exclusiveMinimum"] == Value::Bool(true);
            if x < min || (excl && x == min) {
                let op = if excl { "greater than" } else { "greater than or equal to" };
                out.causes.push(invalid(path, v, &format!("should be {op} {}", schema["minimum"])));
            }
        }
    }
}

fn check_combinators(schema: &Value, v: &Value, path: &str, out: &mut Outcome) {
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            let mut copy = v.clone();
            check(s, &mut copy, path, false, out);
        }
    }
    if let Some(any) = schema["anyOf"].as_array() {
        if !any.iter().any(|s| satisfies(s, v, path)) {
            out.causes.push(invalid(path, v, "must validate at least one schema (anyOf)"));
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let n = one.iter().filter(|s| satisfies(s, v, path)).count();
        if n != 1 {
            let found = if n == 0 { String::new() } else { format!(". Found {n} valid alternatives") };
            out.causes.push(invalid(
                path,
                v,
                &format!("must validate one and only one schema (oneOf){found}"),
            ));
        }
    }
    if let Some(not) = schema.get("not") {
        if satisfies(not, v, path) {
            out.causes.push(invalid(path, v, "must not validate the schema (not)"));
        }
    }
}

fn check_object(schema: &Value, map: &mut Map<String, Value>, path: &str, prune: bool, out: &mut Outcome) {
    let props = schema["properties"].as_object();
    let additional = schema.get("additionalProperties");
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child = join(&key, path);
        let sub = props.and_then(|p| p.get(&key));
        match (sub, additional) {
            (Some(sub), _) | (None, Some(sub @ Value::Object(_))) => {
                if let Some(v) = map.get_mut(&key) {
                    check(sub, v, &child, prune, out);
                }
            }
            (None, Some(Value::Bool(true))) => {}
            _ if preserve || !prune => {}
            _ => {
                map.remove(&key);
                out.unknown.push(child);
            }
        }
    }
    if prune {
        apply_defaults(schema, map);
    }
    for req in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = req.as_str() {
            if !map.contains_key(r) {
                out.causes.push(required(&join(r, path)));
            }
        }
    }
    let n = map.len() as u64;
    if let Some(max) = schema["maxProperties"].as_u64().filter(|m| n > *m) {
        out.causes.push(Cause {
            reason: "FieldValueTooMany".into(),
            message: format!("Too many: {n}: must have at most {max} items"),
            field: path.into(),
        });
    }
    if let Some(min) = schema["minProperties"].as_u64().filter(|m| n < *m) {
        out.causes.push(invalid(
            path,
            &Value::Object(map.clone()),
            &format!("should have at least {min} properties"),
        ));
    }
}
