//! A pure Istio HTTP router over plain JSON objects: which workload (pod) a request reaches
//! given the VirtualServices, DestinationRules and Pods of a cluster. No emulator state is
//! needed; the simulators in canaryd's tests and demo feed it what the emulator stores, so
//! there is one routing rule in the codebase.
//!
//! # Semantics (checked against istio.io's VirtualService / DestinationRule references and the
//! "Cross-namespace configuration sharing" guide)
//!
//! * **Host names.** A VirtualService host, a destination host and a DestinationRule host
//!   without a dot is a short name, expanded in the namespace of the object that names it
//!   (`reviews` in `bookinfo` = `reviews.bookinfo.svc.cluster.local`); a name with a dot is
//!   taken as written (Istio only expands dotless names). Wildcards (`*`, `*.example.com`)
//!   match by suffix; an exact host beats a wildcard. The *request* host is what a client
//!   calls, resolved the way the pod's DNS search path and the sidecar's virtual-host domains
//!   do for Kubernetes services: `reviews` → in the client namespace, `reviews.bookinfo` and
//!   `reviews.bookinfo.svc` → completed to `.svc.cluster.local`, anything longer as written; a
//!   `:port` suffix is dropped. Gateway requests are matched by their Host as written (plus
//!   the same completion, harmlessly). ServiceEntries are not modelled.
//! * **VirtualService selection.** `spec.hosts` must contain the request host; `spec.gateways`
//!   (absent = `[mesh]`) must contain the request's gateway (`None` = `mesh`; names are
//!   `ns/name` or `name` in the VirtualService's namespace; a request's gateway without a
//!   namespace is taken in the client namespace); `exportTo` (absent or `*` = everywhere, `.`
//!   = the VirtualService's namespace, `~` = nowhere, else namespace names) must include the
//!   client namespace (for gateway traffic the caller passes the gateway's namespace as
//!   `client_namespace`). When several VirtualServices claim the host, the oldest
//!   (`creationTimestamp`, then namespace/name) wins, as pilot does for sidecars (gateway
//!   merging and `delegate` are not modelled).
//! * **No VirtualService.** Istio's default route: all ready pods of the service. A host
//!   with no pod at all (ready or not) is taken as unknown → [`Outcome::NoRoute`].
//! * **Routes.** `spec.http` in order; the first route whose `match` list has ANY block whose
//!   conditions ALL hold (no `match` = always). None matches → [`Outcome::NoRoute`] (Envoy
//!   404, flag NR). Conditions, per `HTTPMatchRequest`:
//!   - `uri` — `exact` / `prefix` / `regex` on the path; `exact` and `regex` see the path
//!     without its query string (Envoy's path matching), `prefix` the whole `:path`;
//!     `ignoreUriCase` applies to `exact` and `prefix` only (as documented).
//!   - `headers` — keys compared lowercase; `exact` / `prefix` / `regex`; an empty match
//!     (`{}`) checks presence. `withoutHeaders` — the block fails if the header matches.
//!   - `queryParams` — `exact` / `prefix` / `regex` on the query string's values; `{}` presence.
//!   - `scheme`, `method`, `authority` — StringMatch against the `:scheme` (default `http`),
//!     `:method` (default `GET`) and `:authority` (default: the request host as called)
//!     entries of [`Request::headers`].
//!   - `port` — the request's port. `gateways` — overrides the VirtualService's gateways for
//!     this block. `sourceLabels` — all must be on the client (the source workload's labels).
//!     `sourceNamespace` — the client namespace. `name` / `statPrefix` — not conditions.
//!   - Regexes are full matches (Envoy uses RE2 anchored at both ends); a regex that does not
//!     compile matches nothing (Istio would have rejected the object).
//!   - **Any other key** in a match block makes the block match nothing: traffic is never
//!     routed by a condition this router does not understand.
//! * **Destinations.** Weights are relative (`weight / sum`); a route with one destination
//!   sends it everything whatever its weight; weight 0 (or absent among several) gets
//!   nothing; a route whose weights sum to 0 → [`Outcome::NoRoute`]. A route with
//!   `redirect`, `directResponse` or `delegate` reaches no workload → [`Outcome::NoRoute`]
//!   (not modelled further). `fault`, `retries`, `timeout`, rewrites: ignored.
//! * **Subsets.** The DestinationRule is looked up in the client namespace, then the
//!   destination host's namespace, then the root namespace `istio-system`, the first one on
//!   that path whose `spec.host` matches and that is exported to the client (`exportTo` as
//!   above; `workloadSelector` rules apply only to clients whose labels match). A subset the
//!   rule does not define (or no rule) is Envoy's 503 NC (cluster not found); it is reported
//!   as [`Outcome::NoHealthyUpstream`] too, since both are source-only 503s that reach no
//!   workload.
//! * **Endpoints.** Pods in the host's namespace (`name.ns.svc.cluster.local`). Services are
//!   not modelled: a service `reviews` selects pods whose `app` label is `reviews`, and pods
//!   without an `app` label (the label is how the emulator's fixtures name a service); a
//!   subset adds its `labels`. A pod is an endpoint when `status.phase` is `Running`, its
//!   `Ready` condition is `"True"`, and it is not being deleted (`deletionTimestamp`). A
//!   chosen destination without ready endpoints → [`Outcome::NoHealthyUpstream`] (Envoy 503,
//!   flag UH): Istio does not re-balance the weight to the other destinations. Among ready
//!   pods the choice is uniform (the default LEAST_REQUEST balancer evens out).
//! * **Workload.** A pod's owning Deployment from `ownerReferences` (a `Deployment` owner, or
//!   a `ReplicaSet` owner minus its `-<pod-template-hash>` suffix), else its `app` label,
//!   else the pod name.
//! * **Mirroring.** `mirror` (+ `mirrorPercentage.value`, legacy `mirrorPercent`; absent =
//!   100 %) and `mirrors[]` (+ `percentage.value`) are not part of [`route`]'s answer
//!   (shadow requests are fire-and-forget); [`mirrors`] reports them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The root namespace of Istio's configuration.
pub const ROOT_NAMESPACE: &str = "istio-system";
const DOMAIN: &str = "svc.cluster.local";

/// The cluster objects the router reads (any namespaces; the lists may hold more than needed).
#[derive(Debug, Clone, Copy)]
pub struct MeshObjects<'a> {
    pub virtual_services: &'a [Value],
    pub destination_rules: &'a [Value],
    pub pods: &'a [Value],
}

/// One HTTP request as the mesh sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The host as the client calls it: short, `name.ns` or FQDN (a `:port` is ignored).
    pub host: &'a str,
    /// The client's namespace (for gateway traffic: the gateway's).
    pub client_namespace: &'a str,
    /// `:path`, with the query string if any.
    pub path: &'a str,
    /// Request headers, lowercase keys; `:method`, `:scheme`, `:authority` may be given.
    pub headers: &'a BTreeMap<String, String>,
    /// The port called, when known.
    pub port: Option<u32>,
    /// The gateway the request enters through (`ns/name` or `name`); `None` = a sidecar (`mesh`).
    pub gateway: Option<&'a str>,
    /// The labels of the client workload.
    pub source_labels: &'a BTreeMap<String, String>,
}

impl<'a> Request<'a> {
    /// A plain `GET /` from a sidecar (the `mesh` gateway) in `client_namespace`, any port: how
    /// the simulators' callers (bookinfo's productpage) reach a service.
    pub fn from_sidecar(
        host: &'a str,
        client_namespace: &'a str,
        headers: &'a BTreeMap<String, String>,
        source_labels: &'a BTreeMap<String, String>,
    ) -> Self {
        Request { host, client_namespace, path: "/", headers, port: None, gateway: None, source_labels }
    }
}

/// The labels of bookinfo's `productpage-v1`, the caller the simulators send requests from.
pub fn productpage_labels() -> BTreeMap<String, String> {
    [("app".to_string(), "productpage".to_string()), ("version".to_string(), "v1".to_string())].into()
}

/// The first container's image of the pod named `name` (in `namespace`, when given).
pub fn pod_image<'p>(pods: &'p [Value], name: &str, namespace: Option<&str>) -> Option<&'p str> {
    pods.iter()
        .find(|p| {
            p.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && namespace
                    .is_none_or(|ns| p.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
        })
        .and_then(|p| p.pointer("/spec/containers/0/image"))
        .and_then(Value::as_str)
}

/// Where a request ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A pod answered.
    Served {
        /// The HTTP route's `name`, or `#<index>` in `spec.http`, or `default` (no VirtualService).
        route: String,
        /// The destination host, fully qualified.
        host: String,
        subset: Option<String>,
        /// The pod's name.
        pod: String,
        /// The owning Deployment (or the pod's `app` label).
        workload: String,
    },
    /// Envoy's 503 with response flag UH (or NC for an undefined subset): reported by the
    /// source proxy only, with `destination_workload="unknown"`.
    NoHealthyUpstream { route: String, host: String, subset: Option<String> },
    /// Envoy's 404 with response flag NR.
    NoRoute,
}

impl Outcome {
    /// The serving workload, if a pod answered.
    pub fn workload(&self) -> Option<&str> {
        match self {
            Outcome::Served { workload, .. } => Some(workload),
            _ => None,
        }
    }
}

/// Routes one request. `pick` (uniform in `[0, 1)`) chooses among weighted destinations,
/// `pick_pod` among the chosen destination's ready pods.
pub fn route(objects: &MeshObjects, req: &Request, pick: f64, pick_pod: f64) -> Outcome {
    let (label, dests) = match decide(objects, req) {
        Decision::NoRoute => return Outcome::NoRoute,
        Decision::Default(host) => (String::from("default"), vec![(Target { host, subset: None }, 1.0)]),
        Decision::Route { label, destinations, .. } => (label, destinations),
    };
    let mut rest = pick.clamp(0.0, 1.0);
    let chosen = dests
        .iter()
        .find(|(_, share)| {
            rest -= share;
            rest < 0.0
        })
        .or(dests.last())
        .map(|(t, _)| t.clone());
    let Some(target) = chosen else { return Outcome::NoRoute };
    let endpoints = endpoints(objects, req, &target);
    match endpoints {
        Endpoints::Ready(pods) => {
            let i = ((pick_pod.clamp(0.0, 1.0) * pods.len() as f64) as usize).min(pods.len() - 1);
            served(&label, &target, pods[i])
        }
        Endpoints::None => {
            Outcome::NoHealthyUpstream { route: label, host: target.host, subset: target.subset }
        }
    }
}

/// The exact distribution of [`route`]'s outcomes over `pick` and `pick_pod`: probabilities
/// summing to 1, one entry per distinct outcome, in a stable order.
pub fn shares(objects: &MeshObjects, req: &Request) -> Vec<(Outcome, f64)> {
    let (label, dests) = match decide(objects, req) {
        Decision::NoRoute => return vec![(Outcome::NoRoute, 1.0)],
        Decision::Default(host) => (String::from("default"), vec![(Target { host, subset: None }, 1.0)]),
        Decision::Route { label, destinations, .. } => (label, destinations),
    };
    spread(objects, req, &label, &dests)
}

/// Shadow traffic of the route a request takes: each outcome with the fraction of the
/// route's requests mirrored there (the fractions need not sum to 1).
pub fn mirrors(objects: &MeshObjects, req: &Request) -> Vec<(Outcome, f64)> {
    let Decision::Route { label, route, vs_namespace, .. } = decide(objects, req) else {
        return vec![];
    };
    let mut out = Vec::new();
    let mut add = |dest: &Value, fraction: f64| {
        if fraction <= 0.0 {
            return;
        }
        if let Some(target) = target_of(dest, vs_namespace) {
            for (o, p) in spread(objects, req, &label, &[(target, 1.0)]) {
                out.push((o, p * fraction));
            }
        }
    };
    if let Some(dest) = route.get("mirror") {
        let percent = route
            .pointer("/mirrorPercentage/value")
            .and_then(Value::as_f64)
            .or_else(|| route.get("mirrorPercent").and_then(Value::as_f64))
            .unwrap_or(100.0);
        add(dest, percent.clamp(0.0, 100.0) / 100.0);
    }
    for m in route.get("mirrors").and_then(Value::as_array).into_iter().flatten() {
        let percent = m.pointer("/percentage/value").and_then(Value::as_f64).unwrap_or(100.0);
        if let Some(dest) = m.get("destination") {
            add(dest, percent.clamp(0.0, 100.0) / 100.0);
        }
    }
    out
}

/// The pods to route to: `pods` when there are any; otherwise, for an emulator that runs no
/// pods, one ready stand-in pod per Deployment with replicas > 0, carrying the pod template's
/// labels and owned by the Deployment (named `<deployment>-stand-in`).
pub fn pods_or_deployment_stand_ins(pods: Vec<Value>, deployments: &[Value]) -> Vec<Value> {
    if !pods.is_empty() {
        return pods;
    }
    deployments
        .iter()
        .filter(|d| d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) > 0)
        .filter(|d| d.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|d| {
            let name = d.pointer("/metadata/name")?.as_str()?;
            let namespace = d.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
            let labels = d.pointer("/spec/template/metadata/labels").cloned().unwrap_or_else(|| Value::Object(Map::new()));
            Some(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": format!("{name}-stand-in"),
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "controller": true}],
                },
                "spec": d.pointer("/spec/template/spec").cloned().unwrap_or(Value::Null),
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }))
        })
        .collect()
}

/// A fully qualified host for `host` named in `namespace` (dotless names are short names).
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_ascii_lowercase()
    } else {
        format!("{}.{namespace}.{DOMAIN}", host.to_ascii_lowercase())
    }
}

/// The host a client in `namespace` reaches by calling `host` (search-path completion).
pub fn resolve_request_host(host: &str, namespace: &str) -> String {
    let host =
        host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.{DOMAIN}"),
        1 => format!("{host}.{DOMAIN}"),
        2 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Target {
    host: String,
    subset: Option<String>,
}

enum Decision<'o> {
    NoRoute,
    /// No VirtualService: the service's own default route.
    Default(String),
    Route {
        label: String,
        route: &'o Value,
        vs_namespace: &'o str,
        destinations: Vec<(Target, f64)>,
    },
}

enum Endpoints<'o> {
    Ready(Vec<&'o Value>),
    None,
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn namespace_of(v: &Value) -> &str {
    str_at(v, "/metadata/namespace").unwrap_or("default")
}

/// Whether `pattern` (a host, possibly `*` or `*.suffix`) covers `host`; exact hosts rank 2,
/// wildcards 1 + suffix length, no match `None`.
fn host_match(pattern: &str, host: &str) -> Option<usize> {
    if pattern == host {
        Some(usize::MAX)
    } else if pattern == "*" {
        Some(0)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        host.ends_with(suffix).then_some(suffix.len())
    } else {
        None
    }
}

/// `exportTo` of an object in `own` namespace lets `client` see it.
fn exported_to(obj: &Value, own: &str, client: &str) -> bool {
    let Some(list) = obj.pointer("/spec/exportTo").and_then(Value::as_array) else {
        return true;
    };
    if list.is_empty() {
        return true;
    }
    list.iter().filter_map(Value::as_str).any(|e| match e {
        "*" => true,
        "." => own == client,
        "~" => false,
        ns => ns == client,
    })
}

fn qualify_gateway(name: &str, namespace: &str) -> String {
    if name == "mesh" || name.contains('/') {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

fn gateway_listed(gateways: &[Value], vs_namespace: &str, req: &Request) -> bool {
    let wanted = match req.gateway {
        None => "mesh".to_string(),
        Some(g) => qualify_gateway(g, req.client_namespace),
    };
    gateways.iter().filter_map(Value::as_str).any(|g| qualify_gateway(g, vs_namespace) == wanted)
}

fn decide<'o>(objects: &MeshObjects<'o>, req: &Request) -> Decision<'o> {
    let host = resolve_request_host(req.host, req.client_namespace);
    let mut candidates: Vec<(usize, &str, &str, &str, &Value)> = Vec::new();
    for vs in objects.virtual_services {
        let ns = namespace_of(vs);
        if !exported_to(vs, ns, req.client_namespace) {
            continue;
        }
        let default_gateways = [Value::from("mesh")];
        let gateways =
            vs.pointer("/spec/gateways").and_then(Value::as_array).map_or(&default_gateways[..], |g| &g[..]);
        if !gateway_listed(gateways, ns, req) {
            continue;
        }
        let rank = vs
            .pointer("/spec/hosts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|h| host_match(&fqdn(h, ns), &host))
            .max();
        if let Some(rank) = rank {
            let created = str_at(vs, "/metadata/creationTimestamp").unwrap_or("");
            let name = str_at(vs, "/metadata/name").unwrap_or("");
            candidates.push((rank, created, ns, name, vs));
        }
    }
    // The most specific host, then the oldest object.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(b.2)).then(a.3.cmp(b.3)));
    let Some(&(_, _, vs_namespace, _, vs)) = candidates.first() else {
        return if service_pods(objects, &host).next().is_some() {
            Decision::Default(host)
        } else {
            Decision::NoRoute
        };
    };
    let routes = vs.pointer("/spec/http").and_then(Value::as_array).map_or(&[][..], |r| &r[..]);
    let Some((index, route)) = routes.iter().enumerate().find(|(_, r)| route_matches(r, req, vs_namespace))
    else {
        return Decision::NoRoute;
    };
    let label = route.get("name").and_then(Value::as_str).map_or_else(|| format!("#{index}"), str::to_string);
    if ["redirect", "directResponse", "delegate"].iter().any(|k| route.get(k).is_some()) {
        return Decision::NoRoute;
    }
    let dests = route.get("route").and_then(Value::as_array).map_or(&[][..], |d| &d[..]);
    let weighted: Vec<(Target, f64)> = dests
        .iter()
        .filter_map(|d| {
            let target = target_of(d.get("destination")?, vs_namespace)?;
            let weight = if dests.len() == 1 {
                1.0
            } else {
                d.get("weight").and_then(Value::as_f64).unwrap_or(0.0).max(0.0)
            };
            Some((target, weight))
        })
        .collect();
    let total: f64 = weighted.iter().map(|x| x.1).sum();
    if total <= 0.0 {
        return Decision::NoRoute;
    }
    let destinations = weighted.into_iter().filter(|x| x.1 > 0.0).map(|(t, w)| (t, w / total)).collect();
    Decision::Route { label, route, vs_namespace, destinations }
}

fn target_of(destination: &Value, vs_namespace: &str) -> Option<Target> {
    let host = fqdn(destination.get("host")?.as_str()?, vs_namespace);
    let subset =
        destination.get("subset").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Some(Target { host, subset })
}

fn route_matches(route: &Value, req: &Request, vs_namespace: &str) -> bool {
    match route.get("match").and_then(Value::as_array) {
        None => true,
        Some(blocks) if blocks.is_empty() => true,
        Some(blocks) => blocks.iter().any(|b| block_matches(b, req, vs_namespace)),
    }
}

/// A StringMatch (`exact` / `prefix` / `regex`; `{}` = any value) against `value`.
fn string_match(m: &Value, value: &str, ignore_case: bool) -> bool {
    let Some(m) = m.as_object() else { return false };
    let fold = |s: &str| if ignore_case { s.to_lowercase() } else { s.to_string() };
    if let Some(e) = m.get("exact") {
        return e.as_str().is_some_and(|e| fold(e) == fold(value));
    }
    if let Some(p) = m.get("prefix") {
        return p.as_str().is_some_and(|p| fold(value).starts_with(&fold(p)));
    }
    if let Some(r) = m.get("regex") {
        return r
            .as_str()
            .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
            .is_some_and(|re| re.is_match(value));
    }
    // Only an empty match means "present"; an unknown kind matches nothing.
    m.is_empty()
}

fn header<'r>(req: &Request<'r>, name: &str) -> Option<&'r str> {
    let lower = name.to_ascii_lowercase();
    req.headers.iter().find(|(k, _)| k.to_ascii_lowercase() == lower).map(|(_, v)| v.as_str())
}

fn query_params(path: &str) -> BTreeMap<String, String> {
    let Some((_, query)) = path.split_once('?') else { return BTreeMap::new() };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn map_all<'v>(m: &'v Value, mut f: impl FnMut(&'v str, &'v Value) -> bool) -> bool {
    m.as_object().is_some_and(|m| m.iter().all(|(k, v)| f(k, v)))
}

fn block_matches(block: &Value, req: &Request, vs_namespace: &str) -> bool {
    let Some(block) = block.as_object() else { return false };
    let ignore_case = block.get("ignoreUriCase").and_then(Value::as_bool).unwrap_or(false);
    let path_only = req.path.split_once('?').map_or(req.path, |(p, _)| p);
    block.iter().all(|(key, cond)| match key.as_str() {
        "name" | "statPrefix" | "ignoreUriCase" => true,
        "uri" => match cond.as_object() {
            Some(m) if m.contains_key("prefix") => string_match(cond, req.path, ignore_case),
            Some(m) if m.contains_key("regex") => string_match(cond, path_only, false),
            _ => string_match(cond, path_only, ignore_case),
        },
        "scheme" => string_match(cond, header(req, ":scheme").unwrap_or("http"), false),
        "method" => string_match(cond, header(req, ":method").unwrap_or("GET"), false),
        "authority" => string_match(cond, header(req, ":authority").unwrap_or(req.host), false),
        "headers" => map_all(cond, |name, m| header(req, name).is_some_and(|v| string_match(m, v, false))),
        "withoutHeaders" => {
            map_all(cond, |name, m| !header(req, name).is_some_and(|v| string_match(m, v, false)))
        }
        "queryParams" => {
            let params = query_params(req.path);
            map_all(cond, |name, m| params.get(name).is_some_and(|v| string_match(m, v, false)))
        }
        "port" => cond.as_u64().is_some_and(|p| req.port.map(u64::from) == Some(p)),
        "gateways" => cond.as_array().is_some_and(|g| gateway_listed(g, vs_namespace, req)),
        "sourceLabels" => map_all(cond, |k, v| {
            v.as_str().is_some_and(|v| req.source_labels.get(k).map(String::as_str) == Some(v))
        }),
        "sourceNamespace" => cond.as_str() == Some(req.client_namespace),
        _ => false,
    })
}

/// The service's short name and namespace from `name.ns.svc.cluster.local`.
fn service_of(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(DOMAIN)?.strip_suffix('.')?;
    let (name, ns) = rest.split_once('.')?;
    (!ns.contains('.')).then_some((name, ns))
}

fn labels<'v>(v: &'v Value, pointer: &str) -> Option<&'v Map<String, Value>> {
    v.pointer(pointer).and_then(Value::as_object)
}

/// Every pod of the service named by `host` (ready or not).
fn service_pods<'o>(objects: &MeshObjects<'o>, host: &str) -> impl Iterator<Item = &'o Value> {
    let svc = service_of(host).map(|(n, ns)| (n.to_string(), ns.to_string()));
    objects.pods.iter().filter(move |p| {
        let Some((name, ns)) = &svc else { return false };
        namespace_of(p) == ns
            && labels(p, "/metadata/labels")
                .and_then(|l| l.get("app"))
                .is_none_or(|app| app.as_str() == Some(name))
    })
}

fn ready(pod: &Value) -> bool {
    str_at(pod, "/status/phase") == Some("Running")
        && pod.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The DestinationRule that applies to `host` for this client, on Istio's lookup path.
fn destination_rule<'o>(objects: &MeshObjects<'o>, req: &Request, host: &str) -> Option<&'o Value> {
    let host_ns = service_of(host).map(|x| x.1);
    let path = [Some(req.client_namespace), host_ns, Some(ROOT_NAMESPACE)];
    for ns in path.into_iter().flatten() {
        let best = objects
            .destination_rules
            .iter()
            .filter(|dr| namespace_of(dr) == ns)
            .filter(|dr| exported_to(dr, ns, req.client_namespace) || ns == req.client_namespace)
            .filter(|dr| {
                labels(dr, "/spec/workloadSelector/matchLabels").is_none_or(|sel| {
                    sel.iter().all(|(k, v)| v.as_str() == req.source_labels.get(k).map(String::as_str))
                })
            })
            .filter_map(|dr| Some((host_match(&fqdn(str_at(dr, "/spec/host")?, ns), host)?, dr)))
            .max_by_key(|x| x.0);
        if let Some((_, dr)) = best {
            return Some(dr);
        }
    }
    None
}

fn endpoints<'o>(objects: &MeshObjects<'o>, req: &Request, target: &Target) -> Endpoints<'o> {
    let subset_labels = match &target.subset {
        None => None,
        Some(name) => {
            let subset = destination_rule(objects, req, &target.host)
                .and_then(|dr| dr.pointer("/spec/subsets"))
                .and_then(Value::as_array)
                .and_then(|s| s.iter().find(|s| s["name"] == name.as_str()));
            match subset {
                Some(s) => Some(labels(s, "/labels").cloned().unwrap_or_default()),
                // Undefined subset: Envoy's NC; no workload answers.
                None => return Endpoints::None,
            }
        }
    };
    let mut pods: Vec<&Value> = service_pods(objects, &target.host)
        .filter(|p| ready(p))
        .filter(|p| {
            subset_labels.as_ref().is_none_or(|want| {
                let have = labels(p, "/metadata/labels");
                want.iter().all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
            })
        })
        .collect();
    pods.sort_by_key(|p| str_at(p, "/metadata/name").unwrap_or(""));
    if pods.is_empty() {
        Endpoints::None
    } else {
        Endpoints::Ready(pods)
    }
}

/// The workload a pod belongs to.
pub fn workload_of(pod: &Value) -> String {
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    for o in owners.into_iter().flatten() {
        let (Some(kind), Some(name)) = (o["kind"].as_str(), o["name"].as_str()) else { continue };
        match kind {
            "Deployment" => return name.to_string(),
            "ReplicaSet" => {
                let hash = str_at(pod, "/metadata/labels/pod-template-hash");
                let trimmed = match hash {
                    Some(h) => name.strip_suffix(h).and_then(|n| n.strip_suffix('-')),
                    None => name.rsplit_once('-').map(|x| x.0),
                };
                return trimmed.unwrap_or(name).to_string();
            }
            _ => {}
        }
    }
    str_at(pod, "/metadata/labels/app")
        .or_else(|| str_at(pod, "/metadata/name"))
        .unwrap_or_default()
        .to_string()
}

fn served(label: &str, target: &Target, pod: &Value) -> Outcome {
    Outcome::Served {
        route: label.to_string(),
        host: target.host.clone(),
        subset: target.subset.clone(),
        pod: str_at(pod, "/metadata/name").unwrap_or_default().to_string(),
        workload: workload_of(pod),
    }
}

fn spread(objects: &MeshObjects, req: &Request, label: &str, dests: &[(Target, f64)]) -> Vec<(Outcome, f64)> {
    let mut acc: BTreeMap<Outcome, f64> = BTreeMap::new();
    for (target, share) in dests {
        match endpoints(objects, req, target) {
            Endpoints::Ready(pods) => {
                let each = share / pods.len() as f64;
                for p in pods {
                    *acc.entry(served(label, target, p)).or_default() += each;
                }
            }
            Endpoints::None => {
                let o = Outcome::NoHealthyUpstream {
                    route: label.to_string(),
                    host: target.host.clone(),
                    subset: target.subset.clone(),
                };
                *acc.entry(o).or_default() += share;
            }
        }
    }
    acc.into_iter().collect()
}

#[cfg(test)]
mod tests;
