//! Interoperability with Debian's reference plugins (containernetworking-plugins 1.1.1):
//! our bridge with their host-local, their bridge with our host-local, both host-locals
//! sharing one state directory, and each bridge's DEL cleaning the other's ADD.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Ns, REFERENCE_DIR, World};
use serde_json::json;

fn reference(bin: &str) -> String {
    format!("{REFERENCE_DIR}/{bin}")
}

#[test]
fn our_bridge_with_reference_host_local() {
    let w = World::new("io1");
    let (a, b) = (Ns::new("io1-a"), Ns::new("io1-b"));
    let c = w.conf(
        "io1",
        "10.90.0.0/24",
        json!({"ipam": {"type": "host-local"}}),
    );
    let ra = w
        .run("keel-bridge", "ADD", "io1a", &a.path(), &c)
        .expect_ok("ADD a");
    let rb = w
        .run("keel-bridge", "ADD", "io1b", &b.path(), &c)
        .expect_ok("ADD b");
    assert_eq!(
        w.reserved("io1").len(),
        2,
        "the reference host-local did not record the reservations"
    );
    let file = std::fs::read_to_string(w.data.path().join("io1").join(ra.ip(0)))
        .expect("reservation file");
    assert_eq!(file, "io1a\r\neth0");
    assert!(a.can_ping(&rb.ip(0), Duration::from_secs(5)));
    w.run(
        "keel-bridge",
        "CHECK",
        "io1a",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("CHECK via reference IPAM");
    w.run(
        "keel-bridge",
        "DEL",
        "io1a",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("DEL a");
    w.run(
        "keel-bridge",
        "DEL",
        "io1b",
        &b.path(),
        &World::with_prev(&c, &rb),
    )
    .expect_ok("DEL b");
    assert!(w.reserved("io1").is_empty());
    // STATUS and GC (1.1) are not forwarded to the reference host-local, which is spec 1.0.
    let mut c11 = c.clone();
    c11["cniVersion"] = json!("1.1.0");
    c11["cni.dev/valid-attachments"] = json!([]);
    w.run("keel-bridge", "STATUS", "", "", &c11)
        .expect_ok("STATUS with a 1.0 IPAM");
    w.run("keel-bridge", "GC", "", "", &c11)
        .expect_ok("GC with a 1.0 IPAM");
}

#[test]
fn reference_bridge_with_our_host_local() {
    let w = World::new("io2");
    let (a, b) = (Ns::new("io2-a"), Ns::new("io2-b"));
    let mut c = w.conf("io2", "10.91.0.0/24", json!({"type": "bridge"}));
    c["cniVersion"] = json!("1.0.0");
    let ra = w
        .run(&reference("bridge"), "ADD", "io2a", &a.path(), &c)
        .expect_ok("reference ADD a");
    let rb = w
        .run(&reference("bridge"), "ADD", "io2b", &b.path(), &c)
        .expect_ok("reference ADD b");
    assert_ne!(ra.ip(0), rb.ip(0));
    assert_eq!(w.reserved("io2").len(), 2);
    assert!(a.can_ping(&rb.ip(0), Duration::from_secs(5)));
    w.run(
        &reference("bridge"),
        "CHECK",
        "io2a",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("reference CHECK");
    w.run(
        &reference("bridge"),
        "DEL",
        "io2a",
        &a.path(),
        &World::with_prev(&c, &ra),
    )
    .expect_ok("reference DEL");
    assert_eq!(w.reserved("io2"), [rb.ip(0)]);
    // Our DEL removes what the reference ADD made (random veth name: found in the pod).
    w.run(
        "keel-bridge",
        "DEL",
        "io2b",
        &b.path(),
        &World::with_prev(&c, &rb),
    )
    .expect_ok("our DEL of a reference ADD");
    assert_eq!(b.links(), ["lo"]);
    assert!(w.reserved("io2").is_empty());
    assert_eq!(w.host.links(), ["lo", "kbr0"]);
}

#[test]
fn reference_del_cleans_our_add() {
    let w = World::new("io3");
    let pod = Ns::new("io3-p");
    let c = w.conf(
        "io3",
        "10.92.0.0/24",
        json!({"ipam": {"type": "host-local"}}),
    );
    let r = w
        .run("keel-bridge", "ADD", "io3a", &pod.path(), &c)
        .expect_ok("our ADD");
    let mut rc = c.clone();
    rc["type"] = json!("bridge");
    w.run(
        &reference("bridge"),
        "DEL",
        "io3a",
        &pod.path(),
        &World::with_prev(&rc, &r),
    )
    .expect_ok("reference DEL");
    assert_eq!(pod.links(), ["lo"]);
    assert_eq!(w.host.links(), ["lo", "kbr0"]);
    assert!(w.reserved("io3").is_empty());
}

#[test]
fn both_host_locals_share_one_directory() {
    let w = World::new("io4");
    let c = w.conf("io4", "10.93.0.0/27", json!({}));
    let mut ipam_conf = c.clone();
    ipam_conf["type"] = json!("host-local");
    let mut seen = HashSet::new();
    for i in 0..20 {
        let bin = if i % 2 == 0 {
            reference("host-local")
        } else {
            "keel-host-local".to_string()
        };
        let r = w
            .run(
                &bin,
                "ADD",
                &format!("io4-{i}"),
                "/run/netns/unused",
                &ipam_conf,
            )
            .expect_ok("ADD");
        assert!(
            seen.insert(r.ip(0)),
            "{} handed out twice (by {bin})",
            r.ip(0)
        );
    }
    // Each releases the other's reservations, and both refuse a duplicate.
    w.run("keel-host-local", "DEL", "io4-0", "", &ipam_conf)
        .expect_ok("our DEL of a reference reservation");
    w.run(&reference("host-local"), "DEL", "io4-1", "", &ipam_conf)
        .expect_ok("reference DEL of ours");
    assert_eq!(w.reserved("io4").len(), 18);
    w.run(
        "keel-host-local",
        "ADD",
        "io4-2",
        "/run/netns/unused",
        &ipam_conf,
    )
    .expect_code(101, "duplicate");
    let dup = w.run(
        &reference("host-local"),
        "ADD",
        "io4-3",
        "/run/netns/unused",
        &ipam_conf,
    );
    assert!(
        !dup.ok,
        "the reference accepted a duplicate of our reservation"
    );
}
