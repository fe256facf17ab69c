//! Pull, verify, unpack and mount against a real docker-registry with images built by umoci and
//! pushed by skopeo. Needs root and the packages in .ci/packages.d/image.txt.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use keel_image::pull::{FailureKind, Progress, PullError, Puller};
use keel_image::registry::RegistriesConfig;
use keel_image::store::Store;
use support::{Layout, Registry, TarLayer, entries, need_all};

fn config(text: &str) -> RegistriesConfig {
    RegistriesConfig::parse(text, Path::new("test registries.yaml")).expect("registry config")
}

fn puller(root: &Path, cfg: &str) -> (Arc<Store>, Puller) {
    let store = Arc::new(Store::open(root).expect("open store"));
    (store.clone(), Puller::new(store, config(cfg)))
}

/// Layer digests of a layout tag's manifest.
fn layer_digests(layout: &Layout, tag: &str) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_slice(&layout.blob(&layout.manifest_digest(tag))).expect("manifest");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// diff_ids of a layout tag's config.
fn diff_ids(layout: &Layout, tag: &str) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_slice(&layout.blob(&layout.manifest_digest(tag))).expect("manifest");
    let config = m["config"]["digest"].as_str().expect("config digest");
    let c: serde_json::Value = serde_json::from_slice(&layout.blob(config)).expect("config");
    c["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect()
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let p = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// Removes a container rootfs even when an assertion fails first.
struct RootfsGuard<'a>(&'a Store, &'static str);

impl Drop for RootfsGuard<'_> {
    fn drop(&mut self) {
        let _ = keel_image::rootfs::remove(self.0, self.1);
    }
}

#[tokio::test]
async fn multi_layer_image_with_whiteouts_mounts_as_overlay() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    layout.delete_file("base", "deleted", "etc/gone");
    let top = TarLayer::new()
        .file("etc/.wh.motd", b"")
        .file("etc/issue", b"keel\n")
        .dir("data/")
        .file("data/.wh..wh..opq", b"")
        .file("data/new.txt", b"new\n")
        .build();
    layout.add_layer("deleted", "app", &top);
    layout.push("app", &format!("{}/test/app:1", reg.host()), &[]);

    let (store, puller) = puller(&dir.path().join("store"), &reg.plain_config());
    let image = puller
        .pull(&format!("{}/test/app:1", reg.host()))
        .await
        .expect("pull");
    assert_eq!(image.layers.len(), 3, "base, umoci deletion, crafted top");
    assert_eq!(image.manifest_digest, layout.manifest_digest("app"));

    // The top layer holds overlayfs whiteouts.
    let top_dir = store.layer_dir(&image.diff_ids[2]).expect("layer dir");
    let wh = std::fs::symlink_metadata(top_dir.join("etc/motd")).expect("whiteout");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "etc/motd is not a 0/0 char device"
    );
    assert_eq!(
        xattr::get(top_dir.join("data"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );
    let mid = store.layer_dir(&image.diff_ids[1]).expect("layer dir");
    assert!(
        std::fs::symlink_metadata(mid.join("etc/gone"))
            .expect("umoci whiteout")
            .file_type()
            .is_char_device()
    );

    // The merged view.
    let _guard = RootfsGuard(&store, "c-whiteouts");
    let rootfs =
        keel_image::rootfs::mount(&store, "c-whiteouts", &image.name, None).expect("mount");
    let root = &rootfs.path;
    assert!(is_mounted(root), "{} is not a mount point", root.display());
    assert!(root.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/issue")).expect("issue"),
        "keel\n"
    );
    assert!(!root.join("etc/motd").exists(), "whited-out file visible");
    assert!(
        !root.join("etc/gone").exists(),
        "umoci-deleted file visible"
    );
    assert!(
        !root.join("data/old.txt").exists(),
        "opaque dir leaked a lower file"
    );
    assert!(
        !root.join("data/keep").exists(),
        "opaque dir leaked a lower dir"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("data/new.txt")).expect("new"),
        "new\n"
    );
    // Writes go to the container's upper dir, never to a shared layer.
    std::fs::write(root.join("etc/written"), "c").expect("write in container");
    assert!(!top_dir.join("etc/written").exists());
    assert!(
        keel_image::store::Store::remove_image(&store, &image.name).is_err(),
        "in-use image removed"
    );

    // config.json from the image config, with kubelet-style overrides.
    let cfg: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&store.read_blob(&image.config_digest).expect("config"))
            .expect("parse");
    let spec = keel_image::spec::build(
        &cfg,
        root,
        &keel_image::spec::Overrides {
            args: vec!["-c".into(), "true".into()],
            ..Default::default()
        },
    )
    .expect("spec");
    let process = spec.process().as_ref().expect("process");
    assert_eq!(
        process.args().as_ref().expect("args"),
        &["-c".to_string(), "true".to_string()]
    );
    assert!(
        process
            .env()
            .as_ref()
            .expect("env")
            .contains(&"FROM_IMAGE=1".to_string())
    );

    keel_image::rootfs::remove(&store, "c-whiteouts").expect("remove rootfs");
    assert!(!is_mounted(root));
    assert!(!root.exists());
}

#[tokio::test]
async fn second_tag_shares_layers_and_manifest_list_picks_host_platform() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    layout.push("base", &format!("{}/test/bb:1", reg.host()), &[]);
    layout.push("base", &format!("{}/other/bb:2", reg.host()), &[]);
    // A manifest list: the real image for the host, a re-labelled one for s390x.
    layout.tag("base", "s390");
    support::run(std::process::Command::new("umoci").args([
        "config",
        "--image",
        &layout.tag_ref("s390"),
        "--architecture",
        "s390x",
    ]));
    let (_, arch) = keel_image::pull::host_platform();
    let host_manifest = layout.manifest_digest("base");
    let other_manifest = layout.manifest_digest("s390");
    layout.add_index(
        "multi",
        &[
            (&other_manifest, "linux", "s390x"),
            (&host_manifest, "linux", arch),
        ],
    );
    layout.push("multi", &format!("{}/test/multi:1", reg.host()), &["--all"]);

    let root = dir.path().join("store");
    let cached = Arc::new(Mutex::new(Vec::new()));
    let seen = cached.clone();
    let store = Arc::new(Store::open(&root).expect("store"));
    let puller = Puller::new(store.clone(), config(&reg.plain_config())).with_progress(move |p| {
        if let Progress::LayerReady { cached, .. } = p {
            seen.lock().expect("lock").push(cached);
        }
    });
    let a = puller
        .pull(&format!("{}/test/bb:1", reg.host()))
        .await
        .expect("pull 1");
    let b = puller
        .pull(&format!("{}/other/bb:2", reg.host()))
        .await
        .expect("pull 2");
    assert_eq!(a.layers, b.layers);
    assert_eq!(
        *cached.lock().expect("lock"),
        vec![false, true],
        "second tag re-downloaded its layer"
    );
    let usage = store.usage().expect("usage");
    assert_eq!(
        (usage.images, usage.layers),
        (2, 1),
        "layers not stored once"
    );

    let multi = puller
        .pull(&format!("{}/test/multi:1", reg.host()))
        .await
        .expect("pull index");
    assert_eq!(
        multi.manifest_digest, host_manifest,
        "wrong platform chosen"
    );
    assert!(multi.index_digest.is_some());
    assert_eq!(store.usage().expect("usage").layers, 1);
}

#[tokio::test]
async fn special_files_ownership_modes_and_xattrs_survive_unpacking() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    use tar::EntryType as T;
    let layer = TarLayer::new()
        .dir("srv/")
        .entry_as(
            "srv/suid",
            T::Regular,
            b"#!/bin/sh\n",
            None,
            0o4755,
            (1000, 1001),
            (0, 0),
        )
        .entry_as(
            "srv/suid-link",
            T::Link,
            b"",
            Some("srv/suid"),
            0o4755,
            (1000, 1001),
            (0, 0),
        )
        .pax(&[
            ("SCHILY.xattr.user.keel", b"value"),
            ("SCHILY.xattr.trusted.keel", b"t"),
        ])
        .entry_as("srv/attr", T::Regular, b"x", None, 0o640, (0, 0), (0, 0))
        .entry_as("srv/null", T::Char, b"", None, 0o666, (0, 0), (1, 3))
        .entry_as("srv/loop", T::Block, b"", None, 0o660, (0, 6), (7, 0))
        .entry_as("srv/fifo", T::Fifo, b"", None, 0o600, (0, 0), (0, 0))
        .entry_as(
            "srv/abs",
            T::Symlink,
            b"",
            Some("/etc/passwd"),
            0o777,
            (1000, 1000),
            (0, 0),
        )
        .build();
    layout.add_layer("base", "special", &layer);
    let reference = format!("{}/test/special:1", reg.host());
    layout.push("special", &reference, &[]);
    let (store, puller) = puller(&dir.path().join("store"), &reg.plain_config());
    let image = puller.pull(&reference).await.expect("pull");
    let srv = store
        .layer_dir(&image.diff_ids[1])
        .expect("dir")
        .join("srv");
    let meta = |name: &str| std::fs::symlink_metadata(srv.join(name)).expect(name);
    let suid = meta("suid");
    assert_eq!(
        (suid.uid(), suid.gid(), suid.mode() & 0o7777),
        (1000, 1001, 0o4755)
    );
    assert_eq!(suid.mtime(), 1_700_000_000);
    assert_eq!(
        suid.ino(),
        meta("suid-link").ino(),
        "hard link not preserved"
    );
    assert_eq!(
        xattr::get(srv.join("attr"), "user.keel").expect("xattr"),
        Some(b"value".to_vec())
    );
    assert_eq!(
        xattr::get(srv.join("attr"), "trusted.keel").expect("xattr"),
        Some(b"t".to_vec())
    );
    let null = meta("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(null.rdev()),
            nix::sys::stat::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(null.mode() & 0o7777, 0o666);
    let blk = meta("loop");
    assert!(blk.file_type().is_block_device());
    assert_eq!((nix::sys::stat::major(blk.rdev()), blk.gid()), (7, 6));
    assert!(meta("fifo").file_type().is_fifo());
    let abs = meta("abs");
    assert!(abs.file_type().is_symlink());
    assert_eq!((abs.uid(), abs.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_link(srv.join("abs")).expect("link"),
        Path::new("/etc/passwd")
    );
    let usage = store.usage().expect("usage");
    assert!(
        usage.layer_bytes > 1_000_000,
        "disk usage not accounted: {usage:?}"
    );
}

#[tokio::test]
async fn tampered_blob_fails_with_digest_error_and_leaves_nothing() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    layout.add_layer(
        "base",
        "unique",
        &TarLayer::new().file("unique.txt", b"only here\n").build(),
    );
    layout.push("unique", &format!("{}/test/tamper:1", reg.host()), &[]);
    let bad = layer_digests(&layout, "unique")[1].clone();
    let blob = reg.blob_file(&bad);
    let mut data = std::fs::read(&blob).expect("registry blob");
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, data).expect("tamper");

    let (store, puller) = puller(&dir.path().join("store"), &reg.plain_config());
    let err = puller
        .pull(&format!("{}/test/tamper:1", reg.host()))
        .await
        .expect_err("tampered blob accepted");
    let msg = err.to_string();
    eprintln!("tampered blob: {msg}");
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(
        msg.contains("test/tamper:1"),
        "error does not name the image: {msg}"
    );
    assert_eq!(err.kind(), FailureKind::Invalid);
    assert!(!store.has_blob(&bad), "tampered blob kept");
    let bad_diff = diff_ids(&layout, "unique")[1].clone();
    assert!(
        store.layer(&bad_diff).expect("layer").is_none(),
        "tampered layer kept"
    );
    assert!(store.images().expect("images").is_empty());
    assert_eq!(
        entries(&dir.path().join("store/tmp")),
        Vec::<String>::new(),
        "partial download left"
    );
}

#[tokio::test]
async fn layers_escaping_their_directory_are_rejected() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    let depth = "../".repeat(20);
    let escape_target = format!(
        "{depth}{}",
        outside.display().to_string().trim_start_matches('/')
    );
    layout.add_layer(
        "base",
        "dotdot",
        &TarLayer::new().file("../../../../evil", b"x").build(),
    );
    layout.add_layer(
        "base",
        "symlink",
        &TarLayer::new()
            .symlink("esc", &escape_target)
            .file("esc/pwned", b"x")
            .build(),
    );
    layout.push("dotdot", &format!("{}/test/evil:dotdot", reg.host()), &[]);
    layout.push("symlink", &format!("{}/test/evil:symlink", reg.host()), &[]);

    let (store, puller) = puller(&dir.path().join("store"), &reg.plain_config());
    for tag in ["dotdot", "symlink"] {
        let err = puller
            .pull(&format!("{}/test/evil:{tag}", reg.host()))
            .await
            .expect_err("escaping layer accepted");
        let msg = err.to_string();
        eprintln!("{tag} layer: {msg}");
        assert!(msg.contains("rejected"), "{tag}: {msg}");
        assert_eq!(err.kind(), FailureKind::Invalid, "{tag}");
        let bad = layer_digests(&layout, tag)[1].clone();
        assert!(!store.has_blob(&bad), "{tag}: bad blob kept");
        let bad_diff = diff_ids(&layout, tag)[1].clone();
        assert!(
            store.layer(&bad_diff).expect("layer").is_none(),
            "{tag}: bad layer kept"
        );
    }
    assert!(
        entries(&outside).is_empty(),
        "a layer wrote outside its directory"
    );
    assert!(store.images().expect("images").is_empty());
    let left = entries(&dir.path().join("store/tmp"));
    assert!(left.is_empty(), "left in tmp: {left:?}");
}

#[tokio::test]
async fn docker_io_mirror_serves_nginx_and_errors_are_clear() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    layout.push("base", &format!("{}/library/nginx:1.14", reg.host()), &[]);
    let cfg = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n",
        reg.host()
    );
    let (_, mirrored) = puller(&dir.path().join("store"), &cfg);
    let image = mirrored
        .pull("nginx:1.14")
        .await
        .expect("pull through mirror");
    assert_eq!(image.name, "docker.io/library/nginx:1.14");

    // Unknown tag: not found, naming the image.
    let (_, plain) = puller_for(&dir, &reg);
    let err = plain
        .pull(&format!("{}/test/none:9", reg.host()))
        .await
        .expect_err("unknown tag");
    assert_eq!(err.kind(), FailureKind::NotFound, "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    // Registry down: unreachable.
    let port = reg.port;
    drop(reg);
    let cfg =
        format!("mirrors:\n  \"127.0.0.1:{port}\":\n    endpoint: [\"http://127.0.0.1:{port}\"]\n");
    let (_, down) = puller(&dir.path().join("store2"), &cfg);
    let err = down
        .pull(&format!("127.0.0.1:{port}/test/bb:1"))
        .await
        .expect_err("down");
    assert_eq!(err.kind(), FailureKind::Unreachable, "{err}");
    assert!(err.to_string().contains("cannot reach registry"), "{err}");
}

fn puller_for(dir: &tempfile::TempDir, reg: &Registry) -> (Arc<Store>, Puller) {
    puller(&dir.path().join("store-plain"), &reg.plain_config())
}

#[tokio::test]
async fn tls_registry_with_htpasswd_auth() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = support::make_tls(dir.path());
    let htpasswd = dir.path().join("htpasswd");
    let line =
        support::run(std::process::Command::new("htpasswd").args(["-Bbn", "keel", "s3cret"]));
    std::fs::write(&htpasswd, line).expect("htpasswd");
    let reg = Registry::start(dir.path(), Some(&tls), Some(&htpasswd));
    let layout = Layout::busybox(dir.path());
    let cert_dir = format!("--dest-cert-dir={}", tls.cert_dir.display());
    layout.push(
        "base",
        &format!("{}/private/bb:1", reg.host()),
        &[&cert_dir, "--dest-creds=keel:s3cret"],
    );
    let reference = format!("{}/private/bb:1", reg.host());
    let cfg = |password: &str, ca: bool| {
        let mut c = format!(
            "configs:\n  \"{}\":\n    auth: {{username: keel, password: {password}}}\n",
            reg.host()
        );
        if ca {
            c += &format!("    tls: {{ca_file: {}}}\n", tls.ca.display());
        }
        c
    };

    let (_, good) = puller(&dir.path().join("s1"), &cfg("s3cret", true));
    good.pull(&reference).await.expect("pull with credentials");

    let (store, wrong) = puller(&dir.path().join("s2"), &cfg("wrong", true));
    let err = wrong
        .pull(&reference)
        .await
        .expect_err("wrong password accepted");
    let msg = err.to_string();
    eprintln!("wrong password: {msg}");
    assert_eq!(err.kind(), FailureKind::Unauthorized, "{msg}");
    assert!(msg.contains("401") && msg.contains("auth"), "{msg}");
    assert!(store.images().expect("images").is_empty());

    let (_, no_ca) = puller(&dir.path().join("s3"), &cfg("s3cret", false));
    let err = no_ca
        .pull(&reference)
        .await
        .expect_err("unknown CA accepted");
    eprintln!("unknown CA: {err}");
    assert!(matches!(err, PullError::Failed { .. }));
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn import_oci_archive_and_docker_save_tarballs() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::busybox(dir.path());
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("images dir");
    support::run(std::process::Command::new("skopeo").args([
        "copy",
        &format!("oci:{}", layout.tag_ref("base")),
        &format!(
            "docker-archive:{}:example.com/bb:docker",
            images.join("a-docker.tar").display()
        ),
    ]));
    let oci_archive = dir.path().join("b-oci.tar");
    support::run(std::process::Command::new("skopeo").args([
        "copy",
        &format!("oci:{}", layout.tag_ref("base")),
        &format!("oci-archive:{}:v1", oci_archive.display()),
    ]));

    let store = Store::open(&dir.path().join("store")).expect("store");
    let names = keel_image::import::import_dir(&store, &images).expect("import dir");
    assert_eq!(names, vec!["example.com/bb:docker".to_string()]);
    let err = keel_image::import::import_archive(&store, &oci_archive, None).expect_err("no name");
    assert!(err.to_string().contains("--name"), "{err}");
    let names = keel_image::import::import_archive(&store, &oci_archive, Some("example.com/bb"))
        .expect("import oci");
    assert_eq!(names, vec!["example.com/bb:v1".to_string()]);
    let usage = store.usage().expect("usage");
    // docker save carries the layer uncompressed, the OCI archive as umoci's gzip blob: the
    // content (diff_id) is the same, so it is unpacked once.
    assert_eq!((usage.images, usage.layers), (2, 1));
    let image = store
        .image("example.com/bb:v1")
        .expect("get")
        .expect("record");
    assert!(
        store
            .layer_dir(&image.diff_ids[0])
            .expect("dir")
            .join("bin/busybox")
            .is_file()
    );
    assert!(entries(&dir.path().join("store/tmp")).is_empty());
}

#[test]
fn cli_pull_ls_inspect_rm_prune() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    layout.push("base", &format!("{}/test/cli:1", reg.host()), &[]);
    let cfg = dir.path().join("registries.yaml");
    std::fs::write(&cfg, reg.plain_config()).expect("config");
    let root = dir.path().join("store");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel-image"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .expect("run keel-image");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let reference = format!("{}/test/cli:1", reg.host());
    let (code, out) = cli(&[
        "pull",
        &reference,
        "--registry-config",
        cfg.to_str().expect("utf8"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pulled"), "{out}");
    let (code, out) = cli(&["ls"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&reference), "{out}");
    let (code, out) = cli(&["inspect", &reference]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("\"config_digest\"") && out.contains("/bin/sh"),
        "{out}"
    );
    let (code, out) = cli(&[
        "pull",
        &format!("{}/test/none:1", reg.host()),
        "--registry-config",
        cfg.to_str().expect("utf8"),
    ]);
    assert_eq!(code, Some(1));
    assert!(out.contains("not found"), "{out}");
    let guard_store = Store::open(&root).expect("store");
    let _guard = RootfsGuard(&guard_store, "cli-c1");
    let bundle = dir.path().join("bundle");
    let (code, out) = cli(&[
        "mount",
        "cli-c1",
        &reference,
        "--bundle",
        bundle.to_str().expect("utf8"),
        "--arg",
        "-c",
        "--arg",
        "echo hi",
        "--env",
        "A=b",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(bundle.join("rootfs/bin/busybox").is_file(), "{out}");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("json");
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["-c", "echo hi"])
    );
    assert_eq!(spec["root"]["path"], "rootfs");
    assert!(
        spec["process"]["env"]
            .as_array()
            .expect("env")
            .contains(&serde_json::json!("A=b"))
    );
    let (code, out) = cli(&["rm", &reference]);
    assert_eq!(code, Some(1), "removed an image in use: {out}");
    assert!(out.contains("cli-c1"), "{out}");
    let (code, out) = cli(&["unmount", "cli-c1"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!is_mounted(&bundle.join("rootfs")));
    let (code, out) = cli(&["rm", &reference]);
    assert_eq!(code, Some(0), "{out}");
    let (code, _) = cli(&["prune", "--all"]);
    assert_eq!(code, Some(0));
    assert!(entries(&root.join("layers")).is_empty());
    assert!(entries(&root.join("blobs/sha256")).is_empty());
    let (code, out) = cli(&["inspect", &reference]);
    assert_eq!(code, Some(1));
    assert!(out.contains("pull or import"), "{out}");
}

/// Cleans up what the container test creates even if it fails midway.
struct ContainerCleanup {
    shim: std::path::PathBuf,
    state: std::path::PathBuf,
    cgroup_parent: String,
    id: &'static str,
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.shim)
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "--force", self.id])
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
        for controller in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = controller.path().join(&self.cgroup_parent);
            let _ = std::fs::remove_dir(parent.join(self.id));
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[tokio::test]
async fn container_runs_from_pulled_image_with_keel_shim() {
    need_all();
    // keel-shim is built by `cargo build --workspace --bins` (scripts/test.sh) next to our deps
    // dir; KEEL_SHIM overrides the binary.
    let shim = std::env::var_os("KEEL_SHIM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .expect("exe")
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .join("keel-shim")
        });
    assert!(
        shim.is_file(),
        "{} missing: build it first with `cargo build -p keel-shim`",
        shim.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    let top = TarLayer::new()
        .file("etc/.wh.motd", b"")
        .file("etc/issue", b"keel\n")
        .file("data/.wh..wh..opq", b"")
        .file("data/new.txt", b"new\n")
        .build();
    layout.add_layer("base", "app", &top);
    let reference = format!("{}/test/run:1", reg.host());
    layout.push("app", &reference, &[]);
    let (store, puller) = puller(&dir.path().join("store"), &reg.plain_config());
    let image = puller.pull(&reference).await.expect("pull");

    let id = "keel-image-run-test";
    let _rootfs = RootfsGuard(&store, id);
    let cleanup = ContainerCleanup {
        shim: shim.clone(),
        state: std::path::PathBuf::from(format!("/run/keel-image-test-{}", std::process::id())),
        cgroup_parent: format!("keel-image-test-{}", std::process::id()),
        id,
    };
    let bundle = dir.path().join("bundle");
    let rootfs = keel_image::rootfs::mount(&store, id, &image.name, Some(&bundle.join("rootfs")))
        .expect("mount");
    let config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&store.read_blob(&image.config_digest).expect("config"))
            .expect("parse");
    let script = "cat /etc/issue; test -e /etc/motd || echo motd-gone; \
                  test -e /data/old.txt || echo opaque-ok; cat /data/new.txt; echo env=$FROM_IMAGE";
    let mut spec = keel_image::spec::build(
        &config,
        &rootfs.path,
        &keel_image::spec::Overrides {
            command: vec!["/bin/sh".into()],
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        },
    )
    .expect("spec");
    spec.root_mut()
        .as_mut()
        .expect("root")
        .set_path("rootfs".into());
    // An absolute cgroup path of our own, never below this machine's process cgroup.
    spec.linux_mut()
        .as_mut()
        .expect("linux")
        .set_cgroups_path(Some(format!("/{}/{id}", cleanup.cgroup_parent).into()));
    spec.save(bundle.join("config.json")).expect("config.json");

    let out = std::process::Command::new(&shim)
        .arg("--root")
        .arg(&cleanup.state)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(id)
        .output()
        .expect("run keel-shim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keel-shim run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "keel\nmotd-gone\nopaque-ok\nnew\nenv=1\n");
}

#[tokio::test]
async fn concurrent_pulls_share_downloads_and_store() {
    need_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::start(dir.path(), None, None);
    let layout = Layout::busybox(dir.path());
    layout.add_layer(
        "base",
        "two",
        &TarLayer::new().file("two.txt", b"2\n").build(),
    );
    let reference = format!("{}/test/concurrent:1", reg.host());
    layout.push("two", &reference, &[]);

    // In one process: one Store, two pullers, the same image at once.
    let store = Arc::new(Store::open(&dir.path().join("store")).expect("store"));
    let downloads = Arc::new(Mutex::new(0));
    let make = || {
        let d = downloads.clone();
        Puller::new(store.clone(), config(&reg.plain_config())).with_progress(move |p| {
            if let Progress::LayerReady { cached: false, .. } = p {
                *d.lock().expect("lock") += 1;
            }
        })
    };
    let (a, b) = (make(), make());
    let (ra, rb) = tokio::join!(a.pull(&reference), b.pull(&reference));
    assert_eq!(ra.expect("pull a").diff_ids, rb.expect("pull b").diff_ids);
    assert_eq!(
        *downloads.lock().expect("lock"),
        2,
        "a layer was unpacked twice"
    );

    // Across processes: two CLI pulls into one fresh store at once.
    let cfg = dir.path().join("registries.yaml");
    std::fs::write(&cfg, reg.plain_config()).expect("config");
    let root = dir.path().join("store2");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keel-image"))
            .arg("--root")
            .arg(&root)
            .args(["pull", &reference, "--registry-config"])
            .arg(&cfg)
            .output()
            .expect("run keel-image")
    };
    let (oa, ob) = std::thread::scope(|s| {
        let ta = s.spawn(spawn);
        let tb = s.spawn(spawn);
        (ta.join().expect("thread"), tb.join().expect("thread"))
    });
    for o in [&oa, &ob] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let store2 = Store::open(&root).expect("store2");
    let usage = store2.usage().expect("usage");
    assert_eq!((usage.images, usage.layers), (1, 2));
    assert!(entries(&root.join("tmp")).is_empty());
}
