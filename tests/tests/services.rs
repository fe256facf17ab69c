//! Services end to end in network namespaces (never the host's). The first test needs no pod
//! executor: the real `keel-control` (with its endpoints controller) and the node's services loop
//! (`keel_agent::services::run`, through the `node_services` example) run inside a "node"
//! namespace; "pods" are namespaces on the node's bridge running busybox httpd, whose Pod
//! objects the test marks Running/Ready through `pods/status` (as an agent would). kubectl,
//! curl and dig check ClusterIP and NodePort routing, REJECT without endpoints, readiness,
//! DNS answers from inside a pod namespace, and that rules go with the Service.
//!
//! Everything is named `ksvc-<pid>-*` and removed by Drop guards, also on failure.
//! The others use the cluster fixture with real pods, one cluster at a time: one node (expose,
//! names from a pod, readiness), three nodes (NodePort on every node, node-local DNS surviving
//! a dead agent), one node for ClientIP affinity and hairpin, and one node for forwarding of
//! an outside name to the node's upstream and a UDP Service (dnsmasq from dnsmasq-base).
//! Build first: `cargo build --workspace --bins && cargo build -p keel-agent --example node_services`.

use keel_tests::kubectl::Kubectl;
use keel_tests::poll;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const NODE_IP: &str = "192.168.77.1";
const EXT_IP: &str = "192.168.77.2";

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install iproute2, nftables, busybox-static, curl, bind9-dnsutils, util-linux)"))
}

fn sh(args: &[&str]) {
    let out = run(Command::new(args[0]).args(&args[1..]));
    assert!(
        out.status.success(),
        "{args:?} failed: {} (the lab needs root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nsenter --net=/run/netns/<ns> -- <program>`.
fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

fn built(rel: &str, how: &str) -> PathBuf {
    let p = target_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: build it with `{how}`",
        p.display()
    );
    p
}

/// The namespaces and processes of one test run.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn add_ns(&mut self, short: &str) -> String {
        let ns = self.ns(short);
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) -> usize {
        let f = std::fs::File::create(self.dir.path().join(log)).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// node (bridge cbr0 10.244.0.1/24, uplink 192.168.77.1 to "ext"), pods pa/pb (httpd on
    /// 8080 answering their name) and pc (a client), all on cbr0.
    fn new() -> Lab {
        for tool in ["ip", "nft", "busybox", "curl", "dig", "nsenter"] {
            let ok = Command::new("which")
                .arg(tool)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "{tool} is missing: apt-get install -y iproute2 nftables busybox-static curl bind9-dnsutils util-linux"
            );
        }
        let mut lab = Lab {
            prefix: format!("ksvc-{}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let node = lab.add_ns("node");
        let ext = lab.add_ns("ext");
        sh(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // Without br_netfilter's iptables hook on the bridge (CI machines may not load the
        // module; where it is loaded, switch it off in this namespace): replies between pods
        // on one bridge then bypass the node's conntrack, as on a plain Linux bridge.
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            sh(&[
                "ip",
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.bridge.bridge-nf-call-iptables=0",
            ]);
        }
        sh(&["ip", "-n", &node, "link", "add", "cbr0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            "10.244.0.1/24",
            "dev",
            "cbr0",
        ]);
        sh(&["ip", "-n", &node, "link", "set", "cbr0", "up"]);
        sh(&[
            "ip", "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
            "netns", &ext,
        ]);
        sh(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "up0",
        ]);
        sh(&["ip", "-n", &node, "link", "set", "up0", "up"]);
        // A default route, so that the node's own traffic to service IPs is routable.
        sh(&["ip", "-n", &node, "route", "add", "default", "via", EXT_IP]);
        sh(&[
            "ip",
            "-n",
            &ext,
            "addr",
            "add",
            &format!("{EXT_IP}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ext, "link", "set", "eth0", "up"]);
        for (i, p) in ["pa", "pb", "pc"].iter().enumerate() {
            let pod = lab.add_ns(p);
            let port = format!("v{p}");
            sh(&[
                "ip", "-n", &node, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &pod,
            ]);
            sh(&[
                "ip", "-n", &node, "link", "set", &port, "master", "cbr0", "up",
            ]);
            let ip = format!("10.244.0.{}/24", i + 2);
            sh(&["ip", "-n", &pod, "addr", "add", &ip, "dev", "eth0"]);
            sh(&["ip", "-n", &pod, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                "10.244.0.1",
            ]);
            if *p == "pc" {
                continue;
            }
            let www = lab.dir.path().join(p);
            std::fs::create_dir_all(&www).expect("www dir");
            std::fs::write(www.join("index.html"), p).expect("index.html");
            let mut cmd = in_ns(&pod, "busybox");
            cmd.args(["httpd", "-f", "-p", "8080", "-h"]).arg(&www);
            lab.spawn(cmd, &format!("httpd-{p}.log"));
        }
        lab
    }
}

/// One HTTP GET with curl inside `ns`: the body, or the error (with curl's exit status).
fn get(ns: &str, url: &str) -> Result<String, String> {
    let out = run(in_ns(ns, "curl").args(["-sS", "-m", "2", url]));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Bodies seen in `n` GETs (errors included as text).
fn spread(ns: &str, url: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|_| get(ns, url).unwrap_or_else(|e| e)).collect()
}

fn dig(ns: &str, name: &str, qtype: &str) -> (String, Vec<String>) {
    let out = run(in_ns(ns, "dig").args(["@10.96.0.10", "+time=2", "+tries=1", name, qtype]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let short =
        run(in_ns(ns, "dig").args(["@10.96.0.10", "+time=2", "+tries=1", "+short", name, qtype]));
    let mut answers: Vec<String> = String::from_utf8_lossy(&short.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    answers.sort();
    (status, answers)
}

fn nft_table(ns: &str) -> String {
    let out = run(in_ns(ns, "nft").args(["list", "table", "ip", "keel"]));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn lo_addrs(ns: &str) -> String {
    let out = run(Command::new("ip").args(["-n", ns, "-4", "addr", "show", "dev", "lo"]));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn pod_json(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "httpd", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

fn status_patch(ip: &str, ready: bool) -> String {
    let st = if ready { "True" } else { "False" };
    json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": NODE_IP,
        "conditions": [{"type": "Ready", "status": st}, {"type": "ContainersReady", "status": st},
                       {"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}})
    .to_string()
}

/// The cluster tests below run one at a time (cargo runs tests on parallel threads): each
/// starts a registry, a control plane and agents, and they share node names (`master`), which
/// the fixture's teardown used to key node state by; on two shared cores, two clusters at once
/// also push pod starts towards the timeouts.
static CLUSTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding it has torn its cluster down already.
    CLUSTERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn services_route_and_resolve_in_a_namespace_lab() {
    let control = built("keel-control", "cargo build -p keel-control");
    let services = built(
        "examples/node_services",
        "cargo build -p keel-agent --example node_services",
    );
    let mut lab = Lab::new();
    let node = lab.ns("node");
    let (ext, pc) = (lab.ns("ext"), lab.ns("pc"));

    // The control plane inside the node namespace.
    let data = lab.dir.path().join("control");
    let out = run(in_ns(&node, &control)
        .args(["init", "--data-dir"])
        .arg(&data)
        .args([
            "--advertise-address",
            NODE_IP,
            "--listen",
            &format!("{NODE_IP}:6443"),
        ]));
    assert!(
        out.status.success(),
        "keel-control init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut serve = in_ns(&node, &control);
    serve.args(["serve", "--data-dir"]).arg(&data);
    lab.spawn(serve, "control.log");
    let kubeconfig = data.join("admin.kubeconfig");
    let k = Kubectl::in_netns("1.33", &kubeconfig, &node);
    poll("the API server in the node namespace", WAIT, || {
        k.run(&["get", "--raw", "/readyz"]).ok.then_some(())
    });

    // The node's services loop.
    let resolv = lab.dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {EXT_IP}\n")).expect("resolv.conf");
    let mut svc_cmd = in_ns(&node, &services);
    svc_cmd
        .args(["--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--node-name",
            "node-a",
            "--node-ip",
            NODE_IP,
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .arg("--resolv-conf")
        .arg(&resolv)
        .env("RUST_LOG", "info,keel_agent=debug");
    let loop_idx = lab.spawn(svc_cmd, "services.log");

    // Two web pods (pa, pb) behind a NodePort service with a named targetPort, marked
    // Running/Ready by "the agent"; the endpoints controller builds the slice.
    let apply = |name: &str, obj: serde_json::Value| {
        let f = lab.dir.path().join(format!("{name}.json"));
        std::fs::write(&f, obj.to_string()).expect("manifest");
        k.ok(&["apply", "-f", &f.display().to_string()]);
    };
    apply(
        "svc-web",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}}),
    );
    apply(
        "svc-empty",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
        "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]}}),
    );
    for (name, ip) in [("web-a", "10.244.0.2"), ("web-b", "10.244.0.3")] {
        apply(name, pod_json(name));
        k.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status_patch(ip, true),
        ]);
    }
    let web_ip = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    let empty_ip = k
        .ok(&["get", "svc", "empty", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    let web_url = format!("http://{web_ip}/");
    let both = BTreeSet::from(["pa".to_string(), "pb".to_string()]);

    // ClusterIP from the node reaches both pods.
    let started = Instant::now();
    poll(
        "web's ClusterIP from the node to reach both pods",
        WAIT,
        || (spread(&node, &web_url, 20) == both).then_some(()),
    );
    let first_route = started.elapsed();
    // ... and from a pod on the same bridge.
    let from_pod = spread(&pc, &web_url, 20);
    assert_eq!(
        from_pod,
        both,
        "ClusterIP from pod pc:\n{}",
        lab.log("services.log")
    );
    // NodePort from another host, on the node's address.
    let np = spread(&ext, &format!("http://{NODE_IP}:30080/"), 20);
    assert_eq!(np, both, "NodePort from ext");
    // No endpoints: refused at once (REJECT), not a timeout.
    let t = Instant::now();
    let err = get(&pc, &format!("http://{empty_ip}/")).expect_err("no endpoints must fail");
    assert!(
        err.contains("exit status: 7"),
        "expected connection refused, got {err}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "REJECT, not DROP: refused after {:?}",
        t.elapsed()
    );

    // A readiness flip takes pb out of the rotation.
    k.ok(&[
        "patch",
        "pod",
        "web-b",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status_patch("10.244.0.3", false),
    ]);
    poll("only pa behind web", WAIT, || {
        (spread(&pc, &web_url, 10) == BTreeSet::from(["pa".to_string()])).then_some(())
    });
    let eps = k.ok(&["get", "endpoints", "web", "--no-headers"]);
    assert!(
        eps.contains("10.244.0.2:8080") && !eps.contains("10.244.0.3"),
        "{eps}"
    );

    // DNS from inside a pod namespace, on the node-local cluster DNS address.
    let (status, a) = dig(&pc, "web.default.svc.cluster.local", "A");
    assert_eq!((status.as_str(), a), ("NOERROR", vec![web_ip.clone()]));
    let (_, k8s) = dig(&pc, "kubernetes.default.svc.cluster.local", "A");
    assert_eq!(k8s, vec!["10.96.0.1".to_string()]);
    let (_, dns) = dig(&pc, "kube-dns.kube-system.svc.cluster.local", "A");
    assert_eq!(dns, vec!["10.96.0.10".to_string()]);
    let (status, _) = dig(&pc, "nothing.default.svc.cluster.local", "A");
    assert_eq!(status, "NXDOMAIN");
    let (_, srv) = dig(&pc, "_http._tcp.web.default.svc.cluster.local", "SRV");
    assert_eq!(
        srv,
        vec!["0 100 80 web.default.svc.cluster.local.".to_string()]
    );
    // The kubernetes Service from a pod reaches the API server (any HTTP status will do).
    let code = run(in_ns(&pc, "curl").args([
        "-sk",
        "-m",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://10.96.0.1/readyz",
    ]));
    let code = String::from_utf8_lossy(&code.stdout).to_string();
    assert!(
        code.starts_with('2') || code.starts_with('4'),
        "API via 10.96.0.1 from a pod: {code:?}"
    );

    // The service goes: its rules and its name go.
    k.ok(&["delete", "service", "web"]);
    poll("web's rules removed", WAIT, || {
        let t = nft_table(&node);
        (!t.contains(&web_ip) && !t.contains("30080")).then_some(())
    });
    assert!(get(&pc, &web_url).is_err());
    poll("web gone from DNS", WAIT, || {
        (dig(&pc, "web.default.svc.cluster.local", "A").0 == "NXDOMAIN").then_some(())
    });
    assert!(lo_addrs(&node).contains("10.96.0.10/32"));

    // Stop the loop; cleanup removes the table and the DNS address.
    let child = &mut lab.children[loop_idx];
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "services loop did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run(in_ns(&node, &services).arg("--cleanup"));
    assert!(
        out.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!nft_table(&node).contains("table ip keel"));
    assert!(!lo_addrs(&node).contains("10.96.0.10"));
    eprintln!("first route after {first_route:?}");
}

/// The same with real pods (the one-node cluster fixture: control plane and agent in one lab
/// namespace, images from the lab registry): `kubectl create deploy` + `kubectl expose`,
/// both replicas in the Endpoints, the ClusterIP answering from the node, a pod reaching the
/// service by `web`, `web.default` and the full name through the node-local DNS, a pod whose
/// readiness probe fails listed as not ready and left out of the rules, and the rules leaving
/// with the Service.
#[test]
fn services_with_real_pods_on_one_node() {
    use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
    let _one_cluster = one_cluster_at_a_time();
    let c = Cluster::start("svc", ClusterSpec::one_node());
    let k = c.kubectl();
    // The node's own traffic to a ClusterIP needs a route before nat OUTPUT rewrites it (as
    // with kube-proxy); a one-node lab machine has no default route, real hosts do.
    let r = c.run_in(
        MASTER,
        "ip",
        &["route", "replace", "default", "dev", "eth1"],
    );
    assert!(r.ok, "default route on the lab node: {}", r.stderr);
    k.ok(&[
        "create",
        "deploy",
        "web",
        "--image=nginx:1.14",
        "--replicas=2",
        "--port=80",
    ]);
    k.ok(&["expose", "deploy", "web", "--port", "80"]);
    poll(
        "both replicas in kubectl get endpoints web",
        Duration::from_secs(180),
        || {
            let out = k.run(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ]);
            (out.ok && out.stdout.split_whitespace().count() == 2).then_some(())
        },
    );
    eprintln!("{}", k.ok(&["get", "pods,svc,endpoints", "-o", "wide"]));
    let ip = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    let url = format!("http://{ip}/");
    let deadline = Instant::now() + WAIT;
    loop {
        let out = c.run_in(MASTER, "curl", &["-sS", "-m", "5", &url]);
        if out.stdout.contains("Welcome to nginx!") {
            break;
        }
        if Instant::now() > deadline {
            let nft = c.run_in(MASTER, "nft", &["list", "ruleset"]).stdout;
            let routes = c.run_in(MASTER, "ip", &["route"]).stdout;
            let addrs = c.run_in(MASTER, "ip", &["-br", "addr"]).stdout;
            panic!(
                "web's ClusterIP {url} from the node: {}\nroutes:\n{routes}\naddrs:\n{addrs}\nnft:\n{nft}\n{}",
                out.stderr,
                c.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // A pod resolves the service through the node-local DNS (search path from its
    // resolv.conf) and fetches the page through the ClusterIP.
    let script = "cat /etc/resolv.conf; for n in web web.default web.default.svc.cluster.local; do \
        timeout 15 wget -q -O /tmp/p http://$n/ || exit 3; grep -q 'Welcome to nginx!' /tmp/p || exit 4; echo ok $n; done; \
        nslookup kubernetes.default.svc.cluster.local || exit 5";
    k.ok(&[
        "run",
        "client",
        "--image=busybox",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let phase = poll("pod client to finish", Duration::from_secs(120), || {
        let out = k.run(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        let p = out.stdout.trim().to_string();
        (p == "Succeeded" || p == "Failed").then_some(p)
    });
    let state = k.ok(&[
        "get",
        "pod",
        "client",
        "-o",
        "jsonpath={.status.containerStatuses[0].state}",
    ]);
    let logs = k.run(&["logs", "client"]).stdout;
    eprintln!("client pod logs:\n{logs}");
    assert_eq!(
        phase,
        "Succeeded",
        "client pod: {state}\nlogs:\n{logs}\n{}",
        c.diagnostics()
    );

    // A pod whose readiness probe fails is listed as not ready and gets no traffic.
    let manifest = c.lab.path("notready.json");
    std::fs::write(
        &manifest,
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "notready", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.14", "ports": [{"containerPort": 80}],
                "readinessProbe": {"exec": {"command": ["cat", "/nonexistent"]}, "periodSeconds": 1}}]}})
        .to_string(),
    )
    .expect("manifest");
    k.ok(&["apply", "-f", &manifest.to_string_lossy()]);
    let nr_ip = poll(
        "notready Running with an IP",
        Duration::from_secs(120),
        || {
            let out = k.run(&[
                "get",
                "pod",
                "notready",
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ]);
            let v: Vec<&str> = out.stdout.split_whitespace().collect();
            (v.len() == 2 && v[0] == "Running").then(|| v[1].to_string())
        },
    );
    poll("notready in notReadyAddresses", WAIT, || {
        let out = k.run(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].notReadyAddresses[*].ip}",
        ]);
        out.stdout.contains(&nr_ip).then_some(())
    });
    let ready = k.ok(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    assert!(!ready.contains(&nr_ip), "{ready}");
    let backends = c
        .run_in(MASTER, "nft", &["list", "map", "ip", "keel", "backends"])
        .stdout;
    assert!(
        !backends.contains(&nr_ip),
        "the not-ready pod is a backend:\n{backends}"
    );

    k.ok(&["delete", "service", "web"]);
    poll("web's rules removed on the node", WAIT, || {
        let out = c.run_in(MASTER, "nft", &["list", "table", "ip", "keel"]);
        (out.ok && !out.stdout.contains(&ip)).then_some(())
    });
}

/// Three nodes (master tainted, two workers): a NodePort answers on every node's address from
/// the registry machine (another lab host), and every node answers DNS on its own copy of the
/// cluster DNS address, which keeps working on the others when one worker's agent is stopped.
#[test]
fn nodeport_and_node_local_dns_across_three_nodes() {
    use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
    let _one_cluster = one_cluster_at_a_time();
    let mut c = Cluster::start("svc3", ClusterSpec::default());
    let k = c.kubectl();
    c.wait_all_ready(Duration::from_secs(120));
    k.ok(&[
        "create",
        "deploy",
        "web",
        "--image=nginx:1.14",
        "--replicas=2",
        "--port=80",
    ]);
    k.ok(&[
        "expose", "deploy", "web", "--port", "80", "--type", "NodePort",
    ]);
    poll(
        "both replicas in the endpoints",
        Duration::from_secs(180),
        || {
            let out = k.run(&[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ]);
            (out.ok && out.stdout.split_whitespace().count() == 2).then_some(())
        },
    );
    eprintln!("{}", k.ok(&["get", "pods,svc,endpoints", "-o", "wide"]));
    let np = k
        .ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .trim()
        .to_string();
    let ip = k
        .ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    let nodes = [
        (MASTER, "192.168.56.10"),
        ("worker01", "192.168.56.11"),
        ("worker02", "192.168.56.12"),
    ];
    for (name, addr) in nodes {
        let url = format!("http://{addr}:{np}/");
        poll(
            &format!("NodePort on {name} ({url}) from another host"),
            WAIT,
            || {
                let out = c.run_in("registry", "curl", &["-s", "-m", "5", &url]);
                out.stdout.contains("Welcome to nginx!").then_some(())
            },
        );
    }
    let dig = |c: &Cluster, node: &str| {
        c.run_in(
            node,
            "dig",
            &[
                "@10.96.0.10",
                "+time=2",
                "+tries=1",
                "+short",
                "web.default.svc.cluster.local",
            ],
        )
        .stdout
        .trim()
        .to_string()
    };
    for (name, _) in nodes {
        poll(&format!("DNS on {name}"), WAIT, || {
            (dig(&c, name) == ip).then_some(())
        });
    }
    // One worker's agent dies: the others keep answering from their own copies.
    c.stop_agent("worker02");
    for name in [MASTER, "worker01"] {
        assert_eq!(
            dig(&c, name),
            ip,
            "DNS on {name} after worker02's agent stopped"
        );
    }
}

/// Helpers for the real-pod tests below (cluster fixture, kubectl in the master's namespace).
mod pods {
    use keel_tests::cluster::Cluster;
    use keel_tests::poll;
    use std::time::Duration;

    /// `kubectl apply -f` of `obj`, written into the lab folder as `<name>.json`.
    pub fn apply(c: &Cluster, name: &str, obj: &serde_json::Value) {
        let f = c.lab.path(&format!("{name}.json"));
        std::fs::write(&f, obj.to_string()).expect("manifest");
        c.kubectl().ok(&["apply", "-f", &f.to_string_lossy()]);
    }

    /// A Deployment of `replicas` busybox pods labelled `app=<name>` running `script` (sh -c).
    pub fn deployment(name: &str, replicas: u32, script: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "main",
                        "image": "busybox", "command": ["sh", "-c", script],
                        "ports": [{"containerPort": 80}]}]}}}})
    }

    /// Polls until Service `svc`'s Endpoints list `n` ready addresses; returns them.
    pub fn wait_ready_endpoints(c: &Cluster, svc: &str, n: usize) -> Vec<String> {
        let k = c.kubectl();
        poll(
            &format!("{n} ready addresses in kubectl get endpoints {svc}"),
            Duration::from_secs(180),
            || {
                let out = k.run(&[
                    "get",
                    "endpoints",
                    svc,
                    "-o",
                    "jsonpath={.subsets[*].addresses[*].ip}",
                ]);
                let ips: Vec<String> = out.stdout.split_whitespace().map(str::to_string).collect();
                (out.ok && ips.len() == n).then_some(ips)
            },
        )
    }

    /// The ClusterIP of Service `svc`.
    pub fn cluster_ip(c: &Cluster, svc: &str) -> String {
        c.kubectl()
            .ok(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"])
            .trim()
            .to_string()
    }

    /// Runs `script` in a busybox pod `name` (restartPolicy Never) to its end; returns its
    /// phase and logs.
    pub fn run_to_end(c: &Cluster, name: &str, script: &str) -> (String, String) {
        let k = c.kubectl();
        k.ok(&[
            "run",
            name,
            "--image=busybox",
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            script,
        ]);
        let phase = poll(
            &format!("pod {name} to finish"),
            Duration::from_secs(180),
            || {
                let out = k.run(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
                let p = out.stdout.trim().to_string();
                (p == "Succeeded" || p == "Failed").then_some(p)
            },
        );
        let logs = k.run(&["logs", name]).stdout;
        eprintln!("pod {name} ({phase}) logs:\n{logs}");
        (phase, logs)
    }

    /// The IPv4 `nameserver`s of a resolv.conf text (what keel-dns forwards to).
    pub fn ipv4_nameservers(text: &str) -> Vec<std::net::Ipv4Addr> {
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("nameserver")).then(|| w.next())?
            })
            .filter_map(|a| a.parse().ok())
            .collect()
    }
}

/// sessionAffinity ClientIP and hairpin with real pods on one node. Two replicas answer with
/// their own host name (the pod name); from one client pod, ten requests to the ClientIP
/// Service all reach one replica, and twenty to a Service without affinity over the same pods
/// reach both. A one-replica Service whose pod fetches its own Service's name gets its own page
/// (the endpoint is the client: DNAT back to the sender, masqueraded by `local-masq`), first
/// with the node's bridge as the agent found it, then with the bridge's iptables hook
/// (br_netfilter) switched off in the node, as on a host without that module.
#[test]
fn session_affinity_and_hairpin_with_real_pods() {
    use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
    let _one_cluster = one_cluster_at_a_time();
    let c = Cluster::start("svcaff", ClusterSpec::one_node());
    let k = c.kubectl();
    // The node's own checks of ClusterIPs need a route (see services_with_real_pods_on_one_node).
    let r = c.run_in(
        MASTER,
        "ip",
        &["route", "replace", "default", "dev", "eth1"],
    );
    assert!(r.ok, "default route on the lab node: {}", r.stderr);

    // Each replica serves its host name; the shell ends on SIGTERM (httpd as PID 1 would not).
    let page = "trap 'exit 0' TERM; mkdir -p /tmp/www; hostname > /tmp/www/index.html; \
        httpd -f -p 80 -h /tmp/www & wait";
    pods::apply(&c, "who", &pods::deployment("who", 2, page));
    k.ok(&[
        "expose",
        "deploy",
        "who",
        "--name",
        "who-sticky",
        "--port",
        "80",
        "--session-affinity=ClientIP",
    ]);
    k.ok(&[
        "expose", "deploy", "who", "--name", "who-any", "--port", "80",
    ]);
    // The pod fetches its own Service by name once a second and prints what it got.
    let selfie = "trap 'exit 0' TERM; mkdir -p /tmp/www; echo hairpin-$(hostname) > /tmp/www/index.html; \
        httpd -p 80 -h /tmp/www; while true; do timeout 10 wget -q -O - http://selfie/ || echo FAIL; sleep 1; done";
    pods::apply(&c, "selfie", &pods::deployment("selfie", 1, selfie));
    k.ok(&["expose", "deploy", "selfie", "--port", "80"]);

    pods::wait_ready_endpoints(&c, "who-sticky", 2);
    pods::wait_ready_endpoints(&c, "who-any", 2);
    let names: BTreeSet<String> = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=who",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 2, "two who pods: {names:?}");
    eprintln!("{}", k.ok(&["get", "pods,svc,endpoints", "-o", "wide"]));
    // Both Services answer from the node before the client pod starts (rules synced).
    for svc in ["who-sticky", "who-any"] {
        let url = format!("http://{}/", pods::cluster_ip(&c, svc));
        poll(&format!("{svc} ({url}) from the node"), WAIT, || {
            let out = c.run_in(MASTER, "curl", &["-s", "-m", "5", &url]);
            names.contains(out.stdout.trim()).then_some(())
        });
    }

    let script = "for i in $(seq 10); do timeout 15 wget -q -O - http://who-sticky/ || echo FAIL; done; \
        echo ---; for i in $(seq 20); do timeout 15 wget -q -O - http://who-any/ || echo FAIL; done";
    let (phase, logs) = pods::run_to_end(&c, "client", script);
    assert_eq!(
        phase,
        "Succeeded",
        "client pod:\n{logs}\n{}",
        c.diagnostics()
    );
    let (sticky, any) = logs
        .split_once("---")
        .unwrap_or_else(|| panic!("client output without its separator:\n{logs}"));
    let sticky: Vec<&str> = sticky.split_whitespace().collect();
    let any: Vec<&str> = any.split_whitespace().collect();
    assert_eq!(sticky.len(), 10, "ten answers from who-sticky: {sticky:?}");
    assert_eq!(any.len(), 20, "twenty answers from who-any: {any:?}");
    let sticky_set: BTreeSet<String> = sticky.iter().map(|s| s.to_string()).collect();
    assert!(
        sticky_set.len() == 1 && names.is_superset(&sticky_set),
        "ClientIP affinity: one client must stay on one replica of {names:?}, got {sticky:?}"
    );
    let any_set: BTreeSet<String> = any.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        any_set, names,
        "without affinity twenty requests must reach both replicas"
    );

    // Hairpin: the selfie pod's own fetches of http://selfie/ return its page.
    pods::wait_ready_endpoints(&c, "selfie", 1);
    let pod = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=selfie",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .trim()
        .to_string();
    let want = format!("hairpin-{pod}");
    // Waits for `need` fetches of its own page logged after line `skip`; returns the line count.
    let hairpin = |skip: usize, need: usize, how: &str| -> usize {
        let deadline = Instant::now() + keel_tests::scaled(Duration::from_secs(60));
        loop {
            let logs = k.run(&["logs", &pod]).stdout;
            let lines: Vec<&str> = logs.lines().collect();
            let got = lines.iter().skip(skip).filter(|l| l.trim() == want).count();
            if got >= need {
                return lines.len();
            }
            if Instant::now() > deadline {
                let nft = c
                    .run_in(MASTER, "nft", &["list", "table", "ip", "keel"])
                    .stdout;
                panic!(
                    "hairpin ({how}): pod {pod} got its own page ({want}) through Service selfie {got} times after log line {skip}, wanted {need}; its log:\n{logs}\nnft:\n{nft}\n{}",
                    c.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let seen = hairpin(0, 1, "the lab node's bridge as the agent found it");
    // Again with the bridge's iptables hook off in the node (a host without br_netfilter, as
    // the first test's node): the reply then relies on Keel's local-masq, not on the bridge.
    let hook = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if Path::new(hook).exists() {
        let r = c.run_in(
            MASTER,
            "sysctl",
            &["-qw", "net.bridge.bridge-nf-call-iptables=0"],
        );
        assert!(r.ok, "bridge hook off on the lab node: {}", r.stderr);
        hairpin(seen, 3, "bridge-nf-call-iptables=0 on the node");
    }
}

/// `dnsmasq` answering `name` (under `keel.test`) with `ip` on `listen:port` inside lab
/// machine `machine`: a real resolver as the node's upstream or as a UDP endpoint, answering
/// nothing else (no upstreams, no hosts file, no config file, no pid file outside the lab).
fn dnsmasq(
    c: &keel_tests::cluster::Cluster,
    machine: &str,
    tag: &str,
    listen: &[String],
    port: u16,
    name: &str,
    ip: &str,
) -> keel_tests::lab::LabProcess {
    let ok = Command::new("which")
        .arg("dnsmasq")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "dnsmasq is missing: apt-get install -y dnsmasq-base");
    let mut cmd = keel_tests::lab::netns_command(&c.lab.machine(machine).ns.name, "dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--log-queries",
        "--log-facility=-",
    ])
    .arg(format!("--port={port}"))
    .arg(format!(
        "--pid-file={}",
        c.lab.path(&format!("dnsmasq-{tag}.pid")).display()
    ))
    // The record, and NODATA (not REFUSED) for its other types: busybox nslookup also asks
    // for AAAA and fails on REFUSED.
    .arg("--local=/keel.test/")
    .arg(format!("--host-record={name},{ip}"));
    for a in listen {
        cmd.arg(format!("--listen-address={a}"));
    }
    keel_tests::lab::LabProcess::spawn(cmd, c.lab.path(&format!("dnsmasq-{tag}.log")))
}

/// Forwarding of an outside name and a UDP Service, with real pods on one node.
///
/// The agent forwards names outside `cluster.local` to the `nameserver`s of the host's
/// `/etc/resolv.conf` (fixed in `keel-agent run`), so the test puts a resolver on those
/// addresses inside the lab node: each IPv4 one becomes a /32 on the node namespace's `lo`
/// (loopback ones are local there already) and dnsmasq answers `outside.keel.test` on them.
/// The host's own resolver is never touched. A pod resolves that name through 10.96.0.10.
///
/// UDP: busybox has no UDP server applet (its `nc` has no `-u`), so the endpoint is another
/// lab host: a Service without selector, port 53/UDP -> targetPort 5353, with an EndpointSlice
/// to dnsmasq on the registry machine (192.168.56.5:5353). A pod's `nslookup` against the
/// ClusterIP gets dnsmasq's answer (DNAT + port translation + reverse NAT of UDP).
#[test]
fn dns_forwarding_and_a_udp_service_with_real_pods() {
    use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
    let _one_cluster = one_cluster_at_a_time();
    let upstreams =
        pods::ipv4_nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let upstreams: Vec<String> = upstreams
        .iter()
        .filter(|a| a.octets() != [10, 96, 0, 10])
        .map(|a| a.to_string())
        .collect();
    assert!(
        !upstreams.is_empty(),
        "this host's /etc/resolv.conf lists no IPv4 nameserver: keel-agent forwards outside names to those, so the test has nothing to stand in for (add one, e.g. `nameserver 10.255.255.53`)"
    );
    let c = Cluster::start("svcudp", ClusterSpec::one_node());
    let r = c.run_in(
        MASTER,
        "ip",
        &["route", "replace", "default", "dev", "eth1"],
    );
    assert!(r.ok, "default route on the lab node: {}", r.stderr);
    for a in &upstreams {
        if !a.starts_with("127.") {
            let r = c.run_in(
                MASTER,
                "ip",
                &["addr", "add", &format!("{a}/32"), "dev", "lo"],
            );
            assert!(
                r.ok,
                "upstream address {a} on the lab node's lo: {}",
                r.stderr
            );
        }
    }
    let _upstream = dnsmasq(
        &c,
        MASTER,
        "upstream",
        &upstreams,
        53,
        "outside.keel.test",
        "192.0.2.77",
    );
    let _udp_server = dnsmasq(
        &c,
        "registry",
        "udp",
        &["192.168.56.5".to_string()],
        5353,
        "udp.keel.test",
        "192.0.2.53",
    );

    pods::apply(
        &c,
        "svc-udp",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp-dns"},
            "spec": {"ports": [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 5353}]}}),
    );
    pods::apply(
        &c,
        "slice-udp",
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "udp-dns-lab", "labels": {"kubernetes.io/service-name": "udp-dns",
                "endpointslice.kubernetes.io/managed-by": "keel-tests"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.168.56.5"], "conditions": {"ready": true}}],
            "ports": [{"name": "dns", "protocol": "UDP", "port": 5353}]}),
    );
    let udp_ip = pods::cluster_ip(&c, "udp-dns");
    let dig_short = |server: &str, name: &str| {
        c.run_in(
            MASTER,
            "dig",
            &[&format!("@{server}"), "+time=2", "+tries=1", "+short", name],
        )
        .stdout
        .trim()
        .to_string()
    };
    // From the node first (rules synced, dnsmasq up), then from a pod.
    poll(
        "outside.keel.test forwarded by the node's 10.96.0.10",
        WAIT,
        || (dig_short("10.96.0.10", "outside.keel.test") == "192.0.2.77").then_some(()),
    );
    poll(
        &format!("udp.keel.test through the UDP Service {udp_ip}:53 from the node"),
        WAIT,
        || (dig_short(&udp_ip, "udp.keel.test") == "192.0.2.53").then_some(()),
    );

    let script = format!(
        "nslookup outside.keel.test || exit 5; echo ---; nslookup udp.keel.test {udp_ip} || exit 6"
    );
    let (phase, logs) = pods::run_to_end(&c, "client", &script);
    let dns_log = std::fs::read_to_string(c.lab.path("dnsmasq-upstream.log")).unwrap_or_default();
    let udp_log = std::fs::read_to_string(c.lab.path("dnsmasq-udp.log")).unwrap_or_default();
    assert_eq!(
        phase,
        "Succeeded",
        "client pod:\n{logs}\nupstream dnsmasq:\n{dns_log}\nUDP endpoint dnsmasq:\n{udp_log}\n{}",
        c.diagnostics()
    );
    let (outside, udp) = logs
        .split_once("---")
        .unwrap_or_else(|| panic!("client output:\n{logs}"));
    assert!(
        outside.contains("192.0.2.77"),
        "outside.keel.test from a pod: {outside}"
    );
    assert!(
        udp.contains("192.0.2.53"),
        "udp.keel.test via the UDP Service from a pod: {udp}"
    );
    // The upstream saw the query from the node (forwarded), not from the pod.
    assert!(
        dns_log.contains("outside.keel.test"),
        "upstream log:\n{dns_log}"
    );
}
