//! The CNI protocol as seen from a runtime: VERSION, result encodings per version, STATUS
//! and GC, and every kind of bad input getting the spec's error object with the right code
//! and nothing left behind. Root: runs the real binaries in a `kcni-` namespace.

mod common;

use common::{Ns, World};
use serde_json::json;

#[test]
fn version_command_lists_supported_versions() {
    let w = World::new("ver");
    for bin in ["keel-bridge", "keel-host-local", "keel-loopback"] {
        for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let r = w.run_env(
                bin,
                json!({"cniVersion": v}).to_string().as_bytes(),
                &[("CNI_COMMAND", "VERSION")],
            );
            let r = r.expect_ok("VERSION");
            assert_eq!(r.json["cniVersion"], v);
            let sup: Vec<&str> = r.json["supportedVersions"]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|s| s.as_str())
                .collect();
            assert_eq!(sup, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"], "{bin}");
        }
    }
}

#[test]
fn add_result_follows_the_config_version() {
    let w = World::new("enc");
    let pod = Ns::new("enc-p");
    for (i, v) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let mut c = w.conf("enc", "10.61.0.0/24", json!({"mtu": 1400}));
        c["cniVersion"] = json!(v);
        let cid = format!("enc{i}");
        let r = w
            .run("keel-bridge", "ADD", &cid, &pod.path(), &c)
            .expect_ok("ADD");
        assert_eq!(r.json["cniVersion"], *v);
        let ip0 = &r.json["ips"][0];
        assert_eq!(
            ip0.get("version").is_some(),
            v.starts_with("0."),
            "{v}: {ip0}"
        );
        assert_eq!(ip0["interface"], 2);
        assert_eq!(r.json["interfaces"][2]["sandbox"], pod.path());
        assert_eq!(
            r.json["interfaces"][0].get("mtu").is_some(),
            *v == "1.1.0",
            "{v}"
        );
        if *v != "0.3.1" {
            w.run(
                "keel-bridge",
                "CHECK",
                &cid,
                &pod.path(),
                &World::with_prev(&c, &r),
            )
            .expect_ok("CHECK");
        }
        w.run(
            "keel-bridge",
            "DEL",
            &cid,
            &pod.path(),
            &World::with_prev(&c, &r),
        )
        .expect_ok("DEL");
    }
    // CHECK does not exist before 0.4.0.
    let mut c = w.conf("enc", "10.61.0.0/24", json!({}));
    c["cniVersion"] = json!("0.3.1");
    w.run("keel-bridge", "CHECK", "x", &pod.path(), &c)
        .expect_code(1, "CHECK at 0.3.1");
}

#[test]
fn bad_input_gets_the_spec_error() {
    let w = World::new("bad");
    let pod = Ns::new("bad-p");
    let add = |stdin: &[u8], netns: &str| {
        w.run_env(
            "keel-bridge",
            stdin,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "bad1"),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
            ],
        )
    };
    let good = w.conf("bad", "10.62.0.0/24", json!({}));
    add(b"{\"cniVersion\": ", &pod.path()).expect_code(6, "malformed JSON");
    let mut v = good.clone();
    v["cniVersion"] = json!("9.9.9");
    add(v.to_string().as_bytes(), &pod.path()).expect_code(1, "unknown cniVersion");
    // Missing env: no container ID; no CNI_COMMAND at all.
    let r = w.run_env(
        "keel-bridge",
        good.to_string().as_bytes(),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", &pod.path()),
            ("CNI_IFNAME", "eth0"),
        ],
    );
    let r = r.expect_code(4, "missing CNI_CONTAINERID");
    assert!(
        r.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("CNI_CONTAINERID")
    );
    w.run_env("keel-bridge", b"", &[])
        .expect_code(4, "missing CNI_COMMAND");
    w.run_env(
        "keel-bridge",
        good.to_string().as_bytes(),
        &[("CNI_COMMAND", "FROB")],
    )
    .expect_code(4, "unknown command");
    // A netns path that is not a network namespace, and one that does not exist.
    let file = w.data.path().join("not-a-netns");
    std::fs::write(&file, "x").expect("write");
    add(good.to_string().as_bytes(), &file.display().to_string()).expect_code(4, "bad netns path");
    add(
        good.to_string().as_bytes(),
        "/run/netns/kcni-does-not-exist",
    )
    .expect_code(4, "missing netns");
    // Unknown IPAM plugin.
    let unknown = w.conf(
        "bad",
        "10.62.0.0/24",
        json!({"ipam": {"type": "no-such-ipam"}}),
    );
    add(unknown.to_string().as_bytes(), &pod.path()).expect_code(7, "unknown IPAM type");
    // Overlapping ranges.
    let overlap = w.conf(
        "bad",
        "10.62.0.0/24",
        json!({"ipam": {"ranges": [[{"subnet": "10.62.0.0/16"}], [{"subnet": "10.62.5.0/24"}]]}}),
    );
    add(overlap.to_string().as_bytes(), &pod.path()).expect_code(7, "overlapping ranges");
    // hairpinMode with promiscMode.
    let both = w.conf(
        "bad",
        "10.62.0.0/24",
        json!({"hairpinMode": true, "promiscMode": true}),
    );
    add(both.to_string().as_bytes(), &pod.path()).expect_code(7, "hairpin+promisc");
    // Nothing was left behind by any of these.
    assert_eq!(
        w.host.links(),
        ["lo"],
        "a failed ADD left links in the host namespace"
    );
    assert_eq!(
        pod.links(),
        ["lo"],
        "a failed ADD left links in the pod namespace"
    );
    assert!(
        w.reserved("bad").is_empty(),
        "a failed ADD left reservations"
    );
}

#[test]
fn exhausted_range_is_an_error_and_leaves_nothing() {
    let w = World::new("exh");
    let (p1, p2) = (Ns::new("exh-p1"), Ns::new("exh-p2"));
    // A /30 has one assignable address once the gateway is taken out.
    let c = w.conf("exh", "10.63.0.0/30", json!({}));
    let r1 = w
        .run("keel-bridge", "ADD", "exh1", &p1.path(), &c)
        .expect_ok("first ADD");
    assert_eq!(r1.ip(0), "10.63.0.2");
    let r2 = w
        .run("keel-bridge", "ADD", "exh2", &p2.path(), &c)
        .expect_code(100, "ADD on a full range");
    assert!(
        r2.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("no IP addresses available"),
        "{}",
        r2.stdout
    );
    assert_eq!(p2.links(), ["lo"]);
    assert_eq!(w.reserved("exh"), ["10.63.0.2"]);
    let host_links = w.host.links();
    assert_eq!(
        host_links.len(),
        3,
        "expected lo, bridge, one veth: {host_links:?}"
    );
    w.run("keel-bridge", "DEL", "exh2", &p2.path(), &c)
        .expect_ok("DEL after failed ADD");
    assert_eq!(
        w.reserved("exh"),
        ["10.63.0.2"],
        "DEL of the failed ADD released someone else's address"
    );
    w.run(
        "keel-bridge",
        "DEL",
        "exh1",
        &p1.path(),
        &World::with_prev(&c, &r1),
    )
    .expect_ok("DEL");
    assert!(w.reserved("exh").is_empty());
}

#[test]
fn status_and_gc_at_1_1_0() {
    let w = World::new("gc");
    let pods: Vec<Ns> = (0..3).map(|i| Ns::new(&format!("gc-p{i}"))).collect();
    let mut c = w.conf("gcnet", "10.64.0.0/24", json!({"ipMasq": true}));
    c["cniVersion"] = json!("1.1.0");
    w.run("keel-bridge", "STATUS", "", "", &c)
        .expect_ok("STATUS");
    w.run("keel-host-local", "STATUS", "", "", &c)
        .expect_ok("host-local STATUS");
    let mut old = c.clone();
    old["cniVersion"] = json!("1.0.0");
    w.run("keel-bridge", "STATUS", "", "", &old)
        .expect_code(1, "STATUS at 1.0.0");
    for (i, p) in pods.iter().enumerate() {
        w.run("keel-bridge", "ADD", &format!("gc{i}"), &p.path(), &c)
            .expect_ok("ADD");
    }
    assert_eq!(w.reserved("gcnet").len(), 3);
    assert_eq!(
        w.host.cni_nat_rules().len(),
        3 * 4,
        "{:?}",
        w.host.cni_nat_rules()
    );
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    w.run("keel-bridge", "GC", "", "", &gc).expect_ok("GC");
    assert_eq!(
        w.reserved("gcnet").len(),
        1,
        "GC kept the wrong reservations"
    );
    let rules = w.host.cni_nat_rules();
    assert_eq!(
        rules.len(),
        4,
        "GC should leave only gc1's chain: {rules:?}"
    );
    assert!(
        rules
            .iter()
            .all(|r| r.contains("gc1") || r.starts_with("-N ")),
        "{rules:?}"
    );
    gc["cni.dev/valid-attachments"] = json!([]);
    w.run("keel-host-local", "GC", "", "", &gc)
        .expect_ok("host-local GC");
    assert!(w.reserved("gcnet").is_empty());
}

#[test]
fn loopback_add_check_del() {
    let w = World::new("lo");
    let pod = Ns::new("lo-p");
    let _ = pod.exec(&["ip", "link", "set", "lo", "down"]);
    let c = json!({"cniVersion": "1.0.0", "name": "lo", "type": "keel-loopback"});
    let r = w
        .run("keel-loopback", "ADD", "lo1", &pod.path(), &c)
        .expect_ok("ADD");
    assert_eq!(r.json["interfaces"][0]["name"], "lo");
    assert!(pod.can_ping("127.0.0.1", std::time::Duration::from_secs(3)));
    w.run(
        "keel-loopback",
        "CHECK",
        "lo1",
        &pod.path(),
        &World::with_prev(&c, &r),
    )
    .expect_ok("CHECK");
    w.run("keel-loopback", "DEL", "lo1", &pod.path(), &c)
        .expect_ok("DEL");
    w.run(
        "keel-loopback",
        "CHECK",
        "lo1",
        &pod.path(),
        &World::with_prev(&c, &r),
    )
    .expect_code(104, "CHECK after DEL");
    w.run("keel-loopback", "DEL", "lo1", "/run/netns/kcni-gone", &c)
        .expect_ok("DEL without netns");
}

#[test]
fn is_default_gateway_and_layer2_only() {
    let w = World::new("dgw");
    let (a, b) = (Ns::new("dgw-a"), Ns::new("dgw-b"));
    let c = w.conf(
        "dgw",
        "10.65.0.0/24",
        json!({"isGateway": false, "isDefaultGateway": true, "ipam": {"routes": []}}),
    );
    let r = w
        .run("keel-bridge", "ADD", "dgw1", &a.path(), &c)
        .expect_ok("ADD");
    assert_eq!(r.json["routes"][0]["dst"], "0.0.0.0/0", "{}", r.stdout);
    assert_eq!(r.json["routes"][0]["gw"], "10.65.0.1");
    assert_eq!(
        a.ip_json(&["route", "show", "default"])[0]["gateway"],
        "10.65.0.1"
    );
    assert!(
        w.host.addrs("kbr0").contains(&"10.65.0.1/24".to_string()),
        "isDefaultGateway implies isGateway"
    );
    // No ipam: an L2-only attachment, interface without addresses.
    let l2 = json!({"cniVersion": "1.0.0", "name": "l2", "type": "keel-bridge", "bridge": "kbr9"});
    let r2 = w
        .run("keel-bridge", "ADD", "l2a", &b.path(), &l2)
        .expect_ok("L2 ADD");
    assert!(r2.json.get("ips").is_none(), "{}", r2.stdout);
    assert!(b.has_link("eth0") && b.addrs("eth0").is_empty());
    w.run("keel-bridge", "DEL", "l2a", &b.path(), &l2)
        .expect_ok("L2 DEL");
    assert!(!b.has_link("eth0"));
}
