//! tcpSocket probes, and the TCP dial shared with httpGet. Error texts are Go's `net` package
//! texts, because kubelet puts `err.Error()` into its events (`pkg/probe/tcp/tcp.go`):
//! `dial tcp 10.44.0.5:8080: connect: connection refused`, `dial tcp ...: i/o timeout`.

use crate::action::Outcome;
use crate::target::Target;
use k8s_openapi::api::core::v1::TCPSocketAction;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

/// `host:port`, with brackets around IPv6 literals (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An OS error as Go prints a `syscall.Errno`: the C library text, lowercase, no "(os error N)".
pub(crate) fn errno_text(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        return "EOF".into();
    }
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

/// Connects to `host:port` (resolving a name first). The error is Go's `net.Dial` text. No
/// timeout here: callers bound the whole operation.
pub(crate) async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("dial tcp: lookup {host}: {}", errno_text(&e)))?
            .collect(),
    };
    let mut first_error = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                first_error
                    .get_or_insert_with(|| format!("dial tcp {addr}: connect: {}", errno_text(&e)));
            }
        }
    }
    Err(first_error.unwrap_or_else(|| format!("dial tcp: lookup {host}: no such host")))
}

/// The tcpSocket probe: Success when a connection opens within `timeout`.
pub(crate) async fn probe(action: &TCPSocketAction, target: &Target, timeout: Duration) -> Outcome {
    let port = match target.resolve_port(&action.port) {
        Ok(p) => p,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let host = match target.host(action.host.as_deref()) {
        Ok(h) => h,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    match tokio::time::timeout(timeout, connect(&host, port)).await {
        Ok(Ok(_stream)) => Outcome::Success(String::new()),
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!(
            "dial tcp {}: i/o timeout",
            join_host_port(&host, port)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_reads_like_go() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(errno_text(&refused), "connection refused");
        let unreachable = io::Error::from_raw_os_error(113);
        assert_eq!(errno_text(&unreachable), "no route to host");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }
}
