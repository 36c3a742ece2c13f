//! The HTTP front: path parsing into resource requests, faults, RBAC, verb dispatch and the
//! request log. Kubernetes paths are irregular, so one fallback handler parses them itself.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::error::{success_status, ApiError};
use super::faults::{injected_error, FaultKind, RequestInfo, RequestRecord};
use super::objects::{self, as_version, FieldValidation, Target, WriteOpts};
use super::patch::{self, PatchKind};
use super::resources::ResourceInfo;
use super::selectors::Selector;
use super::{deployments, discovery, openapi, table, watch, Shared};

/// Router state.
#[derive(Clone)]
pub(crate) struct App {
    pub shared: Shared,
    pub addr: String,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut b = Response::builder().status(code).header("content-type", "application/json");
    for w in warnings {
        b = b.header("warning", format!("299 - \"{}\"", w.replace('"', "'")));
    }
    b.body(Body::from(serde_json::to_vec(body).unwrap_or_default())).expect("static response parts")
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_status(), &[]);
    if e.code == 429 || e.code == 503 {
        r.headers_mut().insert("retry-after", "1".parse().expect("static header"));
    }
    r
}

/// The user a request authenticates as: a bearer token, or the user name of Basic auth (what
/// kubectl sends over plain HTTP, see `EmulatorHandle::write_kubeconfig_as`).
fn user_of(authorization: &str) -> Option<String> {
    use base64::Engine;
    if let Some(t) = authorization.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or_default().to_string())
}

/// A parsed resource request.
struct ResourceRequest {
    info: ResourceInfo,
    req: RequestInfo,
}

/// Resolves `rest` (the path after `/api/v1` or `/apis/{g}/{v}`) to a resource request.
fn resolve(
    app: &App,
    group: &str,
    version: &str,
    rest: &[&str],
    method: &Method,
    q: &HashMap<String, String>,
) -> Result<ResourceRequest, ApiError> {
    let (namespace, tail) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        (rest[1], &rest[2..])
    } else {
        ("", rest)
    };
    if tail.is_empty() || tail.len() > 3 {
        return Err(ApiError::no_route());
    }
    let (resource, name, sub) =
        (tail[0], tail.get(1).copied().unwrap_or(""), tail.get(2).copied().unwrap_or(""));
    let inner = app.shared.lock().expect("emulator lock");
    let info = inner.registry.find(group, version, resource).cloned().ok_or_else(ApiError::no_route)?;
    drop(inner);
    if (!info.namespaced && !namespace.is_empty())
        || (info.namespaced && namespace.is_empty() && !name.is_empty())
    {
        return Err(ApiError::no_route());
    }
    let sub_ok = match sub {
        "" => true,
        "status" => info.status_subresource,
        "scale" => info.scale_subresource,
        _ => false,
    };
    if !sub_ok {
        return Err(ApiError::no_route());
    }
    let watching = q.get("watch").is_some_and(|w| w == "1" || w == "true");
    let verb = match (method.as_str(), name.is_empty()) {
        ("GET", false) => "get",
        ("GET", true) if watching => "watch",
        ("GET", true) => "list",
        ("POST", true) => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        (m, _) => return Err(ApiError::method_not_allowed(m)),
    };
    if info.read_only && !matches!(verb, "get" | "list" | "watch") {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    // RBAC treats a list/watch narrowed to one name by field selector as a named request.
    let name = if name.is_empty() {
        q.get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
            .unwrap_or("")
    } else {
        name
    };
    Ok(ResourceRequest {
        req: RequestInfo {
            method: method.to_string(),
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: namespace.into(),
            name: name.into(),
        },
        info,
    })
}

/// The single entry point for every request.
pub(crate) async fn handle(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let q = parse_query(&query);
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(String::from);
    let user = header("authorization").and_then(|a| user_of(&a));
    let content_type = header("content-type");
    let accept = header("accept").unwrap_or_default();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut info_for_log = RequestInfo::default();
    let response = match segs.as_slice() {
        ["version"] => json_response(200, &discovery::version(), &[]),
        ["healthz" | "livez" | "readyz"] => Response::new(Body::from("ok")),
        ["openapi", "v3"] => {
            let reg = app.shared.lock().expect("emulator lock").registry.clone();
            json_response(200, &openapi::index(&reg), &[])
        }
        ["openapi", "v3", "api", "v1"] | ["openapi", "v3", "apis", _, _] => {
            let (g, v) = if segs[2] == "api" { ("", "v1") } else { (segs[3], segs[4]) };
            let doc = openapi::group_version(&app.shared.lock().expect("emulator lock").registry, g, v);
            doc.map_or_else(|| error_response(&ApiError::no_route()), |d| json_response(200, &d, &[]))
        }
        ["api"] => json_response(200, &discovery::core_versions(&app.addr), &[]),
        ["apis"] => {
            let reg = app.shared.lock().expect("emulator lock").registry.clone();
            json_response(200, &discovery::groups(&reg), &[])
        }
        ["apis", g] => {
            let doc = discovery::group(&app.shared.lock().expect("emulator lock").registry, g);
            doc.map_or_else(|| error_response(&ApiError::no_route()), |d| json_response(200, &d, &[]))
        }
        ["api", "v1"] | ["apis", _, _] => {
            let (g, v) = if segs[0] == "api" { ("", "v1") } else { (segs[1], segs[2]) };
            let doc = discovery::resources(&app.shared.lock().expect("emulator lock").registry, g, v);
            doc.map_or_else(|| error_response(&ApiError::no_route()), |d| json_response(200, &d, &[]))
        }
        ["api", "v1", rest @ ..] | ["apis", _, _, rest @ ..] => {
            let (g, v) = if segs[0] == "api" { ("", "v1") } else { (segs[1], segs[2]) };
            match resolve(&app, g, v, rest, &method, &q) {
                Ok(rr) => {
                    info_for_log = rr.req.clone();
                    serve_resource(
                        &app,
                        rr,
                        &q,
                        user.as_deref(),
                        content_type.as_deref(),
                        &accept,
                        &headers,
                        &body,
                    )
                    .await
                }
                Err(e) => error_response(&e),
            }
        }
        _ => error_response(&ApiError::no_route()),
    };
    let record = RequestRecord {
        method: method.to_string(),
        path,
        query,
        content_type,
        status: response.status().as_u16(),
        user,
        verb: info_for_log.verb.clone(),
        resource: if info_for_log.resource.is_empty() { String::new() } else { info_for_log.resource_path() },
        namespace: info_for_log.namespace,
        name: info_for_log.name,
    };
    app.shared.lock().expect("emulator lock").log.push(record);
    response
}

#[allow(clippy::too_many_arguments)]
async fn serve_resource(
    app: &App,
    rr: ResourceRequest,
    q: &HashMap<String, String>,
    user: Option<&str>,
    content_type: Option<&str>,
    accept: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    // Faults first: they stand for failures anywhere between the client and etcd.
    let fault = {
        let mut inner = app.shared.lock().expect("emulator lock");
        let hit = inner
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.kind != FaultKind::DropWatch && f.matcher.matches(&rr.req));
        hit.map(|f| {
            f.times -= 1;
            f.kind.clone()
        })
    };
    match fault {
        Some(FaultKind::Status(code)) => return error_response(&injected_error(code)),
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let mut inner = app.shared.lock().expect("emulator lock");
    if let Some(rbac) = &inner.rbac {
        if let Err(e) = rbac.authorize(user, &rr.req) {
            return error_response(&e);
        }
    }
    let info = &rr.info;
    let req = &rr.req;
    let selector = match Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    ) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    if req.verb == "watch" {
        drop(inner);
        let params = watch::WatchParams {
            resource_version: q.get("resourceVersion").cloned(),
            selector,
            timeout: q.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs),
            send_initial_events: q.get("sendInitialEvents").is_some_and(|s| s == "true"),
        };
        return watch::start(&app.shared, info, req.clone(), params);
    }
    let target = Target { info, namespace: &req.namespace, name: &req.name, subresource: &req.subresource };
    let user_agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    let opts = WriteOpts {
        field_manager: q.get("fieldManager").cloned().or_else(|| {
            // The apiserver's default manager is the user agent's program name.
            (content_type.and_then(PatchKind::from_content_type) != Some(PatchKind::Apply))
                .then(|| user_agent.split('/').next().unwrap_or("unknown").to_string())
        }),
        field_validation: match q.get("fieldValidation").map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("strict") => FieldValidation::Strict,
            Some("ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        },
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        force: q.get("force").is_some_and(|f| f == "true"),
        via_scale: false,
    };
    let parse_body = || -> Result<Value, ApiError> {
        match content_type.map(|c| c.split(';').next().unwrap_or("").trim()) {
            Some("application/yaml") => {
                serde_saphyr::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
            }
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}"))),
        }
    };
    let result: Result<Response, ApiError> = (|| match req.verb.as_str() {
        "get" => {
            let obj =
                inner.store.get(&target.key(&req.name)).cloned().ok_or_else(|| objects_not_found(&target))?;
            let obj = match req.subresource.as_str() {
                "scale" => deployments::scale_of(&obj),
                _ => as_version(info, obj),
            };
            if table::wants_table(accept) && req.subresource.is_empty() {
                let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                return Ok(json_response(
                    200,
                    &table::render(info, &[obj], &rv, q.get("includeObject").map_or("", |s| s)),
                    &[],
                ));
            }
            Ok(json_response(200, &obj, &[]))
        }
        "list" => {
            let ns = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
            // Pages as the API server gives them (`limit`, `continue`): clients such as
            // kube's watcher ask for 500 objects at a time and never hold a whole list.
            // The token carries the first page's resourceVersion (every page reports it, so
            // a watch started from it misses nothing) and the last object given.
            let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
                Some(token) => {
                    let mut parts = token.splitn(3, '/');
                    match (parts.next().and_then(|r| r.parse::<u64>().ok()), parts.next(), parts.next()) {
                        (Some(rv), Some(ns), Some(name)) => (rv, Some((ns.to_string(), name.to_string()))),
                        _ => return Err(ApiError::bad_request(format!("invalid continue token {token:?}"))),
                    }
                }
                None => (inner.store.current_rv(), None),
            };
            let name_of = |o: &Value| {
                let m = &o["metadata"];
                (
                    m["namespace"].as_str().unwrap_or_default().to_string(),
                    m["name"].as_str().unwrap_or_default().to_string(),
                )
            };
            let mut matching = inner
                .store
                .list(&info.group, &info.plural, ns)
                .into_iter()
                .filter(|o| selector.matches(o))
                .filter(|o| after.as_ref().is_none_or(|a| name_of(o) > *a));
            let mut items: Vec<Value> = matching
                .by_ref()
                .take(limit.unwrap_or(usize::MAX))
                .map(|o| as_version(info, o.clone()))
                .collect();
            let more = matching.next().is_some();
            let rv = list_rv.to_string();
            let next = match items.last() {
                Some(last) if more => {
                    let (ns, name) = name_of(last);
                    format!("{list_rv}/{ns}/{name}")
                }
                _ => String::new(),
            };
            items.shrink_to_fit();
            if table::wants_table(accept) {
                return Ok(json_response(
                    200,
                    &table::render(info, &items, &rv, q.get("includeObject").map_or("", |s| s)),
                    &[],
                ));
            }
            let mut metadata = json!({"resourceVersion": rv});
            if !next.is_empty() {
                metadata["continue"] = json!(next);
            }
            let list = json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(),
                              "metadata": metadata, "items": items});
            Ok(json_response(200, &list, &[]))
        }
        "create" => {
            let w = objects::create(&mut inner, &target, parse_body()?, &opts)?;
            Ok(json_response(if w.created { 201 } else { 200 }, &w.object, &w.warnings))
        }
        "update" => {
            let w = objects::update(&mut inner, &target, parse_body()?, &opts)?;
            Ok(json_response(200, &w.object, &w.warnings))
        }
        "patch" => {
            let kind = content_type
                .and_then(PatchKind::from_content_type)
                .ok_or_else(|| patch::unsupported_media_type(info.custom))?;
            let w = objects::patch(&mut inner, &target, kind, body, &opts)?;
            Ok(json_response(if w.created { 201 } else { 200 }, &w.object, &w.warnings))
        }
        "delete" => {
            let gone = objects::delete(&mut inner, &target)?;
            if info.custom {
                Ok(json_response(200, &as_version(info, gone), &[]))
            } else {
                let details = json!({"name": req.name, "kind": info.plural, "group": info.group, "uid": gone["metadata"]["uid"]});
                Ok(json_response(200, &success_status(details), &[]))
            }
        }
        "deletecollection" => {
            let ns = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
            let names: Vec<String> = inner
                .store
                .list(&info.group, &info.plural, ns)
                .into_iter()
                .filter(|o| selector.matches(o))
                .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
                .collect();
            for n in &names {
                let t = Target {
                    name: n,
                    ..Target { info, namespace: &req.namespace, name: "", subresource: "" }
                };
                objects::delete(&mut inner, &t)?;
            }
            Ok(json_response(200, &success_status(json!({"kind": info.plural, "group": info.group})), &[]))
        }
        other => Err(ApiError::method_not_allowed(other)),
    })();
    match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn objects_not_found(t: &Target) -> ApiError {
    ApiError::not_found(&t.subject(t.name))
}
