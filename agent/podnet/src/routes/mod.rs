//! Cross-node pod networking, host-gw style (flannel's host-gw backend, kube-router): every
//! node routes each other node's podCIDR via that node's InternalIP, which must be on the same
//! L2 segment. Plus one masquerade rule for pod traffic leaving the cluster CIDR, and
//! `net.ipv4.ip_forward=1`.
//!
//! - `desired`: the pure part (Nodes -> routes), here.
//! - `apply`: makes the kernel's owned routes equal a list (`ip route`, `proto` [`PROTO`]).
//! - `masq`: the nftables table `ip keel-nat` / `ip6 keel-nat` (keel-proxy owns `ip keel`).
//! - `watch`: `run`, the Node watch that keeps both current.
//!
//! Everything acts on the calling process's current network namespace.

mod apply;
mod masq;
mod watch;

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use keel_cni::spec::IpNet;

pub use apply::{apply, owned};
pub use masq::{NAT_TABLE, masquerade, render_masquerade};
pub use watch::{RESYNC, run};

/// The routing protocol number marking routes this module owns (`ip route ... proto 75`);
/// unassigned in `/etc/iproute2/rt_protos`, so nothing else uses it by accident.
pub const PROTO: u8 = 75;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cluster CIDR {value:?} is not a CIDR list like 10.244.0.0/16 (comma-separated for dual stack)"
    )]
    ClusterCidr { value: String },
    #[error("run {program} (install {package})")]
    Spawn {
        program: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("read the output of `{command}`: {reason}")]
    Output { command: String, reason: String },
    #[error("enable forwarding ({path})")]
    Forwarding {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed} of {total} route changes failed; first: {first}")]
    Routes {
        failed: usize,
        total: usize,
        first: Box<Error>,
    },
}

/// One route to another node's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The node's podCIDR (network address, host bits clear).
    pub dst: IpNet,
    /// The node's InternalIP.
    pub via: IpAddr,
    /// The node's name (for logs; not part of the kernel route).
    pub node: String,
}

/// Sort key for `IpNet` (which has no `Ord`): IPv4 first, then address, then prefix.
fn key(n: &IpNet) -> (bool, IpAddr, u8) {
    (!n.is_ipv4(), n.addr, n.prefix)
}

/// Routes this node wants: for every other node, each of its podCIDRs (`spec.podCIDRs`, else
/// `spec.podCIDR`) via its InternalIP of the same family. Nodes without either are skipped;
/// when two nodes claim one CIDR the first by name wins. Sorted by destination.
pub fn desired<'a>(self_name: &str, nodes: impl IntoIterator<Item = &'a Node>) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let mut nodes: Vec<&Node> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        if name.is_empty() || name == self_name {
            continue;
        }
        let spec = n.spec.clone().unwrap_or_default();
        let mut cidrs = spec.pod_cidrs.unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.pod_cidr);
        }
        let ips: Vec<IpAddr> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        for c in cidrs {
            let Ok(net) = c.parse::<IpNet>() else {
                tracing::warn!(node = %name, cidr = %c, "node podCIDR is not a CIDR; no route");
                continue;
            };
            let Some(via) = ips.iter().find(|ip| ip.is_ipv4() == net.is_ipv4()) else {
                continue;
            };
            let dst = net.truncated();
            if out.iter().any(|r| r.dst == dst) {
                tracing::warn!(node = %name, cidr = %dst, "podCIDR claimed by two nodes; keeping the first");
                continue;
            }
            out.push(Route {
                dst,
                via: *via,
                node: name.clone(),
            });
        }
    }
    out.sort_by_key(|r| key(&r.dst));
    out
}

/// Parses a comma-separated cluster CIDR list.
pub fn parse_cluster_cidrs(value: &str) -> Result<Vec<IpNet>, Error> {
    let bad = || Error::ClusterCidr {
        value: value.to_string(),
    };
    let nets = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpNet>().map(|n| n.truncated()).map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    if nets.is_empty() {
        return Err(bad());
    }
    Ok(nets)
}

/// Runs `program args...` (stdin from `input`), returning stdout; a non-zero exit is
/// `Error::Command` with its stderr.
async fn run_program(
    program: &'static str,
    package: &'static str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, Error> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            program,
            package,
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| Error::Spawn {
            program,
            package,
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes everything this module installs: the masquerade tables and every owned route
/// (`keel-agent cleanup`). Forwarding stays on (other software may rely on it).
pub async fn cleanup() -> Result<(), Error> {
    let tables = masq::remove().await;
    let routes = apply(&[]).await;
    tables.and(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidrs: &[&str], ips: &[(&str, &str)]) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
            "status": {"addresses": ips.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>()}
        }))
        .expect("node")
    }

    #[test]
    fn desired_routes() {
        let nodes = vec![
            node(
                "w2",
                &["10.244.2.0/24"],
                &[("Hostname", "w2"), ("InternalIP", "192.168.56.12")],
            ),
            node("cp", &["10.244.0.0/24"], &[("InternalIP", "192.168.56.10")]),
            node("w1", &["10.244.1.0/24"], &[("InternalIP", "192.168.56.11")]),
            // no podCIDR yet, no InternalIP, unparsable CIDR: skipped
            node("w3", &[], &[("InternalIP", "192.168.56.13")]),
            node("w4", &["10.244.4.0/24"], &[("ExternalIP", "1.2.3.4")]),
            node("w5", &["10.244.5.0"], &[("InternalIP", "192.168.56.15")]),
            // dual stack: each family via its own address; a v6 CIDR without a v6 IP is skipped
            node(
                "w6",
                &["10.244.6.0/24", "fd00:6::/64"],
                &[("InternalIP", "192.168.56.16"), ("InternalIP", "fd56::16")],
            ),
            node(
                "w7",
                &["10.244.7.5/24", "fd00:7::/64"],
                &[("InternalIP", "192.168.56.17")],
            ),
            // a CIDR claimed twice: the first node by name keeps it
            node("w8", &["10.244.2.0/24"], &[("InternalIP", "192.168.56.18")]),
        ];
        let got: Vec<(String, String, String)> = desired("w1", &nodes)
            .into_iter()
            .map(|r| (r.dst.to_string(), r.via.to_string(), r.node))
            .collect();
        let want = [
            ("10.244.0.0/24", "192.168.56.10", "cp"),
            ("10.244.2.0/24", "192.168.56.12", "w2"),
            ("10.244.6.0/24", "192.168.56.16", "w6"),
            ("10.244.7.0/24", "192.168.56.17", "w7"),
            ("fd00:6::/64", "fd56::16", "w6"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
        assert!(desired("x", &[]).is_empty());
        // A node alone routes nothing.
        assert!(desired("cp", &nodes[1..2]).is_empty());
    }

    #[test]
    fn cluster_cidrs() {
        let v = parse_cluster_cidrs("10.244.0.0/16, fd00::/48").expect("dual");
        assert_eq!(v.len(), 2);
        assert_eq!(
            parse_cluster_cidrs("10.244.3.1/16").expect("host bits")[0].to_string(),
            "10.244.0.0/16"
        );
        assert!(parse_cluster_cidrs("").is_err());
        assert!(parse_cluster_cidrs("10.244.0.0").is_err());
    }
}
