//! Real parts for the registry tests: Debian's docker-registry on a loopback port (plain HTTP, or
//! TLS with htpasswd auth and a generated CA), images built with umoci from busybox-static and
//! pushed with skopeo, and crafted layer tarballs added verbatim with `umoci raw add-layer`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails (never skips) when a tool is missing, saying how to install it.
pub fn need(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{bin} not found: install it with `apt-get install -y {package}` (listed in .ci/packages.d/image.txt)"
    );
}

pub fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests mount overlayfs and create device nodes: run them as root (sudo cargo test -p keel-image)"
    );
}

pub fn need_all() {
    need_root();
    need("docker-registry", "docker-registry");
    need("umoci", "umoci");
    need("skopeo", "skopeo");
    need("openssl", "openssl");
    need("htpasswd", "apache2-utils");
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox missing: apt-get install -y busybox-static"
    );
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A directory holding only ca.crt (skopeo's --dest-cert-dir).
    pub cert_dir: PathBuf,
}

pub fn make_tls(dir: &Path) -> Tls {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=keel-test-ca",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(p("srv.key"))
        .arg("-out")
        .arg(p("srv.csr")));
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
        .arg(p("srv.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("srv.crt"))
        .arg("-extfile")
        .arg(p("ext")));
    let cert_dir = p("certs");
    std::fs::create_dir_all(&cert_dir).expect("certs");
    std::fs::copy(p("ca.crt"), cert_dir.join("ca.crt")).expect("copy ca");
    Tls {
        ca: p("ca.crt"),
        cert: p("srv.crt"),
        key: p("srv.key"),
        cert_dir,
    }
}

/// A docker-registry process on a free loopback port; killed on drop.
pub struct Registry {
    pub port: u16,
    pub data: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry storing under `dir`, optionally with TLS and htpasswd auth.
    pub fn start(dir: &Path, tls: Option<&Tls>, htpasswd: Option<&Path>) -> Self {
        let port = free_port();
        let data = dir.join("registry-data");
        let mut config = format!(
            "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        if let Some(t) = tls {
            config += &format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                t.cert.display(),
                t.key.display()
            );
        }
        if let Some(h) = htpasswd {
            config += &format!(
                "auth: {{htpasswd: {{realm: keel-test, path: {}}}}}\n",
                h.display()
            );
        }
        let config_path = dir.join(format!("registry-{port}.yml"));
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.join(format!("registry-{port}.log"))).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry (apt-get install -y docker-registry)");
        let registry = Registry { port, data, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on 127.0.0.1:{port} within 20 s; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file the registry serves a blob from.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A registries.yaml reaching this (plain HTTP) registry under its own name.
    pub fn plain_config(&self) -> String {
        format!(
            "mirrors:\n  \"{h}\":\n    endpoint: [\"http://{h}\"]\n",
            h = self.host()
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout built with umoci.
pub struct Layout {
    pub dir: PathBuf,
    work: PathBuf,
}

impl Layout {
    /// A layout with tag `base`: busybox-static, a /bin/sh link, /etc/motd, /etc/gone,
    /// /data/old.txt and /data/keep/x.
    pub fn busybox(dir: &Path) -> Self {
        let layout = dir.join("layout");
        let work = dir.join("work");
        let tag = |t: &str| format!("{}:{t}", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &tag("base")]));
        let bundle = work.join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--image", &tag("base")])
            .arg(&bundle));
        let root = bundle.join("rootfs");
        for d in ["bin", "etc", "data/keep"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox");
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("sh");
        std::fs::write(root.join("etc/motd"), "hello\n").expect("motd");
        std::fs::write(root.join("etc/gone"), "deleted above\n").expect("gone");
        std::fs::write(root.join("data/old.txt"), "old\n").expect("old");
        std::fs::write(root.join("data/keep/x"), "x\n").expect("x");
        run(Command::new("umoci")
            .args(["repack", "--image", &tag("base")])
            .arg(&bundle));
        run(Command::new("umoci").args([
            "config",
            "--image",
            &tag("base"),
            "--config.cmd",
            "/bin/sh",
            "--config.env",
            "FROM_IMAGE=1",
        ]));
        std::fs::remove_dir_all(&bundle).expect("rm bundle");
        Layout { dir: layout, work }
    }

    pub fn tag_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// Copies tag `from` to `to`.
    pub fn tag(&self, from: &str, to: &str) {
        run(Command::new("umoci").args(["tag", "--image", &self.tag_ref(from), to]));
    }

    /// Tag `to` = `from` with `/etc/gone` deleted by umoci (it writes the `.wh.` entry).
    pub fn delete_file(&self, from: &str, to: &str, path: &str) {
        self.tag(from, to);
        let bundle = self.work.join(format!("bundle-{to}"));
        run(Command::new("umoci")
            .args(["unpack", "--image", &self.tag_ref(to)])
            .arg(&bundle));
        std::fs::remove_file(bundle.join("rootfs").join(path)).expect("rm");
        run(Command::new("umoci")
            .args(["repack", "--image", &self.tag_ref(to)])
            .arg(&bundle));
        std::fs::remove_dir_all(&bundle).expect("rm bundle");
    }

    /// Tag `to` = `from` plus `tar` added verbatim as a new top layer.
    pub fn add_layer(&self, from: &str, to: &str, tar: &[u8]) {
        self.tag(from, to);
        std::fs::create_dir_all(&self.work).expect("work");
        let file = self.work.join(format!("layer-{to}.tar"));
        std::fs::write(&file, tar).expect("layer");
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &self.tag_ref(to)])
            .arg(&file));
    }

    /// The manifest digest a tag points at, from index.json.
    pub fn manifest_digest(&self, tag: &str) -> String {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).expect("index"))
                .expect("json");
        index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str())
            .unwrap_or_else(|| panic!("tag {tag} not in layout"))
            .to_string()
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(
            self.dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .expect("blob")
    }

    /// Adds an image index (tag `to`) listing `entries` of (manifest digest, os, arch).
    pub fn add_index(&self, to: &str, entries: &[(&str, &str, &str)]) {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(d, os, arch)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": d, "size": self.blob(d).len(),
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("index json");
        let digest = keel_image::store::sha256_digest(&index);
        std::fs::write(
            self.dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            &index,
        )
        .expect("write index blob");
        let path = self.dir.join("index.json");
        let mut top: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("index")).expect("json");
        top["manifests"]
            .as_array_mut()
            .expect("manifests")
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest, "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": to},
            }));
        std::fs::write(&path, serde_json::to_vec(&top).expect("json")).expect("write index.json");
    }

    /// Pushes tag `tag` to `dest` (`host/repo:tag`) with skopeo; `extra` adds flags.
    pub fn push(&self, tag: &str, dest: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy").args(extra);
        if !extra.iter().any(|a| a.starts_with("--dest-cert-dir")) {
            cmd.arg("--dest-tls-verify=false");
        }
        run(cmd
            .arg(format!("oci:{}", self.tag_ref(tag)))
            .arg(format!("docker://{dest}")));
    }
}

/// A tar layer built entry by entry; paths are written raw (no checks), as a hostile layer's.
pub struct TarLayer(tar::Builder<Vec<u8>>);

impl TarLayer {
    pub fn new() -> Self {
        TarLayer(tar::Builder::new(Vec::new()))
    }

    fn entry(
        self,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> Self {
        self.entry_as(path, kind, data, link, mode, (0, 0), (0, 0))
    }

    /// Any entry with owner (uid, gid) and device (major, minor).
    #[allow(clippy::too_many_arguments)]
    pub fn entry_as(
        mut self,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
        owner: (u64, u64),
        device: (u32, u32),
    ) -> Self {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_device_major(device.0).expect("major");
        h.set_device_minor(device.1).expect("minor");
        if let Some(l) = link {
            h.set_link_name(l).expect("link");
        }
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    /// A PAX extended header applying `records` to the next entry.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts the whole record including itself.
            let body = key.len() + value.len() + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() != body.to_string().len() {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.entry("PaxHeader", tar::EntryType::XHeader, &data, None, 0o644)
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, data, None, 0o644)
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, b"", None, 0o755)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, tar::EntryType::Symlink, b"", Some(target), 0o777)
    }

    pub fn build(self) -> Vec<u8> {
        self.0.into_inner().expect("tar")
    }
}

/// Everything left in a store directory (for "nothing left behind" checks).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
