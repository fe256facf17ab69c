//! The periodic runner against real servers and real commands: result changes and attempt
//! events, thresholds, startup gating, initial delay, and stopping on drop. Periods are the
//! API's minimum (1 s); every wait is a poll with a deadline.

mod common;

use common::{Reply, Server, ok, target};
use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_probe::{ContainerProbes, ProbeEvent, ProbeKind, ProbeResult, Prober, Update};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(8);

fn http(path: &str, port: u16, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The next event, or a failure after the deadline.
async fn next(rx: &mut mpsc::Receiver<ProbeEvent>) -> ProbeEvent {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the probe channel closed"),
        Err(_) => panic!("no probe event within {DEADLINE:?}"),
    }
}

/// Skips attempt events until a result change; returns the change and the attempts seen.
async fn next_change(rx: &mut mpsc::Receiver<ProbeEvent>) -> (ProbeEvent, Vec<String>) {
    let mut attempts = Vec::new();
    loop {
        let event = next(rx).await;
        match &event.update {
            Update::Attempt { message, .. } => attempts.push(message.clone()),
            Update::Changed(_) => return (event, attempts),
        }
    }
}

async fn poll_until(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn readiness_follows_the_server() {
    let status = Arc::new(AtomicU16::new(200));
    let s = status.clone();
    let server =
        Server::start(move |_| Reply::Status(s.load(Ordering::SeqCst), vec![], String::new()))
            .await;
    let (tx, mut rx) = mpsc::channel(16);
    let _prober = Prober::spawn(
        ProbeKind::Readiness,
        http("/ready", server.port(), 1),
        target(server.port()),
        tx,
    );

    let (event, attempts) = next_change(&mut rx).await;
    assert_eq!(
        (event.kind, &event.update),
        (ProbeKind::Readiness, &Update::Changed(ProbeResult::Success))
    );
    assert_eq!(event.container, "web");
    assert!(attempts.is_empty());

    status.store(500, Ordering::SeqCst);
    let (event, attempts) = next_change(&mut rx).await;
    assert_eq!(event.update, Update::Changed(ProbeResult::Failure));
    assert_eq!(
        attempts,
        vec!["Readiness probe failed: HTTP probe failed with statuscode: 500".to_string()]
    );
    assert_eq!(event.restart_message(), None);

    status.store(204, Ordering::SeqCst);
    let (event, _) = next_change(&mut rx).await;
    assert_eq!(event.update, Update::Changed(ProbeResult::Success));
}

#[tokio::test]
async fn liveness_failure_asks_for_a_restart_and_stops() {
    let server = Server::start(|_| Reply::Status(500, vec![], String::new())).await;
    let (tx, mut rx) = mpsc::channel(16);
    let prober = Prober::spawn(
        ProbeKind::Liveness,
        http("/live", server.port(), 2),
        target(server.port()),
        tx,
    );

    let (event, attempts) = next_change(&mut rx).await;
    assert_eq!(event.update, Update::Changed(ProbeResult::Failure));
    assert_eq!(attempts.len(), 2, "failureThreshold 2: {attempts:?}");
    assert_eq!(
        event.restart_message().as_deref(),
        Some("Container web failed liveness probe, will be restarted")
    );
    poll_until("the liveness prober to stop", || prober.is_finished()).await;
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn startup_gates_liveness_and_readiness() {
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let server = Server::start(move |path| match path {
        "/started" if !flag.load(Ordering::SeqCst) => Reply::Status(503, vec![], String::new()),
        _ => ok(""),
    })
    .await;
    let p = server.port();
    let container = Container {
        name: "web".into(),
        startup_probe: Some(http("/started", p, 30)),
        liveness_probe: Some(http("/live", p, 1)),
        readiness_probe: Some(http("/ready", p, 1)),
        ..Container::default()
    };
    let (tx, mut rx) = mpsc::channel(64);
    let probes = ContainerProbes::spawn(&container, target(p), tx);

    let paths = |server: &Server| -> Vec<String> {
        (0..server.count())
            .map(|i| {
                server
                    .request(i)
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    poll_until("two startup attempts", || paths(&server).len() >= 2).await;
    assert!(
        paths(&server).iter().all(|p| p == "/started"),
        "{:?}",
        paths(&server)
    );
    // Startup failures below the threshold are Unhealthy attempts, nothing else.
    let event = next(&mut rx).await;
    assert_eq!(event.kind, ProbeKind::Startup);
    assert!(
        matches!(&event.update, Update::Attempt { reason: "Unhealthy", message }
        if message == "Startup probe failed: HTTP probe failed with statuscode: 503")
    );

    up.store(true, Ordering::SeqCst);
    let (event, _) = next_change(&mut rx).await;
    assert_eq!(
        (event.kind, event.update),
        (ProbeKind::Startup, Update::Changed(ProbeResult::Success))
    );
    let (event, _) = next_change(&mut rx).await;
    assert_eq!(
        (event.kind, event.update),
        (ProbeKind::Readiness, Update::Changed(ProbeResult::Success))
    );
    poll_until("a liveness attempt", || {
        paths(&server).iter().any(|p| p == "/live")
    })
    .await;
    poll_until("the startup prober to finish", || {
        probes.running().len() == 2
    })
    .await;
    assert!(!probes.running().contains(&ProbeKind::Startup));
}

#[tokio::test]
async fn initial_delay_counts_from_the_container_start() {
    let server = Server::start(|_| ok("")).await;
    let p = server.port();
    let mut probe = http("/ready", p, 1);
    probe.initial_delay_seconds = Some(2);

    // Started long ago: the delay has passed, the first attempt is immediate.
    let mut old = target(p);
    old.started_at = SystemTime::now() - Duration::from_secs(60);
    let (tx, mut rx) = mpsc::channel(16);
    let began = Instant::now();
    let _early = Prober::spawn(ProbeKind::Readiness, probe.clone(), old, tx);
    next_change(&mut rx).await;
    assert!(
        began.elapsed() < Duration::from_millis(1500),
        "{:?}",
        began.elapsed()
    );

    // Started now: nothing before two seconds.
    let (tx, mut rx) = mpsc::channel(16);
    let fresh = target(p);
    let began = fresh.started_at;
    let _late = Prober::spawn(ProbeKind::Readiness, probe, fresh, tx);
    next_change(&mut rx).await;
    let waited = began.elapsed().unwrap_or_default();
    assert!(
        waited >= Duration::from_secs(2),
        "first attempt after {waited:?}"
    );
}

#[tokio::test]
async fn dropping_the_prober_stops_probing() {
    let server = Server::start(|_| ok("")).await;
    let (tx, _rx) = mpsc::channel(16);
    let prober = Prober::spawn(
        ProbeKind::Readiness,
        http("/ready", server.port(), 1),
        target(server.port()),
        tx,
    );
    poll_until("two attempts", || server.count() >= 2).await;
    drop(prober);
    let after_drop = server.count();
    // Two and a half periods: a running prober would have probed twice more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.count(), after_drop);
}

#[tokio::test]
async fn exec_liveness_with_real_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let healthy = dir.path().join("healthy");
    std::fs::write(&healthy, b"").expect("write marker");
    let probe = Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "test".into(),
                "-f".into(),
                healthy.display().to_string(),
            ]),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Probe::default()
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _prober = Prober::spawn(ProbeKind::Liveness, probe, target(1), tx);
    std::fs::remove_file(&healthy).expect("remove marker");
    let (event, attempts) = next_change(&mut rx).await;
    assert_eq!(event.update, Update::Changed(ProbeResult::Failure));
    assert_eq!(attempts, vec!["Liveness probe failed: ".to_string()]);
}

#[tokio::test]
async fn a_lone_startup_probe_runs_until_it_succeeds() {
    let server = Server::start(|_| ok("")).await;
    let (tx, mut rx) = mpsc::channel(16);
    let prober = Prober::spawn(
        ProbeKind::Startup,
        http("/started", server.port(), 3),
        target(server.port()),
        tx,
    );
    let (event, _) = next_change(&mut rx).await;
    assert_eq!(
        (event.kind, event.update),
        (ProbeKind::Startup, Update::Changed(ProbeResult::Success))
    );
    poll_until("the startup prober to finish", || prober.is_finished()).await;
    assert_eq!(server.count(), 1);
}
