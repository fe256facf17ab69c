//! Pulling an image: resolve the reference through the configured endpoints, pick the host
//! platform from an index, fetch and verify every blob (digest and size), unpack each layer once,
//! then record the image. Built on the `oci-client` crate for the distribution protocol and auth.

mod fetch;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use fetch::Fetch;

use crate::reference::ImageRef;
use crate::registry::{ConfigError, Credentials, Endpoint, RegistriesConfig};
use crate::store::{self, ImageRecord, LayerRecord, Store, StoreError};
use crate::unpack::UnpackError;

/// What kind of failure a pull hit (the agent maps these to pod reasons later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    NotFound,
    Unauthorized,
    Unreachable,
    /// Digest or size mismatch, bad manifest, unsafe layer.
    Invalid,
    /// The local store or disk failed.
    Local,
}

/// Why a pull failed. The message names the image and every endpoint tried.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("pull {image}: {}", attempts.iter().map(|a| format!("{}: {}", a.0, a.1)).collect::<Vec<_>>().join("; "))]
    Failed {
        image: String,
        kind: FailureKind,
        /// (endpoint, reason) for each endpoint tried, in order.
        attempts: Vec<(String, String)>,
    },
}

impl PullError {
    /// The most telling kind among the endpoints' failures (anything but Unreachable wins).
    pub fn kind(&self) -> FailureKind {
        match self {
            PullError::Config(_) => FailureKind::Local,
            PullError::Failed { kind, .. } => *kind,
        }
    }
}

/// One endpoint's failure.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

impl Attempt {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        let kind = match e {
            StoreError::Digest { .. } => FailureKind::Invalid,
            _ => FailureKind::Local,
        };
        Attempt::new(kind, error_chain(&e))
    }
}

/// Progress reported during a pull.
#[derive(Debug, Clone)]
pub enum Progress {
    Resolved {
        image: String,
        endpoint: String,
        layers: usize,
        bytes: u64,
    },
    /// `bytes` more bytes of layer data arrived.
    Downloaded {
        bytes: u64,
    },
    LayerReady {
        digest: String,
        cached: bool,
    },
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Pulls images into a [`Store`]. Create one per registry configuration and share it.
pub struct Puller {
    store: Arc<Store>,
    config: RegistriesConfig,
    concurrency: usize,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    progress: Option<ProgressFn>,
}

impl Puller {
    pub fn new(store: Arc<Store>, config: RegistriesConfig) -> Self {
        // reqwest uses the process-wide rustls provider; install ring once (an error only means
        // another part of the process installed one first).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            store,
            config,
            concurrency: 4,
            clients: Mutex::new(HashMap::new()),
            progress: None,
        }
    }

    /// Maximum layers downloaded and unpacked at once (default 4).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub fn with_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    pub(super) fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }

    /// Pulls `reference` (any Docker-style reference) and returns its store record.
    pub async fn pull(&self, reference: &str) -> Result<ImageRecord, PullError> {
        let image = ImageRef::parse(reference).map_err(|e| PullError::Failed {
            image: reference.to_string(),
            kind: FailureKind::Invalid,
            attempts: vec![("reference".into(), e.to_string())],
        })?;
        let endpoints = self.config.endpoints(&image)?;
        let mut attempts = Vec::new();
        let mut kind = None;
        for endpoint in &endpoints {
            match self.pull_from(&image, endpoint).await {
                Ok(record) => return Ok(record),
                Err(a) => {
                    tracing::warn!(image = %image, endpoint = %endpoint.host, error = %a.message, "pull attempt failed");
                    // The first answer that is not "unreachable" says most: a mirror's 404 or
                    // 401 matters more than an unreachable upstream tried after it.
                    if kind.is_none_or(|k| k == FailureKind::Unreachable) {
                        kind = Some(a.kind);
                    }
                    attempts.push((endpoint.host.clone(), a.message));
                }
            }
        }
        let kind = kind.unwrap_or(FailureKind::Unreachable);
        Err(PullError::Failed {
            image: image.to_string(),
            kind,
            attempts,
        })
    }

    fn client(&self, endpoint: &Endpoint) -> Result<Arc<Client>, Attempt> {
        let key = format!(
            "{}|{}|{}",
            endpoint.host, endpoint.plain_http, endpoint.insecure_skip_verify
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.insecure_skip_verify,
            extra_root_certificates: endpoint
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            max_concurrent_download: self.concurrency,
            user_agent: concat!("keel/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Arc::new(Client::new(config));
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn pull_from(&self, image: &ImageRef, ep: &Endpoint) -> Result<ImageRecord, Attempt> {
        let client = self.client(ep)?;
        let auth = match &ep.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        };
        let remote = image.to_client_ref(&ep.host, &ep.repository);
        let fetch = Fetch {
            client: &client,
            auth: &auth,
            remote: &remote,
            endpoint: ep,
        };

        let (bytes, digest) = fetch.manifest(&remote, image.digest()).await?;
        let (manifest_bytes, manifest_digest, index_digest) = if is_index(&bytes) {
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| Attempt::new(FailureKind::Invalid, format!("parse index: {e}")))?;
            let chosen =
                choose_platform(&index).map_err(|m| Attempt::new(FailureKind::NotFound, m))?;
            let by_digest = remote.clone_with_digest(chosen.clone());
            let (m, d) = fetch.manifest(&by_digest, Some(&chosen)).await?;
            (m, d, Some((bytes, digest)))
        } else {
            (bytes, digest, None)
        };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            Attempt::new(
                FailureKind::Invalid,
                format!(
                    "parse manifest {manifest_digest}: {e} (schema 1 manifests are not supported)"
                ),
            )
        })?;

        let config_desc = manifest.config();
        let config_bytes = fetch
            .small_blob(config_desc.digest().as_ref(), config_desc.size())
            .await?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| Attempt::new(FailureKind::Invalid, format!("parse image config: {e}")))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        let layers: Vec<(String, u64)> = manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size()))
            .collect();
        if diff_ids.len() != layers.len() {
            return Err(Attempt::new(
                FailureKind::Invalid,
                format!(
                    "image config lists {} diff_ids for {} layers in manifest {manifest_digest}",
                    diff_ids.len(),
                    layers.len()
                ),
            ));
        }
        let total: u64 = layers.iter().map(|l| l.1).sum();
        self.report(Progress::Resolved {
            image: image.to_string(),
            endpoint: ep.host.clone(),
            layers: layers.len(),
            bytes: total,
        });

        // One task per distinct layer (an image may repeat a layer), bounded concurrency.
        let mut seen = BTreeSet::new();
        let jobs: Vec<(String, u64, String)> = layers
            .iter()
            .zip(&diff_ids)
            .filter(|(_, diff)| seen.insert(diff.to_string()))
            .map(|((d, s), diff)| (d.clone(), *s, diff.clone()))
            .collect();
        // Every started layer runs to its end even when another fails: nothing keeps working
        // in the background after `pull` returns, and the good layers are kept for the retry.
        let results: Vec<Result<(), Attempt>> =
            futures_util::stream::iter(jobs.into_iter().map(|(d, s, diff)| {
                let fetch = &fetch;
                async move { self.ensure_layer(fetch, &d, s, &diff).await }
            }))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, Attempt>>()?;

        // Layers are in place: record the metadata blobs and the name.
        if let Some((bytes, digest)) = &index_digest {
            self.store.write_blob(bytes, Some(digest), "image index")?;
        }
        self.store
            .write_blob(&manifest_bytes, Some(&manifest_digest), "manifest")?;
        let config_digest = self.store.write_blob(
            &config_bytes,
            Some(config_desc.digest().as_ref()),
            "image config",
        )?;
        let now = store::now();
        let record = ImageRecord {
            name: image.to_string(),
            manifest_digest,
            index_digest: index_digest.map(|(_, d)| d),
            config_digest,
            layers: layers.into_iter().map(|l| l.0).collect(),
            diff_ids,
            size: total + config_bytes.len() as u64,
            created_at: now,
            last_used: now,
        };
        self.store.put_image(&record)?;
        Ok(record)
    }

    /// Makes sure the layer `diff_id` is unpacked in the store, downloading blob `digest` if
    /// needed (not when the same content is already unpacked from another blob).
    async fn ensure_layer(
        &self,
        fetch: &Fetch<'_>,
        digest: &str,
        size: u64,
        diff_id: &str,
    ) -> Result<(), Attempt> {
        store::digest_hex(diff_id)
            .map_err(|e| Attempt::new(FailureKind::Invalid, e.to_string()))?;
        let lock = self.store.digest_guard(diff_id);
        let result = {
            let _held = lock.lock().await;
            self.ensure_layer_locked(fetch, digest, size, diff_id).await
        };
        self.store.release_guard(diff_id, lock);
        result
    }

    async fn ensure_layer_locked(
        &self,
        fetch: &Fetch<'_>,
        digest: &str,
        size: u64,
        diff_id: &str,
    ) -> Result<(), Attempt> {
        if self.store.layer(diff_id)?.is_some() {
            self.report(Progress::LayerReady {
                digest: digest.to_string(),
                cached: true,
            });
            return Ok(());
        }
        let have_blob = self.store.has_blob(digest);
        // A download is removed if this future is dropped (another layer failed and the pull
        // was abandoned) or the unpack fails; after a successful commit it is already renamed.
        let (blob, guard) = if have_blob {
            (self.store.blob_path(digest)?, None)
        } else {
            let guard = TmpGuard(self.store.tmp_path("download"));
            fetch.blob_to_file(digest, size, &guard.0, self).await?;
            (guard.0.clone(), Some(guard))
        };
        let store = self.store.clone();
        let (digest_s, diff_s) = (digest.to_string(), diff_id.to_string());
        let result = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            unpack_and_commit(&store, &blob, &digest_s, &diff_s, !have_blob)
        })
        .await
        .map_err(|e| Attempt::new(FailureKind::Local, format!("unpack task: {e}")))?;
        result?;
        self.report(Progress::LayerReady {
            digest: digest.to_string(),
            cached: false,
        });
        Ok(())
    }
}

/// Unpacks `blob` (whose digest is `digest`) into a temporary directory, checks that its
/// uncompressed digest is `diff_id`, then moves the layer (and the blob, when `blob` is a fresh
/// download) into place. Nothing is left behind on failure.
pub(crate) fn unpack_and_commit(
    store: &Store,
    blob: &Path,
    digest: &str,
    diff_id: &str,
    commit_blob: bool,
) -> Result<(), Attempt> {
    let tmp_dir = store.tmp_path("layer");
    let unpacked = match crate::unpack::unpack_layer(blob, &tmp_dir) {
        Ok(u) => u,
        Err(e) => {
            store::remove_path(&tmp_dir);
            let kind = match e {
                UnpackError::Unsafe { .. } | UnpackError::Archive { .. } => FailureKind::Invalid,
                _ => FailureKind::Local,
            };
            return Err(Attempt::new(
                kind,
                format!("layer {digest}: {}", error_chain(&e)),
            ));
        }
    };
    if diff_id != unpacked.diff_id {
        store::remove_path(&tmp_dir);
        return Err(Attempt::new(
            FailureKind::Invalid,
            format!(
                "layer {digest}: uncompressed digest {} does not match the config's diff_id {diff_id}",
                unpacked.diff_id
            ),
        ));
    }
    if commit_blob && let Err(e) = store.commit_blob(blob, digest) {
        store::remove_path(&tmp_dir);
        return Err(e.into());
    }
    store
        .commit_layer(
            &tmp_dir,
            &LayerRecord {
                blob_digest: digest.to_string(),
                diff_id: unpacked.diff_id,
                disk_usage: unpacked.disk_usage,
            },
        )
        .map_err(|e| {
            store::remove_path(&tmp_dir);
            Attempt::from(e)
        })
}

/// Removes a temporary path when dropped.
struct TmpGuard(std::path::PathBuf);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        store::remove_path(&self.0);
    }
}

/// `e` and its sources, joined with ": ".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn is_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) => {
            p.manifests.is_some()
                || p.media_type
                    .is_some_and(|m| m.contains("index") || m.contains("manifest.list"))
        }
        Err(_) => false,
    }
}

/// The host's platform in OCI terms (`linux`, `amd64`/`arm64`/...).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// Picks the manifest for the host platform from an index.
fn choose_platform(index: &ImageIndex) -> Result<String, String> {
    let (os, arch) = host_platform();
    let mut offered = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (pos, parch) = (p.os().to_string(), p.architecture().to_string());
        if pos == os && parch == arch {
            return Ok(m.digest().to_string());
        }
        offered.push(format!("{pos}/{parch}"));
    }
    Err(format!(
        "no manifest for {os}/{arch} in the image index (it offers {})",
        if offered.is_empty() {
            "none".to_string()
        } else {
            offered.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_host_platform() {
        let (os, arch) = host_platform();
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d1}","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d2}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"}}}}]}}"#
        );
        assert!(is_index(json.as_bytes()));
        let index: ImageIndex = serde_json::from_str(&json).expect("index");
        assert_eq!(choose_platform(&index).expect("choice"), d2);
        let only_s390: ImageIndex =
            serde_json::from_str(&json.replace(arch, "mips")).expect("index");
        let err = choose_platform(&only_s390).expect_err("no match");
        assert!(err.contains("linux/s390x"), "{err}");
    }
}
