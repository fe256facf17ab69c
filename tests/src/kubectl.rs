//! The real kubectl: the versioned builds `kubectl.1.27` ... `kubectl.1.33` from the
//! google-cloud-sdk bin folder, and the plain `kubectl` dispatcher that picks the build matching
//! the server's minor version. Every call gets a fresh `--cache-dir` so discovery is never stale.

use std::path::{Path, PathBuf};
use std::process::Command;

const SDK_BIN: &str = "/usr/lib/google-cloud-sdk/bin";

/// The path of `kubectl.<version>` ("1.27", "1.33") or of the dispatcher (`""`).
pub fn binary(version: &str) -> PathBuf {
    let name = if version.is_empty() {
        "kubectl".to_string()
    } else {
        format!("kubectl.{version}")
    };
    let dir = std::env::var("KEEL_KUBECTL_DIR").unwrap_or_else(|_| SDK_BIN.to_string());
    let path = Path::new(&dir).join(&name);
    assert!(
        path.exists(),
        "{} is missing: install the `kubectl` package of the google-cloud-sdk (it ships kubectl.1.27 ... kubectl.1.33 in {SDK_BIN}), or point KEEL_KUBECTL_DIR at a folder holding {name}",
        path.display()
    );
    path
}

pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    /// Run inside this network namespace (`nsenter --net`), for lab machines.
    pub netns: Option<String>,
    cache: tempfile::TempDir,
}

pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(version: &str, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            bin: binary(version),
            kubeconfig: kubeconfig.to_path_buf(),
            netns: None,
            cache: tempfile::tempdir().expect("cache dir"),
        }
    }

    /// kubectl run inside network namespace `ns`.
    pub fn in_netns(version: &str, kubeconfig: &Path, ns: &str) -> Kubectl {
        Kubectl {
            netns: Some(ns.to_string()),
            ..Kubectl::new(version, kubeconfig)
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => crate::lab::netns_command(ns, &self.bin),
            None => Command::new(&self.bin),
        };
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.ok,
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.ok,
            "kubectl {} should have failed but printed: {}",
            args.join(" "),
            out.stdout
        );
        out.stderr
    }
}

/// Splits a table line into cells (kubectl separates columns by 3+ spaces, cells by single
/// spaces only inside values like `3 (5m ago)`).
pub fn cells(line: &str) -> Vec<String> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// Asserts that `output` has exactly the `expected` rows; `*` in an expected cell matches any
/// age-like cell (`0s`, `12s`, `2m`).
pub fn assert_table(output: &str, expected: &[&[&str]]) {
    let rows: Vec<Vec<String>> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(cells)
        .collect();
    assert_eq!(rows.len(), expected.len(), "row count differs:\n{output}");
    for (row, want) in rows.iter().zip(expected) {
        assert_eq!(
            row.len(),
            want.len(),
            "cells of {row:?} vs {want:?}:\n{output}"
        );
        for (got, w) in row.iter().zip(want.iter()) {
            if *w == "*" {
                assert!(
                    got.ends_with('s') || got.ends_with('m'),
                    "age cell {got:?} in {row:?}"
                );
            } else {
                assert_eq!(got, w, "in row {row:?}:\n{output}");
            }
        }
    }
}
