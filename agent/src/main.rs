//! keel-agent entry point: parses flags, builds the runtime and maps errors to exit codes
//! (0 success, 1 a failure explained on stderr, 2 bad flags).
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use keel_agent::bootstrap::{self, JoinOptions};
use keel_agent::state::{AgentConfig, DEFAULT_ROOT, Layout};
use keel_agent::{doctor, node, run};
use std::net::IpAddr;
use std::path::PathBuf;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(name = "keel-agent", version, about = "The Keel node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags every agent-running command accepts.
#[derive(Args, Clone)]
struct AgentFlags {
    /// Where this node keeps all its state (credentials, config, later images and pods).
    #[arg(long, default_value = DEFAULT_ROOT)]
    root_dir: PathBuf,
    /// Registry mirrors and credentials in k3s registries.yaml form (saved by `join`).
    #[arg(long)]
    registry_config: Option<PathBuf>,
    /// The pod network of the whole cluster (keel-control's --cluster-cidr).
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The cluster DNS service address written into pods' resolv.conf.
    #[arg(long)]
    cluster_dns: Option<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long)]
    cluster_domain: Option<String>,
    /// The keel-shim binary (default: next to keel-agent, then PATH).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// keel-shim's state folder (a tmpfs: it holds the supervisors' sockets).
    #[arg(long, default_value = "/run/keel-shim")]
    shim_root: PathBuf,
    /// Port of the HTTPS endpoint (logs, stats) the API server calls.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Hard eviction thresholds, kubelet's syntax: memory.available<100Mi,nodefs.available<10%
    /// (replaces kubelet's defaults; `join` saves it, `run` overrides it for that run).
    #[arg(long)]
    eviction_hard: Option<String>,
    /// How often the eviction manager checks the thresholds (Go duration, default 10s).
    #[arg(long)]
    eviction_monitoring_interval: Option<String>,
    /// How long a pressure condition stays True after the last time it was observed (Go
    /// duration, default 5m).
    #[arg(long)]
    eviction_pressure_transition_period: Option<String>,
    /// Renew the client certificate this many seconds after start instead of at 70-90% of
    /// its lifetime (used by the tests; also forces an early renewal).
    #[arg(long, hide = true)]
    renew_certificate_after: Option<u64>,
}

impl AgentFlags {
    fn options(&self) -> run::RunOptions {
        run::RunOptions {
            renew_after: self
                .renew_certificate_after
                .map(std::time::Duration::from_secs),
            registry_config: self.registry_config.clone(),
            cluster_cidr: self.cluster_cidr.clone(),
            cluster_dns: self.cluster_dns,
            cluster_domain: self.cluster_domain.clone(),
            shim: self.shim.clone(),
            shim_root: self.shim_root.clone(),
            port: self.port,
            eviction_hard: self.eviction_hard.clone(),
            eviction_monitoring_interval: self.eviction_monitoring_interval.clone(),
            eviction_pressure_transition_period: self.eviction_pressure_transition_period.clone(),
        }
    }

    /// Rejects bad eviction flags before anything starts (exit code 2).
    fn check(&self) {
        if let Err(e) = keel_agent::pod::evict::EvictionConfig::from_flags(
            self.eviction_hard.as_deref(),
            self.eviction_monitoring_interval.as_deref(),
            self.eviction_pressure_transition_period.as_deref(),
        ) {
            usage(e.to_string());
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Join a cluster with the line `keel-control init` printed, then run the agent.
    Join {
        /// The API server, HOST:PORT.
        server: String,
        #[arg(long)]
        token: String,
        /// sha256:<hex> of the CA's SubjectPublicKeyInfo; may be repeated.
        #[arg(long = "discovery-token-ca-cert-hash", required = true)]
        ca_hashes: Vec<String>,
        /// The Node's name (default: this machine's host name).
        #[arg(long)]
        node_name: Option<String>,
        /// The node's InternalIP (default: the address that routes to the control plane).
        #[arg(long)]
        node_ip: Option<IpAddr>,
        /// Extra node labels, k=v,k2=v2.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Label and taint this node as a control-plane node.
        #[arg(long)]
        control_plane: bool,
        /// Resources kept back from pods: cpu=500m,memory=512Mi,ephemeral-storage=1Gi.
        #[arg(long, default_value = "")]
        reserved: String,
        /// Save the credentials but do not start the agent.
        #[arg(long)]
        no_start: bool,
        #[command(flatten)]
        agent: AgentFlags,
    },
    /// Run the agent from the state a previous `join` saved (what the systemd unit calls).
    Run {
        #[command(flatten)]
        agent: AgentFlags,
    },
    /// Remove what the agent set up on this host outside its root dir: the service proxy's
    /// nftables table, the cluster DNS address, the pod routes and the masquerade table.
    /// Pods keep running; stop them first (`kubectl drain`) when retiring a node.
    Cleanup {
        #[arg(long, default_value = DEFAULT_ROOT)]
        root_dir: PathBuf,
    },
    /// Check this host for what the agent needs and print the fix for each problem.
    Doctor {
        #[arg(long, default_value = DEFAULT_ROOT)]
        root_dir: PathBuf,
    },
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn usage(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env() // kube warns on every insecure request; discovery's one is intended and
                // verified afterwards by the JWS and the CA pin.
                .unwrap_or_else(|_| "info,kube_client::client::tls=error".into()),
        )
        .with_writer(std::io::stderr)
        .finish()
        // The agent's own lines also go to the cluster log store (logship::agentlog).
        .with(keel_agent::logship::agentlog::layer())
        .init();
    let result = match cli.command {
        Command::Doctor { root_dir } => {
            let checks = doctor::all(&node::host::HostRoot::real(), &root_dir);
            let ok = doctor::report(&checks, &mut std::io::stdout());
            std::process::exit(if ok { 0 } else { 1 });
        }
        Command::Cleanup { root_dir } => runtime().and_then(|rt| {
            let config = AgentConfig::load(&Layout::new(&root_dir)).ok();
            let dns = config
                .as_ref()
                .map(|c| c.cluster.cluster_dns)
                .unwrap_or_else(|| keel_agent::state::ClusterSettings::default().cluster_dns);
            rt.block_on(async {
                keel_agent::services::cleanup(dns)?;
                keel_podnet::routes::cleanup().await?;
                let left = config
                    .map(|c| keel_agent::pod::remove_node_cgroups(&c.node_name))
                    .unwrap_or_default();
                println!("removed the service rules, the DNS address, the pod routes and the masquerade table");
                for l in left {
                    println!("kept {l}: pods still run in it");
                }
                Ok(())
            })
        }),
        Command::Run { agent } => runtime().and_then(|rt| {
            agent.check();
            rt.block_on(run::run(&Layout::new(&agent.root_dir), agent.options()))
                .map_err(anyhow::Error::from)
        }),
        Command::Join {
            server,
            token,
            ca_hashes,
            node_name,
            node_ip,
            labels,
            control_plane,
            reserved,
            no_start,
            agent,
        } => {
            let node_name = node_name.unwrap_or_else(hostname);
            if !valid_node_name(&node_name) {
                usage(format!(
                    "node name {node_name:?} is not a valid DNS subdomain (lowercase letters, digits, '-' and '.'); pass --node-name"
                ));
            }
            let labels = labels
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| match l.split_once('=') {
                    Some((k, v)) if !k.is_empty() => (k.to_string(), v.to_string()),
                    _ => usage(format!("--labels entry {l:?} is not key=value")),
                })
                .collect();
            let reserved = node::status::parse_reserved(&reserved)
                .unwrap_or_else(|e| usage(format!("--reserved: {e}")));
            agent.check();
            let layout = Layout::new(&agent.root_dir);
            let opts = JoinOptions {
                server,
                token,
                ca_hashes,
                layout: layout.clone(),
                config: AgentConfig {
                    server: String::new(),
                    node_name,
                    node_ip,
                    labels,
                    control_plane,
                    reserved,
                    registry_config: agent.registry_config.clone(),
                    cluster: Default::default(),
                    eviction_hard: agent.eviction_hard.clone(),
                },
            };
            runtime().and_then(|rt| {
                rt.block_on(async {
                    let cfg = bootstrap::join(opts).await?;
                    println!(
                        "This node has joined the cluster as {}: its certificate was signed. Run 'kubectl get nodes' on the control plane to see it.",
                        cfg.node_name
                    );
                    if no_start {
                        println!("Start it with: keel-agent run --root-dir {}", layout.root.display());
                        return Ok(());
                    }
                    run::run(&layout, agent.options())
                        .await
                        .map_err(anyhow::Error::from)
                })
            })
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
