//! Shared fixtures for the root integration tests: busybox-static rootfs bundles in temp
//! folders, a runner for the real `keel-shim` binary, and a guard that deletes every
//! container and cgroup a test made (also when it fails).

#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keel-shim")
}

fn check_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "keel-shim integration tests need root (namespaces, mounts, cgroups): run `sudo cargo test -p keel-shim`"
    );
    let bb = std::fs::read("/bin/busybox").unwrap_or_default();
    assert!(
        !bb.is_empty(),
        "/bin/busybox is missing: install it with `apt-get install -y busybox-static`"
    );
    let dynamic = bb
        .windows(b"ld-linux".len())
        .take(8192)
        .any(|w| w == b"ld-linux");
    assert!(
        !dynamic,
        "/bin/busybox is dynamically linked: install `busybox-static` (apt-get install -y busybox-static)"
    );
}

/// One test's world: temp folder, state root, rootfs, unique cgroup prefix.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub rootfs: PathBuf,
    pub cg: String,
}

impl Env {
    pub fn new(name: &str) -> Env {
        check_prerequisites();
        let tmp = tempfile::Builder::new()
            .prefix("kst")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().join("st");
        let rootfs = tmp.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        let list = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let p = rootfs.join("bin").join(applet);
            if applet != "busybox" && !p.exists() {
                std::os::unix::fs::symlink("busybox", p).expect("applet symlink");
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n").expect("group");
        std::fs::set_permissions(
            rootfs.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .expect("chmod tmp");
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let cg = format!("/keeltest-{}-{name}-{n}", std::process::id());
        Env {
            tmp,
            root,
            rootfs,
            cg,
        }
    }

    /// A config like `runc spec` produces, with an absolute cgroupsPath below this test's.
    pub fn config(&self, args: &[&str]) -> Value {
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": self.rootfs, "readonly": true},
            "hostname": "keeltest",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
            ],
            "linux": {
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "cgroupsPath": format!("{}/{}", self.cg, SEQ.fetch_add(1, Ordering::SeqCst)),
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
                "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        })
    }

    /// Write a bundle folder `name` with `config`.
    pub fn bundle(&self, name: &str, config: &Value) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir bundle");
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(config).expect("encode config"),
        )
        .expect("write config");
        dir
    }

    /// Run `keel-shim --root <root> args...` and wait.
    ///
    /// Output goes to files, not pipes: a container started by `create`/`run -d` without a
    /// CRI log inherits the caller's stdio (as with runc), and would hold pipes open.
    pub fn shim(&self, args: &[&str]) -> Output {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let out_p = self.tmp.path().join(format!("out.{n}"));
        let err_p = self.tmp.path().join(format!("err.{n}"));
        let out = std::fs::File::create(&out_p).expect("stdout file");
        let err = std::fs::File::create(&err_p).expect("stderr file");
        let status = Command::new(bin())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .expect("run keel-shim");
        Output {
            status,
            stdout: std::fs::read(&out_p).unwrap_or_default(),
            stderr: std::fs::read(&err_p).unwrap_or_default(),
        }
    }

    /// `run --bundle <b> <id>` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self, bundle: &Path, id: &str, extra: &[&str]) -> (i32, String, String) {
        let b = bundle.to_str().expect("utf8");
        let mut args = vec!["run", "--bundle", b];
        args.extend_from_slice(extra);
        args.push(id);
        let o = self.shim(&args);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// OCI state JSON of `id`.
    pub fn state(&self, id: &str) -> Value {
        let o = self.shim(&["state", id]);
        assert!(
            o.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("state json")
    }

    /// Poll `state` until `status`, failing after `secs`.
    pub fn wait_status(&self, id: &str, status: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.state(id);
            if s["status"] == status {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never became {status}: {s}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Path of a container's state folder.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// All cgroup folders below this test's prefix that still exist.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let rel = self.cg.trim_start_matches('/');
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(rd.flatten().map(|e| e.path()));
        }
        for r in roots {
            let base = r.join(rel);
            if let Ok(rd) = std::fs::read_dir(&base) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        out.push(e.path());
                    }
                }
            }
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let o = self.shim(&["list", "-q"]);
        for id in String::from_utf8_lossy(&o.stdout).lines() {
            let _ = self.shim(&["delete", "-f", id]);
        }
        let rel = self.cg.trim_start_matches('/').to_string();
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            roots.extend(rd.flatten().map(|e| e.path()));
        }
        for r in roots {
            if r.to_string_lossy().contains("process_api") {
                continue;
            }
            let base = r.join(&rel);
            if let Ok(rd) = std::fs::read_dir(&base) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&base);
        }
    }
}

/// Parse CRI log records into (stream, tag, content).
pub fn cri_records(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                "bad CRI timestamp in {l:?}"
            );
            (
                it.next().unwrap_or_default().to_string(),
                it.next().unwrap_or_default().to_string(),
                it.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Poll for the supervisor's durable exit record of `id`.
pub fn wait_exit(env: &Env, id: &str) -> keel_shim::proto::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = keel_shim::proto::read_exit_file(&env.dir(id)) {
            return e;
        }
        assert!(Instant::now() < deadline, "{id}: no exit.json after 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}
