//! Every `unsafe` call of keel-shim: raw clone/fork, pidfds, `_exit`, ioctls.
//!
//! Everything else uses nix's safe wrappers. The shim is single-threaded, which is what makes
//! forking here sound (see the SAFETY notes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Result of a fork-like clone, as seen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent; the child's host pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// `clone(2)` without a new stack (fork semantics) plus namespace `flags` (`CLONE_NEW*`).
/// The child gets SIGCHLD as its exit signal, so `waitpid` works as for `fork`.
pub fn clone_fork(flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: with a null stack pointer the kernel duplicates the caller's stack like fork(2).
    // keel-shim is single-threaded, so no other thread can hold a lock (e.g. the allocator's)
    // that the child would inherit in a locked state; the child continues running Rust code
    // on its private copy of the address space. No pointer arguments are passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// Plain fork.
pub fn fork() -> io::Result<Forked> {
    clone_fork(0)
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success the return value is a new file
    // descriptor that nothing else owns, so wrapping it in OwnedFd is correct.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ret is a fresh, valid descriptor owned by nobody else (see above).
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `pidfd_send_signal(2)`: signal the process behind a pidfd (no pid-reuse race).
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo pointer, which the syscall allows.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Leave the process immediately, without running destructors or atexit handlers (used by
/// forked children, which must not flush the parent's buffers twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Make `fd` the controlling terminal of the calling session (`TIOCSCTTY`).
pub fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument; fd is checked by the kernel.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close every descriptor >= `from` except those in `keep` (`close_range` where possible).
pub fn close_fds_from(from: RawFd, keep: &[RawFd]) {
    let mut fds: Vec<RawFd> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            if let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<RawFd>().ok())
                && fd >= from
                && !keep.contains(&fd)
            {
                fds.push(fd);
            }
        }
    }
    for fd in fds {
        // SAFETY: closing a descriptor number; descriptors still owned by Rust objects in this
        // (about to exec or exit) process are never used again after this call.
        unsafe {
            libc::close(fd);
        }
    }
}

/// Mark `fd` close-on-exec or not.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments on a descriptor number.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(2)`.
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on descriptor numbers; `to` is replaced atomically.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `malloc_trim(0)`: hand freed heap back to the kernel (keeps the supervisor's RSS small).
pub fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reset every catchable signal to its default action and unblock all signals, so the
/// container's process does not inherit the shim's mask or ignored SIGPIPE (both survive
/// execve: signal(7) "Signal mask and pending signals", "execve").
pub fn reset_signals() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code; invalid numbers just fail.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Ignore `sig` (SIGPIPE in the supervisor: a client hanging up must not kill it).
pub fn ignore_signal(sig: libc::c_int) {
    // SAFETY: SIG_IGN involves no handler code.
    unsafe {
        libc::signal(sig, libc::SIG_IGN);
    }
}

/// Drop this process's resident pages of clean, read-only file mappings (program text,
/// rodata, shared libraries) with `MADV_DONTNEED`. They are re-read from the page cache on
/// demand, so the long-lived supervisor's RSS only counts the code its small loop touches,
/// not everything `create` ran before the fork. Mappings holding any private (copied) page,
/// such as RELRO segments the loader relocated and then made read-only, are left alone:
/// dropping those would bring back the unrelocated file contents.
pub fn release_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize)> = None;
    let mut candidates = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            current = (path.starts_with('/') && !perms.contains('w')).then_some((start, end));
            continue;
        }
        if first == "Anonymous:"
            && let Some(range) = current.take()
            && f.next() == Some("0")
        {
            candidates.push(range);
        }
    }
    for (start, end) in candidates {
        // SAFETY: the range is a whole read-only, file-backed private mapping of this process
        // without any anonymous (copied-on-write) page, per /proc/self/smaps; MADV_DONTNEED
        // only discards clean page-table entries that fault back in from the file unchanged.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}
