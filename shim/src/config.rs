//! Loading and validating a bundle's `config.json` (OCI runtime spec, `oci-spec` types).
//!
//! Everything that can be checked without touching the kernel is checked here, in the
//! `create` caller, before anything is forked or created, so bad input leaves nothing behind.

use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::path::{Path, PathBuf};

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// `<dir>/config.json`.
    pub config_path: PathBuf,
    /// The parsed config.
    pub spec: Spec,
    /// Absolute root filesystem path.
    pub rootfs: PathBuf,
}

/// One namespace entry: the type and, when joining, the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Namespace type.
    pub typ: LinuxNamespaceType,
    /// Join this namespace instead of creating one.
    pub path: Option<PathBuf>,
}

impl Bundle {
    /// Load `<bundle>/config.json` and validate the fields keel-shim relies on.
    pub fn load(bundle: &Path) -> Result<Bundle> {
        let dir = std::path::absolute(bundle)
            .map_err(|e| Error::io("resolve bundle", bundle.display(), e))?;
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Error::config(
                &config_path,
                "(file)",
                format!("cannot read: {e}; pass the bundle folder that holds config.json"),
            )
        })?;
        let spec: Spec = serde_json::from_str(&text).map_err(|e| {
            Error::config(
                &config_path,
                "(json)",
                format!("not a valid OCI config: {e}"),
            )
        })?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::config(&config_path, "root.path", "missing"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(Error::config(
                &config_path,
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ));
        }
        let b = Bundle {
            dir,
            config_path,
            spec,
            rootfs,
        };
        b.validate_process(b.process()?, &b.config_path)?;
        for ns in b.namespaces() {
            if let Some(p) = &ns.path
                && !p.exists()
            {
                return Err(Error::config(
                    &b.config_path,
                    "linux.namespaces[].path",
                    format!("{} does not exist", p.display()),
                ));
            }
        }
        Ok(b)
    }

    /// The `process` section (required for create).
    pub fn process(&self) -> Result<&Process> {
        self.spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::config(&self.config_path, "process", "missing"))
    }

    /// Check the fields of a process (also used for `exec --process`).
    pub fn validate_process(&self, p: &Process, file: &Path) -> Result<()> {
        let args = p.args().as_deref().unwrap_or_default();
        if args.is_empty() || args[0].is_empty() {
            return Err(Error::config(
                file,
                "process.args",
                "must name the program to run",
            ));
        }
        if !p.cwd().is_absolute() {
            return Err(Error::config(
                file,
                "process.cwd",
                format!("{} is not an absolute path", p.cwd().display()),
            ));
        }
        if let Some(env) = p.env() {
            for (i, e) in env.iter().enumerate() {
                if !e.contains('=') {
                    return Err(Error::config(
                        file,
                        &format!("process.env[{i}]"),
                        format!("{e:?} is not KEY=value"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The namespaces listed in `linux.namespaces`.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .map(|v| {
                v.iter()
                    .map(|n| Namespace {
                        typ: n.typ(),
                        path: n.path().clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a namespace of this type is listed (created or joined).
    pub fn has_namespace(&self, typ: LinuxNamespaceType) -> bool {
        self.namespaces().iter().any(|n| n.typ == typ)
    }

    /// Whether a NEW namespace of this type is created.
    pub fn new_namespace(&self, typ: LinuxNamespaceType) -> bool {
        self.namespaces()
            .iter()
            .any(|n| n.typ == typ && n.path.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) {
        std::fs::write(dir.join("config.json"), json).expect("write config");
    }

    #[test]
    fn missing_config_names_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = Bundle::load(d.path()).expect_err("no config");
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn missing_rootfs_names_root_path() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            r#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
        );
        let e = Bundle::load(d.path()).expect_err("no rootfs");
        assert!(e.to_string().contains("root.path"), "{e}");
    }

    #[test]
    fn empty_args_are_rejected() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("rootfs")).expect("mkdir");
        write(
            d.path(),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}}"#,
        );
        let e = Bundle::load(d.path()).expect_err("empty args");
        assert!(e.to_string().contains("process.args"), "{e}");
    }
}
