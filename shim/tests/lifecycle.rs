//! Root tests of the OCI lifecycle through the real binary: exit codes, foreground and
//! detached runs, the status guards of start/kill/delete, and bad input.

mod common;

use common::Env;
use std::time::{Duration, Instant};

#[test]
fn exit_codes_0_7_137_143() {
    let env = Env::new("exit");
    let ok = env.bundle("ok", &env.config(&["/bin/true"]));
    assert_eq!(env.run(&ok, "ok", &[]).0, 0);
    let seven = env.bundle("seven", &env.config(&["/bin/sh", "-c", "exit 7"]));
    assert_eq!(env.run(&seven, "seven", &[]).0, 7);

    // SIGKILL from outside while running in the foreground: 128+9.
    let sleeper = env.bundle("sleeper", &env.config(&["/bin/sleep", "60"]));
    let mut fg = std::process::Command::new(common::bin())
        .arg("--root")
        .arg(&env.root)
        .args(["run", "--bundle", sleeper.to_str().expect("utf8"), "k"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn run");
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.shim(&["state", "k"]).stdout.is_empty() || env.state("k")["status"] != "running" {
        assert!(Instant::now() < deadline, "k never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(env.shim(&["kill", "k", "KILL"]).status.success());
    assert_eq!(fg.wait().expect("wait run").code(), Some(137));

    // SIGTERM (numeric) to a process that is not a pid-namespace init: 128+15.
    let mut cfg = env.config(&["/bin/sleep", "60"]);
    cfg["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]);
    let term = env.bundle("term", &cfg);
    let o = env.shim(&["run", "-d", "--bundle", term.to_str().expect("utf8"), "t"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(env.shim(&["kill", "t", "15"]).status.success());
    env.wait_status("t", "stopped", 10);
    let exit = common::wait_exit(&env, "t");
    assert_eq!((exit.code, exit.signal), (143, Some(15)));
    assert!(env.shim(&["delete", "t"]).status.success());
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn create_start_kill_delete_rules() {
    let env = Env::new("rules");
    let b = env.bundle("b", &env.config(&["/bin/sleep", "60"]));
    let bs = b.to_str().expect("utf8");
    let pidfile = env.tmp.path().join("pid");
    let o = env.shim(&[
        "create",
        "--bundle",
        bs,
        "--pid-file",
        pidfile.to_str().expect("utf8"),
        "c",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = env.state("c");
    assert_eq!(st["status"], "created");
    let pid: i64 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .parse()
        .expect("pid");
    assert_eq!(st["pid"], pid);
    // create runs no user code: init is still keel-shim, not sleep.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_ne!(comm.trim(), "sleep");
    // duplicate id
    let dup = env.shim(&["create", "--bundle", bs, "c"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    assert!(env.shim(&["start", "c"]).status.success());
    assert_eq!(env.state("c")["status"], "running");
    let again = env.shim(&["start", "c"]);
    assert!(
        !again.status.success(),
        "start of a running container must fail"
    );
    let del = env.shim(&["delete", "c"]);
    assert!(
        !del.status.success(),
        "delete of a running container needs --force"
    );
    assert_eq!(
        env.state("c")["status"],
        "running",
        "a failed delete changes nothing"
    );
    // pause / resume
    assert!(env.shim(&["pause", "c"]).status.success());
    assert_eq!(env.state("c")["status"], "paused");
    assert!(env.shim(&["resume", "c"]).status.success());
    assert_eq!(env.state("c")["status"], "running");
    let ps = env.shim(&["ps", "--format", "json", "c"]);
    let pids: Vec<i64> = serde_json::from_slice(&ps.stdout).expect("ps json");
    assert_eq!(pids, vec![pid]);
    assert!(env.shim(&["kill", "c", "KILL"]).status.success());
    env.wait_status("c", "stopped", 10);
    let k = env.shim(&["kill", "c", "TERM"]);
    assert!(!k.status.success(), "kill of a stopped container must fail");
    assert!(env.shim(&["delete", "c"]).status.success());
    assert!(!env.dir("c").exists());

    // A created container may be deleted without --force; -f of a missing id succeeds.
    assert!(env.shim(&["create", "--bundle", bs, "d"]).status.success());
    let t = Instant::now();
    assert!(env.shim(&["delete", "d"]).status.success());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(env.shim(&["delete", "-f", "nope"]).status.success());

    // run -d + delete -f of a running container is fast (no fixed sleep).
    assert!(
        env.shim(&["run", "-d", "--bundle", bs, "e"])
            .status
            .success()
    );
    assert_eq!(env.state("e")["status"], "running");
    let t = Instant::now();
    assert!(env.shim(&["delete", "-f", "e"]).status.success());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        env.leftover_cgroups().is_empty(),
        "{:?}",
        env.leftover_cgroups()
    );
}

fn bad(env: &Env, args: &[&str], id: &str, needle: &str) {
    let o = env.shim(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} must fail");
    assert_eq!(err.lines().count(), 1, "one stderr line, got {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!env.dir(id).exists(), "state folder left behind for {id}");
    assert!(
        env.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn bad_input_gives_one_line_and_leaves_nothing() {
    let env = Env::new("bad");
    let empty = env.tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    bad(
        &env,
        &["create", "--bundle", empty.to_str().expect("utf8"), "a"],
        "a",
        "config.json",
    );

    let mut cfg = env.config(&["/bin/true"]);
    cfg["root"]["path"] = serde_json::json!("/nonexistent/rootfs");
    let b = env.bundle("norootfs", &cfg);
    bad(
        &env,
        &["create", "--bundle", b.to_str().expect("utf8"), "b"],
        "b",
        "root.path",
    );

    let mut cfg = env.config(&["/bin/true"]);
    cfg["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_RESOURCE"]);
    let b = env.bundle("caps", &cfg);
    bad(
        &env,
        &["create", "--bundle", b.to_str().expect("utf8"), "c"],
        "c",
        "CAP_SYS_RESOURCE",
    );

    let mut cfg = env.config(&["/bin/true"]);
    cfg["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_NOTIFY"}]});
    let b = env.bundle("seccomp", &cfg);
    bad(
        &env,
        &["create", "--bundle", b.to_str().expect("utf8"), "d"],
        "d",
        "seccomp",
    );

    let b = env.bundle("missingexe", &env.config(&["/bin/no-such-program"]));
    bad(
        &env,
        &["run", "--bundle", b.to_str().expect("utf8"), "e"],
        "e",
        "no-such-program",
    );

    let good = env.bundle("good", &env.config(&["/bin/sleep", "60"]));
    bad(
        &env,
        &["create", "--bundle", good.to_str().expect("utf8"), "../x"],
        "../x",
        "invalid container id",
    );
    assert!(
        env.shim(&["run", "-d", "--bundle", good.to_str().expect("utf8"), "f"])
            .status
            .success()
    );
    let o = env.shim(&["kill", "f", "SIGNOPE"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown signal"));
    assert_eq!(env.state("f")["status"], "running");

    // --log-format json records the error as JSON.
    let log = env.tmp.path().join("err.json");
    let o = env.shim(&[
        "--log",
        log.to_str().expect("utf8"),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    assert!(!o.status.success());
    let rec: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).expect("log").trim())
            .expect("json record");
    assert_eq!(rec["level"], "error");
    assert!(rec["msg"].as_str().unwrap_or_default().contains("nope"));
}

#[test]
fn features_and_version() {
    let env = Env::new("feat");
    let v = env.shim(&["--version"]);
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("keel-shim version "));
    let f = env.shim(&["features"]);
    let j: serde_json::Value = serde_json::from_slice(&f.stdout).expect("features json");
    assert_eq!(j["linux"]["seccomp"]["enabled"], true);
}
