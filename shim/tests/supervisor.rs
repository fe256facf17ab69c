//! Root tests of the supervisor: CRI logs, the socket protocol, and surviving the caller.

mod common;

use common::Env;
use keel_shim::proto::{self, ExecRequest, Op, Reply, Request};
use std::time::{Duration, Instant};

#[test]
fn cri_log_captures_stdout_and_stderr() {
    let env = Env::new("crilog");
    let log = env.tmp.path().join("c.log");
    let b = env.bundle(
        "b",
        &env.config(&[
            "/bin/sh",
            "-c",
            "echo line one; echo to stderr >&2; printf no-newline; exit 3",
        ]),
    );
    let (code, _, err) = env.run(&b, "c", &["--cri-log", log.to_str().expect("utf8")]);
    assert_eq!(code, 3, "{err}");
    let recs = common::cri_records(&log);
    let flat: Vec<(&str, &str, &str)> = recs
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert!(flat.contains(&("stdout", "F", "line one")), "{flat:?}");
    assert!(flat.contains(&("stderr", "F", "to stderr")), "{flat:?}");
    assert!(flat.contains(&("stdout", "P", "no-newline")), "{flat:?}");
    assert_eq!(flat.len(), 3, "{flat:?}");
}

#[test]
fn socket_protocol_state_exec_stats_kill_wait() {
    let env = Env::new("proto");
    let log = env.tmp.path().join("p.log");
    let b = env.bundle(
        "b",
        &env.config(&[
            "/bin/sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 1; done",
        ]),
    );
    let o = env.shim(&[
        "run",
        "-d",
        "--cri-log",
        log.to_str().expect("utf8"),
        "--bundle",
        b.to_str().expect("utf8"),
        "p",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sock = env.dir("p").join(proto::SOCKET_NAME);
    let t = Some(Duration::from_secs(10));
    let r = proto::call(&sock, &Request::new(Op::State), t).expect("state");
    match r.result {
        Reply::State { state } => assert_eq!(state.status, proto::Status::Running),
        other => panic!("{other:?}"),
    }
    let r = proto::call(
        &sock,
        &Request::new(Op::Exec(ExecRequest {
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo out $$; echo err >&2; hostname; exit 4".into(),
            ],
            ..Default::default()
        })),
        t,
    )
    .expect("exec");
    match r.result {
        Reply::ExecResult {
            exit_code,
            stdout,
            stderr,
            ..
        } => {
            assert_eq!(exit_code, 4);
            assert!(
                stdout.contains("keeltest"),
                "exec joins the uts namespace: {stdout}"
            );
            assert!(!stdout.contains("out 1\n"), "exec is not pid 1: {stdout}");
            assert_eq!(stderr, "err\n");
        }
        other => panic!("{other:?}"),
    }
    let r = proto::call(&sock, &Request::new(Op::Stats), t).expect("stats");
    match r.result {
        Reply::Stats { stats } => {
            assert!(stats.pids_current >= 1, "{stats:?}");
            assert!(stats.memory_usage_bytes > 0, "{stats:?}");
        }
        other => panic!("{other:?}"),
    }
    let bad = proto::call(
        &sock,
        &Request {
            version: 99,
            op: Op::State,
        },
        t,
    )
    .expect("v99");
    assert!(matches!(bad.result, Reply::Error { .. }));
    // CLI exec too.
    let o = env.shim(&["exec", "p", "/bin/sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    let waiter = {
        let sock = sock.clone();
        std::thread::spawn(move || proto::call(&sock, &Request::new(Op::Wait), None))
    };
    // Either order is fine: a waiter that arrives after the exit finds the socket gone and
    // reads exit.json instead.
    let r = proto::call(
        &sock,
        &Request::new(Op::Kill {
            signal: 15,
            all: false,
        }),
        t,
    )
    .expect("kill");
    assert_eq!(r.result, Reply::Ok);
    let exit = match waiter.join().expect("join").map(|r| r.result) {
        Ok(Reply::Exited { exit }) => exit,
        Ok(other) => panic!("{other:?}"),
        Err(_) => proto::read_exit_file(&env.dir("p")).expect("exit file"),
    };
    assert_eq!(exit.code, 42);
    assert!(!exit.oom_killed);
    let recs = common::cri_records(&log);
    assert!(recs.iter().any(|r| r.2 == "ready"), "{recs:?}");
    assert!(env.shim(&["delete", "p"]).status.success());
}

#[test]
fn supervisor_survives_caller_sigkill_and_records_exit() {
    let env = Env::new("survive");
    let log = env.tmp.path().join("s.log");
    let marker = env.tmp.path().join("go");
    let mut cfg = env.config(&[
        "/bin/sh",
        "-c",
        "echo started; while [ ! -e /host/go ]; do sleep 0.05; done; echo done; exit 9",
    ]);
    cfg["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/host", "type": "bind", "source": env.tmp.path(), "options": ["rbind", "ro"]
    }));
    let b = env.bundle("b", &cfg);
    let mut caller = std::process::Command::new(common::bin())
        .arg("--root")
        .arg(&env.root)
        .args([
            "run",
            "--cri-log",
            log.to_str().expect("utf8"),
            "--bundle",
            b.to_str().expect("utf8"),
            "s",
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn run");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !common::cri_records(&log).iter().any(|r| r.2 == "started") {
        assert!(Instant::now() < deadline, "container never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    caller.kill().expect("SIGKILL the caller");
    let _ = caller.wait();
    assert_eq!(
        env.state("s")["status"],
        "running",
        "the container outlives its caller"
    );
    std::fs::write(&marker, "").expect("marker");
    env.wait_status("s", "stopped", 10);
    let exit = common::wait_exit(&env, "s");
    assert_eq!(exit.code, 9);
    assert!(common::cri_records(&log).iter().any(|r| r.2 == "done"));
    assert!(env.shim(&["delete", "s"]).status.success());
}

#[test]
fn terminal_true_sends_the_pty_master_over_the_console_socket() {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let env = Env::new("tty");
    let sock_path = env.tmp.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).expect("bind console socket");
    let mut cfg = env.config(&["/bin/sh", "-c", "tty; echo on-the-tty"]);
    cfg["process"]["terminal"] = serde_json::json!(true);
    let b = env.bundle("b", &cfg);
    let o = env.shim(&[
        "create",
        "--console-socket",
        sock_path.to_str().expect("utf8"),
        "--bundle",
        b.to_str().expect("utf8"),
        "t",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (conn, _) = listener.accept().expect("accept console connection");
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    let mut master = None;
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this descriptor for us (SCM_RIGHTS).
            master = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let master = master.expect("a pty master was sent");
    assert!(env.shim(&["start", "t"]).status.success());
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.contains("on-the-tty") && Instant::now() < deadline {
        let mut chunk = [0u8; 256];
        match f.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&chunk[..n])),
        }
    }
    assert!(out.contains("/dev/pts/"), "tty must be a pts: {out:?}");
    assert!(out.contains("on-the-tty"), "{out:?}");
    common::wait_exit(&env, "t");
    assert!(env.shim(&["delete", "t"]).status.success());
}
