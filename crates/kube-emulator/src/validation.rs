//! The apiserver's built-in validation that is not expressed as an OpenAPI schema: label and
//! annotation syntax and size for every object, and the apps/v1 Deployment rules copy
//! promotion can trip over (selector required, selecting its template, immutable).
//!
//! Messages follow the apiserver's wording, including Go's `%#v` renderings of values, so
//! clients matching on them behave as they would against a real cluster.

use serde_json::{Map, Value};

use super::error::Cause;
use super::selectors;

/// Total bytes of annotation keys and values an object may carry.
const ANNOTATIONS_MAX_BYTES: usize = 262_144;

const QUALIFIED_NAME_HELP: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const QUALIFIED_NAME_SHAPE: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const DNS_SUBDOMAIN_HELP: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause { reason: reason.into(), message, field: field.into() }
}

fn invalid(field: &str, shown: &str, why: &str) -> Cause {
    cause("FieldValueInvalid", field, format!("Invalid value: {shown}: {why}"))
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: the name part of a qualified name and a
/// non-empty label value.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= 253 && s.split('.').all(label)
}

/// Why `key` is not a qualified name (`[prefix/]name`), one message per problem.
fn qualified_name_errors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => return vec![QUALIFIED_NAME_SHAPE.to_string()],
    };
    let mut out = vec![];
    match prefix {
        Some("") => out.push("prefix part must be non-empty".to_string()),
        Some(p) if p.len() > 253 => out.push("prefix part must be no more than 253 characters".to_string()),
        Some(p) if !is_dns_subdomain(p) => out.push(DNS_SUBDOMAIN_HELP.to_string()),
        _ => {}
    }
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !is_name_part(name) {
        out.push(QUALIFIED_NAME_HELP.to_string());
    }
    out
}

fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Label keys and values at `field` (e.g. `metadata.labels`).
pub(crate) fn labels(labels: &Value, field: &str) -> Vec<Cause> {
    let mut out = vec![];
    for (k, v) in labels.as_object().into_iter().flatten() {
        for why in qualified_name_errors(k) {
            out.push(invalid(field, &go_quote(k), &why));
        }
        let value = v.as_str().unwrap_or_default();
        if value.len() > 63 {
            out.push(invalid(field, &go_quote(value), "must be no more than 63 characters"));
        }
        if !value.is_empty() && !is_name_part(value) {
            out.push(invalid(field, &go_quote(value), LABEL_VALUE_HELP));
        }
    }
    out
}

/// Annotation keys and their total size at `field` (e.g. `metadata.annotations`).
pub(crate) fn annotations(annotations: &Value, field: &str) -> Vec<Cause> {
    let mut out = vec![];
    let mut total = 0;
    for (k, v) in annotations.as_object().into_iter().flatten() {
        // The apiserver lower-cases keys before checking them, so upper-case letters pass.
        for why in qualified_name_errors(&k.to_lowercase()) {
            out.push(invalid(field, &go_quote(k), &why));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX_BYTES {
        out.push(cause(
            "FieldValueTooLong",
            field,
            format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
        ));
    }
    out
}

/// The metadata rules every object obeys.
pub(crate) fn metadata(obj: &Value) -> Vec<Cause> {
    let mut out = labels(&obj["metadata"]["labels"], "metadata.labels");
    out.extend(annotations(&obj["metadata"]["annotations"], "metadata.annotations"));
    out
}

/// `map[string]string{"app":"reviews", "version":"v2"}`, as Go's `%#v` prints a label map.
fn go_map(m: &Value) -> String {
    match m.as_object() {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or_default())))
                .collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
    }
}

/// `v1.LabelSelector{MatchLabels:..., MatchExpressions:...}`, as Go's `%#v` prints it.
fn go_selector(s: &Value) -> String {
    let exprs = match s["matchExpressions"].as_array() {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|e| {
                    let values = match e["values"].as_array() {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => format!(
                            "[]string{{{}}}",
                            vs.iter()
                                .map(|v| go_quote(v.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_quote(e["key"].as_str().unwrap_or_default()),
                        go_quote(e["operator"].as_str().unwrap_or_default())
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}", go_map(&s["matchLabels"]))
}

/// The selector with empty lists and maps dropped: the apiserver compares selectors
/// semantically, where empty and absent are the same.
fn normalized_selector(s: &Value) -> Value {
    let mut out = Map::new();
    for k in ["matchLabels", "matchExpressions"] {
        let empty = match &s[k] {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(k.into(), s[k].clone());
        }
    }
    Value::Object(out)
}

/// Syntax of the selector's requirements.
fn selector_syntax(s: &Value) -> Vec<Cause> {
    let mut out = labels(&s["matchLabels"], "spec.selector.matchLabels");
    for (i, e) in s["matchExpressions"].as_array().into_iter().flatten().enumerate() {
        let at = |f: &str| format!("spec.selector.matchExpressions[{i}].{f}");
        let key = e["key"].as_str().unwrap_or_default();
        for why in qualified_name_errors(key) {
            out.push(invalid(&at("key"), &go_quote(key), &why));
        }
        let has_values = e["values"].as_array().is_some_and(|v| !v.is_empty());
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if !has_values => out.push(cause(
                "FieldValueRequired",
                &at("values"),
                "Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
            )),
            "Exists" | "DoesNotExist" if has_values => out.push(cause(
                "FieldValueForbidden",
                &at("values"),
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".into(),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.push(invalid(&at("operator"), &go_quote(other), "not a valid selector operator")),
        }
    }
    out
}

/// The apps/v1 Deployment rules on create and update (`old` is the live object on update).
pub(crate) fn deployment(new: &Value, old: Option<&Value>) -> Vec<Cause> {
    let spec = &new["spec"];
    let mut out = vec![];
    let selector = &spec["selector"];
    let template_labels = &spec["template"]["metadata"]["labels"];
    if selector.is_null() {
        out.push(cause("FieldValueRequired", "spec.selector", "Required value".into()));
    } else {
        let syntax = selector_syntax(selector);
        let empty = normalized_selector(selector).as_object().is_none_or(Map::is_empty);
        if empty {
            out.push(invalid(
                "spec.selector",
                &go_selector(selector),
                "empty selector is invalid for deployment",
            ));
        }
        if syntax.is_empty() && !empty && !selectors::label_selector_matches(selector, template_labels) {
            out.push(invalid(
                "spec.template.metadata.labels",
                &go_map(template_labels),
                "`selector` does not match template `labels`",
            ));
        }
        out.extend(syntax);
    }
    out.extend(labels(template_labels, "spec.template.metadata.labels"));
    out.extend(annotations(
        &spec["template"]["metadata"]["annotations"],
        "spec.template.metadata.annotations",
    ));
    match &spec["replicas"] {
        Value::Null => {}
        r if r.as_i64().is_some_and(|n| n >= 0) => {}
        r => out.push(invalid("spec.replicas", &r.to_string(), "must be greater than or equal to 0")),
    }
    if let Some(old) = old {
        let before = &old["spec"]["selector"];
        if !selector.is_null() && normalized_selector(before) != normalized_selector(selector) {
            out.push(invalid("spec.selector", &go_selector(selector), "field is immutable"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn qualified_names() {
        assert!(qualified_name_errors("app").is_empty());
        assert!(qualified_name_errors("example.com/My_name-1.x").is_empty());
        assert_eq!(qualified_name_errors("a/b/c"), vec![QUALIFIED_NAME_SHAPE.to_string()]);
        assert_eq!(qualified_name_errors("/x"), vec!["prefix part must be non-empty".to_string()]);
        assert_eq!(qualified_name_errors("Example.com/x"), vec![DNS_SUBDOMAIN_HELP.to_string()]);
        assert_eq!(qualified_name_errors("-x"), vec![QUALIFIED_NAME_HELP.to_string()]);
        assert_eq!(
            qualified_name_errors(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters".to_string()]
        );
        assert_eq!(qualified_name_errors("p/"), vec!["name part must be non-empty".to_string()]);
    }

    #[test]
    fn go_renderings() {
        assert_eq!(
            go_map(&json!({"version": "v2", "app": "r"})),
            r#"map[string]string{"app":"r", "version":"v2"}"#
        );
        assert_eq!(
            go_selector(&json!({"matchLabels": {"app": "r"}})),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"r"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
    }

    #[test]
    fn label_values() {
        let c = labels(&json!({"app": "x".repeat(64), "ok": "", "bad": "-x"}), "metadata.labels");
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().all(|c| c.field == "metadata.labels"));
    }
}
