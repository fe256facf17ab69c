//! The per-container supervisor: a small single-threaded process that `create` leaves behind.
//!
//! `create` forks the supervisor once; it calls setsid and is re-parented to the caller's
//! subreaper or to pid 1 when the caller (e.g. the agent's short-lived CLI call) exits. The
//! supervisor then: becomes a child subreaper, creates the cgroup, clones the container's
//! init with the new namespaces, writes uid/gid maps, puts init in the cgroup, waits until
//! init reports "ready", writes `state.json` and tells `create` "OK" over a pipe.
//!
//! Afterwards it runs one `poll(2)` loop over: a signalfd for SIGCHLD (blocked before the
//! clone, so no exit can be lost), the listening socket (`proto`), and the container's
//! stdout/stderr pipes when a CRI log is requested. When init exits it drains the pipes,
//! writes `exit.json` durably, answers every `wait` and exits.

pub mod log;

use crate::cgroups::Cgroup;
use crate::container::exec as cexec;
use crate::error::{Error, Result};
use crate::init::{self, InitChannels, InitPlan};
use crate::proto::{self, ContainerState, ExitStatus, Op, Reply, Request, Response, Status};
use crate::state::{self, Container, Saved};
use crate::sys::{self, Forked};
use log::{CriLog, Stream};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxResources};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// Where and how to write the CRI log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The log file.
    pub path: PathBuf,
    /// Rotate beyond this many bytes (0 = never).
    pub max_size: u64,
    /// Files to keep, including the current one.
    pub max_files: u32,
}

/// Everything `create` hands to the supervisor.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The container's state folder (already created).
    pub dir: PathBuf,
    /// `state.json` content, pids filled in by the supervisor.
    pub saved: Saved,
    /// What init does.
    pub plan: InitPlan,
    /// The cgroup (not yet created).
    pub cgroup: Cgroup,
    /// `linux.resources`.
    pub resources: Option<LinuxResources>,
    /// Join this pid namespace (the supervisor does it, so init is born inside).
    pub pid_ns: Option<PathBuf>,
    /// `linux.uidMappings`.
    pub uid_map: Vec<LinuxIdMapping>,
    /// `linux.gidMappings`.
    pub gid_map: Vec<LinuxIdMapping>,
    /// CRI log capture.
    pub log: Option<LogOptions>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::nix("pipe", "", e))
}

/// Start the supervisor (and through it the container's init) and wait until the container
/// is `created`. Returns the saved state.
pub fn spawn(launch: Launch) -> Result<Saved> {
    let (r, w) = pipe()?;
    // One fork, no intermediate process: the supervisor is re-parented (to the caller's
    // subreaper or pid 1) when the short-lived caller exits; `run` reaps it itself.
    match sys::fork().map_err(|e| Error::io("fork", "supervisor", e))? {
        Forked::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            supervise(launch, w)
        }
        Forked::Parent(_) => {
            drop(w);
            let mut line = String::new();
            let _ = BufReader::new(std::fs::File::from(r)).read_line(&mut line);
            let id = launch.saved.id.clone();
            match line.strip_suffix('\n').unwrap_or(&line) {
                "OK" => Ok(Container::load(launch.dir.parent().unwrap_or(&launch.dir), &id)?.saved),
                msg if msg.starts_with('E') => Err(Error::Reported(msg[1..].to_string())),
                _ => Err(Error::Supervisor {
                    id,
                    reason: "exited during create without a report".into(),
                }),
            }
        }
    }
}

/// Body of the supervisor process. Never returns.
fn supervise(launch: Launch, sync: OwnedFd) -> ! {
    let mut sync = std::fs::File::from(sync);
    match prepare(&launch) {
        Ok(mut sup) => {
            let _ = sync.write_all(b"OK\n");
            drop(sync);
            sup.detach_stdio();
            sys::trim_heap();
            sys::release_file_pages();
            sup.run()
        }
        Err(e) => {
            let _ = launch.cgroup.remove();
            let _ = writeln!(sync, "E{}", e.to_string().replace('\n', " "));
            sys::exit_now(1)
        }
    }
}

struct Supervisor {
    c: Container,
    cgroup: Cgroup,
    process: init::ProcessPlan,
    listener: UnixListener,
    sigfd: SignalFd,
    control: Option<OwnedFd>,
    status: Option<OwnedFd>,
    pipes: [Option<OwnedFd>; 2],
    log: Option<CriLog>,
    waiters: Vec<UnixStream>,
    started_at: Option<String>,
}

fn write_map(pid: i32, file: &str, map: &[LinuxIdMapping]) -> Result<()> {
    if map.is_empty() {
        return Ok(());
    }
    let text: String = map
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let p = format!("/proc/{pid}/{file}");
    std::fs::write(&p, text).map_err(|e| Error::io("write", p, e))
}

fn prepare(l: &Launch) -> Result<Supervisor> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::nix("prctl", "PR_SET_CHILD_SUBREAPER", e))?;
    sys::ignore_signal(libc::SIGPIPE);
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .map_err(|e| Error::nix("block", "SIGCHLD", e))?;
    let sigfd = SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| Error::nix("signalfd", "SIGCHLD", e))?;
    let sock = l.dir.join(proto::SOCKET_NAME);
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io("listen", sock.display(), e))?;
    l.cgroup.create(l.resources.as_ref())?;
    let mut log = None;
    let mut pipes = [None, None];
    let mut child_stdio = None;
    let mut child_ends = None;
    if let Some(o) = &l.log {
        log = Some(
            CriLog::open(&o.path, o.max_size, o.max_files)
                .map_err(|e| Error::io("open log", o.path.display(), e))?,
        );
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        let devnull =
            std::fs::File::open("/dev/null").map_err(|e| Error::io("open", "/dev/null", e))?;
        child_stdio = Some([devnull.as_raw_fd(), ow.as_raw_fd(), ew.as_raw_fd()]);
        pipes = [Some(or), Some(er)];
        // The child's ends stay open until the clone, then only the child holds them.
        child_ends = Some((devnull, ow, ew));
    }
    let console = match &l.console_socket {
        Some(p) => Some(UnixStream::connect(p).map_err(|e| Error::io("connect", p.display(), e))?),
        None => None,
    };
    if let Some(p) = &l.pid_ns {
        let f = std::fs::File::open(p).map_err(|e| Error::io("open namespace", p.display(), e))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWPID)
            .map_err(|e| Error::nix("setns", p.display(), e))?;
    }
    let (ctl_r, ctl_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    let pid = match sys::clone_fork(l.plan.clone_flags.bits())
        .map_err(|e| Error::io("clone", "container init", e))?
    {
        Forked::Child => {
            drop((ctl_w, st_r, listener, sigfd));
            sys::reset_signals();
            init::run(
                &l.plan,
                InitChannels {
                    control: ctl_r,
                    status: st_w,
                    stdio: child_stdio,
                    console,
                },
            )
        }
        Forked::Parent(pid) => pid,
    };
    drop((ctl_r, st_w, console, child_ends));
    let fail = |e: Error| -> Error {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        e
    };
    write_map(pid, "uid_map", &l.uid_map).map_err(fail)?;
    // setgroups stays "allow": the supervisor holds CAP_SETGID in the parent namespace, so
    // the gid_map write is permitted and the container may still set supplementary groups.
    write_map(pid, "gid_map", &l.gid_map).map_err(fail)?;
    l.cgroup.add(pid).map_err(fail)?;
    let mut ctl = std::fs::File::from(ctl_w);
    ctl.write_all(b"g")
        .map_err(|e| fail(Error::io("release", "init", e)))?;
    let mut st = BufReader::new(std::fs::File::from(st_r));
    let mut line = String::new();
    let _ = st.read_line(&mut line);
    if line != "R\n" {
        let msg = line.strip_prefix('E').unwrap_or(&line).trim().to_string();
        let msg = if msg.is_empty() {
            "exited during setup".to_string()
        } else {
            msg
        };
        return Err(fail(Error::Init(msg)));
    }
    let mut saved = l.saved.clone();
    saved.pid = pid;
    saved.pid_start = state::start_time(pid).unwrap_or(0);
    let me = std::process::id() as i32;
    saved.supervisor_pid = me;
    saved.supervisor_start = state::start_time(me).unwrap_or(0);
    saved.status = Status::Created;
    saved.cgroup_dirs = l.cgroup.dirs.clone();
    let c = Container {
        dir: l.dir.clone(),
        saved,
    };
    c.save().map_err(fail)?;
    Ok(Supervisor {
        c,
        cgroup: l.cgroup.clone(),
        process: l.plan.process.clone(),
        listener,
        sigfd,
        control: Some(OwnedFd::from(ctl)),
        status: Some(OwnedFd::from(st.into_inner())),
        pipes,
        log,
        waiters: Vec::new(),
        started_at: None,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn reply(conn: &mut UnixStream, result: Reply) {
    let resp = Response {
        version: proto::VERSION,
        result,
    };
    if let Ok(mut line) = serde_json::to_vec(&resp) {
        line.push(b'\n');
        let _ = conn.write_all(&line);
    }
}

impl Supervisor {
    /// Stop holding the caller's terminal/pipes.
    fn detach_stdio(&mut self) {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for fd in 0..3 {
                let _ = sys::dup2(null.as_raw_fd(), fd);
            }
        }
    }

    fn run(&mut self) -> ! {
        loop {
            let exited = self.poll_once();
            if let Some(exit) = exited {
                self.finish(exit);
            }
        }
    }

    fn poll_once(&mut self) -> Option<ExitStatus> {
        let mut fds = vec![
            PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        for p in self.pipes.iter().flatten() {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            return None;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut idx = 2;
        for s in 0..2 {
            if self.pipes[s].is_some() {
                if ready[idx] {
                    self.pump(s, false);
                }
                idx += 1;
            }
        }
        if ready[1]
            && let Ok((conn, _)) = self.listener.accept()
        {
            self.handle(conn);
            // Requests run code the idle loop never needs again (JSON, state files).
            sys::trim_heap();
            sys::release_file_pages();
        }
        if ready[0] {
            while let Ok(Some(_)) = self.sigfd.read_signal() {}
            return self.reap();
        }
        None
    }

    /// Copy available output of pipe `s` into the log; `drain` reads until EAGAIN.
    fn pump(&mut self, s: usize, drain: bool) {
        let Some(fd) = &self.pipes[s] else { return };
        let mut buf = [0u8; 8192];
        let stream = if s == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        loop {
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    if let Some(l) = &mut self.log {
                        l.finish(stream);
                    }
                    self.pipes[s] = None;
                    return;
                }
                Ok(n) => {
                    if let Some(l) = &mut self.log {
                        l.write(stream, &buf[..n]);
                    }
                    if !drain {
                        return;
                    }
                }
            }
        }
    }

    fn reap(&mut self) -> Option<ExitStatus> {
        let init = self.c.saved.pid;
        let mut result = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => {
                    result = Some((code, None));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => {
                    result = Some((128 + sig as i32, Some(sig as i32)));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let (code, signal) = result?;
        Some(ExitStatus {
            code,
            signal,
            oom_killed: self.cgroup.oom_kills() > 0,
            finished_at: now(),
            started_at: self.started_at.clone(),
        })
    }

    fn finish(&mut self, exit: ExitStatus) -> ! {
        for s in 0..2 {
            if let Some(fd) = &self.pipes[s] {
                let _ = nix::fcntl::fcntl(
                    fd.as_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                self.pump(s, true);
            }
        }
        if let Some(l) = &mut self.log {
            l.finish(Stream::Stdout);
            l.finish(Stream::Stderr);
            l.sync();
        }
        if let Ok(data) = serde_json::to_vec(&exit) {
            let _ = state::write_durable(&self.c.dir.join(proto::EXIT_FILE_NAME), &data);
        }
        let _ = std::fs::remove_file(self.c.socket());
        for mut w in std::mem::take(&mut self.waiters) {
            reply(&mut w, Reply::Exited { exit: exit.clone() });
        }
        sys::exit_now(0)
    }

    fn handle(&mut self, mut conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        {
            let mut r = BufReader::new(&conn).take(1 << 20);
            if r.read_line(&mut line).is_err() {
                return;
            }
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                return reply(
                    &mut conn,
                    Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                );
            }
        };
        if req.version != proto::VERSION {
            return reply(
                &mut conn,
                Reply::Error {
                    message: format!(
                        "unsupported protocol version {} (this supervisor speaks {})",
                        req.version,
                        proto::VERSION
                    ),
                },
            );
        }
        let r = match req.op {
            Op::State => Reply::State {
                state: self.state(),
            },
            Op::Start => self.start(),
            Op::Wait => {
                let _ = conn.set_write_timeout(None);
                self.waiters.push(conn);
                return;
            }
            Op::Kill { signal, all } => self.kill(signal, all),
            Op::Stats => Reply::Stats {
                stats: self.cgroup.stats(),
            },
            Op::ReopenLog => match &mut self.log {
                Some(l) => match l.reopen() {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error {
                        message: format!("reopen log: {e}"),
                    },
                },
                None => Reply::Error {
                    message: "this container has no CRI log (create without --cri-log)".into(),
                },
            },
            Op::Exec(req) => return self.exec(conn, req),
        };
        reply(&mut conn, r);
    }

    fn state(&self) -> ContainerState {
        ContainerState {
            id: self.c.saved.id.clone(),
            status: self.c.status(),
            pid: self.c.saved.pid,
            supervisor_pid: self.c.saved.supervisor_pid,
            bundle: self.c.saved.bundle.display().to_string(),
            exit: None,
        }
    }

    fn start(&mut self) -> Reply {
        let (Some(ctl), Some(st)) = (self.control.take(), self.status.take()) else {
            return Reply::Error {
                message: format!(
                    "container {} is {:?}: only a created container can be started",
                    self.c.saved.id,
                    self.c.status()
                ),
            };
        };
        let mut ctl = std::fs::File::from(ctl);
        if ctl.write_all(b"s").is_err() {
            return Reply::Error {
                message: "container init exited before start".into(),
            };
        }
        let mut msg = String::new();
        let _ = std::fs::File::from(st).read_to_string(&mut msg);
        if let Some(m) = msg.strip_prefix('E') {
            return Reply::Error {
                message: m.trim().to_string(),
            };
        }
        self.started_at = Some(now());
        self.c.saved.status = Status::Running;
        if let Err(e) = self.c.save() {
            return Reply::Error {
                message: e.to_string(),
            };
        }
        Reply::Ok
    }

    fn kill(&self, signal: i32, all: bool) -> Reply {
        let Ok(sig) = Signal::try_from(signal) else {
            return Reply::Error {
                message: format!("unknown signal {signal}"),
            };
        };
        if all {
            self.cgroup.kill_all(signal);
        } else if let Err(e) = nix::sys::signal::kill(Pid::from_raw(self.c.saved.pid), sig) {
            return Reply::Error {
                message: format!("kill: {e}"),
            };
        }
        Reply::Ok
    }

    /// Exec runs in a forked helper so the loop never blocks on the command.
    fn exec(&mut self, mut conn: UnixStream, req: proto::ExecRequest) {
        if self.c.status() != Status::Running {
            return reply(
                &mut conn,
                Reply::Error {
                    message: "exec needs a running container".into(),
                },
            );
        }
        match sys::fork() {
            Ok(Forked::Child) => {
                let _ = conn.set_read_timeout(None);
                let r = cexec::run_captured(&self.c, &self.cgroup, &self.process, &req);
                let r = r.unwrap_or_else(|e| Reply::Error {
                    message: e.to_string(),
                });
                reply(&mut conn, r);
                sys::exit_now(0)
            }
            Ok(Forked::Parent(_)) => {}
            Err(e) => reply(
                &mut conn,
                Reply::Error {
                    message: format!("fork exec helper: {e}"),
                },
            ),
        }
    }
}
