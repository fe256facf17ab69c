//! Unpacks one layer tarball (gzip, zstd or plain) into its own directory, turning OCI whiteouts
//! into overlayfs ones and refusing every entry that would land outside the directory.
//!
//! Whiteouts (OCI image-spec layer.md, "Whiteouts"): `.wh.<name>` becomes a 0/0 character device
//! `<name>` and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory, which is how
//! overlayfs spells the same thing (kernel Documentation/filesystems/overlayfs.rst).
//!
//! Containment: the layer directory is new and only this code writes to it, so checking with
//! `lstat` that no parent component of an entry is a symlink (and that no path is absolute or
//! contains `..`) is enough to keep every write inside it. Symlinks themselves may point anywhere:
//! they are resolved inside the container's root later, never by us.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeVal;
use sha2::{Digest as _, Sha256};

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read layer archive {blob}: {source}; the layer blob is corrupt or not a tar")]
    Archive {
        blob: PathBuf,
        source: std::io::Error,
    },
    #[error("layer entry {entry:?} rejected: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("{op} {path}: {errno}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        errno: nix::Error,
    },
}

type Result<T> = std::result::Result<T, UnpackError>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |source| UnpackError::Io { op, path, source }
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |errno| UnpackError::Sys { op, path, errno }
}

/// What unpacking measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes allocated on disk for the unpacked tree.
    pub disk_usage: u64,
    pub entries: u64,
}

/// Compression detected from the first bytes (media types are often wrong or generic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Hashes everything read through it: the diff_id of the uncompressed stream.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the layer blob at `blob` into `dest`, which must not exist yet.
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<Unpacked> {
    let file = File::open(blob).map_err(io("open layer blob", blob))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(io("read layer blob", blob))?;
    let decoded: Box<dyn Read> = match detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(io("read zstd layer", blob))?,
        ),
        Compression::None => Box::new(reader),
    };
    unpack_stream(decoded, blob, dest)
}

/// Unpacks an uncompressed tar stream (`what` names it in errors) into `dest`.
pub fn unpack_stream(stream: impl Read, what: &Path, dest: &Path) -> Result<Unpacked> {
    std::fs::create_dir(dest).map_err(io("create layer directory", dest))?;
    let mut archive = tar::Archive::new(Hashing {
        inner: stream,
        hash: Sha256::new(),
    });
    let archive_err = |source| UnpackError::Archive {
        blob: what.to_path_buf(),
        source,
    };
    let mut state = State {
        dest: dest.to_path_buf(),
        dirs: Vec::new(),
        disk_usage: 0,
    };
    let mut entries = 0;
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        state.apply(&mut entry)?;
        entries += 1;
    }
    // Directory mtimes last: creating their children changed them.
    for (dir, mtime) in state.dirs.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(archive_err)?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(rest.hash.finalize())),
        disk_usage: state.disk_usage,
        entries,
    })
}

struct State {
    dest: PathBuf,
    dirs: Vec<(PathBuf, u64)>,
    disk_usage: u64,
}

/// Turns an archive path into a relative path of normal components; `None` is the root itself.
fn clean(raw: &Path, entry: &str) -> Result<Option<PathBuf>> {
    let unsafe_entry = |reason| UnpackError::Unsafe {
        entry: entry.to_string(),
        reason,
    };
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("path contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry("absolute path"));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

impl State {
    /// Walks `rel`'s parents under the layer directory, creating missing ones and refusing
    /// symlinks (the only way an entry could be written outside the layer).
    fn parent(&self, rel: &Path, entry: &str, create: bool) -> Result<PathBuf> {
        let mut cur = self.dest.clone();
        let parents = rel.parent().map(|p| p.components().count()).unwrap_or(0);
        for comp in rel.components().take(parents) {
            cur.push(comp);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::Unsafe {
                        entry: entry.to_string(),
                        reason: "a parent directory is a symlink (would escape the layer)",
                    });
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::Unsafe {
                        entry: entry.to_string(),
                        reason: "a parent path is not a directory",
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&cur).map_err(io("create directory", &cur))?;
                }
                Err(e) => return Err(io("inspect", &cur)(e)),
            }
        }
        Ok(cur)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        let raw = entry.path().map_err(io("read entry path in", &self.dest))?;
        let name = raw.display().to_string();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let rel = clean(&raw, &name)?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0);
        let Some(rel) = rel else {
            // The layer root ("./"): only its metadata matters.
            if kind.is_dir() {
                let dest = self.dest.clone();
                chown(&dest, uid, gid)?;
                chmod(&dest, mode)?;
                self.dirs.push((dest, mtime));
            }
            return Ok(());
        };
        let parent = self.parent(&rel, &name, true)?;
        let base = rel
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base == ".wh..wh..opq" {
            return xattr::set(&parent, "trusted.overlay.opaque", b"y")
                .map_err(io("mark opaque directory", &parent));
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            if hidden.starts_with(".wh.") || hidden.is_empty() {
                return Ok(()); // aufs-internal metadata, meaningless here
            }
            let target = parent.join(hidden);
            remove_existing(&target, false)?;
            return nix::sys::stat::mknod(
                &target,
                SFlag::S_IFCHR,
                Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(sys("create whiteout", &target));
        }
        let path = self.dest.join(&rel);
        remove_existing(&path, kind.is_dir())?;
        match kind {
            tar::EntryType::Directory => {
                if !path.is_dir() {
                    std::fs::create_dir(&path).map_err(io("create directory", &path))?;
                    self.disk_usage += 4096;
                }
                chown(&path, uid, gid)?;
                chmod(&path, mode)?;
                self.dirs.push((path.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io("create file", &path))?;
                std::io::copy(entry, &mut file).map_err(io("write file", &path))?;
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                    .map_err(io("chown", &path))?;
                // After chown: chown clears set-uid/set-gid bits.
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io("chmod", &path))?;
                file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
                    .map_err(io("set mtime", &path))?;
                self.disk_usage += file.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io("read symlink target of", &path))?
                    .ok_or_else(|| UnpackError::Unsafe {
                        entry: name.clone(),
                        reason: "symlink without a target",
                    })?;
                std::os::unix::fs::symlink(&target, &path).map_err(io("create symlink", &path))?;
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                    .map_err(io("chown", &path))?;
                set_mtime(&path, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io("read hard link target of", &path))?
                    .ok_or_else(|| UnpackError::Unsafe {
                        entry: name.clone(),
                        reason: "hard link without a target",
                    })?;
                let target_rel = clean(&target, &name)?.ok_or_else(|| UnpackError::Unsafe {
                    entry: name.clone(),
                    reason: "hard link to the layer root",
                })?;
                self.parent(&target_rel, &name, false)?;
                let source = self.dest.join(&target_rel);
                match std::fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(UnpackError::Unsafe {
                            entry: name,
                            reason: "hard link target is missing from this layer or a directory",
                        });
                    }
                }
                std::fs::hard_link(&source, &path).map_err(io("create hard link", &path))?;
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                nix::sys::stat::mknod(
                    &path,
                    flag,
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(sys("create device node", &path))?;
                chown(&path, uid, gid)?;
                chmod(&path, mode)?;
                set_mtime(&path, mtime)?;
            }
            _ => {
                tracing::debug!(entry = %name, ?kind, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        self.xattrs(entry, &path)
    }

    /// Applies PAX `SCHILY.xattr.*` records (how tar carries extended attributes).
    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<R>, path: &Path) -> Result<()> {
        let Ok(Some(exts)) = entry.pax_extensions() else {
            return Ok(());
        };
        for ext in exts.flatten() {
            let Some(attr) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
                continue;
            };
            if let Err(e) = xattr::set(path, attr, ext.value_bytes()) {
                // Filesystems without that namespace: keep going, like containerd does.
                if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) {
                    tracing::warn!(path = %path.display(), attr, "xattr not supported here");
                } else {
                    return Err(io("set xattr", path)(e));
                }
            }
        }
        Ok(())
    }
}

/// Makes room for a new entry: later entries replace earlier ones, except a directory over a
/// directory, which merges.
fn remove_existing(path: &Path, new_is_dir: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && new_is_dir => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(io("replace directory", path)),
        Ok(_) => std::fs::remove_file(path).map_err(io("replace file", path)),
        Err(_) => Ok(()),
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io("chown", path))
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let t = TimeVal::new(mtime as libc::time_t, 0);
    nix::sys::stat::lutimes(path, &t, &t).map_err(sys("set mtime", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o755);
        h.set_mtime(1_000_000);
        h.set_cksum();
        h
    }

    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            // Bypass the builder's own path checks: raw bytes, as a hostile layer would have.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn whiteouts_links_and_modes() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("etc/", tar::EntryType::Directory, 0), &[][..])
            .expect("dir");
        b.append(&header("etc/motd", tar::EntryType::Regular, 2), &b"hi"[..])
            .expect("file");
        let mut link = header("etc/motd2", tar::EntryType::Link, 0);
        link.set_link_name("etc/motd").expect("link");
        link.set_cksum();
        b.append(&link, &[][..]).expect("hardlink");
        let mut sym = header("etc/abs", tar::EntryType::Symlink, 0);
        sym.set_link_name("/etc/motd").expect("sym");
        sym.set_cksum();
        b.append(&sym, &[][..]).expect("symlink");
        b.append(&header("etc/.wh.gone", tar::EntryType::Regular, 0), &[][..])
            .expect("wh");
        b.append(
            &header("var/.wh..wh..opq", tar::EntryType::Regular, 0),
            &[][..],
        )
        .expect("opq");
        let data = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("layer");
        let out = unpack_stream(&data[..], Path::new("test"), &dest).expect("unpack");
        assert_eq!(out.diff_id, crate::store::sha256_digest(&data));
        assert_eq!(std::fs::read(dest.join("etc/motd2")).expect("read"), b"hi");
        let m = std::fs::metadata(dest.join("etc/motd")).expect("meta");
        assert_eq!(m.nlink(), 2);
        assert_eq!(m.mode() & 0o7777, 0o755);
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(
            std::fs::metadata(dest.join("etc")).expect("dir").mtime(),
            1_000_000
        );
        let wh = std::fs::symlink_metadata(dest.join("etc/gone")).expect("whiteout");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &wh.file_type()
        ));
        assert_eq!(wh.rdev(), 0);
        // trusted.* xattrs need CAP_SYS_ADMIN: checked in the root integration tests.
        assert!(dest.join("var").is_dir());
    }

    #[test]
    fn rejects_escapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: Vec<Vec<u8>> = vec![
            raw_tar(&[("../evil", tar::EntryType::Regular, b"x", None)]),
            raw_tar(&[("/abs", tar::EntryType::Regular, b"x", None)]),
            raw_tar(&[
                ("esc", tar::EntryType::Symlink, b"", Some("../../../..")),
                ("esc/evil", tar::EntryType::Regular, b"x", None),
            ]),
            raw_tar(&[("hl", tar::EntryType::Link, b"", Some("../../etc/passwd"))]),
        ];
        for (i, data) in cases.iter().enumerate() {
            let dest = dir.path().join(format!("l{i}"));
            let err = unpack_stream(&data[..], Path::new("t"), &dest).expect_err("accepted");
            assert!(matches!(err, UnpackError::Unsafe { .. }), "case {i}: {err}");
        }
        assert!(!dir.path().parent().expect("p").join("evil").exists());
    }

    #[test]
    fn gzip_zstd_and_plain_blobs_give_the_same_diff_id() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("a.txt", tar::EntryType::Regular, 3), &b"abc"[..])
            .expect("file");
        let data = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::encode_all(&data[..], 3).expect("zstd");
        let dir = tempfile::tempdir().expect("tempdir");
        let want = crate::store::sha256_digest(&data);
        for (name, bytes) in [("plain", &data), ("gz", &gz), ("zst", &zst)] {
            let blob = dir.path().join(name);
            std::fs::write(&blob, bytes).expect("write");
            let dest = dir.path().join(format!("{name}-layer"));
            let out = unpack_layer(&blob, &dest).expect(name);
            assert_eq!(out.diff_id, want, "{name}");
            assert_eq!(std::fs::read(dest.join("a.txt")).expect("read"), b"abc");
        }
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, [0x1f, 0x8b, 0, 1, 2, 3]).expect("write");
        let err = unpack_layer(&garbage, &dir.path().join("g")).expect_err("garbage");
        assert!(matches!(err, UnpackError::Archive { .. }), "{err}");
    }

    #[test]
    fn detects_compression() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"etc/"), Compression::None);
    }
}
