//! The content store on disk: blobs by digest, one unpacked directory per layer, image records
//! and container leases, all under one root directory.
//!
//! Layout (every write goes to `tmp/` first and is renamed into place, so a crash or a failed
//! pull never leaves a half-written blob or layer under its final name):
//! ```text
//! <root>/blobs/sha256/<hex>            manifests, configs and layer blobs, verified
//! <root>/layers/sha256-<hex>/          a layer unpacked once, named by its diff_id (the sha256
//!                                      of the uncompressed tar, so gzip, zstd and plain copies
//!                                      of the same content share it)
//! <root>/layers/sha256-<hex>.json      its source blob and disk usage
//! <root>/images/<sha256(name)>.json    name -> manifest, config, layers, last use
//! <root>/containers/<id>/              lease.json, upper/, work/, rootfs/ (see rootfs.rs)
//! <root>/tmp/                          partial downloads and unpacks
//! <root>/lock                          flock taken for every metadata change
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lock image store {path}: {errno}")]
    Lock { path: PathBuf, errno: nix::Error },
    #[error("{digest:?} is not a sha256 digest (want sha256:<64 hex>)")]
    BadDigest { digest: String },
    #[error("corrupt store record {path}: {message}; remove it and pull the image again")]
    Record { path: PathBuf, message: String },
    #[error("image {name} is not in the store; pull or import it first")]
    NoImage { name: String },
    #[error("image {name} is used by container(s) {containers}; delete them first")]
    InUse { name: String, containers: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// What the store knows about one image name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Normalised reference, e.g. `docker.io/library/nginx:1.14`.
    pub name: String,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Digest of the index the manifest was chosen from, if the reference named an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub config_digest: String,
    /// Layer blob digests as the manifest lists them, bottom layer first.
    pub layers: Vec<String>,
    /// The layers' diff_ids (keys of the unpacked layer directories), bottom layer first.
    pub diff_ids: Vec<String>,
    /// Sum of the compressed blob sizes (what a registry would report).
    pub size: u64,
    /// Seconds since the epoch.
    pub created_at: u64,
    pub last_used: u64,
}

/// What the store knows about one unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry): the layer's key.
    pub diff_id: String,
    /// The blob it was first unpacked from.
    pub blob_digest: String,
    /// Bytes the unpacked directory takes on disk.
    pub disk_usage: u64,
}

/// A container's claim on an image's layers (written by `rootfs::mount`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub container_id: String,
    pub image: String,
    pub layers: Vec<String>,
    /// Where the overlay is mounted (unmounted on delete).
    pub mountpoint: PathBuf,
}

/// Disk usage of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub images: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    pub layers: usize,
    pub layer_bytes: u64,
}

/// The content store. Cheap to share behind an `Arc`; safe to use from several processes
/// (metadata changes take `<root>/lock`).
pub struct Store {
    root: PathBuf,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while metadata changes; released on drop.
pub struct StoreLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Returns the hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(StoreError::BadDigest {
            digest: digest.to_string(),
        }),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Store {
    /// Opens (creating if needed) the store at `root` and removes stale temporary files.
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["blobs/sha256", "layers", "images", "containers", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        let store = Self {
            root: root.to_path_buf(),
            inflight: Mutex::new(HashMap::new()),
        };
        store.clean_tmp(Duration::from_secs(3600));
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store's metadata lock (blocking; held only for short metadata updates).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| StoreError::Lock { path, errno })?;
        Ok(StoreLock(flock))
    }

    /// Serialises work on one digest inside this process (dedupes concurrent downloads).
    pub(crate) fn digest_guard(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(digest.to_string()).or_default().clone()
    }

    /// Forgets a digest's guard once nobody else holds it (keeps the map from growing).
    pub(crate) fn release_guard(&self, digest: &str, guard: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else is waiting on this digest.
        if Arc::strong_count(&guard) == 2 {
            map.remove(digest);
        }
    }

    /// Removes temporary entries older than `age` (a crashed pull's leftovers).
    pub fn clean_tmp(&self, age: Duration) {
        let dir = self.root.join("tmp");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|e| e >= age);
            if old {
                remove_path(&entry.path());
            }
        }
    }

    /// A fresh, unused path under `tmp/`.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n: u64 = rand::random();
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n:016x}", std::process::id()))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Moves a verified temporary file to its digest's name.
    pub fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<PathBuf> {
        let dest = self.blob_path(digest)?;
        std::fs::rename(tmp, &dest).map_err(io_err("store blob", &dest))?;
        Ok(dest)
    }

    /// Verifies `bytes` against `expected` (if given) and stores them; returns the digest.
    pub fn write_blob(&self, bytes: &[u8], expected: Option<&str>, what: &str) -> Result<String> {
        let digest = sha256_digest(bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(StoreError::Digest {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
        if !self.has_blob(&digest) {
            let tmp = self.tmp_path("blob");
            std::fs::write(&tmp, bytes).map_err(io_err("write blob", &tmp))?;
            if let Err(e) = self.commit_blob(&tmp, &digest) {
                remove_path(&tmp);
                return Err(e);
            }
        }
        Ok(digest)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        std::fs::read(&path).map_err(io_err("read blob", &path))
    }

    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("layers")
            .join(format!("sha256-{}", digest_hex(digest)?)))
    }

    fn layer_record_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("layers")
            .join(format!("sha256-{}.json", digest_hex(digest)?)))
    }

    /// The record of the layer with this diff_id, if it is unpacked.
    pub fn layer(&self, digest: &str) -> Result<Option<LayerRecord>> {
        let path = self.layer_record_path(digest)?;
        if !path.is_file() || !self.layer_dir(digest)?.is_dir() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Moves an unpacked temporary directory into place (keeps an existing one).
    pub fn commit_layer(&self, tmp_dir: &Path, record: &LayerRecord) -> Result<()> {
        let dest = self.layer_dir(&record.diff_id)?;
        let _lock = self.lock()?;
        if dest.is_dir() {
            remove_path(tmp_dir);
        } else {
            std::fs::rename(tmp_dir, &dest).map_err(io_err("store layer", &dest))?;
        }
        write_json(&self.layer_record_path(&record.diff_id)?, record, self)
    }

    fn image_path(&self, name: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(name.as_bytes()));
        self.root.join("images").join(format!("{key}.json"))
    }

    /// Records `image` under its name (replacing an older record) while holding the lock.
    /// Fails if a layer or blob it needs vanished (a concurrent prune): pull again.
    pub fn put_image(&self, image: &ImageRecord) -> Result<()> {
        let _lock = self.lock()?;
        for digest in [&image.manifest_digest, &image.config_digest] {
            if !self.has_blob(digest) {
                return Err(StoreError::NoImage {
                    name: format!("{} (blob {digest} was removed meanwhile)", image.name),
                });
            }
        }
        for layer in &image.diff_ids {
            if self.layer(layer)?.is_none() {
                return Err(StoreError::NoImage {
                    name: format!("{} (layer {layer} was removed meanwhile)", image.name),
                });
            }
        }
        write_json(&self.image_path(&image.name), image, self)
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let path = self.image_path(name);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Every image record, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images");
        let mut out: Vec<ImageRecord> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("list images", &dir))? {
            let entry = entry.map_err(io_err("list images", &dir))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(read_json(&path)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Marks `name` as used now (GC removes the least recently used first).
    pub fn touch_image(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        if let Some(mut image) = self.image(name)? {
            image.last_used = now();
            write_json(&self.image_path(name), &image, self)?;
        }
        Ok(())
    }

    /// `touch_image` for a caller that holds the lock and the record; skips the write when the
    /// recorded use is under a minute old (GC ordering needs no finer grain).
    pub(crate) fn touch_image_locked(&self, image: &ImageRecord) -> Result<()> {
        let now = now();
        if now.saturating_sub(image.last_used) < 60 {
            return Ok(());
        }
        let mut image = image.clone();
        image.last_used = now;
        write_json(&self.image_path(&image.name), &image, self)
    }

    /// Forgets the image name (its blobs and layers go at the next prune); refuses while a
    /// container uses it.
    pub fn remove_image(&self, name: &str) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let image = self.image(name)?.ok_or_else(|| StoreError::NoImage {
            name: name.to_string(),
        })?;
        let users: Vec<String> = self
            .leases()?
            .into_iter()
            .filter(|l| l.image == image.name)
            .map(|l| l.container_id)
            .collect();
        if !users.is_empty() {
            return Err(StoreError::InUse {
                name: image.name,
                containers: users.join(", "),
            });
        }
        let path = self.image_path(name);
        std::fs::remove_file(&path).map_err(io_err("remove image record", &path))?;
        Ok(image)
    }

    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Every container lease.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let dir = self.root.join("containers");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("list containers", &dir))? {
            let entry = entry.map_err(io_err("list containers", &dir))?;
            let path = entry.path().join("lease.json");
            if path.is_file() {
                out.push(read_json(&path)?);
            }
        }
        Ok(out)
    }

    /// Removes blobs and layers that no image record and no container lease refers to.
    /// Returns the bytes freed.
    pub fn remove_unreferenced(&self) -> Result<u64> {
        let _lock = self.lock()?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for image in self.images()? {
            blobs.insert(image.manifest_digest.clone());
            blobs.insert(image.config_digest.clone());
            blobs.extend(image.index_digest.clone());
            blobs.extend(image.layers);
            layers.extend(image.diff_ids);
        }
        for lease in self.leases()? {
            layers.extend(lease.layers);
        }
        let mut freed = 0;
        let blob_dir = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blob_dir).map_err(io_err("list blobs", &blob_dir))? {
            let entry = entry.map_err(io_err("list blobs", &blob_dir))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !blobs.contains(&digest) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                remove_path(&entry.path());
            }
        }
        let layer_dir = self.root.join("layers");
        let mut doomed = BTreeSet::new();
        for entry in std::fs::read_dir(&layer_dir).map_err(io_err("list layers", &layer_dir))? {
            let entry = entry.map_err(io_err("list layers", &layer_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_prefix("sha256-") {
                let digest = format!("sha256:{}", hex.trim_end_matches(".json"));
                if !layers.contains(&digest) {
                    doomed.insert(digest);
                }
            }
        }
        for digest in doomed {
            // Read the record before removing it: it holds the size.
            if let Ok(Some(rec)) = self.layer(&digest) {
                freed += rec.disk_usage;
            }
            remove_path(&self.layer_dir(&digest)?);
            remove_path(&self.layer_record_path(&digest)?);
        }
        Ok(freed)
    }

    /// Counts and sizes everything in the store.
    pub fn usage(&self) -> Result<Usage> {
        let mut usage = Usage {
            images: self.images()?.len(),
            ..Usage::default()
        };
        let blob_dir = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blob_dir).map_err(io_err("list blobs", &blob_dir))? {
            let entry = entry.map_err(io_err("list blobs", &blob_dir))?;
            usage.blobs += 1;
            usage.blob_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        let layer_dir = self.root.join("layers");
        for entry in std::fs::read_dir(&layer_dir).map_err(io_err("list layers", &layer_dir))? {
            let entry = entry.map_err(io_err("list layers", &layer_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name
                .strip_prefix("sha256-")
                .filter(|n| !n.ends_with(".json"))
                && let Ok(Some(rec)) = self.layer(&format!("sha256:{hex}"))
            {
                usage.layers += 1;
                usage.layer_bytes += rec.disk_usage;
            }
        }
        Ok(usage)
    }
}

/// Removes a file or a directory tree, ignoring errors (used for cleanup paths only).
pub(crate) fn remove_path(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_err("read record", path))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `value` as JSON atomically (temporary file + rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T, store: &Store) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tmp = store.tmp_path("record");
    std::fs::write(&tmp, bytes).map_err(io_err("write record", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        remove_path(&tmp);
        io_err("write record", path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, layers: &[&str], store: &Store) -> ImageRecord {
        let manifest = store
            .write_blob(name.as_bytes(), None, "manifest")
            .expect("manifest");
        let config = store
            .write_blob(format!("{name}-config").as_bytes(), None, "config")
            .expect("config");
        ImageRecord {
            name: name.into(),
            manifest_digest: manifest,
            index_digest: None,
            config_digest: config,
            layers: layers.iter().map(|s| s.to_string()).collect(),
            diff_ids: layers.iter().map(|s| s.to_string()).collect(),
            size: 0,
            created_at: 1,
            last_used: 1,
        }
    }

    fn fake_layer(store: &Store, content: &str) -> String {
        let digest = store
            .write_blob(content.as_bytes(), None, "layer")
            .expect("blob");
        let tmp = store.tmp_path("layer");
        std::fs::create_dir_all(tmp.join("etc")).expect("mkdir");
        store
            .commit_layer(
                &tmp,
                &LayerRecord {
                    blob_digest: digest.clone(),
                    diff_id: digest.clone(),
                    disk_usage: 4096,
                },
            )
            .expect("commit");
        digest
    }

    #[test]
    fn images_share_layers_and_prune_keeps_used_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let l1 = fake_layer(&store, "one");
        let l2 = fake_layer(&store, "two");
        store
            .put_image(&image("a:1", &[&l1, &l2], &store))
            .expect("put");
        store.put_image(&image("a:2", &[&l1], &store)).expect("put");
        assert_eq!(store.usage().expect("usage").layers, 2);
        store.remove_image("a:1").expect("rm");
        assert!(store.remove_unreferenced().expect("prune") >= 4096);
        assert!(store.layer(&l1).expect("l1").is_some());
        assert!(store.layer(&l2).expect("l2").is_none());
        assert!(!store.has_blob(&l2));
        assert_eq!(store.images().expect("images").len(), 1);
        assert!(matches!(
            store.remove_image("nope"),
            Err(StoreError::NoImage { .. })
        ));
    }

    #[test]
    fn write_blob_checks_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let want = sha256_digest(b"x");
        assert!(store.write_blob(b"y", Some(&want), "config").is_err());
        assert!(!store.has_blob(&want));
        assert_eq!(
            store.write_blob(b"x", Some(&want), "config").expect("ok"),
            want
        );
        assert!(digest_hex("sha256:../../etc").is_err());
    }
}
