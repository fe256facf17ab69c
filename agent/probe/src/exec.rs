//! exec probes: the command runs inside the container through the caller's [`Exec`]
//! (`pkg/probe/exec`): exit code 0 is Success, any other is Failure with the command's output
//! (stdout then stderr, at most 10 KiB), a timeout is Failure `command "<argv>" timed out`
//! (ExecProbeTimeout, on by default), and a command that could not be run is a probe error.
//!
//! [`Exec`]: crate::target::Exec

use crate::action::Outcome;
use crate::target::{ExecOutput, Target};
use k8s_openapi::api::core::v1::ExecAction;
use std::time::Duration;

/// Output kept from an exec probe (kubelet's `maxReadLength`).
const MAX_OUTPUT: usize = 10 * 1024;
/// Extra time given to the caller's exec to report its own timeout before ours fires.
const EXEC_GRACE: Duration = Duration::from_secs(2);

/// stdout then stderr, as kubelet's combined output, cut at `limit` bytes on a char boundary.
pub(crate) fn combined_output(out: &ExecOutput, limit: usize) -> String {
    let mut text = format!("{}{}", out.stdout, out.stderr);
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

pub(crate) async fn probe(action: &ExecAction, target: &Target, timeout: Duration) -> Outcome {
    let command = action.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Outcome::Error("exec probe has no command".into());
    }
    let timed_out = || Outcome::Failure(format!("command {:?} timed out", command.join(" ")));
    let run = target.exec.exec(&target.container, &command, Some(timeout));
    match tokio::time::timeout(timeout + EXEC_GRACE, run).await {
        Err(_) => timed_out(),
        Ok(Err(e)) => Outcome::Error(e.to_string()),
        Ok(Ok(out)) if out.timed_out => timed_out(),
        Ok(Ok(out)) if out.exit_code == 0 => Outcome::Success(combined_output(&out, MAX_OUTPUT)),
        Ok(Ok(out)) => Outcome::Failure(combined_output(&out, MAX_OUTPUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::fake::{FakeExec, target};
    use crate::target::{ExecError, ExecOutput};

    fn action(argv: &[&str]) -> ExecAction {
        ExecAction {
            command: Some(argv.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[tokio::test]
    async fn exit_codes_map_to_results() {
        let timeout = Duration::from_secs(3);
        let cases = [
            (
                FakeExec::exit(0, "ok\n", ""),
                Outcome::Success("ok\n".into()),
            ),
            (
                FakeExec::exit(1, "out ", "err"),
                Outcome::Failure("out err".into()),
            ),
            (
                Ok(ExecOutput {
                    exit_code: 137,
                    timed_out: true,
                    ..ExecOutput::default()
                }),
                Outcome::Failure("command \"cat /tmp/healthy\" timed out".into()),
            ),
            (
                Err(ExecError("supervisor is gone".into())),
                Outcome::Error("supervisor is gone".into()),
            ),
        ];
        for (reply, want) in cases {
            let exec = FakeExec::new(vec![reply]);
            let t = target(exec.clone());
            assert_eq!(
                probe(&action(&["cat", "/tmp/healthy"]), &t, timeout).await,
                want
            );
            let calls = exec.calls.lock().expect("calls");
            assert_eq!(calls[0].0, "web");
            assert_eq!(calls[0].2, Some(timeout));
        }
    }

    #[tokio::test]
    async fn empty_command_is_an_error() {
        let t = target(FakeExec::new(vec![FakeExec::exit(0, "", "")]));
        assert!(matches!(
            probe(&action(&[]), &t, Duration::from_secs(1)).await,
            Outcome::Error(_)
        ));
    }

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        let out = ExecOutput {
            stdout: "é".repeat(10),
            ..ExecOutput::default()
        };
        assert_eq!(combined_output(&out, 5), "éé");
    }
}
