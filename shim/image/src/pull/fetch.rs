//! The registry side of one pull attempt: manifests and blobs through `oci-client`, streamed to
//! disk while hashed, verified against digest and size, retried with back-off when the failure is
//! transient, and classified into user-facing reasons.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Attempt, FailureKind, Progress, Puller, error_chain};
use crate::registry::{Credentials, Endpoint};
use crate::store;

pub(super) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const ATTEMPTS: u32 = 4;

/// The registry side of one pull attempt.
pub(super) struct Fetch<'a> {
    pub(super) client: &'a Client,
    pub(super) auth: &'a RegistryAuth,
    pub(super) remote: &'a Reference,
    pub(super) endpoint: &'a Endpoint,
}

impl Fetch<'_> {
    /// Fetches a manifest or index, verifying it against `expected` when the digest is known.
    pub(super) async fn manifest(
        &self,
        reference: &Reference,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String), Attempt> {
        let (bytes, _) = retry(|| {
            self.client
                .pull_manifest_raw(reference, self.auth, MANIFEST_TYPES)
        })
        .await
        .map_err(|e| self.classify(&e, &format!("manifest {}", reference.whole())))?;
        let digest = store::sha256_digest(&bytes);
        if let Some(want) = expected
            && want != digest
        {
            return Err(Attempt::new(
                FailureKind::Invalid,
                format!("digest mismatch for manifest: expected {want}, got {digest}"),
            ));
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Fetches a small blob (the config) into memory and verifies it.
    pub(super) async fn small_blob(&self, digest: &str, size: u64) -> Result<Vec<u8>, Attempt> {
        let desc = descriptor(digest, size);
        let mut attempt = 0;
        let out = loop {
            let mut out = Vec::new();
            match self.client.pull_blob(self.remote, &desc, &mut out).await {
                Ok(()) => break out,
                Err(e) if attempt + 1 < ATTEMPTS && transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.classify(&e, &format!("blob {digest}"))),
            }
        };
        verify(digest, size, &out, out.len() as u64)?;
        Ok(out)
    }

    /// Streams a layer blob to `path`, hashing as it goes; verifies digest and size.
    pub(super) async fn blob_to_file(
        &self,
        digest: &str,
        size: u64,
        path: &Path,
        puller: &Puller,
    ) -> Result<(), Attempt> {
        let desc = descriptor(digest, size);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            match self.try_blob_to_file(&desc, path, puller).await {
                Ok((hash, written)) => return verify_hash(digest, size, hash, written),
                Err(BlobError::Registry(e)) if transient(&e) => last = Some(e),
                Err(BlobError::Registry(e)) => {
                    return Err(self.classify(&e, &format!("blob {digest}")));
                }
                Err(BlobError::Stream(e)) if e.to_string().to_lowercase().contains("digest") => {
                    return Err(Attempt::new(
                        FailureKind::Invalid,
                        format!("blob {digest}: digest mismatch: {}", error_chain(&e)),
                    ));
                }
                Err(BlobError::Stream(e)) => {
                    last = Some(OciDistributionError::IoError(e));
                }
                Err(BlobError::Local(e)) => {
                    return Err(Attempt::new(
                        FailureKind::Local,
                        format!("write {}: {e}", path.display()),
                    ));
                }
            }
        }
        let e = last.unwrap_or(OciDistributionError::GenericError(None));
        Err(self.classify(&e, &format!("blob {digest}")))
    }

    async fn try_blob_to_file(
        &self,
        desc: &OciDescriptor,
        path: &Path,
        puller: &Puller,
    ) -> Result<(Vec<u8>, u64), BlobError> {
        let mut stream = self
            .client
            .pull_blob_stream(self.remote, desc)
            .await
            .map_err(BlobError::Registry)?;
        // Created synchronously: an abandoned pull's cleanup (TmpGuard) must never race a
        // create still queued on tokio's blocking pool.
        let file =
            tokio::fs::File::from_std(std::fs::File::create(path).map_err(BlobError::Local)?);
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hash = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(BlobError::Stream)?;
            hash.update(&chunk);
            written += chunk.len() as u64;
            if written > desc.size as u64 {
                break; // longer than announced: fails verification below
            }
            out.write_all(&chunk).await.map_err(BlobError::Local)?;
            puller.report(Progress::Downloaded {
                bytes: chunk.len() as u64,
            });
        }
        out.flush().await.map_err(BlobError::Local)?;
        Ok((hash.finalize().to_vec(), written))
    }

    /// Turns a client error into a user-facing reason naming what to fix.
    fn classify(&self, e: &OciDistributionError, what: &str) -> Attempt {
        let host = &self.endpoint.host;
        let text = error_chain(e);
        let status =
            match e {
                OciDistributionError::UnauthorizedError { .. } => Some(401),
                OciDistributionError::ServerError { code, .. } => Some(*code),
                OciDistributionError::RegistryError { envelope, .. } => envelope
                    .errors
                    .first()
                    .map(|err| match format!("{:?}", err.code).as_str() {
                        "Unauthorized" => 401,
                        "Denied" => 403,
                        "ManifestUnknown" | "NameUnknown" | "BlobUnknown" | "NotFound" => 404,
                        _ => 400,
                    }),
                OciDistributionError::AuthenticationFailure(_) => Some(401),
                OciDistributionError::ImageManifestNotFoundError(_) => Some(404),
                _ => None,
            };
        match (status, e) {
            (Some(401 | 403), _) => Attempt::new(
                FailureKind::Unauthorized,
                format!(
                    "401 unauthorized fetching {what}: the registry refused the credentials; check configs.\"{host}\".auth in the registry config ({})",
                    match self.endpoint.credentials {
                        Credentials::Anonymous => "none are configured",
                        _ => "the configured ones were rejected",
                    }
                ),
            ),
            (Some(404), _) => Attempt::new(
                FailureKind::NotFound,
                format!("{what} not found (unknown image or tag)"),
            ),
            (_, OciDistributionError::DigestError(_)) => Attempt::new(
                FailureKind::Invalid,
                format!("{what}: digest mismatch: {text}"),
            ),
            (_, OciDistributionError::RequestError(_)) if text.contains("certificate") => {
                Attempt::new(
                    FailureKind::Unreachable,
                    format!(
                        "TLS verification of {host} failed: {text}; set configs.\"{host}\".tls.ca_file to the registry's CA (or insecure_skip_verify for testing)"
                    ),
                )
            }
            (_, OciDistributionError::RequestError(r)) if r.is_connect() || r.is_timeout() => {
                Attempt::new(
                    FailureKind::Unreachable,
                    format!(
                        "cannot reach registry ({}): {text}",
                        if self.endpoint.plain_http {
                            "http"
                        } else {
                            "https"
                        }
                    ),
                )
            }
            _ => Attempt::new(FailureKind::Unreachable, format!("{what}: {text}")),
        }
    }
}

enum BlobError {
    Registry(OciDistributionError),
    /// The body broke off (or the client's own digest check failed) mid-stream.
    Stream(std::io::Error),
    Local(std::io::Error),
}

fn descriptor(digest: &str, size: u64) -> OciDescriptor {
    OciDescriptor {
        digest: digest.to_string(),
        size: size as i64,
        ..OciDescriptor::default()
    }
}

pub(super) fn verify(digest: &str, size: u64, bytes: &[u8], written: u64) -> Result<(), Attempt> {
    verify_hash(digest, size, Sha256::digest(bytes).to_vec(), written)
}

fn verify_hash(digest: &str, size: u64, hash: Vec<u8>, written: u64) -> Result<(), Attempt> {
    let actual = format!("sha256:{}", hex::encode(hash));
    if written != size {
        return Err(Attempt::new(
            FailureKind::Invalid,
            format!(
                "blob {digest}: size mismatch: manifest says {size} bytes, registry sent {written}"
            ),
        ));
    }
    if actual != digest {
        return Err(Attempt::new(
            FailureKind::Invalid,
            format!("blob {digest}: digest mismatch: content hashes to {actual}"),
        ));
    }
    Ok(())
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * (1 << attempt.min(5)))
}

/// Network hiccups and 5xx answers are worth another try; 4xx and bad content are not.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            !r.is_status() || r.status().is_some_and(|s| s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 < ATTEMPTS && transient(&e) => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_catches_size_and_digest() {
        let d = store::sha256_digest(b"abc");
        assert!(verify(&d, 3, b"abc", 3).is_ok());
        assert!(verify(&d, 4, b"abc", 3).is_err());
        assert!(
            verify(&d, 3, b"abd", 3)
                .expect_err("mismatch")
                .message
                .contains("digest mismatch")
        );
    }
}
