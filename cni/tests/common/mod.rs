//! Test harness for the root tiers: network namespaces named `kcni-<pid>-<tag>` that are
//! removed on drop, a "host" namespace per test that stands in for the node (bridges, host
//! veths and iptables rules live there, never in the real root namespace), and a runner that
//! execs a plugin inside it exactly as a CNI runtime would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian's containernetworking-plugins installs the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Fails (never skips) when a prerequisite is missing, saying how to install it.
pub fn require_tools() {
    assert!(
        nix_is_root(),
        "these tests need root (network namespaces): run cargo test as root"
    );
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("ping", "iputils-ping"),
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d: PathBuf| d.join(tool).is_file());
        assert!(found, "missing tool {tool}: apt-get install -y {pkg}");
    }
    assert!(
        Path::new(REFERENCE_DIR).join("bridge").is_file(),
        "reference CNI plugins missing in {REFERENCE_DIR}: apt-get install -y containernetworking-plugins"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a command, returning its output (panics only if it cannot be started).
pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace owned by the test; deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!("kcni-{}-{tag}", std::process::id());
        let _ = sh(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Ns { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip netns exec <ns> args...`
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["ip", "netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh(&a)
    }

    /// `ip -n <ns> -j <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["ip", "-n", &self.name, "-j"];
        a.extend_from_slice(args);
        serde_json::from_str(&must(&a)).unwrap_or(Value::Null)
    }

    pub fn has_link(&self, name: &str) -> bool {
        sh(&["ip", "-n", &self.name, "link", "show", name])
            .status
            .success()
    }

    /// Names of every link in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Addresses (CIDR) on `dev`.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", dev]);
        let mut out = Vec::new();
        for l in v.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a["scope"] != "link" {
                    out.push(format!(
                        "{}/{}",
                        a["local"].as_str().unwrap_or(""),
                        a["prefixlen"]
                    ));
                }
            }
        }
        out
    }

    /// The nat table's lines mentioning a CNI chain.
    pub fn cni_nat_rules(&self) -> Vec<String> {
        let o = self.exec(&["iptables", "-t", "nat", "-S"]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("CNI-"))
            .map(str::to_string)
            .collect()
    }

    /// Polls `ping` until it answers or the deadline passes.
    pub fn can_ping(&self, ip: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self
                .exec(&["ping", "-c", "1", "-W", "1", ip])
                .status
                .success()
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A plugin's answer.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
}

impl Reply {
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    pub fn expect_ok(self, what: &str) -> Reply {
        assert!(self.ok, "{what} failed: {} {}", self.stdout, self.stderr);
        self
    }
    pub fn expect_code(self, code: u64, what: &str) -> Reply {
        assert!(!self.ok, "{what} should fail, got {}", self.stdout);
        assert_eq!(self.code(), code, "{what}: wrong code in {}", self.stdout);
        assert!(
            self.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no msg in {}",
            self.stdout
        );
        self
    }
    /// The first address in `ips`, without the prefix.
    pub fn ip(&self, n: usize) -> String {
        let a = self.json["ips"][n]["address"].as_str().unwrap_or_default();
        a.split('/').next().unwrap_or_default().to_string()
    }
}

/// The directory holding our built plugins.
pub fn our_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keel-bridge"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// One test's world: a host namespace and a scratch IPAM directory.
pub struct World {
    pub host: Ns,
    pub data: tempfile::TempDir,
}

impl World {
    pub fn new(tag: &str) -> World {
        require_tools();
        World {
            host: Ns::new(&format!("{tag}-h")),
            data: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn data_dir(&self) -> String {
        self.data.path().display().to_string()
    }

    /// A bridge config: isGateway, keel-host-local on `subnet`, default route; `extra`
    /// keys are merged on top (and into `ipam` when given as `"ipam": {...}`).
    pub fn conf(&self, name: &str, subnet: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "keel-bridge",
            "bridge": "kbr0",
            "isGateway": true,
            "ipam": {
                "type": "keel-host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir(),
            }
        });
        if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if k == "ipam" {
                    if let (Some(ipam), Some(ev)) = (
                        o.get_mut("ipam").and_then(Value::as_object_mut),
                        v.as_object(),
                    ) {
                        for (ik, iv) in ev {
                            ipam.insert(ik.clone(), iv.clone());
                        }
                    }
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        c
    }

    /// Runs `bin` (a path, or a name in our build dir) inside the host namespace.
    pub fn run(&self, bin: &str, cmd: &str, cid: &str, netns: &str, conf: &Value) -> Reply {
        self.run_env(
            bin,
            conf.to_string().as_bytes(),
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
            ],
        )
    }

    /// Runs with exactly these CNI_* variables (plus PATH and CNI_PATH) and raw stdin.
    pub fn run_env(&self, bin: &str, stdin: &[u8], vars: &[(&str, &str)]) -> Reply {
        use std::io::Write;
        let bin_path = if bin.contains('/') {
            PathBuf::from(bin)
        } else {
            our_dir().join(bin)
        };
        let cni_path = format!("{}:{REFERENCE_DIR}", our_dir().display());
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.host.name,
            "env",
            "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]);
        let has_path = vars.iter().any(|(k, _)| *k == "CNI_PATH");
        if !has_path {
            cmd.arg(format!("CNI_PATH={cni_path}"));
        }
        for (k, v) in vars {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(&bin_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin_path.display()));
        if let Some(mut si) = child.stdin.take() {
            let _ = si.write_all(stdin);
        }
        let out = child.wait_with_output().expect("wait for plugin");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Reply {
            ok: out.status.success(),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The config with the ADD result as `prevResult` (what a runtime sends on CHECK/DEL).
    pub fn with_prev(conf: &Value, add: &Reply) -> Value {
        let mut c = conf.clone();
        c["prevResult"] = add.json.clone();
        c
    }

    /// Files in the network's host-local directory that are address reservations.
    pub fn reserved(&self, network: &str) -> Vec<String> {
        let dir = self.data.path().join(network);
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
