//! The walkthrough's images, built from Debian's busybox-static with umoci into one OCI layout:
//! `nginx` (busybox httpd serving a page that says `Welcome to nginx!` on port 80, with
//! nginx's STOPSIGNAL and ExposedPorts), `crashloop` (prints a line, exits 1), `memhog`
//! (allocates until the memory cgroup's OOM killer stops it) and `busybox` (a shell for
//! pod-to-pod checks: wget, ping, nslookup). The layout is built once per content (busybox
//! binary + recipe) under `target/keel-test-images/<key>/` and reused by later runs.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The page the `nginx` image serves.
pub const WELCOME_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>Welcome to nginx!</title></head>\n<body>\n<h1>Welcome to nginx!</h1>\n<p>Served by busybox httpd in a Keel test image.</p>\n</body>\n</html>\n";

/// What the `crashloop` image prints before it exits 1.
pub const CRASH_LINE: &str = "crashloop: exiting with status 1 on purpose";

/// What the `memhog` image prints before it allocates.
pub const MEMHOG_LINE: &str = "memhog: allocating until the memory limit stops me";

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One image of the layout: its tag and the `umoci config` flags that make it.
struct Recipe {
    tag: &'static str,
    config: &'static [&'static str],
    /// Files added on top of the busybox base: (path in the rootfs, contents).
    files: &'static [(&'static str, &'static str)],
}

const RECIPES: &[Recipe] = &[
    Recipe {
        tag: "nginx",
        // nginx's Dockerfile: EXPOSE 80, STOPSIGNAL SIGQUIT; httpd logs each request (-v) to
        // stderr in the foreground (-f), so `kubectl logs` shows them. As PID 1 httpd would
        // ignore SIGQUIT (no handler) and every delete would wait out the grace period; the
        // shell ends on it as nginx does, and the kernel then ends httpd with the namespace.
        config: &[
            "--config.cmd=sh",
            "--config.cmd=-c",
            "--config.cmd=trap 'exit 0' QUIT TERM; httpd -f -v -p 80 -h /www & wait",
            "--config.exposedports=80/tcp",
            "--config.stopsignal=SIGQUIT",
        ],
        files: &[("www/index.html", WELCOME_PAGE)],
    },
    Recipe {
        tag: "crashloop",
        config: &[
            "--config.cmd=sh",
            "--config.cmd=-c",
            "--config.cmd=echo 'crashloop: exiting with status 1 on purpose'; exit 1",
        ],
        files: &[],
    },
    Recipe {
        tag: "memhog",
        // busybox tail buffers a line it never finishes: /dev/zero has no newline, so its
        // anonymous memory grows until the OOM killer ends it (checked under a 32 MiB limit).
        config: &[
            "--config.cmd=sh",
            "--config.cmd=-c",
            "--config.cmd=echo 'memhog: allocating until the memory limit stops me'; exec tail /dev/zero",
        ],
        files: &[],
    },
    Recipe {
        tag: "busybox",
        config: &["--config.cmd=sh"],
        files: &[],
    },
];

/// Bumped whenever the build below changes in a way the recipes do not show.
const BUILDER_VERSION: &str = "keel-test-images v1";

/// Where tagged images are pushed: (layout tag, repository:tag in the registry).
pub const PUSHES: &[(&str, &str)] = &[
    ("nginx", "library/nginx:1.14"),
    ("nginx", "library/nginx:latest"),
    ("nginx", "nginx:latest"),
    ("crashloop", "library/crashloop:1"),
    ("memhog", "library/memhog:1"),
    ("busybox", "library/busybox:latest"),
];

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails (never skips) when a tool is missing, saying how to install it.
pub fn need(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{bin} not found: install it with `apt-get install -y {package}` (listed in .ci/packages.d/tests.txt)"
    );
}

const BUSYBOX: &str = "/bin/busybox";

/// The content key: the busybox binary, the recipes and the builder version.
fn key() -> String {
    let bin = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("{BUSYBOX}: {e}; install it with `apt-get install -y busybox-static`")
    });
    let mut h = Sha256::new();
    h.update(BUILDER_VERSION);
    h.update(&bin);
    for r in RECIPES {
        h.update(r.tag);
        for c in r.config {
            h.update(c);
        }
        for (p, c) in r.files {
            h.update(p);
            h.update(c);
        }
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// `target/keel-test-images` (or `$KEEL_IMAGE_CACHE`).
fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KEEL_IMAGE_CACHE") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/{deps,examples}/<exe> -> target/
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("keel-test-images"))
        .expect("tests run from target/<profile>/deps")
}

/// The OCI layout holding every recipe's tag, built on first use.
pub fn layout() -> PathBuf {
    need("umoci", "umoci");
    let dir = cache_root().join(key());
    let layout = dir.join("layout");
    if layout.join("index.json").exists() {
        return layout;
    }
    std::fs::create_dir_all(cache_root()).expect("image cache folder");
    // Built aside and renamed into place, so a concurrent or interrupted build never leaves
    // a half layout under the key.
    let work = tempfile::tempdir_in(cache_root()).expect("build folder");
    build(work.path());
    match std::fs::rename(work.path(), &dir) {
        Ok(()) => {}
        Err(_) if layout.join("index.json").exists() => {}
        Err(e) => panic!("moving the built images to {}: {e}", dir.display()),
    }
    layout
}

fn build(work: &Path) {
    let layout = work.join("layout");
    let tag = |t: &str| format!("{}:{t}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &tag("base")]));
    let bundle = work.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &tag("base")])
        .arg(&bundle));
    fill_base(&bundle.join("rootfs"));
    run(Command::new("umoci")
        .args(["repack", "--image", &tag("base")])
        .arg(&bundle));
    std::fs::remove_dir_all(&bundle).expect("remove the base bundle");
    run(Command::new("umoci").args([
        "config",
        "--image",
        &tag("base"),
        &format!("--config.env={PATH_ENV}"),
    ]));
    for r in RECIPES {
        run(Command::new("umoci").args(["tag", "--image", &tag("base"), r.tag]));
        if !r.files.is_empty() {
            let b = work.join(format!("bundle-{}", r.tag));
            run(Command::new("umoci")
                .args(["unpack", "--image", &tag(r.tag)])
                .arg(&b));
            for (path, contents) in r.files {
                let p = b.join("rootfs").join(path);
                std::fs::create_dir_all(p.parent().expect("a file in a folder")).expect("mkdir");
                std::fs::write(&p, contents).expect("write image file");
            }
            run(Command::new("umoci")
                .args(["repack", "--image", &tag(r.tag)])
                .arg(&b));
            std::fs::remove_dir_all(&b).expect("remove the bundle");
        }
        run(Command::new("umoci")
            .args(["config", "--image", &tag(r.tag)])
            .args(r.config));
    }
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout));
}

/// busybox with a link per applet, and the few files a container expects.
fn fill_base(root: &Path) {
    for d in ["bin", "etc", "root", "tmp", "www", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod /tmp");
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).expect("applet link");
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}
