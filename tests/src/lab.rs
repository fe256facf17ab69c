//! A lab of network namespaces on one bridge, like a Vagrant private network
//! (192.168.56.0/24): the bridge lives in its own lab namespace (never in the host's), every
//! node is a namespace with `eth1` on that bridge, and the real `keel-control` and
//! `keel-agent` binaries run inside them through `nsenter --net=/run/netns/<ns> --`. Not
//! `ip netns exec`: that also unshares a private mount namespace, so the pod netns bind mounts
//! and rootfs overlays an agent makes would vanish with it and a restarted agent could not find
//! them. Every namespace is named `keeljoin-<pid>-<lab>-<node>` (or `<prefix>-<node>` for a
//! named lab such as `scripts/lab.sh`'s); on drop the lab kills every process left in its
//! namespaces and in the pod namespaces mounted under its folder, unmounts what is mounted
//! there and deletes the namespaces (`teardown`). Namespaces left by a crashed earlier run
//! (whose pid is gone) are removed on start.

use crate::kubectl::Kubectl;
use crate::{poll, teardown, workspace_bin};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUITE_PREFIX: &str = "keeljoin-";
pub const SUBNET: &str = "192.168.56";
pub const API_PORT: u16 = 6443;
/// The file marking a named lab's folder as the lab's (so removing it is safe).
const LAB_MARKER: &str = ".keel-lab";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e}; install iproute2", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {} (the lab needs root and network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names `ip netns list` prints.
fn netns_names() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Removes `keeljoin-<pid>-...` namespaces whose pid is no longer alive, with whatever still
/// runs in them.
fn remove_stale_namespaces() {
    for name in netns_names() {
        let Some(rest) = name.strip_prefix(SUITE_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            teardown::kill_processes(&[netns_path(&name)], Path::new("/nonexistent"));
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Keeps the namespace when this guard drops.
    pub fn forget(&mut self) {
        self.name.clear();
    }

    /// The namespace file `ip netns add` bind-mounted.
    pub fn path(&self) -> PathBuf {
        netns_path(&self.name)
    }

    /// `nsenter --net=/run/netns/<ns> -- <program>`: only the network namespace changes, the
    /// program shares the host's mounts (see the module header).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns_command(&self.name, program)
    }
}

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// `nsenter --net=/run/netns/<name> -- <program>`; nsenter execs the program, so a spawned
/// child's pid is the program's.
pub fn netns_command(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    let mut net = std::ffi::OsString::from("--net=");
    net.push(netns_path(name));
    c.arg(net).arg("--").arg(program);
    c
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A process started in the lab, killed on drop; stdout+stderr go to `log`.
pub struct LabProcess {
    pub log: PathBuf,
    child: Option<Child>,
}

impl LabProcess {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> LabProcess {
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdout(f)
            .stderr(f2)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        LabProcess {
            log,
            child: Some(child),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Lets the process outlive this guard (a kept lab); returns its pid.
    pub fn detach(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL at once (a crash), then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // nsenter execs the program, so the child's pid is the program's.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One machine of the lab.
pub struct Machine {
    pub name: String,
    pub ip: String,
    pub ns: Netns,
}

/// The bridge namespace plus the machines; processes must be dropped before the lab.
pub struct Lab {
    dir: PathBuf,
    pub id: String,
    machines: Vec<Machine>,
    bridge: Netns,
    nat_bridge: bool,
    kept: bool,
    /// (node name, agent root dir) of every agent started here, for `teardown::remove_node_pods`.
    nodes: std::cell::RefCell<Vec<(String, PathBuf)>>,
}

impl Lab {
    /// A lab named `tag` (a few lowercase letters) with its bridge `br0`, in a temporary folder.
    pub fn new(tag: &str) -> Lab {
        remove_stale_namespaces();
        let id = format!("{SUITE_PREFIX}{}-{tag}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir").keep();
        Lab::create(id, dir)
    }

    /// A lab whose namespaces are `<prefix>-<machine>` and whose state lives in `dir`, for a
    /// lab that outlives its creator (`scripts/lab.sh --keep`). An earlier lab of that name is
    /// removed first (`Lab::remove_named`).
    pub fn named(prefix: &str, dir: &Path, nodes: &[&str]) -> Lab {
        Lab::remove_named(prefix, dir, nodes);
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("creating the lab folder {}: {e}", dir.display()));
        std::fs::write(dir.join(LAB_MARKER), prefix).expect("lab marker file");
        Lab::create(prefix.to_string(), dir.to_path_buf())
    }

    fn create(id: String, dir: PathBuf) -> Lab {
        let bridge = Netns::create(format!("{id}-br"));
        ip(&["-n", &bridge.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge.name, "link", "set", "br0", "up"]);
        Lab {
            dir,
            id,
            machines: Vec::new(),
            bridge,
            nat_bridge: false,
            kept: false,
            nodes: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Removes what a named lab left: its processes, mounts, the cgroups of `nodes`, its
    /// namespaces and its folder.
    pub fn remove_named(prefix: &str, dir: &Path, nodes: &[&str]) {
        // Only a folder a lab made (it holds the marker) is swept and removed; anything else
        // that is not empty is refused before anything is touched.
        assert!(
            dir.join(LAB_MARKER).exists()
                || std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()),
            "{} is not empty and was not made by a lab (no {LAB_MARKER} in it): choose another folder",
            dir.display()
        );
        let names: Vec<String> = netns_names()
            .into_iter()
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .collect();
        let paths: Vec<PathBuf> = names.iter().map(|n| netns_path(n)).collect();
        teardown::kill_processes(&paths, dir);
        teardown::unmount_under(dir);
        for node in nodes {
            teardown::remove_node_pods(node, &dir.join(format!("{node}-agent")));
        }
        for n in &names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The lab's folder (agent root dirs, logs, registry storage).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves the namespaces, processes and folder in place when the lab is dropped.
    pub fn keep(&mut self) {
        self.kept = true;
    }

    /// Records that node `name`'s agent keeps its state in `root`, so dropping the lab removes
    /// that node's pods (processes, netns mounts, cgroups) too.
    pub fn track_node(&self, name: &str, root: &Path) {
        let mut nodes = self.nodes.borrow_mut();
        if !nodes.iter().any(|(n, r)| n == name && r == root) {
            nodes.push((name.to_string(), root.to_path_buf()));
        }
    }

    /// Kills every process left in the lab's namespaces and in the pod namespaces mounted
    /// under its folder, then unmounts everything under the folder.
    pub fn sweep(&self) {
        let mut paths: Vec<PathBuf> = self.machines.iter().map(|m| m.ns.path()).collect();
        paths.push(self.bridge.path());
        teardown::kill_processes(&paths, &self.dir);
        teardown::unmount_under(&self.dir);
    }

    /// Sets machine `name`'s `eth1` (its link to the bridge) down or up, as when a cable is
    /// pulled: the bridge side goes down too, so nothing reaches the machine.
    pub fn set_link(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        let m = self.machine(name);
        ip(&["-n", &m.ns.name, "link", "set", "eth1", state]);
        let port = format!("v-{name}");
        ip(&["-n", &self.bridge.name, "link", "set", &port, state]);
    }

    pub fn machines(&self) -> impl Iterator<Item = &Machine> {
        self.machines.iter()
    }

    /// Adds machine `name` at 192.168.56.<octet> on the bridge (interface `eth1`).
    pub fn add_machine(&mut self, name: &str, octet: u8) -> &Machine {
        let ns = Netns::create(format!("{}-{name}", self.id));
        let port = format!("v-{name}");
        assert!(
            port.len() <= 15,
            "machine name {name} is too long for a veth name"
        );
        ip(&[
            "-n",
            &ns.name,
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.bridge.name,
        ]);
        ip(&[
            "-n",
            &self.bridge.name,
            "link",
            "set",
            &port,
            "master",
            "br0",
        ]);
        ip(&["-n", &self.bridge.name, "link", "set", &port, "up"]);
        let addr = format!("{SUBNET}.{octet}");
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth1",
        ]);
        ip(&["-n", &ns.name, "link", "set", "eth1", "up"]);
        self.machines.push(Machine {
            name: name.into(),
            ip: addr,
            ns,
        });
        self.machines.last().expect("just pushed")
    }

    /// Gives machine `name` a second interface `eth0` with 10.0.2.15/24 and the default route
    /// via 10.0.2.2, like VirtualBox's NAT adapter: the same address on every machine.
    pub fn add_nat(&mut self, name: &str) {
        let br = &self.bridge.name;
        if !self.nat_bridge {
            ip(&["-n", br, "link", "add", "brnat", "type", "bridge"]);
            ip(&["-n", br, "link", "set", "brnat", "up"]);
            self.nat_bridge = true;
        }
        let ns = self.machine(name).ns.name.clone();
        let port = format!("n-{name}");
        assert!(
            port.len() <= 15,
            "machine name {name} is too long for a veth name"
        );
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", br,
        ]);
        ip(&["-n", br, "link", "set", &port, "master", "brnat"]);
        ip(&["-n", br, "link", "set", &port, "up"]);
        ip(&["-n", &ns, "addr", "add", "10.0.2.15/24", "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n", &ns, "route", "add", "default", "via", "10.0.2.2", "dev", "eth0",
        ]);
    }

    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name} in the lab"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kept {
            for m in &mut self.machines {
                m.ns.forget();
            }
            self.bridge.forget();
            return;
        }
        for (node, root) in self.nodes.borrow().iter() {
            teardown::remove_node_pods(node, root);
        }
        self.sweep();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces go when the fields drop.
    }
}

/// A control plane initialised and served inside a lab machine.
pub struct LabControl {
    pub data: PathBuf,
    pub join_command: String,
    pub server: String,
    pub ns: String,
    pub process: LabProcess,
}

impl LabControl {
    /// `keel-control init` (advertising the machine's address on port 6443), lets `edit`
    /// change config.json, then `serve`, waiting until `/readyz` answers through kubectl.
    pub fn start(lab: &Lab, machine: &str, edit: impl FnOnce(&mut Value)) -> LabControl {
        let m = lab.machine(machine);
        let data = lab.path(&format!("{machine}-control"));
        let server = format!("{}:{API_PORT}", m.ip);
        let out =
            m.ns.command(workspace_bin("keel-control"))
                .args(["init", "--data-dir"])
                .arg(&data)
                // All addresses of the machine's namespace, as kubeadm does: keel-control's
                // in-process controllers reach the API on 127.0.0.1.
                .args([
                    "--advertise-address",
                    &m.ip,
                    "--listen",
                    &format!("0.0.0.0:{API_PORT}"),
                ])
                .output()
                .expect("run keel-control init");
        assert!(
            out.status.success(),
            "keel-control init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let join_command = stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("keel-agent join"))
            .unwrap_or_else(|| panic!("init prints the join command:\n{stdout}"))
            .to_string();
        let cfg_path = data.join("config.json");
        let mut cfg: Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("config.json"))
                .expect("config json");
        edit(&mut cfg);
        std::fs::write(&cfg_path, cfg.to_string()).expect("write config.json");
        let mut cmd = m.ns.command(workspace_bin("keel-control"));
        cmd.args(["serve", "--data-dir"])
            .arg(&data)
            .env("NO_COLOR", "1");
        let process = LabProcess::spawn(cmd, lab.path(&format!("{machine}-control.log")));
        let cp = LabControl {
            data,
            join_command,
            server,
            ns: m.ns.name.clone(),
            process,
        };
        let k = cp.kubectl();
        poll(
            "keel-control in the lab to answer /readyz",
            Duration::from_secs(30),
            || k.run(&["get", "--raw", "/readyz"]).ok.then_some(()),
        );
        cp
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data.join("admin.kubeconfig")
    }

    /// kubectl as admin, run inside the control plane's namespace.
    pub fn kubectl(&self) -> NsKubectl {
        Kubectl::in_netns("", &self.admin_kubeconfig(), &self.ns)
    }

    /// The `--token` and `--discovery-token-ca-cert-hash` values of the join command.
    pub fn token_and_hash(&self) -> (String, String) {
        let words: Vec<&str> = self.join_command.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .unwrap_or_else(|| panic!("{flag} in {}", self.join_command))
                .to_string()
        };
        (after("--token"), after("--discovery-token-ca-cert-hash"))
    }
}

/// The real kubectl, run inside a lab namespace (`Kubectl::in_netns`).
pub type NsKubectl = Kubectl;

/// A `keel-agent` command inside machine `m` (`join ...` or `run ...`).
pub fn agent_command(m: &Machine, args: &[&str]) -> Command {
    let mut c = m.ns.command(workspace_bin("keel-agent"));
    // Plain logs in the files tests print (tracing-subscriber honours NO_COLOR).
    c.args(args).env("NO_COLOR", "1");
    c
}

/// Runs a `keel-agent join` that must fail within `timeout`; returns its stderr.
pub fn join_fails(m: &Machine, args: &[&str], timeout: Duration) -> String {
    fails_within(agent_command(m, args), timeout)
}

/// Runs `cmd`, which must exit unsuccessfully within `timeout`; returns its stderr.
pub fn fails_within(mut cmd: Command, timeout: Duration) -> String {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} did not fail within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        !out.status.success(),
        "{what} succeeded but should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line starting with `error:` (the one-line failure message).
pub fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string()
}

/// `PRETTY_NAME` of this host's /etc/os-release and its kernel release (`uname -r`): what
/// `-o wide` must show for every lab node, since namespaces share the kernel and files.
pub fn host_os_and_kernel() -> (String, String) {
    let os = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    let pretty = os
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .expect("PRETTY_NAME")
        .trim_matches('"')
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_string();
    (pretty, kernel)
}
