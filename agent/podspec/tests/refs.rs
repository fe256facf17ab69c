//! `refs::fetch` against a real control plane: `keel-control init` + `serve` (the workspace
//! binaries; build them with `cargo build -p keel-control`), ConfigMaps and Secrets created
//! through the API, then fetched for a pod that names them, plus one that does not exist.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use keel_podspec::downward::NodeInfo;
use keel_podspec::{env, refs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p {name}`",
        bin.display()
    );
    bin
}

/// Kills and reaps the control plane this test started.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

#[tokio::test]
async fn fetch_reads_what_the_pod_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("control");
    let port = free_port();
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
        .expect("keel-control init");
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(dir.path().join("control.log")).expect("log");
    let _control = Reaped(
        Command::new(workspace_bin("keel-control"))
            .args(["serve", "--no-controllers", "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel-control serve"),
    );
    let c = client(&data.join("admin.kubeconfig")).await;
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(c.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cms.list(&Default::default()).await {
            Ok(_) => break,
            Err(e) => {
                let log =
                    std::fs::read_to_string(dir.path().join("control.log")).unwrap_or_default();
                assert!(
                    Instant::now() < deadline,
                    "keel-control never answered: {e}\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let pp = kube::api::PostParams::default();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app-config"}, "data": {"mode": "prod"}}))
    .expect("configmap");
    cms.create(&pp, &cm).await.expect("create configmap");
    let secrets: kube::Api<Secret> = kube::Api::namespaced(c.clone(), "default");
    // {"auths":{"hub.test.com":{"username":"bob","password":"pw"}}}
    let s: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6eyJodWIudGVzdC5jb20iOnsidXNlcm5hbWUiOiJib2IiLCJwYXNzd29yZCI6InB3In19fQ=="}}))
    .expect("secret");
    secrets.create(&pp, &s).await.expect("create secret");
    let s: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"}, "stringData": {"PASSWORD": "hunter2"}}))
    .expect("secret");
    secrets.create(&pp, &s).await.expect("create secret");

    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {
            "imagePullSecrets": [{"name": "regcred"}],
            "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode"}}},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}}}]},
                {"name": "broken", "image": "busybox",
                 "envFrom": [{"configMapRef": {"name": "missing-cm"}}]}]
        }
    }))
    .expect("pod");
    let r = refs::fetch(&c, &pod).await.expect("fetch");
    assert_eq!(r.config_maps.keys().collect::<Vec<_>>(), ["app-config"]);
    assert_eq!(r.secrets.keys().collect::<Vec<_>>(), ["db", "regcred"]);
    let containers = &pod.spec.as_ref().expect("spec").containers;
    let e = env::resolve(&pod, &containers[0], &r, &NodeInfo::default(), &[]).expect("env");
    assert_eq!(
        e,
        [
            ("MODE".into(), "prod".into()),
            ("PW".into(), "hunter2".into())
        ]
    );
    let err =
        env::resolve(&pod, &containers[1], &r, &NodeInfo::default(), &[]).expect_err("missing");
    assert_eq!(err.to_string(), r#"configmap "missing-cm" not found"#);
    let auth = refs::pull_secrets(&r, &pod);
    assert_eq!(auth.len(), 1);
    assert_eq!(
        (
            auth[0].registry.as_str(),
            auth[0].username.as_str(),
            auth[0].password.as_str()
        ),
        ("hub.test.com", "bob", "pw")
    );
}
