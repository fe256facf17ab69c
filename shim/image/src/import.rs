//! Air-gapped import: OCI image-layout tarballs (`skopeo copy ... oci-archive:`) and
//! `docker save` tarballs go into the store exactly as a pull would leave them. `import_dir`
//! loads every tarball in a directory (k3s's `agent/images` idea, docs/install/airgap.md).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::reference::ImageRef;
use crate::store::{self, ImageRecord, Store, StoreError};

/// Why an archive could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import {archive}: {message}")]
    Invalid { archive: PathBuf, message: String },
    #[error("import {archive}")]
    Store {
        archive: PathBuf,
        source: StoreError,
    },
    #[error("import {archive}: read archive: {source}")]
    Read {
        archive: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ImportError>;

/// `docker save`'s manifest.json entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

struct Ctx<'a> {
    store: &'a Store,
    archive: &'a Path,
    dir: PathBuf,
    /// Layer files already moved into the store, by real path (`docker save` links duplicate
    /// layers to one file with symlinks).
    done: std::cell::RefCell<std::collections::HashMap<PathBuf, String>>,
}

impl Ctx<'_> {
    fn invalid(&self, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            archive: self.archive.to_path_buf(),
            message: message.into(),
        }
    }

    fn store_err(&self, source: StoreError) -> ImportError {
        ImportError::Store {
            archive: self.archive.to_path_buf(),
            source,
        }
    }

    /// A path inside the extracted archive (refusing anything that leaves it).
    fn inner(&self, rel: &str) -> Result<PathBuf> {
        let p = Path::new(rel);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(self.invalid(format!("path {rel:?} leaves the archive")));
        }
        let joined = self.dir.join(p);
        // Symlinks inside the archive are followed, but only to files inside it.
        match (joined.canonicalize(), self.dir.canonicalize()) {
            (Ok(real), Ok(dir)) if real.starts_with(&dir) => Ok(real),
            (Ok(_), _) => Err(self.invalid(format!("path {rel:?} links outside the archive"))),
            _ => Ok(joined),
        }
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.inner(rel)?;
        std::fs::read(&path).map_err(|e| self.invalid(format!("read {rel}: {e}")))
    }

    fn oci_blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = store::digest_hex(digest).map_err(|e| self.store_err(e))?;
        self.inner(&format!("blobs/sha256/{hex}"))
    }

    /// Verifies an OCI-layout blob against its digest and returns its bytes.
    fn oci_small_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let bytes = std::fs::read(self.oci_blob_path(digest)?)
            .map_err(|e| self.invalid(format!("blob {digest} missing: {e}")))?;
        let actual = store::sha256_digest(&bytes);
        if actual != digest {
            return Err(self.invalid(format!("blob {digest} hashes to {actual}")));
        }
        Ok(bytes)
    }

    /// Moves a layer file into the store (verifying `digest` if given) and unpacks it as layer
    /// `diff_id`, unless that layer is already there. Returns the file's digest.
    fn layer(&self, file: &Path, digest: Option<&str>, diff_id: &str) -> Result<String> {
        if let Some(d) = self.done.borrow().get(file) {
            return Ok(d.clone());
        }
        let actual = hash_file(file)
            .map_err(|e| self.invalid(format!("read layer {}: {e}", file.display())))?;
        if let Some(want) = digest
            && want != actual
        {
            return Err(self.invalid(format!("layer {want} hashes to {actual}")));
        }
        if self
            .store
            .layer(diff_id)
            .map_err(|e| self.store_err(e))?
            .is_some()
        {
            self.done
                .borrow_mut()
                .insert(file.to_path_buf(), actual.clone());
            return Ok(actual);
        }
        let have_blob = self.store.has_blob(&actual);
        crate::pull::unpack_and_commit(self.store, file, &actual, diff_id, !have_blob)
            .map_err(|a| self.invalid(a.message))?;
        self.done
            .borrow_mut()
            .insert(file.to_path_buf(), actual.clone());
        Ok(actual)
    }

    fn finish(
        &self,
        name: &str,
        manifest: &[u8],
        config_bytes: &[u8],
        layers: Vec<String>,
        diff_ids: Vec<String>,
    ) -> Result<String> {
        let name = ImageRef::parse(name)
            .map_err(|e| self.invalid(e.to_string()))?
            .to_string();
        let manifest_digest = self
            .store
            .write_blob(manifest, None, "manifest")
            .map_err(|e| self.store_err(e))?;
        let config_digest = self
            .store
            .write_blob(config_bytes, None, "image config")
            .map_err(|e| self.store_err(e))?;
        let size = layers
            .iter()
            .filter_map(|d| self.store.blob_path(d).ok())
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + config_bytes.len() as u64;
        let now = store::now();
        self.store
            .put_image(&ImageRecord {
                name: name.clone(),
                manifest_digest,
                index_digest: None,
                config_digest,
                layers,
                diff_ids,
                size,
                created_at: now,
                last_used: now,
            })
            .map_err(|e| self.store_err(e))?;
        Ok(name)
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

impl Ctx<'_> {
    /// The config's diff_ids, which must match the layers one to one.
    fn diff_ids(&self, config: &[u8], layers: usize) -> Result<Vec<String>> {
        let config: ImageConfiguration = serde_json::from_slice(config)
            .map_err(|e| self.invalid(format!("parse image config: {e}")))?;
        let diffs = config.rootfs().diff_ids().clone();
        if diffs.len() != layers {
            return Err(self.invalid(format!(
                "image config lists {} diff_ids for {layers} layers",
                diffs.len()
            )));
        }
        Ok(diffs)
    }
}

/// Imports one archive; `name` names images whose archive carries only a tag or nothing.
/// Returns the image names recorded.
pub fn import_archive(store: &Store, archive: &Path, name: Option<&str>) -> Result<Vec<String>> {
    let dir = store.tmp_path("import");
    let result = extract(archive, &dir).and_then(|()| {
        let ctx = Ctx {
            store,
            archive,
            dir: dir.clone(),
            done: Default::default(),
        };
        if dir.join("oci-layout").is_file() {
            import_oci(&ctx, name)
        } else if dir.join("manifest.json").is_file() {
            import_docker(&ctx, name)
        } else {
            Err(ctx.invalid(
                "neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
            ))
        }
    });
    store::remove_path(&dir);
    result
}

/// Imports every `*.tar`, `*.tar.gz`, `*.tgz` and `*.tar.zst` file in `dir`, in name order.
pub fn import_dir(store: &Store, dir: &Path) -> Result<Vec<String>> {
    let read = |source| ImportError::Read {
        archive: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            [".tar", ".tar.gz", ".tgz", ".tar.zst"]
                .iter()
                .any(|s| n.ends_with(s))
        })
        .collect();
    files.sort();
    let mut names = Vec::new();
    for f in files {
        names.extend(import_archive(store, &f, None)?);
    }
    Ok(names)
}

/// Extracts a (possibly gzip or zstd compressed) tarball into `dir` with the tar crate's
/// own containment checks (it refuses `..` and absolute paths when unpacking).
fn extract(archive: &Path, dir: &Path) -> Result<()> {
    let read = |source| ImportError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(archive).map_err(read)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(read)?.to_vec();
    let stream: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(read)?)
    } else {
        Box::new(reader)
    };
    std::fs::create_dir_all(dir).map_err(read)?;
    let mut tar = tar::Archive::new(stream);
    tar.set_preserve_permissions(false);
    tar.unpack(dir).map_err(read)
}

fn import_oci(ctx: &Ctx<'_>, name: Option<&str>) -> Result<Vec<String>> {
    let index: ImageIndex = serde_json::from_slice(&ctx.read("index.json")?)
        .map_err(|e| ctx.invalid(format!("index.json: {e}")))?;
    let mut names = Vec::new();
    for desc in index.manifests() {
        let ann = desc.annotations().clone().unwrap_or_default();
        let ref_name = ann
            .get("io.containerd.image.name")
            .or_else(|| ann.get("org.opencontainers.image.ref.name"))
            .cloned();
        let image_name = match (ref_name, name) {
            // A bare tag (skopeo's `oci-archive:file:tag`) needs --name for the repository.
            (Some(r), Some(n)) if !r.contains('/') && !r.contains(':') => {
                let base = ImageRef::parse(n).map_err(|e| ctx.invalid(e.to_string()))?;
                format!("{}/{}:{r}", base.registry(), base.repository())
            }
            (Some(r), _) if r.contains('/') || r.contains(':') => r,
            (_, Some(n)) => n.to_string(),
            _ => {
                return Err(ctx
                    .invalid("the archive does not name its image; pass --name REPOSITORY[:TAG]"));
            }
        };
        let mut digest = desc.digest().to_string();
        let mut bytes = ctx.oci_small_blob(&digest)?;
        if serde_json::from_slice::<ImageIndex>(&bytes).is_ok_and(|i| !i.manifests().is_empty()) {
            let inner: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| ctx.invalid(format!("nested index: {e}")))?;
            let (os, arch) = crate::pull::host_platform();
            let chosen = inner
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == os && p.architecture().to_string() == arch
                    })
                })
                .ok_or_else(|| ctx.invalid(format!("no {os}/{arch} manifest in the archive")))?;
            digest = chosen.digest().to_string();
            bytes = ctx.oci_small_blob(&digest)?;
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| ctx.invalid(format!("manifest {digest}: {e}")))?;
        let config = ctx.oci_small_blob(manifest.config().digest().as_ref())?;
        let diffs = ctx.diff_ids(&config, manifest.layers().len())?;
        let mut layers = Vec::new();
        for (i, l) in manifest.layers().iter().enumerate() {
            let want = l.digest().to_string();
            layers.push(ctx.layer(&ctx.oci_blob_path(&want)?, Some(&want), &diffs[i])?);
        }
        names.push(ctx.finish(&image_name, &bytes, &config, layers, diffs)?);
    }
    Ok(names)
}

fn import_docker(ctx: &Ctx<'_>, name: Option<&str>) -> Result<Vec<String>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(&ctx.read("manifest.json")?)
        .map_err(|e| ctx.invalid(format!("manifest.json: {e}")))?;
    // Resolve every layer path before moving any file: duplicate layers are symlinks to one
    // file, which dangle once that file is in the store.
    let resolved: Vec<Vec<PathBuf>> = entries
        .iter()
        .map(|e| e.layers.iter().map(|rel| ctx.inner(rel)).collect())
        .collect::<Result<_>>()?;
    let mut names = Vec::new();
    for (entry, paths) in entries.into_iter().zip(resolved) {
        let config = ctx.read(&entry.config)?;
        let diffs = ctx.diff_ids(&config, paths.len())?;
        let mut layers = Vec::new();
        let mut descriptors = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let digest = ctx.layer(path, None, &diffs[i])?;
            let size = ctx
                .store
                .blob_path(&digest)
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .unwrap_or(0);
            descriptors.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest, "size": size,
            }));
            layers.push(digest);
        }
        // docker save has no manifest: synthesise the OCI one a registry would have served.
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": store::sha256_digest(&config), "size": config.len(),
            },
            "layers": descriptors,
        }))
        .map_err(|e| ctx.invalid(e.to_string()))?;
        let tags = entry.repo_tags.unwrap_or_default();
        let tags: Vec<String> = if tags.is_empty() {
            vec![
                name.ok_or_else(|| {
                    ctx.invalid("the archive has no RepoTags; pass --name REPOSITORY[:TAG]")
                })?
                .to_string(),
            ]
        } else {
            tags
        };
        for tag in tags {
            names.push(ctx.finish(&tag, &manifest, &config, layers.clone(), diffs.clone())?);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    #[test]
    fn docker_save_archive() {
        let mut layer = tar::Builder::new(Vec::new());
        append(&mut layer, "hello.txt", b"hello");
        let layer = layer.into_inner().expect("layer");
        let diff = store::sha256_digest(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}},"config":{{"Cmd":["/hello"]}}}}"#
        );
        let mut outer = tar::Builder::new(Vec::new());
        append(&mut outer, "cfg.json", config.as_bytes());
        append(&mut outer, "abc/layer.tar", &layer);
        append(
            &mut outer,
            "manifest.json",
            br#"[{"Config":"cfg.json","RepoTags":["hello:1","example.com/hello:2"],"Layers":["abc/layer.tar"]}]"#,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("hello.tar");
        std::fs::write(&archive, outer.into_inner().expect("outer")).expect("write");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let names = import_dir(&store, dir.path()).expect("import");
        assert_eq!(
            names,
            vec!["docker.io/library/hello:1", "example.com/hello:2"]
        );
        let image = store.image(&names[0]).expect("get").expect("record");
        let layer_dir = store.layer_dir(&image.diff_ids[0]).expect("dir");
        assert_eq!(
            std::fs::read(layer_dir.join("hello.txt")).expect("file"),
            b"hello"
        );
        assert_eq!(store.usage().expect("usage").layers, 1);
        assert!(
            std::fs::read_dir(dir.path().join("store/tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).expect("path");
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_link_name(target).expect("link");
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).expect("symlink");
    }

    fn dup_archive(dir: &Path, evil: bool) -> PathBuf {
        let mut layer = tar::Builder::new(Vec::new());
        append(&mut layer, "a.txt", b"a");
        let layer = layer.into_inner().expect("layer");
        let mut outer = tar::Builder::new(Vec::new());
        let d = store::sha256_digest(&layer);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}","{d}","{d}"]}}}}"#
        );
        append(&mut outer, "cfg.json", config.as_bytes());
        append(&mut outer, "one/layer.tar", &layer);
        symlink(&mut outer, "two/layer.tar", "../one/layer.tar");
        let third = if evil {
            symlink(&mut outer, "evil.tar", "/etc/hostname");
            "evil.tar"
        } else {
            "two/layer.tar"
        };
        let manifest = format!(
            r#"[{{"Config":"cfg.json","RepoTags":["dup:1"],"Layers":["one/layer.tar","two/layer.tar","{third}"]}}]"#
        );
        append(&mut outer, "manifest.json", manifest.as_bytes());
        let archive = dir.join(if evil { "evil.tar" } else { "dup.tar" });
        std::fs::write(&archive, outer.into_inner().expect("outer")).expect("write");
        archive
    }

    #[test]
    fn symlinked_duplicate_layers_and_escaping_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let evil = dup_archive(dir.path(), true);
        let err = import_archive(&store, &evil, None).expect_err("escaping link followed");
        assert!(err.to_string().contains("links outside"), "{err}");
        assert!(store.images().expect("images").is_empty());
        let dup = dup_archive(dir.path(), false);
        import_archive(&store, &dup, None).expect("import");
        let image = store
            .image("docker.io/library/dup:1")
            .expect("get")
            .expect("imported");
        assert_eq!(image.layers.len(), 3);
        assert!(image.layers.iter().all(|l| *l == image.layers[0]));
        let blob = store.blob_path(&image.layers[0]).expect("path");
        assert!(std::fs::symlink_metadata(blob).expect("blob").is_file());
    }

    #[test]
    fn garbage_is_refused_and_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("x.tar");
        let mut outer = tar::Builder::new(Vec::new());
        append(&mut outer, "readme", b"nothing");
        std::fs::write(&archive, outer.into_inner().expect("tar")).expect("write");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let err = import_archive(&store, &archive, None).expect_err("refused");
        assert!(err.to_string().contains("docker save"), "{err}");
        assert!(
            std::fs::read_dir(dir.path().join("store/tmp"))
                .expect("tmp")
                .next()
                .is_none()
        );
    }
}
