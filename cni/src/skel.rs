//! One plugin invocation, as SPEC.md section 2 describes it: read `CNI_*` and the config on
//! stdin, check the version, run the command, print the result or the error object on stdout
//! and exit 0 or 1. Errors become the spec's JSON here and nowhere else.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::spec::error::INCOMPATIBLE_VERSION;
use crate::spec::{CniError, CniResult, Command, Env, NetConf, version};

/// Everything a command gets.
pub struct Request {
    pub env: Env,
    pub conf: NetConf,
    /// Stdin as received, passed on unchanged to delegated plugins.
    pub stdin: Vec<u8>,
}

/// The commands of one plugin binary.
pub trait Plugin {
    /// One line naming the plugin, printed on stderr when run without `CNI_COMMAND`.
    fn about(&self) -> &'static str;
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// What to print and whether it is a success.
pub struct Outcome {
    pub stdout: String,
    pub ok: bool,
}

/// Runs one command from already-read inputs (pure apart from what the plugin does).
pub fn dispatch(plugin: &dyn Plugin, env: Result<Env, CniError>, stdin: Vec<u8>) -> Outcome {
    let loose_version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| version::is_supported(v))
        .unwrap_or_else(|| version::CURRENT.to_string());
    let fail = |e: CniError, v: &str| Outcome {
        stdout: e.to_json(v),
        ok: false,
    };
    let env = match env {
        Ok(env) => env,
        Err(e) => return fail(e, &loose_version),
    };
    if env.command == Command::Version {
        let input = serde_json::from_slice::<serde_json::Value>(&stdin)
            .ok()
            .and_then(|v| {
                v.get("cniVersion")
                    .and_then(|s| s.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        return Outcome {
            stdout: version::version_reply(&input).to_string(),
            ok: true,
        };
    }
    let conf = match NetConf::parse(&stdin) {
        Ok(c) => c,
        Err(e) => return fail(e, &loose_version),
    };
    let v = conf.cni_version.clone();
    let min = match env.command {
        Command::Check => "0.4.0",
        Command::Status | Command::Gc => "1.1.0",
        _ => "0.0.0",
    };
    if !version::at_least(&v, min) {
        let e = CniError::new(
            INCOMPATIBLE_VERSION,
            format!("config version does not allow {}", env.command.as_str()),
        )
        .with_details(format!(
            "{} needs cniVersion {min} or newer, the config says {v}",
            env.command.as_str()
        ));
        return fail(e, &v);
    }
    let req = Request { env, conf, stdin };
    let done = |r: Result<(), CniError>| match r {
        Ok(()) => Outcome {
            stdout: String::new(),
            ok: true,
        },
        Err(e) => fail(e, &v),
    };
    match req.env.command {
        Command::Add => match plugin.add(&req) {
            Ok(res) => Outcome {
                stdout: res.to_json(&v),
                ok: true,
            },
            Err(e) => fail(e, &v),
        },
        Command::Del => done(plugin.del(&req)),
        Command::Check => done(plugin.check(&req)),
        Command::Status => done(plugin.status(&req)),
        Command::Gc => done(plugin.gc(&req)),
        Command::Version => Outcome {
            stdout: String::new(),
            ok: true,
        },
    }
}

/// The `main` of every plugin binary.
pub fn run(plugin: &dyn Plugin) -> ExitCode {
    crate::trace::mark("main");
    let env = Env::from_process();
    // Without CNI_COMMAND nobody is driving us (a person at a terminal): say what we are
    // and do not wait on stdin.
    let wants_stdin = std::env::var_os("CNI_COMMAND").is_some_and(|c| !c.is_empty());
    if !wants_stdin {
        eprintln!("{}", plugin.about());
    }
    let mut stdin = Vec::new();
    if wants_stdin && let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::new(
            crate::spec::error::IO_FAILURE,
            "read the network configuration from stdin",
        )
        .with_details(e.to_string());
        println!("{}", err.to_json(version::CURRENT));
        return ExitCode::FAILURE;
    }
    let out = dispatch(plugin, env, stdin);
    crate::trace::mark("done");
    let mut so = std::io::stdout().lock();
    // A closed stdout leaves nothing to report to; the exit code still tells.
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.write_all(b"\n");
    let _ = so.flush();
    if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
