//! Cluster tests for joining nodes (root): a lab of network namespaces on one bridge like a
//! Vagrant private network, `keel-control init`/`serve` in the control-plane namespace and one
//! `keel-agent` per namespace, each with its own root dir, checked with the real kubectl.

use keel_tests::kubectl::assert_table;
use keel_tests::lab::{
    Lab, LabControl, LabProcess, Machine, NsKubectl, agent_command, error_line, fails_within,
    host_os_and_kernel, join_fails,
};
use keel_tests::poll;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Lease renewals come every 10 s; the grace period must exceed that comfortably.
const GRACE_SECONDS: u64 = 20;

fn root_dir(lab: &Lab, node: &str) -> PathBuf {
    lab.path(&format!("{node}-agent"))
}

/// The printed join line run in `m` as node `name`, plus `extra` flags.
fn join(lab: &Lab, cp: &LabControl, m: &Machine, name: &str, extra: &[&str]) -> LabProcess {
    let root = root_dir(lab, name);
    lab.track_node(name, &root);
    let mut args: Vec<&str> = cp.join_command.split_whitespace().skip(1).collect();
    let root_s = root.to_string_lossy().to_string();
    args.extend(["--node-name", name, "--root-dir", &root_s]);
    args.extend(extra);
    LabProcess::spawn(
        agent_command(m, &args),
        lab.path(&format!("{name}-agent.log")),
    )
}

fn ready_status(k: &NsKubectl, node: &str) -> Option<String> {
    let out = k.run(&["get", "node", node, "-o", "json"]);
    if !out.ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

fn wait_ready(k: &NsKubectl, node: &str, want: &str, agent: &mut LabProcess, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if want == "True" && !agent.is_running() {
            panic!("the agent of {node} exited:\n{}", agent.log_text());
        }
        let got = ready_status(k, node);
        if got.as_deref() == Some(want) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let log = agent.log_text();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "timed out after {secs}s waiting for node {node} Ready={want} (now {got:?}); agent log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn taint_keys(k: &NsKubectl, node: &str) -> String {
    k.ok(&["get", "node", node, "-o", "jsonpath={.spec.taints[*].key}"])
}

#[test]
fn workers_join_show_ready_and_recover_after_an_outage() {
    let mut lab = Lab::new("ready");
    lab.add_machine("master", 10);
    lab.add_machine("node01", 11);
    lab.add_machine("node02", 12);
    // Both workers also have the NAT address every Vagrant VM shares, with the default route.
    lab.add_nat("node01");
    lab.add_nat("node02");
    let cp = LabControl::start(&lab, "master", |cfg| {
        cfg["nodeMonitorGracePeriodSeconds"] = GRACE_SECONDS.into();
    });
    let admin = cp.kubectl();
    let mut master = join(
        &lab,
        &cp,
        lab.machine("master"),
        "master",
        &["--control-plane"],
    );
    // node01 renews its client certificate 5 s after start, as itself.
    let mut w1 = join(
        &lab,
        &cp,
        lab.machine("node01"),
        "node01",
        &["--renew-certificate-after", "5"],
    );
    let mut w2 = join(
        &lab,
        &cp,
        lab.machine("node02"),
        "node02",
        &["--labels", "lab=yes"],
    );
    for (name, agent) in [
        ("master", &mut master),
        ("node01", &mut w1),
        ("node02", &mut w2),
    ] {
        wait_ready(&admin, name, "True", agent, 90);
    }

    // The walkthrough's columns, whole lines.
    let version: Value = serde_json::from_str(&admin.ok(&["version", "-o", "json"])).expect("json");
    let v = version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("gitVersion")
        .to_string();
    assert_table(
        &admin.ok(&["get", "nodes"]),
        &[
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &["master", "Ready", "control-plane", "*", &v],
            &["node01", "Ready", "<none>", "*", &v],
            &["node02", "Ready", "<none>", "*", &v],
        ],
    );
    let (os, kernel) = host_os_and_kernel();
    let runtime = format!("keel://{}", env!("CARGO_PKG_VERSION"));
    let row = |name: &'static str, role: &'static str, ip: &'static str| -> Vec<String> {
        [
            name, "Ready", role, "*", &v, ip, "<none>", &os, &kernel, &runtime,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let rows = [
        row("master", "control-plane", "192.168.56.10"),
        row("node01", "<none>", "192.168.56.11"),
        row("node02", "<none>", "192.168.56.12"),
    ];
    let header = [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ];
    let refs: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let mut expected: Vec<&[&str]> = vec![&header];
    expected.extend(refs.iter().map(Vec::as_slice));
    let wide = admin.ok(&["get", "nodes", "-o", "wide"]);
    eprintln!("kubectl get nodes -o wide:\n{wide}");
    assert_table(&wide, &expected);

    // The InternalIP is the address that routes to the control plane, and the choice is
    // logged with a warning naming the other address.
    let log = w1.log_text();
    assert!(
        log.contains("10.0.2.15") && log.contains("--node-ip"),
        "{log}"
    );

    // Role taint, labels, lease, node IPAM.
    assert!(taint_keys(&admin, "master").contains("node-role.kubernetes.io/control-plane"));
    assert_eq!(
        admin.ok(&[
            "get",
            "node",
            "node02",
            "-o",
            "jsonpath={.metadata.labels.lab}"
        ]),
        "yes"
    );
    admin.ok(&["get", "lease", "-n", "kube-node-lease", "node01"]);
    poll(
        "node IPAM to give node01 a podCIDR",
        Duration::from_secs(30),
        || {
            let cidr = admin.ok(&["get", "node", "node01", "-o", "jsonpath={.spec.podCIDR}"]);
            (!cidr.is_empty()).then_some(())
        },
    );
    // Each node's state lives under its own root dir.
    for n in ["master", "node01", "node02"] {
        let pki = root_dir(&lab, n).join("pki");
        for f in ["ca.crt", "node.crt", "node.key", "kubeconfig"] {
            assert!(pki.join(f).exists(), "{} missing", pki.join(f).display());
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(pki.join("node.key"))
                .expect("key")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "node.key of {n}");
    }

    // Certificate rotation: a CSR from system:node:node01 itself is approved and signed, and
    // the agent saved that certificate.
    let crt_path = root_dir(&lab, "node01").join("pki/node.crt");
    poll(
        "node01 to rotate its certificate",
        Duration::from_secs(60),
        || {
            let csrs: Value =
                serde_json::from_str(&admin.ok(&["get", "csr", "-o", "json"])).ok()?;
            let saved = std::fs::read(&crt_path).ok()?;
            csrs["items"].as_array()?.iter().find_map(|c| {
                let by_node = c["spec"]["username"] == "system:node:node01";
                let cert = c["status"]["certificate"].as_str()?;
                let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, cert)
                    .ok()?;
                (by_node && pem == saved).then_some(())
            })
        },
    );
    wait_ready(&admin, "node01", "True", &mut w1, 30);

    // A node's certificate may not touch another node or read a pod bound elsewhere.
    let as_w1 = NsKubectl::in_netns(
        "",
        &root_dir(&lab, "node01").join("pki/kubeconfig"),
        &lab.machine("node01").ns.name,
    );
    let err = as_w1.fails(&[
        "patch",
        "node",
        "node02",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"stolen":"yes"}}}"#,
    ]);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    as_w1.ok(&["label", "node", "node01", "checked=yes"]);
    let pod = lab.path("elsewhere.json");
    std::fs::write(
        &pod,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"elsewhere","namespace":"default"},
            "spec":{"nodeName":"node02","containers":[{"name":"c","image":"registry.k8s.io/pause:3.9"}]}}"#,
    )
    .expect("pod file");
    admin.ok(&["create", "-f", &pod.to_string_lossy()]);
    let err = as_w1.fails(&["get", "pod", "elsewhere", "-n", "default"]);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let as_w2 = NsKubectl::in_netns(
        "",
        &root_dir(&lab, "node02").join("pki/kubeconfig"),
        &lab.machine("node02").ns.name,
    );
    let mine = as_w2.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=node02",
        "-o",
        "name",
    ]);
    assert_eq!(mine.trim(), "pod/elsewhere");

    // Outage: node02's agent stops; after the grace period it is Unknown and tainted.
    w2.stop();
    wait_ready(&admin, "node02", "Unknown", &mut w1, GRACE_SECONDS + 40);
    assert!(taint_keys(&admin, "node02").contains("node.kubernetes.io/unreachable"));
    // kubectl prints "Not<Type>" for a condition that is not True (pkg/printers printNode), so
    // Ready=Unknown shows as NotReady; checked at the end so the recovery runs either way.
    let outage_table = admin.ok(&["get", "nodes", "node02"]);
    assert_eq!(
        ready_status(&admin, "node01").as_deref(),
        Some("True"),
        "node01 stays Ready"
    );
    // Restarted from its saved state, it is Ready again and the taint goes.
    let root = root_dir(&lab, "node02").to_string_lossy().to_string();
    let mut again = LabProcess::spawn(
        agent_command(lab.machine("node02"), &["run", "--root-dir", &root]),
        lab.path("node02-agent-run.log"),
    );
    wait_ready(&admin, "node02", "True", &mut again, 60);
    poll(
        "the unreachable taint to go",
        Duration::from_secs(30),
        || (!taint_keys(&admin, "node02").contains("node.kubernetes.io/unreachable")).then_some(()),
    );
    assert_table(
        &outage_table,
        &[
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &["node02", "NotReady", "<none>", "*", &v],
        ],
    );
}

#[test]
fn join_failures_say_why() {
    let mut lab = Lab::new("fail");
    lab.add_machine("master", 10);
    lab.add_machine("node01", 11);
    lab.add_machine("node02", 12);
    let cp = LabControl::start(&lab, "master", |_| {});
    let admin = cp.kubectl();
    let (token, hash) = cp.token_and_hash();
    let w2 = lab.machine("node02");
    let t = Duration::from_secs(60);
    let root = root_dir(&lab, "failed").to_string_lossy().to_string();
    let base = |server: &str, token: &str, hash: &str| -> Vec<String> {
        [
            "join",
            server,
            "--token",
            token,
            "--discovery-token-ca-cert-hash",
            hash,
            "--node-name",
            "failed",
            "--root-dir",
            &root,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = error_line(&join_fails(w2, &refs, t));
        eprintln!("{e}");
        e
    };

    // Wrong CA hash: both hashes shown.
    let last = hash.chars().last().expect("hash");
    let wrong = format!(
        "{}{}",
        &hash[..hash.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let e = run(base(&cp.server, &token, &wrong));
    assert!(
        e.contains("CA hash mismatch") && e.contains(&hash) && e.contains(&wrong),
        "{e}"
    );

    // Unknown token.
    let e = run(base(&cp.server, "zzzzzz.0123456789abcdef", &hash));
    assert!(
        e.contains("bootstrap token zzzzzz is unknown or expired"),
        "{e}"
    );
    assert!(
        e.contains("keel-control token create --print-join-command"),
        "{e}"
    );

    // Expired token (a kubeadm-format Secret whose expiration has passed).
    let secret = lab.path("expired.json");
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    std::fs::write(
        &secret,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-exp1re", "namespace": "kube-system"},
            "data": {"token-id": b64("exp1re"), "token-secret": b64("0123456789abcdef"),
                     "expiration": b64("2020-01-01T00:00:00Z"),
                     "usage-bootstrap-authentication": b64("true"), "usage-bootstrap-signing": b64("true"),
                     "auth-extra-groups": b64("system:bootstrappers:keel:default-node-token")}
        })
        .to_string(),
    )
    .expect("secret file");
    admin.ok(&["create", "-f", &secret.to_string_lossy()]);
    let e = run(base(&cp.server, "exp1re.0123456789abcdef", &hash));
    assert!(
        e.contains("bootstrap token exp1re is unknown or expired"),
        "{e}"
    );
    assert!(
        e.contains("keel-control token create --print-join-command"),
        "{e}"
    );

    // Unreachable server (nothing listens on that port).
    let e = run(base("192.168.56.10:6444", &token, &hash));
    assert!(
        e.contains("cannot reach the API server at https://192.168.56.10:6444"),
        "{e}"
    );

    // No machine at that address: the connection times out.
    let e = run(base("192.168.56.99:6443", &token, &hash));
    assert!(
        e.contains("cannot reach the API server at https://192.168.56.99:6443"),
        "{e}"
    );

    // A clock years behind: the cluster CA is not valid yet (libfaketime shifts the wall clock).
    assert!(
        std::path::Path::new("/usr/bin/faketime").exists(),
        "faketime is missing: apt-get install -y faketime"
    );
    let mut cmd = w2.ns.command("faketime");
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .arg("2020-01-01 00:00:00")
        .arg(keel_tests::workspace_bin("keel-agent"))
        .args(base(&cp.server, &token, &hash));
    let e = error_line(&fails_within(cmd, t));
    assert!(e.contains("clock skew") && e.contains("2020-01-01"), "{e}");

    // A failed join leaves nothing behind.
    assert!(
        !PathBuf::from(&root).exists(),
        "{root} was created by a failed join"
    );

    // A node name held by a live machine.
    let mut first = join(&lab, &cp, lab.machine("node01"), "shared", &[]);
    wait_ready(&admin, "shared", "True", &mut first, 90);
    // Joining again into a root dir that holds a joined node is refused with the run command.
    let first_root = root_dir(&lab, "shared").to_string_lossy().to_string();
    let mut again: Vec<String> = cp
        .join_command
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    again.extend(["--node-name", "shared", "--root-dir", &first_root].map(str::to_string));
    let e = run(again);
    assert!(
        e.contains("already holds a joined node") && e.contains("keel-agent run --root-dir"),
        "{e}"
    );
    let shared_root = root_dir(&lab, "shared-again").to_string_lossy().to_string();
    let mut args: Vec<String> = cp
        .join_command
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    args.extend(["--node-name", "shared", "--root-dir", &shared_root].map(str::to_string));
    let e = run(args);
    assert!(
        e.contains("denied the certificate for node shared")
            && e.contains("already registered by another live machine")
            && e.contains("--node-name"),
        "{e}"
    );
    assert_eq!(ready_status(&admin, "shared").as_deref(), Some("True"));
}

#[test]
fn join_to_something_that_is_not_an_api_server() {
    // A plain-HTTP listener on loopback (no lab needed): the TLS handshake cannot succeed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        }
    });
    let root = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(keel_tests::workspace_bin("keel-agent"));
    cmd.args([
        "join",
        &format!("127.0.0.1:{port}"),
        "--token",
        "abcdef.0123456789abcdef",
        "--discovery-token-ca-cert-hash",
        &format!("sha256:{}", "0".repeat(64)),
        "--node-name",
        "nothing",
        "--root-dir",
    ])
    .arg(root.path().join("agent"));
    let e = error_line(&fails_within(cmd, Duration::from_secs(60)));
    assert!(
        e.contains(&format!(
            "127.0.0.1:{port} answered but is not a Kubernetes API server"
        )),
        "{e}"
    );
    assert!(!root.path().join("agent").exists());
}
