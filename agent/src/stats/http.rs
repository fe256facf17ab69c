//! The stats endpoints the agent's HTTPS server (port 10250) serves: it authenticates the
//! caller, then hands the path and query here. `None` means "not a stats path".
//!
//! | path | body |
//! |---|---|
//! | `/stats/summary` | kubelet summary JSON (`?only_cpu_and_memory=true` trims it) |
//! | `/metrics/cadvisor` | Prometheus text, cAdvisor names |
//! | `/metrics/resource` | Prometheus text, metrics-server's subset |
//! | `/metrics` | Prometheus text, the agent's own figures |

use super::Stats;
use super::prometheus;
use super::summary;
use std::fmt::Write;

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn response(content_type: &str, body: String) -> http::Response<String> {
    let mut r = http::Response::new(body);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// True when `query` (without `?`) sets `key` to `true`.
fn flag(query: &str, key: &str) -> bool {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == key && v == "true")
}

/// Serves `path` (`/stats/summary`, `/metrics/cadvisor`, `/metrics/resource`, `/metrics`) from
/// the latest sample (one is collected on the spot before the first housekeeping pass). GET
/// only; the caller checks the method and authentication.
pub async fn handle(stats: &Stats, path: &str, query: &str) -> Option<http::Response<String>> {
    let path = path.trim_end_matches('/');
    match path {
        "/stats/summary" => {
            let sample = stats.latest_or_collect().await;
            let doc = summary::render(&sample, flag(query, "only_cpu_and_memory"));
            let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
            Some(response("application/json", body))
        }
        "/metrics/cadvisor" => {
            let sample = stats.latest_or_collect().await;
            Some(response(PROMETHEUS_TEXT, prometheus::cadvisor(&sample)))
        }
        "/metrics/resource" => {
            let sample = stats.latest_or_collect().await;
            Some(response(PROMETHEUS_TEXT, prometheus::resource(&sample)))
        }
        "/metrics" => Some(response(PROMETHEUS_TEXT, agent_metrics(stats))),
        _ => None,
    }
}

/// The registry plus gauges computed from the latest sample.
pub fn agent_metrics(stats: &Stats) -> String {
    let mut out = String::new();
    stats.registry().render(&mut out);
    if let Some(s) = stats.latest() {
        let containers: usize = s.pods.iter().map(|p| p.containers.len()).sum();
        let _ = writeln!(
            out,
            "# HELP kubelet_running_pods Number of pods that have a running pod sandbox"
        );
        let _ = writeln!(out, "# TYPE kubelet_running_pods gauge");
        let _ = writeln!(out, "kubelet_running_pods {}", s.pods.len());
        let _ = writeln!(
            out,
            "# HELP kubelet_running_containers Number of containers currently running"
        );
        let _ = writeln!(out, "# TYPE kubelet_running_containers gauge");
        let _ = writeln!(
            out,
            "kubelet_running_containers{{container_state=\"running\"}} {containers}"
        );
    }
    out
}
