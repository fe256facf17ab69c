//! One probe attempt against real servers on 127.0.0.1: httpGet (status codes, redirects,
//! timeouts, named ports, headers, HTTPS) and tcpSocket (open and closed ports).

mod common;

use common::{Reply, Server, closed_port, ok, redirect, target};
use k8s_openapi::api::core::v1::{HTTPGetAction, HTTPHeader, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_probe::{Outcome, ProbeKind, run_once};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

fn http_probe(path: &str, port: IntOrString) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

fn tcp_probe(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        ..Probe::default()
    }
}

fn port(p: u16) -> IntOrString {
    IntOrString::Int(i32::from(p))
}

#[tokio::test]
async fn http_200_succeeds_with_kubelets_headers() {
    let server = Server::start(|_| ok("fine")).await;
    let t = target(server.port());
    let outcome = run_once(&http_probe("/healthz", port(server.port())), &t, TIMEOUT).await;
    assert_eq!(outcome, Outcome::Success("fine".into()));
    let head = server.request(0);
    assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("Host: 127.0.0.1:{}\r\n", server.port())),
        "{head}"
    );
    assert!(head.contains("User-Agent: kube-probe/1.33\r\n"), "{head}");
    assert!(head.contains("Accept: */*\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
}

#[tokio::test]
async fn http_500_fails_with_kubelets_message() {
    let server = Server::start(|_| Reply::Status(500, vec![], "secret body".into())).await;
    let t = target(server.port());
    let outcome = run_once(&http_probe("/", port(server.port())), &t, TIMEOUT).await;
    assert_eq!(
        outcome,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        outcome.event(ProbeKind::Liveness).map(|e| e.1).as_deref(),
        Some("Liveness probe failed: HTTP probe failed with statuscode: 500")
    );
}

#[tokio::test]
async fn http_named_port_custom_headers_and_host() {
    let server = Server::start(|_| ok("")).await;
    let t = target(server.port());
    let mut probe = http_probe("ready?deep=1", IntOrString::String("http".into()));
    if let Some(h) = probe.http_get.as_mut() {
        h.http_headers = Some(vec![
            HTTPHeader {
                name: "Host".into(),
                value: "web.example".into(),
            },
            HTTPHeader {
                name: "User-Agent".into(),
                value: "mine".into(),
            },
            HTTPHeader {
                name: "X-Check".into(),
                value: "yes".into(),
            },
        ]);
    }
    assert_eq!(
        run_once(&probe, &t, TIMEOUT).await,
        Outcome::Success(String::new())
    );
    let head = server.request(0);
    assert!(head.starts_with("GET /ready?deep=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Host: web.example\r\n"), "{head}");
    assert!(head.contains("User-Agent: mine\r\n"), "{head}");
    assert!(!head.contains("kube-probe"), "{head}");
    assert!(head.contains("X-Check: yes\r\n"), "{head}");

    // A port name the container does not declare is a probe error, not a failure.
    let missing = http_probe("/", IntOrString::String("metrics".into()));
    assert_eq!(
        run_once(&missing, &t, TIMEOUT).await,
        Outcome::Error("port \"metrics\" not found".into())
    );
}

#[tokio::test]
async fn http_redirects_follow_the_same_host_only() {
    let server = Server::start(|path| match path {
        "/old" => redirect(302, "/new", ""),
        "/new" => ok("moved here"),
        "/away" => redirect(301, "http://elsewhere.invalid/x", "gone away"),
        "/loop" => redirect(307, "/loop", ""),
        "/fail" => redirect(302, "/boom", ""),
        _ => Reply::Status(503, vec![], String::new()),
    })
    .await;
    let p = server.port();
    let t = target(p);
    assert_eq!(
        run_once(&http_probe("/old", port(p)), &t, TIMEOUT).await,
        Outcome::Success("moved here".into())
    );
    assert_eq!(server.count(), 2);
    // Another host: the redirect itself is the answer, a warning that counts as success.
    assert_eq!(
        run_once(&http_probe("/away", port(p)), &t, TIMEOUT).await,
        Outcome::Warning("Probe terminated redirects, Response body: gone away".into())
    );
    assert_eq!(
        run_once(&http_probe("/loop", port(p)), &t, TIMEOUT).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{p}/loop\": stopped after 10 redirects"
        ))
    );
    assert_eq!(
        run_once(&http_probe("/fail", port(p)), &t, TIMEOUT).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

#[tokio::test]
async fn http_timeout_and_refused_connection_fail() {
    let server = Server::start(|_| Reply::Hang).await;
    let p = server.port();
    let t = target(p);
    let started = std::time::Instant::now();
    let outcome = run_once(
        &http_probe("/slow", port(p)),
        &t,
        Duration::from_millis(300),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        outcome,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{p}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );

    let closed = closed_port().await;
    let outcome = run_once(
        &http_probe("/healthz", port(closed)),
        &target(closed),
        TIMEOUT,
    )
    .await;
    assert_eq!(
        outcome,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{closed}/healthz\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn http_bodies_are_capped_and_chunked_bodies_decoded() {
    let big = "x".repeat(100 * 1024);
    let server = Server::start(move |path| match path {
        "/big" => ok(&big),
        _ => Reply::Chunked(200, vec!["hel".into(), "lo".into()]),
    })
    .await;
    let p = server.port();
    let t = target(p);
    match run_once(&http_probe("/big", port(p)), &t, TIMEOUT).await {
        Outcome::Success(body) => assert_eq!(body.len(), 10 * 1024),
        other => panic!("expected success, got {other:?}"),
    }
    assert_eq!(
        run_once(&http_probe("/chunked", port(p)), &t, TIMEOUT).await,
        Outcome::Success("hello".into())
    );
}

#[tokio::test]
async fn https_skips_certificate_checks() {
    let server = Server::start_tls(|_| ok("secure")).await;
    let p = server.port();
    let t = target(p);
    let mut probe = http_probe("/", port(p));
    if let Some(h) = probe.http_get.as_mut() {
        h.scheme = Some("HTTPS".into());
    }
    assert_eq!(
        run_once(&probe, &t, TIMEOUT).await,
        Outcome::Success("secure".into())
    );

    // HTTPS against a plain HTTP server fails with Go's text.
    let plain = Server::start(|_| ok("plain")).await;
    let mut probe = http_probe("/", port(plain.port()));
    if let Some(h) = probe.http_get.as_mut() {
        h.scheme = Some("HTTPS".into());
    }
    match run_once(&probe, &target(plain.port()), TIMEOUT).await {
        Outcome::Failure(msg) => {
            assert!(
                msg.ends_with("http: server gave HTTP response to HTTPS client"),
                "{msg}"
            )
        }
        other => panic!("expected failure, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_open_and_closed_ports() {
    let server = Server::start(|_| ok("")).await;
    let t = target(server.port());
    assert_eq!(
        run_once(&tcp_probe(server.port()), &t, TIMEOUT).await,
        Outcome::Success(String::new())
    );
    let closed = closed_port().await;
    let outcome = run_once(&tcp_probe(closed), &t, TIMEOUT).await;
    assert_eq!(
        outcome,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
    assert_eq!(
        outcome.event(ProbeKind::Readiness).map(|e| e.1),
        Some(format!(
            "Readiness probe failed: dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
}

#[tokio::test]
async fn exec_probe_runs_real_commands() {
    let t = target(1);
    let probe = |argv: &[&str]| Probe {
        exec: Some(k8s_openapi::api::core::v1::ExecAction {
            command: Some(argv.iter().map(|s| s.to_string()).collect()),
        }),
        ..Probe::default()
    };
    assert_eq!(
        run_once(&probe(&["sh", "-c", "echo up"]), &t, TIMEOUT).await,
        Outcome::Success("up\n".into())
    );
    assert_eq!(
        run_once(&probe(&["sh", "-c", "echo down >&2; exit 1"]), &t, TIMEOUT).await,
        Outcome::Failure("down\n".into())
    );
    assert_eq!(
        run_once(&probe(&["sleep", "5"]), &t, Duration::from_millis(200)).await,
        Outcome::Failure("command \"sleep 5\" timed out".into())
    );
}

#[tokio::test]
async fn grpc_is_a_clear_failure() {
    let probe = Probe {
        grpc: Some(k8s_openapi::api::core::v1::GRPCAction {
            port: 9000,
            service: None,
        }),
        ..Probe::default()
    };
    assert_eq!(
        run_once(&probe, &target(1), TIMEOUT).await,
        Outcome::Failure("grpc probes are not supported by keel".into())
    );
}

#[tokio::test]
async fn http_redirect_to_https_on_the_same_host_is_followed() {
    let secure = Server::start_tls(|_| ok("over tls")).await;
    let location = format!("https://127.0.0.1:{}/secure", secure.port());
    let plain = Server::start(move |_| redirect(308, &location, "")).await;
    let p = plain.port();
    assert_eq!(
        run_once(&http_probe("/", port(p)), &target(p), TIMEOUT).await,
        Outcome::Success("over tls".into())
    );
    assert!(secure.request(0).starts_with("GET /secure HTTP/1.1\r\n"));
}

#[tokio::test]
async fn hosts_given_by_name_are_resolved() {
    let server = Server::start(|_| ok("by name")).await;
    let p = server.port();
    let mut probe = http_probe("/", port(p));
    if let Some(h) = probe.http_get.as_mut() {
        h.host = Some("localhost".into());
    }
    // No pod IP needed when the action names its host.
    let mut t = target(p);
    t.pod_ip = None;
    assert_eq!(
        run_once(&probe, &t, TIMEOUT).await,
        Outcome::Success("by name".into())
    );
    assert!(
        server
            .request(0)
            .contains(&format!("Host: localhost:{p}\r\n"))
    );
    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("http".into()),
            host: Some("localhost".into()),
        }),
        ..Probe::default()
    };
    assert_eq!(
        run_once(&tcp, &t, TIMEOUT).await,
        Outcome::Success(String::new())
    );
    // Without a host and without a pod IP the probe cannot run.
    assert!(matches!(
        run_once(&tcp_probe(p), &t, TIMEOUT).await,
        Outcome::Error(_)
    ));
}
