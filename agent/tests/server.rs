//! The agent's HTTPS endpoint against a real control plane: `keel-control init` + `serve` (its
//! CA, its CSR approver and signer, its API server proxying `pods/log`), the real kubectl, and
//! `server::run` in this process with a hand-written pod record and CRI log files. Also proves
//! who may call: the API server's kubelet-client certificate only (403 for the cluster admin,
//! 401 without a certificate, no handshake with another CA's certificate).

use keel_agent::bootstrap::csr::CsrError;
use keel_agent::pod::record::{ContainerRecord, PodRecord};
use keel_agent::server::{self, ServerContext, cert};
use keel_agent::state::{self, Credentials, Layout};
use keel_tests::control::ControlPlane;
use keel_tests::kubectl::Kubectl;
use keel_tests::poll;
use serde_json::json;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NODE: &str = "n1";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

/// A client certificate for `cn`/`orgs` signed by the cluster CA in `data`: (cert, key) PEM.
fn issue(data: &Path, cn: &str, orgs: &[&str]) -> (String, String) {
    issue_with(data, cn, orgs, |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    })
}

/// Like `issue`, letting `edit` set usages, SANs and validity.
fn issue_with(
    data: &Path,
    cn: &str,
    orgs: &[&str],
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, String) {
    let ca_pem = std::fs::read_to_string(data.join("ca.crt")).expect("ca.crt");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data.join("ca.key")).expect("ca.key"))
            .expect("CA key");
    let ca = rcgen::CertificateParams::from_ca_cert_pem(&ca_pem)
        .expect("CA params")
        .self_signed(&ca_key)
        .expect("CA issuer");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    edit(&mut p);
    let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn rfc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append");
}

/// A container instance with its log folder and shim state folder.
fn instance(layout: &Layout, uid: &str, name: &str, restart: u32) -> ContainerRecord {
    let logs = layout.pod_dir(uid).join("logs").join(name);
    std::fs::create_dir_all(&logs).expect("logs dir");
    let state_dir = layout
        .root
        .join("shim")
        .join(format!("{uid}-{name}-{restart}"));
    std::fs::create_dir_all(&state_dir).expect("state dir");
    ContainerRecord {
        name: name.into(),
        id: format!("{restart:064}"),
        restart_count: restart,
        image: "nginx:1.14".into(),
        log_path: logs.join(format!("{restart}.log")),
        state_dir,
        created_at: format!("2026-11-27T08:00:0{restart}Z"),
        ..Default::default()
    }
}

fn save_record(layout: &Layout, uid: &str, name: &str, containers: Vec<ContainerRecord>) {
    let record = PodRecord {
        namespace: "default".into(),
        name: name.into(),
        uid: uid.into(),
        containers,
        ..Default::default()
    };
    let data = serde_json::to_vec(&record).expect("json");
    state::write_atomic(&PodRecord::path(&layout.pod_dir(uid)), &data, 0o644).expect("record");
}

fn create_pod(cp: &ControlPlane, name: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "containers": [{"name": name, "image": "nginx:1.14"}]}});
    cp.ok("POST", "/api/v1/namespaces/default/pods", Some(&pod));
}

/// An HTTPS client trusting the cluster CA, with `identity` PEM (cert + key) if given.
fn https(data: &Path, identity: Option<String>) -> reqwest::blocking::Client {
    let ca = std::fs::read(data.join("ca.crt")).expect("ca.crt");
    let mut b = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .timeout(Duration::from_secs(10));
    if let Some(pem) = identity {
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

struct Agent {
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), server::ServerError>>,
}

/// The node's identity (a kubeconfig under the agent root, the CA in `pki/ca.crt`) and its
/// Node object with InternalIP 127.0.0.1 and our port, as `keel-agent join`/`run` leave them.
fn register_node(cp: &ControlPlane, layout: &Layout, port: u16) {
    let data = cp.data_dir();
    let (node_cert, node_key) = issue(&data, &format!("system:node:{NODE}"), &["system:nodes"]);
    let ca_pem = std::fs::read_to_string(data.join("ca.crt")).expect("ca.crt");
    state::write_atomic(&layout.ca(), ca_pem.as_bytes(), 0o644).expect("ca");
    let kc = state::kubeconfig(
        &cp.url(""),
        &ca_pem,
        &format!("system:node:{NODE}"),
        Credentials::Certificate {
            cert_pem: &node_cert,
            key_pem: &node_key,
        },
    );
    state::write_atomic(&layout.kubeconfig(), kc.as_bytes(), 0o600).expect("kubeconfig");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    cp.ok("POST", "/api/v1/nodes", Some(&node));
}

/// Starts `server::run` on its own runtime, as `keel-agent run` would.
fn start_agent(layout: &Layout, port: u16) -> (Agent, kube::Client) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(keel_agent::client::from_kubeconfig(&layout.kubeconfig()))
        .expect("node client");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = ServerContext {
        layout: layout.clone(),
        client: client.clone(),
        node_name: NODE.into(),
        node_ips: vec!["127.0.0.1".parse().expect("ip")],
        port,
        stats: None,
    };
    let task = rt.spawn(server::run(ctx, stop_rx));
    (Agent { rt, stop, task }, client)
}

impl Agent {
    /// Signals shutdown and asserts that `run` returns Ok.
    fn stop(self) {
        let Agent { rt, stop, task } = self;
        stop.send(true).expect("stop");
        let result = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
            .expect("run() returns after shutdown")
            .expect("join");
        assert!(result.is_ok(), "{result:?}");
    }
}

/// The client identity of the API server (`apiserver-kubelet-client.{crt,key}`).
fn api_server_client(data: &Path) -> reqwest::blocking::Client {
    let mut pem = std::fs::read_to_string(data.join("apiserver-kubelet-client.crt")).expect("crt");
    pem.push_str(&std::fs::read_to_string(data.join("apiserver-kubelet-client.key")).expect("key"));
    https(data, Some(pem))
}

#[test]
fn logs_through_the_api_server_and_only_for_the_api_server() {
    let cp = ControlPlane::start();
    let data = cp.data_dir();
    let root = tempfile::tempdir().expect("agent root");
    let layout = Layout::new(root.path());
    let port = free_port();

    register_node(&cp, &layout, port);

    // Pod "web": instance 0 exited, instance 1 running with an old line, a line cut into two
    // partial records, and a recent line. Pod "solo": one instance only. Pod "ghost": bound
    // here, nothing on disk.
    let now = chrono::Utc::now();
    let old = now - chrono::Duration::hours(2);
    let recent = now - chrono::Duration::seconds(5);
    let web0 = instance(&layout, "uid-web", "web", 0);
    append(
        &web0.log_path,
        &format!("{} stdout F previous line\n", rfc(old)),
    );
    std::fs::write(web0.state_dir.join("exit.json"), "{}").expect("exit.json");
    let web1 = instance(&layout, "uid-web", "web", 1);
    append(
        &web1.log_path,
        &format!(
            "{} stdout F old line\n{} stdout P hello \n{} stdout F world\n{} stderr F recent line\n",
            rfc(old),
            rfc(recent),
            rfc(recent + chrono::Duration::milliseconds(1)),
            rfc(recent + chrono::Duration::milliseconds(2)),
        ),
    );
    save_record(&layout, "uid-web", "web", vec![web0, web1.clone()]);
    let solo = instance(&layout, "uid-solo", "solo", 0);
    append(&solo.log_path, &format!("{} stdout F alone\n", rfc(recent)));
    save_record(&layout, "uid-solo", "solo", vec![solo]);
    for name in ["web", "solo", "ghost"] {
        create_pod(&cp, name);
    }

    // The server, as `keel-agent run` starts it.
    let (agent, client) = start_agent(&layout, port);
    let kubectl = Kubectl::new("", &cp.kubeconfig());
    let api_client = api_server_client(&data);
    let healthz = format!("https://127.0.0.1:{port}/healthz");
    poll(
        "the agent to serve /healthz",
        Duration::from_secs(30),
        || {
            api_client
                .get(&healthz)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        },
    );
    let csrs = kubectl.ok(&["get", "csr"]);
    let line = csrs
        .lines()
        .find(|l| l.contains("kubernetes.io/kubelet-serving"))
        .unwrap_or_else(|| panic!("no serving CSR:\n{csrs}"));
    assert!(line.contains("Approved,Issued"), "{line}");
    assert!(line.contains(&format!("system:node:{NODE}")), "{line}");
    let serving = std::fs::read_to_string(cert::cert_path(&layout)).expect("serving.crt");
    let sans = cert::sans_of(&serving).expect("sans");
    assert_eq!(sans.ips, vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]);
    assert_eq!(sans.dns, vec![NODE.to_string()]);

    // A node asking for an address that is not its own is denied, naming it.
    let foreign = cert::Sans {
        ips: vec!["10.9.9.9".parse().expect("ip")],
        dns: vec![],
    };
    let other_root = tempfile::tempdir().expect("scratch root");
    let denied = agent.rt.block_on(cert::obtain(
        &Layout::new(other_root.path()),
        &client,
        NODE,
        &foreign,
        Duration::from_secs(20),
    ));
    match denied {
        Err(CsrError::Denied { message, .. }) => {
            assert!(message.contains("10.9.9.9"), "{message}")
        }
        Err(e) => panic!("expected a denial, got {e}"),
        Ok(_) => panic!("a certificate for a foreign IP was signed"),
    }

    // kubectl logs and its options, through the API server.
    assert_eq!(
        kubectl.ok(&["logs", "web"]),
        "old line\nhello world\nrecent line\n"
    );
    assert_eq!(
        kubectl.ok(&["logs", "web", "-c", "web"]),
        "old line\nhello world\nrecent line\n"
    );
    assert_eq!(
        kubectl.ok(&["logs", "web", "--previous"]),
        "previous line\n"
    );
    assert_eq!(kubectl.ok(&["logs", "web", "--tail=1"]), "recent line\n");
    assert_eq!(
        kubectl.ok(&["logs", "web", "--tail=2"]),
        "hello world\nrecent line\n"
    );
    assert_eq!(
        kubectl.ok(&["logs", "web", "--since=1h"]),
        "hello world\nrecent line\n"
    );
    // kubectl sends --since-time at second precision.
    let since_time =
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        kubectl.ok(&["logs", "web", &format!("--since-time={since_time}")]),
        "hello world\nrecent line\n"
    );
    assert_eq!(
        kubectl.ok(&["logs", "web", "--timestamps", "--tail=1"]),
        format!(
            "{} recent line\n",
            rfc(recent + chrono::Duration::milliseconds(2))
        )
    );
    assert_eq!(kubectl.ok(&["logs", "web", "--limit-bytes=5"]), "old l");
    let err = kubectl.fails(&["logs", "solo", "--previous"]);
    assert!(
        err.contains("previous terminated container \"solo\" in pod \"solo\" not found"),
        "{err}"
    );
    let err = kubectl.fails(&["logs", "ghost"]);
    assert!(
        err.contains("NotFound") && err.contains("is not running on this node"),
        "{err}"
    );

    // -f: what is there, then appended lines, across a rotation, until the instance exits.
    let mut child = kubectl
        .command(&["logs", "-f", "web", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("kubectl logs -f did not print {what}"))
    };
    assert_eq!(next("the tail"), "recent line");
    append(
        &web1.log_path,
        &format!("{} stdout F follow one\n", rfc(chrono::Utc::now())),
    );
    assert_eq!(next("an appended line"), "follow one");
    let rotated = PathBuf::from(format!("{}.1", web1.log_path.display()));
    std::fs::rename(&web1.log_path, &rotated).expect("rotate");
    append(
        &web1.log_path,
        &format!("{} stdout F follow two\n", rfc(chrono::Utc::now())),
    );
    assert_eq!(next("a line after rotation"), "follow two");
    append(
        &web1.log_path,
        &format!("{} stdout F last words\n", rfc(chrono::Utc::now())),
    );
    std::fs::write(web1.state_dir.join("exit.json"), "{}").expect("exit.json");
    assert_eq!(next("the line before the exit"), "last words");
    let status = poll(
        "kubectl logs -f to end after the exit",
        Duration::from_secs(15),
        || child.try_wait().ok().flatten(),
    );
    assert!(status.success(), "kubectl logs -f failed: {status}");
    reader.join().expect("reader");
    // Rotated files are read oldest first.
    assert_eq!(
        kubectl.ok(&["logs", "web"]),
        "old line\nhello world\nrecent line\nfollow one\nfollow two\nlast words\n"
    );

    // Who may call: the API server's identity only.
    let (admin_cert, admin_key) = issue(&data, "kubernetes-admin", &["system:masters"]);
    let admin = https(&data, Some(admin_cert + &admin_key));
    let r = admin.get(&healthz).send().expect("admin call");
    assert_eq!(r.status().as_u16(), 403);
    let logs_url = format!("https://127.0.0.1:{port}/containerLogs/default/web/web");
    let r = admin.get(&logs_url).send().expect("admin logs call");
    assert_eq!(r.status().as_u16(), 403);
    let (node_cert2, node_key2) = issue(&data, &format!("system:node:{NODE}"), &["system:nodes"]);
    let r = https(&data, Some(node_cert2 + &node_key2))
        .get(&logs_url)
        .send()
        .expect("node call");
    assert_eq!(r.status().as_u16(), 403);
    let r = https(&data, None)
        .get(&logs_url)
        .send()
        .expect("anonymous call");
    assert_eq!(r.status().as_u16(), 401);
    let stranger_ca_key = rcgen::KeyPair::generate().expect("key");
    let mut sp = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    sp.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    let stranger = sp.self_signed(&stranger_ca_key).expect("self-signed");
    let r = https(
        &data,
        Some(stranger.pem() + &stranger_ca_key.serialize_pem()),
    )
    .get(&logs_url)
    .send();
    assert!(
        r.is_err(),
        "a certificate of another CA was accepted: {r:?}"
    );
    let r = api_client
        .get(&logs_url)
        .query(&[("tailLines", "1")])
        .send()
        .expect("api call");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().expect("body"), "last words\n");
    let r = api_client
        .get(format!("https://127.0.0.1:{port}/stats/summary"))
        .send()
        .expect("stats");
    assert_eq!(r.status().as_u16(), 404, "no stats collector was given");

    // Shutdown ends run().
    agent.stop();
}

/// The certificate the server presents on a new connection (DER).
fn served_certificate(rt: &tokio::runtime::Runtime, data: &Path, port: u16) -> Vec<u8> {
    use rustls::pki_types::ServerName;
    let ca = std::fs::read(data.join("ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let tls = connector.connect(name, tcp).await.expect("handshake");
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .expect("a server certificate")
    })
}

fn first_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem")
        .as_ref()
        .to_vec()
}

#[test]
fn serves_a_saved_certificate_and_renews_it_near_expiry() {
    let cp = ControlPlane::start();
    let data = cp.data_dir();
    let root = tempfile::tempdir().expect("agent root");
    let layout = Layout::new(root.path());
    let port = free_port();
    register_node(&cp, &layout, port);
    // A saved certificate 57 minutes into its hour: past 90% of its lifetime, so the renewal
    // (at a random point between 70% and 90%) is due at once.
    let (old_cert, old_key) = issue_with(
        &data,
        &format!("system:node:{NODE}"),
        &["system:nodes"],
        |p| {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            p.subject_alt_names = vec![
                rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")),
                rcgen::SanType::DnsName(NODE.to_string().try_into().expect("dns")),
            ];
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::minutes(57);
            p.not_after = now + time::Duration::minutes(3);
        },
    );
    state::write_atomic(&cert::cert_path(&layout), old_cert.as_bytes(), 0o644).expect("crt");
    state::write_atomic(&cert::key_path(&layout), old_key.as_bytes(), 0o600).expect("key");

    let (agent, _client) = start_agent(&layout, port);
    let api_client = api_server_client(&data);
    let healthz = format!("https://127.0.0.1:{port}/healthz");
    poll(
        "the agent to serve /healthz",
        Duration::from_secs(30),
        || {
            api_client
                .get(&healthz)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        },
    );
    let renewed = poll(
        "the serving certificate to be renewed",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(cert::cert_path(&layout))
                .ok()
                .filter(|c| *c != old_cert)
        },
    );
    let (nb, na) = keel_agent::bootstrap::csr::validity(&renewed).expect("validity");
    assert!(
        na - nb > 86400,
        "the new certificate has the signer's full lifetime"
    );
    // New connections get the new certificate without a restart.
    let want = first_der(&renewed);
    poll(
        "new connections to present the renewed certificate",
        Duration::from_secs(10),
        || (served_certificate(&agent.rt, &data, port) == want).then_some(()),
    );
    let r = api_client.get(&healthz).send().expect("healthz");
    assert_eq!(r.status().as_u16(), 200);
    agent.stop();
}
