//! `exec`: run another process inside a running container (runc `exec`), and the captured
//! variant the supervisor serves for `proto::Op::Exec`.
//!
//! Shape: fork C; C joins the cgroup and every namespace of init that differs from its own
//! (user first, mount last, see setns(2)); joining a pid namespace only affects children, so
//! C forks D, which drops privileges and execs. C reports D's pid on a close-on-exec pipe and
//! either exits (detached) or waits for D and exits with D's status.

use crate::cgroups::Cgroup;
use crate::config::Bundle;
use crate::error::{Error, Result};
use crate::init::{ProcessPlan, process};
use crate::proto::{ExecRequest, Reply, Status};
use crate::state::Container;
use crate::sys::{self, Forked};
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of the `exec` command.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `--process FILE`: a JSON `process` object.
    pub process: Option<PathBuf>,
    /// `--detach`.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// Command (when no `--process`).
    pub args: Vec<String>,
    /// `--env` additions.
    pub env: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<String>,
    /// `--user uid[:gid]`.
    pub user: Option<(u32, u32)>,
}

fn mirror(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 255,
    }
}

const NS_ORDER: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn enter(pid: i32, cgroup: &Cgroup) -> Result<()> {
    cgroup.add(std::process::id() as i32)?;
    let mut files = Vec::new();
    for (name, flag) in NS_ORDER {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let same = std::fs::read_link(&theirs).ok()
            == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if !same {
            let f = std::fs::File::open(&theirs).map_err(|e| Error::io("open", &theirs, e))?;
            files.push((f, *flag, theirs));
        }
    }
    for (f, flag, path) in &files {
        nix::sched::setns(f, *flag).map_err(|e| Error::nix("setns", path, e))?;
    }
    Ok(())
}

/// Start `plan` inside container `c`. Returns (pid of the helper C, host pid of the process).
pub fn spawn(
    c: &Container,
    cgroup: &Cgroup,
    plan: &ProcessPlan,
    stdio: Option<[RawFd; 3]>,
    detach: bool,
) -> Result<(i32, i32)> {
    let (st_r, st_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::nix("pipe", "", e))?;
    let init = c.saved.pid;
    match sys::fork().map_err(|e| Error::io("fork", "exec", e))? {
        Forked::Child => {
            drop(st_r);
            let mut st = std::fs::File::from(st_w);
            if let Err(e) = enter(init, cgroup) {
                let _ = writeln!(st, "E{e}");
                sys::exit_now(1);
            }
            match sys::fork() {
                Ok(Forked::Child) => {
                    sys::reset_signals();
                    let r = (|| -> Result<()> {
                        if let Some(fds) = stdio {
                            for (i, fd) in fds.iter().enumerate() {
                                sys::dup2(*fd, i as RawFd)
                                    .map_err(|e| Error::io("dup2", "stdio", e))?;
                            }
                        }
                        sys::close_fds_from(3, &[st.as_raw_fd()]);
                        process::apply_limits(plan)?;
                        process::finish_and_exec(plan)
                    })();
                    if let Err(e) = r {
                        let _ = writeln!(st, "E{e}");
                    }
                    sys::exit_now(127)
                }
                Ok(Forked::Parent(d)) => {
                    let _ = writeln!(st, "P{d}");
                    drop(st);
                    if detach {
                        sys::exit_now(0);
                    }
                    let code = waitpid(Pid::from_raw(d), None).map(mirror).unwrap_or(255);
                    sys::exit_now(code)
                }
                Err(e) => {
                    let _ = writeln!(st, "Efork: {e}");
                    sys::exit_now(1)
                }
            }
        }
        Forked::Parent(cpid) => {
            drop(st_w);
            let mut dpid = 0;
            let mut err = None;
            for line in BufReader::new(std::fs::File::from(st_r)).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix('P') {
                    dpid = p.parse().unwrap_or(0);
                } else if let Some(m) = line.strip_prefix('E') {
                    err = Some(m.to_string());
                }
            }
            if let Some(m) = err {
                let _ = waitpid(Pid::from_raw(cpid), None);
                return Err(Error::Init(m));
            }
            Ok((cpid, dpid))
        }
    }
}

fn parse_process(file: &Path) -> Result<oci_spec::runtime::Process> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::config(file, "(file)", format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::config(file, "(json)", format!("not a valid OCI process: {e}")))
}

/// The `exec` command. Returns the exit code to use.
pub fn exec(root: &Path, id: &str, o: &ExecOptions) -> Result<i32> {
    let c = Container::load(root, id)?;
    let status = c.status();
    if status != Status::Running {
        return Err(Error::Status {
            id: id.into(),
            status: format!("{status:?}").to_lowercase(),
            op: "exec (it must be running)".into(),
        });
    }
    let bundle = Bundle::load(&c.saved.bundle)?;
    let seccomp = match bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
    {
        Some(s) => crate::seccomp::compile(s)?,
        None => Vec::new(),
    };
    let (file, mut p) = match &o.process {
        Some(f) => (f.clone(), parse_process(f)?),
        None => {
            if o.args.is_empty() {
                return Err(Error::Usage(
                    "exec needs a command after the container id, or --process FILE".into(),
                ));
            }
            let mut p = bundle.process()?.clone();
            p.set_args(Some(o.args.clone()));
            (bundle.config_path.clone(), p)
        }
    };
    if !o.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        env.extend(o.env.iter().cloned());
        p.set_env(Some(env));
    }
    if let Some(cwd) = &o.cwd {
        p.set_cwd(PathBuf::from(cwd));
    }
    if let Some((uid, gid)) = o.user {
        let mut u = p.user().clone();
        u.set_uid(uid);
        u.set_gid(gid);
        p.set_user(u);
    }
    bundle.validate_process(&p, &file)?;
    let plan = ProcessPlan::from_spec(&file, &p, seccomp)?;
    let (cpid, dpid) = spawn(&c, &c.cgroup(), &plan, None, o.detach)?;
    if let Some(pf) = &o.pid_file {
        super::create::write_pid_file(pf, dpid)?;
    }
    let status = waitpid(Pid::from_raw(cpid), None).map_err(|e| Error::nix("wait", "exec", e))?;
    Ok(if o.detach { 0 } else { mirror(status) })
}

/// Run `req` in the container with output captured (the supervisor's exec helper).
pub fn run_captured(
    c: &Container,
    cgroup: &Cgroup,
    template: &ProcessPlan,
    req: &ExecRequest,
) -> Result<Reply> {
    if req.args.is_empty() {
        return Err(Error::Usage("exec: args must not be empty".into()));
    }
    let mut plan = template.clone();
    plan.args = req.args.clone();
    plan.env.extend(req.env.iter().cloned());
    if let Some(cwd) = &req.cwd {
        plan.cwd = PathBuf::from(cwd);
    }
    let (or, ow) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::nix("pipe", "", e))?;
    let (er, ew) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::nix("pipe", "", e))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| Error::io("open", "/dev/null", e))?;
    let (cpid, dpid) = spawn(
        c,
        cgroup,
        &plan,
        Some([null.as_raw_fd(), ow.as_raw_fd(), ew.as_raw_fd()]),
        false,
    )?;
    drop((ow, ew, null));
    let deadline =
        (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
    let (out, err, timed_out) = collect(or, er, deadline, dpid);
    let code = waitpid(Pid::from_raw(cpid), None)
        .map(mirror)
        .unwrap_or(255);
    Ok(Reply::ExecResult {
        exit_code: code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        timed_out,
    })
}

const CAP: usize = 1 << 20;

fn collect(
    or: OwnedFd,
    er: OwnedFd,
    deadline: Option<Instant>,
    dpid: i32,
) -> (Vec<u8>, Vec<u8>, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [Some(or), Some(er)];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut timed_out = false;
    while fds.iter().any(Option::is_some) {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = nix::sys::signal::kill(
                        Pid::from_raw(dpid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    timed_out = true;
                    break;
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::NONE)
            }
            None => PollTimeout::NONE,
        };
        let live: Vec<usize> = (0..2).filter(|i| fds[*i].is_some()).collect();
        let mut pfds: Vec<PollFd> = live
            .iter()
            .filter_map(|i| {
                fds[*i]
                    .as_ref()
                    .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            })
            .collect();
        if poll(&mut pfds, timeout).is_err() {
            break;
        }
        let ready: Vec<bool> = pfds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(pfds);
        for (k, i) in live.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let mut buf = [0u8; 8192];
            let n = fds[*i]
                .as_ref()
                .map(|f| nix::unistd::read(f.as_fd(), &mut buf));
            match n {
                Some(Ok(n)) if n > 0 => {
                    let room = CAP.saturating_sub(bufs[*i].len());
                    bufs[*i].extend_from_slice(&buf[..n.min(room)]);
                }
                _ => fds[*i] = None,
            }
        }
    }
    let [a, b] = bufs;
    (a, b, timed_out)
}
