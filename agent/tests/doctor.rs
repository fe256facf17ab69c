//! `keel-agent doctor` on this machine: every check prints one line, every problem a fix, and
//! the exit code says whether anything failed.

use std::process::Command;

#[test]
fn doctor_reports_every_check_with_fixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_keel-agent"))
        .arg("doctor")
        .arg("--root-dir")
        .arg(dir.path())
        .output()
        .expect("run keel-agent doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    for check in [
        "cgroups:",
        "overlayfs:",
        "br_netfilter:",
        "ip_forward:",
        "iptables:",
        "user namespaces:",
        "swap:",
        "free disk:",
        "clock:",
    ] {
        assert!(text.contains(check), "no {check} line in:\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("FAIL") || l.starts_with("WARN") {
            assert!(
                lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("fix: ")),
                "{l} has no fix line:\n{text}"
            );
        }
    }
    let failed = lines.iter().any(|l| l.starts_with("FAIL"));
    assert_eq!(
        out.status.success(),
        !failed,
        "exit code vs FAIL lines:\n{text}"
    );
    assert!(text.trim_end().ends_with("warning(s)"), "{text}");
}
