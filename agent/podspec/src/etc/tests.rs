//! Table tests for the hosts file, DNS policy and resolv.conf rendering.

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = serde_json::json!([]);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "prod", "uid": "u1"},
        "spec": spec,
    }))
    .expect("pod")
}

fn settings() -> DnsSettings {
    DnsSettings {
        cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
        ..DnsSettings::default()
    }
}

const HOST: &str = "# generated\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch corp.example. lab\noptions edns0 ndots:2\n";

#[test]
fn resolv_conf_per_policy() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({}),
            "search prod.svc.cluster.local svc.cluster.local cluster.local corp.example lab\nnameserver 10.96.0.10\noptions ndots:5\n",
        ),
        (
            serde_json::json!({"dnsPolicy": "Default"}),
            "search corp.example lab\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions edns0 ndots:2\n",
        ),
        (
            serde_json::json!({"hostNetwork": true}),
            "search corp.example lab\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions edns0 ndots:2\n",
        ),
        (
            serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            "search prod.svc.cluster.local svc.cluster.local cluster.local corp.example lab\nnameserver 10.96.0.10\noptions ndots:5\n",
        ),
        (
            serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["a.b"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}}),
            "search a.b\nnameserver 9.9.9.9\noptions ndots:1 rotate\n",
        ),
        (
            serde_json::json!({"dnsConfig": {"nameservers": ["10.96.0.10", "9.9.9.9", "7.7.7.7", "6.6.6.6"],
                "searches": ["lab", "x.y"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            "search prod.svc.cluster.local svc.cluster.local cluster.local corp.example lab x.y\nnameserver 10.96.0.10\nnameserver 9.9.9.9\nnameserver 7.7.7.7\noptions ndots:2 edns0\n",
        ),
        (serde_json::json!({"dnsPolicy": "None"}), ""),
    ];
    let host = parse_resolv_conf(HOST);
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let got = format_resolv_conf(&dns_config(&pod(spec), &settings(), &host));
        assert_eq!(got, want, "case {i}");
    }
    // No cluster DNS configured: ClusterFirst behaves as Default.
    let none = DnsSettings::default();
    assert_eq!(dns_config(&pod(serde_json::json!({})), &none, &host), host);
}

#[test]
fn hosts_files() {
    let aliases = vec![HostAlias {
        ip: "10.1.2.3".into(),
        hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
    }];
    let head = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
    let cases = [
        (
            vec!["10.244.1.5".to_string()],
            None,
            vec![],
            format!("{head}10.244.1.5\tweb\n"),
        ),
        (
            vec!["10.244.1.5".to_string(), "fd00::5".to_string()],
            Some("sub.prod.svc.cluster.local"),
            aliases.clone(),
            format!(
                "{head}10.244.1.5\tweb.sub.prod.svc.cluster.local\tweb\nfd00::5\tweb.sub.prod.svc.cluster.local\tweb\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"
            ),
        ),
    ];
    for (ips, domain, aliases, want) in cases {
        assert_eq!(hosts_file(&ips, "web", domain, &aliases), want);
    }
}

#[test]
fn hostnames() {
    let long = "a".repeat(62) + "-b";
    let cases = [
        (serde_json::json!({}), ("web".to_string(), None)),
        (
            serde_json::json!({"hostname": "h", "subdomain": "s"}),
            (
                "h".to_string(),
                Some("s.prod.svc.cluster.local".to_string()),
            ),
        ),
        (
            serde_json::json!({"hostname": long}),
            ("a".repeat(62), None),
        ),
        (
            serde_json::json!({"hostNetwork": true}),
            ("node1".to_string(), None),
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(pod_hostname(&pod(spec), "cluster.local", "node1"), want);
    }
}

#[test]
fn write_produces_the_three_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("host-resolv.conf");
    let hosts = dir.path().join("host-hosts");
    std::fs::write(&resolv, HOST).expect("resolv");
    std::fs::write(&hosts, "127.0.0.1 localhost node1\n").expect("hosts");
    let dns = DnsSettings {
        host_resolv_conf: resolv,
        host_hosts: hosts,
        ..settings()
    };
    let p = pod(serde_json::json!({"hostAliases": [{"ip": "1.2.3.4", "hostnames": ["x"]}]}));
    let f = write(&p, dir.path(), &dns, &["10.0.0.2".into()], "node1").expect("write");
    assert_eq!(
        std::fs::read_to_string(&f.hostname).expect("hostname"),
        "web\n"
    );
    let h = std::fs::read_to_string(&f.hosts).expect("hosts");
    assert!(
        h.contains("10.0.0.2\tweb\n") && h.ends_with("1.2.3.4\tx\n"),
        "{h}"
    );
    assert!(
        std::fs::read_to_string(&f.resolv_conf)
            .expect("resolv")
            .contains("nameserver 10.96.0.10")
    );
    let hn = pod(
        serde_json::json!({"hostNetwork": true, "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["x"]}]}),
    );
    let f = write(&hn, dir.path(), &dns, &[], "node1").expect("write");
    assert_eq!(
        std::fs::read_to_string(&f.hosts).expect("hosts"),
        "127.0.0.1 localhost node1\n\n# Entries added by HostAliases.\n1.2.3.4\tx\n"
    );
    assert_eq!(f.name, "node1");
}
