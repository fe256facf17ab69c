//! httpGet probes and hooks: a small HTTP/1.1 client (one `GET`, `Connection: close`) over a
//! tokio `TcpStream`, with rustls for HTTPS. It mirrors kubelet's probe client
//! (`pkg/probe/http`): `User-Agent: kube-probe/<major>.<minor>` and `Accept: */*` unless the
//! probe sets them, the `Host` header from `httpHeaders`, redirects followed only while they stay
//! on the same host name (at most 10), at most 10 KiB of body read, 200-399 is success, a
//! redirect that is not followed is a Warning. Error texts are Go's, since kubelet puts them
//! into events: `Get "http://10.44.0.5:8080/": dial tcp 10.44.0.5:8080: connect: connection refused`.

use crate::action::Outcome;
use crate::target::{AddressError, Target};
use crate::tcp::{connect, errno_text, join_host_port};
use k8s_openapi::api::core::v1::HTTPGetAction;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// kubelet's probe User-Agent (`kube-probe/<major>.<minor>` of the Kubernetes version served).
pub const PROBE_USER_AGENT: &str = "kube-probe/1.33";
/// kubelet's User-Agent for httpGet lifecycle hooks.
pub const LIFECYCLE_USER_AGENT: &str = "kube-lifecycle/1.33";
/// Go's error when an HTTPS request reaches a plain HTTP server.
pub(crate) const PLAIN_HTTP_ANSWER: &str = "http: server gave HTTP response to HTTPS client";

/// Body bytes kept (kubelet's `maxRespBodyLength`).
const MAX_BODY: usize = 10 * 1024;
/// Response head limit.
const MAX_HEAD: usize = 64 * 1024;
/// Go's default redirect limit.
const MAX_REDIRECTS: usize = 10;

/// An absolute http(s) URL, split the way the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Lowercase scheme ("http", "https", or whatever the probe named).
    pub scheme: String,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme,
            join_host_port(&self.host, self.port),
            self.target
        )
    }
}

/// Path as given in the probe; kubelet parses it as a URL reference, so a query is kept and a
/// missing leading `/` is added.
fn request_target(path: &str) -> String {
    let path = path.replace(' ', "%20");
    if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl Url {
    /// Resolves a `Location` header against this URL (absolute, scheme-relative, absolute
    /// path or relative path).
    fn join(&self, location: &str) -> Result<Url, String> {
        let lower = location.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("http://") {
            ("http".to_string(), &location[7..])
        } else if lower.starts_with("https://") {
            ("https".to_string(), &location[8..])
        } else if let Some(rest) = location.strip_prefix("//") {
            (self.scheme.clone(), rest)
        } else if location.starts_with('/') {
            return Ok(Url {
                target: request_target(location),
                ..self.clone()
            });
        } else if location.contains("://") {
            return Err(format!("unsupported protocol scheme in {location:?}"));
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            return Ok(Url {
                target: request_target(&format!("{dir}{location}")),
                ..self.clone()
            });
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        let (host, port) = split_authority(authority, default_port(&scheme))?;
        Ok(Url {
            scheme,
            host,
            port,
            target: request_target(if target.is_empty() { "/" } else { target }),
        })
    }
}

fn split_authority(authority: &str, default: u16) -> Result<(String, u16), String> {
    let invalid = || format!("invalid host in {authority:?}");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']').ok_or_else(invalid)?;
        (&rest[..close], rest[close + 1..].strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid());
    }
    let port = match port {
        None | Some("") => default,
        Some(p) => p
            .parse()
            .map_err(|_| format!("invalid port {p:?} after host"))?,
    };
    Ok((host.to_string(), port))
}

/// One GET as kubelet would send it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub url: Url,
    /// Extra header lines, in the probe's order; `User-Agent`/`Accept` defaults already applied.
    headers: Vec<(String, String)>,
    /// The `Host` header from `httpHeaders`, if any (Go's `req.Host`).
    host_header: Option<String>,
}

impl Request {
    /// Builds the request for an httpGet action (`NewRequestForHTTPGetAction`).
    pub(crate) fn for_action(
        action: &HTTPGetAction,
        target: &Target,
        user_agent: &str,
    ) -> Result<Request, AddressError> {
        let scheme = action
            .scheme
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("http")
            .to_ascii_lowercase();
        let host = target.host(action.host.as_deref())?;
        let port = target.resolve_port(&action.port)?;
        let url = Url {
            scheme,
            host,
            port,
            target: request_target(action.path.as_deref().unwrap_or("")),
        };
        let given = action.http_headers.as_deref().unwrap_or(&[]);
        let named = |name: &str| given.iter().find(|h| h.name.eq_ignore_ascii_case(name));
        let mut headers = Vec::new();
        if named("User-Agent").is_none() {
            headers.push(("User-Agent".to_string(), user_agent.to_string()));
        }
        if named("Accept").is_none() {
            headers.push(("Accept".to_string(), "*/*".to_string()));
        }
        for h in given {
            let empty_default = (h.name.eq_ignore_ascii_case("User-Agent")
                || h.name.eq_ignore_ascii_case("Accept"))
                && h.value.is_empty();
            if !h.name.eq_ignore_ascii_case("Host") && !empty_default {
                headers.push((h.name.clone(), h.value.clone()));
            }
        }
        let host_header = named("Host")
            .map(|h| h.value.clone())
            .filter(|v| !v.is_empty());
        Ok(Request {
            url,
            headers,
            host_header,
        })
    }
}

/// The part of a response the callers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    /// At most [`MAX_BODY`] bytes, lossy UTF-8.
    pub body: String,
}

/// Sends the request, following same-host redirects. The error is Go's `*url.Error` text
/// (`Get "<url>": <cause>`). No timeout here: callers bound the whole exchange, as Go's
/// `http.Client.Timeout` does.
pub(crate) async fn get(request: &Request) -> Result<Response, String> {
    let mut url = request.url.clone();
    let mut host_header = request.host_header.clone();
    let mut followed = 0;
    loop {
        let head = exchange(&url, host_header.as_deref(), &request.headers)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let location = match (head.status, head.location) {
            (301 | 302 | 303 | 307 | 308, Some(location)) => location,
            (status, _) => {
                return Ok(Response {
                    status,
                    body: head.body,
                });
            }
        };
        let next = url.join(&location).map_err(|e| {
            format!("Get \"{url}\": failed to parse Location header {location:?}: {e}")
        })?;
        // kubelet's RedirectChecker(followNonLocalRedirects=false): another host ends the
        // chain and the redirect itself is the answer.
        if !next.host.eq_ignore_ascii_case(&request.url.host) {
            return Ok(Response {
                status: head.status,
                body: head.body,
            });
        }
        followed += 1;
        if followed >= MAX_REDIRECTS {
            return Err(format!(
                "Get \"{next}\": stopped after {MAX_REDIRECTS} redirects"
            ));
        }
        // Go keeps a custom Host header only through relative redirects.
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("//") || lower.starts_with("http://") || lower.starts_with("https://")
        {
            host_header = None;
        }
        url = next;
    }
}

struct Head {
    status: u16,
    location: Option<String>,
    body: String,
}

/// One request/response on a fresh connection.
async fn exchange(
    url: &Url,
    host_header: Option<&str>,
    headers: &[(String, String)],
) -> Result<Head, String> {
    let mut text = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n",
        url.target,
        host_header.map_or_else(|| join_host_port(&url.host, url.port), str::to_string)
    );
    for (name, value) in headers {
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic() || b == b':') {
            return Err(format!("net/http: invalid header field name {name:?}"));
        }
        if value.contains(['\r', '\n']) {
            return Err(format!("net/http: invalid header field value for {name:?}"));
        }
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Connection: close\r\n\r\n");
    let stream = match url.scheme.as_str() {
        "http" | "https" => connect(&url.host, url.port).await?,
        other => return Err(format!("unsupported protocol scheme {other:?}")),
    };
    if url.scheme == "https" {
        let tls = crate::tls::handshake(&url.host, stream).await?;
        roundtrip(tls, text.as_bytes()).await
    } else {
        roundtrip(stream, text.as_bytes()).await
    }
}

async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Head, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {}", errno_text(&e)))?;
    let mut buf = Vec::with_capacity(4096);
    let (status, location, framing, head_len) = loop {
        let n = read_more(&mut stream, &mut buf).await?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or(0);
                if (100..200).contains(&status) && status != 101 {
                    // Informational answers precede the real one.
                    buf.drain(..len);
                    continue;
                }
                let find = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let framing = if matches!(status, 204 | 304) {
                    Framing::Length(0)
                } else if find("Transfer-Encoding").is_some_and(|v| v.contains("chunked")) {
                    Framing::Chunked
                } else if let Some(len) = find("Content-Length").and_then(|v| v.parse().ok()) {
                    Framing::Length(len)
                } else {
                    Framing::UntilClose
                };
                break (status, find("Location"), framing, len);
            }
            Ok(httparse::Status::Partial) if n == 0 => {
                return Err(if buf.is_empty() {
                    "EOF".to_string()
                } else {
                    "unexpected EOF".to_string()
                });
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err("net/http: server response headers exceeded the limit".into());
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("net/http: malformed HTTP response: {e}")),
        }
    };
    buf.drain(..head_len);
    let body = read_body(&mut stream, buf, framing).await;
    Ok(Head {
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads more bytes into `buf`; 0 at EOF.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {}", errno_text(&e)))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads at most [`MAX_BODY`] body bytes. Read errors keep what arrived: the status decides.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut raw: Vec<u8>,
    framing: Framing,
) -> Vec<u8> {
    loop {
        let (body, complete) = match framing {
            Framing::Length(len) => {
                let have = raw.len().min(len);
                (raw[..have].to_vec(), have == len)
            }
            Framing::Chunked => decode_chunked(&raw),
            Framing::UntilClose => (raw.clone(), false),
        };
        if complete || body.len() >= MAX_BODY {
            let mut body = body;
            body.truncate(MAX_BODY);
            return body;
        }
        match read_more(stream, &mut raw).await {
            Ok(0) | Err(_) => return body,
            Ok(_) => {}
        }
    }
}

/// Decodes the chunks present in `raw`; `true` once the last (empty) chunk was seen.
fn decode_chunked(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    let mut rest = raw;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, true);
        };
        if size == 0 {
            return (body, true);
        }
        let data = &rest[eol + 2..];
        if data.len() < size {
            body.extend_from_slice(data);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        rest = data.get(size + 2..).unwrap_or(&[]);
    }
}

/// The httpGet probe (`DoHTTPProbe`).
pub(crate) async fn probe(action: &HTTPGetAction, target: &Target, timeout: Duration) -> Outcome {
    let request = match Request::for_action(action, target, PROBE_USER_AGENT) {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    match tokio::time::timeout(timeout, get(&request)).await {
        Err(_) => Outcome::Failure(format!(
            "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            request.url
        )),
        Ok(Err(e)) => Outcome::Failure(e),
        Ok(Ok(r)) if (200..300).contains(&r.status) => Outcome::Success(r.body),
        Ok(Ok(r)) if (300..400).contains(&r.status) => Outcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            r.body
        )),
        // The body stays out of the message (kubernetes/kubernetes#99425).
        Ok(Ok(r)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {}", r.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::fake;
    use k8s_openapi::api::core::v1::HTTPHeader;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn base() -> Url {
        Url {
            scheme: "http".into(),
            host: "10.0.0.5".into(),
            port: 8080,
            target: "/a/b?x=1".into(),
        }
    }

    #[test]
    fn locations_resolve() {
        let cases = [
            ("/healthz", "http://10.0.0.5:8080/healthz"),
            ("c", "http://10.0.0.5:8080/a/c"),
            ("http://10.0.0.5:9090", "http://10.0.0.5:9090/"),
            ("https://other.test/x?y", "https://other.test:443/x?y"),
            ("//[fd00::1]:81/z", "http://[fd00::1]:81/z"),
        ];
        for (location, want) in cases {
            assert_eq!(
                base().join(location).map(|u| u.to_string()),
                Ok(want.to_string())
            );
        }
        assert!(base().join("ftp://x/").is_err());
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            (b"abcde".to_vec(), true)
        );
        assert_eq!(decode_chunked(b"3\r\nab"), (b"ab".to_vec(), false));
    }

    #[test]
    fn requests_carry_kubelets_headers() {
        let t = fake::target(fake::FakeExec::new(vec![]));
        let action = HTTPGetAction {
            path: Some("healthz?full=1".into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTPS".into()),
            http_headers: Some(vec![
                HTTPHeader {
                    name: "host".into(),
                    value: "web.test".into(),
                },
                HTTPHeader {
                    name: "Accept".into(),
                    value: "".into(),
                },
                HTTPHeader {
                    name: "X-Probe".into(),
                    value: "1".into(),
                },
            ]),
            ..HTTPGetAction::default()
        };
        let r = Request::for_action(&action, &t, PROBE_USER_AGENT).expect("request");
        assert_eq!(r.url.to_string(), "https://127.0.0.1:8080/healthz?full=1");
        assert_eq!(r.host_header.as_deref(), Some("web.test"));
        assert_eq!(
            r.headers,
            vec![
                ("User-Agent".to_string(), "kube-probe/1.33".to_string()),
                ("X-Probe".to_string(), "1".to_string()),
            ]
        );
    }
}
