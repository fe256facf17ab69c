//! keel-bridge options against the real kernel: hairpin (flag and traffic), promiscuous
//! mode, MTU, the `mac` capability, vlan. Everything runs inside `kcni-` namespaces.

mod common;

use std::time::Duration;

use common::{Ns, World, must};
use serde_json::json;

#[test]
fn hairpin_promisc_and_mtu_are_applied() {
    let w = World::new("opt");
    let pod = Ns::new("opt-p");
    let c = w.conf(
        "opt",
        "10.76.0.0/16",
        json!({"hairpinMode": true, "mtu": 1400}),
    );
    let r = w
        .run("keel-bridge", "ADD", "opt1", &pod.path(), &c)
        .expect_ok("ADD");
    let veth = r.json["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_string();
    let d = w.host.ip_json(&["-d", "link", "show", &veth]);
    assert_eq!(d[0]["linkinfo"]["info_slave_data"]["hairpin"], true, "{d}");
    assert_eq!(d[0]["mtu"], 1400);
    assert_eq!(pod.ip_json(&["link", "show", "eth0"])[0]["mtu"], 1400);
    assert_eq!(w.host.ip_json(&["link", "show", "kbr0"])[0]["mtu"], 1400);
    // Capability "mac".
    let pm = Ns::new("opt-m");
    let mut cm = w.conf(
        "opt",
        "10.76.0.0/16",
        json!({"hairpinMode": true, "mtu": 1400}),
    );
    cm["runtimeConfig"] = json!({"mac": "0a:58:0a:4c:00:99"});
    let rm = w
        .run("keel-bridge", "ADD", "optm", &pm.path(), &cm)
        .expect_ok("ADD with a MAC");
    assert_eq!(rm.json["interfaces"][2]["mac"], "0a:58:0a:4c:00:99");
    assert_eq!(
        pm.ip_json(&["link", "show", "eth0"])[0]["address"],
        "0a:58:0a:4c:00:99"
    );
    cm["runtimeConfig"] = json!({"mac": "01:00:00:00:00:01"});
    w.run("keel-bridge", "ADD", "optn", &pm.path(), &cm)
        .expect_code(7, "multicast MAC");
    let p2 = Ns::new("opt-q");
    let promisc = w.conf(
        "opt2",
        "10.77.0.0/16",
        json!({"bridge": "kbr2", "promiscMode": true}),
    );
    w.run("keel-bridge", "ADD", "opt2", &p2.path(), &promisc)
        .expect_ok("ADD promisc");
    let br = w.host.ip_json(&["-d", "link", "show", "kbr2"]);
    assert!(br[0]["promiscuity"].as_u64().unwrap_or(0) >= 1, "{br}");
}

#[test]
fn vlan_sets_the_port_pvid_or_says_the_kernel_lacks_it() {
    let w = World::new("vlan");
    let pod = Ns::new("vlan-p");
    let probe = Ns::new("vlan-probe");
    let kernel_has_it = common::sh(&[
        "ip",
        "-n",
        &probe.name,
        "link",
        "add",
        "kprobe",
        "type",
        "bridge",
        "vlan_filtering",
        "1",
    ])
    .status
    .success();
    let c = w.conf("vlan", "10.80.0.0/16", json!({"vlan": 42}));
    let r = w.run("keel-bridge", "ADD", "vlan1", &pod.path(), &c);
    if kernel_has_it {
        let r = r.expect_ok("ADD with vlan");
        let veth = r.json["interfaces"][1]["name"]
            .as_str()
            .expect("veth")
            .to_string();
        let vlans = must(&[
            "bridge",
            "-n",
            &w.host.name,
            "-j",
            "vlan",
            "show",
            "dev",
            &veth,
        ]);
        assert!(
            vlans.contains("\"vlan\":42") && vlans.contains("PVID"),
            "{vlans}"
        );
    } else {
        let r = r.expect_code(
            102,
            "ADD with vlan on a kernel without bridge vlan filtering",
        );
        assert!(
            r.json["details"]
                .as_str()
                .unwrap_or("")
                .contains("CONFIG_BRIDGE_VLAN_FILTERING"),
            "{}",
            r.stdout
        );
        assert_eq!(w.host.links(), ["lo"]);
        assert!(w.reserved("vlan").is_empty());
    }
}

/// Hairpin traffic: a macvlan on top of the pod's eth0, moved to a second namespace, sends to
/// the pod itself. Its frames leave through the pod's own bridge port and must come back out
/// of that same port, which the bridge only does in hairpin mode; without it nothing answers.
#[test]
fn hairpin_mode_lets_traffic_return_through_the_same_port() {
    let w = World::new("hp");
    let mut answered = Vec::new();
    for (i, hairpin) in [true, false].into_iter().enumerate() {
        let pod = Ns::new(&format!("hp-a{i}"));
        let side = Ns::new(&format!("hp-c{i}"));
        let c = w.conf(
            &format!("hp{i}"),
            "10.82.0.0/16",
            json!({"bridge": format!("khp{i}"), "hairpinMode": hairpin}),
        );
        let r = w
            .run("keel-bridge", "ADD", &format!("hp{i}"), &pod.path(), &c)
            .expect_ok("ADD");
        must(&[
            "ip", "-n", &pod.name, "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode",
            "bridge",
        ]);
        must(&[
            "ip", "-n", &pod.name, "link", "set", "mv0", "netns", &side.name,
        ]);
        must(&[
            "ip",
            "-n",
            &side.name,
            "addr",
            "add",
            "10.82.0.200/16",
            "dev",
            "mv0",
        ]);
        must(&["ip", "-n", &side.name, "link", "set", "mv0", "up"]);
        let ok = if hairpin {
            side.can_ping(&r.ip(0), Duration::from_secs(5))
        } else {
            side.exec(&["ping", "-c", "2", "-W", "1", &r.ip(0)])
                .status
                .success()
        };
        answered.push(ok);
    }
    assert_eq!(
        answered,
        [true, false],
        "[with hairpin, without hairpin] reachability"
    );
}
