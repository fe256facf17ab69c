//! Shared pieces of the integration tests: a real HTTP/1.1 server on 127.0.0.1 (plain or TLS
//! with a throwaway self-signed certificate), a closed port, an [`Exec`] that runs commands on
//! this host, and targets.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::ContainerPort;
use keel_probe::{Exec, ExecError, ExecFuture, ExecOutput, Target, pod_label};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers for a request path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, extra headers, body (sent with Content-Length).
    Status(u16, Vec<(String, String)>, String),
    /// Status and body sent chunked.
    Chunked(u16, Vec<String>),
    /// Never answer (for timeouts).
    Hang,
}

pub fn ok(body: &str) -> Reply {
    Reply::Status(200, vec![], body.to_string())
}

pub fn redirect(status: u16, location: &str, body: &str) -> Reply {
    Reply::Status(
        status,
        vec![("Location".into(), location.into())],
        body.into(),
    )
}

pub type Route = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A running test server; `requests` holds every request head it received.
pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        Self::start_with(Arc::new(route), None).await
    }

    pub async fn start_tls(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        Self::start_with(Arc::new(route), Some(tls_acceptor())).await
    }

    async fn start_with(route: Route, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let route = route.clone();
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, route, seen).await;
                            }
                        }
                        None => serve(stream, route, seen).await,
                    }
                });
            }
        });
        Server {
            addr,
            requests,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }

    pub fn request(&self, i: usize) -> String {
        self.requests.lock().expect("requests")[i].clone()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    route: Route,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head == [0x16] {
            // A TLS ClientHello: answer as an HTTP server does to a malformed request.
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    seen.lock().expect("requests").push(head);
    let reply = route(&path);
    let text = match reply {
        Reply::Hang => {
            // Keep the connection open until the client gives up.
            let _ = stream.read(&mut byte).await;
            return;
        }
        Reply::Status(status, headers, body) => {
            let mut text = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
            for (k, v) in headers {
                text.push_str(&format!("{k}: {v}\r\n"));
            }
            text.push_str("Connection: close\r\n\r\n");
            text.push_str(&body);
            text
        }
        Reply::Chunked(status, chunks) => {
            let mut text = format!("HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n");
            for c in chunks {
                text.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
            }
            text.push_str("0\r\n\r\n");
            text
        }
    };
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["probe.test".to_string()])
        .expect("self-signed certificate");
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A port on 127.0.0.1 with nothing listening.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Runs the command on this host (`argv[0]` from PATH), killing it at the timeout: the
/// integration tests' stand-in for the supervisor's exec, with real processes.
pub struct HostExec;

impl Exec for HostExec {
    fn exec<'a>(
        &'a self,
        _container: &'a str,
        command: &'a [String],
        timeout: Option<Duration>,
    ) -> ExecFuture<'a> {
        Box::pin(async move {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| ExecError("empty command".into()))?;
            let child = tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .output();
            let result = match timeout {
                Some(t) => match tokio::time::timeout(t, child).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Ok(ExecOutput {
                            exit_code: 137,
                            timed_out: true,
                            ..ExecOutput::default()
                        });
                    }
                },
                None => child.await,
            };
            let out = result.map_err(|e| ExecError(format!("exec {program}: {e}")))?;
            Ok(ExecOutput {
                exit_code: out.status.code().unwrap_or(128),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                timed_out: false,
            })
        })
    }
}

/// A container "web" of pod default/web at 127.0.0.1 with port 8080... named `http` mapped to
/// `http_port`.
pub fn target(http_port: u16) -> Target {
    Target {
        pod: pod_label("web", "default", "u1"),
        container: "web".into(),
        pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
        ports: vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(http_port),
            ..ContainerPort::default()
        }],
        exec: Arc::new(HostExec),
        started_at: SystemTime::now(),
    }
}
