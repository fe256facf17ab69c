//! keel-dns against the real `keel-control`: Services and EndpointSlices created through
//! the API server reach the record table through the kube watch, and `dig` (Debian
//! `bind9-dnsutils`) queries the real UDP/TCP server on loopback. Other names go to a small
//! fake upstream on loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use keel_tests::control::ControlPlane;
use keel_tests::poll;
use serde_json::json;

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run dig ({e}): install it with apt-get install -y bind9-dnsutils")
        });
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn short(port: u16, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = dig(port, &a).lines().map(str::to_string).collect();
    v.sort();
    v
}

/// A resolver on loopback that answers every A query with 192.0.2.7.
async fn fake_upstream(sock: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 4096];
    while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        r.metadata.recursion_available = true;
        if let Some(query) = q.queries.first() {
            r.add_answer(Record::from_rdata(
                query.name().clone(),
                60,
                RData::A(A("192.0.2.7".parse().expect("ip"))),
            ));
        }
        r.add_queries(q.queries);
        if let Ok(b) = r.to_vec() {
            let _ = sock.send_to(&b, peer).await;
        }
    }
}

#[test]
fn dns_answers_from_the_api_server_and_forwards_the_rest() {
    let cp = ControlPlane::start();
    let svc = cp.ok("POST", "/api/v1/namespaces/default/services", Some(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}})));
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("allocated clusterIP")
        .to_string();
    cp.ok("POST", "/api/v1/namespaces/default/services", Some(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}], "selector": {"app": "db"}}})));
    let slice = |ips: &[&str]| {
        json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "db-manual", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>()})
    };
    cp.ok(
        "POST",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        Some(&slice(&["10.244.1.5", "10.244.2.6"])),
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kubeconfig = cp.kubeconfig();
    let (port, _watch) = rt.block_on(async move {
        let up = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let up_addr: SocketAddr = up.local_addr().expect("addr");
        tokio::spawn(fake_upstream(up));
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        let client = kube::Client::try_from(cfg).expect("client");
        let table = keel_dns::shared_table("cluster.local");
        let mut watch = keel_dns::watch::start(client, table.clone());
        tokio::time::timeout(Duration::from_secs(20), watch.wait_synced())
            .await
            .expect("watch synced");
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind dns");
        let port = udp.local_addr().expect("addr").port();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind dns tcp");
        let dns_cfg = keel_dns::Config {
            upstreams: vec![up_addr],
            ..Default::default()
        };
        tokio::spawn(keel_dns::run_udp(
            udp,
            table.clone(),
            dns_cfg.clone(),
            std::future::pending(),
        ));
        tokio::spawn(keel_dns::run_tcp(
            tcp,
            table,
            dns_cfg,
            std::future::pending(),
        ));
        (port, watch)
    });

    assert_eq!(
        short(port, &["web.default.svc.cluster.local"]),
        vec![cluster_ip.clone()]
    );
    assert_eq!(
        short(port, &["+tcp", "web.default.svc.cluster.local"]),
        vec![cluster_ip.clone()]
    );
    assert_eq!(
        short(port, &["db.default.svc.cluster.local"]),
        vec!["10.244.1.5", "10.244.2.6"]
    );
    let srv = short(port, &["SRV", "_http._tcp.web.default.svc.cluster.local"]);
    assert_eq!(srv, vec!["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(
        short(port, &["SRV", "_pg._tcp.db.default.svc.cluster.local"]).len(),
        2
    );
    assert_eq!(
        short(port, &["10-1-2-3.default.pod.cluster.local"]),
        vec!["10.1.2.3"]
    );

    let nx = dig(port, &["nope.default.svc.cluster.local"]);
    assert!(nx.contains("status: NXDOMAIN"), "expected NXDOMAIN: {nx}");
    assert!(
        nx.contains("flags: qr aa"),
        "expected an authoritative answer: {nx}"
    );
    assert!(
        nx.contains(
            "cluster.local.\t\t30\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local."
        ),
        "expected the zone's SOA in the authority section: {nx}"
    );
    assert_eq!(short(port, &["www.example.com"]), vec!["192.0.2.7"]);

    // Updates arrive through the watch.
    let rv = cp.ok(
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/db-manual",
        None,
    )["metadata"]["resourceVersion"]
        .clone();
    let mut updated = slice(&["10.244.1.5", "10.244.2.6", "10.244.3.9"]);
    updated["metadata"]["resourceVersion"] = rv;
    cp.ok(
        "PUT",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/db-manual",
        Some(&updated),
    );
    poll("three db endpoints in DNS", Duration::from_secs(10), || {
        (short(port, &["db.default.svc.cluster.local"]).len() == 3).then_some(())
    });
    cp.ok("DELETE", "/api/v1/namespaces/default/services/web", None);
    poll("web gone from DNS", Duration::from_secs(10), || {
        dig(port, &["web.default.svc.cluster.local"])
            .contains("status: NXDOMAIN")
            .then_some(())
    });
    drop(rt);
}
