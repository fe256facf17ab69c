//! postStart/preStop handlers against a real server on 127.0.0.1 and real commands.

mod common;

use common::{Reply, Server, closed_port, ok, target};
use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, LifecycleHandler, SleepAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use keel_probe::run_handler;
use std::time::{Duration, Instant};

fn http_hook(path: &str, port: u16, scheme: Option<&str>) -> LifecycleHandler {
    LifecycleHandler {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            scheme: scheme.map(str::to_string),
            ..HTTPGetAction::default()
        }),
        ..LifecycleHandler::default()
    }
}

#[tokio::test]
async fn http_hooks_ignore_the_status_but_not_the_transport() {
    let server = Server::start(|path| match path {
        "/stop" => ok(""),
        _ => Reply::Status(500, vec![], String::new()),
    })
    .await;
    let p = server.port();
    let t = target(p);
    assert_eq!(run_handler(&http_hook("/stop", p, None), &t).await, Ok(()));
    let head = server.request(0);
    assert!(head.starts_with("GET /stop HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("User-Agent: kube-lifecycle/1.33\r\n"),
        "{head}"
    );
    // kubelet does not look at the status code of a hook.
    assert_eq!(
        run_handler(&http_hook("/broken", p, None), &t).await,
        Ok(())
    );
    // An HTTPS hook answered in plain HTTP is retried over HTTP.
    assert_eq!(
        run_handler(&http_hook("/stop", p, Some("HTTPS")), &t).await,
        Ok(())
    );
    assert!(
        server
            .request(server.count() - 1)
            .starts_with("GET /stop HTTP/1.1\r\n")
    );

    let closed = closed_port().await;
    let err = run_handler(&http_hook("/stop", closed, None), &target(closed))
        .await
        .expect_err("nothing listens");
    assert_eq!(
        err.to_string(),
        format!(
            "HTTP lifecycle hook (/stop) for Container \"web\" in Pod \"web_default(u1)\" failed - error: \
             Get \"http://127.0.0.1:{closed}/stop\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )
    );
}

#[tokio::test]
async fn exec_and_sleep_hooks() {
    let t = target(1);
    let exec = |script: &str| LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        }),
        ..LifecycleHandler::default()
    };
    assert_eq!(run_handler(&exec("true"), &t).await, Ok(()));
    let err = run_handler(&exec("echo bye; echo oops >&2; exit 3"), &t)
        .await
        .expect_err("exit 3");
    assert_eq!(
        err.message,
        "Exec lifecycle hook ([sh -c echo bye; echo oops >&2; exit 3]) for Container \"web\" in Pod \
         \"web_default(u1)\" failed - error: command 'sh -c echo bye; echo oops >&2; exit 3' exited \
         with 3: oops\n, message: \"bye\\noops\\n\""
    );

    let sleep = LifecycleHandler {
        sleep: Some(SleepAction { seconds: 1 }),
        ..LifecycleHandler::default()
    };
    let began = Instant::now();
    assert_eq!(run_handler(&sleep, &t).await, Ok(()));
    assert!(began.elapsed() >= Duration::from_secs(1));
}
