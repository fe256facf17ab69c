//! Node-pressure eviction with real pods (root; issue 10 deliverables 4 and 6): on a one-node
//! cluster running a BestEffort pod, a Guaranteed pod and a Deployment, the agent is restarted with a hard
//! threshold no machine can meet (`memory.available<` twice this machine's MemTotal). Then, as
//! the real kubectl sees it: the node reports MemoryPressure=True and carries the
//! `node.kubernetes.io/memory-pressure:NoSchedule` taint beside an admin's taint; the
//! BestEffort pod is evicted first (phase Failed, reason Evicted, an Evicted Warning event)
//! while the Guaranteed pod still runs; the evicted pod's processes are gone and the object
//! stays; `kubelet_evictions{eviction_signal="memory.available"}` counts it; the Guaranteed
//! pod is evicted on a later pass; a new BestEffort pod bound to the node is refused at
//! admission; a Deployment's evicted replica stays Failed and its replacement waits
//! unscheduled for the taint. Restarted with its saved thresholds, the agent reports
//! MemoryPressure=False, drops its taint (the admin's stays), leaves the evicted pods Failed
//! without restarting them, and the replacement runs.

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::lab::{LabProcess, agent_command, error_line, fails_within};
use keel_tests::poll;
use serde_json::Value;
use std::time::Duration;

const START: Duration = Duration::from_secs(120);
const MEMORY_TAINT: &str = "node.kubernetes.io/memory-pressure";
const ADMIN_TAINT: &str = "keel.test/eviction";

/// Bound to the node directly (no scheduler, so the taint does not keep it away): the
/// node's admission must refuse it while it is under memory pressure.
const REFUSED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: refused}
spec:
  nodeName: master
  containers:
  - name: web
    image: nginx:1.14
"#;

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: besteffort}
spec:
  containers:
  - name: web
    image: nginx:1.14
---
apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  containers:
  - name: web
    image: nginx:1.14
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 100m, memory: 64Mi}
"#;

fn pods(c: &Cluster) -> Vec<Value> {
    let out = c.kubectl().run(&["get", "pods", "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(pods: &'a [Value], name: &str) -> Option<&'a Value> {
    pods.iter().find(|p| p["metadata"]["name"] == name)
}

/// The pods of Deployment `web`.
fn web_pods(pods: &[Value]) -> Vec<Value> {
    pods.iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web")
        .cloned()
        .collect()
}

fn is_running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
}

fn is_evicted(p: &Value) -> bool {
    p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted"
}

fn node(c: &Cluster) -> Value {
    serde_json::from_str(&c.kubectl().ok(&["get", "node", MASTER, "-o", "json"])).expect("node")
}

fn condition(n: &Value, kind: &str) -> Value {
    n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_default()
}

fn taint_keys(n: &Value) -> Vec<String> {
    n["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of processes whose memory cgroup is the pod's (`.../pod<uid>/...`), from /proc.
fn pod_processes(uid: &str) -> Vec<String> {
    let needle = format!("pod{uid}");
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cg = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
        if cg.lines().any(|l| l.contains(&needle)) {
            pids.push(name);
        }
    }
    pids
}

/// MemTotal of this machine (the lab's nodes share it), in KiB.
fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .expect("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal in /proc/meminfo")
}

/// Restarts the master's agent (`keel-agent run`) with extra flags, as `restart_agent` does.
fn restart_with(c: &mut Cluster, flags: &[String]) {
    c.stop_agent(MASTER);
    let n = c.agent(MASTER).old_logs.len() + 1;
    let log = c.lab.path(&format!("{MASTER}-agent-run{n}.log"));
    let root = c.agent(MASTER).root.to_string_lossy().into_owned();
    let config = c.registry_config.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["run", "--root-dir", &root, "--registry-config", &config];
    args.extend(flags.iter().map(String::as_str));
    let process = LabProcess::spawn(agent_command(c.lab.machine(MASTER), &args), log);
    let a = c.agent(MASTER);
    let old = std::mem::replace(&mut a.process, process);
    a.old_logs.push(old.log.clone());
}

#[test]
fn besteffort_pod_is_evicted_first_under_memory_pressure() {
    // The node lifecycle's grace periods are not under test: long ones keep a slow machine (the
    // cgroup v2 VM without KVM) from marking the node unreachable and deleting the pods.
    let spec = ClusterSpec {
        grace_seconds: 120,
        toleration_seconds: 600,
        ..ClusterSpec::one_node()
    };
    let mut c = Cluster::start("evict", spec);
    let k = c.kubectl();
    let manifest = c.lab.path("pods.yaml");
    std::fs::write(&manifest, PODS).expect("write manifest");
    k.ok(&["apply", "-f", &manifest.to_string_lossy()]);
    k.ok(&["create", "deployment", "web", "--image=nginx:1.14"]);
    k.ok(&[
        "taint",
        "node",
        MASTER,
        &format!("{ADMIN_TAINT}=yes:PreferNoSchedule"),
    ]);
    let snapshot = poll("the pods and web's replica Running", START, || {
        let ps = pods(&c);
        let ok = ["besteffort", "guaranteed"]
            .iter()
            .all(|n| find(&ps, n).is_some_and(is_running))
            && web_pods(&ps).iter().any(is_running);
        ok.then_some(ps)
    });
    let first_web = web_pods(&snapshot)[0]["metadata"]["name"].clone();
    let qos = |n: &str| find(&snapshot, n).map(|p| p["status"]["qosClass"].clone());
    assert_eq!(qos("besteffort"), Some("BestEffort".into()));
    assert_eq!(qos("guaranteed"), Some("Guaranteed".into()));
    let be_uid = find(&snapshot, "besteffort").expect("besteffort")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    assert!(
        !pod_processes(&be_uid).is_empty(),
        "the BestEffort pod's processes are visible in its cgroup before the eviction"
    );
    let n = node(&c);
    assert_eq!(condition(&n, "MemoryPressure")["status"], "False");
    assert!(!taint_keys(&n).iter().any(|t| t.starts_with(MEMORY_TAINT)));

    // A bad threshold: one line naming the flag, nothing started.
    let root = c.agent(MASTER).root.to_string_lossy().into_owned();
    let err = fails_within(
        agent_command(
            c.lab.machine(MASTER),
            &[
                "run",
                "--root-dir",
                &root,
                "--eviction-hard=memory.available>1Gi",
            ],
        ),
        Duration::from_secs(10),
    );
    assert!(
        error_line(&err).starts_with("error: --eviction-hard: "),
        "bad --eviction-hard: {err}"
    );

    // A threshold above all the memory there is: memory.available is always below it.
    let threshold = format!("--eviction-hard=memory.available<{}Ki", 2 * mem_total_kib());
    // One eviction per pass: passes far enough apart that kubectl (slow in the cgroup v2 VM)
    // sees the first eviction before the next one.
    let interval = format!(
        "--eviction-monitoring-interval={}s",
        keel_tests::scaled(Duration::from_secs(5)).as_secs()
    );
    restart_with(
        &mut c,
        &[
            threshold,
            interval,
            "--eviction-pressure-transition-period=0s".into(),
        ],
    );

    let n = poll("MemoryPressure=True and its taint", START, || {
        let n = node(&c);
        let taints = taint_keys(&n);
        (condition(&n, "MemoryPressure")["status"] == "True"
            && taints.contains(&format!("{MEMORY_TAINT}:NoSchedule")))
        .then_some(n)
    });
    eprintln!(
        "under pressure: MemoryPressure {} taints {:?}",
        condition(&n, "MemoryPressure"),
        taint_keys(&n)
    );
    assert_eq!(
        condition(&n, "MemoryPressure")["reason"],
        "KubeletHasInsufficientMemory"
    );
    assert!(
        taint_keys(&n).contains(&format!("{ADMIN_TAINT}:PreferNoSchedule")),
        "the admin's taint is kept: {:?}",
        taint_keys(&n)
    );

    // One `kubectl get pods` snapshot: the BestEffort pod is evicted, the other still runs.
    let ps = poll("the BestEffort pod Evicted", START, || {
        let ps = pods(&c);
        find(&ps, "besteffort")
            .is_some_and(is_evicted)
            .then_some(ps)
    });
    let gu = find(&ps, "guaranteed").expect("guaranteed pod");
    assert!(
        is_running(gu),
        "the Guaranteed pod (within its request) still runs when the BestEffort one is evicted: {}",
        gu["status"]
    );
    let be = find(&ps, "besteffort").expect("besteffort pod").clone();
    eprintln!(
        "evicted: besteffort {} {} {:?}; guaranteed {}",
        be["status"]["phase"],
        be["status"]["reason"],
        be["status"]["message"].as_str(),
        gu["status"]["phase"]
    );
    let message = be["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: ")
            && message.contains("Container web was using "),
        "eviction message: {message}"
    );
    let disruption = be["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    poll("an Evicted Warning event on the pod", START, || {
        let out = k.run(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=besteffort",
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .any(|e| {
                e["reason"] == "Evicted"
                    && e["type"] == "Warning"
                    && e["source"]["component"] == "kubelet"
            })
            .then_some(())
    });
    poll(
        "the BestEffort pod's processes gone",
        Duration::from_secs(30),
        || pod_processes(&be_uid).is_empty().then_some(()),
    );
    poll(
        "the BestEffort container reported terminated",
        Duration::from_secs(30),
        || {
            let ps = pods(&c);
            let p = find(&ps, "besteffort")?;
            (is_evicted(p)
                && p["status"]["containerStatuses"][0]["state"]["terminated"].is_object())
            .then_some(())
        },
    );
    let metrics = poll(
        "kubelet_evictions on /metrics",
        Duration::from_secs(30),
        || {
            c.agent_get(MASTER, "/metrics").filter(|m| {
                m.lines().any(|l| {
                    l.starts_with("kubelet_evictions{eviction_signal=\"memory.available\"}")
                        && l.split_whitespace()
                            .last()
                            .and_then(|v| v.parse::<u64>().ok())
                            >= Some(1)
                })
            })
        },
    );
    assert!(metrics.contains("# TYPE kubelet_evictions counter"));
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("kubelet_evictions{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Pressure persists, so the next pass takes the Guaranteed pod.
    poll("the Guaranteed pod Evicted on a later pass", START, || {
        let ps = pods(&c);
        find(&ps, "guaranteed")
            .is_some_and(is_evicted)
            .then_some(())
    });

    // Admission: a BestEffort pod bound to the node is refused, never started.
    let refused = c.lab.path("refused.yaml");
    std::fs::write(&refused, REFUSED).expect("write manifest");
    k.ok(&["apply", "-f", &refused.to_string_lossy()]);
    let p = poll("the refused pod Failed/Evicted", START, || {
        let ps = pods(&c);
        find(&ps, "refused").filter(|p| is_evicted(p)).cloned()
    });
    assert_eq!(
        p["status"]["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. "
    );
    assert!(
        p["status"]["containerStatuses"][0]["state"]["running"].is_null(),
        "the refused pod never ran: {}",
        p["status"]
    );

    // web's evicted replica stays; its ReplicaSet makes a new one, which the scheduler keeps
    // off the tainted node.
    let why = poll(
        "web's replacement unschedulable for the taint",
        START,
        || {
            let ps = pods(&c);
            let web = web_pods(&ps);
            let old = web.iter().find(|p| p["metadata"]["name"] == first_web)?;
            let new = web.iter().find(|p| p["metadata"]["name"] != first_web)?;
            let cond = new["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled")?
                .clone();
            (is_evicted(old)
                && cond["status"] == "False"
                && cond["message"].as_str()?.contains(MEMORY_TAINT))
            .then(|| cond["message"].clone())
        },
    );
    eprintln!("web's replacement: {why}");

    // Back to the thresholds `join` saved (the lab's memory.available<100Mi): no pressure, no
    // taint; the evicted pods stay Failed.
    c.restart_agent(MASTER);
    let n = poll("MemoryPressure=False and the taint removed", START, || {
        let n = node(&c);
        (condition(&n, "MemoryPressure")["status"] == "False"
            && !taint_keys(&n).iter().any(|t| t.starts_with(MEMORY_TAINT)))
        .then_some(n)
    });
    assert_eq!(
        condition(&n, "MemoryPressure")["reason"],
        "KubeletHasSufficientMemory"
    );
    assert!(
        taint_keys(&n).contains(&format!("{ADMIN_TAINT}:PreferNoSchedule")),
        "the admin's taint survives: {:?}",
        taint_keys(&n)
    );
    let ps = pods(&c);
    for name in ["besteffort", "guaranteed", "refused"] {
        let p = find(&ps, name).unwrap_or_else(|| panic!("{name} is kept after its eviction"));
        assert!(
            is_evicted(p),
            "{name} stays evicted after the restart: {}",
            p["status"]
        );
    }
    assert!(pod_processes(&be_uid).is_empty(), "no container restarted");
    poll(
        "web's replacement Running once the taint is gone",
        START,
        || {
            let ps = pods(&c);
            let web = web_pods(&ps);
            let old = web.iter().find(|p| p["metadata"]["name"] == first_web)?;
            (is_evicted(old) && web.iter().any(is_running)).then_some(())
        },
    );
}
