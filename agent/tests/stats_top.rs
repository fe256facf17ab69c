//! `kubectl top` (the real kubectl 1.27 and 1.33) against a real `keel-control` whose
//! `metrics.k8s.io` reads a node's `/stats/summary` over HTTPS with its kubelet-client
//! certificate. The summary comes from this crate's collector over real cgroups (a CPU-burning
//! busybox pod and an idle one in another namespace), rendered by `stats::http::handle` and
//! served by `openssl s_server -WWW` with a serving certificate from the cluster CA that
//! `keel-control init` made, requiring the caller's client certificate. (The agent's own
//! HTTPS server lives in `server/` and calls the same `handle`.)

mod stats_lab;

use keel_agent::stats::collect::Sources;
use keel_agent::stats::{Stats, StatsConfig, http};
use stats_lab::{Lab, record};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SDK_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

fn kubectl_bin(version: &str) -> PathBuf {
    let dir = std::env::var("KEEL_KUBECTL_DIR").unwrap_or_else(|_| SDK_BIN.to_string());
    let p = Path::new(&dir).join(format!("kubectl.{version}"));
    assert!(
        p.exists(),
        "{} is missing: install the google-cloud-sdk `kubectl` package or set KEEL_KUBECTL_DIR",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Kills and reaps a child process on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let (Some(text), Some(mut i)) = (stdin, child.stdin.take()) {
            i.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Millicores of a `kubectl top` CPU cell (`512m` or `1`).
fn millis(cell: &str) -> u64 {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => cell.parse::<u64>().unwrap_or(0) * 1000,
    }
}

fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_top_reads_agent_stats() {
    // The workload: two pods with real cgroups and processes.
    let mut lab = Lab::new();
    let burner_uid = "5a7c0e1e-0000-4000-8000-0000000000b1";
    let idle_uid = "5a7c0e1e-0000-4000-8000-0000000000b2";
    let burner_cg = format!("{}/pod{burner_uid}", lab.top);
    let idle_cg = format!("{}/pod{idle_uid}", lab.top);
    let (burn, sleep) = (format!("{burner_cg}/burn"), format!("{idle_cg}/sleep"));
    for cg in [&burner_cg, &burn, &idle_cg, &sleep] {
        lab.mkcg(cg);
    }
    lab.spawn(
        &burn,
        None,
        "exec busybox dd if=/dev/zero of=/dev/null bs=32M",
    );
    lab.spawn(&sleep, None, "exec busybox sleep 600");
    let root = tempfile::tempdir().expect("tempdir");
    record(
        root.path(),
        "default",
        "burner",
        burner_uid,
        &burner_cg,
        &[("burn", &burn)],
    );
    record(
        root.path(),
        "other",
        "idle",
        idle_uid,
        &idle_cg,
        &[("sleep", &sleep)],
    );
    let mut sources = Sources::for_root(root.path());
    sources.cgroup_root = PathBuf::from("/sys/fs/cgroup");
    let stats = Stats::new(StatsConfig {
        node_name: "n1".into(),
        sources,
        housekeeping: Duration::from_secs(1),
        fs_interval: Duration::from_secs(60),
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats.housekeep();
        let rate = s
            .pods
            .iter()
            .find(|p| p.name == "burner")
            .and_then(|p| p.stats.cpu.as_ref()?.usage_nano_cores)
            .unwrap_or(0);
        if rate >= 500_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "burner never reached 500m: {rate}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let summary = http::handle(&stats, "/stats/summary", "only_cpu_and_memory=true")
        .await
        .expect("summary");

    // The control plane.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("control");
    let port = free_port();
    let out = Command::new(workspace_bin("keel-control"))
        .args(["init", "--data-dir"])
        .arg(&data)
        .args([
            "--advertise-address",
            "127.0.0.1",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("keel-control init");
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(dir.path().join("control.log")).expect("log");
    let _control = Reaped(
        Command::new(workspace_bin("keel-control"))
            .args(["serve", "--no-controllers", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel-control serve"),
    );

    // The node's stats endpoint: the summary file at the path the API server asks for.
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("stats")).expect("mkdir");
    std::fs::write(
        www.join("stats/summary?only_cpu_and_memory=true"),
        summary.body(),
    )
    .expect("write summary");
    std::fs::write(dir.path().join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    let ca = data.join("ca.crt");
    let ca_key = data.join("ca.key");
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
            "-subj",
            "/CN=system:node:n1",
        ],
        dir.path(),
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            ca.to_str().unwrap_or_default(),
            "-CAkey",
            ca_key.to_str().unwrap_or_default(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "node.crt",
        ],
        dir.path(),
    );
    let agent_port = free_port();
    let _agent = Reaped(
        Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-WWW",
                "-accept",
                &format!("127.0.0.1:{agent_port}"),
                "-Verify",
                "1",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&ca)
            .arg("-cert")
            .arg(dir.path().join("node.crt"))
            .arg("-key")
            .arg(dir.path().join("node.key"))
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );

    let k33 = Kubectl {
        bin: kubectl_bin("1.33"),
        kubeconfig: data.join("admin.kubeconfig"),
        cache: tempfile::tempdir().expect("cache"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k33.run(&["get", "--raw", "/readyz"], None).status.success() {
        assert!(Instant::now() < deadline, "keel-control never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    while std::net::TcpStream::connect(("127.0.0.1", agent_port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The Node (Ready, with its stats endpoint) and the Pods, as the agents would report them.
    k33.ok(
        &["create", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"zone":"a"}}}"#),
    );
    let status = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "2026-11-27T08:00:00Z", "lastTransitionTime": "2026-11-27T08:00:00Z"}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": agent_port}},
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}});
    k33.ok(
        &[
            "patch",
            "node",
            "n1",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    );
    k33.ok(&["create", "namespace", "other"], None);
    for (ns, name, app, c) in [
        ("default", "burner", "burn", "burn"),
        ("other", "idle", "idle", "sleep"),
    ] {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"containers": [{"name": c, "image": "busybox"}]}});
        k33.ok(&["create", "-f", "-"], Some(&pod.to_string()));
    }
    // The API server matches summaries to pods by uid: give the summary the uids it assigned.
    let mut body = summary.body().clone();
    for (ns, name, uid) in [
        ("default", "burner", burner_uid),
        ("other", "idle", idle_uid),
    ] {
        let real = k33.ok(
            &[
                "get",
                "pod",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        );
        body = body.replace(uid, real.trim());
    }
    std::fs::write(www.join("stats/summary?only_cpu_and_memory=true"), body)
        .expect("write summary");

    for version in ["1.27", "1.33"] {
        let k = Kubectl {
            bin: kubectl_bin(version),
            kubeconfig: data.join("admin.kubeconfig"),
            cache: tempfile::tempdir().expect("cache"),
        };
        let nodes = k.ok(&["top", "nodes"], None);
        let r = rows(&nodes);
        assert_eq!(r.len(), 1, "{version}: {nodes}");
        assert_eq!(r[0][0], "n1", "{version}: {nodes}");
        assert!(
            r[0][2].ends_with('%') && r[0][4].ends_with('%'),
            "{version}: {nodes}"
        );
        // No match: kubectl says so, as with metrics-server.
        let none = k.run(&["top", "nodes", "-l", "zone=b"], None);
        assert!(
            !none.status.success()
                && String::from_utf8_lossy(&none.stderr).contains("metrics not available yet"),
            "{version}: top nodes -l zone=b"
        );
        assert_eq!(
            rows(&k.ok(&["top", "nodes", "-l", "zone=a"], None)).len(),
            1
        );

        let pods = k.ok(&["top", "pods"], None);
        let r = rows(&pods);
        assert_eq!(r.len(), 1, "{version}: {pods}");
        assert_eq!(r[0][0], "burner");
        assert!(
            millis(&r[0][1]) >= 500,
            "{version}: burner under 500m: {pods}"
        );
        assert!(r[0][2].ends_with("Mi"), "{version}: {pods}");

        let all = k.ok(&["top", "pods", "-A"], None);
        let names: Vec<String> = rows(&all).into_iter().map(|r| r[1].clone()).collect();
        assert_eq!(names, ["burner", "idle"], "{version}: {all}");

        let sel = k.ok(&["top", "pods", "-A", "-l", "app=idle"], None);
        let r = rows(&sel);
        assert_eq!(
            (r.len(), r[0][0].as_str(), r[0][1].as_str()),
            (1, "other", "idle"),
            "{version}: {sel}"
        );
        assert!(millis(&r[0][2]) < 100, "{version}: idle pod busy: {sel}");

        let containers = k.ok(&["top", "pods", "--containers"], None);
        let r = rows(&containers);
        assert_eq!(
            (r[0][0].as_str(), r[0][1].as_str()),
            ("burner", "burn"),
            "{version}: {containers}"
        );

        let one = k.ok(&["top", "pod", "burner"], None);
        assert_eq!(rows(&one).len(), 1, "{version}: {one}");
    }

    // The tables and the control plane's own /metrics.
    let table = k33.ok(&["get", "nodes.metrics.k8s.io"], None);
    assert!(
        table.starts_with("NAME") && table.contains("WINDOW") && table.contains("n1"),
        "{table}"
    );
    let metrics = k33.ok(&["get", "--raw", "/metrics"], None);
    assert!(
        metrics.contains("apiserver_request_total{code=\"200\",group=\"metrics.k8s.io\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("apiserver_storage_objects{resource=\"pods\"} 2"),
        "{metrics}"
    );
    drop(lab);
}
