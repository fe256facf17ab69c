//! Monitoring with real pods (root): on a cluster of an untainted master and a worker (the
//! master alone with `KEEL_MONITORING_ONE_NODE=1`, as in the cgroup v2 VM), a
//! CPU-burning container shows at least 500m in `kubectl top pod`, a container holding 220 MiB
//! shows at least 200Mi of working set in `kubectl top pod --containers` and in the agent's
//! `/stats/summary`, a pod's network byte counters grow after traffic (summary and
//! `container_network_receive_bytes_total` of `/metrics/cadvisor`), `/metrics/cadvisor` parses
//! with a Prometheus text parser and carries cAdvisor's names and labels, and `kubectl top
//! nodes`, `top pods -A`, `-l` and `--containers` work with kubectl 1.27 and 1.33. The agents'
//! endpoints are called as the API server calls them (its kubelet client certificate).
//! scripts/test.d/agent-vm.sh runs this test on cgroup v2 as well (one node).

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::kubectl::{Kubectl, cells};
use keel_tests::poll;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const WORKER: &str = "worker01";
/// Set (to 1) by scripts/test.d/agent-vm.sh: the cgroup v2 VM runs without KVM, so there the
/// cluster is the master alone and the worker's pods run on it.
const ONE_NODE_ENV: &str = "KEEL_MONITORING_ONE_NODE";
/// Image pulls and first starts on a shared machine.
const START: Duration = Duration::from_secs(120);
/// Housekeeping runs every 10 s and a CPU rate needs two passes; the API caches 5 s.
const METRICS: Duration = Duration::from_secs(120);
/// The burner's wait: its BestEffort cgroup competes as one group (weight 1024 at the top of
/// the `keel` tree) with every other task on the machine's two cores, so on a machine loaded
/// by builds it can take several 10 s windows to reach 500m.
const BURN: Duration = Duration::from_secs(300);
const MIB: u64 = 1 << 20;
/// What the hog container holds: 220 MiB of `tail`'s line buffer.
const HOG_BYTES: u64 = 220 * MIB;

fn pod(k: &Kubectl, name: &str) -> Option<Value> {
    let out = k.run(&["get", "pod", name, "-o", "json"]);
    out.ok
        .then(|| serde_json::from_str(&out.stdout).ok())
        .flatten()
}

fn running(k: &Kubectl, name: &str) -> Option<Value> {
    pod(k, name).filter(|p| {
        p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["ready"] == true))
    })
}

fn spec(name: &str, node: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, "suite": "mon"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": containers}})
}

/// The rows of a `kubectl top` table, header included (Err: what kubectl printed).
fn top(k: &Kubectl, args: &[&str]) -> Result<Vec<Vec<String>>, String> {
    let mut cmd = vec!["top"];
    cmd.extend(args);
    let out = k.run(&cmd);
    let shown = format!(
        "$ {} {}\n{}{}",
        k.bin.display(),
        cmd.join(" "),
        out.stdout,
        out.stderr
    );
    if !out.ok {
        return Err(shown);
    }
    Ok(out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(cells)
        .collect())
}

/// Polls `f` (every second) until it returns Ok or `timeout` (scaled) passes; panics with
/// `what` and the last thing `f` saw.
fn poll_seen<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let timeout = keel_tests::scaled(timeout);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) if std::time::Instant::now() > deadline => {
                let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {what} (load average {}); last seen:\n{seen}",
                    load.trim()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Millicores of a `kubectl top` cell (`987m`, or whole cores).
fn millicores(cell: &str) -> Option<u64> {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => cell.parse::<u64>().ok().map(|c| c * 1000),
    }
}

/// MiB of a `kubectl top` memory cell (`220Mi`).
fn mebibytes(cell: &str) -> Option<u64> {
    cell.strip_suffix("Mi")?.parse().ok()
}

fn summary(c: &Cluster, node: &str) -> Option<Value> {
    serde_json::from_str(&c.agent_get(node, "/stats/summary")?).ok()
}

/// The summary entry of pod `name` in namespace default.
fn summary_pod(s: &Value, name: &str) -> Option<Value> {
    s["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == "default")
        .cloned()
}

/// Parses Prometheus text with `prometheus-parse`, first checking that the parser recognises
/// every line (it skips what it cannot read) and that every sample's family has a TYPE.
fn parse_prometheus(text: &str) -> Vec<prometheus_parse::Sample> {
    use prometheus_parse::LineInfo;
    let mut typed = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        match LineInfo::parse(line) {
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => {
                // Histograms come back as `<name>_bucket` with the family name as alias.
                typed.insert(metric_alias.unwrap_or(metric_name));
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                assert!(
                    value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
                    "line {}: value {value:?} is not a float: {line}",
                    i + 1
                );
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|x| metric_name.strip_suffix(x))
                    .filter(|f| typed.contains(*f))
                    .unwrap_or(metric_name);
                assert!(
                    typed.contains(family),
                    "line {}: {metric_name} has no # TYPE line before it",
                    i + 1
                );
            }
            LineInfo::Doc { .. } | LineInfo::Empty => {}
            LineInfo::Ignored => panic!("line {} is not Prometheus text: {line:?}", i + 1),
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text parses");
    scrape.samples
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    }
}

/// The `metric` samples of pod `pod` (any container), by their `container` label.
fn pod_samples(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    pod: &str,
) -> HashMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("pod") == Some(pod))
        .map(|s| {
            (
                s.labels.get("container").unwrap_or_default().to_string(),
                value(s),
            )
        })
        .collect()
}

/// Sum of the pod's `eth0` rx and tx bytes in a summary, if reported.
fn net_bytes(p: &Value) -> Option<(u64, u64)> {
    let n = &p["network"];
    Some((n["rxBytes"].as_u64()?, n["txBytes"].as_u64()?))
}

#[test]
fn kubectl_top_and_agent_stats_with_real_pods() {
    let one_node = std::env::var(ONE_NODE_ENV).is_ok_and(|v| v == "1");
    let (worker, nodes): (&str, &[&str]) = if one_node {
        (MASTER, &[MASTER])
    } else {
        (WORKER, &[MASTER, WORKER])
    };
    let c = Cluster::start(
        "mon",
        ClusterSpec {
            workers: nodes[1..].iter().map(|n| (n.to_string(), 11)).collect(),
            control_plane_role: false,
            // kube's defaults: a loaded machine (or the VM) may delay a lease renewal, and
            // this test is not about eviction.
            grace_seconds: keel_tests::scaled(Duration::from_secs(40)).as_secs(),
            toleration_seconds: 300,
            ..ClusterSpec::default()
        },
    );
    let k = c.kubectl();
    let pods = [
        spec(
            "burn",
            worker,
            json!([{"name": "burn", "image": "busybox",
                "command": ["sh", "-c", "while :; do :; done"]}]),
        ),
        // busybox tail keeps an unfinished line in memory: 220 MiB from head, then the
        // pipe stays open (sleep), so tail holds the buffer instead of printing it.
        spec(
            "hog",
            MASTER,
            json!([
                {"name": "hog", "image": "memhog:1",
                 "command": ["sh", "-c", format!("(head -c {HOG_BYTES} /dev/zero; exec sleep 3600) | tail")],
                 "resources": {"limits": {"memory": "400Mi"}}},
                {"name": "idle", "image": "busybox", "command": ["sleep", "3600"]}
            ]),
        ),
        spec(
            "web",
            worker,
            json!([{"name": "web", "image": "nginx:1.14", "ports": [{"containerPort": 80}]}]),
        ),
    ];
    let manifest = c.lab.path("mon-pods.json");
    std::fs::write(
        &manifest,
        json!({"apiVersion": "v1", "kind": "List", "items": pods}).to_string(),
    )
    .expect("manifest");
    k.ok(&["apply", "-f", &manifest.to_string_lossy()]);
    let mut web = Value::Null;
    for name in ["burn", "hog", "web"] {
        let p = poll(&format!("pod {name} Running"), START, || running(&k, name));
        if name == "web" {
            web = p;
        }
    }
    eprintln!("{}", k.ok(&["get", "pods", "-o", "wide"]));

    // A CPU burner: >= 500m (one core is 1000m; two contended cores on CI).
    let rows = poll_seen("burn at >= 500m in kubectl top pod", BURN, || {
        let rows = top(&k, &["pod", "burn"])?;
        match rows.get(1).and_then(|r| millicores(r.get(1)?)) {
            Some(m) if m >= 500 => Ok(rows),
            _ => Err(format!("{rows:?}")),
        }
    });
    eprintln!("kubectl top pod burn: {rows:?}");

    // 220 MiB held: >= 200Mi in `top --containers` and in the summary's working set.
    let rows = poll_seen(
        "hog's working set >= 200Mi in kubectl top pod --containers",
        METRICS,
        || {
            let rows = top(&k, &["pod", "hog", "--containers"])?;
            let hog = rows
                .iter()
                .find(|r| r.get(1).map(String::as_str) == Some("hog"))
                .and_then(|r| mebibytes(r.get(3)?));
            let idle = rows
                .iter()
                .any(|r| r.get(1).map(String::as_str) == Some("idle"));
            match hog {
                Some(mib) if mib >= 200 && idle => Ok(rows),
                _ => Err(format!("{rows:?}")),
            }
        },
    );
    eprintln!("kubectl top pod hog --containers: {rows:?}");
    let s = summary(&c, MASTER).expect("the master's /stats/summary");
    let hog = summary_pod(&s, "hog").unwrap_or_else(|| panic!("no hog pod in the summary: {s}"));
    let ws = hog["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "hog"))
        .and_then(|c| c["memory"]["workingSetBytes"].as_u64())
        .unwrap_or_else(|| panic!("no working set of container hog: {hog}"));
    assert!(ws >= 200 * MIB, "hog's workingSetBytes {ws} < 200Mi: {hog}");
    assert!(
        hog["memory"]["workingSetBytes"].as_u64().unwrap_or(0) >= ws,
        "the pod's working set is at least its container's: {hog}"
    );

    // Network: web's counters grow after 30 requests from the master.
    let before = poll("web's network counters in the summary", METRICS, || {
        net_bytes(&summary_pod(&summary(&c, worker)?, "web")?)
    });
    let cad_before = cadvisor_rx(&c, worker, "web");
    let url = format!(
        "http://{}/",
        web["status"]["podIP"].as_str().unwrap_or_default()
    );
    for _ in 0..30 {
        let out = c.run_in(MASTER, "curl", &["-s", "-m", "5", "-o", "/dev/null", &url]);
        assert!(out.ok, "curl {url}: {}", out.stderr);
    }
    let after = poll_seen(
        "web's rx and tx bytes to grow in the summary",
        METRICS,
        || {
            let now = summary(&c, worker)
                .and_then(|s| net_bytes(&summary_pod(&s, "web")?))
                .ok_or("no network figures of web")?;
            // 30 requests in and 30 pages of ~170 bytes out, at least.
            if now.0 >= before.0 + 30 * 100 && now.1 >= before.1 + 30 * 170 {
                Ok(now)
            } else {
                Err(format!("before {before:?}, now {now:?}"))
            }
        },
    );
    eprintln!("web rx/tx bytes {before:?} -> {after:?}");
    // A small pod still has figures (kubectl top rounds its few hundred KiB down to 0Mi).
    let s = summary(&c, worker).expect("the worker's /stats/summary");
    let w = summary_pod(&s, "web").unwrap_or_else(|| panic!("no web pod in the summary: {s}"));
    let wc = &w["containers"][0];
    assert!(
        wc["memory"]["workingSetBytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
            && wc["cpu"]["usageCoreNanoSeconds"]
                .as_u64()
                .is_some_and(|n| n > 0),
        "web's container has memory and CPU figures: {w}"
    );
    poll(
        "container_network_receive_bytes_total of web to grow",
        METRICS,
        || (cadvisor_rx(&c, worker, "web") > cad_before).then_some(()),
    );

    // /metrics/cadvisor: names and labels. Disk usage is walked less often than cgroups are
    // read (every 60 s), so a new container's container_fs_usage_bytes may take a while.
    let (text, samples) = poll_seen("container_fs_usage_bytes of web", METRICS, || {
        let text = c
            .agent_get(worker, "/metrics/cadvisor")
            .ok_or("no /metrics/cadvisor")?;
        let samples = parse_prometheus(&text);
        let fs = pod_samples(&samples, "container_fs_usage_bytes", "web");
        if fs.contains_key("web") {
            Ok((text, samples))
        } else {
            Err(format!("container_fs_usage_bytes of web: {fs:?}"))
        }
    });
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_usage_bytes",
        "container_start_time_seconds",
        "machine_cpu_cores",
        "machine_memory_bytes",
    ] {
        assert!(
            samples.iter().any(|s| s.metric == name),
            "{name} missing from /metrics/cadvisor"
        );
    }
    let burn = samples
        .iter()
        .find(|s| {
            s.metric == "container_cpu_usage_seconds_total"
                && s.labels.get("container") == Some("burn")
        })
        .unwrap_or_else(|| panic!("no container_cpu_usage_seconds_total of burn:\n{text}"));
    for label in ["container", "pod", "namespace", "image", "name", "id"] {
        assert!(
            burn.labels.get(label).is_some_and(|v| !v.is_empty()),
            "label {label} of {burn:?}"
        );
    }
    assert_eq!(burn.labels.get("pod"), Some("burn"));
    assert_eq!(burn.labels.get("namespace"), Some("default"));
    assert!(
        value(burn) > 1.0,
        "burn has used more than 1 s of CPU: {burn:?}"
    );
    let text = c
        .agent_get(MASTER, "/metrics/cadvisor")
        .expect("master /metrics/cadvisor");
    let ws = pod_samples(
        &parse_prometheus(&text),
        "container_memory_working_set_bytes",
        "hog",
    );
    assert!(
        ws.get("hog").is_some_and(|v| *v >= (200 * MIB) as f64),
        "container_memory_working_set_bytes of hog: {ws:?}"
    );
    // metrics-server's endpoint and the agent's own figures (two pods run on the worker).
    let text = c
        .agent_get(worker, "/metrics/resource")
        .expect("/metrics/resource");
    let res = parse_prometheus(&text);
    let cpu = pod_samples(&res, "container_cpu_usage_seconds_total", "burn");
    assert!(
        cpu.get("burn").is_some_and(|v| *v > 1.0),
        "container_cpu_usage_seconds_total of burn in /metrics/resource: {cpu:?}"
    );
    let text = c.agent_get(worker, "/metrics").expect("/metrics");
    let own = parse_prometheus(&text);
    let running = own
        .iter()
        .find(|s| s.metric == "kubelet_running_pods")
        .map(value);
    assert!(
        running.is_some_and(|n| n >= 2.0),
        "kubelet_running_pods of the worker: {running:?}"
    );

    // kubectl top with both kubectl versions: nodes, -A, -l, --containers.
    let kubeconfig = c.control.admin_kubeconfig();
    for version in ["1.27", "1.33"] {
        let kv = Kubectl::in_netns(version, &kubeconfig, &c.control.ns);
        let table = poll_seen("kubectl top nodes to list every node", METRICS, || {
            let rows = top(&kv, &["nodes"])?;
            let every = nodes.iter().all(|n| {
                rows.iter()
                    .any(|r| r.first().map(String::as_str) == Some(*n))
            });
            if every {
                Ok(rows)
            } else {
                Err(format!("{rows:?}"))
            }
        });
        eprintln!("kubectl {version} top nodes: {table:?}");
        assert_eq!(table[0][0], "NAME", "{table:?}");
        assert!(table[0].iter().any(|h| h.starts_with("CPU")), "{table:?}");
        for row in &table[1..] {
            assert_eq!(row.len(), 5, "NAME CPU CPU% MEMORY MEMORY%: {row:?}");
            assert!(millicores(&row[1]).is_some_and(|m| m > 0), "{row:?}");
            assert!(mebibytes(&row[3]).is_some_and(|m| m > 0), "{row:?}");
            assert!(row[2].ends_with('%') && row[4].ends_with('%'), "{row:?}");
        }
        let all = poll_seen(
            "kubectl top pods -A to list the three pods",
            METRICS,
            || {
                let rows = top(&kv, &["pods", "-A"])?;
                let three = ["burn", "hog", "web"].iter().all(|p| {
                    rows.iter()
                        .any(|r| r.get(1).map(String::as_str) == Some(*p))
                });
                if three {
                    Ok(rows)
                } else {
                    Err(format!("{rows:?}"))
                }
            },
        );
        eprintln!("kubectl {version} top pods -A: {all:?}");
        assert_eq!(all[0][0], "NAMESPACE", "{all:?}");
        let burn_row = top(&kv, &["pods", "-l", "app=burn"]).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("kubectl {version} top pods -l app=burn: {burn_row:?}");
        assert_eq!(
            burn_row.len(),
            2,
            "only burn matches app=burn: {burn_row:?}"
        );
        assert_eq!(burn_row[1][0], "burn");
        // Busy, though not necessarily 500m at this instant on a loaded machine.
        assert!(
            millicores(&burn_row[1][1]).is_some_and(|m| m >= 100),
            "{burn_row:?}"
        );
        let cont = top(&kv, &["pods", "-l", "suite=mon", "--containers"])
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("kubectl {version} top pods -l suite=mon --containers: {cont:?}");
        assert_eq!(
            cont[0][..2],
            ["POD".to_string(), "NAME".to_string()],
            "{cont:?}"
        );
        for (p, ctr) in [
            ("burn", "burn"),
            ("hog", "hog"),
            ("hog", "idle"),
            ("web", "web"),
        ] {
            assert!(
                cont.iter()
                    .any(|r| r.len() == 4 && r[0] == p && r[1] == ctr),
                "{p}/{ctr} in {cont:?}"
            );
        }
    }
    k.ok(&[
        "delete",
        "-f",
        &manifest.to_string_lossy(),
        "--wait=true",
        "--timeout=120s",
    ]);
}

/// `container_network_receive_bytes_total` of pod `pod` on `node` (eth0), 0 when absent.
fn cadvisor_rx(c: &Cluster, node: &str, pod: &str) -> f64 {
    let Some(text) = c.agent_get(node, "/metrics/cadvisor") else {
        return 0.0;
    };
    parse_prometheus(&text)
        .iter()
        .filter(|s| {
            s.metric == "container_network_receive_bytes_total"
                && s.labels.get("pod") == Some(pod)
                && s.labels.get("interface") == Some("eth0")
        })
        .map(value)
        .sum()
}
