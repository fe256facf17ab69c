//! cgroup v1 controllers: folder creation (cpuset inheritance) and the OCI resource mapping
//! (kernel docs `admin-guide/cgroup-v1/*.rst`; runtime-spec `config-linux.md#control-groups`).

use super::write;
use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Create `dir` and its missing parents; a new cpuset folder starts with empty `cpus`/`mems`,
/// which makes adding tasks fail, so they are copied from the parent.
pub fn create(ctrl: &str, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = dir.to_path_buf();
    while !p.exists() {
        missing.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    for d in missing.iter().rev() {
        std::fs::create_dir(d).map_err(|e| Error::Cgroup {
            op: "create".into(),
            path: d.clone(),
            source: e,
        })?;
        if ctrl == "cpuset"
            && let Some(parent) = d.parent()
        {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = super::read(&d.join(f)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let val = super::read(&parent.join(f)).unwrap_or_default();
                    write(&d.join(f), val.trim())?;
                }
            }
        }
    }
    Ok(())
}

fn file(dirs: &BTreeMap<String, PathBuf>, ctrl: &str, name: &str) -> Result<PathBuf> {
    dirs.get(ctrl).map(|d| d.join(name)).ok_or_else(|| {
        Error::Usage(format!(
            "linux.resources needs the v1 {ctrl} controller, which is not mounted"
        ))
    })
}

/// Apply `linux.resources` to the v1 folders.
pub fn apply(dirs: &BTreeMap<String, PathBuf>, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            write(
                &file(dirs, "memory", "memory.limit_in_bytes")?,
                &limit.to_string(),
            )?;
        }
        if let Some(swap) = m.swap() {
            // v1 memsw is memory+swap, the same meaning as the OCI field.
            let f = file(dirs, "memory", "memory.memsw.limit_in_bytes")?;
            if f.exists() {
                write(&f, &swap.to_string())?;
            } else if swap > 0 {
                return Err(Error::Usage(
                    "linux.resources.memory.swap: swap accounting is off on this host (no memory.memsw.limit_in_bytes); drop the field".into(),
                ));
            }
        }
        if let Some(res) = m.reservation() {
            write(
                &file(dirs, "memory", "memory.soft_limit_in_bytes")?,
                &res.to_string(),
            )?;
        }
        if let Some(sw) = m.swappiness() {
            write(&file(dirs, "memory", "memory.swappiness")?, &sw.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(&file(dirs, "memory", "memory.oom_control")?, "1")?;
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares() {
            write(&file(dirs, "cpu", "cpu.shares")?, &shares.to_string())?;
        }
        if let Some(period) = c.period() {
            write(
                &file(dirs, "cpu", "cpu.cfs_period_us")?,
                &period.to_string(),
            )?;
        }
        if let Some(quota) = c.quota() {
            write(&file(dirs, "cpu", "cpu.cfs_quota_us")?, &quota.to_string())?;
        }
        if let Some(cpus) = c.cpus() {
            write(&file(dirs, "cpuset", "cpuset.cpus")?, cpus)?;
        }
        if let Some(mems) = c.mems() {
            write(&file(dirs, "cpuset", "cpuset.mems")?, mems)?;
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        write(&file(dirs, "pids", "pids.max")?, &v)?;
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            let f = file(dirs, "blkio", "blkio.weight")?;
            let f = if f.exists() {
                f
            } else {
                file(dirs, "blkio", "blkio.bfq.weight")?
            };
            write(&f, &w.to_string())?;
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ];
        for (name, list) in throttles {
            for t in list.iter().flatten() {
                let line = format!("{}:{} {}", t.major(), t.minor(), t.rate());
                write(&file(dirs, "blkio", name)?, &line)?;
            }
        }
    }
    if let Some(devs) = r.devices()
        && dirs.contains_key("devices")
    {
        let mut rules: Vec<LinuxDeviceCgroup> = devs.clone();
        // runc always allows these on top of the config's rules (runtime-spec
        // config-linux.md "Default devices" must be usable).
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, -1),
        ] {
            let mut d = LinuxDeviceCgroup::default();
            d.set_allow(true);
            d.set_typ(Some(LinuxDeviceType::C));
            d.set_major(Some(maj));
            d.set_minor(if min < 0 { None } else { Some(min) });
            d.set_access(Some("rwm".into()));
            rules.push(d);
        }
        for d in &rules {
            let f = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(&file(dirs, "devices", f)?, &device_rule(d))?;
        }
    }
    Ok(())
}

/// `devices.allow`/`deny` line: `<type> <major>:<minor> <access>`.
pub fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = match d.typ() {
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        _ => "a",
    };
    let num = |n: Option<i64>| n.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
    if typ == "a" && d.major().is_none() && d.minor().is_none() {
        return "a".to_string();
    }
    format!(
        "{typ} {}:{} {}",
        num(d.major()),
        num(d.minor()),
        d.access().clone().unwrap_or_else(|| "rwm".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_format() {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(false);
        d.set_access(Some("rwm".into()));
        assert_eq!(device_rule(&d), "a");
        d.set_typ(Some(LinuxDeviceType::C));
        d.set_major(Some(1));
        assert_eq!(device_rule(&d), "c 1:* rwm");
    }

    #[test]
    fn apply_writes_v1_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut dirs = BTreeMap::new();
        for c in ["memory", "pids", "cpu"] {
            let d = t.path().join(c);
            std::fs::create_dir(&d).expect("mkdir");
            dirs.insert(c.to_string(), d);
        }
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":1048576},"pids":{"limit":5},"cpu":{"quota":10000,"period":100000}}"#,
        )
        .expect("resources");
        apply(&dirs, &r).expect("apply");
        let rd =
            |c: &str, f: &str| std::fs::read_to_string(t.path().join(c).join(f)).expect("read");
        assert_eq!(rd("memory", "memory.limit_in_bytes"), "1048576");
        assert_eq!(rd("pids", "pids.max"), "5");
        assert_eq!(rd("cpu", "cpu.cfs_quota_us"), "10000");
        assert_eq!(rd("cpu", "cpu.cfs_period_us"), "100000");
    }
}
