//! The runc-compatible command line (the subset containerd's go-runc and conmon call, see
//! `docs/architecture/shim.md`), plus keel extensions (`--cri-log`, `image`).

use crate::container::{self, create::CreateOptions, exec::ExecOptions};
use crate::error::{Error, Result};
use crate::supervisor::LogOptions;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version printed by `--version`, in runc's line layout (go-runc parses it).
pub const VERSION_TEXT: &str = concat!(
    "keel-shim version ",
    env!("CARGO_PKG_VERSION"),
    "\ncommit: none\nspec: 1.2.0\n"
);

#[derive(Debug, Parser)]
#[command(
    name = "keel-shim",
    disable_version_flag = true,
    about = "Keel's OCI runtime and container supervisor"
)]
struct Cli {
    /// State folder for container state (tmpfs recommended).
    #[arg(long, global = true, default_value = "/run/keel-shim")]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log records: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Accepted for runc compatibility; the systemd cgroup driver is not supported.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility (no effect).
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility (no effect).
    #[arg(long, global = true)]
    rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Bundle folder (holds config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write init's host pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility; pivot_root is always used.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility (no session keyring is created).
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Extra descriptors to pass (only 0 is supported).
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// keel: capture stdout/stderr into this CRI-format log file.
    #[arg(long = "cri-log")]
    cri_log: Option<PathBuf>,
    /// keel: rotate the CRI log beyond this many bytes (0 = never).
    #[arg(long = "log-max-size", default_value_t = 10 * 1024 * 1024)]
    log_max_size: u64,
    /// keel: number of CRI log files to keep, including the current one.
    #[arg(long = "log-max-files", default_value_t = 5)]
    log_max_files: u32,
    /// Container id.
    id: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a container (no user code runs until `start`).
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start { id: String },
    /// Print the OCI state JSON.
    State { id: String },
    /// Send a signal (name or number, default TERM) to init, or to all processes.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a stopped (or, with --force, any) container.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// create + start; in the foreground, wait and return the container's exit code.
    Run {
        #[arg(short, long)]
        detach: bool,
        /// Accepted for runc compatibility (the container is always deleted).
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Run a process in a running container.
    Exec {
        /// JSON file with an OCI `process` object.
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Extra environment entries KEY=value.
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        /// uid[:gid].
        #[arg(short, long)]
        user: Option<String>,
        /// Allocate a terminal (not supported for exec yet).
        #[arg(short, long)]
        tty: bool,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
    },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Print one resource usage sample (`--stats`).
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long)]
        interval: Option<String>,
        id: String,
    },
    /// Print the runtime's features JSON.
    Features,
    /// Image operations (keel-image).
    Image {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn create_options(a: CreateArgs) -> Result<CreateOptions> {
    if a.preserve_fds != 0 {
        return Err(Error::Usage(
            "--preserve-fds other than 0 is not supported".into(),
        ));
    }
    Ok(CreateOptions {
        id: a.id,
        bundle: a.bundle,
        pid_file: a.pid_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
        console_socket: a.console_socket,
        log: a.cri_log.map(|path| LogOptions {
            path: std::path::absolute(&path).unwrap_or(path),
            max_size: a.log_max_size,
            max_files: a.log_max_files,
        }),
    })
}

/// Write to stdout; a reader that went away (EPIPE, e.g. `| grep -q`) is not an error.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|_| o.flush());
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Io {
        op: "encode",
        path: "stdout".into(),
        source: std::io::Error::other(e),
    })?;
    out(&format!("{s}\n"));
    Ok(())
}

fn parse_user(u: &str) -> Result<(u32, u32)> {
    let bad = || Error::Usage(format!("--user {u:?}: use uid or uid:gid (numbers)"));
    let (a, b) = u.split_once(':').unwrap_or((u, "0"));
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

fn dispatch(root: &Path, cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Create(a) => container::create::create(root, &create_options(a)?).map(|_| 0),
        Cmd::Start { id } => container::start::start(root, &id).map(|_| 0),
        Cmd::State { id } => print_json(&container::state::state(root, &id)?).map(|_| 0),
        Cmd::Kill { all, id, signal } => {
            let sig = container::kill::parse_signal(signal.as_deref().unwrap_or("TERM"))?;
            container::kill::kill(root, &id, sig, all).map(|_| 0)
        }
        Cmd::Delete { force, id } => container::delete::delete(root, &id, force).map(|_| 0),
        Cmd::Run { detach, create, .. } => {
            container::run::run(root, &create_options(create)?, detach)
        }
        Cmd::Exec {
            process,
            detach,
            pid_file,
            env,
            cwd,
            user,
            tty,
            id,
            args,
        } => {
            if tty {
                return Err(Error::Usage("exec --tty is not supported yet".into()));
            }
            let o = ExecOptions {
                process,
                detach,
                pid_file,
                args,
                env,
                cwd,
                user: user.as_deref().map(parse_user).transpose()?,
            };
            container::exec::exec(root, &id, &o)
        }
        Cmd::List { format, quiet } => {
            let states = container::state::list(root);
            if quiet {
                for s in &states {
                    out(&format!("{}\n", s.id));
                }
            } else if format == "json" {
                print_json(&states)?;
            } else {
                out(&container::state::list_table(&states));
            }
            Ok(0)
        }
        Cmd::Ps { format, id } => {
            let pids = container::state::ps(root, &id)?;
            if format == "json" {
                print_json(&pids)?;
            } else {
                out(&container::state::ps_table(&pids));
            }
            Ok(0)
        }
        Cmd::Pause { id } => container::pause::pause(root, &id).map(|_| 0),
        Cmd::Resume { id } => container::pause::resume(root, &id).map(|_| 0),
        Cmd::Events { stats, id, .. } => {
            if !stats {
                return Err(Error::Usage(
                    "only `events --stats ID` (one sample) is supported".into(),
                ));
            }
            let v = container::state::events_stats(root, &id)?;
            out(&format!("{v}\n"));
            Ok(0)
        }
        Cmd::Features => print_json(&container::features::features()).map(|_| 0),
        Cmd::Image { args } => Ok(keel_image::cli::main(args)),
    }
}

fn log_error(path: &Path, format: &str, msg: &str) {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let line = if format == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level=error msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Run the CLI with `args` (including argv\[0\]); returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if cli.version {
        out(VERSION_TEXT);
        return 0;
    }
    let Some(cmd) = cli.cmd else {
        eprintln!("keel-shim: missing command; see `keel-shim --help`");
        return 2;
    };
    let result = if cli.systemd_cgroup {
        Err(Error::Usage(
            "--systemd-cgroup is not supported: give linux.cgroupsPath as a cgroupfs path".into(),
        ))
    } else if !matches!(cli.log_format.as_str(), "text" | "json") {
        Err(Error::Usage(format!(
            "--log-format {:?}: use text or json",
            cli.log_format
        )))
    } else {
        let root = std::path::absolute(&cli.root).unwrap_or(cli.root.clone());
        dispatch(&root, cmd)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let msg = e.to_string();
            eprintln!("keel-shim: {msg}");
            if let Some(p) = &cli.log {
                log_error(p, &cli.log_format, &msg);
            }
            1
        }
    }
}
