//! `create`: validate the bundle, plan the init process, start the supervisor.
//!
//! Runtime-spec `runtime.md#create`: everything is set up but no user code runs. All checks
//! happen before anything is created, and a failure afterwards removes what was made (the
//! supervisor removes the cgroup, this function the state folder).

use crate::cgroups::{self, Layout};
use crate::config::Bundle;
use crate::error::{Error, Result};
use crate::init::{InitPlan, ProcessPlan};
use crate::proto::Status;
use crate::state::{self, Container, Saved};
use crate::supervisor::{self, Launch, LogOptions};
use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;
use std::path::{Path, PathBuf};

/// Options of `create` (and of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// Bundle folder.
    pub bundle: PathBuf,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--cri-log` and rotation (keel extension).
    pub log: Option<LogOptions>,
}

/// Write a pid file atomically (runc writes it the same way).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("keel-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io("write pid file", path.display(), e))
}

fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// Build the launch description from a loaded bundle (pure: nothing is created).
pub fn plan(root: &Path, b: &Bundle, o: &CreateOptions) -> Result<Launch> {
    let file = &b.config_path;
    let p = b.process()?;
    let terminal = p.terminal().unwrap_or(false);
    if terminal && o.console_socket.is_none() {
        return Err(Error::config(
            file,
            "process.terminal",
            "is true but no --console-socket was given; set it to false or pass a socket",
        ));
    }
    if !terminal && o.console_socket.is_some() {
        return Err(Error::Usage(
            "--console-socket needs process.terminal: true in config.json".into(),
        ));
    }
    let linux = b.spec.linux().clone().unwrap_or_default();
    let mut clone_flags = CloneFlags::empty();
    let mut join = Vec::new();
    let mut pid_ns = None;
    for ns in b.namespaces() {
        if ns.typ == LinuxNamespaceType::Time {
            return Err(Error::config(
                file,
                "linux.namespaces",
                "the time namespace is not supported by keel-shim; remove it",
            ));
        }
        match (&ns.path, ns.typ) {
            (None, LinuxNamespaceType::Cgroup) => {}
            (None, t) => clone_flags |= flag(t),
            (Some(path), LinuxNamespaceType::Pid) => pid_ns = Some(path.clone()),
            (Some(path), t) => join.push((flag(t), path.clone())),
        }
    }
    if !b.new_namespace(LinuxNamespaceType::Mount) {
        return Err(Error::config(
            file,
            "linux.namespaces",
            "keel-shim needs a new mount namespace ({\"type\": \"mount\"})",
        ));
    }
    if b.spec.hostname().is_some() && !b.new_namespace(LinuxNamespaceType::Uts) {
        return Err(Error::config(
            file,
            "hostname",
            "setting a hostname needs a new uts namespace",
        ));
    }
    let new_user = b.new_namespace(LinuxNamespaceType::User);
    let uid_map = linux.uid_mappings().clone().unwrap_or_default();
    let gid_map = linux.gid_mappings().clone().unwrap_or_default();
    if new_user && (uid_map.is_empty() || gid_map.is_empty()) {
        return Err(Error::config(
            file,
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    let seccomp = match linux.seccomp() {
        Some(s) => crate::seccomp::compile(s)?,
        None => Vec::new(),
    };
    let process = ProcessPlan::from_spec(file, p, seccomp)?;
    let layout = Layout::detect();
    let cgroup = cgroups::resolve(&layout, linux.cgroups_path().as_deref(), &o.id)?;
    let cgroup_dirs = cgroup
        .dirs
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctl.sort();
    let plan = InitPlan {
        rootfs: b.rootfs.clone(),
        bundle: b.dir.clone(),
        mounts: b.spec.mounts().clone().unwrap_or_default(),
        rootfs_propagation: linux.rootfs_propagation().clone(),
        readonly_rootfs: b
            .spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        devices: linux.devices().clone().unwrap_or_default(),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        hostname: b.spec.hostname().clone(),
        domainname: b.spec.domainname().clone(),
        sysctl,
        cgroup_v2: layout.version() == 2,
        cgroup_dirs,
        clone_flags,
        new_cgroup_ns: b.new_namespace(LinuxNamespaceType::Cgroup),
        new_mount_ns: true,
        join,
        process,
        terminal,
    };
    let saved = Saved {
        id: o.id.clone(),
        bundle: b.dir.clone(),
        status: Status::Creating,
        pid: 0,
        pid_start: 0,
        supervisor_pid: 0,
        supervisor_start: 0,
        cgroup_dirs: cgroup.dirs.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        annotations: b.spec.annotations().clone().unwrap_or_default(),
        log_path: o.log.as_ref().map(|l| l.path.clone()),
    };
    Ok(Launch {
        dir: root.join(&o.id),
        saved,
        plan,
        cgroup,
        resources: linux.resources().clone(),
        pid_ns,
        uid_map,
        gid_map,
        log: o.log.clone(),
        console_socket: o.console_socket.clone(),
    })
}

/// The `create` command.
pub fn create(root: &Path, o: &CreateOptions) -> Result<Container> {
    state::check_id(&o.id)?;
    let b = Bundle::load(&o.bundle)?;
    let launch = plan(root, &b, o)?;
    if let Some(sock) = &o.console_socket
        && !sock.exists()
    {
        return Err(Error::Usage(format!(
            "--console-socket {} does not exist",
            sock.display()
        )));
    }
    std::fs::create_dir_all(root).map_err(|e| Error::io("create state root", root.display(), e))?;
    let dir = root.join(&o.id);
    let sock_len = dir.join(crate::proto::SOCKET_NAME).as_os_str().len();
    if sock_len >= 108 {
        return Err(Error::Usage(format!(
            "--root {} is too long for a unix socket path ({sock_len} >= 108 bytes); use a shorter state root",
            root.display()
        )));
    }
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(o.id.clone()));
        }
        Err(e) => return Err(Error::io("create state folder", dir.display(), e)),
    }
    let result = supervisor::spawn(launch).and_then(|saved| {
        if let Some(pf) = &o.pid_file {
            write_pid_file(pf, saved.pid)?;
        }
        Ok(Container {
            dir: dir.clone(),
            saved,
        })
    });
    if result.is_err() {
        if let Ok(c) = Container::load(root, &o.id) {
            let _ = super::delete::delete(root, &c.saved.id, true);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
