//! Root tests of resource limits on whatever cgroup layout the machine has (hybrid v1 on the
//! CI host; cgroup v2 inside the VM run by scripts/test.d/shim-cgroupv2-vm.sh).

mod common;

use common::Env;
use keel_shim::proto::{self, Op, Reply, Request};
use std::time::{Duration, Instant};

fn stats(env: &Env, id: &str) -> proto::Stats {
    let sock = env.dir(id).join(proto::SOCKET_NAME);
    match proto::call(
        &sock,
        &Request::new(Op::Stats),
        Some(Duration::from_secs(10)),
    )
    .expect("stats")
    .result
    {
        Reply::Stats { stats } => stats,
        other => panic!("{other:?}"),
    }
}

#[test]
fn memory_limit_oom_is_reported_as_oom() {
    let env = Env::new("oom");
    let mut cfg = env.config(&[
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=200M count=1; echo survived",
    ]);
    cfg["linux"]["resources"]["memory"] = serde_json::json!({"limit": 33554432, "swap": 33554432});
    let b = env.bundle("b", &cfg);
    let o = env.shim(&["run", "-d", "--bundle", b.to_str().expect("utf8"), "m"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exit = common::wait_exit(&env, "m");
    assert!(exit.oom_killed, "{exit:?}");
    assert!(env.shim(&["delete", "m"]).status.success());
    // Control: the same container with a generous limit is not OOM-killed.
    let mut cfg = env.config(&[
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=20M count=1",
    ]);
    cfg["linux"]["resources"]["memory"] = serde_json::json!({"limit": 268435456});
    let b = env.bundle("ok", &cfg);
    assert!(
        env.shim(&["run", "-d", "--bundle", b.to_str().expect("utf8"), "n"])
            .status
            .success()
    );
    let exit = common::wait_exit(&env, "n");
    assert_eq!((exit.code, exit.oom_killed), (0, false), "{exit:?}");
    assert!(env.shim(&["delete", "n"]).status.success());
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn pids_max_stops_a_fork_bomb() {
    let env = Env::new("pids");
    let log = env.tmp.path().join("p.log");
    let mut cfg = env.config(&[
        "/bin/sh",
        "-c",
        "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done); echo spawned; sleep 30",
    ]);
    cfg["linux"]["resources"]["pids"] = serde_json::json!({"limit": 10});
    let b = env.bundle("b", &cfg);
    let o = env.shim(&[
        "run",
        "-d",
        "--cri-log",
        log.to_str().expect("utf8"),
        "--bundle",
        b.to_str().expect("utf8"),
        "f",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::cri_records(&log)
        .iter()
        .any(|r| r.2.contains("spawned"))
    {
        assert!(
            Instant::now() < deadline,
            "loop never finished: {:?}",
            common::cri_records(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = stats(&env, "f");
    assert_eq!(s.pids_limit, Some(10));
    assert!(s.pids_current <= 10, "{s:?}");
    let recs = common::cri_records(&log);
    assert!(
        recs.iter().any(|r| r.0 == "stderr" && r.2.contains("fork")),
        "the shell must report failed forks: {recs:?}"
    );
    assert!(env.shim(&["delete", "-f", "f"]).status.success());
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn cpu_quota_throttles() {
    let env = Env::new("cpu");
    let mut cfg = env.config(&["/bin/sh", "-c", "while :; do :; done"]);
    cfg["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 10000, "period": 100000});
    let b = env.bundle("b", &cfg);
    assert!(
        env.shim(&["run", "-d", "--bundle", b.to_str().expect("utf8"), "c"])
            .status
            .success()
    );
    let start = Instant::now();
    let before = stats(&env, "c");
    let deadline = start + Duration::from_secs(10);
    let after = loop {
        std::thread::sleep(Duration::from_millis(100));
        let s = stats(&env, "c");
        if s.cpu_throttled_periods >= 5 && start.elapsed() >= Duration::from_secs(1) {
            break s;
        }
        assert!(Instant::now() < deadline, "never throttled: {s:?}");
    };
    let wall = start.elapsed().as_nanos() as u64;
    let used = after.cpu_usage_ns - before.cpu_usage_ns;
    // 10% of one CPU, with slack for the first period and accounting granularity.
    assert!(
        used < wall / 4,
        "used {used} ns of CPU in {wall} ns wall at a 10% quota"
    );
    assert!(after.cpu_throttled_ns > 0, "{after:?}");
    assert!(env.shim(&["delete", "-f", "c"]).status.success());
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn events_stats_reports_the_layout() {
    let env = Env::new("ev");
    let b = env.bundle("b", &env.config(&["/bin/sleep", "30"]));
    assert!(
        env.shim(&["run", "-d", "--bundle", b.to_str().expect("utf8"), "e"])
            .status
            .success()
    );
    let o = env.shim(&["events", "--stats", "e"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("events json");
    let expect = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        2
    } else {
        1
    };
    assert_eq!(v["data"]["cgroup_version"], expect);
    assert!(v["data"]["pids_current"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(env.shim(&["delete", "-f", "e"]).status.success());
}
