//! Root tests of keel-podnet's CNI side with operator-provided conflists: plugin errors reach
//! the caller with their CNI code and leave nothing behind; the reference `bridge` and
//! `host-local` plugins (Debian's containernetworking-plugins) work through the same code.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Lab, Listener, connect, poll};
use serde_json::json;

fn write_conflist(n: &common::Node, file: &str, v: serde_json::Value) {
    let d = n.dir.join("net.d");
    std::fs::create_dir_all(&d).expect("net.d");
    std::fs::write(d.join(file), v.to_string()).expect("conflist");
}

fn netns_files(n: &common::Node) -> usize {
    std::fs::read_dir(n.netns_dir())
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn plugin_errors_carry_their_code_and_leave_nothing() {
    let lab = Lab::new("err", 1);
    let n = &lab.nodes[0];
    let cfg = n.config.to_string_lossy().into_owned();

    // An IPAM plugin that does not exist: keel-bridge reports code 7.
    write_conflist(
        n,
        "05-bad.conflist",
        json!({"cniVersion": "1.0.0", "name": "bad", "plugins": [
            {"type": "keel-bridge", "bridge": "keel0", "isGateway": true, "ipam": {"type": "no-such-ipam"}}
        ]}),
    );
    let out = n.lab(&["setup", &cfg, "uid-x", "default", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("plugin keel-bridge: ") && err.contains("(CNI code 7 on ADD)"),
        "{err}"
    );
    assert_eq!(netns_files(n), 0, "the namespace of a failed setup must go");
    assert_eq!(n.veths(), 1);
    // Its undo (DEL) failed for the same reason, so the pod stays listed for a later teardown.
    assert_eq!(n.attached(), vec!["uid-x".to_string()]);

    // A plugin type found in no folder.
    write_conflist(
        n,
        "05-bad.conflist",
        json!({"cniVersion": "1.0.0", "name": "bad", "plugins": [{"type": "no-such-plugin"}]}),
    );
    let out = n.lab(&["setup", &cfg, "uid-y", "default", "y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plugin no-such-plugin: not found in"), "{err}");
    assert_eq!(netns_files(n), 0);
    assert_eq!(n.attached(), vec!["uid-x".to_string(), "uid-y".to_string()]);

    // A range with room for one pod: the second fails with the IPAM's code 100, the first
    // keeps working, the failed one leaves no namespace, veth or address.
    write_conflist(
        n,
        "05-bad.conflist",
        json!({"cniVersion": "1.0.0", "name": "tiny", "plugins": [
            {"type": "keel-bridge", "bridge": "tiny0", "isGateway": true, "ipam": {
                "type": "keel-host-local", "dataDir": n.dir.join("tiny-ipam"),
                "ranges": [[{"subnet": "10.250.0.0/24", "rangeStart": "10.250.0.2", "rangeEnd": "10.250.0.2"}]]}}
        ]}),
    );
    let first = n.setup("uid-1", "one");
    assert_eq!(first["ips"][0], "10.250.0.2");
    let out = n.lab(&["setup", &cfg, "uid-2", "default", "two"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("plugin keel-bridge: ") && err.contains("(CNI code 100 on ADD)"),
        "{err}"
    );
    assert_eq!(
        n.attached(),
        ["uid-1", "uid-x", "uid-y"].map(String::from).to_vec()
    );
    assert_eq!(netns_files(n), 1);
    assert_eq!(n.veths(), 2);
    // Teardown uses the cached configuration even after the conflist changed.
    std::fs::remove_file(n.dir.join("net.d/05-bad.conflist")).expect("rm");
    n.teardown("uid-1");
    // With the broken list gone (the default one is written), the failed pods tear down too.
    n.teardown("uid-x");
    n.teardown("uid-y");
    assert!(n.attached().is_empty());
    assert_eq!(netns_files(n), 0);
    poll("the veth to go", Duration::from_secs(5), || {
        (n.veths() == 1).then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(n.dir.join("tiny-ipam/tiny"))
        .expect("ipam dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn reference_plugins_from_an_operator_conflist() {
    let reference = Path::new("/usr/lib/cni");
    assert!(
        reference.join("bridge").exists() && reference.join("host-local").exists(),
        "the reference CNI plugins are missing: apt-get install -y containernetworking-plugins"
    );
    let lab = Lab::new("ref", 1);
    let n = &lab.nodes[0];
    n.write_config(json!({"binDirs": [common::plugin_dir(), reference]}));
    write_conflist(
        n,
        "20-ref.conflist",
        json!({"cniVersion": "1.0.0", "name": "ref", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
             "hairpinMode": true, "ipam": {"type": "host-local", "dataDir": n.dir.join("ref-ipam"),
             "ranges": [[{"subnet": "10.251.0.0/24"}]]}}
        ]}),
    );
    let p1 = n.setup("uid-r1", "r1");
    let p2 = n.setup("uid-r2", "r2");
    let ip = |p: &serde_json::Value| p["ips"][0].as_str().expect("ip").to_string();
    let ns = |p: &serde_json::Value| p["netns"].as_str().expect("netns").to_string();
    assert!(ip(&p1).starts_with("10.251.0."), "{p1}");
    assert_eq!(p1["gateway"], "10.251.0.1");
    assert!(p1["mac"].is_string(), "{p1}");
    let l = Listener::start(&ns(&p1), &format!("{}:8080", ip(&p1)));
    connect(&ns(&p2), &format!("{}:8080", ip(&p1))).expect("r2 -> r1");
    assert_eq!(l.peer(), ip(&p2));
    // The default conflist was not written: the operator's one is used as is.
    assert!(!n.dir.join("net.d/10-keel.conflist").exists());
    n.teardown("uid-r1");
    n.teardown("uid-r2");
    n.teardown("uid-r2");
    assert!(n.attached().is_empty());
    assert_eq!(netns_files(n), 0);
    poll("the veths to go", Duration::from_secs(5), || {
        (n.veths() == 1).then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(n.dir.join("ref-ipam/ref"))
        .expect("ipam dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
