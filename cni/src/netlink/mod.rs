//! A small synchronous rtnetlink client on a raw `NETLINK_ROUTE` socket: message building,
//! one request in flight, acks and dumps (netlink(7), rtnetlink(7)). The plugins are
//! short-lived single-request programs, so a blocking socket is all they need; a socket opened
//! while inside a network namespace stays bound to it, which is how one thread talks to the
//! host and the pod namespace without switching back and forth.

mod addr;
pub mod link;
mod message;
mod route;

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

pub use addr::Addr;
pub use link::{Link, VethSpec};
pub use message::{Attrs, Msg};
pub use route::RouteEntry;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ECHO: u16 = 0x8;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open a netlink socket")]
    Socket(#[source] Errno),
    #[error("{op}: {errno}")]
    Kernel { op: String, errno: Errno },
    #[error("{op}: malformed netlink reply")]
    Malformed { op: String },
}

impl Error {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } | Error::Socket(errno) => Some(*errno),
            Error::Malformed { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One `NETLINK_ROUTE` socket, bound to the network namespace it was opened in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub fn open() -> Result<Socket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(Error::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(Error::Socket)?;
        Ok(Socket {
            fd,
            seq: 1,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends one request that the kernel acks; returns the replies received before the ack.
    pub fn request(&mut self, msg: Msg, op: &str) -> Result<Vec<Vec<u8>>> {
        self.exchange(msg, op, false)
    }

    /// Sends one dump request; returns every message up to `NLMSG_DONE`.
    pub fn dump(&mut self, msg: Msg, op: &str) -> Result<Vec<Vec<u8>>> {
        self.exchange(msg, op, true)
    }

    fn exchange(&mut self, msg: Msg, op: &str, _dump: bool) -> Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        let kernel = |errno| Error::Kernel {
            op: op.to_string(),
            errno,
        };
        loop {
            match send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => r.map_err(kernel)?,
            };
            break;
        }
        let mut replies = Vec::new();
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => r.map_err(kernel)?,
            };
            let mut off = 0;
            while off + 16 <= n {
                let b = &self.buf[off..n];
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if len < 16 || len > b.len() {
                    return Err(Error::Malformed { op: op.to_string() });
                }
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                let payload = &b[16..len];
                off += (len + 3) & !3;
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .ok_or_else(|| Error::Malformed { op: op.to_string() })?;
                        return if code == 0 {
                            Ok(replies)
                        } else {
                            Err(kernel(Errno::from_raw(-code)))
                        };
                    }
                    NLMSG_DONE => return Ok(replies),
                    // a reply; for non-dumps the ack follows it
                    _ => replies.push(payload.to_vec()),
                }
            }
        }
    }
}

/// Request flags for a change that must be acked.
pub fn change_flags(extra: u16) -> u16 {
    NLM_F_REQUEST | NLM_F_ACK | extra
}
