//! postStart and preStop lifecycle handlers, as kubelet runs them
//! (`pkg/kubelet/lifecycle/handlers.go`): exec through the caller's [`Exec`] without a timeout,
//! httpGet with `User-Agent: kube-lifecycle/1.33` (any HTTP answer counts: only a transport error
//! fails it; an HTTPS hook answered in plain HTTP is retried over HTTP), sleep. tcpSocket is
//! deprecated and, as in kubelet, fails at run time ("Cannot run handler"). The error text is
//! kubelet's event message; the agent records it with reason [`FAILED_POST_START_HOOK`] or
//! [`FAILED_PRE_STOP_HOOK`]. Handlers run without a deadline of their own: the agent bounds a
//! preStop by the grace period (drop the future) as kubelet does.
//!
//! [`Exec`]: crate::target::Exec

use crate::exec::combined_output;
use crate::http::{LIFECYCLE_USER_AGENT, PLAIN_HTTP_ANSWER, Request, get};
use crate::target::Target;
use k8s_openapi::api::core::v1::LifecycleHandler;
use std::time::Duration;

/// Event reason when a postStart hook fails (the container is then killed).
pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
/// Event reason when a preStop hook fails (termination goes on).
pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";

/// A lifecycle hook failed; the message is kubelet's event text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HookError {
    pub message: String,
}

/// Runs one lifecycle handler against the container.
pub async fn run_handler(handler: &LifecycleHandler, target: &Target) -> Result<(), HookError> {
    let fail = |message: String| Err(HookError { message });
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let (error, output) = match target.exec.exec(&target.container, &command, None).await {
            Ok(out) if out.exit_code == 0 && !out.timed_out => return Ok(()),
            Ok(out) => (
                format!(
                    "command '{}' exited with {}: {}",
                    command.join(" "),
                    out.exit_code,
                    out.stderr
                ),
                combined_output(&out, usize::MAX),
            ),
            Err(e) => (e.to_string(), String::new()),
        };
        return fail(format!(
            "Exec lifecycle hook ([{}]) for Container {:?} in Pod {:?} failed - error: {error}, message: {output:?}",
            command.join(" "),
            target.container,
            target.pod
        ));
    }
    if let Some(http) = &handler.http_get {
        let Err(error) = http_hook(http, target).await else {
            return Ok(());
        };
        return fail(format!(
            "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {error}",
            http.path.as_deref().unwrap_or(""),
            target.container,
            target.pod
        ));
    }
    if let Some(sleep) = &handler.sleep {
        let seconds = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return Ok(());
    }
    let what = if handler.tcp_socket.is_some() {
        "tcpSocket is not supported as a lifecycle handler"
    } else {
        "no exec, httpGet or sleep action"
    };
    fail(format!("Cannot run handler: invalid handler: {what}"))
}

async fn http_hook(
    action: &k8s_openapi::api::core::v1::HTTPGetAction,
    target: &Target,
) -> Result<(), String> {
    let request =
        Request::for_action(action, target, LIFECYCLE_USER_AGENT).map_err(|e| e.to_string())?;
    match get(&request).await {
        Ok(_) => Ok(()),
        Err(e) if request.url.scheme == "https" && e.contains(PLAIN_HTTP_ANSWER) => {
            // kubelet retries an HTTPS hook answered in plain HTTP over HTTP.
            let mut plain = request.clone();
            plain.url.scheme = "http".into();
            get(&plain).await.map(|_| ()).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::ExecError;
    use crate::target::fake::{FakeExec, target};
    use k8s_openapi::api::core::v1::{ExecAction, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn exec_handler(argv: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(argv.iter().map(|s| s.to_string()).collect()),
            }),
            ..LifecycleHandler::default()
        }
    }

    #[tokio::test]
    async fn exec_hooks_report_like_kubelet() {
        let ok = target(FakeExec::new(vec![FakeExec::exit(0, "", "")]));
        assert_eq!(run_handler(&exec_handler(&["true"]), &ok).await, Ok(()));

        let exec = FakeExec::new(vec![FakeExec::exit(3, "out\n", "boom")]);
        let failing = target(exec.clone());
        let err = run_handler(&exec_handler(&["sh", "-c", "exit 3"]), &failing)
            .await
            .expect_err("exit 3 fails");
        assert_eq!(
            err.message,
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"web\" in Pod \"web_default(u1)\" \
             failed - error: command 'sh -c exit 3' exited with 3: boom, message: \"out\\nboom\""
        );
        // Hooks run without a timeout.
        assert_eq!(exec.calls.lock().expect("calls")[0].2, None);

        let gone = target(FakeExec::new(vec![Err(ExecError(
            "container is not running".into(),
        ))]));
        let err = run_handler(&exec_handler(&["x"]), &gone)
            .await
            .expect_err("error");
        assert!(
            err.message
                .contains("failed - error: container is not running, message: \"\"")
        );
    }

    #[tokio::test]
    async fn sleep_and_unsupported_handlers() {
        let t = target(FakeExec::new(vec![]));
        let sleep = LifecycleHandler {
            sleep: Some(SleepAction { seconds: 0 }),
            ..LifecycleHandler::default()
        };
        assert_eq!(run_handler(&sleep, &t).await, Ok(()));
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            ..LifecycleHandler::default()
        };
        let err = run_handler(&tcp, &t).await.expect_err("tcpSocket fails");
        assert!(
            err.message
                .starts_with("Cannot run handler: invalid handler")
        );
        let none = run_handler(&LifecycleHandler::default(), &t).await;
        assert!(none.is_err());
    }
}
