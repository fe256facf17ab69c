//! Which handler answers a request: `/healthz`, `/containerLogs/<ns>/<pod>/<container>`, and
//! the stats paths (`/stats/...`, `/metrics...`), after the caller check of `tls::Caller`.
//! Errors are plain text with kubelet's status codes (kube-apiserver relays the text).

use super::containerlogs;
use super::tls::Caller;
use crate::state::Layout;
use crate::stats::Stats;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use std::convert::Infallible;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn text(code: u16, body: impl Into<String>) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.into())).boxed());
    *resp.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `key=value&...`, percent-decoded.
pub fn query(q: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Some(v) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
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

/// Answers one request.
pub async fn handle<B>(
    layout: &Layout,
    stats: Option<&Stats>,
    caller: &Caller,
    req: hyper::Request<B>,
) -> hyper::Response<Body> {
    if let Some((code, msg)) = caller.refuse() {
        return text(code, msg);
    }
    let path = req.uri().path().to_string();
    let get = req.method() == http::Method::GET || req.method() == http::Method::HEAD;
    if path == "/healthz" {
        return text(200, "ok");
    }
    if let Some(rest) = path.strip_prefix("/containerLogs/") {
        if !get {
            return text(405, "405 method not allowed");
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let [ns, pod, container] = parts.as_slice() else {
            return text(
                400,
                "expected /containerLogs/<namespace>/<pod>/<container>".to_string(),
            );
        };
        if ns.is_empty() || pod.is_empty() || container.is_empty() {
            return text(
                400,
                "expected /containerLogs/<namespace>/<pod>/<container>".to_string(),
            );
        }
        return logs(layout, ns, pod, container, &query(req.uri().query())).await;
    }
    if path.starts_with("/stats/") || path.starts_with("/metrics") {
        if !get {
            return text(405, "405 method not allowed");
        }
        let q = req.uri().query().unwrap_or_default();
        if let Some(stats) = stats
            && let Some(resp) = crate::stats::http::handle(stats, &path, q).await
        {
            return resp.map(|body| Full::new(Bytes::from(body)).boxed());
        }
    }
    text(404, "404 page not found")
}

async fn logs(
    layout: &Layout,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> hyper::Response<Body> {
    let opts = match containerlogs::options(query, chrono::Utc::now()) {
        Ok(o) => o,
        Err(e) => return text(e.status(), e.to_string()),
    };
    let pods = layout.pods();
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    let previous = opts.previous;
    let found = tokio::task::spawn_blocking(move || {
        containerlogs::find(&pods, &ns, &pod, &container, previous)
    })
    .await;
    let instance = match found {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return text(e.status(), e.to_string()),
        Err(e) => return text(500, format!("reading the pod records: {e}")),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::task::spawn_blocking(move || containerlogs::stream(&instance, opts, tx));
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = hyper::Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query(Some("sinceTime=2026-11-27T08%3A00%3A00Z&follow=true&x"));
        assert_eq!(
            q,
            vec![
                ("sinceTime".into(), "2026-11-27T08:00:00Z".into()),
                ("follow".into(), "true".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(query(Some("a=%zz%4")), vec![("a".into(), "%zz%4".into())]);
    }
}
