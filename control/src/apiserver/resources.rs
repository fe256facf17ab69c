//! The resource registry: every kind the API server serves, with the names discovery, routing,
//! storage keys and kubectl's short names come from.

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources this server implements (`status`, `scale`, `binding`, ...).
    pub subresources: &'static [&'static str],
    /// True for kinds that carry `metadata.generation` (bumped on spec changes).
    pub has_spec: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key prefix: `/registry/<group or core>/<plural>/`.
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/{name}", self.prefix()),
            None => format!("{}{name}", self.prefix()),
        }
    }

    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/", self.prefix()),
            None => self.prefix(),
        }
    }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

macro_rules! res {
    ($group:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $spec:expr) => {
        Resource {
            group: $group,
            version: "v1",
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            has_spec: $spec,
        }
    };
}

pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        NONE,
        &["status", "finalize"],
        false
    ),
    res!(
        "",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        NONE,
        &["status"],
        false
    ),
    res!(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        ALL,
        &[
            "status",
            "binding",
            "log",
            "exec",
            "portforward",
            "eviction"
        ],
        true
    ),
    res!(
        "",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        ALL,
        &["status"],
        false
    ),
    res!(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        NONE,
        NONE,
        false
    ),
    res!(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        NONE,
        NONE,
        false
    ),
    res!(
        "", "secrets", "secret", "Secret", true, NONE, NONE, NONE, false
    ),
    res!(
        "",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        NONE,
        NONE,
        false
    ),
    res!(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        NONE,
        NONE,
        false
    ),
    res!(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        ALL,
        &["status", "scale"],
        true
    ),
    res!(
        "apps",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        ALL,
        &["status", "scale"],
        true
    ),
    res!(
        "apps",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        ALL,
        &["status"],
        true
    ),
    res!(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        NONE,
        NONE,
        NONE,
        false
    ),
    res!(
        "certificates.k8s.io",
        "certificatesigningrequests",
        "certificatesigningrequest",
        "CertificateSigningRequest",
        false,
        &["csr"],
        NONE,
        &["status", "approval"],
        false
    ),
    res!(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        NONE,
        NONE,
        NONE,
        false
    ),
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The API groups other than core, in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}
