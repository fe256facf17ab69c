//! A test-only driver for keel-podnet, run by the root tests through
//! `nsenter --net=<node netns> --` so that everything happens in that node's namespace, as the
//! agent would. One process per call, so every call builds a fresh `Network` (an agent restart).
//!
//! ```text
//! podnet-lab setup <config.json> <uid> <namespace> <name>   prints the PodNetwork as JSON
//! podnet-lab teardown <config.json> <uid>
//! podnet-lab parallel <config.json> <setup|teardown> <uid>...   all at once; prints
//!                                                  {"results": [...], "children": <left>}
//! podnet-lab attached <config.json>                        one uid per line
//! podnet-lab routes <self> <nodes.json> <cluster-cidr>     desired + apply + masquerade
//! podnet-lab watch <kubeconfig> <node> <cluster-cidr>      routes::run until stdin closes
//! podnet-lab node-create <kubeconfig> <node.json>         POST a Node
//! podnet-lab node-delete <kubeconfig> <name>
//! podnet-lab bench <config.json> <count>                   timed setups, then teardowns
//! podnet-lab cleanup
//! podnet-lab listen <ip:port>                              prints the first peer's address
//! podnet-lab connect <ip:port>                             prints the local address used
//! ```
//! config.json: `{"confDir", "binDirs": [], "stateDir", "netnsDir", "podCidr", "bridge", "mtu"}`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keel_podnet::{Network, NetworkConfig, PodRef, routes};
use serde_json::{Value, json};

fn config(path: &str) -> Result<NetworkConfig> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).context("read config")?)?;
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let mut c = NetworkConfig::new(
        PathBuf::from(s("confDir").context("confDir")?),
        v["binDirs"]
            .as_array()
            .context("binDirs")?
            .iter()
            .filter_map(|d| d.as_str().map(PathBuf::from))
            .collect(),
        PathBuf::from(s("stateDir").context("stateDir")?),
    );
    if let Some(d) = s("netnsDir") {
        c.netns_dir = d.into();
    }
    c.pod_cidr = s("podCidr");
    if let Some(b) = s("bridge") {
        c.bridge = b;
    }
    c.mtu = v["mtu"].as_u64().and_then(|m| u32::try_from(m).ok());
    Ok(c)
}

/// Processes whose parent is this one, zombies included (`/proc/self/task/*/children`): the
/// plugins must all have been waited for, and keel-bridge's DEL helper is not ours to reap.
fn children() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return usize::MAX;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}

/// p50 and p99 in milliseconds.
fn stats(mut v: Vec<Duration>) -> Value {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i].as_secs_f64() * 1e5).round() / 100.0
    };
    json!({"p50": at(0.5), "p99": at(0.99), "n": v.len()})
}

async fn client(kubeconfig: &str) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["setup", cfg, uid, ns, name] => {
            let net = Network::new(config(cfg)?)?;
            let pod = PodRef {
                uid: uid.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
            };
            let p = net.setup(&pod).await?;
            println!(
                "{}",
                json!({
                    "netns": p.netns, "ips": p.ips, "interface": p.interface,
                    "gateway": p.gateway, "mac": p.mac,
                })
            );
        }
        ["teardown", cfg, uid] => Network::new(config(cfg)?)?.teardown(uid).await?,
        ["parallel", cfg, op, uids @ ..] => {
            let net = Network::new(config(cfg)?)?;
            let runs = uids.iter().map(|uid| {
                let net = &net;
                async move {
                    let pod = PodRef {
                        uid: uid.to_string(),
                        namespace: "default".into(),
                        name: uid.to_string(),
                    };
                    if *op == "setup" {
                        net.setup(&pod).await.map(|p| json!(p))
                    } else {
                        net.teardown(uid).await.map(|()| Value::Null)
                    }
                }
            });
            let out = futures::future::try_join_all(runs).await?;
            println!("{}", json!({"results": out, "children": children()}));
        }
        ["attached", cfg] => {
            for u in Network::new(config(cfg)?)?.attached() {
                println!("{u}");
            }
        }
        ["routes", me, nodes, cidr] => {
            let nodes: Vec<k8s_openapi::api::core::v1::Node> =
                serde_json::from_slice(&std::fs::read(nodes)?)?;
            let want = routes::desired(me, &nodes);
            routes::apply(&want).await?;
            routes::masquerade(&routes::parse_cluster_cidrs(cidr)?).await?;
        }
        ["node-create", kubeconfig, node] => {
            let node: k8s_openapi::api::core::v1::Node =
                serde_json::from_slice(&std::fs::read(node)?)?;
            let api: kube::Api<k8s_openapi::api::core::v1::Node> =
                kube::Api::all(client(kubeconfig).await?);
            api.create(&Default::default(), &node).await?;
        }
        ["node-delete", kubeconfig, name] => {
            let api: kube::Api<k8s_openapi::api::core::v1::Node> =
                kube::Api::all(client(kubeconfig).await?);
            api.delete(name, &Default::default()).await?;
        }
        ["watch", kubeconfig, node, cidr] => {
            let client = client(kubeconfig).await?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 64];
                while tokio::io::stdin().read(&mut buf).await.is_ok_and(|n| n > 0) {}
                let _ = tx.send(true);
            });
            routes::run(client, node.to_string(), cidr.to_string(), rx).await?;
        }
        ["bench", cfg, count] => {
            let count: usize = count.parse()?;
            let net = Network::new(config(cfg)?)?;
            let pods: Vec<PodRef> = (0..count)
                .map(|i| PodRef {
                    uid: format!("bench-{i}"),
                    namespace: "default".into(),
                    name: format!("bench-{i}"),
                })
                .collect();
            let mut add = Vec::new();
            for p in &pods {
                let t = std::time::Instant::now();
                net.setup(p).await?;
                add.push(t.elapsed());
            }
            let mut cached = Vec::new();
            for p in &pods {
                let t = std::time::Instant::now();
                net.setup(p).await?;
                cached.push(t.elapsed());
            }
            let mut del = Vec::new();
            for p in &pods {
                let t = std::time::Instant::now();
                net.teardown(&p.uid).await?;
                del.push(t.elapsed());
            }
            println!(
                "{}",
                json!({"setup": stats(add), "setupCached": stats(cached), "teardown": stats(del)})
            );
        }
        ["cleanup"] => routes::cleanup().await?,
        ["listen", addr] => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            println!("listening");
            let (_, peer) = tokio::time::timeout(Duration::from_secs(20), l.accept())
                .await
                .context("no connection within 20 s")??;
            println!("{}", peer.ip());
        }
        ["connect", addr] => {
            let s =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
                    .context("connect timed out")??;
            println!("{}", s.local_addr()?.ip());
        }
        _ => bail!("usage: see the header of agent/podnet/examples/podnet-lab.rs"),
    }
    Ok(())
}
