//! Root tests of isolation: pid namespace, hostname, masked and read-only paths,
//! capabilities, seccomp, non-root user. Each negative check has a positive control so it
//! can fail for the right reason.

mod common;

use common::Env;

fn sh(env: &Env, name: &str, cfg: serde_json::Value) -> (i32, String, String) {
    let b = env.bundle(name, &cfg);
    env.run(&b, name, &[])
}

#[test]
fn pid_one_hostname_masked_and_readonly_paths() {
    let env = Env::new("iso");
    let script = "echo pid=$$; hostname; wc -c < /proc/timer_list; ls /proc/acpi 2>/dev/null | wc -l; \
                  if echo x > /proc/sys/kernel/domainname 2>/dev/null; then echo sys-writable; else echo sys-ro; fi; \
                  if touch /rootfs-write 2>/dev/null; then echo root-writable; else echo root-ro; fi";
    let (code, out, err) = sh(&env, "a", env.config(&["/bin/sh", "-c", script]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "keeltest");
    assert_eq!(lines[2].trim(), "0", "/proc/timer_list must be masked");
    assert_eq!(lines[3].trim(), "0", "/proc/acpi must be an empty tmpfs");
    assert_eq!(lines[4], "sys-ro");
    assert_eq!(lines[5], "root-ro");
    // Control: without masking /proc/kcore has a size and a writable rootfs is writable.
    let mut cfg = env.config(&[
        "/bin/sh",
        "-c",
        "wc -c < /proc/timer_list; touch /w && echo root-writable",
    ]);
    cfg["linux"]["maskedPaths"] = serde_json::json!([]);
    cfg["root"]["readonly"] = serde_json::json!(false);
    let (code, out, err) = sh(&env, "b", cfg);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0].trim(), "0");
    assert_eq!(lines[1], "root-writable");
    let _ = std::fs::remove_file(env.rootfs.join("w"));
}

#[test]
fn dropped_cap_net_admin_blocks_ip_link_add() {
    let env = Env::new("caps");
    let cmd = [
        "/bin/sh",
        "-c",
        "ip link add kst0 type bridge && echo added",
    ];
    let (code, out, err) = sh(&env, "nocap", env.config(&cmd));
    assert_ne!(
        code, 0,
        "ip link add must fail without CAP_NET_ADMIN: {out}"
    );
    assert!(!out.contains("added"));
    assert!(err.to_lowercase().contains("not permitted"), "{err}");
    let mut cfg = env.config(&cmd);
    for set in ["bounding", "effective", "permitted"] {
        cfg["process"]["capabilities"][set] = serde_json::json!(["CAP_NET_ADMIN"]);
    }
    let (code, out, err) = sh(&env, "cap", cfg);
    assert_eq!(code, 0, "with CAP_NET_ADMIN it works: {err}");
    assert!(out.contains("added"));
}

#[test]
fn seccomp_profile_blocks_mkdir_with_eperm() {
    let env = Env::new("seccomp");
    let (code, _, err) = sh(&env, "free", env.config(&["/bin/mkdir", "/tmp/x"]));
    assert_eq!(code, 0, "control: mkdir works without a profile: {err}");
    let mut cfg = env.config(&["/bin/mkdir", "/tmp/x"]);
    cfg["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let (code, out, err) = sh(&env, "blocked", cfg);
    assert_ne!(code, 0, "mkdir must fail: {out}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // Without no_new_privs the filter goes in before privileges are dropped.
    let mut cfg = env.config(&["/bin/mkdir", "/tmp/x"]);
    cfg["process"]["noNewPrivileges"] = serde_json::json!(false);
    cfg["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
    });
    let (code, out, err) = sh(&env, "nonnp", cfg);
    assert_ne!(code, 0, "mkdir must fail: {out}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

#[test]
fn non_root_user_and_groups() {
    let env = Env::new("user");
    let mut cfg = env.config(&[
        "/bin/sh",
        "-c",
        "id; touch /tmp/ok && echo tmp-ok; touch /proc/x 2>/dev/null || echo denied",
    ]);
    cfg["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [5]});
    let (code, out, err) = sh(&env, "u", cfg);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("uid=1000(") && out.contains("gid=1000("),
        "{out}"
    );
    assert!(
        out.contains("groups=5") || out.contains(",5") || out.contains("5("),
        "{out}"
    );
    assert!(out.contains("tmp-ok"));
    assert!(out.contains("denied"));
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_range() {
    let env = Env::new("userns");
    // The mapped root (host uid 100000) must be able to walk to the bundle.
    std::fs::set_permissions(
        env.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod tempdir");
    let mut cfg = env.config(&["/bin/sh", "-c", "id -u; cat /proc/self/uid_map"]);
    cfg["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(serde_json::json!({"type": "user"}));
    cfg["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    cfg["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let (code, out, err) = sh(&env, "un", cfg);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "root inside: {out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"], "{out}");
}
