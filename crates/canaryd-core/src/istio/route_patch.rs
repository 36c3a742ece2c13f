//! The parts of a route write that need care with real Istio: relative weights, the managed
//! header-match route (a clone of the policy route), and the record of the route as it was
//! before the rollout.
//!
//! - **Weights are relative** (Istio divides each weight by the sum). Only the stable side's
//!   share moves: with `S` = stable weight + canary weight as found, the canary gets `w`% of `S`
//!   and every other destination keeps its weight object. A destination without a weight has
//!   weight 0, except the only destination of a route, which takes all traffic.
//! - **The header route** is the policy route cloned (match, rewrite, retries, timeout, headers,
//!   fault, corsPolicy, ...; not its name, destinations or mirror) with the step's header
//!   condition added to every match block, so it never takes a request the policy route would
//!   not; it is placed directly before the policy route.

use super::virtual_service::{dest_host, dest_subset, VsError};
use crate::policy::HeaderMatch;
use serde_json::{json, Map, Value};

/// Istio's weights are `int32`.
pub(super) const MAX_WEIGHT: i64 = i32::MAX as i64;

/// The effective weight of each destination of a route: its `weight`, 0 when absent, or the
/// whole route (100) for a route's only destination. Negative, non-integer or over-`int32`
/// weights, and a
/// route whose weights are all 0, are errors.
pub(super) fn effective_weights(route: &str, dests: &[Value]) -> Result<Vec<i64>, VsError> {
    let mut out = Vec::with_capacity(dests.len());
    for d in dests {
        match d.get("weight") {
            None | Some(Value::Null) => out.push(if dests.len() == 1 { 100 } else { 0 }),
            Some(w) => match w.as_i64() {
                Some(n) if (0..=MAX_WEIGHT).contains(&n) => out.push(n),
                _ => {
                    return Err(VsError::BadWeight {
                        route: route.to_string(),
                        destination: describe(d),
                        weight: w.to_string(),
                    })
                }
            },
        }
    }
    if !out.is_empty() && out.iter().all(|w| *w == 0) {
        return Err(VsError::ZeroWeights { route: route.to_string() });
    }
    Ok(out)
}

/// `host/subset` of a route destination, for messages.
pub(super) fn describe(d: &Value) -> String {
    format!("{}/{}", dest_host(d).unwrap_or("?"), dest_subset(d).unwrap_or("-"))
}

/// The canary's share in percent of the pair, rounded half up; 0 when both weigh 0.
pub(super) fn canary_share(stable: i64, canary: i64) -> u32 {
    let pair = stable + canary;
    if pair <= 0 {
        return 0;
    }
    u32::try_from((200 * canary + pair) / (2 * pair)).unwrap_or(100).min(100)
}

/// How to give the canary `w`% of a pair weighing `pair`: `(factor, stable, canary)`, where
/// `factor` (at most `max_factor`, and at most 100, which always suffices) is the smallest
/// integer every weight of the route is multiplied by so that the split reads back as exactly
/// `w` (1 when `pair` is large enough). When no allowed factor is exact, the nearest split at
/// factor 1. `None` when the pair weighs 0: there is no share to move.
pub(super) fn split(pair: i64, w: u32, max_factor: i64) -> Option<(i64, i64, i64)> {
    if pair <= 0 {
        return None;
    }
    let w = w.min(100);
    let nearest = |total: i64| (total * i64::from(w) + 50) / 100;
    (1..=max_factor.clamp(1, 100))
        .find_map(|k| {
            let total = pair * k;
            let c = nearest(total);
            [c, c - 1, c + 1]
                .into_iter()
                .filter(|c| (0..=total).contains(c))
                .find(|c| canary_share(total - c, *c) == w)
                .map(|c| (k, total - c, c))
        })
        .or_else(|| Some((1, pair - nearest(pair), nearest(pair))))
}

/// Sets the route's destinations so the canary gets `w`% of the stable+canary pair. The other
/// destinations keep their weight objects byte for byte, unless the pair is too light to
/// express `w` exactly: then every weight of the route is multiplied by the smallest factor
/// that makes it exact, so each other destination keeps its relative share of the route. A
/// missing canary destination is added after the stable one (a copy of the stable's object
/// with the canary's host and subset) unless `w` is 0. Nothing changes when the weights are
/// invalid or the pair weighs 0.
pub(super) fn set_canary_weight(
    route: &str,
    dests: &mut Vec<Value>,
    stable_pos: usize,
    canary_pos: Option<usize>,
    canary_dest: &Value,
    w: u32,
) {
    let Ok(eff) = effective_weights(route, dests) else { return };
    let pair = eff[stable_pos] + canary_pos.map_or(0, |c| eff[c]);
    if canary_pos.is_none() && w == 0 {
        return;
    }
    // Scaled weights stay within int32, for every destination and for their sum.
    let sum: i64 = eff.iter().sum();
    let Some((k, stable, canary)) = split(pair, w, MAX_WEIGHT / sum.max(1)) else { return };
    if k == 1 && stable == eff[stable_pos] && canary_pos.is_some_and(|c| eff[c] == canary) {
        // Already so: leave the objects as written (an absent weight stays absent).
        return;
    }
    if k > 1 {
        for (i, d) in dests.iter_mut().enumerate() {
            if Some(i) != canary_pos && i != stable_pos && d.get("weight").is_some_and(|w| !w.is_null()) {
                d["weight"] = json!(eff[i] * k);
            }
        }
    }
    dests[stable_pos]["weight"] = json!(stable);
    match canary_pos {
        Some(c) => dests[c]["weight"] = json!(canary),
        None => {
            let mut c = canary_route_destination(&dests[stable_pos], canary_dest);
            c["weight"] = json!(canary);
            dests.insert(stable_pos + 1, c);
        }
    }
}

/// A copy of the stable route destination (port, header manipulation) aimed at the canary's
/// host and subset.
pub(super) fn canary_route_destination(stable: &Value, canary_dest: &Value) -> Value {
    let mut c = stable.clone();
    match c.get_mut("destination").and_then(Value::as_object_mut) {
        Some(d) => {
            for key in ["host", "subset"] {
                d.insert(key.into(), canary_dest[key].clone());
            }
        }
        None => c = json!({"destination": canary_dest}),
    }
    c
}

/// The step's condition as an Istio `StringMatch`.
pub(super) fn condition(h: &HeaderMatch) -> Value {
    let mut cond = Map::new();
    for (k, v) in [("exact", &h.exact), ("prefix", &h.prefix), ("regex", &h.regex)] {
        if let Some(v) = v {
            cond.insert(k.into(), json!(v));
        }
    }
    Value::Object(cond)
}

fn header_entry<'a>(block: &'a Value, header: &str) -> Option<&'a Value> {
    block.get("headers")?.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(header)).map(|(_, v)| v)
}

/// Indexes of the route's match blocks that already constrain `h.header` with a different
/// condition: Istio cannot require two conditions on one header in one block.
pub(super) fn header_conflicts(route: &Value, h: &HeaderMatch) -> Vec<usize> {
    let cond = condition(h);
    let blocks = route.get("match").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    (0..blocks.len()).filter(|i| header_entry(&blocks[*i], &h.header).is_some_and(|c| *c != cond)).collect()
}

/// The managed header route: the policy route with the step's condition ANDed into every match
/// block, sending everything to the canary. Blocks that already constrain the header
/// differently ([`header_conflicts`]) are left out, so the clone never matches a request the
/// policy route would not; `None` when no block is left.
pub(super) fn header_clone(
    policy_route: &Value,
    h: &HeaderMatch,
    name: &str,
    stable: Option<&Value>,
    canary_dest: &Value,
) -> Option<Value> {
    let mut obj = policy_route.as_object().cloned().unwrap_or_default();
    for key in ["name", "route", "mirror", "mirrorPercentage", "mirrorPercent", "mirrors"] {
        obj.remove(key);
    }
    let cond = condition(h);
    let blocks = obj.get("match").and_then(Value::as_array).cloned().unwrap_or_default();
    let blocks: Vec<Value> = if blocks.is_empty() {
        vec![json!({"headers": {h.header.clone(): cond}})]
    } else {
        let kept: Vec<Value> = blocks
            .into_iter()
            .filter_map(|mut b| match header_entry(&b, &h.header) {
                Some(c) => (*c == cond).then_some(b),
                None => {
                    // A block that is not an object is not valid Istio; it is left out.
                    let block = b.as_object_mut()?;
                    let headers = block.entry("headers").or_insert_with(|| json!({}));
                    if !headers.is_object() {
                        *headers = json!({});
                    }
                    headers.as_object_mut()?.insert(h.header.clone(), cond.clone());
                    Some(b)
                }
            })
            .collect();
        if kept.is_empty() {
            return None;
        }
        kept
    };
    let mut dest = match stable {
        Some(s) => canary_route_destination(s, canary_dest),
        None => json!({"destination": canary_dest}),
    };
    dest["weight"] = json!(100);
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("match".into(), Value::Array(blocks));
    out.extend(obj.into_iter().filter(|(k, _)| k != "match"));
    out.insert("route".into(), json!([dest]));
    Some(Value::Object(out))
}

/// The step's header condition read back from the managed route: a header every match block
/// of it has with the same condition, preferring one that no block of the policy route has
/// with that condition (the policy route may share other headers with its clone).
pub(super) fn read_header_match(managed: &Value, policy_route: &Value) -> Option<HeaderMatch> {
    let blocks = managed.get("match").and_then(Value::as_array)?;
    let first = blocks.first()?.get("headers").and_then(Value::as_object)?;
    let everywhere: Vec<(&String, &Value)> =
        first.iter().filter(|(k, c)| blocks.iter().all(|b| header_entry(b, k) == Some(*c))).collect();
    let own = policy_route.get("match").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let (header, cond) = everywhere
        .iter()
        .find(|(k, c)| !own.iter().any(|b| header_entry(b, k) == Some(*c)))
        .or_else(|| everywhere.first())
        .copied()?;
    let get = |k: &str| cond.get(k).and_then(Value::as_str).map(str::to_string);
    Some(HeaderMatch {
        header: header.clone(),
        exact: get("exact"),
        prefix: get("prefix"),
        regex: get("regex"),
    })
}

/// The recorded `route` array, if it still fits the route: it parses, has valid weights,
/// holds the stable destination, and lists the same destinations as the route now (ignoring
/// the canary, which canaryd may have added). Weights are computed from it rather than from
/// the current weights, so scaling for exactness never compounds from step to step.
pub(super) fn record_base(
    record: &str,
    route: &str,
    current: &[Value],
    is_stable: impl Fn(&Value) -> bool,
    is_canary: impl Fn(&Value) -> bool,
) -> Option<Vec<Value>> {
    let parsed: Value = serde_json::from_str(record).ok()?;
    let dests = parsed.as_array()?;
    effective_weights(route, dests).ok()?;
    dests.iter().position(&is_stable)?;
    let targets = |ds: &[Value]| -> Vec<Value> {
        ds.iter()
            .filter(|d| !is_canary(d))
            .map(|d| d.get("destination").cloned().unwrap_or_default())
            .collect()
    };
    (targets(dests) == targets(current)).then(|| dests.clone())
}

/// The recorded `route` array to put back for stable-only traffic: a [`record_base`] that
/// reads back as stable-only (canary share rounds to 0).
pub(super) fn usable_record(
    record: &str,
    route: &str,
    current: &[Value],
    is_stable: impl Fn(&Value) -> bool + Copy,
    is_canary: impl Fn(&Value) -> bool + Copy,
) -> Option<Vec<Value>> {
    let dests = record_base(record, route, current, is_stable, is_canary)?;
    let eff = effective_weights(route, &dests).ok()?;
    let stable = dests.iter().position(&is_stable).map_or(0, |s| eff[s]);
    let canary = dests.iter().position(is_canary).map_or(0, |c| eff[c]);
    (canary_share(stable, canary) == 0).then_some(dests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_exact_and_uses_the_smallest_factor() {
        assert_eq!(split(100, 30, 100), Some((1, 70, 30)));
        assert_eq!(split(3, 10, 100), Some((7, 19, 2)));
        assert_eq!(split(150, 33, 100), Some((1, 100, 50)));
        assert_eq!(split(0, 10, 100), None);
        for pair in 1..300 {
            for w in 0..=100 {
                let (k, s, c) = split(pair, w, 100).unwrap();
                assert_eq!(s + c, pair * k);
                assert_eq!(canary_share(s, c), w, "{pair} {w}");
            }
        }
    }

    #[test]
    fn the_step_header_is_told_apart_from_the_routes_own_headers() {
        let policy_route = json!({"match": [
            {"headers": {"zz-user": {"prefix": "j"}}},
            {"uri": {"prefix": "/a"}, "headers": {"a-tenant": {"exact": "x"}}},
            {"uri": {"prefix": "/b"}, "headers": {"a-tenant": {"exact": "x"}}}
        ]});
        let step =
            HeaderMatch { header: "zz-user".into(), exact: Some("jason".into()), prefix: None, regex: None };
        let clone =
            header_clone(&policy_route, &step, "m", None, &json!({"host": "r", "subset": "v2"})).unwrap();
        assert_eq!(clone["match"].as_array().unwrap().len(), 2);
        assert_eq!(read_header_match(&clone, &policy_route), Some(step));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        let canary = json!({"host": "r", "subset": "v2"});
        assert_eq!(
            canary_route_destination(&json!({"subset": "v1", "destination": 5}), &canary),
            json!({"destination": canary})
        );
        let step = HeaderMatch { header: "u".into(), exact: Some("j".into()), prefix: None, regex: None };
        let route = json!({"match": ["x", {"headers": 3}]});
        let clone = header_clone(&route, &step, "m", Some(&json!({"destination": "v1"})), &canary).unwrap();
        assert_eq!(clone["match"], json!([{"headers": {"u": {"exact": "j"}}}]));
        let mut dests = vec![json!({"subset": "v1", "destination": 5, "weight": 1}), json!({"weight": 1})];
        set_canary_weight("r", &mut dests, 0, None, &canary, 50);
        assert_eq!(dests.len(), 3);
    }

    #[test]
    fn huge_weights_stay_within_int32() {
        assert!(matches!(
            effective_weights("r", &[json!({"weight": i64::MAX})]),
            Err(VsError::BadWeight { .. })
        ));
        let canary = json!({"host": "r", "subset": "v2"});
        let mut dests =
            vec![json!({"destination": {"subset": "v1"}, "weight": MAX_WEIGHT - 1}), json!({"weight": 1})];
        set_canary_weight("r", &mut dests, 0, None, &canary, 33);
        let sum: i64 = dests.iter().map(|d| d["weight"].as_i64().unwrap()).sum();
        assert!(sum <= MAX_WEIGHT, "{dests:?}");
        assert_eq!(split(3, 10, 1), Some((1, 3, 0)));
    }
}
