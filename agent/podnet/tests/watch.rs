//! Root test of `routes::run` against a real `keel-control` API server (in the lab's bridge
//! namespace, so the node namespaces reach it): routes follow Nodes being added and deleted,
//! the loop stops on the shutdown signal and leaves the routes in place.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::{LAN, Lab, ok, poll};
use serde_json::json;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn control_bin() -> std::path::PathBuf {
    let p = common::target_dir().join("keel-control");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p keel-control` (scripts/test.sh builds every binary)",
        p.display()
    );
    p
}

#[test]
fn routes_follow_nodes_from_the_api() {
    let lab = Lab::new("watch", 2);
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    lab.lan
        .ip(&["addr", "add", &format!("{LAN}.1/24"), "dev", "lan0"]);
    let data = lab.dir.path().join("control");
    let listen = format!("{LAN}.1:6443");
    ok(lab
        .lan
        .cmd(control_bin())
        .args(["init", "--data-dir"])
        .arg(&data)
        .args([
            "--advertise-address",
            &format!("{LAN}.1"),
            "--listen",
            &listen,
        ]));
    let log = std::fs::File::create(lab.dir.path().join("control.log")).expect("log");
    let _control = Kill(
        lab.lan
            .cmd(control_bin())
            .args(["serve", "--no-controllers", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel-control"),
    );
    let kubeconfig = data.join("admin.kubeconfig").to_string_lossy().into_owned();
    let create = |i: usize, ip: &str| {
        let f = lab.dir.path().join(format!("node{i}.json"));
        let cidr = format!("10.244.{i}.0/24");
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("n{i}")},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
        });
        std::fs::write(&f, node.to_string()).expect("node json");
        let f = f.to_string_lossy().into_owned();
        let out = n1.lab(&["node-create", &kubeconfig, &f]);
        if !out.status.success() {
            eprintln!(
                "node-create: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        out.status.success().then_some(())
    };
    poll(
        "the API server to accept node n1",
        Duration::from_secs(30),
        || create(1, &n1.ip),
    );
    create(2, &n2.ip).expect("create n2");

    let err = std::fs::File::create(lab.dir.path().join("watch.log")).expect("log");
    let mut watch = Kill(
        n1.ns
            .cmd(common::lab_bin())
            .args(["watch", &kubeconfig, "n1", "10.244.0.0/16"])
            .stdin(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start watch"),
    );
    let routes = || n1.ns.ip(&["route", "show", "proto", "75"]);
    let via2 = format!("10.244.2.0/24 via {} dev eth1", n2.ip);
    poll("the route to n2's pods", Duration::from_secs(20), || {
        (routes().trim() == via2).then_some(())
    });
    assert!(
        n1.ns
            .cmd("nft")
            .args(["list", "table", "ip", "keel-nat"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "table ip keel-nat missing"
    );
    let fwd = ok(n1.ns.cmd("cat").arg("/proc/sys/net/ipv4/ip_forward"));
    assert_eq!(fwd.trim(), "1");

    // A third node joins (its address need not answer; it is on eth1's subnet).
    create(3, &format!("{LAN}.13")).expect("create n3");
    let via3 = format!("10.244.3.0/24 via {LAN}.13 dev eth1");
    poll("the route to n3's pods", Duration::from_secs(20), || {
        routes().contains(&via3).then_some(())
    });
    // n2 leaves: its route goes, n3's stays.
    assert!(n1.lab(&["node-delete", &kubeconfig, "n2"]).status.success());
    poll("n2's route to go", Duration::from_secs(20), || {
        (routes().trim() == via3).then_some(())
    });

    // Shutdown: the loop ends, routes stay for the pods (cleanup removes them).
    drop(watch.0.stdin.take());
    let status = poll("the watch to stop", Duration::from_secs(10), || {
        watch.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "watch exited with {status}");
    assert_eq!(routes().trim(), via3);
    n1.lab_ok(&["cleanup"]);
    assert_eq!(routes().trim(), "");
}
