//! Shared by the stats root tests: real cgroups (`/keel-stats-test-<pid>/...`, every v1
//! controller the collector reads, or the v2 tree), busybox processes moved into them, network
//! namespaces, all removed on drop.
#![allow(dead_code)]

use keel_agent::stats::cgroup::Hierarchy;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];

pub struct Lab {
    pub hierarchy: Hierarchy,
    pub top: String,
    cgroups: Vec<String>,
    children: Vec<Child>,
    netns: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test creates cgroups and network namespaces: run it as root"
        );
        let top = format!("/keel-stats-test-{}", std::process::id());
        let mut lab = Lab {
            hierarchy: Hierarchy::detect(std::path::Path::new("/sys/fs/cgroup")),
            top: top.clone(),
            cgroups: Vec::new(),
            children: Vec::new(),
            netns: Vec::new(),
        };
        lab.mkcg(&top);
        lab
    }

    pub fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V2 { .. } => vec![self.hierarchy.dir("", cgroup)],
            Hierarchy::V1 { .. } => CONTROLLERS
                .iter()
                .map(|c| self.hierarchy.dir(c, cgroup))
                .collect(),
        }
    }

    /// Creates `cgroup` (parents first); on v2 enables cpu, memory and pids for its children.
    pub fn mkcg(&mut self, cgroup: &str) {
        for d in self.dirs(cgroup) {
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            if matches!(self.hierarchy, Hierarchy::V2 { .. })
                && let Some(parent) = d.parent()
            {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory +pids");
            }
        }
        self.cgroups.push(cgroup.to_string());
    }

    pub fn netns(&mut self, name: &str) -> String {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "ip netns add {name} failed (apt-get install -y iproute2)"
        );
        self.netns.push(name.to_string());
        format!("/run/netns/{name}")
    }

    /// Starts `script` under busybox sh, moved into `cgroup` (every controller) before it
    /// execs, inside network namespace file `netns` when given.
    pub fn spawn(&mut self, cgroup: &str, netns: Option<&str>, script: &str) -> u32 {
        let procs: Vec<String> = self
            .dirs(cgroup)
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect();
        let full = format!(
            "for f in {}; do echo $$ > $f || exit 9; done; {script}",
            procs.join(" ")
        );
        let mut cmd = Command::new("nsenter");
        if let Some(ns) = netns {
            cmd.arg(format!("--net={ns}"));
        }
        let child = cmd
            .args(["--", "busybox", "sh", "-c", &full])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn busybox (apt-get install -y busybox-static util-linux)");
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let mut all = self.cgroups.clone();
        all.sort_by_key(|c| std::cmp::Reverse(c.len()));
        for cg in all {
            for d in self.dirs(&cg) {
                // A killed task leaves its cgroup a moment later: retry briefly.
                let deadline = Instant::now() + Duration::from_secs(5);
                while d.exists() && std::fs::remove_dir(&d).is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Writes `<root>/pods/<uid>/record.json` for a pod whose containers are (name, cgroup).
pub fn record(
    root: &std::path::Path,
    ns: &str,
    name: &str,
    uid: &str,
    pod_cg: &str,
    containers: &[(&str, &str)],
) {
    let dir = root.join("pods").join(uid);
    std::fs::create_dir_all(dir.join("volumes/scratch")).expect("mkdir");
    std::fs::write(dir.join("volumes/scratch/data"), vec![1u8; 256 * 1024]).expect("write");
    let cs: Vec<serde_json::Value> = containers
        .iter()
        .enumerate()
        .map(|(i, (cname, cg))| {
            let log_dir = dir.join("logs").join(cname);
            std::fs::create_dir_all(&log_dir).expect("mkdir logs");
            std::fs::write(log_dir.join("0.log"), "hello\n").expect("write log");
            serde_json::json!({
                "name": cname, "id": format!("{:064x}", i + 1), "restartCount": 0,
                "image": "docker.io/library/busybox:latest", "logPath": log_dir.join("0.log"),
                "cgroup": cg, "stateDir": "/nonexistent", "createdAt": "2026-11-27T08:00:00Z",
            })
        })
        .collect();
    let rec = serde_json::json!({
        "namespace": ns, "name": name, "uid": uid, "cgroup": pod_cg, "containers": cs,
    });
    std::fs::write(dir.join("record.json"), rec.to_string()).expect("write record");
}
