//! The namespace lab of the root tests: namespaces `kpnet-<pid>-<tag>-<role>` (removed by Drop
//! guards; those of dead pids removed on start), "node" namespaces on a lab bridge, and the
//! `podnet-lab` example run inside them with `nsenter --net=... --`, one process per call (so
//! every call is a fresh `Network`, like an agent restart). Scratch folders are
//! `/tmp/kpnet-<pid>-*`; namespace mounts in them are unmounted on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const PREFIX: &str = "kpnet-";
pub const LAN: &str = "192.168.77";

/// target/debug (the test binary is target/debug/deps/<test>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

pub fn lab_bin() -> PathBuf {
    let p = target_dir().join("examples/podnet-lab");
    assert!(
        p.exists(),
        "{} is missing: `cargo test -p keel-podnet` builds it (or `cargo build -p keel-podnet --examples`)",
        p.display()
    );
    p
}

/// The folder holding keel-bridge and keel-host-local.
pub fn plugin_dir() -> PathBuf {
    let d = target_dir();
    for p in ["keel-bridge", "keel-host-local"] {
        assert!(
            d.join(p).exists(),
            "{} is missing: build the plugins first with `cargo build -p keel-cni`",
            d.join(p).display()
        );
    }
    d
}

pub fn tool(program: &str, package: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "{program} is missing: apt-get install -y {package}"
    );
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Runs and asserts success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points below /tmp/kpnet-<pid>- of dead pids: unmounted; namespaces of dead pids:
/// deleted.
pub fn remove_stale() {
    let alive = |rest: &str| {
        let pid = rest.split('-').next().unwrap_or_default();
        Path::new("/proc").join(pid).exists()
    };
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut stale: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.strip_prefix("/tmp/kpnet-").is_some_and(|r| !alive(r)))
            .map(str::to_string)
            .collect();
        stale.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in stale {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.strip_prefix(PREFIX).is_some_and(|r| !alive(r)) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

/// A named network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str, role: &str) -> Ns {
        let name = format!("{PREFIX}{}-{tag}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Ns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `nsenter --net=<this> -- program` (same mount namespace, unlike `ip netns exec`).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.path(), program)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn in_netns(path: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={path}")).arg("--").arg(program);
    c
}

/// One node: its namespace, its address on the lab bridge, its podCIDR and its folders.
pub struct Node {
    pub name: String,
    pub ns: Ns,
    pub ip: String,
    pub pod_cidr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Node {
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("netns")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("state/networks/keel")
    }

    /// Reserved addresses in the default network's IPAM folder.
    pub fn reserved_ips(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn veths(&self) -> usize {
        self.ns
            .ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .count()
    }

    /// `podnet-lab <args>` inside this node.
    pub fn lab(&self, args: &[&str]) -> Output {
        run(self.ns.cmd(lab_bin()).args(args))
    }

    pub fn lab_ok(&self, args: &[&str]) -> String {
        ok(self.ns.cmd(lab_bin()).args(args))
    }

    pub fn setup(&self, uid: &str, name: &str) -> Value {
        let cfg = self.config.to_string_lossy().into_owned();
        let out = self.lab_ok(&["setup", &cfg, uid, "default", name]);
        serde_json::from_str(out.trim()).expect("setup prints JSON")
    }

    pub fn teardown(&self, uid: &str) {
        let cfg = self.config.to_string_lossy().into_owned();
        self.lab_ok(&["teardown", &cfg, uid]);
    }

    pub fn attached(&self) -> Vec<String> {
        let cfg = self.config.to_string_lossy().into_owned();
        self.lab_ok(&["attached", &cfg])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Writes this node's config; `extra` overrides keys (e.g. binDirs).
    pub fn write_config(&self, extra: Value) {
        let mut v = json!({
            "confDir": self.dir.join("net.d"),
            "binDirs": [plugin_dir()],
            "stateDir": self.dir.join("state"),
            "netnsDir": self.netns_dir(),
            "podCidr": self.pod_cidr,
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                o.insert(k.clone(), x.clone());
            }
        }
        std::fs::create_dir_all(&self.dir).expect("node dir");
        std::fs::write(&self.config, v.to_string()).expect("write config");
    }

    /// Unmounts every namespace file and the netns folder itself.
    fn unmount_all(&self) {
        if let Err(e) = keel_podnet::release_netns_dir(&self.netns_dir()) {
            eprintln!("lab cleanup: {e}");
        }
    }
}

/// Nodes `n1..nN` on bridge `lan0` (in its own namespace), 192.168.77.1<i>/24, podCIDR
/// 10.244.<i>.0/24; plus an "outside" host at 192.168.77.100 with no route to the pods.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub outside: Ns,
    pub lan: Ns,
}

impl Lab {
    pub fn new(tag: &str, n: usize) -> Lab {
        tool("nsenter", "util-linux");
        tool("nft", "nftables");
        tool("ip", "iproute2");
        remove_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-{tag}-", std::process::id()))
            .tempdir_in("/tmp")
            .expect("tempdir");
        let lan = Ns::new(tag, "lan");
        lan.ip(&["link", "add", "lan0", "type", "bridge"]);
        lan.ip(&["link", "set", "lan0", "up"]);
        let attach = |ns: &Ns, port: &str, addr: &str| {
            lan.ip(&[
                "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns", &ns.name,
            ]);
            lan.ip(&["link", "set", port, "master", "lan0", "up"]);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth1"]);
            ns.ip(&["link", "set", "eth1", "up"]);
        };
        let outside = Ns::new(tag, "out");
        attach(&outside, "out", &format!("{LAN}.100"));
        let mut nodes = Vec::new();
        for i in 1..=n {
            let name = format!("n{i}");
            let ns = Ns::new(tag, &name);
            let ip = format!("{LAN}.{}", 10 + i);
            attach(&ns, &name, &ip);
            let node_dir = dir.path().join(&name);
            let node = Node {
                config: node_dir.join("config.json"),
                dir: node_dir,
                name,
                ns,
                ip,
                pod_cidr: format!("10.244.{i}.0/24"),
            };
            node.write_config(json!({}));
            nodes.push(node);
        }
        Lab {
            dir,
            nodes,
            outside,
            lan,
        }
    }

    /// Node objects as the API server would hold them.
    pub fn node_objects(&self, which: &[usize]) -> Value {
        Value::Array(
            which
                .iter()
                .map(|&i| {
                    let n = &self.nodes[i];
                    json!({
                        "metadata": {"name": n.name},
                        "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]},
                        "status": {"addresses": [{"type": "InternalIP", "address": n.ip}]}
                    })
                })
                .collect(),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.unmount_all();
        }
    }
}

/// A `podnet-lab listen` running in a namespace; `peer()` waits for its one connection.
pub struct Listener {
    child: Child,
}

impl Listener {
    pub fn start(netns: &str, addr: &str) -> Listener {
        use std::io::BufRead;
        let mut child = in_netns(netns, lab_bin())
            .args(["listen", addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start listener");
        let mut line = String::new();
        let stdout = child.stdout.as_mut().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listener output");
        assert_eq!(line.trim(), "listening", "listener on {addr} did not start");
        Listener { child }
    }

    /// The address of the peer that connected (panics if none within the listener's 20 s).
    pub fn peer(mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        let _ = self.child.wait();
        s.trim().to_string()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `podnet-lab connect` from namespace file `netns`: Some(local address) on success.
pub fn connect(netns: &str, addr: &str) -> Option<String> {
    let out = run(in_netns(netns, lab_bin()).args(["connect", addr]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
