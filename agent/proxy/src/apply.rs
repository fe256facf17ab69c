//! Applying rules: the seam between pure generation and the kernel. [`Runner`] is what the
//! proxier calls; [`CommandRunner`] runs `nft -f -` and `conntrack`, optionally inside a
//! named network namespace through `ip netns exec` (tests and benchmarks; the agent runs
//! them in the node's own namespace). Synchronous: the agent calls it from a blocking task.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Errors of applying rules or cleaning up conntrack state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {program}: {source} (install it: apt-get install -y {package})")]
    Spawn {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed with {status}: {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Something that can load an nft script and delete conntrack entries.
pub trait Runner {
    /// Runs `nft -f -` with `script` on stdin, as one transaction.
    fn nft(&mut self, script: &str) -> Result<()>;
    /// Runs `conntrack -D <args>`; "no entries matched" is success.
    fn conntrack_delete(&mut self, args: &[String]) -> Result<()>;
}

/// Runs the real tools, in `netns` when it is set.
#[derive(Clone, Debug, Default)]
pub struct CommandRunner {
    pub netns: Option<String>,
}

impl CommandRunner {
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn run(
        &self,
        program: &str,
        package: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(bool, String)> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawn = |source| Error::Spawn {
            program: program.to_string(),
            package,
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn)?;
        }
        let out = child.wait_with_output().map_err(spawn)?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            return Ok((true, stderr));
        }
        Ok((false, format!("{}\u{0}{stderr}", out.status)))
    }
}

impl Runner for CommandRunner {
    fn nft(&mut self, script: &str) -> Result<()> {
        if let Some(path) = std::env::var_os("KEEL_PROXY_DUMP") {
            // Debugging aid: keep the last script that was applied.
            let _ = std::fs::write(path, script);
        }
        let (ok, err) = self.run("nft", "nftables", &["-f", "-"], Some(script))?;
        if ok {
            return Ok(());
        }
        let (status, stderr) = err.split_once('\u{0}').unwrap_or(("", &err));
        // nft prints the offending line; keep the message bounded.
        let stderr: String = stderr.chars().take(2000).collect();
        Err(Error::Failed {
            program: "nft".into(),
            status: status.into(),
            stderr,
        })
    }

    fn conntrack_delete(&mut self, args: &[String]) -> Result<()> {
        let mut a: Vec<&str> = vec!["-D"];
        a.extend(args.iter().map(String::as_str));
        let (ok, err) = self.run("conntrack", "conntrack", &a, None)?;
        // conntrack exits 1 with "0 flow entries have been deleted" when nothing matched.
        if ok || err.contains("0 flow entries") {
            return Ok(());
        }
        let (status, stderr) = err.split_once('\u{0}').unwrap_or(("", &err));
        Err(Error::Failed {
            program: "conntrack".into(),
            status: status.into(),
            stderr: stderr.into(),
        })
    }
}
