//! Table tests for the spec pieces: process, namespaces, mounts, resources and security.

use super::*;
use crate::volumes::{Kind, Volume};
use std::collections::BTreeMap;

struct Fixture {
    tmp: tempfile::TempDir,
    image: ImageConfiguration,
    volumes: Volumes,
    etc: EtcFiles,
}

fn fixture(user: &str) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("etc");
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1001:\n").expect("group");
    let vol = tmp.path().join("vol");
    std::fs::create_dir_all(vol.join("sub")).expect("vol");
    std::os::unix::fs::symlink("/etc", vol.join("escape")).expect("symlink");
    let cfg = tmp.path().join("cfg");
    std::fs::create_dir_all(&cfg).expect("cfg");
    let mut by_name = BTreeMap::new();
    by_name.insert(
        "data".to_string(),
        Volume {
            kind: Kind::EmptyDir,
            path: vol,
        },
    );
    by_name.insert(
        "cfg".to_string(),
        Volume {
            kind: Kind::ConfigMap,
            path: cfg,
        },
    );
    let image: ImageConfiguration = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["PATH=/bin", "IMG=1"],
                   "User": user, "StopSignal": "SIGQUIT"}
    }))
    .expect("image");
    let etc = EtcFiles {
        hosts: tmp.path().join("etc/hosts"),
        resolv_conf: tmp.path().join("etc/resolv.conf"),
        hostname: tmp.path().join("etc/hostname"),
        name: "web".into(),
    };
    Fixture {
        tmp,
        image,
        volumes: Volumes { by_name },
        etc,
    }
}

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": spec,
    }))
    .expect("pod")
}

fn run(f: &Fixture, p: &Pod, env: &[(String, String)]) -> Result<Value> {
    let rootfs = f.tmp.path().join("rootfs");
    let netns = PathBuf::from("/run/keel/netns/u1");
    let input = SpecInput {
        pod: p,
        container: &p.spec.as_ref().expect("spec").containers[0],
        image: &f.image,
        rootfs: &rootfs,
        env,
        volumes: &f.volumes,
        etc: &f.etc,
        netns: Some(&netns),
        ipc_ns: None,
        uts_ns: None,
        pod_cgroup: "/keel/n1/burstable/podu1",
        container_id: "abc",
        termination_log: Some(Path::new("/tmp/term")),
        memory_capacity: 1 << 30,
        pids_limit: Some(100),
    };
    build(&input).map(|s| serde_json::to_value(s).expect("json"))
}

fn ctr(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"name": "web", "image": "busybox"});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    serde_json::json!({"containers": [c]})
}

#[test]
fn full_spec_for_a_plain_container() {
    let f = fixture("");
    let p = pod(ctr(serde_json::json!({
        "command": ["/bin/echo", "$(GREETING)"], "args": ["$$(GREETING)", "$(NONE)"],
        "workingDir": "/work",
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/app"},
                         {"name": "data", "mountPath": "/data/sub", "subPath": "sub", "readOnly": true}]
    })));
    let env = vec![("GREETING".to_string(), "hello".to_string())];
    let j = run(&f, &p, &env).expect("spec");
    let proc_ = &j["process"];
    assert_eq!(
        proc_["args"],
        serde_json::json!(["/bin/echo", "hello", "$(GREETING)", "$(NONE)"])
    );
    assert_eq!(proc_["cwd"], "/work");
    let envs: Vec<String> = serde_json::from_value(proc_["env"].clone()).expect("env");
    for want in ["PATH=/bin", "IMG=1", "HOSTNAME=web", "GREETING=hello"] {
        assert!(envs.contains(&want.to_string()), "{want} in {envs:?}");
    }
    assert_eq!(proc_["oomScoreAdj"], 938);
    assert_eq!(proc_["noNewPrivileges"], false);
    assert_eq!(proc_["user"]["uid"], 0);
    let caps: Vec<String> =
        serde_json::from_value(proc_["capabilities"]["bounding"].clone()).expect("caps");
    assert!(
        caps.contains(&"CAP_CHOWN".to_string()) && !caps.contains(&"CAP_SYS_ADMIN".to_string())
    );
    assert_eq!(j["hostname"], "web");
    assert_eq!(j["root"]["readonly"], false);
    let l = &j["linux"];
    assert_eq!(l["cgroupsPath"], "/keel/n1/burstable/podu1/abc");
    assert_eq!(
        l["resources"]["cpu"],
        serde_json::json!({"shares": 256, "quota": 50000, "period": 100000})
    );
    assert_eq!(l["resources"]["memory"]["limit"], 128 << 20);
    assert_eq!(l["resources"]["pids"]["limit"], 100);
    let ns: Vec<Value> = serde_json::from_value(l["namespaces"].clone()).expect("ns");
    assert!(ns.contains(&serde_json::json!({"type": "network", "path": "/run/keel/netns/u1"})));
    assert!(ns.contains(&serde_json::json!({"type": "uts"})));
    let denied = l["seccomp"]["syscalls"][0]["names"]
        .as_array()
        .expect("names");
    assert!(
        denied.contains(&serde_json::json!("mount"))
            && denied.contains(&serde_json::json!("kexec_load"))
    );
    assert!(!denied.contains(&serde_json::json!("chown")));
    assert_eq!(
        j["annotations"][keel_image::spec::STOP_SIGNAL_ANNOTATION],
        "SIGQUIT"
    );
    assert_eq!(j["annotations"][CONTAINER_NAME_ANNOTATION], "web");
    let mounts: Vec<Value> = serde_json::from_value(j["mounts"].clone()).expect("mounts");
    let find = |d: &str| {
        mounts
            .iter()
            .find(|m| m["destination"] == d)
            .cloned()
            .unwrap_or_else(|| panic!("{d} not mounted"))
    };
    assert_eq!(
        find("/data")["source"],
        serde_json::json!(f.tmp.path().join("vol"))
    );
    assert_eq!(
        find("/etc/app")["options"][2],
        "ro",
        "configMap volumes are read-only"
    );
    assert_eq!(find("/data/sub")["options"][2], "ro");
    assert_eq!(find("/etc/hosts")["source"], serde_json::json!(f.etc.hosts));
    assert_eq!(find("/dev/termination-log")["source"], "/tmp/term");
    find("/etc/resolv.conf");
    find("/etc/hostname");
    let pos = |d: &str| {
        mounts
            .iter()
            .position(|m| m["destination"] == d)
            .expect("pos")
    };
    assert!(pos("/data") < pos("/data/sub") && pos("/dev") < pos("/dev/termination-log"));
}

#[test]
fn security_contexts() {
    let f = fixture("");
    type Check = fn(&Value) -> bool;
    let cases: Vec<(serde_json::Value, Check)> = vec![
        (
            serde_json::json!({"securityContext": {"readOnlyRootFilesystem": true}}),
            |j| j["root"]["readonly"] == true,
        ),
        (
            serde_json::json!({"securityContext": {"allowPrivilegeEscalation": false}}),
            |j| j["process"]["noNewPrivileges"] == true,
        ),
        (
            serde_json::json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            |j| j["linux"]["seccomp"].is_null(),
        ),
        (
            serde_json::json!({"securityContext": {"runAsUser": 1000}}),
            |j| j["process"]["user"]["uid"] == 1000 && j["process"]["user"]["gid"] == 1001,
        ),
        (
            serde_json::json!({"securityContext": {"runAsUser": 5, "runAsGroup": 6}}),
            |j| j["process"]["user"]["uid"] == 5 && j["process"]["user"]["gid"] == 6,
        ),
        (
            serde_json::json!({"securityContext": {"runAsGroup": 7}}),
            |j| j["process"]["user"]["uid"] == 0 && j["process"]["user"]["gid"] == 7,
        ),
        (
            serde_json::json!({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}),
            |j| {
                j["process"]["capabilities"]["effective"]
                    == serde_json::json!(["CAP_NET_BIND_SERVICE"])
            },
        ),
        (
            serde_json::json!({"securityContext": {"capabilities": {"add": ["cap_sys_admin"], "drop": ["KILL"]}}}),
            |j| {
                let c = j["process"]["capabilities"]["bounding"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let names = j["linux"]["seccomp"]["syscalls"][0]["names"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                c.contains(&serde_json::json!("CAP_SYS_ADMIN"))
                    && !c.contains(&serde_json::json!("CAP_KILL"))
                    && !names.contains(&serde_json::json!("mount"))
            },
        ),
        (
            serde_json::json!({"securityContext": {"privileged": true}}),
            |j| {
                j["linux"]["seccomp"].is_null()
                    && j["linux"]["maskedPaths"] == serde_json::json!([])
                    && j["linux"]["resources"]["devices"][0]["allow"] == true
                    && j["process"]["capabilities"]["bounding"]
                        .as_array()
                        .is_some_and(|c| c.len() > 14)
            },
        ),
    ];
    for (i, (extra, check)) in cases.into_iter().enumerate() {
        let j = run(&f, &pod(ctr(extra)), &[]).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert!(check(&j), "case {i}: {j:#}");
    }
    // Pod-level groups and sysctls.
    let mut spec = ctr(serde_json::json!({}));
    spec["securityContext"] = serde_json::json!({"supplementalGroups": [5, 3], "fsGroup": 2000,
        "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 1"}, {"name": "kernel.shm_rmid_forced", "value": "1"}]});
    let j = run(&f, &pod(spec), &[]).expect("spec");
    assert_eq!(
        j["process"]["user"]["additionalGids"],
        serde_json::json!([3, 5, 2000])
    );
    assert_eq!(j["linux"]["sysctl"]["net.ipv4.ping_group_range"], "0 1");
    // hostNetwork: the host's network and UTS namespaces, no hostname.
    let mut spec = ctr(serde_json::json!({}));
    spec["hostNetwork"] = serde_json::json!(true);
    let j = run(&f, &pod(spec), &[]).expect("spec");
    let ns = j["linux"]["namespaces"].as_array().expect("ns");
    assert!(
        !ns.iter()
            .any(|n| n["type"] == "network" || n["type"] == "uts")
    );
    assert!(j["hostname"].is_null());
}

#[test]
fn bad_input_names_the_field() {
    let f = fixture("");
    let pod_sc = |sc: serde_json::Value| {
        let mut s = ctr(serde_json::json!({}));
        s["securityContext"] = sc;
        s
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            ctr(serde_json::json!({"securityContext": {"runAsNonRoot": true}})),
            r#"container has runAsNonRoot and image will run as root (pod: "web_default(u1)", container: web)"#,
        ),
        (
            ctr(serde_json::json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0}})),
            r#"container's runAsUser breaks non-root policy (pod: "web_default(u1)", container: web)"#,
        ),
        (
            ctr(serde_json::json!({"securityContext": {"runAsUser": -1}})),
            "invalid securityContext.runAsUser: -1 is not a valid id",
        ),
        (
            ctr(serde_json::json!({"securityContext": {"capabilities": {"add": ["NOT_A_CAP"]}}})),
            "invalid securityContext.capabilities.add[0]: \"NOT_A_CAP\" is not a Linux capability",
        ),
        (
            ctr(
                serde_json::json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}}),
            ),
            "securityContext.seccompProfile.type Localhost is not supported by keel-agent",
        ),
        (
            ctr(serde_json::json!({"securityContext": {"seccompProfile": {"type": "Bogus"}}})),
            "invalid securityContext.seccompProfile.type",
        ),
        (
            pod_sc(serde_json::json!({"sysctls": [{"name": "vm.swappiness", "value": "1"}]})),
            "invalid spec.securityContext.sysctls[0]",
        ),
        (
            ctr(serde_json::json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]})),
            r#"cannot find volume "nope" to mount into container "web""#,
        ),
        (
            ctr(
                serde_json::json!({"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../up"}]}),
            ),
            "failed to prepare subPath",
        ),
        (
            ctr(
                serde_json::json!({"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "escape"}]}),
            ),
            "outside the volume",
        ),
        (
            ctr(serde_json::json!({"workingDir": "rel"})),
            "invalid workingDir",
        ),
        (
            ctr(serde_json::json!({"resources": {"limits": {"memory": "lots"}}})),
            "resources.limits.memory",
        ),
    ];
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let e = run(&f, &pod(spec), &[]).expect_err("must fail");
        assert!(
            e.to_string().starts_with(want) || e.to_string().contains(want),
            "case {i}: {e}"
        );
        assert_eq!(e.reason(), "CreateContainerConfigError", "case {i}");
    }
    for (user, ok) in [("1000", true), ("app", false), ("0:0", false)] {
        let f = fixture(user);
        let r = run(
            &f,
            &pod(ctr(
                serde_json::json!({"securityContext": {"runAsNonRoot": true}}),
            )),
            &[],
        );
        assert_eq!(r.is_ok(), ok, "image user {user}: {r:?}");
    }
    let f = fixture("app");
    let e = run(
        &f,
        &pod(ctr(
            serde_json::json!({"securityContext": {"runAsNonRoot": true}}),
        )),
        &[],
    )
    .expect_err("name");
    assert!(e.to_string().starts_with("container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root"), "{e}");
}
