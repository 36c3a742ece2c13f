//! The resource registry: which (group, version, resource) triples the emulator serves, with
//! their kinds, scopes, subresources and (for custom resources) schemas.

use serde_json::Value;

use super::error::{ApiError, Cause};

/// Everything the server needs to know about one served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group, `""` for core.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural resource name used in paths, e.g. `virtualservices`.
    pub plural: String,
    /// Singular name, e.g. `virtualservice`.
    pub singular: String,
    /// Kind, e.g. `VirtualService`.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names, e.g. `vs`.
    pub short_names: Vec<String>,
    /// Discovery categories, e.g. `istio-io`.
    pub categories: Vec<String>,
    /// Has a `/status` subresource (status is then ignored on the main resource).
    pub status_subresource: bool,
    /// Has a `/scale` subresource (deployments).
    pub scale_subresource: bool,
    /// Defined by a CustomResourceDefinition (affects patch types and validation).
    pub custom: bool,
    /// The `openAPIV3Schema` of this version, for custom resources.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns` of this version, for tables.
    pub printer_columns: Vec<Value>,
    /// Only list/watch are served (e.g. pods here).
    pub read_only: bool,
}

impl ResourceInfo {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status_subresource: false,
            scale_subresource: false,
            custom: false,
            schema: None,
            printer_columns: vec![],
            read_only: false,
        }
    }

    /// `networking.istio.io/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.read_only {
            vec!["get", "list", "watch"]
        } else {
            vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        }
    }
}

/// All resources served, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Registry {
    /// The built-in resources: enough of core, apps, coordination, events and apiextensions.
    pub fn with_builtins() -> Self {
        let mut ns = ResourceInfo::builtin("", "v1", "namespaces", "Namespace", false);
        ns.short_names = vec!["ns".into()];
        ns.status_subresource = true;
        let mut cm = ResourceInfo::builtin("", "v1", "configmaps", "ConfigMap", true);
        cm.short_names = vec!["cm".into()];
        let mut svc = ResourceInfo::builtin("", "v1", "services", "Service", true);
        svc.short_names = vec!["svc".into()];
        svc.status_subresource = true;
        let mut ev = ResourceInfo::builtin("", "v1", "events", "Event", true);
        ev.short_names = vec!["ev".into()];
        let mut pods = ResourceInfo::builtin("", "v1", "pods", "Pod", true);
        pods.short_names = vec!["po".into()];
        pods.categories = vec!["all".into()];
        pods.read_only = true;
        let mut deploy = ResourceInfo::builtin("apps", "v1", "deployments", "Deployment", true);
        deploy.short_names = vec!["deploy".into()];
        deploy.categories = vec!["all".into()];
        deploy.status_subresource = true;
        deploy.scale_subresource = true;
        let mut crd = ResourceInfo::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        );
        crd.short_names = vec!["crd".into(), "crds".into()];
        crd.status_subresource = true;
        let resources = vec![
            ns,
            cm,
            ResourceInfo::builtin("", "v1", "secrets", "Secret", true),
            ev,
            svc,
            pods,
            deploy,
            ResourceInfo::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            ResourceInfo::builtin("events.k8s.io", "v1", "events", "Event", true),
            crd,
        ];
        Registry { resources }
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Any served version of `group/plural` (for fixture access independent of version).
    pub fn find_any_version(&self, group: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| r.group == group && r.plural == plural)
    }

    /// The resource for an object's `apiVersion` and `kind`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// All served resources.
    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Groups in first-registration order, each with its versions (first = preferred).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = vec![];
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version.clone()),
                Some(_) => {}
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Registers (or re-registers) every served version of a CRD object. Returns the plural
    /// and group so the caller can clean up on delete.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(String, String), ApiError> {
        let parsed = parse_crd(crd)?;
        let (group, plural) = (parsed[0].group.clone(), parsed[0].plural.clone());
        self.unregister(&group, &plural);
        self.resources.extend(parsed);
        Ok((group, plural))
    }

    /// Removes every version of `group/plural`.
    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.resources.retain(|r| !(r.custom && r.group == group && r.plural == plural));
    }
}

fn invalid_crd(name: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        name,
        vec![Cause { reason: "FieldValueRequired".into(), message: message.into(), field: field.into() }],
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// One `ResourceInfo` per served version of an `apiextensions.k8s.io/v1` CRD.
fn parse_crd(crd: &Value) -> Result<Vec<ResourceInfo>, ApiError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or_else(|| invalid_crd(name, "spec.group", "Required value"))?;
    let names = &spec["names"];
    let plural =
        names["plural"].as_str().ok_or_else(|| invalid_crd(name, "spec.names.plural", "Required value"))?;
    let kind =
        names["kind"].as_str().ok_or_else(|| invalid_crd(name, "spec.names.kind", "Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
                field: "metadata.name".into(),
            }],
        ));
    }
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid_crd(name, "spec.versions", "Required value"))?;
    // The apiserver lists the storage version first in discovery only by priority; we keep
    // the CRD's order but put served versions only.
    let mut out = vec![];
    for v in versions {
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let version =
            v["name"].as_str().ok_or_else(|| invalid_crd(name, "spec.versions[].name", "Required value"))?;
        out.push(ResourceInfo {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.into(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: v["subresources"]["status"].is_object(),
            scale_subresource: false,
            custom: true,
            schema: v["schema"]["openAPIV3Schema"]
                .as_object()
                .map(|_| v["schema"]["openAPIV3Schema"].clone()),
            printer_columns: v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
            read_only: false,
        });
    }
    if out.is_empty() {
        return Err(invalid_crd(name, "spec.versions", "must have at least one served version"));
    }
    Ok(out)
}
