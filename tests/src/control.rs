//! A `keel-control` control plane on a free loopback port with a temporary data dir, and an
//! HTTPS client holding its admin credentials for the calls tests make as "the nodes".

use crate::{poll, workspace_bin};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub join_command: String,
    child: Option<Child>,
    http: reqwest::blocking::Client,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Reads `key` from the base64 fields of the admin kubeconfig.
fn kubeconfig_field(kc: &str, key: &str) -> Vec<u8> {
    use base64::Engine;
    let line = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("kubeconfig has no {key}"));
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .expect("base64 in kubeconfig")
}

impl ControlPlane {
    /// `keel-control init` + `serve`, waiting until `/readyz` answers.
    pub fn start() -> ControlPlane {
        Self::start_with(|_| {}, &[])
    }

    /// The API server alone (`serve --no-controllers`): nothing but the test writes objects.
    pub fn start_api_only() -> ControlPlane {
        Self::start_with(|_| {}, &["--no-controllers"])
    }

    /// Like `start`, letting the test change the saved `config.json` between init and serve.
    pub fn start_with_config(edit: impl FnOnce(&mut Value)) -> ControlPlane {
        Self::start_with(edit, &[])
    }

    /// Like `start_with_config`, with extra `serve` flags (e.g. `--no-controllers`).
    pub fn start_with(edit: impl FnOnce(&mut Value), serve_args: &[&str]) -> ControlPlane {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let data = dir.path().join("control");
        let out = Command::new(workspace_bin("keel-control"))
            .args(["init", "--data-dir"])
            .arg(&data)
            .args([
                "--advertise-address",
                "127.0.0.1",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .output()
            .expect("run keel-control init");
        assert!(
            out.status.success(),
            "keel-control init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let join_command = stdout
            .lines()
            .find(|l| l.starts_with("keel-agent join"))
            .expect("init prints the join command")
            .to_string();
        let cfg_path = data.join("config.json");
        let mut cfg: Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("config.json"))
                .expect("config json");
        edit(&mut cfg);
        std::fs::write(&cfg_path, cfg.to_string()).expect("write config.json");
        let log = std::fs::File::create(dir.path().join("control.log")).expect("log file");
        let child = Command::new(workspace_bin("keel-control"))
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args(serve_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel-control serve");
        let kc = std::fs::read_to_string(data.join("admin.kubeconfig")).expect("admin kubeconfig");
        let ca =
            reqwest::Certificate::from_pem(&kubeconfig_field(&kc, "certificate-authority-data"))
                .expect("CA");
        let mut pem = kubeconfig_field(&kc, "client-certificate-data");
        pem.extend(kubeconfig_field(&kc, "client-key-data"));
        let identity = reqwest::Identity::from_pem(&pem).expect("admin identity");
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("https client");
        let cp = ControlPlane {
            dir,
            port,
            join_command,
            child: Some(child),
            http,
        };
        poll(
            "keel-control to answer /readyz",
            Duration::from_secs(20),
            || {
                cp.http
                    .get(cp.url("/readyz"))
                    .send()
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        );
        cp
    }

    /// The server's process id (for RSS readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("control")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("admin.kubeconfig")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control.log")).unwrap_or_default()
    }

    /// The admin client (tests use it to play the nodes).
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// A client with no credentials that trusts the cluster CA.
    pub fn anonymous_http(&self) -> reqwest::blocking::Client {
        let kc = std::fs::read_to_string(self.kubeconfig()).expect("admin kubeconfig");
        let ca =
            reqwest::Certificate::from_pem(&kubeconfig_field(&kc, "certificate-authority-data"))
                .expect("CA");
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .expect("https client")
    }

    /// Sends `method path` with a JSON body as admin; returns (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, self.url(path));
        if let Some(b) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            req = req.header("Content-Type", ct).body(b.to_string());
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let code = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Like `call`, asserting a 2xx answer.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (code, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&code),
            "{method} {path} answered {code}: {v}"
        );
        v
    }

    /// Registers a Ready node the way an agent would (addresses, nodeInfo, capacity).
    pub fn register_node(&self, name: &str, ip: &str, labels: Value) {
        let node = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "keel-agent is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "nodeInfo": {"kubeletVersion": "v1.28.14", "osImage": "Ubuntu 20.04 LTS", "kernelVersion": "5.4.0-26-generic",
                             "containerRuntimeVersion": "keel://0.1.0", "operatingSystem": "linux", "architecture": "amd64",
                             "machineID": "m", "systemUUID": "s", "bootID": "b", "kubeProxyVersion": ""}
            }
        });
        self.ok("POST", "/api/v1/nodes", Some(&node));
    }

    /// Marks a pod bound to a node as Running and Ready with `ip`, like an agent would.
    pub fn mark_running(&self, ns: &str, pod: &str, ip: &str) {
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}");
        let mut obj = self.ok("GET", &path, None);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let containers: Vec<Value> = obj["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| serde_json::json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "containerID": "keel://0123", "state": {"running": {"startedAt": now}}}))
            .collect();
        obj["status"] = serde_json::json!({
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.10.10", "startTime": now,
            "qosClass": obj["status"]["qosClass"],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
                           {"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": containers,
        });
        self.ok("PUT", &format!("{path}/status"), Some(&obj));
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        Path::new(&self.data_dir()).join(rel)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
