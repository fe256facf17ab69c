//! The control plane's own `/metrics` (Prometheus text, kube-apiserver's names): requests by
//! verb, group, resource and code with latency histograms, watches open now, objects per
//! resource in the store and its revision, and the process's CPU and memory. The transport
//! (`server.rs`) reports each request here; the figures live in `ApiServer::telemetry`.

use super::ApiServer;
use super::resources::RESOURCES;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// kube-apiserver's request latency buckets (a subset).
const BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

type RequestKey = (String, String, String, String, u16);

#[derive(Default)]
struct Figures {
    /// (verb, group, version, resource, code) -> count
    requests: BTreeMap<RequestKey, u64>,
    /// (verb, group, version, resource) -> latency
    latency: BTreeMap<(String, String, String, String), Hist>,
    /// (group, version, resource) -> open watches
    watches: BTreeMap<(String, String, String), i64>,
}

/// Request figures of one API server.
#[derive(Default)]
pub struct ApiMetrics {
    figures: Arc<Mutex<Figures>>,
}

/// Keeps a watch counted while its response streams; uncounts it on drop.
pub struct WatchGuard {
    figures: Arc<Mutex<Figures>>,
    key: (String, String, String),
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Ok(mut f) = self.figures.lock()
            && let Some(n) = f.watches.get_mut(&self.key)
        {
            *n -= 1;
        }
    }
}

/// (group, version, resource, is_collection) of an API path; None for non-resource paths.
pub fn classify(path: &str) -> Option<(String, String, String, bool)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (resource, tail) = match rest {
        ["namespaces", _, r, tail @ ..] => (*r, tail),
        [r, tail @ ..] => (*r, tail),
        [] => return None,
    };
    let resource = match tail {
        [_, sub, ..] => format!("{resource}/{sub}"),
        _ => resource.to_string(),
    };
    Some((
        group.to_string(),
        version.to_string(),
        resource,
        tail.is_empty(),
    ))
}

/// kube-apiserver's request verbs: LIST and WATCH split out of GET, APPLY out of PATCH.
pub fn verb(method: &http::Method, collection: bool, watch: bool, apply: bool) -> &'static str {
    match *method {
        http::Method::GET if watch => "WATCH",
        http::Method::GET if collection => "LIST",
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH if apply => "APPLY",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE if collection => "DELETECOLLECTION",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

fn is_watch(query: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
}

impl ApiMetrics {
    /// Counts one finished request (`query` without `?`; `apply` for apply-patch bodies).
    pub fn observe(
        &self,
        method: &http::Method,
        path: &str,
        query: &str,
        apply: bool,
        code: u16,
        elapsed: Duration,
    ) {
        let Some((group, version, resource, collection)) = classify(path) else {
            return;
        };
        let watch = is_watch(query);
        let verb = verb(method, collection, watch, apply).to_string();
        let Ok(mut f) = self.figures.lock() else {
            return;
        };
        *f.requests
            .entry((
                verb.clone(),
                group.clone(),
                version.clone(),
                resource.clone(),
                code,
            ))
            .or_default() += 1;
        if watch {
            return;
        }
        let h = f
            .latency
            .entry((verb, group, version, resource))
            .or_insert_with(|| Hist {
                counts: vec![0; BUCKETS.len()],
                ..Default::default()
            });
        let s = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += s;
        h.count += 1;
    }

    /// Counts a watch whose events stream for as long as the guard lives.
    pub fn watch_started(&self, path: &str, query: &str) -> Option<WatchGuard> {
        if !is_watch(query) {
            return None;
        }
        let (group, version, resource, _) = classify(path)?;
        let key = (group, version, resource);
        *self
            .figures
            .lock()
            .ok()?
            .watches
            .entry(key.clone())
            .or_default() += 1;
        Some(WatchGuard {
            figures: self.figures.clone(),
            key,
        })
    }

    fn render(&self, out: &mut String) {
        let Ok(f) = self.figures.lock() else { return };
        let _ = writeln!(
            out,
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, version, resource and HTTP response code."
        );
        let _ = writeln!(out, "# TYPE apiserver_request_total counter");
        for ((verb, g, v, r, code), n) in &f.requests {
            let _ = writeln!(
                out,
                "apiserver_request_total{{code=\"{code}\",group=\"{g}\",resource=\"{r}\",verb=\"{verb}\",version=\"{v}\"}} {n}"
            );
        }
        let name = "apiserver_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Response latency distribution in seconds for each verb, group, version and resource."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for ((verb, g, v, r), h) in &f.latency {
            let l = format!("group=\"{g}\",resource=\"{r}\",verb=\"{verb}\",version=\"{v}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_longrunning_requests Gauge of all active long-running apiserver requests broken out by verb, group, version and resource."
        );
        let _ = writeln!(out, "# TYPE apiserver_longrunning_requests gauge");
        for ((g, v, r), n) in &f.watches {
            let _ = writeln!(
                out,
                "apiserver_longrunning_requests{{group=\"{g}\",resource=\"{r}\",verb=\"WATCH\",version=\"{v}\"}} {n}"
            );
        }
    }
}

/// Resident memory and CPU seconds of this process from `/proc/self/stat` (proc(5)).
fn process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields, rss the 24th (in pages).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu = (num(11) + num(12)) as f64 / 100.0;
    let rss = num(21) * 4096;
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
    );
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
    );
}

/// The whole `/metrics` document: request figures, store contents, process.
pub async fn render(api: &ApiServer) -> String {
    let mut out = String::with_capacity(16 * 1024);
    api.telemetry.render(&mut out);
    let _ = writeln!(
        out,
        "# HELP apiserver_storage_objects Number of stored objects at the time of last check split by kind."
    );
    let _ = writeln!(out, "# TYPE apiserver_storage_objects gauge");
    for r in RESOURCES {
        if let Ok(page) = api.store.list(&r.list_prefix(None), None, 0).await {
            let resource = if r.group.is_empty() {
                r.plural.to_string()
            } else {
                format!("{}.{}", r.plural, r.group)
            };
            let _ = writeln!(
                out,
                "apiserver_storage_objects{{resource=\"{resource}\"}} {}",
                page.items.len()
            );
        }
    }
    if let Ok(rev) = api.store.revision().await {
        let _ = writeln!(
            out,
            "# HELP keel_store_revision The store's newest revision.\n# TYPE keel_store_revision gauge\nkeel_store_revision {rev}"
        );
    }
    process(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths_and_verbs() {
        assert_eq!(
            classify("/api/v1/namespaces/default/pods"),
            Some(("".into(), "v1".into(), "pods".into(), true))
        );
        assert_eq!(
            classify("/apis/apps/v1/namespaces/x/deployments/web/scale"),
            Some((
                "apps".into(),
                "v1".into(),
                "deployments/scale".into(),
                false
            ))
        );
        assert_eq!(
            classify("/api/v1/nodes/n1"),
            Some(("".into(), "v1".into(), "nodes".into(), false))
        );
        assert_eq!(classify("/healthz"), None);
        assert_eq!(verb(&http::Method::GET, true, true, false), "WATCH");
        assert_eq!(verb(&http::Method::GET, true, false, false), "LIST");
        assert_eq!(verb(&http::Method::PATCH, false, false, true), "APPLY");
    }

    #[test]
    fn counts_requests_and_open_watches() {
        let m = ApiMetrics::default();
        m.observe(
            &http::Method::GET,
            "/api/v1/namespaces/default/pods",
            "",
            false,
            200,
            Duration::from_millis(3),
        );
        m.observe(
            &http::Method::GET,
            "/api/v1/namespaces/default/pods",
            "",
            false,
            200,
            Duration::from_millis(30),
        );
        let g = m.watch_started("/api/v1/pods", "watch=true&resourceVersion=5");
        assert!(g.is_some());
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("apiserver_request_total{code=\"200\",group=\"\",resource=\"pods\",verb=\"LIST\",version=\"v1\"} 2\n"), "{out}");
        assert!(out.contains("apiserver_request_duration_seconds_bucket{group=\"\",resource=\"pods\",verb=\"LIST\",version=\"v1\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("apiserver_longrunning_requests{group=\"\",resource=\"pods\",verb=\"WATCH\",version=\"v1\"} 1\n"));
        drop(g);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("verb=\"WATCH\",version=\"v1\"} 0\n"));
    }
}
