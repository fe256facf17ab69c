//! The node's service proxy and cluster DNS, started by `keel-agent run` (the services issue).
//!
//! One watch of Services and one of EndpointSlices (all namespaces, kube-runtime's `watcher`)
//! feed both consumers:
//! * keel-proxy's [`Proxier`], owned by one blocking thread: a full sync once both lists are
//!   in, incremental syncs after (at most one per [`MIN_SYNC`], the first change after a quiet
//!   period at once, like kube-proxy's `minSyncPeriod`), a full sync again after a failed
//!   one (with back-off) and every [`FULL_SYNC`];
//! * keel-dns's record table, served on the cluster DNS address (`10.96.0.10:53` by default),
//!   which this module adds as a /32 to `lo` of the network namespace the agent runs in (the
//!   node's own), so that pods on this node reach their node's server and no other. Names
//!   outside the cluster zone go to the node's resolv.conf upstreams.
//!
//! The `kube-dns` Service the API server keeps in kube-system (ClusterIP = the cluster DNS
//! address, no selector) is never given to the proxy: its address is local on every node, and
//! rules for a service without endpoints would reject DNS. See docs/architecture/dns.md.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use keel_proxy::{Cidr, CommandRunner, NodeInfo, Proxier, SyncKind};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// Shortest time between two proxy syncs (kube-proxy's `minSyncPeriod` is 1 s; an
/// incremental sync here costs ~20 ms, so a shorter period keeps services responsive).
pub const MIN_SYNC: Duration = Duration::from_millis(250);
/// A full resync repairs a table someone else changed (kube-proxy: hourly full syncs).
pub const FULL_SYNC: Duration = Duration::from_secs(3600);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the services loop needs to know about the node and the cluster.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// The Node's `metadata.name` (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// Addresses NodePorts answer on (IPv4 ones are used).
    pub node_ips: Vec<IpAddr>,
    /// The pod network, e.g. `10.244.0.0/16`; ClusterIP traffic from outside it is
    /// masqueraded. Empty: no such masquerade.
    pub cluster_cidr: String,
    /// The address pods use as their resolver (kubelet's clusterDNS).
    pub cluster_dns: IpAddr,
    /// The cluster's DNS zone (kubelet's clusterDomain).
    pub cluster_domain: String,
    /// Where the upstream resolvers for other names come from.
    pub resolv_conf: PathBuf,
}

impl ServicesConfig {
    /// The defaults kubeadm clusters use: DNS at 10.96.0.10, zone cluster.local, upstreams
    /// from /etc/resolv.conf.
    pub fn new(node_name: &str, node_ips: Vec<IpAddr>, cluster_cidr: &str) -> ServicesConfig {
        ServicesConfig {
            node_name: node_name.to_string(),
            node_ips,
            cluster_cidr: cluster_cidr.to_string(),
            cluster_dns: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// Errors that stop the services loop from starting (later sync and watch errors are
/// logged and retried).
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("cluster CIDR {value:?}: {reason}")]
    ClusterCidr { value: String, reason: String },
    #[error(
        "add the cluster DNS address {ip} to lo: {message} (the agent needs root in the node's network namespace)"
    )]
    DnsAddress { ip: IpAddr, message: String },
    #[error("listen for DNS on {addr}: {source} (is another DNS server bound to it?)")]
    DnsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("remove the proxy rules: {0}")]
    Proxy(#[from] keel_proxy::Error),
    #[error("remove the cluster DNS address {ip} from lo: {message}")]
    DnsAddressRemove { ip: IpAddr, message: String },
    #[error("start the proxy thread: {0}")]
    Thread(#[source] std::io::Error),
}

pub type Result<T, E = ServicesError> = std::result::Result<T, E>;

fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// Runs `ip <args>`; Err carries its stderr.
async fn ip_cmd(args: &[&str]) -> std::result::Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run ip ({e}); install iproute2"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// Adds the cluster DNS address to `lo` of the current network namespace (idempotent).
pub async fn add_dns_address(ip: IpAddr) -> Result<()> {
    let p = host_prefix(ip);
    ip_cmd(&["addr", "replace", &p, "dev", "lo"])
        .await
        .map_err(|message| ServicesError::DnsAddress { ip, message })
}

/// `keel-agent cleanup`: removes the proxy's nftables table and the cluster DNS address from
/// `lo` of the current network namespace. Both are absent afterwards whether or not they were
/// there. Synchronous (it runs `nft` and `ip`).
pub fn cleanup(cluster_dns: IpAddr) -> Result<()> {
    keel_proxy::cleanup(&mut CommandRunner::default())?;
    let p = host_prefix(cluster_dns);
    let out = std::process::Command::new("ip")
        .args(["addr", "del", &p, "dev", "lo"])
        .output()
        .map_err(|e| ServicesError::DnsAddressRemove {
            ip: cluster_dns,
            message: format!("cannot run ip ({e}); install iproute2"),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "Cannot assign requested address": it was not there.
    if out.status.success() || stderr.contains("Cannot assign") {
        return Ok(());
    }
    Err(ServicesError::DnsAddressRemove {
        ip: cluster_dns,
        message: stderr.trim().to_string(),
    })
}

/// An update for the proxy thread.
enum Update {
    Service(Box<Service>),
    ServiceGone(String, String),
    Slice(Box<EndpointSlice>),
    SliceGone(String, String),
    /// Both kinds were listed completely (first time and after every relist).
    Synced,
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Is this the node-local DNS service (the proxy leaves its address alone)?
fn is_cluster_dns(svc: &Service, dns: IpAddr) -> bool {
    let dns = dns.to_string();
    svc.spec.as_ref().is_some_and(|s| {
        s.cluster_ip.as_deref() == Some(dns.as_str())
            || s.cluster_ips.iter().flatten().any(|ip| *ip == dns)
    })
}

/// Runs the node's service proxy and DNS server until `shutdown` turns true (or its sender
/// is dropped). Rules and the DNS address stay in place afterwards, so that traffic keeps
/// flowing across an agent restart; [`cleanup`] removes them.
pub async fn run(
    client: kube::Client,
    cfg: ServicesConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let cluster_cidr = if cfg.cluster_cidr.trim().is_empty() {
        None
    } else {
        Some(
            cfg.cluster_cidr
                .parse::<Cidr>()
                .map_err(|reason| ServicesError::ClusterCidr {
                    value: cfg.cluster_cidr.clone(),
                    reason,
                })?,
        )
    };
    let node = NodeInfo {
        name: cfg.node_name.clone(),
        addresses: cfg
            .node_ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect(),
        cluster_cidr,
    };

    // DNS: address and sockets first, so that a port conflict is reported at once.
    add_dns_address(cfg.cluster_dns).await?;
    let addr = SocketAddr::new(cfg.cluster_dns, 53);
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|source| ServicesError::DnsListen { addr, source })?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServicesError::DnsListen { addr, source })?;
    let upstreams: Vec<SocketAddr> = match keel_dns::read_resolv_conf(&cfg.resolv_conf) {
        Ok(u) => u
            .into_iter()
            .filter(|u| u.ip() != cfg.cluster_dns)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "no upstream resolvers: names outside the cluster get SERVFAIL");
            Vec::new()
        }
    };
    let dns_cfg = keel_dns::Config {
        upstreams,
        ..Default::default()
    };
    let table = keel_dns::shared_table(&cfg.cluster_domain);

    // Proxy thread.
    let (tx, rx) = mpsc::channel::<Update>();
    let proxier = Proxier::new(node, CommandRunner::default());
    let proxy = std::thread::Builder::new()
        .name("keel-proxy".into())
        .spawn(move || proxy_thread(proxier, rx))
        .map_err(ServicesError::Thread)?;

    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let watch = tokio::spawn(watch_loop(
        client,
        cfg.cluster_dns,
        tx,
        table.clone(),
        synced_tx,
    ));

    // Serve DNS once the table holds the first complete lists (no false NXDOMAINs).
    let stop = {
        let mut s = shutdown.clone();
        async move {
            let _ = s.wait_for(|v| *v).await;
        }
    };
    let stopped = tokio::select! {
        _ = synced_rx.wait_for(|v| *v) => false,
        _ = stop => true,
    };
    if !stopped {
        tracing::info!(address = %addr, "cluster DNS serving");
        let stop_of = |s: &tokio::sync::watch::Receiver<bool>| {
            let mut s = s.clone();
            async move {
                let _ = s.wait_for(|v| *v).await;
            }
        };
        let u = tokio::spawn(keel_dns::run_udp(
            udp,
            table.clone(),
            dns_cfg.clone(),
            stop_of(&shutdown),
        ));
        let t = tokio::spawn(keel_dns::run_tcp(tcp, table, dns_cfg, stop_of(&shutdown)));
        let _ = shutdown.wait_for(|v| *v).await;
        for h in [u, t] {
            if let Ok(Err(e)) = h.await {
                tracing::warn!(error = %e, "cluster DNS server stopped");
            }
        }
    }
    // Dropping the watch task drops the sender, which ends the proxy thread.
    watch.abort();
    let _ = watch.await;
    let _ = tokio::task::spawn_blocking(move || proxy.join()).await;
    Ok(())
}

/// Watches Services and EndpointSlices; every change goes to the DNS table and the proxy.
/// After each complete (re)list, objects that were not listed again are removed.
async fn watch_loop(
    client: kube::Client,
    cluster_dns: IpAddr,
    tx: mpsc::Sender<Update>,
    table: keel_dns::SharedTable,
    synced: tokio::sync::watch::Sender<bool>,
) {
    enum Ev {
        Svc(Box<watcher::Result<Event<Service>>>),
        Slice(Box<watcher::Result<Event<EndpointSlice>>>),
    }
    let svcs = watcher::watcher(Api::<Service>::all(client.clone()), Default::default())
        .default_backoff()
        .map(|e| Ev::Svc(Box::new(e)))
        .boxed();
    let slices = watcher::watcher(Api::<EndpointSlice>::all(client), Default::default())
        .default_backoff()
        .map(|e| Ev::Slice(Box::new(e)))
        .boxed();
    let mut events = futures_util::stream::select(svcs, slices);
    let write = || table.write().unwrap_or_else(|p| p.into_inner());
    // Known keys, and the keys seen during the current relist of each kind.
    let (mut known_svc, mut known_slice) = (HashSet::new(), HashSet::new());
    let (mut seen_svc, mut seen_slice) = (HashSet::new(), HashSet::new());
    let (mut svc_done, mut slice_done) = (false, false);
    let send = |u: Update| {
        // The proxy thread only ends when we do.
        let _ = tx.send(u);
    };
    let apply_svc = |s: Service, known: &mut HashSet<(String, String)>| {
        known.insert(key(&s.metadata));
        write().apply_service(&s);
        if is_cluster_dns(&s, cluster_dns) {
            let (ns, n) = key(&s.metadata);
            send(Update::ServiceGone(ns, n));
        } else {
            send(Update::Service(Box::new(s)));
        }
    };
    while let Some(ev) = events.next().await {
        match ev {
            Ev::Svc(e) => match *e {
                Ok(Event::Init) => {
                    seen_svc.clear();
                    svc_done = false;
                }
                Ok(Event::InitApply(s)) => {
                    seen_svc.insert(key(&s.metadata));
                    apply_svc(s, &mut known_svc);
                }
                Ok(Event::Apply(s)) => apply_svc(s, &mut known_svc),
                Ok(Event::Delete(s)) => {
                    let (ns, n) = key(&s.metadata);
                    known_svc.remove(&(ns.clone(), n.clone()));
                    write().remove_service(&ns, &n);
                    send(Update::ServiceGone(ns, n));
                }
                Ok(Event::InitDone) => {
                    for (ns, n) in known_svc.difference(&seen_svc) {
                        write().remove_service(ns, n);
                        send(Update::ServiceGone(ns.clone(), n.clone()));
                    }
                    known_svc = std::mem::take(&mut seen_svc);
                    svc_done = true;
                }
                Err(e) => tracing::warn!(error = %e, "service watch failed; retrying"),
            },
            Ev::Slice(e) => match *e {
                Ok(Event::Init) => {
                    seen_slice.clear();
                    slice_done = false;
                }
                Ok(Event::InitApply(s)) | Ok(Event::Apply(s)) => {
                    let k = key(&s.metadata);
                    seen_slice.insert(k.clone());
                    known_slice.insert(k);
                    write().apply_slice(&s);
                    send(Update::Slice(Box::new(s)));
                }
                Ok(Event::Delete(s)) => {
                    let (ns, n) = key(&s.metadata);
                    known_slice.remove(&(ns.clone(), n.clone()));
                    write().remove_slice(&ns, &n);
                    send(Update::SliceGone(ns, n));
                }
                Ok(Event::InitDone) => {
                    for (ns, n) in known_slice.difference(&seen_slice) {
                        write().remove_slice(ns, n);
                        send(Update::SliceGone(ns.clone(), n.clone()));
                    }
                    known_slice = std::mem::take(&mut seen_slice);
                    slice_done = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "endpointslice watch failed; retrying")
                }
            },
        }
        if svc_done && slice_done {
            // Once per (re)list of both kinds.
            svc_done = false;
            slice_done = false;
            send(Update::Synced);
            synced.send_replace(true);
        }
    }
}

/// The proxy's own thread: applies updates to the Proxier and syncs the kernel.
fn proxy_thread(mut p: Proxier<CommandRunner>, rx: mpsc::Receiver<Update>) {
    let mut synced = false;
    let mut dirty = false;
    let mut last: Option<Instant> = None;
    let mut last_full: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    let mut failures: u32 = 0;
    loop {
        let now = Instant::now();
        let mut wait = FULL_SYNC;
        if synced {
            if let Some(r) = retry_at {
                wait = wait.min(r.saturating_duration_since(now));
            } else if dirty {
                let ready = last.map_or(now, |l| l + MIN_SYNC);
                wait = wait.min(ready.saturating_duration_since(now));
            }
            if let Some(f) = last_full {
                wait = wait.min((f + FULL_SYNC).saturating_duration_since(now));
            }
        }
        let first = match rx.recv_timeout(wait) {
            Ok(u) => Some(u),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        for u in first.into_iter().chain(rx.try_iter()) {
            dirty = true;
            match u {
                Update::Service(s) => p.upsert_service(*s),
                Update::ServiceGone(ns, n) => p.delete_service(&ns, &n),
                Update::Slice(s) => p.upsert_slice(*s),
                Update::SliceGone(ns, n) => p.delete_slice(&ns, &n),
                Update::Synced => synced = true,
            }
        }
        if !synced {
            continue;
        }
        let now = Instant::now();
        let full_due = last_full.is_none_or(|f| now >= f + FULL_SYNC);
        let due = match retry_at {
            Some(r) => now >= r,
            None => dirty && last.is_none_or(|l| now >= l + MIN_SYNC),
        };
        if !(full_due || due) {
            continue;
        }
        let started = Instant::now();
        let r = if full_due { p.sync_full() } else { p.sync() };
        last = Some(now);
        dirty = false;
        match r {
            Ok(rep) => {
                failures = 0;
                retry_at = None;
                if rep.kind == SyncKind::Full {
                    last_full = Some(now);
                }
                tracing::debug!(kind = ?rep.kind, bytes = rep.script_bytes, warnings = rep.warnings.len(),
                    took = ?started.elapsed(), "proxy rules synced");
            }
            Err(e) => {
                failures += 1;
                let delay = (MIN_SYNC * 2u32.saturating_pow(failures.min(10))).min(RETRY_MAX);
                retry_at = Some(now + delay);
                tracing::warn!(error = %e, retry_in = ?delay, "proxy sync failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_service_is_recognised_by_its_cluster_ip() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}}))
        .expect("service");
        assert!(is_cluster_dns(&svc, "10.96.0.10".parse().expect("ip")));
        assert!(!is_cluster_dns(&svc, "10.96.0.11".parse().expect("ip")));
        assert_eq!(
            host_prefix("10.96.0.10".parse().expect("ip")),
            "10.96.0.10/32"
        );
        assert_eq!(host_prefix("fd00::a".parse().expect("ip")), "fd00::a/128");
    }
}
