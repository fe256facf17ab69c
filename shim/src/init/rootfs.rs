//! The container's root filesystem: propagation, the config's mounts, /dev, `pivot_root`,
//! masked and read-only paths (runtime-spec `config.md#mounts`, `config-linux.md#devices`,
//! `#masked-paths`, `#readonly-paths`; mount(2), pivot_root(2)).

use super::InitPlan;
use crate::error::{Error, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

type NoStr = Option<&'static str>;
const NONE: NoStr = None;

/// Join `path` below `root`, resolving symlinks inside the rootfs so that a link pointing at
/// `/` or `..` cannot escape it (the CVE class runc's `securejoin` closes).
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let comps: Vec<Component> = p.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => {
                    let cand = root.join(&out).join(name);
                    match std::fs::read_link(&cand) {
                        Ok(target) if hops < 40 => {
                            hops += 1;
                            if target.is_absolute() {
                                out = PathBuf::new();
                            }
                            let rest: PathBuf = comps[i + 1..].iter().collect();
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => out.push(name),
                    }
                }
            }
        }
    }
    root.join(out)
}

/// Mount options split into flags, propagation flags and filesystem data.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// Flags for the mount itself.
    pub flags: MsFlags,
    /// Propagation to apply afterwards (private, rslave, ...).
    pub propagation: MsFlags,
    /// Everything else, comma-joined, for the filesystem.
    pub data: String,
}

/// Parse the `options` of a mount (mount(8) names).
pub fn parse_options(opts: &[String]) -> Options {
    let mut o = Options {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
    };
    let mut data = Vec::new();
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                o.propagation |= propagation(p).unwrap_or(MsFlags::empty());
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    o.data = data.join(",");
    o
}

/// Propagation flags for a name such as `rslave`.
pub fn propagation(name: &str) -> Option<MsFlags> {
    let rec = name.starts_with('r') && name != "r";
    let base = name.strip_prefix('r').filter(|_| rec).unwrap_or(name);
    let f = match base {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if rec { f | MsFlags::MS_REC } else { f })
}

fn m(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, dst, fstype, flags, data).map_err(|e| Error::nix("mount", dst.display(), e))
}

/// Everything before `pivot_root`, then the pivot, then masked/readonly paths. Runs in the
/// init process inside its new mount namespace.
pub fn setup(plan: &InitPlan) -> Result<()> {
    let root = &plan.rootfs;
    let prop = match &plan.rootfs_propagation {
        Some(p) => propagation(p).ok_or_else(|| {
            Error::Usage(format!(
                "linux.rootfsPropagation {p:?} is not a propagation mode"
            ))
        })?,
        None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    m(None, Path::new("/"), None, prop, None)?;
    m(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut dev_mounted = false;
    for mnt in &plan.mounts {
        mount_one(plan, mnt)?;
        if mnt.destination() == Path::new("/dev") {
            dev_mounted = true;
        }
    }
    if dev_mounted {
        create_devices(plan)?;
    }
    pivot(root)?;
    for p in &plan.masked_paths {
        mask(Path::new(p))?;
    }
    for p in &plan.readonly_paths {
        readonly(Path::new(p))?;
    }
    if plan.readonly_rootfs {
        m(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

fn mount_one(plan: &InitPlan, mnt: &Mount) -> Result<()> {
    let dest = secure_join(&plan.rootfs, mnt.destination());
    let o = parse_options(mnt.options().as_deref().unwrap_or_default());
    let typ = mnt.typ().as_deref().unwrap_or("");
    let is_bind = typ == "bind" || o.flags.contains(MsFlags::MS_BIND);
    let data = (!o.data.is_empty()).then_some(o.data.as_str());
    if is_bind {
        let src = mnt.source().clone().unwrap_or_default();
        let src = if src.is_absolute() {
            src
        } else {
            plan.bundle.join(src)
        };
        let meta =
            std::fs::metadata(&src).map_err(|e| Error::io("bind source", src.display(), e))?;
        make_target(&dest, meta.is_dir())?;
        let bind = MsFlags::MS_BIND | (o.flags & MsFlags::MS_REC);
        m(Some(&src), &dest, NONE, bind, NONE)?;
        let extra = o.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            m(
                None,
                &dest,
                NONE,
                extra | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                NONE,
            )?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        make_target(&dest, true)?;
        mount_cgroup(plan, &dest, o.flags)?;
    } else {
        make_target(&dest, true)?;
        let src = mnt.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        match mount(Some(&src), &dest, Some(typ), o.flags, data) {
            Ok(()) => {}
            // Without a new network (sysfs) or ipc (mqueue) namespace the kernel refuses a
            // fresh instance; bind the host's, as runc does.
            Err(nix::errno::Errno::EPERM) if typ == "sysfs" || typ == "mqueue" => {
                let host = if typ == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                m(
                    Some(Path::new(host)),
                    &dest,
                    NONE,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    NONE,
                )?;
                if o.flags.contains(MsFlags::MS_RDONLY) {
                    m(
                        None,
                        &dest,
                        NONE,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        NONE,
                    )?;
                }
            }
            Err(e) => {
                return Err(Error::nix(
                    "mount",
                    format!("{typ} on {}", dest.display()),
                    e,
                ));
            }
        }
    }
    if !o.propagation.is_empty() {
        m(None, &dest, NONE, o.propagation, NONE)?;
    }
    Ok(())
}

fn make_target(dest: &Path, dir: bool) -> Result<()> {
    if dir {
        std::fs::create_dir_all(dest)
            .map_err(|e| Error::io("create mount point", dest.display(), e))
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create mount point", parent.display(), e))?;
        }
        if !dest.exists() {
            std::fs::File::create(dest)
                .map_err(|e| Error::io("create mount point", dest.display(), e))?;
        }
        Ok(())
    }
}

/// cgroup2 on v2 hosts; on v1 a tmpfs with the container's own folder of each controller
/// bound below it (so the container sees only its cgroup, as with a cgroup namespace).
fn mount_cgroup(plan: &InitPlan, dest: &Path, flags: MsFlags) -> Result<()> {
    if plan.cgroup_v2 {
        return m(
            Some(Path::new("cgroup2")),
            dest,
            Some("cgroup2"),
            flags,
            NONE,
        );
    }
    let base = flags & !MsFlags::MS_RDONLY;
    m(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )?;
    for (ctrl, host) in &plan.cgroup_dirs {
        let d = dest.join(ctrl);
        make_target(&d, true)?;
        m(Some(host), &d, NONE, MsFlags::MS_BIND, NONE)?;
        if flags.contains(MsFlags::MS_RDONLY) {
            m(
                None,
                &d,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
                NONE,
            )?;
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        m(
            None,
            dest,
            NONE,
            MsFlags::MS_REMOUNT | flags,
            Some("mode=755"),
        )?;
    }
    Ok(())
}

/// The default devices of runtime-spec `config-linux.md#default-devices` plus the config's.
fn create_devices(plan: &InitPlan) -> Result<()> {
    let dev = plan.rootfs.join("dev");
    let defaults = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    let mut all: Vec<(PathBuf, LinuxDeviceType, i64, i64, u32, u32, u32)> = defaults
        .iter()
        .map(|(n, ma, mi)| (dev.join(n), LinuxDeviceType::C, *ma, *mi, 0o666, 0, 0))
        .collect();
    for d in &plan.devices {
        all.push(device_entry(plan, d));
    }
    for (path, typ, major, minor, mode, uid, gid) in all {
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        if let Some(parent) = path.parent() {
            make_target(parent, true)?;
        }
        let kind = match typ {
            LinuxDeviceType::B => nix::sys::stat::SFlag::S_IFBLK,
            LinuxDeviceType::P => nix::sys::stat::SFlag::S_IFIFO,
            _ => nix::sys::stat::SFlag::S_IFCHR,
        };
        let devnum = nix::sys::stat::makedev(major as u64, minor as u64);
        let perm = nix::sys::stat::Mode::from_bits_truncate(mode);
        match nix::sys::stat::mknod(&path, kind, perm, devnum) {
            Ok(()) => {
                let _ = nix::unistd::chown(
                    &path,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                );
                let _ = nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    &path,
                    perm,
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                );
            }
            // In a user namespace mknod is refused: bind the host's node instead.
            Err(nix::errno::Errno::EPERM) => {
                let host = Path::new("/dev").join(path.strip_prefix(&dev).unwrap_or(&path));
                make_target(&path, false)?;
                m(Some(&host), &path, NONE, MsFlags::MS_BIND, NONE)?;
            }
            Err(e) => return Err(Error::nix("mknod", path.display(), e)),
        }
    }
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
        ("/proc/kcore", "core"),
    ];
    for (target, name) in links {
        let p = dev.join(name);
        if std::fs::symlink_metadata(&p).is_err() {
            symlink(target, &p).map_err(|e| Error::io("symlink", p.display(), e))?;
        }
    }
    Ok(())
}

#[allow(clippy::type_complexity)]
fn device_entry(
    plan: &InitPlan,
    d: &LinuxDevice,
) -> (PathBuf, LinuxDeviceType, i64, i64, u32, u32, u32) {
    (
        secure_join(&plan.rootfs, d.path()),
        d.typ(),
        d.major(),
        d.minor(),
        d.file_mode().unwrap_or(0o666),
        d.uid().unwrap_or(0),
        d.gid().unwrap_or(0),
    )
}

/// `pivot_root(".", ".")` then detach the old root (the trick runc and crun use: no
/// temporary folder inside the rootfs is needed).
fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).map_err(|e| Error::nix("chdir", root.display(), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::nix("pivot_root", root.display(), e))?;
    m(
        None,
        Path::new("."),
        NONE,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        NONE,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::nix("umount old root", "/", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::nix("chdir", "/", e))
}

fn mask(p: &Path) -> Result<()> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        m(
            Some(Path::new("tmpfs")),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            NONE,
        )
    } else {
        m(
            Some(Path::new("/dev/null")),
            p,
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
    }
}

fn readonly(p: &Path) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    m(Some(p), p, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)?;
    m(
        None,
        p,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        NONE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_flags_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "mode=755".into(),
            "rslave".into(),
            "size=65536k".into(),
        ]);
        assert!(o.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(parse_options(&["ro".into(), "rw".into()]).flags.is_empty());
    }

    #[test]
    fn secure_join_stays_inside_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        std::fs::create_dir(root.join("etc")).expect("mkdir");
        symlink("/", root.join("escape")).expect("symlink");
        symlink("../../..", root.join("etc/up")).expect("symlink");
        assert_eq!(secure_join(root, Path::new("/escape/x")), root.join("x"));
        assert_eq!(secure_join(root, Path::new("/etc/up/y")), root.join("y"));
        assert_eq!(secure_join(root, Path::new("/../../z")), root.join("z"));
        assert_eq!(secure_join(root, Path::new("/etc/a")), root.join("etc/a"));
    }
}
