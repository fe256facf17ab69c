//! The `CNI_*` environment variables (SPEC.md section 2, "Parameters").

use std::path::PathBuf;

use super::error::{CniError, INVALID_ENV};

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The parameters of one invocation.
#[derive(Clone, Debug)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty when not given (DEL may come without a netns).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` split into `K=V` pairs.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads and validates the variables `command` requires, with the reference plugins'
    /// rules: ADD/CHECK need all four, DEL all but the netns, GC and STATUS only `CNI_PATH`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            None => {
                return Err(CniError::new(
                    INVALID_ENV,
                    "required env variables [CNI_COMMAND] missing",
                ));
            }
            Some(c) => Command::parse(&c).ok_or_else(|| {
                CniError::new(INVALID_ENV, format!("unknown CNI_COMMAND: {c}"))
                    .with_details("use ADD, DEL, CHECK, VERSION, STATUS or GC")
            })?,
        };
        let need: &[&str] = match command {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Gc | Command::Status => &["CNI_PATH"],
            Command::Version => &[],
        };
        let missing: Vec<&str> = need.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if !container_id.is_empty() && !valid_container_id(&container_id) {
            return Err(CniError::new(
                INVALID_ENV,
                format!("invalid CNI_CONTAINERID {container_id:?}"),
            )
            .with_details("it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"));
        }
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if !ifname.is_empty() && !valid_ifname(&ifname) {
            return Err(
                CniError::new(INVALID_ENV, format!("invalid CNI_IFNAME {ifname:?}")).with_details(
                    "an interface name has 1 to 15 characters, none of them '/', ':' or whitespace",
                ),
            );
        }
        let args = get("CNI_ARGS")
            .map(|a| {
                a.split(';')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => Ok((k.to_string(), v.to_string())),
                        None => Err(CniError::new(
                            INVALID_ENV,
                            format!("CNI_ARGS: {kv:?} is not KEY=VALUE"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let path = get("CNI_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Ok(Env {
            command,
            container_id,
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname,
            args,
            path,
        })
    }

    pub fn from_process() -> Result<Env, CniError> {
        Env::from_lookup(|k| std::env::var(k).ok())
    }

    /// The runtime side: the `CNI_*` variables to exec a plugin with (empty ones left out).
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path = std::env::join_paths(&self.path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        [
            ("CNI_COMMAND", self.command.as_str().to_string()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", args.join(";")),
            ("CNI_PATH", path),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// A `CNI_ARGS` value.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(name: &str) -> bool {
    name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn missing_and_invalid() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/b"),
        ]);
        let e = e.expect_err("missing id");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "required env variables [CNI_CONTAINERID] missing")
        );
        assert_eq!(env(&[]).expect_err("no command").code, 4);
        assert_eq!(
            env(&[("CNI_COMMAND", "FOO")])
                .expect_err("bad command")
                .code,
            4
        );
        let bad_id = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_IFNAME", "e"),
            ("CNI_PATH", "/"),
        ]);
        assert_eq!(bad_id.expect_err("bad id").code, 4);
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a:/b"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"),
        ])
        .expect("valid DEL");
        assert_eq!(ok.arg("K8S_POD_NAME"), Some("p"));
        assert_eq!(ok.path.len(), 2);
        assert!(ok.netns.is_empty());
        let vars = ok.to_vars();
        let back: HashMap<String, String> =
            vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(
            Env::from_lookup(|k| back.get(k).cloned())
                .expect("round trip")
                .args,
            ok.args
        );
        assert!(!back.contains_key("CNI_NETNS"));
    }
}
