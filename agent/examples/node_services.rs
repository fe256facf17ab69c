//! Runs the node's service proxy and cluster DNS (`keel_agent::services::run`) on their own,
//! in the network namespace it is started in, against the API server of a kubeconfig: what
//! `keel-agent run` starts, without pods. The services lab test (tests/tests/services.rs)
//! uses it; SIGTERM stops it.
//!
//! ```text
//! node_services --kubeconfig FILE --node-name NAME --node-ip IP --cluster-cidr CIDR
//!               [--cluster-dns IP] [--cluster-domain ZONE] [--resolv-conf FILE]
//! node_services --cleanup [--cluster-dns IP]
//! ```

use anyhow::{Context, bail};
use keel_agent::services::{self, ServicesConfig};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = ServicesConfig::new("", Vec::new(), "");
    let mut kubeconfig = None;
    let mut cleanup = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--cleanup" {
            cleanup = true;
            continue;
        }
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--kubeconfig" => kubeconfig = Some(v),
            "--node-name" => cfg.node_name = v,
            "--node-ip" => cfg.node_ips.push(v.parse().context("--node-ip")?),
            "--cluster-cidr" => cfg.cluster_cidr = v,
            "--cluster-dns" => cfg.cluster_dns = v.parse().context("--cluster-dns")?,
            "--cluster-domain" => cfg.cluster_domain = v,
            "--resolv-conf" => cfg.resolv_conf = v.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    if cleanup {
        services::cleanup(cfg.cluster_dns)?;
        return Ok(());
    }
    let kubeconfig = kubeconfig.context("--kubeconfig is required")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("read {kubeconfig}"))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        let client = kube::Client::try_from(config)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
            let _ = tx.send(true);
        });
        services::run(client, cfg, rx).await?;
        Ok(())
    })
}
