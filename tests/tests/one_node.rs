//! The walkthrough on one machine (root): the control plane and an untainted agent in one lab
//! namespace, the lab registry beside it. A pod with limits (Burstable) runs, serves its page,
//! and its pod cgroup (`keel/<node>/.../pod<uid>`) carries the limits: `memory.max` and `cpu.max` on
//! cgroup v2 (scripts/test.d/agent-vm.sh runs this test inside a cgroup v2 VM), the memory and
//! cpu controllers' files on this host's v1 hierarchies.

use keel_tests::cluster::{Cluster, ClusterSpec, MASTER};
use keel_tests::kubectl::Kubectl;
use keel_tests::poll;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn pod(k: &Kubectl, name: &str) -> Option<Value> {
    let out = k.run(&["get", "pod", name, "-o", "json"]);
    out.ok
        .then(|| serde_json::from_str(&out.stdout).ok())
        .flatten()
}

/// The folder named `pod<uid>` (cgroupfs driver) or `pod<uid with _>` (systemd driver) under
/// `top`.
fn find_pod_cgroup(top: &Path, uid: &str) -> Option<PathBuf> {
    let names = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            if names.iter().any(|want| n.ends_with(want.as_str())) {
                return Some(e.path());
            }
            stack.push(e.path());
        }
    }
    None
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `files` of `dir` and of every folder below it, one line each (for failure messages).
fn tree(dir: &Path, files: &[&str]) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let vals: Vec<String> = files
            .iter()
            .map(|f| {
                let v = std::fs::read_to_string(d.join(f)).unwrap_or_else(|_| "-".into());
                format!("{f}={}", v.trim())
            })
            .collect();
        out += &format!("{}: {}\n", d.display(), vals.join(" "));
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Asserts that `file` in `dir` holds `want`, showing the whole pod subtree otherwise.
fn expect(dir: &Path, file: &str, want: &str, shown: &[&str]) {
    let got = read(&dir.join(file));
    assert_eq!(
        got,
        want,
        "{file} of the pod cgroup; the pod's cgroups:\n{}",
        tree(dir, shown)
    );
}

fn is_cgroup2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

#[test]
fn one_node_pod_runs_with_its_limits_in_the_pod_cgroup() {
    let c = Cluster::start("one", ClusterSpec::one_node());
    let k = c.kubectl();
    eprintln!("{}", k.ok(&["get", "nodes", "-o", "wide"]));
    let manifest = c.lab.path("limited.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "limited"},
            "spec": {"containers": [{
                "name": "web", "image": "nginx:1.14", "ports": [{"containerPort": 80}],
                "resources": {"requests": {"cpu": "250m", "memory": "32Mi"},
                              "limits": {"cpu": "500m", "memory": "64Mi"}}
            }]}
        })
        .to_string(),
    )
    .expect("manifest");
    k.ok(&["apply", "-f", &manifest.to_string_lossy()]);
    let p = poll(
        "pod limited to be Running",
        Duration::from_secs(120),
        || {
            pod(&k, "limited").filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["podIP"]
                        .as_str()
                        .is_some_and(|ip| !ip.is_empty())
            })
        },
    );
    eprintln!("{}", k.ok(&["get", "pods", "-o", "wide"]));
    assert_eq!(p["spec"]["nodeName"], MASTER);
    // Burstable, not Guaranteed: kubelet gives Guaranteed containers oom_score_adj -997, which
    // needs CAP_SYS_RESOURCE, and this CI host's bounding set lacks it.
    assert_eq!(p["status"]["qosClass"], "Burstable", "{p}");
    let url = format!(
        "http://{}/",
        p["status"]["podIP"].as_str().unwrap_or_default()
    );
    poll("the pod's page", Duration::from_secs(30), || {
        let out = c.run_in(MASTER, "curl", &["-s", "-m", "5", &url]);
        out.stdout.contains("Welcome to nginx!").then_some(())
    });

    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    if is_cgroup2() {
        let top = Path::new(CGROUP_ROOT).join("keel").join(MASTER);
        let dir = find_pod_cgroup(&top, &uid)
            .unwrap_or_else(|| panic!("no pod{uid} cgroup under {}", top.display()));
        eprintln!("pod cgroup (v2): {}", dir.display());
        let shown = ["memory.max", "cpu.max"];
        expect(&dir, "memory.max", &(64u64 << 20).to_string(), &shown);
        expect(&dir, "cpu.max", "50000 100000", &shown);
    } else {
        let mem_top = Path::new(CGROUP_ROOT).join("memory/keel").join(MASTER);
        let mem = find_pod_cgroup(&mem_top, &uid)
            .unwrap_or_else(|| panic!("no pod{uid} cgroup under {}", mem_top.display()));
        eprintln!("pod cgroup (v1 memory): {}", mem.display());
        let limit = (64u64 << 20).to_string();
        expect(
            &mem,
            "memory.limit_in_bytes",
            &limit,
            &["memory.limit_in_bytes"],
        );
        let cpu_top = Path::new(CGROUP_ROOT).join("cpu/keel").join(MASTER);
        let cpu = find_pod_cgroup(&cpu_top, &uid)
            .unwrap_or_else(|| panic!("no pod{uid} cgroup under {}", cpu_top.display()));
        let shown = ["cpu.cfs_quota_us", "cpu.cfs_period_us"];
        expect(&cpu, "cpu.cfs_quota_us", "50000", &shown);
        expect(&cpu, "cpu.cfs_period_us", "100000", &shown);
    }

    k.ok(&["delete", "pod", "limited", "--wait=true", "--timeout=120s"]);
    poll("pod limited to be gone", Duration::from_secs(60), || {
        pod(&k, "limited").is_none().then_some(())
    });
}
