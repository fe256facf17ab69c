//! keel-control entry point: flags, the tokio runtime, and errors mapped to exit codes.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use keel_control::cli;
use std::net::IpAddr;
use std::path::PathBuf;

const DEFAULT_DIR: &str = "/var/lib/keel/control";

#[derive(Parser)]
#[command(
    name = "keel-control",
    version,
    about = "The Keel control plane: a Kubernetes API server, store, scheduler and controllers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the cluster's CA, certificates, admin kubeconfig, store and first join token.
    Init {
        #[arg(long, default_value = DEFAULT_DIR)]
        data_dir: PathBuf,
        /// The address nodes and kubectl reach the API server at (default: the default route's).
        #[arg(long)]
        advertise_address: Option<IpAddr>,
        #[arg(long, default_value = "0.0.0.0:6443")]
        listen: String,
        #[arg(long, default_value = "10.244.0.0/16")]
        cluster_cidr: ipnet::Ipv4Net,
        #[arg(long, default_value = "10.96.0.0/12")]
        service_cidr: ipnet::Ipv4Net,
    },
    /// Run the API server (initialising the data dir first if it is empty).
    Serve {
        #[arg(long, default_value = DEFAULT_DIR)]
        data_dir: PathBuf,
        /// Override the listen address saved by init.
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        advertise_address: Option<IpAddr>,
        /// Serve the API only: no scheduler or controllers (a standby, or API benchmarks).
        #[arg(long)]
        no_controllers: bool,
        /// The cluster log store's SQLite file (default: <data-dir>/logs.db).
        #[arg(long)]
        log_store: Option<PathBuf>,
        /// Delete log lines older than this (30s, 10m, 12h, 7d).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        log_max_age: std::time::Duration,
        /// Keep the log store's used pages under this size by deleting the oldest lines
        /// (512Mi, 1Gi, 100M or bytes).
        #[arg(long, default_value = "1Gi", value_parser = parse_size)]
        log_max_size: u64,
        /// How often log retention runs.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        log_retention_interval: std::time::Duration,
    },
    /// Print cluster logs from the log store (container lines and the agents' own logs).
    Logs {
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_DIR)]
        data_dir: PathBuf,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Label selector on the pods' labels (app=web,tier!=db).
        #[arg(long, short = 'l')]
        selector: Option<String>,
        #[arg(long)]
        pod: Option<String>,
        #[arg(long, short = 'c')]
        container: Option<String>,
        #[arg(long)]
        node: Option<String>,
        /// Only the agents' own logs.
        #[arg(long)]
        agent: bool,
        /// Lines newer than this long ago (10s, 5m, 2h).
        #[arg(long, conflicts_with = "since_time")]
        since: Option<String>,
        /// Lines at or after this RFC 3339 time.
        #[arg(long)]
        since_time: Option<String>,
        /// Lines before this RFC 3339 time.
        #[arg(long)]
        until_time: Option<String>,
        /// Print at most this many lines (oldest first).
        #[arg(long)]
        limit: Option<usize>,
        /// Print each line's time.
        #[arg(long)]
        timestamps: bool,
        /// Print the bare lines without the namespace/pod/container prefix.
        #[arg(long)]
        no_prefix: bool,
    },
    /// Manage bootstrap tokens (through the API, with the admin kubeconfig).
    Token {
        #[arg(long, global = true)]
        kubeconfig: Option<PathBuf>,
        #[arg(long, global = true, default_value = DEFAULT_DIR)]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Write an online-consistent copy of the store to FILE.
    Backup {
        #[arg(long, default_value = DEFAULT_DIR)]
        data_dir: PathBuf,
        file: PathBuf,
    },
    /// Replace the store with a backup (stop the server first).
    Restore {
        #[arg(long, default_value = DEFAULT_DIR)]
        data_dir: PathBuf,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    Create {
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long)]
        print_join_command: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    Delete {
        id: String,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    keel_control::logs::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 30s, 10m, 12h or 7d"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    keel_control::logs::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size like 512Mi, 1Gi, 100M or a byte count"))
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel-control: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Init {
                data_dir,
                advertise_address,
                listen,
                cluster_cidr,
                service_cidr,
            } => {
                let opts = cli::InitOptions {
                    data_dir: data_dir.clone(),
                    advertise_address,
                    listen,
                    cluster_cidr,
                    service_cidr,
                };
                let join = cli::init(&opts).await?;
                print!("{}", cli::init_banner(&data_dir, &join));
                Ok(())
            }
            Command::Serve {
                data_dir,
                listen,
                advertise_address,
                no_controllers,
                log_store,
                log_max_age,
                log_max_size,
                log_retention_interval,
            } => {
                if !cli::db_path(&data_dir).exists() && !data_dir.join("config.json").exists() {
                    let opts = cli::InitOptions {
                        data_dir: data_dir.clone(),
                        advertise_address,
                        listen: listen.clone().unwrap_or_else(|| "0.0.0.0:6443".into()),
                        cluster_cidr: "10.244.0.0/16".parse()?,
                        service_cidr: "10.96.0.0/12".parse()?,
                    };
                    let join = cli::init(&opts).await?;
                    eprint!("{}", cli::init_banner(&data_dir, &join));
                }
                let logs = keel_control::logs::Settings {
                    path: log_store,
                    retention: keel_control::logs::Retention {
                        max_age: log_max_age,
                        max_bytes: log_max_size,
                        interval: log_retention_interval,
                    },
                };
                cli::serve_with_logs(&data_dir, listen, !no_controllers, &logs).await
            }
            Command::Logs {
                kubeconfig,
                data_dir,
                namespace,
                selector,
                pod,
                container,
                node,
                agent,
                since,
                since_time,
                until_time,
                limit,
                timestamps,
                no_prefix,
            } => {
                let opts = keel_control::logs::cli::LogsOptions {
                    kubeconfig: kubeconfig.unwrap_or_else(|| data_dir.join("admin.kubeconfig")),
                    namespace,
                    selector,
                    pod,
                    container,
                    node,
                    agent,
                    since: since.or(since_time),
                    until: until_time,
                    limit,
                    timestamps,
                    no_prefix,
                };
                keel_control::logs::cli::logs(&opts).await
            }
            Command::Token {
                kubeconfig,
                data_dir,
                action,
            } => {
                let kc = kubeconfig.unwrap_or_else(|| data_dir.join("admin.kubeconfig"));
                match action {
                    TokenAction::Create {
                        ttl,
                        print_join_command,
                        description,
                    } => {
                        println!(
                            "{}",
                            cli::token_create(&kc, &ttl, print_join_command, &description).await?
                        );
                    }
                    TokenAction::List => print!("{}", cli::token_list(&kc).await?),
                    TokenAction::Delete { id } => {
                        cli::token_delete(&kc, &id).await?;
                        println!("bootstrap token \"{id}\" deleted");
                    }
                }
                Ok(())
            }
            Command::Backup { data_dir, file } => cli::backup(&data_dir, &file),
            Command::Restore { data_dir, file } => cli::restore(&data_dir, &file),
        }
    });
    if let Err(e) = result {
        eprintln!("keel-control: {e:#}");
        std::process::exit(1);
    }
}
