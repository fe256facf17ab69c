//! The reference walkthrough's cluster in a namespace lab: a `registry` machine running
//! Debian's docker-registry with the test images, a control-plane machine `master` running
//! `keel-control serve` and an agent joined with `--control-plane`, and workers (`worker01`,
//! `worker02`) joined with the printed token, every agent given a `registries.yaml` that
//! mirrors `docker.io` and `hub.test.com` to the lab registry. `Cluster::start` returns once
//! `kubectl get nodes` shows every node Ready. When a test panics the cluster prints the
//! nodes, pods, events and each agent's log tail before it tears down.

use crate::kubectl::{Kubectl, Output};
use crate::lab::{Lab, LabControl, LabProcess, agent_command, netns_command};
use crate::registry::Registry;
use crate::teardown;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const REGISTRY_OCTET: u8 = 5;
pub const MASTER: &str = "master";
pub const MASTER_OCTET: u8 = 10;
/// The lab agents' hard eviction thresholds unless a test passes its own: kubelet's memory
/// default and no disk thresholds, as kind configures its nodes. The lab nodes share this
/// machine's disk, which is often over 90% full on a build machine; kubelet's
/// `nodefs.available<10%` would then taint every lab node and evict its pods.
pub const LAB_EVICTION_HARD: &str = "--eviction-hard=memory.available<100Mi";

/// What to start.
pub struct ClusterSpec {
    /// Worker machines: (name, last octet of 192.168.56.x).
    pub workers: Vec<(String, u8)>,
    /// `nodeMonitorGracePeriodSeconds`: lease silence before NotReady (kube's default 40 s;
    /// leases are renewed every 10 s).
    pub grace_seconds: u64,
    /// `defaultTolerationSeconds`: how long pods stay on a NotReady node (kube's default 300 s).
    pub toleration_seconds: i64,
    /// Join the master's agent with `--control-plane` (label and NoSchedule taint); off for a
    /// one-node cluster whose pods run on the master.
    pub control_plane_role: bool,
    /// Extra `keel-agent join` flags for every node.
    pub agent_flags: Vec<String>,
}

impl ClusterSpec {
    /// One machine: the master runs the control plane and, untainted, every pod.
    pub fn one_node() -> ClusterSpec {
        ClusterSpec {
            workers: Vec::new(),
            control_plane_role: false,
            ..ClusterSpec::default()
        }
    }
}

impl Default for ClusterSpec {
    /// The walkthrough: two workers, NotReady after 20 s, evicted 10 s later.
    fn default() -> ClusterSpec {
        ClusterSpec {
            workers: vec![("worker01".into(), 11), ("worker02".into(), 12)],
            grace_seconds: 20,
            toleration_seconds: 10,
            control_plane_role: true,
            agent_flags: Vec::new(),
        }
    }
}

/// One node's agent.
pub struct Agent {
    pub name: String,
    pub root: PathBuf,
    pub process: LabProcess,
    /// Logs of earlier processes of this agent (before a restart), oldest first.
    pub old_logs: Vec<PathBuf>,
}

pub struct Cluster {
    pub agents: Vec<Agent>,
    pub control: LabControl,
    pub registry: Registry,
    /// The `registries.yaml` every agent was joined with.
    pub registry_config: PathBuf,
    pub lab: Lab,
    kept: bool,
}

impl Cluster {
    /// A new lab (namespaces `keeljoin-<pid>-<tag>-*`) with the cluster of `spec`.
    pub fn start(tag: &str, spec: ClusterSpec) -> Cluster {
        Cluster::start_in(Lab::new(tag), spec)
    }

    /// The node names of `spec`: the master, then the workers.
    pub fn node_names(spec: &ClusterSpec) -> Vec<String> {
        let mut v = vec![MASTER.to_string()];
        v.extend(spec.workers.iter().map(|(n, _)| n.clone()));
        v
    }

    /// The cluster of `spec` in `lab` (which has no machines yet).
    pub fn start_in(mut lab: Lab, spec: ClusterSpec) -> Cluster {
        lab.add_machine("registry", REGISTRY_OCTET);
        lab.add_machine(MASTER, MASTER_OCTET);
        for (name, octet) in &spec.workers {
            lab.add_machine(name, *octet);
        }
        let registry = Registry::start(&lab, "registry");
        registry.push_test_images();
        let registry_config = lab.path("registries.yaml");
        std::fs::write(&registry_config, registry.registries_yaml()).expect("registries.yaml");
        let (grace, toleration) = (spec.grace_seconds, spec.toleration_seconds);
        let control = LabControl::start(&lab, MASTER, |cfg| {
            cfg["nodeMonitorGracePeriodSeconds"] = grace.into();
            cfg["defaultTolerationSeconds"] = toleration.into();
        });
        let mut cluster = Cluster {
            agents: Vec::new(),
            control,
            registry,
            registry_config,
            lab,
            kept: false,
        };
        for name in Cluster::node_names(&spec) {
            let mut extra: Vec<String> = spec.agent_flags.clone();
            if name == MASTER && spec.control_plane_role {
                extra.push("--control-plane".into());
            }
            cluster.join(&name, &extra);
        }
        cluster.wait_all_ready(Duration::from_secs(120));
        eprintln!(
            "cluster up in {}: {:?}",
            cluster.lab.dir().display(),
            Cluster::node_names(&spec)
        );
        cluster
    }

    /// `keel-agent join` (the line `init` printed) in machine `name` as node `name`.
    fn join(&mut self, name: &str, extra: &[String]) {
        let root = self.lab.path(&format!("{name}-agent"));
        let mut args: Vec<String> = self
            .control
            .join_command
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect();
        args.extend(["--node-name".into(), name.into(), "--root-dir".into()]);
        args.push(root.to_string_lossy().into_owned());
        args.push("--registry-config".into());
        args.push(self.registry_config.to_string_lossy().into_owned());
        if !extra.iter().any(|f| f.starts_with("--eviction-hard")) {
            args.push(LAB_EVICTION_HARD.into());
        }
        args.extend(extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.lab.track_node(name, &root);
        let process = LabProcess::spawn(
            agent_command(self.lab.machine(name), &refs),
            self.lab.path(&format!("{name}-agent.log")),
        );
        self.agents.push(Agent {
            name: name.into(),
            root,
            process,
            old_logs: Vec::new(),
        });
    }

    /// Polls until every agent's node is Ready; fails early when an agent exits.
    pub fn wait_all_ready(&mut self, timeout: Duration) {
        let timeout = crate::scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            for a in &mut self.agents {
                assert!(
                    a.process.is_running(),
                    "the agent of {} exited:\n{}",
                    a.name,
                    a.process.log_text()
                );
            }
            let names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
            if names
                .iter()
                .all(|n| self.node_ready(n).as_deref() == Some("True"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for nodes {names:?} to be Ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node's Ready condition status (`True`, `False`, `Unknown`), if it has one.
    pub fn node_ready(&self, node: &str) -> Option<String> {
        let out = self.kubectl().run(&["get", "node", node, "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["status"].as_str())
            .map(str::to_string)
    }

    /// The agent's `/stats/summary` or `/metrics/...` on `node`, fetched from the master with
    /// the API server's kubelet client certificate (the agent refuses every other identity).
    /// Tries again for up to 30 s (scaled: the VM without KVM on a loaded host is slow to
    /// answer); None if it never answered.
    pub fn agent_get(&self, node: &str, path: &str) -> Option<String> {
        let n: Value =
            serde_json::from_str(&self.kubectl().ok(&["get", "node", node, "-o", "json"]))
                .expect("node json");
        let ip = n["status"]["addresses"]
            .as_array()?
            .iter()
            .find(|a| a["type"] == "InternalIP")?["address"]
            .as_str()?
            .to_string();
        let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap_or(10250);
        let file = |f: &str| self.control.data.join(f).to_string_lossy().into_owned();
        let url = format!("https://{ip}:{port}{path}");
        let each = crate::scaled(Duration::from_secs(10)).as_secs().to_string();
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(30));
        loop {
            let out = self.run_in(
                MASTER,
                "curl",
                &[
                    "-sS",
                    "-f",
                    "-m",
                    &each,
                    "--cacert",
                    &file("ca.crt"),
                    "--cert",
                    &file("apiserver-kubelet-client.crt"),
                    "--key",
                    &file("apiserver-kubelet-client.key"),
                    &url,
                ],
            );
            if out.ok {
                return Some(out.stdout);
            }
            eprintln!("curl {url}: {}", out.stderr.trim());
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The real kubectl (the version-picking dispatcher) as admin, in the master's namespace.
    pub fn kubectl(&self) -> Kubectl {
        self.control.kubectl()
    }

    /// Runs `program args` inside machine `machine`'s network namespace.
    pub fn run_in(&self, machine: &str, program: &str, args: &[&str]) -> Output {
        let out = netns_command(&self.lab.machine(machine).ns.name, program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {machine}: {e}"));
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name} in the cluster"))
    }

    /// Stops node `name`'s agent (SIGTERM, then SIGKILL after 10 s).
    pub fn stop_agent(&mut self, name: &str) {
        self.agent(name).process.stop();
    }

    /// Starts node `name`'s agent again from its saved state (`keel-agent run`), stopping
    /// the running one first (SIGTERM; use `stop_agent` before to test other ways of dying).
    pub fn restart_agent(&mut self, name: &str) {
        self.agent(name).process.stop();
        let n = self.agent(name).old_logs.len() + 1;
        let log = self.lab.path(&format!("{name}-agent-run{n}.log"));
        let root = self.agent(name).root.to_string_lossy().into_owned();
        let config = self.registry_config.to_string_lossy().into_owned();
        let cmd = agent_command(
            self.lab.machine(name),
            &["run", "--root-dir", &root, "--registry-config", &config],
        );
        let process = LabProcess::spawn(cmd, log);
        let a = self.agent(name);
        let old = std::mem::replace(&mut a.process, process);
        a.old_logs.push(old.log.clone());
    }

    /// Cuts worker `name` off: its agent stops and its link to the lab bridge goes down.
    pub fn cut_off(&mut self, name: &str) {
        self.stop_agent(name);
        self.lab.set_link(name, false);
    }

    /// What a failing test needs to see: nodes, pods, events, and every log's tail.
    pub fn diagnostics(&self) -> String {
        let k = self.kubectl();
        let mut s = String::new();
        for args in [
            &["get", "nodes", "-o", "wide"][..],
            &["get", "pods", "-A", "-o", "wide"],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ] {
            let out = k.run(args);
            s += &format!(
                "$ kubectl {}\n{}{}\n",
                args.join(" "),
                out.stdout,
                out.stderr
            );
        }
        let mut logs: Vec<(String, PathBuf)> = vec![
            ("keel-control".into(), self.control.process.log.clone()),
            ("docker-registry".into(), self.registry.process.log.clone()),
        ];
        for a in &self.agents {
            for old in &a.old_logs {
                logs.push((format!("agent {} (earlier run)", a.name), old.clone()));
            }
            logs.push((format!("agent {}", a.name), a.process.log.clone()));
        }
        // Container logs as the agents wrote them (readable even when `kubectl logs` is not).
        for a in &self.agents {
            let mut files = Vec::new();
            log_files(&a.root.join("pods"), &mut files);
            for f in files {
                logs.push((format!("container log on {}", a.name), f));
            }
        }
        for (what, path) in logs {
            s += &format!(
                "--- {what}: last lines of {}\n{}\n",
                path.display(),
                tail(&path, 40)
            );
        }
        s
    }

    /// Leaves the lab running when this value drops (for `scripts/lab.sh --keep`); returns
    /// the pids of the processes left running.
    pub fn keep(&mut self) -> Vec<u32> {
        self.kept = true;
        self.lab.keep();
        let mut pids: Vec<u32> = self
            .agents
            .iter_mut()
            .filter_map(|a| a.process.detach())
            .collect();
        pids.extend(self.control.process.detach());
        pids.extend(self.registry.process.detach());
        pids
    }
}

/// Files named `*.log` under `dir`, recursively.
fn log_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => log_files(&p, out),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "log") => out.push(p),
            _ => {}
        }
    }
}

/// The last `n` lines of a file.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "==== cluster state at the failure ====\n{}",
                self.diagnostics()
            );
        }
        for a in &mut self.agents {
            a.process.stop();
        }
        // Supervisors and containers outlive their agent: the containers go first (pod by pod,
        // with their netns mounts and cgroups), then whatever else runs in the lab's
        // namespaces, then the mounts under the lab folder, before the namespaces go.
        for a in &self.agents {
            teardown::remove_node_pods(&a.name, &a.root);
        }
        self.lab.sweep();
    }
}
