//! The walkthrough's lab for people (`scripts/lab.sh` drives it): `lab up` starts the
//! registry, the control plane and three joined nodes in network namespaces named
//! `keellab-*`, leaves them running and writes `<dir>/env` (KUBECONFIG, the master's
//! namespace); `lab down` removes everything such a lab left (processes, containers, mounts,
//! cgroups, namespaces, the folder); `lab images` builds the test images (once per content)
//! and prints their OCI layout's path. Run as root.
//!
//! cargo build -p keel-tests --example lab && target/debug/examples/lab up [--dir /var/lib/keel-lab]

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::lab::{Lab, netns_path};
use std::path::PathBuf;

const PREFIX: &str = "keellab";
const DEFAULT_DIR: &str = "/var/lib/keel-lab";

fn usage() -> ! {
    eprintln!("usage: lab up|down|images [--dir DIR]   (default DIR {DEFAULT_DIR})");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(action) = args.first() else { usage() };
    let dir = match args.get(1).map(String::as_str) {
        None => PathBuf::from(DEFAULT_DIR),
        Some("--dir") => args.get(2).map(PathBuf::from).unwrap_or_else(|| usage()),
        Some(_) => usage(),
    };
    let spec = ClusterSpec::default();
    let names = Cluster::node_names(&spec);
    let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
    match action.as_str() {
        "up" => {
            let lab = Lab::named(PREFIX, &dir, &nodes);
            let mut cluster = Cluster::start_in(lab, spec);
            let kubeconfig = cluster.control.admin_kubeconfig();
            let env = dir.join("env");
            let master_ns = format!("{PREFIX}-{MASTER}");
            std::fs::write(
                &env,
                format!(
                    "KEEL_LAB_DIR={}\nKUBECONFIG={}\nKEEL_LAB_NETNS={master_ns}\nKEEL_LAB_REGISTRY={}\n",
                    dir.display(),
                    kubeconfig.display(),
                    cluster.registry.address,
                ),
            )
            .unwrap_or_else(|e| panic!("writing {}: {e}", env.display()));
            let pids = cluster.keep();
            println!(
                "lab up: nodes {nodes:?} Ready; processes {pids:?}; kubectl runs inside {} with KUBECONFIG from {}",
                netns_path(&master_ns).display(),
                env.display()
            );
        }
        "images" => println!("{}", keel_tests::images::layout().display()),
        "down" => {
            Lab::remove_named(PREFIX, &dir, &nodes);
            println!(
                "lab down: removed the {PREFIX}-* namespaces and {}",
                dir.display()
            );
        }
        _ => usage(),
    }
}
