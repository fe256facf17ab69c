//! Requests the API server forwards to a node's agent (`pods/log` today), over HTTPS to the
//! agent's port (the Node's `status.daemonEndpoints.kubeletEndpoint.Port`, 10250 by default)
//! with the API server's own client certificate, verifying the agent against the cluster CA.
//! The agent serves kubelet's paths (`/containerLogs/<ns>/<pod>/<container>`).

use super::ApiServer;
use super::error::{ApiError, ApiResult};
use super::handlers::{Reply, Request, get};
use super::resources;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use std::path::Path;

/// The client for agents: the API server's client identity, trusting only the cluster CA.
pub fn agent_client(dir: &Path) -> Result<reqwest::Client, String> {
    let read = |f: &str| {
        std::fs::read(dir.join(f)).map_err(|e| format!("reading {}: {e}", dir.join(f).display()))
    };
    let mut pem = read("apiserver-kubelet-client.crt")?;
    pem.extend(read("apiserver-kubelet-client.key")?);
    let identity = reqwest::Identity::from_pem(&pem)
        .map_err(|e| format!("the API server's client certificate: {e}"))?;
    let ca = reqwest::Certificate::from_pem(&read("ca.crt")?)
        .map_err(|e| format!("the cluster CA: {e}"))?;
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(identity)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}

/// The container a logs request is about, as kubelet and kube-apiserver choose it.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let names: Vec<String> = ["/spec/initContainers", "/spec/containers"]
        .iter()
        .flat_map(|p| {
            pod.pointer(p)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let app: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str);
            match (default, app.as_slice()) {
                (Some(d), _) if app.contains(&d) => Ok(d.to_string()),
                (_, [only]) => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    app.join(" ")
                ))),
            }
        }
    }
}

/// `GET pods/<name>/log`: streamed from the agent of the pod's node.
pub async fn logs(api: &ApiServer, req: &Request, pod: &Value) -> ApiResult<Reply> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let container = pick_container(pod, req.param("container"))?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {name} is not scheduled to a node yet, so it has no logs"
            ))
        })?;
    let nodes = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let node = get(api, nodes, None, node_name).await?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(|| {
            ApiError::internal(format!("node {node_name} reports no InternalIP address"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250);
    let client = api
        .agent_client
        .as_ref()
        .ok_or_else(|| ApiError::internal("this API server has no client for agents"))?;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let mut url = reqwest::Url::parse(&format!(
        "https://{host}:{port}/containerLogs/{ns}/{name}/{container}"
    ))
    .map_err(ApiError::internal)?;
    for key in [
        "follow",
        "previous",
        "sinceSeconds",
        "sinceTime",
        "timestamps",
        "tailLines",
        "limitBytes",
    ] {
        if let Some(v) = req.param(key) {
            url.query_pairs_mut().append_pair(key, v);
        }
    }
    let resp = client.get(url.clone()).send().await.map_err(|e| {
        ApiError::internal(format!(
            "could not reach the agent on node {node_name} at {url}: {e}"
        ))
    })?;
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(body);
        return Err(match code {
            404 => ApiError::NotFound {
                resource: "pods/log".into(),
                name: format!("{name}/{container}: {message}"),
                group: String::new(),
            },
            400 => ApiError::bad_request(message),
            _ => ApiError::internal(format!(
                "the agent on node {node_name} answered {code}: {message}"
            )),
        });
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut stream = resp.bytes_stream();
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = stream.next().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    Ok(Reply::Stream("text/plain", rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_choice_follows_kubectl_rules() {
        let one = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web"}]}});
        assert_eq!(pick_container(&one, None).expect("only"), "web");
        assert!(pick_container(&one, Some("nope")).is_err());
        let two = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}]}});
        let err = pick_container(&two, None).expect_err("ambiguous");
        assert_eq!(
            err.to_string(),
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(pick_container(&two, Some("init")).expect("init"), "init");
        let mut annotated = two.clone();
        annotated["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/default-container": "b"});
        assert_eq!(pick_container(&annotated, None).expect("default"), "b");
    }
}
