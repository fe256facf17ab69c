//! Root test of the stats collector against the real kernel: a pod cgroup
//! (`/keel-stats-test-<pid>/pod<uid>`) with a CPU-burning, memory-holding busybox process in one
//! container cgroup and an OOM-killed one in another, the pod's process in its own network
//! namespace with traffic sent to it from a second namespace, and a `record.json` describing it
//! all. Checks the collector's figures, `/stats/summary` and `/metrics/cadvisor` (parsed back
//! with a Prometheus text parser). Works on cgroup v1 (this host) and v2 (the VM tier).

mod stats_lab;

use keel_agent::stats::cgroup::Hierarchy;
use keel_agent::stats::collect::Sources;
use keel_agent::stats::{Stats, StatsConfig, http};
use stats_lab::{Lab, record};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ip(ns: &str, args: &str) {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns]).args(args.split(' '));
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(ok, "ip -n {ns} {args} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_reads_a_real_pod() {
    let cgroot = Path::new("/sys/fs/cgroup");
    let mut lab = Lab::new();
    let uid = "5a7c0e1e-0000-4000-8000-000000000001";
    let pod_cg = format!("{}/pod{uid}", lab.top);
    let burn_cg = format!("{pod_cg}/burn");
    let oom_cg = format!("{pod_cg}/oom");
    lab.mkcg(&pod_cg);
    lab.mkcg(&burn_cg);
    lab.mkcg(&oom_cg);
    let limit = match &lab.hierarchy {
        Hierarchy::V2 { .. } => ("memory.max", "16777216"),
        Hierarchy::V1 { .. } => ("memory.limit_in_bytes", "16777216"),
    };
    std::fs::write(lab.hierarchy.dir("memory", &oom_cg).join(limit.0), limit.1)
        .expect("set memory limit");
    let tag = std::process::id();
    let (pod_ns, peer_ns) = (
        format!("keel-stats-{tag}-pod"),
        format!("keel-stats-{tag}-peer"),
    );
    let pod_net = lab.netns(&pod_ns);
    lab.netns(&peer_ns);
    ip(
        &pod_ns,
        &format!("link add eth0 type veth peer name peer netns {peer_ns}"),
    );
    ip(&pod_ns, "addr add 10.231.0.2/24 dev eth0");
    ip(&pod_ns, "link set eth0 up");
    ip(&peer_ns, "addr add 10.231.0.1/24 dev peer");
    ip(&peer_ns, "link set peer up");
    // dd with a 64 MiB buffer: burns a CPU and keeps 64 MiB of anonymous memory resident.
    lab.spawn(
        &burn_cg,
        Some(&pod_net),
        "exec busybox dd if=/dev/zero of=/dev/null bs=64M",
    );
    // The same in a 16 MiB cgroup: OOM-killed at once.
    lab.spawn(
        &oom_cg,
        Some(&pod_net),
        "exec busybox dd if=/dev/zero of=/dev/null bs=64M",
    );

    let root = tempfile::tempdir().expect("tempdir");
    record(
        root.path(),
        "default",
        "burner",
        uid,
        &pod_cg,
        &[("burn", &burn_cg), ("oom", &oom_cg)],
    );
    let mut sources = Sources::for_root(root.path());
    sources.cgroup_root = cgroot.to_path_buf();
    let stats = Stats::new(StatsConfig {
        node_name: "n1".into(),
        sources,
        housekeeping: Duration::from_secs(1),
        fs_interval: Duration::from_secs(60),
    });
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &peer_ns,
            "ping",
            "-c",
            "20",
            "-i",
            "0.05",
            "-s",
            "1000",
            "10.231.0.2",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("ping (apt-get install -y iputils-ping)");
    assert!(ping.success(), "ping into the pod's namespace failed");

    // Poll until the CPU rate (needs two passes) and memory show up, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let sample = loop {
        let s = stats.housekeep();
        let p = &s.pods[0];
        let burn = p
            .containers
            .iter()
            .find(|c| c.name == "burn")
            .expect("burn container");
        let rate = burn
            .stats
            .cpu
            .as_ref()
            .and_then(|c| c.usage_nano_cores)
            .unwrap_or(0);
        let ws = burn
            .stats
            .memory
            .as_ref()
            .map(|m| m.working_set)
            .unwrap_or(0);
        let oom = p
            .containers
            .iter()
            .find(|c| c.name == "oom")
            .and_then(|c| c.stats.memory.as_ref()?.oom_kills)
            .unwrap_or(0);
        if rate >= 500_000_000 && ws >= 60 << 20 && oom >= 1 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no expected figures by the deadline: rate {rate} ws {ws} oom {oom}: {p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let pod = &sample.pods[0];
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("default", "burner")
    );
    let burn = &pod.containers[0];
    let mem = burn.stats.memory.as_ref().expect("memory");
    assert!(mem.rss.unwrap_or(0) >= 60 << 20, "rss {:?}", mem.rss);
    assert_eq!(burn.stats.processes, Some(1));
    let pod_cpu = pod.stats.cpu.as_ref().expect("pod cpu");
    assert!(pod_cpu.usage_ns >= burn.stats.cpu.as_ref().expect("cpu").usage_ns);
    let net = pod.network.as_ref().expect("pod network");
    let eth0 = net
        .iter()
        .find(|i| i.name == "eth0")
        .expect("eth0 in the pod's netns");
    assert!(
        eth0.rx_bytes >= 20 * 1000 && eth0.rx_packets >= 20,
        "{eth0:?}"
    );
    assert!(eth0.tx_packets >= 20, "{eth0:?}");
    let logs = burn.logs.as_ref().expect("logs usage");
    assert!(logs.inodes_used >= 2);
    assert_eq!(pod.volumes.len(), 1);
    assert!(pod.volumes[0].1.used_bytes >= 256 * 1024);
    assert!(sample.node.memory.total > 0 && sample.node.cores > 0);

    // The endpoints, from the same sample.
    let summary = http::handle(&stats, "/stats/summary", "")
        .await
        .expect("summary");
    let doc: serde_json::Value = serde_json::from_str(summary.body()).expect("summary json");
    let p = &doc["pods"][0];
    assert_eq!(p["podRef"]["name"], "burner");
    assert!(
        p["cpu"]["usageNanoCores"].as_u64().unwrap_or(0) >= 500_000_000,
        "{p}"
    );
    assert!(
        p["containers"][0]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            >= 60 << 20
    );
    assert!(p["network"]["rxBytes"].as_u64().unwrap_or(0) >= 20_000);
    assert!(doc["node"]["memory"]["availableBytes"].as_u64().is_some());

    let text = http::handle(&stats, "/metrics/cadvisor", "")
        .await
        .expect("cadvisor");
    let lines = text.body().lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus text parses");
    let ws = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "container_memory_working_set_bytes"
                && s.labels.get("container") == Some("burn")
        })
        .expect("working set of container burn");
    assert_eq!(ws.labels.get("pod"), Some("burner"));
    assert_eq!(ws.labels.get("namespace"), Some("default"));
    assert_eq!(
        ws.labels.get("image"),
        Some("docker.io/library/busybox:latest")
    );
    assert_eq!(ws.labels.get("id"), Some(burn_cg.as_str()));
    let rx = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "container_network_receive_bytes_total"
                && s.labels.get("interface") == Some("eth0")
        })
        .expect("network receive bytes");
    assert!(matches!(rx.value, prometheus_parse::Value::Counter(v) if v >= 20_000.0));
    let dirs = lab.dirs(&lab.top.clone());
    drop(lab);
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
