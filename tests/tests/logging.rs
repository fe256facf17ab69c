//! Cluster logging with real pods (issue 10 deliverables 5 and 6): a one-node cluster whose
//! agent ships its containers' CRI logs and its own logs to keel-control's log store. Checked
//! through `keel-control logs` and the HTTP endpoint: the lines arrive with their labels and
//! can be selected by namespace, label selector, pod, container, node and time range; a deleted
//! pod's lines (also those written while it stopped) stay queryable; an agent killed with
//! SIGKILL in the middle of a stream resumes with no line lost and none twice; the agent's own
//! lines are there; only admins query (403 for a node), a node pushes only for itself (403),
//! bad query parameters get a 400 that names them. Then the control plane is restarted with
//! tiny retention limits and drops the oldest lines by size and by age.

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::kubectl::Kubectl;
use keel_tests::lab::{LabProcess, netns_command};
use keel_tests::{poll, workspace_bin};
use std::collections::BTreeMap;
use std::time::Duration;

const NS: &str = "logtest";
const CHATTY_LINES: usize = 3000;
const COUNTER_LINES: usize = 6000;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: logtest
---
apiVersion: v1
kind: Pod
metadata:
  name: chatty
  namespace: logtest
  labels: {app: chatty, tier: front}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: talker
    image: busybox
    command: ["sh", "-c", "trap 'echo bye from chatty; exit 0' TERM; i=0; while [ $i -lt 3000 ]; do echo chatty $i; i=$((i+1)); done; echo to stderr >&2; while true; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: quiet
  namespace: logtest
  labels: {app: quiet}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: one
    image: busybox
    command: ["sh", "-c", "echo quiet one; exec sleep 100000"]
  - name: two
    image: busybox
    command: ["sh", "-c", "echo quiet two; exec sleep 100000"]
"#;

/// Writes 6000 numbered lines, 100 at a time with a pause, so an agent crash falls inside.
const COUNTER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: counter
  namespace: logtest
  labels: {app: counter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: count
    image: busybox
    command: ["sh", "-c", "i=0; while [ $i -lt 6000 ]; do echo count $i; i=$((i+1)); if [ $((i % 100)) -eq 0 ]; then sleep 0.2; fi; done; exec sleep 100000"]
"#;

/// `keel-control logs` run inside the master's network namespace.
struct Logs {
    ns: String,
    kubeconfig: String,
}

impl Logs {
    /// `keel-control logs ARGS` in the master's namespace: (success, stdout lines, stderr).
    fn run(&self, args: &[&str]) -> (bool, Vec<String>, String) {
        let bin = workspace_bin("keel-control");
        let mut all = vec!["logs", "--kubeconfig", &self.kubeconfig];
        all.extend_from_slice(args);
        let out = netns_command(&self.ns, &bin)
            .args(&all)
            .output()
            .expect("run keel-control logs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        let (ok, lines, err) = self.run(args);
        assert!(ok, "keel-control logs {args:?} failed: {err}");
        lines
    }
}

/// How many times each number appears in lines `<word> <n>`.
fn numbered(lines: &[String], word: &str) -> BTreeMap<usize, usize> {
    let mut seen = BTreeMap::new();
    for l in lines {
        if let Some(n) = l
            .strip_prefix(word)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    seen
}

fn assert_exactly_once(seen: &BTreeMap<usize, usize>, n: usize, what: &str) {
    let missing: Vec<usize> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    let twice: Vec<(usize, usize)> = seen
        .iter()
        .filter(|(_, c)| **c != 1)
        .map(|(k, c)| (*k, *c))
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty() && seen.len() == n,
        "{what}: {} missing (first {:?}), {} not exactly once (first {:?})",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>()
    );
}

fn write(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.lab.path(name);
    std::fs::write(&path, text).expect("write a file for kubectl");
    path.to_string_lossy().into_owned()
}

#[test]
fn cluster_logging() {
    let mut c = Cluster::start("logship", ClusterSpec::one_node());
    let k = c.kubectl();
    let root = c.agent(MASTER).root.clone();
    let ns_name = c.lab.machine(MASTER).ns.name.clone();
    let node_kubeconfig = root.join("pki/kubeconfig");
    let node = Kubectl::in_netns("", &node_kubeconfig, &ns_name);
    let manifest = write(&c, "logging.yaml", MANIFEST);
    k.ok(&["apply", "-f", &manifest]);
    let logs = Logs {
        ns: ns_name.clone(),
        kubeconfig: c.control.admin_kubeconfig().to_string_lossy().into_owned(),
    };

    // 1. The chatty pod's lines arrive, each once, labelled with namespace/pod/container.
    let chatty = poll(
        "the chatty pod's 3001 lines in the log store",
        Duration::from_secs(120),
        || {
            let l = logs.lines(&["-n", NS, "-l", "app=chatty"]);
            (l.len() > CHATTY_LINES).then_some(l)
        },
    );
    assert_eq!(chatty.len(), CHATTY_LINES + 1, "{:?}", &chatty[..5]);
    assert_eq!(chatty[0], "logtest/chatty/talker: chatty 0");
    let bare: Vec<String> = chatty
        .iter()
        .map(|l| l.trim_start_matches("logtest/chatty/talker: ").to_string())
        .collect();
    assert_exactly_once(&numbered(&bare, "chatty"), CHATTY_LINES, "chatty lines");
    assert!(
        bare.contains(&"to stderr".to_string()),
        "the stderr line is shipped"
    );

    // 2. Selection by pod, container, label selector, node and time range.
    let quiet = poll(
        "both quiet containers' lines",
        Duration::from_secs(60),
        || {
            let l = logs.lines(&["-n", NS, "--pod", "quiet"]);
            (l.len() == 2).then_some(l)
        },
    );
    let mut sorted = quiet.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "logtest/quiet/one: quiet one",
            "logtest/quiet/two: quiet two"
        ]
    );
    assert_eq!(
        logs.lines(&["-n", NS, "--pod", "quiet", "-c", "two"]),
        ["logtest/quiet/two: quiet two"]
    );
    assert_eq!(logs.lines(&["-l", "app=quiet", "--no-prefix"]).len(), 2);
    assert_eq!(
        logs.lines(&["-l", "tier=front,app!=quiet", "--limit", "3", "--no-prefix"]),
        ["chatty 0", "chatty 1", "chatty 2"],
        "set-based selectors and --limit"
    );
    assert_eq!(
        logs.lines(&["-n", NS, "--node", MASTER]).len(),
        CHATTY_LINES + 3
    );
    assert!(logs.lines(&["-n", NS, "--node", "no-such-node"]).is_empty());
    assert!(logs.lines(&["-n", "other-namespace"]).is_empty());
    let stamped = logs.lines(&["-l", "app=chatty", "--timestamps", "--no-prefix"]);
    let times: Vec<String> = stamped
        .iter()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    let mid = times[CHATTY_LINES / 2].clone();
    let before = times.iter().filter(|t| **t < mid).count();
    let since = logs.lines(&["-l", "app=chatty", "--since-time", &mid]);
    let until = logs.lines(&["-l", "app=chatty", "--until-time", &mid]);
    assert_eq!(until.len(), before, "--until-time {mid} is exclusive");
    assert_eq!(since.len(), CHATTY_LINES + 1 - before, "--since-time {mid}");
    assert!(logs.lines(&["-l", "app=chatty", "--since", "1h"]).len() == CHATTY_LINES + 1);

    // 3. The agent's own logs are there.
    let own = poll("the agent's own lines", Duration::from_secs(30), || {
        let l = logs.lines(&["--agent", "--node", MASTER]);
        l.iter()
            .any(|l| l.contains("node client certificate loaded"))
            .then_some(l)
    });
    assert!(
        own.iter().all(|l| l.starts_with("master/keel-agent: ")),
        "{:?}",
        &own[..own.len().min(3)]
    );

    // 4. Who may do what: a node cannot query, a node pushes only for itself; bad parameters.
    let (ok, _, err) = Logs {
        ns: ns_name.clone(),
        kubeconfig: node_kubeconfig.to_string_lossy().into_owned(),
    }
    .run(&["-n", NS]);
    assert!(
        !ok && err.contains("403") && err.contains("system:masters"),
        "{err}"
    );
    let push = |node_name: &str| {
        let body = serde_json::json!({
            "node": node_name,
            "streams": [{"source": "test/probe/0", "container": "probe",
                         "lines": [[0, 1_000_000_000i64, 0, "probe line"]]}]
        });
        let path = write(&c, &format!("push-{node_name}.json"), &body.to_string());
        node.run(&[
            "create",
            "--raw",
            "/apis/logs.keel.dev/v1/push",
            "-f",
            &path,
        ])
    };
    let other = push("worker99");
    assert!(
        !other.ok && other.stderr.contains("may only push logs for itself"),
        "{}",
        other.stderr
    );
    let own_push = push(MASTER);
    assert!(
        own_push.ok,
        "a node may push for itself: {}",
        own_push.stderr
    );
    let bad = k.fails(&[
        "get",
        "--raw",
        "/apis/logs.keel.dev/v1/query?since=yesterday",
    ]);
    assert!(bad.contains("\"since\""), "{bad}");
    let bad = k.fails(&["get", "--raw", "/apis/logs.keel.dev/v1/query?limit=lots"]);
    assert!(bad.contains("\"limit\""), "{bad}");
    let bad = k.fails(&["get", "--raw", "/apis/logs.keel.dev/v1/query?podname=x"]);
    assert!(bad.contains("\"podname\""), "{bad}");
    let raw = k.ok(&[
        "get",
        "--raw",
        "/apis/logs.keel.dev/v1/query?namespace=logtest&pod=quiet&container=one",
    ]);
    let v: serde_json::Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(v["kind"], "LogLineList");
    assert_eq!(v["items"][0]["line"], "quiet one");
    assert_eq!(v["items"][0]["node"], MASTER);

    // 5. A deleted pod's logs stay, with the line it wrote while stopping.
    k.ok(&[
        "delete",
        "pod",
        "chatty",
        "-n",
        NS,
        "--wait=true",
        "--timeout=60s",
    ]);
    let after = poll(
        "the deleted pod's last line in the store",
        Duration::from_secs(60),
        || {
            let l = logs.lines(&["-n", NS, "--pod", "chatty", "--no-prefix"]);
            l.iter().any(|l| l == "bye from chatty").then_some(l)
        },
    );
    assert_eq!(after.len(), CHATTY_LINES + 2);
    poll(
        "the retired folder removed once shipped",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(root.join("logship/retired"))
                .map(|d| d.count() == 0)
                .unwrap_or(true)
                .then_some(())
        },
    );

    // 6. SIGKILL the agent in the middle of a stream; after its restart every line is there once.
    let counter = write(&c, "counter.yaml", COUNTER);
    k.ok(&["apply", "-f", &counter]);
    poll(
        "some counter lines shipped",
        Duration::from_secs(120),
        || {
            let n = logs.lines(&["-n", NS, "--pod", "counter"]).len();
            (n >= 500).then_some(())
        },
    );
    c.agent(MASTER).process.kill();
    std::thread::sleep(Duration::from_secs(2)); // the container keeps writing meanwhile
    c.restart_agent(MASTER);
    let counted = poll(
        "all counter lines after the agent restart",
        Duration::from_secs(120),
        || {
            let l = logs.lines(&["-n", NS, "--pod", "counter", "--no-prefix"]);
            (l.len() >= COUNTER_LINES).then_some(l)
        },
    );
    assert_exactly_once(&numbered(&counted, "count"), COUNTER_LINES, "counter lines");

    // 7. Retention: serve again with tiny limits; the oldest lines go by size, then by age.
    restart_control(
        &mut c,
        "size",
        &["--log-max-size", "200Ki", "--log-retention-interval", "1s"],
    );
    let kept = poll("size retention", Duration::from_secs(60), || {
        let l = logs.lines(&["-n", NS, "--pod", "counter", "--no-prefix"]);
        (l.len() < COUNTER_LINES).then_some(l)
    });
    let seen = numbered(&kept, "count");
    let newest = *seen.keys().last().expect("some lines kept");
    assert_eq!(newest, COUNTER_LINES - 1, "the newest line is kept");
    let oldest = *seen.keys().next().expect("some lines kept");
    assert!(oldest > 0, "the oldest lines went");
    assert_eq!(
        seen.len(),
        COUNTER_LINES - oldest,
        "what is kept is contiguous"
    );
    restart_control(
        &mut c,
        "age",
        &["--log-max-age", "2s", "--log-retention-interval", "1s"],
    );
    poll("age retention", Duration::from_secs(60), || {
        logs.lines(&["-n", NS]).is_empty().then_some(())
    });
}

/// Stops the lab's keel-control and serves the same data dir again with `extra` flags.
fn restart_control(c: &mut Cluster, tag: &str, extra: &[&str]) {
    c.control.process.stop();
    let m = c.lab.machine(MASTER);
    let mut cmd = m.ns.command(workspace_bin("keel-control"));
    cmd.args(["serve", "--data-dir"])
        .arg(&c.control.data)
        .args(extra)
        .env("NO_COLOR", "1");
    c.control.process = LabProcess::spawn(cmd, c.lab.path(&format!("master-control-{tag}.log")));
    let k = c.kubectl();
    poll("keel-control back", Duration::from_secs(30), || {
        k.run(&["get", "--raw", "/readyz"]).ok.then_some(())
    });
}
