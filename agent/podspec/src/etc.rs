//! The pod's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, written under
//! `<pod_dir>/etc/` and bind-mounted into every container (kubelet's managed hosts file,
//! pkg/kubelet/kubelet_pods.go; kubelet's DNS policy, pkg/kubelet/network/dns/dns.go;
//! containerd's resolv.conf format).

use crate::error::{ConfigError, Result};
use k8s_openapi::api::core::v1::{HostAlias, Pod};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The node's DNS configuration (kubelet's `--cluster-dns`, `--cluster-domain`, `--resolv-conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolv.conf (dnsPolicy Default; host search domains for ClusterFirst).
    pub host_resolv_conf: PathBuf,
    /// The node's hosts file (copied for hostNetwork pods).
    pub host_hosts: PathBuf,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "/etc/resolv.conf".into(),
            host_hosts: "/etc/hosts".into(),
        }
    }
}

/// Paths of the files [`write()`] produced, to bind-mount into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
    /// The hostname the containers get (UTS namespace and `/etc/hostname`).
    pub name: String,
}

/// Resolver settings as in resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// (hostname, domain) of the pod: `spec.hostname` or the pod name (cut to 63 characters),
/// and `<subdomain>.<namespace>.svc.<cluster domain>` when `spec.subdomain` is set.
/// hostNetwork pods get the node's hostname.
pub fn pod_hostname(
    pod: &Pod,
    cluster_domain: &str,
    node_hostname: &str,
) -> (String, Option<String>) {
    if host_network(pod) {
        return (node_hostname.to_string(), None);
    }
    let spec = pod.spec.as_ref();
    let mut name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if name.len() > 63 {
        name.truncate(63);
        name = name.trim_end_matches(['-', '.']).to_string();
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = spec
        .and_then(|s| s.subdomain.clone())
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}.{ns}.svc.{cluster_domain}"));
    (name, domain)
}

/// kubelet's managed hosts file.
pub fn hosts_file(
    pod_ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut s = String::from("# Kubernetes-managed hosts file.\n");
    s.push_str("127.0.0.1\tlocalhost\n");
    s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str("fe00::0\tip6-localnet\n");
    s.push_str("fe00::0\tip6-mcastprefix\n");
    s.push_str("fe00::1\tip6-allnodes\n");
    s.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        match domain {
            Some(d) => s.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    s.push_str(&host_aliases(aliases));
    s
}

/// The `# Entries added by HostAliases.` block (empty without aliases).
pub fn host_aliases(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default().join("\t");
        s.push_str(&format!("{}\t{names}\n", a.ip));
    }
    s
}

/// Parse resolv.conf (`nameserver`, `search`/`domain`, `options`; the last search line wins).
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut c = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => c.servers.extend(f.next().map(str::to_string)),
            Some("search") | Some("domain") => {
                c.searches = f
                    .map(|s| s.trim_end_matches('.').to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            Some("options") => c.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    c
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// kubelet's `GetPodDNS`: the resolver config for `pod` given the node's settings and its
/// parsed resolv.conf.
pub fn dns_config(pod: &Pod, dns: &DnsSettings, host: &DnsConfig) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network(pod)),
        _ => Some(false), // Default
    };
    let mut c = match cluster {
        None => DnsConfig::default(),
        Some(true) if !dns.cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = dns.cluster_domain.trim_end_matches('.');
            let mut searches = if d.is_empty() {
                Vec::new()
            } else {
                vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()]
            };
            searches.extend(host.searches.iter().cloned());
            DnsConfig {
                servers: dns.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches: dedup(searches),
                options: vec!["ndots:5".into()],
            }
        }
        // ClusterFirst without a cluster DNS falls back to the node's settings, as kubelet does.
        Some(_) => host.clone(),
    };
    if let Some(pc) = spec.and_then(|s| s.dns_config.as_ref()) {
        c.servers.extend(pc.nameservers.iter().flatten().cloned());
        c.servers = dedup(std::mem::take(&mut c.servers));
        c.searches.extend(
            pc.searches
                .iter()
                .flatten()
                .map(|s| s.trim_end_matches('.').to_string()),
        );
        c.searches = dedup(std::mem::take(&mut c.searches));
        for o in pc.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.as_deref().unwrap_or("");
            match c
                .options
                .iter_mut()
                .find(|x| x.split(':').next() == Some(name))
            {
                Some(slot) => *slot = text,
                None => c.options.push(text),
            }
        }
    }
    c.servers.truncate(MAX_NAMESERVERS);
    c.searches.truncate(MAX_SEARCHES);
    c
}

/// resolv.conf text (containerd's layout: search, nameservers, options).
pub fn format_resolv_conf(c: &DnsConfig) -> String {
    let mut s = String::new();
    if !c.searches.is_empty() {
        s.push_str(&format!("search {}\n", c.searches.join(" ")));
    }
    for n in &c.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !c.options.is_empty() {
        s.push_str(&format!("options {}\n", c.options.join(" ")));
    }
    s
}

/// Write `<pod_dir>/etc/{hosts,resolv.conf,hostname}` for `pod`.
pub fn write(
    pod: &Pod,
    pod_dir: &Path,
    dns: &DnsSettings,
    pod_ips: &[String],
    node_hostname: &str,
) -> Result<EtcFiles> {
    let dir = pod_dir.join("etc");
    std::fs::create_dir_all(&dir).map_err(|e| ConfigError::io("create folder", &dir, e))?;
    let (name, domain) = pod_hostname(pod, &dns.cluster_domain, node_hostname);
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    let hosts = if host_network(pod) {
        let node = std::fs::read_to_string(&dns.host_hosts).map_err(|e| ConfigError::Etc {
            file: "hosts",
            path: dns.host_hosts.clone(),
            source: e,
        })?;
        format!("{node}{}", host_aliases(&aliases))
    } else {
        hosts_file(pod_ips, &name, domain.as_deref(), &aliases)
    };
    // A missing node resolv.conf is an empty one (kubelet with `--resolv-conf=""`).
    let host_text = std::fs::read_to_string(&dns.host_resolv_conf).unwrap_or_default();
    let resolv = format_resolv_conf(&dns_config(pod, dns, &parse_resolv_conf(&host_text)));
    let files = EtcFiles {
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
        name: name.clone(),
    };
    for (file, path, text) in [
        ("hosts", &files.hosts, hosts),
        ("resolv.conf", &files.resolv_conf, resolv),
        ("hostname", &files.hostname, format!("{name}\n")),
    ] {
        write_atomic(path, text.as_bytes(), 0o644).map_err(|e| ConfigError::Etc {
            file,
            path: path.clone(),
            source: e,
        })?;
    }
    Ok(files)
}

/// Write via a temporary file in the same folder and rename, so readers never see half a file.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests;
