//! The OCI runtime `config.json` for a container: the image config (Entrypoint, Cmd, Env,
//! WorkingDir, User, StopSignal, ExposedPorts) merged with the caller's command, args and env
//! the way kubelet does (Kubernetes docs, "Define a Command and Arguments for a Container":
//! `command` replaces Entrypoint and drops Cmd; `args` replaces Cmd).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Root, Spec, User};

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: the image has no Entrypoint or Cmd; set the container's command")]
    NoCommand,
    #[error("user {user:?} not found in the image's {file}; use a numeric uid[:gid]")]
    UnknownUser { user: String, file: &'static str },
    #[error("environment entry {entry:?} is not NAME=VALUE")]
    BadEnv { entry: String },
}

/// What the caller (the pod spec) asks for on top of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Kubernetes `command`: replaces Entrypoint (and drops Cmd).
    pub command: Vec<String>,
    /// Kubernetes `args`: replaces Cmd.
    pub args: Vec<String>,
    /// Set or replace environment variables, in order.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a name from the image's /etc/passwd; overrides the image's User.
    pub user: Option<String>,
    pub terminal: bool,
}

/// Annotation carrying the image's StopSignal (containerd uses the same key).
pub const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";
/// Annotation carrying the image's ExposedPorts, comma separated.
pub const EXPOSED_PORTS_ANNOTATION: &str = "org.opencontainers.image.exposedPorts";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// kubelet's rule for the process arguments.
pub fn process_args(
    entrypoint: &[String],
    cmd: &[String],
    o: &Overrides,
) -> Result<Vec<String>, SpecError> {
    let args = match (o.command.is_empty(), o.args.is_empty()) {
        (true, true) => [entrypoint, cmd].concat(),
        (true, false) => [entrypoint, &o.args].concat(),
        (false, _) => [&o.command[..], &o.args].concat(),
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// Image env, then overrides replacing same-named variables; PATH defaulted like containerd.
pub fn merge_env(image_env: &[String], o: &Overrides) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |k: &str, v: &str, out: &mut Vec<(String, String)>| match out
        .iter_mut()
        .find(|(name, _)| name == k)
    {
        Some(slot) => slot.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for entry in image_env {
        let (k, v) = entry.split_once('=').ok_or_else(|| SpecError::BadEnv {
            entry: entry.clone(),
        })?;
        set(k, v, &mut out);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, ("PATH".into(), DEFAULT_PATH["PATH=".len()..].into()));
    }
    for (k, v) in &o.env {
        set(k, v, &mut out);
    }
    Ok(out.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Builds the runtime spec for a container whose merged root is `rootfs`.
pub fn build(config: &ImageConfiguration, rootfs: &Path, o: &Overrides) -> Result<Spec, SpecError> {
    let empty = oci_spec::image::Config::default();
    let c = config.config().as_ref().unwrap_or(&empty);
    let none: Vec<String> = Vec::new();
    let args = process_args(
        c.entrypoint().as_ref().unwrap_or(&none),
        c.cmd().as_ref().unwrap_or(&none),
        o,
    )?;
    let env = merge_env(c.env().as_ref().unwrap_or(&none), o)?;
    let user_spec = o
        .user
        .clone()
        .or_else(|| c.user().clone())
        .unwrap_or_default();
    let user = resolve_user(rootfs, &user_spec)?;
    let cwd = o
        .working_dir
        .clone()
        .or_else(|| c.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    let mut spec = Spec::default();
    spec.set_hostname(None);
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(user);
    process.set_terminal(Some(o.terminal));
    spec.set_process(Some(process));
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf());
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let mut annotations: HashMap<String, String> = HashMap::new();
    if let Some(sig) = c.stop_signal() {
        annotations.insert(STOP_SIGNAL_ANNOTATION.into(), sig.clone());
    }
    if let Some(ports) = c.exposed_ports().as_ref().filter(|p| !p.is_empty()) {
        let mut ports = ports.clone();
        ports.sort();
        annotations.insert(EXPOSED_PORTS_ANNOTATION.into(), ports.join(","));
    }
    spec.set_annotations(Some(annotations));
    Ok(spec)
}

/// Resolves `user[:group]` (names or numbers) against the image's /etc/passwd and /etc/group,
/// including the user's supplementary groups, like runc's libcontainer/user does.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<User, SpecError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_image_file(rootfs, "etc/passwd");
    let group = read_image_file(rootfs, "etc/group");
    let (uid, mut gid, name) = if user_part.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let entry = passwd_lines(&passwd).find(|f| f[2].parse() == Ok(uid));
        let gid = entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0);
        (uid, gid, entry.map(|f| f[0].to_string()))
    } else {
        let f = passwd_lines(&passwd)
            .find(|f| f[0] == user_part)
            .ok_or_else(|| SpecError::UnknownUser {
                user: user_part.to_string(),
                file: "/etc/passwd",
            })?;
        (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(user_part.to_string()),
        )
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_lines(&group)
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| SpecError::UnknownUser {
                    user: g.to_string(),
                    file: "/etc/group",
                })?,
        };
    }
    let mut extra: Vec<u32> = match &name {
        Some(n) => group_lines(&group)
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|x| x == n)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    extra.sort_unstable();
    extra.dedup();
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids((!extra.is_empty()).then_some(extra));
    Ok(user)
}

fn passwd_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
}

fn group_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
}

/// Reads a small file from the image without following symlinks out of it (an image could
/// make /etc/passwd point at the host's). Missing or refused files read as empty.
fn read_image_file(rootfs: &Path, rel: &str) -> String {
    let etc = rootfs.join("etc");
    if std::fs::symlink_metadata(&etc).map_or(true, |m| !m.is_dir()) {
        return String::new();
    }
    let mut text = String::new();
    let opened = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(rootfs.join(rel));
    if let Ok(f) = opened {
        let _ = f.take(1 << 20).read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn kubelet_command_rules() {
        let ep = v(&["/entry"]);
        let cmd = v(&["--default"]);
        let cases = [
            (vec![], vec![], v(&["/entry", "--default"])),
            (v(&["/bin/sh"]), vec![], v(&["/bin/sh"])),
            (vec![], v(&["-x"]), v(&["/entry", "-x"])),
            (
                v(&["/bin/sh"]),
                v(&["-c", "true"]),
                v(&["/bin/sh", "-c", "true"]),
            ),
        ];
        for (command, args, want) in cases {
            let o = Overrides {
                command,
                args,
                ..Overrides::default()
            };
            assert_eq!(process_args(&ep, &cmd, &o).expect("args"), want);
        }
        assert!(matches!(
            process_args(&[], &[], &Overrides::default()),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn env_overrides_by_name() {
        let o = Overrides {
            env: vec![("A".into(), "2".into()), ("C".into(), "3".into())],
            ..Overrides::default()
        };
        let env = merge_env(&v(&["A=1", "B=x=y"]), &o).expect("env");
        assert_eq!(env[1..], v(&["A=2", "B=x=y", "C=3"])[..]);
        assert!(env[0].starts_with("PATH="));
        assert!(merge_env(&v(&["bad"]), &o).is_err());
    }

    #[test]
    fn users_resolve_from_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:102:nginx:/:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nnginx:x:102:\nwww:x:33:nginx\n",
        )
        .expect("group");
        let u = resolve_user(dir.path(), "nginx").expect("nginx");
        assert_eq!((u.uid(), u.gid()), (101, 102));
        assert_eq!(u.additional_gids().clone(), Some(vec![33]));
        let u = resolve_user(dir.path(), "1000:www").expect("numeric");
        assert_eq!((u.uid(), u.gid()), (1000, 33));
        assert!(resolve_user(dir.path(), "nobody").is_err());
        assert_eq!(resolve_user(dir.path(), "").expect("root").uid(), 0);
    }

    #[test]
    fn spec_from_image_config() {
        let config: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
            "Env":["PATH=/usr/bin","NGINX_VERSION=1.14"],"WorkingDir":"/srv","StopSignal":"SIGQUIT",
            "ExposedPorts":{"80/tcp":{}}}}"#,
        )
        .expect("config");
        let o = Overrides {
            args: vec!["nginx-debug".into()],
            ..Overrides::default()
        };
        let spec = build(&config, Path::new("/tmp/none"), &o).expect("spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!(
            p.args().as_ref().expect("args"),
            &v(&["/docker-entrypoint.sh", "nginx-debug"])
        );
        assert_eq!(p.cwd(), Path::new("/srv"));
        let ann = spec.annotations().as_ref().expect("annotations");
        assert_eq!(ann[STOP_SIGNAL_ANNOTATION], "SIGQUIT");
        assert_eq!(ann[EXPOSED_PORTS_ANNOTATION], "80/tcp");
        assert_eq!(
            spec.root().as_ref().expect("root").path(),
            Path::new("/tmp/none")
        );
    }
}
