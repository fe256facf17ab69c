//! Pod limits (pure) and the files written, against fake hierarchies in temp folders.

use super::*;
use crate::qos::tests::{container, pod_with};

#[test]
fn pod_limits_follow_kubelet() {
    let cases: Vec<(Vec<Container>, Vec<Container>, PodResources)> = vec![
        (
            vec![container("a", &[], &[])],
            vec![],
            PodResources {
                cpu_shares: 2,
                cpu_quota: None,
                memory_limit: None,
                pids_limit: None,
            },
        ),
        (
            vec![
                container("a", &[], &[("cpu", "500m"), ("memory", "64Mi")]),
                container("b", &[], &[("cpu", "250m"), ("memory", "32Mi")]),
            ],
            vec![],
            PodResources {
                cpu_shares: 768,
                cpu_quota: Some(75_000),
                memory_limit: Some(96 << 20),
                pids_limit: None,
            },
        ),
        (
            // One container without limits: no pod quota or memory limit.
            vec![
                container("a", &[("cpu", "100m")], &[("cpu", "1"), ("memory", "64Mi")]),
                container("b", &[("cpu", "100m")], &[]),
            ],
            vec![],
            PodResources {
                cpu_shares: 204,
                cpu_quota: None,
                memory_limit: None,
                pids_limit: None,
            },
        ),
        (
            // The largest init container wins over the app sum.
            vec![container("a", &[], &[("memory", "64Mi")])],
            vec![container("i", &[], &[("memory", "128Mi")])],
            PodResources {
                cpu_shares: 2,
                cpu_quota: None,
                memory_limit: Some(128 << 20),
                pids_limit: None,
            },
        ),
        (
            vec![container("a", &[], &[("cpu", "1m"), ("memory", "1Mi")])],
            vec![],
            PodResources {
                cpu_shares: 2,
                cpu_quota: Some(1000),
                memory_limit: Some(1 << 20),
                pids_limit: None,
            },
        ),
    ];
    for (i, (c, init, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            pod_resources(&pod_with(c, init), None).expect("resources"),
            want,
            "case {i}"
        );
    }
}

#[test]
fn paths() {
    assert_eq!(pod_path("n1", QosClass::Guaranteed, "u"), "/keel/n1/podu");
    assert_eq!(
        pod_path("n1", QosClass::Burstable, "u"),
        "/keel/n1/burstable/podu"
    );
    assert_eq!(
        pod_path("n1", QosClass::BestEffort, "u"),
        "/keel/n1/besteffort/podu"
    );
    assert_eq!(container_path("/keel/n1/podu/", "abc"), "/keel/n1/podu/abc");
    let mi = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
              31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
              32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    let m = parse_v1_mounts(mi);
    assert_eq!(m.len(), 3);
    assert_eq!(m["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(Layout::V1(m).dirs("/keel/x").len(), 2);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn v1_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = BTreeMap::new();
    for c in ["cpu", "memory", "pids", "cpuset"] {
        std::fs::create_dir(tmp.path().join(c)).expect("mkdir");
        m.insert(c.to_string(), tmp.path().join(c));
    }
    std::fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-1\n").expect("cpus");
    let layout = Layout::V1(m);
    let pod = pod_with(
        vec![container(
            "a",
            &[("cpu", "250m")],
            &[("cpu", "500m"), ("memory", "64Mi")],
        )],
        vec![],
    );
    let path = "/keel/n1/burstable/podu1";
    ensure_pod_cgroup_in(&layout, path, &pod, Some(1024)).expect("ensure");
    let d = |c: &str, f: &str| tmp.path().join(c).join("keel/n1/burstable/podu1").join(f);
    assert_eq!(read(&d("cpu", "cpu.shares")), "256");
    assert_eq!(read(&d("cpu", "cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&d("cpu", "cpu.cfs_period_us")), "100000");
    assert_eq!(
        read(&d("memory", "memory.limit_in_bytes")),
        (64 << 20).to_string()
    );
    assert_eq!(read(&d("pids", "pids.max")), "1024");
    assert_eq!(read(&d("cpuset", "cpuset.cpus")), "0-1");
    let be = pod_with(vec![container("a", &[], &[])], vec![]);
    ensure_pod_cgroup_in(&layout, "/keel/n1/besteffort/podu2", &be, None).expect("ensure");
    assert_eq!(
        read(&tmp.path().join("cpu/keel/n1/besteffort/cpu.shares")),
        "2"
    );
    assert_eq!(
        read(
            &tmp.path()
                .join("memory/keel/n1/besteffort/podu2/memory.limit_in_bytes")
        ),
        "-1"
    );
    assert!(ensure_pod_cgroup_in(&layout, "keel/rel", &be, None).is_err());
    assert!(ensure_pod_cgroup_in(&layout, "/keel/../x", &be, None).is_err());
}

#[test]
fn v2_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .expect("controllers");
    let layout = Layout::V2(tmp.path().to_path_buf());
    let pod = pod_with(
        vec![container("a", &[], &[("cpu", "2"), ("memory", "1Gi")])],
        vec![],
    );
    ensure_pod_cgroup_in(&layout, "/keel/n1/podu1", &pod, None).expect("ensure");
    let d = tmp.path().join("keel/n1/podu1");
    assert_eq!(read(&d.join("cpu.max")), "200000 100000");
    assert_eq!(read(&d.join("memory.max")), (1u64 << 30).to_string());
    assert_eq!(
        read(&d.join("cpu.weight")),
        shares_to_weight(2048).to_string()
    );
    assert_eq!(read(&d.join("pids.max")), "max");
    // Delegation was requested at the root.
    assert!(read(&tmp.path().join("cgroup.subtree_control")).starts_with('+'));
}
