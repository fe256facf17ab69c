//! cgroup v2: delegation of controllers down the tree and the OCI resource mapping
//! (kernel `admin-guide/cgroup-v2.rst`; the v1->v2 conversions follow runtime-spec
//! `config-linux.md` and the runc/crun documentation of `cpu.weight` and `io.weight`).

use super::write;
use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::path::Path;

/// Create `dir` below `root`, enabling the available controllers in every ancestor's
/// `cgroup.subtree_control` on the way down (a controller must be enabled in the parent for
/// its files to appear in the child).
pub fn create(root: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        Error::Usage(format!(
            "cgroup {} is outside {}",
            dir.display(),
            root.display()
        ))
    })?;
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        let available = super::read(&cur.join("cgroup.controllers")).unwrap_or_default();
        let enabled = super::read(&cur.join("cgroup.subtree_control")).unwrap_or_default();
        for c in ["cpuset", "cpu", "io", "memory", "pids", "hugetlb"] {
            let on = enabled.split_whitespace().any(|e| e == c);
            if !on && available.split_whitespace().any(|a| a == c) {
                // Ignore failures: e.g. the root of a container without delegation.
                let _ = std::fs::write(cur.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        cur.push(comp);
        if !cur.exists() {
            std::fs::create_dir(&cur).map_err(|e| Error::Cgroup {
                op: "create".into(),
                path: cur.clone(),
                source: e,
            })?;
        }
    }
    Ok(())
}

/// `cpu.shares` (2..262144) to `cpu.weight` (1..10000), as runc and crun convert it.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// blkio weight (10..1000) to `io.weight` (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990
}

fn limit(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// Apply `linux.resources` to a v2 folder.
pub fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            write(&dir.join("memory.max"), &limit(l))?;
        }
        if let Some(res) = m.reservation() {
            write(&dir.join("memory.low"), &limit(res))?;
        }
        if let Some(swap) = m.swap() {
            // OCI swap = memory+swap; v2 memory.swap.max is swap alone.
            let v = match (swap, m.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            let f = dir.join("memory.swap.max");
            if f.exists() {
                write(&f, &v)?;
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares() {
            write(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if c.quota().is_some() || c.period().is_some() {
            let q = c.quota().filter(|q| *q > 0);
            let period = c.period().unwrap_or(100_000);
            let v = match q {
                Some(q) => format!("{q} {period}"),
                None => format!("max {period}"),
            };
            write(&dir.join("cpu.max"), &v)?;
        }
        if let Some(cpus) = c.cpus() {
            write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = c.mems() {
            write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        write(&dir.join("pids.max"), &v)?;
    }
    if let Some(b) = r.block_io()
        && let Some(w) = b.weight()
    {
        write(
            &dir.join("io.weight"),
            &format!("default {}", blkio_to_io_weight(w)),
        )?;
    }
    if let Some(u) = r.unified() {
        for (k, v) in u {
            if k.contains('/') || k.starts_with('.') {
                return Err(Error::Usage(format!(
                    "linux.resources.unified key {k:?} must be a plain cgroup file name"
                )));
            }
            write(&dir.join(k), v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn apply_writes_v2_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":1048576,"swap":2097152},"pids":{"limit":5},"cpu":{"quota":10000,"period":100000},"unified":{"memory.high":"900000"}}"#,
        )
        .expect("resources");
        std::fs::write(t.path().join("memory.swap.max"), "").expect("seed");
        apply(t.path(), &r).expect("apply");
        let rd = |f: &str| std::fs::read_to_string(t.path().join(f)).expect("read");
        assert_eq!(rd("memory.max"), "1048576");
        assert_eq!(rd("memory.swap.max"), "1048576");
        assert_eq!(rd("pids.max"), "5");
        assert_eq!(rd("cpu.max"), "10000 100000");
        assert_eq!(rd("memory.high"), "900000");
    }
}
