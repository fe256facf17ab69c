//! Volume preparation against temp folders (tmpfs cases need root, like every root test here).

use super::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

fn pod(volumes: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "32Mi"}}}], "volumes": volumes},
    }))
    .expect("pod")
}

fn refs() -> Refs {
    let mut r = Refs {
        namespace: "default".into(),
        ..Refs::default()
    };
    r.config_maps.insert(
        "cfg".into(),
        ConfigMap {
            data: Some(
                [
                    ("app.conf".into(), "x=1".into()),
                    ("other".into(), "o".into()),
                ]
                .into(),
            ),
            binary_data: Some([("bin".into(), ByteString(vec![0, 1, 2]))].into()),
            ..Default::default()
        },
    );
    r.secrets.insert(
        "creds".into(),
        Secret {
            data: Some([("password".into(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        },
    );
    r
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777
}

#[test]
fn projected_kinds_write_their_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = pod(serde_json::json!([
        {"name": "all", "configMap": {"name": "cfg"}},
        {"name": "items", "configMap": {"name": "cfg", "defaultMode": 0o600, "items": [
            {"key": "app.conf", "path": "conf/app.conf"}, {"key": "other", "path": "o", "mode": 0o444}]}},
        {"name": "opt", "configMap": {"name": "nope", "optional": true}},
        {"name": "down", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}},
        {"name": "proj", "projected": {"sources": [
            {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "x"}]}},
            {"secret": {"name": "creds"}},
            {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            {"serviceAccountToken": {"path": "token"}}]}},
        {"name": "scratch", "emptyDir": {}}
    ]));
    let v = prepare(&p, tmp.path(), &refs(), &NodeInfo::default()).expect("prepare");
    let f = |vol: &str, file: &str| v.get(vol).expect("volume").path.join(file);
    let read = |vol: &str, file: &str| std::fs::read_to_string(f(vol, file)).expect("read");
    assert_eq!(read("all", "app.conf"), "x=1");
    assert_eq!(std::fs::read(f("all", "bin")).expect("bin"), vec![0, 1, 2]);
    assert_eq!(mode(&f("all", "app.conf")), 0o644);
    assert_eq!(read("items", "conf/app.conf"), "x=1");
    assert_eq!(mode(&f("items", "conf/app.conf")), 0o600);
    assert_eq!(mode(&f("items", "o")), 0o444);
    assert!(!f("items", "bin").exists());
    assert_eq!(
        std::fs::read_dir(&v.get("opt").expect("opt").path)
            .expect("ls")
            .count(),
        2,
        "only ..data and the timestamped folder"
    );
    assert_eq!(read("down", "labels"), "app=\"web\"");
    assert_eq!(read("down", "mem"), "32");
    assert_eq!(read("proj", "x"), "o");
    assert_eq!(read("proj", "password"), "hunter2");
    assert_eq!(read("proj", "name"), "web");
    assert_eq!(mode(&v.get("scratch").expect("scratch").path), 0o777);
    assert!(v.get("proj").expect("proj").kind.forces_read_only());
    // Preparing again is fine and keeps emptyDir contents.
    std::fs::write(f("scratch", "keep"), "k").expect("write");
    prepare(&p, tmp.path(), &refs(), &NodeInfo::default()).expect("prepare again");
    assert_eq!(read("scratch", "keep"), "k");
    cleanup(tmp.path()).expect("cleanup");
    cleanup(tmp.path()).expect("cleanup is idempotent");
    assert!(!tmp.path().join("volumes").exists());
}

#[test]
fn failures_read_like_kubelet() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing_dir = tmp.path().join("nope");
    let a_file = tmp.path().join("file");
    std::fs::write(&a_file, "").expect("file");
    let cases = vec![
        (
            serde_json::json!([{"name": "cfg", "configMap": {"name": "missing"}}]),
            r#"MountVolume.SetUp failed for volume "cfg" : configmap "missing" not found"#.to_string(),
        ),
        (
            serde_json::json!([{"name": "s", "secret": {"secretName": "missing"}}]),
            r#"MountVolume.SetUp failed for volume "s" : secret "missing" not found"#.to_string(),
        ),
        (
            serde_json::json!([{"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "KEY", "path": "k"}]}}]),
            r#"MountVolume.SetUp failed for volume "cfg" : configmap references non-existent config key: KEY"#.to_string(),
        ),
        (
            serde_json::json!([{"name": "s", "secret": {"secretName": "creds", "items": [{"key": "KEY", "path": "k"}]}}]),
            r#"MountVolume.SetUp failed for volume "s" : secret references non-existent secret key: KEY"#.to_string(),
        ),
        (
            serde_json::json!([{"name": "h", "hostPath": {"path": missing_dir, "type": "Directory"}}]),
            format!(r#"MountVolume.SetUp failed for volume "h" : hostPath type check failed: {} is not a directory"#, missing_dir.display()),
        ),
        (
            serde_json::json!([{"name": "h", "hostPath": {"path": a_file, "type": "DirectoryOrCreate"}}]),
            format!(r#"MountVolume.SetUp failed for volume "h" : hostPath type check failed: {} is not a directory"#, a_file.display()),
        ),
        (
            serde_json::json!([{"name": "h", "hostPath": {"path": tmp.path(), "type": "File"}}]),
            format!(r#"MountVolume.SetUp failed for volume "h" : hostPath type check failed: {} is not a file"#, tmp.path().display()),
        ),
        (
            serde_json::json!([{"name": "h", "hostPath": {"path": a_file, "type": "Socket"}}]),
            format!(r#"MountVolume.SetUp failed for volume "h" : hostPath type check failed: {} is not a socket file"#, a_file.display()),
        ),
        (
            serde_json::json!([{"name": "pvc", "persistentVolumeClaim": {"claimName": "x"}}]),
            r#"MountVolume.SetUp failed for volume "pvc" : volume type persistentVolumeClaim is not supported by keel-agent"#.to_string(),
        ),
    ];
    for (vols, want) in cases {
        let e =
            prepare(&pod(vols), tmp.path(), &refs(), &NodeInfo::default()).expect_err("must fail");
        assert_eq!(e.to_string(), want);
        assert_eq!(e.reason(), "FailedMount");
    }
}

#[test]
fn host_path_types_create_what_is_missing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("a/b");
    let f = tmp.path().join("c/d.txt");
    let p = pod(serde_json::json!([
        {"name": "d", "hostPath": {"path": d, "type": "DirectoryOrCreate"}},
        {"name": "f", "hostPath": {"path": f, "type": "FileOrCreate"}},
        {"name": "any", "hostPath": {"path": "/does/not/matter"}}
    ]));
    let v = prepare(&p, tmp.path(), &Refs::default(), &NodeInfo::default()).expect("prepare");
    assert!(d.is_dir() && f.is_file());
    assert_eq!(v.get("d").expect("d").path, d);
    assert_eq!(v.get("any").expect("any").kind, Kind::HostPath);
    cleanup(tmp.path()).expect("cleanup");
    assert!(d.is_dir(), "cleanup never touches host paths");
}

#[test]
fn memory_medium_is_a_sized_tmpfs() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a tmpfs: run `cargo test -p keel-podspec` as root"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = pod(serde_json::json!([
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}},
        {"name": "s", "secret": {"secretName": "creds"}}
    ]));
    let v = prepare(&p, tmp.path(), &refs(), &NodeInfo::default()).expect("prepare");
    let dir = v.get("mem").expect("mem").path.clone();
    let st = nix::sys::statvfs::statvfs(&dir).expect("statvfs");
    assert_eq!(st.blocks() * st.fragment_size(), 4 << 20);
    assert!(
        is_mount_point(&v.get("s").expect("s").path),
        "secrets live on tmpfs"
    );
    prepare(&p, tmp.path(), &refs(), &NodeInfo::default()).expect("prepare again");
    assert_eq!(
        mounts_below(&tmp.path().join("volumes")).len(),
        2,
        "no stacked mounts"
    );
    cleanup(tmp.path()).expect("cleanup");
    assert!(mounts_below(tmp.path()).is_empty());
    assert!(!tmp.path().join("volumes").exists());
}

#[test]
fn fs_group_owns_volumes() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test changes file ownership: run `cargo test -p keel-podspec` as root"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = pod(serde_json::json!([
        {"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {}}
    ]));
    p.spec.as_mut().expect("spec").security_context =
        Some(serde_json::from_value(serde_json::json!({"fsGroup": 4343})).expect("context"));
    let v = prepare(&p, tmp.path(), &refs(), &NodeInfo::default()).expect("prepare");
    let secret = v.get("s").expect("s").path.join("password");
    let m = std::fs::metadata(&secret).expect("meta");
    assert_eq!((m.gid(), m.mode() & 0o7777), (4343, 0o440));
    let scratch = std::fs::metadata(&v.get("scratch").expect("scratch").path).expect("meta");
    assert_eq!((scratch.gid(), scratch.mode() & 0o7777), (4343, 0o2777));
    cleanup(tmp.path()).expect("cleanup");
    p.spec.as_mut().expect("spec").security_context =
        Some(serde_json::from_value(serde_json::json!({"fsGroup": -1})).expect("context"));
    let e = prepare(&p, tmp.path(), &refs(), &NodeInfo::default()).expect_err("bad fsGroup");
    assert!(
        e.to_string().contains("spec.securityContext.fsGroup"),
        "{e}"
    );
    cleanup(tmp.path()).expect("cleanup");
}
