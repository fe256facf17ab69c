//! Root integration test: a pod's container built by keel-podspec (env, volumes, /etc files,
//! pod cgroup, security context, memory limit) and run by the real `keel-shim run` on a
//! busybox-static root filesystem, on this host's real cgroups (v1 or v2).
//!
//! Needs root, `/bin/busybox` from busybox-static, and `target/debug/keel-shim`
//! (`cargo build -p keel-shim`). Everything lives in a temp folder and under the absolute
//! cgroup `/keel-podspec-test/<pid>`, removed by a guard also when an assertion fails.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use keel_podspec::cgroup::{self, Layout};
use keel_podspec::downward::NodeInfo;
use keel_podspec::etc::{self, DnsSettings};
use keel_podspec::refs::Refs;
use keel_podspec::{env, qos, spec, volumes};
use std::path::{Path, PathBuf};
use std::process::Command;

fn shim_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("debug/keel-shim");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p keel-shim`",
        bin.display()
    );
    bin
}

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (mounts, namespaces, cgroups): run `sudo cargo test -p keel-podspec`"
    );
    let bb = std::fs::read("/bin/busybox").unwrap_or_default();
    assert!(
        !bb.is_empty() && !bb.windows(8).take(8192).any(|w| w == b"ld-linux"),
        "/bin/busybox must be the static build: `apt-get install -y busybox-static`"
    );
}

/// Removes the containers, volumes and cgroups of the test, whatever happened.
struct Guard {
    tmp: tempfile::TempDir,
    layout: Layout,
    cg_root: String,
    ids: Vec<String>,
}

impl Guard {
    fn shim(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.tmp.path().join("out");
        let err = self.tmp.path().join("err");
        let status = Command::new(shim_bin())
            .arg("--root")
            .arg(self.tmp.path().join("shim"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .status()
            .expect("run keel-shim");
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default(),
        )
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for id in self.ids.clone() {
            let _ = self.shim(&["delete", "--force", &id]);
        }
        let _ = volumes::cleanup(&self.tmp.path().join("pod"));
        if let Err(e) = cgroup::remove_pod_cgroup_in(&self.layout, &self.cg_root) {
            eprintln!("cleanup of {}: {e}", self.cg_root);
        }
        // The shared parent goes too unless another run of this test still uses it.
        for (_, d) in self.layout.dirs("/keel-podspec-test") {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn make_rootfs(dir: &Path) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir rootfs");
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let p = dir.join("bin").join(applet);
        if applet != "busybox" && !p.exists() {
            std::os::unix::fs::symlink("busybox", p).expect("applet symlink");
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\n").expect("group");
}

const SCRIPT: &str = r#"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "GREETING=$GREETING POD=$POD_NAME MODE=$MODE DB_PASSWORD=$DB_PASSWORD URL=$URL"
echo "hostname=$(hostname)"
grep -q "10.244.0.7	web" /etc/hosts && echo hosts-ok
grep -q "search default.svc.cluster.local" /etc/resolv.conf && echo resolv-ok
echo scratch > /data/file && echo "data=$(cat /data/file)"
echo "cfg=$(cat /etc/app/app.conf)"
echo "labels=$(cat /etc/podinfo/labels)"
echo "pw=$(cat /etc/db/PASSWORD)"
touch /rootfs-write 2>/dev/null && echo rootfs-writable || echo rootfs-readonly
touch /etc/app/x 2>/dev/null && echo cfg-writable || echo cfg-readonly
grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status | tr -s '\t' ' '
for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max; do [ -f $f ] && echo "memlimit=$(cat $f)"; done
echo "termlog" > /dev/termination-log
"#;

fn pod(host_dir: &Path, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "4a5f-test", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "n1",
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "supplementalGroups": [4242], "fsGroup": 4343},
            "containers": [{
                "name": "web", "image": "busybox",
                "command": ["/bin/sh", "-c", script],
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode"}}},
                    {"name": "URL", "value": "http://$(POD_NAME):80/$(MODE)"}],
                "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "cfg", "mountPath": "/etc/app"},
                    {"name": "info", "mountPath": "/etc/podinfo"},
                    {"name": "host", "mountPath": "/host"},
                    {"name": "db", "mountPath": "/etc/db"}]
            }],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "app-config"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "host", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}},
                {"name": "db", "secret": {"secretName": "db", "defaultMode": 0o400}}]
        }
    }))
    .expect("pod")
}

fn refs() -> Refs {
    let mut r = Refs {
        namespace: "default".into(),
        ..Refs::default()
    };
    r.config_maps.insert(
        "app-config".into(),
        ConfigMap {
            data: Some(
                [
                    ("mode".into(), "prod".into()),
                    ("app.conf".into(), "listen=80".into()),
                ]
                .into(),
            ),
            ..Default::default()
        },
    );
    r.secrets.insert(
        "db".into(),
        Secret {
            data: Some([("PASSWORD".into(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        },
    );
    r
}

/// Build the bundle for `pod`'s first container with id `id`; returns the bundle folder.
fn bundle(g: &Guard, pod: &Pod, id: &str, pod_cg: &str) -> PathBuf {
    let pod_dir = g.tmp.path().join("pod");
    let node = NodeInfo {
        host_ips: vec!["192.168.0.2".into()],
        cpu_milli: 2000,
        memory_bytes: 1 << 30,
    };
    let refs = refs();
    let c = &pod.spec.as_ref().expect("spec").containers[0];
    let ips = vec!["10.244.0.7".to_string()];
    let env = env::resolve(pod, c, &refs, &node, &ips).expect("env");
    let vols = volumes::prepare(pod, &pod_dir, &refs, &node).expect("volumes");
    let resolv = g.tmp.path().join("node-resolv.conf");
    std::fs::write(&resolv, "nameserver 192.168.0.1\nsearch lab\n").expect("resolv");
    let dns = DnsSettings {
        cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
        host_resolv_conf: resolv,
        ..DnsSettings::default()
    };
    let etc = etc::write(pod, &pod_dir, &dns, &ips, "n1").expect("etc");
    let term = spec::termination_log(&pod_dir, &c.name, id).expect("termination log");
    let rootfs = g.tmp.path().join(format!("rootfs-{id}"));
    make_rootfs(&rootfs);
    let image: oci_spec::image::ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "StopSignal": "SIGQUIT"}
    }))
    .expect("image config");
    let input = spec::SpecInput {
        pod,
        container: c,
        image: &image,
        rootfs: &rootfs,
        env: &env,
        volumes: &vols,
        etc: &etc,
        netns: None,
        ipc_ns: None,
        uts_ns: None,
        pod_cgroup: pod_cg,
        container_id: id,
        termination_log: Some(&term),
        memory_capacity: 1 << 30,
        pids_limit: Some(64),
    };
    let s = spec::build(&input).expect("spec");
    let dir = g.tmp.path().join(format!("bundle-{id}"));
    spec::write_config(&dir, &s).expect("config.json");
    dir
}

#[test]
fn a_pod_container_runs_with_its_spec() {
    prerequisites();
    let layout = Layout::detect();
    let g = Guard {
        tmp: tempfile::Builder::new()
            .prefix("kps")
            .tempdir()
            .expect("tempdir"),
        layout: layout.clone(),
        cg_root: format!("/keel-podspec-test/{}", std::process::id()),
        ids: vec!["kps-main".into(), "kps-oom".into()],
    };
    let host_dir = g.tmp.path().join("host/dir");
    let p = pod(&host_dir, SCRIPT);
    assert_eq!(qos::class(&p), qos::QosClass::Burstable);
    let pod_cg = format!("{}/burstable/pod4a5f-test", g.cg_root);
    cgroup::ensure_pod_cgroup_in(&layout, &pod_cg, &p, Some(128)).expect("pod cgroup");
    let b = bundle(&g, &p, "kps-main", &pod_cg);
    let (code, out, err) = g.shim(&["run", "--bundle", b.to_str().expect("utf8"), "kps-main"]);
    assert_eq!(
        code, 0,
        "keel-shim run failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    for want in [
        "uid=1000 gid=1000 groups=1000 4242 4343",
        "pw=hunter2",
        "GREETING=hello POD=web MODE=prod DB_PASSWORD=hunter2 URL=http://web:80/prod",
        "hostname=web",
        "hosts-ok",
        "resolv-ok",
        "data=scratch",
        "cfg=listen=80",
        "labels=app=\"web\"",
        "rootfs-readonly",
        "cfg-readonly",
        "Seccomp: 2",
        "NoNewPrivs: 1",
        &format!("memlimit={}", 64 << 20),
    ] {
        assert!(
            out.lines().any(|l| l.trim() == want),
            "missing {want:?} in:\n{out}\nstderr:\n{err}"
        );
    }
    assert!(
        host_dir.is_dir(),
        "hostPath DirectoryOrCreate made the folder"
    );
    let term = std::fs::read_to_string(g.tmp.path().join("pod/containers/web/kps-main"))
        .expect("termination log");
    assert_eq!(term, "termlog\n");
    assert_eq!(
        std::fs::read_to_string(g.tmp.path().join("pod/volumes/data/file")).expect("emptyDir file"),
        "scratch\n"
    );
    // The pod cgroup carries the pod-level limits on the host.
    let (mem_file, mem_want) = match &layout {
        Layout::V1(m) => (
            m["memory"]
                .join(pod_cg.trim_start_matches('/'))
                .join("memory.limit_in_bytes"),
            (64u64 << 20).to_string(),
        ),
        Layout::V2(r) => (
            r.join(pod_cg.trim_start_matches('/')).join("memory.max"),
            (64u64 << 20).to_string(),
        ),
    };
    assert_eq!(
        std::fs::read_to_string(&mem_file)
            .expect("pod memory limit")
            .trim(),
        mem_want
    );
    let (cpu_file, cpu_want) = match &layout {
        Layout::V1(m) => (
            m["cpu"]
                .join(pod_cg.trim_start_matches('/'))
                .join("cpu.cfs_quota_us"),
            "50000",
        ),
        Layout::V2(r) => (
            r.join(pod_cg.trim_start_matches('/')).join("cpu.max"),
            "50000 100000",
        ),
    };
    assert_eq!(
        std::fs::read_to_string(&cpu_file)
            .expect("pod cpu quota")
            .trim(),
        cpu_want
    );
    let _ = g.shim(&["delete", "--force", "kps-main"]);

    // Going over the memory limit gets the container OOM-killed (128 + SIGKILL).
    let oom = pod(
        &host_dir,
        "exec dd if=/dev/zero of=/dev/null bs=100M count=1",
    );
    let b = bundle(&g, &oom, "kps-oom", &pod_cg);
    let (code, out, err) = g.shim(&["run", "--bundle", b.to_str().expect("utf8"), "kps-oom"]);
    assert_eq!(
        code, 137,
        "expected an OOM kill\nstdout:\n{out}\nstderr:\n{err}"
    );
    let _ = g.shim(&["delete", "--force", "kps-oom"]);

    // Removing the pod cgroup removes the QoS-tree leaf in every hierarchy.
    cgroup::remove_pod_cgroup_in(&layout, &pod_cg).expect("remove pod cgroup");
    for (_, d) in layout.dirs(&pod_cg) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

fn root_pod(sc: serde_json::Value) -> Pod {
    let script = "grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -s '\\t' ' '; \
                  mount -t tmpfs kps /tmp 2>/dev/null && echo mounted || echo mount-denied";
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sec", "namespace": "default", "uid": "5b6e-test"},
        "spec": {"containers": [{"name": "sec", "image": "busybox",
            "command": ["/bin/sh", "-c", script], "securityContext": sc}]}
    }))
    .expect("pod")
}

#[test]
fn security_context_reaches_the_kernel() {
    prerequisites();
    let layout = Layout::detect();
    let cases: Vec<(serde_json::Value, &[&str])> = vec![
        // containerd's 14 default capabilities; mount refused (no CAP_SYS_ADMIN, seccomp).
        (
            serde_json::json!({}),
            &["CapEff: 00000000a80425fb", "Seccomp: 2", "mount-denied"],
        ),
        (
            serde_json::json!({"privileged": true}),
            &["Seccomp: 0", "mounted"],
        ),
        // With CAP_SYS_ADMIN the RuntimeDefault profile lets mount through.
        (
            serde_json::json!({"capabilities": {"add": ["SYS_ADMIN"]}}),
            &["Seccomp: 2", "mounted"],
        ),
        (
            serde_json::json!({"capabilities": {"drop": ["ALL"]}}),
            &["CapEff: 0000000000000000", "mount-denied"],
        ),
        (
            serde_json::json!({"seccompProfile": {"type": "Unconfined"}}),
            &["Seccomp: 0", "mount-denied"],
        ),
    ];
    let g = Guard {
        tmp: tempfile::Builder::new()
            .prefix("kps")
            .tempdir()
            .expect("tempdir"),
        layout: layout.clone(),
        cg_root: format!("/keel-podspec-test/{}-sec", std::process::id()),
        ids: (0..cases.len()).map(|i| format!("kps-sec-{i}")).collect(),
    };
    let pod_cg = format!("{}/besteffort/pod5b6e-test", g.cg_root);
    for (i, (sc, want)) in cases.iter().enumerate() {
        let p = root_pod(sc.clone());
        cgroup::ensure_pod_cgroup_in(&layout, &pod_cg, &p, None).expect("pod cgroup");
        let id = format!("kps-sec-{i}");
        let b = bundle(&g, &p, &id, &pod_cg);
        let (code, out, err) = g.shim(&["run", "--bundle", b.to_str().expect("utf8"), &id]);
        assert_eq!(
            code, 0,
            "case {i} {sc}: keel-shim run failed\nstdout:\n{out}\nstderr:\n{err}"
        );
        for w in *want {
            assert!(
                out.lines().any(|l| l.trim() == *w),
                "case {i} {sc}: missing {w:?} in:\n{out}\nstderr:\n{err}"
            );
        }
        let _ = g.shim(&["delete", "--force", &id]);
    }
}
