//! HTTPS transport: rustls with optional client certificates verified against the cluster CA,
//! HTTP/1.1 via hyper, a 3 MiB body limit (kube-apiserver's), and `run(listener, tls, shutdown,
//! api)` so tests bind port 0 and run the server in-process.

use super::ApiServer;
use super::auth::{self, User};
use super::error::ApiError;
use super::handlers::{self, Reply, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading TLS material {path}: {detail}")]
    Tls { path: String, detail: String },
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

fn pem_certs(path: &Path) -> Result<Vec<pki_types::CertificateDer<'static>>, ServeError> {
    let err = |detail: String| ServeError::Tls {
        path: path.display().to_string(),
        detail,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))
}

/// The server's TLS configuration from the data dir: serving cert/key, and the CA for clients.
pub fn tls_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let certs = pem_certs(&dir.join("apiserver.crt"))?;
    let key_path = dir.join("apiserver.key");
    let key_data = std::fs::read(&key_path).map_err(|e| ServeError::Tls {
        path: key_path.display().to_string(),
        detail: e.to_string(),
    })?;
    let key = rustls_pemfile::private_key(&mut key_data.as_slice())
        .map_err(|e| ServeError::Tls {
            path: key_path.display().to_string(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| ServeError::Tls {
            path: key_path.display().to_string(),
            detail: "no private key found".into(),
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&dir.join("ca.crt"))? {
        roots
            .add(ca)
            .map_err(|e| ServeError::Config(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| ServeError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(code: u16, value: &serde_json::Value) -> hyper::Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    raw_response(code, "application/json", body)
}

fn raw_response(code: u16, content_type: &str, body: Vec<u8>) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn error_response(e: &ApiError) -> hyper::Response<Body> {
    json_response(e.code(), &e.status())
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

async fn handle(
    api: Arc<ApiServer>,
    logs: Option<Arc<crate::logs::store::LogStore>>,
    cert_user: Option<User>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let apply = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::TooLarge
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            };
            return error_response(&err);
        }
    };
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let user = match (cert_user, bearer) {
        (Some(u), _) => u,
        (None, Some(token)) => match auth::user_from_token(&api, &token).await {
            Ok(u) => u,
            Err(e) => return error_response(&e),
        },
        (None, None) => User::anonymous(),
    };
    let request = Request {
        method: parts.method,
        path: path.clone(),
        query: parse_query(parts.uri.query()),
        headers: parts.headers,
        body,
        user,
    };
    // The log store's routes (crate::logs::http) sit beside the Kubernetes API.
    let logged = match &logs {
        Some(l) => {
            let r = &request;
            crate::logs::http::route(l, &r.user, &r.method, &r.path, &r.query, &r.body).await
        }
        None => None,
    };
    let reply = match logged {
        Some(r) => r.map(|v| Reply::Json(200, v)),
        None => handlers::dispatch(&api, request).await,
    };
    let resp = match reply {
        Ok(Reply::Json(code, v)) => json_response(code, &v),
        Ok(Reply::Raw(code, ct, body)) => raw_response(code, ct, body),
        Ok(Reply::Stream(ct, rx)) => {
            // The guard keeps the watch counted in /metrics until the stream ends.
            let guard = api.telemetry.watch_started(&path, &query);
            let stream = futures_util::stream::unfold((rx, guard), |(mut rx, g)| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), (rx, g)))
            });
            let mut resp = hyper::Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(ct),
            );
            resp
        }
        Err(e) => {
            if e.code() >= 500 {
                tracing::error!(%method, %path, error = %e, "request failed");
            }
            error_response(&e)
        }
    };
    api.telemetry.observe(
        &method,
        &path,
        &query,
        apply,
        resp.status().as_u16(),
        started.elapsed(),
    );
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// Serves HTTPS on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    api: Arc<ApiServer>,
) {
    run_with_logs(listener, tls, shutdown, api, None).await
}

/// `run`, also serving the log store's push and query routes when `logs` is given.
pub async fn run_with_logs(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    api: Arc<ApiServer>,
    logs: Option<Arc<crate::logs::store::LogStore>>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let logs = logs.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| auth::user_from_cert(c));
            let service = service_fn(move |req| {
                let api = api.clone();
                let logs = logs.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(api, logs, cert_user, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
