//! Root tests of keel-podnet with the real keel-bridge / keel-host-local binaries in a
//! namespace lab (see `common`): pods on one node and across nodes, host-gw routes,
//! masquerade to an outside host, idempotent setup after a restart, teardown leaving nothing.

mod common;

use std::time::Duration;

use common::{Lab, Listener, connect, poll};
use serde_json::Value;

fn ip_of(p: &Value) -> String {
    p["ips"][0].as_str().expect("pod has an IP").to_string()
}

fn netns_of(p: &Value) -> String {
    p["netns"].as_str().expect("netns path").to_string()
}

#[test]
fn pods_on_two_nodes_routes_masquerade_and_teardown() {
    let lab = Lab::new("main", 2);
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);

    // Two pods per node.
    let a1 = n1.setup("uid-a1", "a1");
    let a2 = n1.setup("uid-a2", "a2");
    let b1 = n2.setup("uid-b1", "b1");
    let b2 = n2.setup("uid-b2", "b2");
    for (p, node) in [(&a1, n1), (&a2, n1), (&b1, n2), (&b2, n2)] {
        let ip = ip_of(p);
        let prefix = node.pod_cidr.trim_end_matches("0/24");
        assert!(ip.starts_with(prefix), "{ip} not in {}", node.pod_cidr);
        assert_eq!(p["interface"], "eth0");
        assert_eq!(
            p["gateway"].as_str(),
            Some(format!("{prefix}1").as_str()),
            "{p}"
        );
        assert!(std::path::Path::new(&netns_of(p)).exists());
        // lo is up inside the pod.
        let lo =
            common::ok(common::in_netns(&netns_of(p), "ip").args(["-o", "link", "show", "lo"]));
        assert!(lo.contains("UP"), "lo not up in the pod: {lo}");
    }
    assert_eq!(n1.reserved_ips().len(), 2);
    assert_eq!(n1.veths(), 3, "eth1 plus two pod veths");
    // The default conflist was written from the podCIDR.
    let conf = std::fs::read_to_string(n1.dir.join("net.d/10-keel.conflist")).expect("conflist");
    assert!(
        conf.contains("10.244.1.0/24") && conf.contains("keel-bridge"),
        "{conf}"
    );

    // Pod to pod on one node.
    let l = Listener::start(&netns_of(&a1), &format!("{}:8080", ip_of(&a1)));
    let from = connect(&netns_of(&a2), &format!("{}:8080", ip_of(&a1))).expect("a2 -> a1");
    assert_eq!(from, ip_of(&a2));
    assert_eq!(l.peer(), ip_of(&a2));

    // Across nodes: no route yet, so this must fail (the control for the next step).
    assert_eq!(
        connect(&netns_of(&a1), &format!("{}:8080", ip_of(&b1))),
        None
    );

    // host-gw routes + masquerade, from the Node objects.
    let nodes_json = lab.dir.path().join("nodes.json");
    std::fs::write(&nodes_json, lab.node_objects(&[0, 1]).to_string()).expect("nodes.json");
    let nodes_arg = nodes_json.to_string_lossy().into_owned();
    for n in [n1, n2] {
        n.lab_ok(&["routes", &n.name, &nodes_arg, "10.244.0.0/16"]);
    }
    let r1 = n1.ns.ip(&["route", "show", "proto", "75"]);
    assert_eq!(
        r1.trim(),
        format!("10.244.2.0/24 via {} dev eth1", n2.ip),
        "{r1}"
    );
    assert!(
        n1.ns
            .cmd("nft")
            .args(["list", "table", "ip", "keel-nat"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "table ip keel-nat missing"
    );
    // Applying again changes nothing.
    n1.lab_ok(&["routes", &n1.name, &nodes_arg, "10.244.0.0/16"]);
    assert_eq!(n1.ns.ip(&["route", "show", "proto", "75"]), r1);

    // Pod to pod across nodes, without address translation.
    let l = Listener::start(&netns_of(&b1), &format!("{}:8080", ip_of(&b1)));
    connect(&netns_of(&a1), &format!("{}:8080", ip_of(&b1))).expect("a1 -> b1");
    assert_eq!(l.peer(), ip_of(&a1));
    let l = Listener::start(&netns_of(&a2), &format!("{}:8081", ip_of(&a2)));
    connect(&netns_of(&b2), &format!("{}:8081", ip_of(&a2))).expect("b2 -> a2");
    assert_eq!(l.peer(), ip_of(&b2));

    // Leaving the cluster CIDR: the outside host sees the node's address.
    let out_addr = format!("{}.100:9090", common::LAN);
    let l = Listener::start(&lab.outside.path(), &out_addr);
    connect(&netns_of(&b1), &out_addr).expect("b1 -> outside");
    assert_eq!(l.peer(), n2.ip);

    // Setup again for the same uid in a new process (agent restart): the cached attachment,
    // no second ADD.
    assert_eq!(n1.setup("uid-a1", "a1"), a1);
    assert_eq!(n1.reserved_ips().len(), 2);
    assert_eq!(n1.veths(), 3);
    assert_eq!(
        n1.attached(),
        vec!["uid-a1".to_string(), "uid-a2".to_string()]
    );

    // Teardown: twice, leaving no namespace file, address, veth or record.
    n1.teardown("uid-a1");
    n1.teardown("uid-a1");
    assert!(!std::path::Path::new(&netns_of(&a1)).exists());
    assert_eq!(n1.reserved_ips().len(), 1);
    poll("a1's veth to go", Duration::from_secs(5), || {
        (n1.veths() == 2).then_some(())
    });
    assert_eq!(n1.attached(), vec!["uid-a2".to_string()]);
    n1.teardown("never-set-up");
    // a2 still works after a1 left.
    let l = Listener::start(&netns_of(&a2), &format!("{}:8082", ip_of(&a2)));
    connect(&netns_of(&b1), &format!("{}:8082", ip_of(&a2))).expect("b1 -> a2");
    assert_eq!(l.peer(), ip_of(&b1));

    // A node that left: its route is pruned; routes of others are not touched.
    std::fs::write(&nodes_json, lab.node_objects(&[0]).to_string()).expect("nodes.json");
    n1.lab_ok(&["routes", &n1.name, &nodes_arg, "10.244.0.0/16"]);
    assert_eq!(n1.ns.ip(&["route", "show", "proto", "75"]).trim(), "");
    assert!(
        n1.ns
            .ip(&["route", "show"])
            .contains("10.244.1.0/24 dev keel0")
    );

    // cleanup removes the table and the owned routes.
    n2.lab_ok(&["cleanup"]);
    assert_eq!(n2.ns.ip(&["route", "show", "proto", "75"]).trim(), "");
    assert!(
        !n2.ns
            .cmd("nft")
            .args(["list", "table", "ip", "keel-nat"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "table ip keel-nat still there after cleanup"
    );
    n2.lab_ok(&["cleanup"]);

    // Everything down: nothing left on either node.
    n1.teardown("uid-a2");
    n2.teardown("uid-b1");
    n2.teardown("uid-b2");
    for n in [n1, n2] {
        assert!(n.attached().is_empty());
        assert!(n.reserved_ips().is_empty(), "{:?}", n.reserved_ips());
        poll("pod veths to go", Duration::from_secs(5), || {
            (n.veths() == 1).then_some(())
        });
        let left: Vec<_> = std::fs::read_dir(n.netns_dir())
            .expect("netns dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Unmounts and removes a pod's namespace file behind the crate's back (a reboot empties
/// the tmpfs).
fn lose_netns(path: &str) {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).expect("umount");
    std::fs::remove_file(path).expect("rm netns file");
}

#[test]
fn recovers_from_a_crash_or_reboot_between_steps() {
    let lab = Lab::new("crash", 1);
    let n = &lab.nodes[0];
    let record = n.dir.join("state/attachments/uid-c1.json");

    // Crash after CNI ADD but before the record was written: the namespace is there, the
    // record is not. The next setup releases the half attachment and attaches again.
    let p = n.setup("uid-c1", "c1");
    std::fs::remove_file(&record).expect("rm record");
    // What a setup leaves while it runs: the marker written before the namespace.
    let marker = n.dir.join("state/attachments/uid-c1.pending");
    std::fs::write(&marker, netns_of(&p)).expect("marker");
    assert_eq!(n.attached(), vec!["uid-c1".to_string()]);
    let p2 = n.setup("uid-c1", "c1");
    assert_eq!(p2["netns"], p["netns"]);
    assert_eq!(n.reserved_ips().len(), 1, "{:?}", n.reserved_ips());
    poll("the old veth to go", Duration::from_secs(5), || {
        (n.veths() == 2).then_some(())
    });

    // Reboot: the record survived, the namespace did not. Setup detaches and attaches again.
    lose_netns(&netns_of(&p2));
    let p3 = n.setup("uid-c1", "c1");
    assert!(std::path::Path::new(&netns_of(&p3)).exists());
    assert_eq!(n.reserved_ips().len(), 1, "{:?}", n.reserved_ips());
    poll("one pod veth", Duration::from_secs(5), || {
        (n.veths() == 2).then_some(())
    });
    let l = Listener::start(&netns_of(&p3), &format!("{}:8080", ip_of(&p3)));
    let from = connect(&lab.nodes[0].ns.path(), &format!("{}:8080", ip_of(&p3)));
    assert_eq!(from.as_deref(), Some(format!("{}1", "10.244.1.").as_str()));
    drop(l);

    // Teardown after the namespace vanished still releases the address and the host veth.
    lose_netns(&netns_of(&p3));
    n.teardown("uid-c1");
    assert!(n.attached().is_empty());
    assert!(n.reserved_ips().is_empty(), "{:?}", n.reserved_ips());
    poll("no pod veth", Duration::from_secs(5), || {
        (n.veths() == 1).then_some(())
    });
    assert!(!record.exists());
}

#[test]
fn dual_stack_pod_gets_one_address_per_family() {
    let lab = Lab::new("dual", 1);
    let n = &lab.nodes[0];
    n.write_config(serde_json::json!({"podCidr": "10.244.1.0/24,fd00:244:1::/64"}));
    let p = n.setup("uid-d1", "d1");
    let ips: Vec<&str> = p["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ips.len(), 2, "{p}");
    assert!(ips[0].starts_with("10.244.1."), "{p}");
    assert!(ips[1].starts_with("fd00:244:1::"), "{p}");
    let l = Listener::start(&netns_of(&p), &format!("[{}]:8080", ips[1]));
    connect(&n.ns.path(), &format!("[{}]:8080", ips[1])).expect("node -> pod over IPv6");
    assert_eq!(l.peer(), "fd00:244:1::1");
    n.teardown("uid-d1");
    assert!(n.attached().is_empty());
    assert!(n.reserved_ips().is_empty(), "{:?}", n.reserved_ips());
}

#[test]
fn parallel_setups_and_teardowns_including_the_same_uid_twice() {
    let lab = Lab::new("par", 1);
    let n = &lab.nodes[0];
    let cfg = n.config.to_string_lossy().into_owned();
    let uids = ["p1", "p2", "p3", "p4", "p5", "p6", "p1", "p2"];
    let mut args = vec!["parallel", cfg.as_str(), "setup"];
    args.extend(uids);
    let out: Value = serde_json::from_str(n.lab_ok(&args).trim()).expect("JSON");
    assert_eq!(
        out["children"], 0,
        "every plugin process was waited for: {out}"
    );
    let results = out["results"].as_array().expect("array");
    assert_eq!(results.len(), 8);
    assert_eq!(results[0], results[6], "same uid, same attachment");
    assert_eq!(results[1], results[7]);
    let mut ips: Vec<&str> = results[..6]
        .iter()
        .filter_map(|p| p["ips"][0].as_str())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 6, "{out}");
    assert_eq!(n.reserved_ips().len(), 6);
    assert_eq!(n.veths(), 7);
    args[2] = "teardown";
    let out: Value = serde_json::from_str(n.lab_ok(&args).trim()).expect("JSON");
    assert_eq!(
        out["children"], 0,
        "plugins (and no DEL helper) left as children: {out}"
    );
    assert!(n.attached().is_empty());
    assert!(n.reserved_ips().is_empty());
    poll("no pod veth", Duration::from_secs(5), || {
        (n.veths() == 1).then_some(())
    });
}

/// Lab nodes share the host's mount namespace, so two agents may share one netns folder:
/// neither lists, nor tears down, the other's pods.
#[test]
fn agents_sharing_a_netns_folder_see_only_their_own_pods() {
    let lab = Lab::new("shared", 2);
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    let shared = lab.dir.path().join("shared-netns");
    struct Release(std::path::PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = keel_podnet::release_netns_dir(&self.0);
        }
    }
    let _release = Release(shared.clone());
    for n in [n1, n2] {
        n.write_config(serde_json::json!({"netnsDir": shared}));
    }
    let a = n1.setup("uid-s1", "s1");
    let b = n2.setup("uid-s2", "s2");
    assert_eq!(n1.attached(), vec!["uid-s1".to_string()]);
    assert_eq!(n2.attached(), vec!["uid-s2".to_string()]);
    n1.teardown("uid-s1");
    assert!(
        std::path::Path::new(&netns_of(&b)).exists(),
        "n2's pod namespace must stay"
    );
    assert!(!std::path::Path::new(&netns_of(&a)).exists());
    n2.teardown("uid-s2");
    assert!(n2.attached().is_empty());
    keel_podnet::release_netns_dir(&shared).expect("release");
}
