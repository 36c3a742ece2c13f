//! The router's rules, one test each.
use super::*;
use serde_json::json;

fn pod(ns: &str, name: &str, app: &str, version: &str, ready: bool) -> Value {
    json!({
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {"app": app, "version": version, "pod-template-hash": "abc12"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": format!("{app}-{version}-abc12")}],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    })
}

fn dr(ns: &str, host: &str, extra: Value) -> Value {
    let mut v = json!({
        "metadata": {"name": "reviews", "namespace": ns},
        "spec": {"host": host, "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ]},
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    v
}

fn vs(ns: &str, spec: Value) -> Value {
    json!({"metadata": {"name": "reviews", "namespace": ns, "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": spec})
}

fn split(w1: u32, w2: u32) -> Value {
    json!([
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": w1},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": w2},
    ])
}

fn pods() -> Vec<Value> {
    vec![
        pod("bookinfo", "reviews-v1-abc12-x", "reviews", "v1", true),
        pod("bookinfo", "reviews-v2-abc12-y", "reviews", "v2", true),
    ]
}

struct Req {
    host: &'static str,
    ns: &'static str,
    path: &'static str,
    headers: BTreeMap<String, String>,
    port: Option<u32>,
    gateway: Option<&'static str>,
    source: BTreeMap<String, String>,
}

impl Req {
    fn new(host: &'static str) -> Self {
        Req {
            host,
            ns: "bookinfo",
            path: "/",
            headers: BTreeMap::new(),
            port: None,
            gateway: None,
            source: [("app".to_string(), "productpage".to_string())].into(),
        }
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.insert(k.into(), v.into());
        self
    }
    fn get(&self) -> Request<'_> {
        Request {
            host: self.host,
            client_namespace: self.ns,
            path: self.path,
            headers: &self.headers,
            port: self.port,
            gateway: self.gateway,
            source_labels: &self.source,
        }
    }
}

fn workloads(out: &[(Outcome, f64)]) -> Vec<(String, f64)> {
    out.iter()
        .map(|(o, p)| {
            let w = match o {
                Outcome::Served { workload, .. } => workload.clone(),
                Outcome::NoHealthyUpstream { subset, .. } => {
                    format!("UH:{}", subset.clone().unwrap_or_default())
                }
                Outcome::NoRoute => "NR".into(),
            };
            (w, (p * 1e9).round() / 1e9)
        })
        .collect()
}

fn check(vss: &[Value], drs: &[Value], pods: &[Value], req: &Req) -> Vec<(String, f64)> {
    let objects = MeshObjects { virtual_services: vss, destination_rules: drs, pods };
    let out = shares(&objects, &req.get());
    let total: f64 = out.iter().map(|x| x.1).sum();
    assert!((total - 1.0).abs() < 1e-9, "{out:?}");
    workloads(&out)
}

#[test]
fn relative_weights_3_to_1() {
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(3, 1)}]}))];
    let d = [dr("bookinfo", "reviews", json!({}))];
    let got = check(&v, &d, &pods(), &Req::new("reviews"));
    assert_eq!(got, vec![("reviews-v1".into(), 0.75), ("reviews-v2".into(), 0.25)]);
    let objects = MeshObjects { virtual_services: &v, destination_rules: &d, pods: &pods() };
    let r = Req::new("reviews.bookinfo.svc.cluster.local");
    assert_eq!(route(&objects, &r.get(), 0.74, 0.0).workload(), Some("reviews-v1"));
    assert_eq!(route(&objects, &r.get(), 0.76, 0.0).workload(), Some("reviews-v2"));
    let Outcome::Served { route: name, host, subset, pod, .. } = route(&objects, &r.get(), 0.9, 0.5) else {
        panic!("served")
    };
    assert_eq!((name.as_str(), host.as_str()), ("#0", "reviews.bookinfo.svc.cluster.local"));
    assert_eq!((subset.as_deref(), pod.as_str()), (Some("v2"), "reviews-v2-abc12-y"));
}

#[test]
fn single_destination_takes_all_and_zero_weights_get_nothing() {
    let one = json!([{"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]);
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": one}]}))];
    let d = [dr("bookinfo", "reviews", json!({}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("reviews-v2".into(), 1.0)]);
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(100, 0)}]}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("reviews-v1".into(), 1.0)]);
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(0, 0)}]}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("NR".into(), 1.0)]);
}

#[test]
fn header_is_anded_with_uri_and_first_match_wins() {
    let spec = json!({"hosts": ["reviews"], "http": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/api"}}],
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        {"name": "later", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
    ]});
    let v = [vs("bookinfo", spec)];
    let d = [dr("bookinfo", "reviews", json!({}))];
    let p = pods();
    let objects = MeshObjects { virtual_services: &v, destination_rules: &d, pods: &p };
    let route_of = |r: &Req| match route(&objects, &r.get(), 0.0, 0.0) {
        Outcome::Served { route, workload, .. } => format!("{route}:{workload}"),
        other => format!("{other:?}"),
    };
    let mut r = Req::new("reviews").header("end-user", "jason");
    r.path = "/api/x";
    assert_eq!(route_of(&r), "jason:reviews-v2");
    r.path = "/other";
    assert_eq!(route_of(&r), "later:reviews-v1", "uri fails: the next route that matches");
    let mut r = Req::new("reviews").header("end-user", "alice");
    r.path = "/api/x";
    assert_eq!(route_of(&r), "#2:reviews-v1", "header fails");
}

#[test]
fn match_conditions() {
    let with = |m: Value| {
        vs(
            "bookinfo",
            json!({"hosts": ["reviews"], "http": [
                {"match": [m], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            ]}),
        )
    };
    let d = [dr("bookinfo", "reviews", json!({}))];
    let p = pods();
    let hit = |m: Value, r: &Req| {
        let v = [with(m)];
        let objects = MeshObjects { virtual_services: &v, destination_rules: &d, pods: &p };
        route(&objects, &r.get(), 0.0, 0.0) != Outcome::NoRoute
    };
    let mut r = Req::new("reviews").header("x-canary", "yes").header(":method", "POST");
    r.path = "/Api/v1?user=jason&debug";
    r.port = Some(9080);
    assert!(hit(json!({"uri": {"exact": "/Api/v1"}}), &r), "exact ignores the query");
    assert!(!hit(json!({"uri": {"exact": "/api/v1"}}), &r));
    assert!(hit(json!({"uri": {"exact": "/api/v1"}, "ignoreUriCase": true}), &r));
    assert!(hit(json!({"uri": {"prefix": "/api"}, "ignoreUriCase": true}), &r));
    assert!(hit(json!({"uri": {"regex": "/Api/v[0-9]"}}), &r), "regex is a full match of the path");
    assert!(!hit(json!({"uri": {"regex": "/Api"}}), &r), "not a substring search");
    assert!(
        !hit(json!({"uri": {"regex": "/api/v1"}, "ignoreUriCase": true}), &r),
        "regex ignores ignoreUriCase"
    );
    assert!(hit(json!({"headers": {"x-canary": {}}}), &r), "presence");
    assert!(!hit(json!({"headers": {"x-other": {}}}), &r));
    assert!(hit(json!({"headers": {"X-Canary": {"regex": "y.s"}}}), &r));
    assert!(!hit(json!({"headers": {"x-canary": {"prefix": "no"}}}), &r));
    assert!(!hit(json!({"withoutHeaders": {"x-canary": {}}}), &r));
    assert!(hit(json!({"withoutHeaders": {"x-canary": {"exact": "no"}}}), &r));
    assert!(hit(json!({"queryParams": {"user": {"exact": "jason"}, "debug": {}}}), &r));
    assert!(!hit(json!({"queryParams": {"user": {"exact": "bob"}}}), &r));
    assert!(hit(json!({"port": 9080}), &r) && !hit(json!({"port": 80}), &r));
    assert!(hit(json!({"method": {"exact": "POST"}}), &r) && !hit(json!({"method": {"exact": "GET"}}), &r));
    assert!(hit(json!({"authority": {"prefix": "rev"}}), &r));
    assert!(hit(json!({"sourceLabels": {"app": "productpage"}}), &r));
    assert!(!hit(json!({"sourceLabels": {"app": "ratings"}}), &r));
    assert!(hit(json!({"sourceNamespace": "bookinfo"}), &r) && !hit(json!({"sourceNamespace": "x"}), &r));
    assert!(hit(json!({"gateways": ["mesh"]}), &r) && !hit(json!({"gateways": ["ingress"]}), &r));
    assert!(hit(json!({"name": "n", "uri": {"prefix": "/"}}), &r));
    assert!(!hit(json!({"someFutureField": {"exact": "x"}}), &r), "unknown conditions match nothing");
    assert!(!hit(json!({"uri": {"regex": "("}}), &r), "an invalid regex matches nothing");
}

#[test]
fn subset_without_ready_pods_is_uh_and_not_rebalanced() {
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(90, 10)}]}))];
    let d = [dr("bookinfo", "reviews", json!({}))];
    let mut p = pods();
    p[1] = pod("bookinfo", "reviews-v2-abc12-y", "reviews", "v2", false);
    let mut deleting = pod("bookinfo", "reviews-v2-abc12-z", "reviews", "v2", true);
    deleting["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    let mut pending = pod("bookinfo", "reviews-v2-abc12-w", "reviews", "v2", true);
    pending["status"]["phase"] = json!("Pending");
    p.push(deleting);
    p.push(pending);
    let got = check(&v, &d, &p, &Req::new("reviews"));
    assert_eq!(got, vec![("reviews-v1".into(), 0.9), ("UH:v2".into(), 0.1)]);
    let objects = MeshObjects { virtual_services: &v, destination_rules: &d, pods: &p };
    assert!(matches!(
        route(&objects, &Req::new("reviews").get(), 0.95, 0.0),
        Outcome::NoHealthyUpstream { .. }
    ));
    // An undefined subset (Envoy's NC) reaches no workload either.
    let v = [vs(
        "bookinfo",
        json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v9"}}]}]}),
    )];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("UH:v9".into(), 1.0)]);
}

#[test]
fn pods_split_evenly_and_workload_comes_from_the_owner() {
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(50, 50)}]}))];
    let d = [dr("bookinfo", "reviews", json!({}))];
    let mut p = pods();
    p.push(pod("bookinfo", "reviews-v1-abc12-q", "reviews", "v1", true));
    p.push(pod("bookinfo", "ratings-v1-abc12-q", "ratings", "v1", true));
    let objects = MeshObjects { virtual_services: &v, destination_rules: &d, pods: &p };
    let out = shares(&objects, &Req::new("reviews").get());
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out.iter().all(|(o, _)| o.workload().is_some_and(|w| w.starts_with("reviews-v"))));
    let v1: f64 = out.iter().filter(|(o, _)| o.workload() == Some("reviews-v1")).map(|x| x.1).sum();
    assert!((v1 - 0.5).abs() < 1e-12);
}

#[test]
fn gateway_virtual_service_vs_mesh() {
    let gw = json!({"metadata": {"name": "edge", "namespace": "bookinfo"}, "spec": {
        "hosts": ["reviews.example.com", "reviews"], "gateways": ["istio-system/ingress"],
        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}});
    let mesh = vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(100, 0)}]}));
    let v = [gw, mesh];
    let d = [dr("bookinfo", "reviews", json!({}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("reviews-v1".into(), 1.0)]);
    let mut r = Req::new("reviews.example.com:443");
    r.ns = "istio-system";
    r.gateway = Some("ingress");
    assert_eq!(check(&v, &d, &pods(), &r), vec![("reviews-v2".into(), 1.0)]);
    r.gateway = Some("other/ingress");
    assert_eq!(check(&v, &d, &pods(), &r), vec![("NR".into(), 1.0)]);
}

#[test]
fn export_to_hides_a_virtual_service_from_other_namespaces() {
    let private =
        vs("bookinfo", json!({"hosts": ["reviews"], "exportTo": ["."], "http": [{"route": split(0, 100)}]}));
    let v = [private];
    let d = [dr("bookinfo", "reviews", json!({}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("reviews-v2".into(), 1.0)]);
    let mut r = Req::new("reviews.bookinfo");
    r.ns = "frontend";
    // Not visible: the default route, every ready pod of the service.
    assert_eq!(check(&v, &d, &pods(), &r), vec![("reviews-v1".into(), 0.5), ("reviews-v2".into(), 0.5)]);
    // A short name resolves in the client namespace: another service, which has no pods.
    assert_eq!(
        check(&v, &d, &pods(), &Req { ns: "frontend", ..Req::new("reviews") }),
        vec![("NR".into(), 1.0)]
    );
}

#[test]
fn destination_rule_lookup_path_and_export() {
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(0, 100)}]}))];
    let host = "reviews.bookinfo.svc.cluster.local";
    // Only in the root namespace: found last on the path.
    let d = [dr("istio-system", host, json!({}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("reviews-v2".into(), 1.0)]);
    // A rule in the client namespace comes first, even if it maps v2 elsewhere.
    let mut swapped = dr("bookinfo", "reviews", json!({}));
    swapped["spec"]["subsets"][1]["labels"] = json!({"version": "v1"});
    let d2 = [dr("istio-system", host, json!({})), swapped];
    assert_eq!(check(&v, &d2, &pods(), &Req::new("reviews")), vec![("reviews-v1".into(), 1.0)]);
    // A root rule not exported to the client does not apply: the subset is undefined.
    let d3 = [dr("istio-system", host, json!({"exportTo": ["."]}))];
    assert_eq!(check(&v, &d3, &pods(), &Req::new("reviews")), vec![("UH:v2".into(), 1.0)]);
    // A rule in an unrelated namespace is not on the path.
    let d4 = [dr("elsewhere", host, json!({}))];
    assert_eq!(check(&v, &d4, &pods(), &Req::new("reviews")), vec![("UH:v2".into(), 1.0)]);
}

#[test]
fn no_matching_route_is_404() {
    let v = [vs(
        "bookinfo",
        json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/v2"}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}),
    )];
    let d = [dr("bookinfo", "reviews", json!({}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("NR".into(), 1.0)]);
}

#[test]
fn mirrors_are_reported_apart() {
    let v = [vs(
        "bookinfo",
        json!({"hosts": ["reviews"], "http": [{
        "route": split(100, 0),
        "mirror": {"host": "reviews", "subset": "v2"}, "mirrorPercentage": {"value": 25.0}}]}),
    )];
    let d = [dr("bookinfo", "reviews", json!({}))];
    assert_eq!(check(&v, &d, &pods(), &Req::new("reviews")), vec![("reviews-v1".into(), 1.0)]);
    let objects = MeshObjects { virtual_services: &v, destination_rules: &d, pods: &pods() };
    assert_eq!(workloads(&mirrors(&objects, &Req::new("reviews").get())), vec![("reviews-v2".into(), 0.25)]);
}

#[test]
fn deployments_stand_in_for_pods_until_there_are_pods() {
    let dep = |name: &str, version: &str, replicas: i64| {
        json!({"metadata": {"name": name, "namespace": "bookinfo"}, "spec": {"replicas": replicas,
            "template": {"metadata": {"labels": {"app": "reviews", "version": version}}}}})
    };
    let deps = [dep("reviews-v1", "v1", 2), dep("reviews-v2", "v2", 0)];
    let stand_ins = pods_or_deployment_stand_ins(vec![], &deps);
    assert_eq!(stand_ins.len(), 1);
    let v = [vs("bookinfo", json!({"hosts": ["reviews"], "http": [{"route": split(50, 50)}]}))];
    let d = [dr("bookinfo", "reviews", json!({}))];
    assert_eq!(
        check(&v, &d, &stand_ins, &Req::new("reviews")),
        vec![("reviews-v1".into(), 0.5), ("UH:v2".into(), 0.5)]
    );
    assert_eq!(pods_or_deployment_stand_ins(pods(), &deps), pods());
}

#[test]
fn host_resolution() {
    assert_eq!(resolve_request_host("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
    assert_eq!(resolve_request_host("reviews.other:9080", "bookinfo"), "reviews.other.svc.cluster.local");
    assert_eq!(resolve_request_host("reviews.other.svc", "bookinfo"), "reviews.other.svc.cluster.local");
    assert_eq!(fqdn("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
    assert_eq!(fqdn("reviews.other", "bookinfo"), "reviews.other");
    assert_eq!(host_match("*.example.com", "a.example.com"), Some(12));
}
