//! Label and field selectors for list and watch.

use serde_json::Value;

use super::error::ApiError;

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` plus `fieldSelector`.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (vec![], String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn parse(s: &str, what: &str) -> Result<Vec<Req>, ApiError> {
    let bad =
        || ApiError::bad_request(format!("unable to parse requirement: invalid {what} selector: {s:?}"));
    let mut out = vec![];
    for part in split_top(s) {
        let set = |rest: &str| -> Result<Vec<String>, ApiError> {
            let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let req = if let Some((k, v)) = part.split_once("!=") {
            Req::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Req::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Req::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Req::NotExists(k.trim().into())
        } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            Req::Exists(part)
        } else {
            return Err(bad());
        };
        out.push(req);
    }
    Ok(out)
}

fn eval(reqs: &[Req], lookup: impl Fn(&str) -> Option<String>) -> bool {
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => lookup(k).as_deref() == Some(v),
        Req::NotEq(k, v) => lookup(k).as_deref() != Some(v),
        Req::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
        Req::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.contains(&x)),
        Req::Exists(k) => lookup(k).is_some(),
        Req::NotExists(k) => lookup(k).is_none(),
    })
}

impl Selector {
    /// Parses the `labelSelector` and `fieldSelector` query parameters.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        Ok(Selector {
            labels: labels.map(|l| parse(l, "label")).transpose()?.unwrap_or_default(),
            fields: fields.map(|f| parse(f, "field")).transpose()?.unwrap_or_default(),
        })
    }

    /// Whether an object passes both selectors. Field paths are dotted (`metadata.name`,
    /// `involvedObject.name`) and compared as strings.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        eval(&self.labels, |k| labels.get(k).and_then(Value::as_str).map(String::from))
            && eval(&self.fields, |k| {
                let v = k.split('.').try_fold(obj, |cur, seg| cur.get(seg))?;
                match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            })
    }
}

/// Whether a `metav1.LabelSelector` object (`matchLabels` and `matchExpressions` with `In`,
/// `NotIn`, `Exists`, `DoesNotExist`) selects `labels`. An unknown operator selects nothing.
pub(crate) fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k).is_some() && get(k) == v.as_str());
    let by_exprs = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> =
            e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match e["operator"].as_str().unwrap_or_default() {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::label_selector_matches;

    #[test]
    fn label_selector_operators() {
        let labels = json!({"app": "reviews", "version": "v2"});
        let sel = |s: serde_json::Value| label_selector_matches(&s, &labels);
        assert!(sel(json!({"matchLabels": {"app": "reviews"}})));
        assert!(!sel(json!({"matchLabels": {"app": "ratings"}})));
        assert!(sel(
            json!({"matchExpressions": [{"key": "version", "operator": "In", "values": ["v1", "v2"]}]})
        ));
        assert!(!sel(
            json!({"matchExpressions": [{"key": "version", "operator": "NotIn", "values": ["v2"]}]})
        ));
        assert!(sel(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})));
        assert!(sel(json!({"matchExpressions": [{"key": "track", "operator": "DoesNotExist"}]})));
        assert!(!sel(json!({"matchLabels": {"app": "reviews"},
            "matchExpressions": [{"key": "version", "operator": "DoesNotExist"}]})));
    }
}
