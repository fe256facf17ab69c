//! Images for pods: `imagePullPolicy`, pulls through keel-image's store and registries
//! configuration (k3s `registries.yaml`, `--registry-config`), imagePullSecrets layered on top,
//! and the failure reasons kubelet shows (ErrImagePull, ErrImageNeverPull, InvalidImageName).

use keel_image::pull::{FailureKind, Puller};
use keel_image::reference::ImageRef;
use keel_image::registry::{AuthConfig, RegistriesConfig};
use keel_image::store::{ImageRecord, Store};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("opening the image store {path}: {message}")]
    Store { path: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// A failed pull, as the container's waiting state shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PullFailure {
    /// ErrImagePull, ErrImageNeverPull or InvalidImageName.
    pub reason: &'static str,
    pub message: String,
}

/// Credentials from an imagePullSecret for one registry host.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryAuth {
    pub registry: String,
    pub username: String,
    pub password: String,
}

pub struct Images {
    pub store: Arc<Store>,
    base: RegistriesConfig,
    puller: Puller,
}

/// The policy kubelet applies when the pod does not say: Always for `:latest` or no tag.
pub fn effective_policy(image: &str, policy: Option<&str>) -> String {
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
        "IfNotPresent".into()
    } else {
        "Always".into()
    }
}

impl Images {
    pub fn open(root: &Path, registry_config: Option<&Path>) -> Result<Images, ImagesError> {
        let store = Store::open(root).map_err(|e| ImagesError::Store {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        let base = match registry_config {
            Some(p) => RegistriesConfig::load(p).map_err(|e| ImagesError::Config(e.to_string()))?,
            None => RegistriesConfig::default(),
        };
        let store = Arc::new(store);
        Ok(Images {
            puller: Puller::new(store.clone(), base.clone()),
            store,
            base,
        })
    }

    /// The store's name for `image` (`docker.io/library/nginx:1.14`).
    pub fn normalize(image: &str) -> Result<String, PullFailure> {
        ImageRef::parse(image)
            .map(|r| r.to_string())
            .map_err(|e| PullFailure {
                reason: "InvalidImageName",
                message: format!("Failed to apply default image tag {image:?}: {e}"),
            })
    }

    pub fn present(&self, name: &str) -> Option<ImageRecord> {
        self.store.image(name).ok().flatten()
    }

    /// Makes `image` present per `policy`; returns its record and whether a pull happened.
    pub async fn ensure(
        &self,
        image: &str,
        policy: &str,
        auths: &[RegistryAuth],
    ) -> Result<(ImageRecord, bool), PullFailure> {
        let name = Self::normalize(image)?;
        if policy != "Always" {
            if let Some(rec) = self.present(&name) {
                return Ok((rec, false));
            }
            if policy == "Never" {
                return Err(PullFailure {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image {image:?} is not present with pull policy of Never"
                    ),
                });
            }
        }
        let result = if auths.is_empty() {
            self.puller.pull(image).await
        } else {
            let mut config = self.base.clone();
            for a in auths {
                let host = config.configs.entry(a.registry.clone()).or_default();
                host.auth = Some(AuthConfig {
                    username: Some(a.username.clone()),
                    password: Some(a.password.clone()),
                    ..Default::default()
                });
            }
            Puller::new(self.store.clone(), config).pull(image).await
        };
        result.map(|r| (r, true)).map_err(|e| {
            let why = match e.kind() {
                FailureKind::NotFound => "not found",
                FailureKind::Unauthorized => "unauthorized: authentication required",
                FailureKind::Unreachable => "registry unreachable",
                FailureKind::Invalid => "invalid image",
                FailureKind::Local => "local store error",
            };
            PullFailure {
                reason: "ErrImagePull",
                message: format!("failed to pull and unpack image {name:?} ({why}): {e}"),
            }
        })
    }

    /// The image's OCI configuration.
    pub fn configuration(
        &self,
        rec: &ImageRecord,
    ) -> Result<oci_spec::image::ImageConfiguration, String> {
        let bytes = self
            .store
            .read_blob(&rec.config_digest)
            .map_err(|e| format!("reading image config of {}: {e}", rec.name))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("image config of {}: {e}", rec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_kubelet() {
        for (image, policy, want) in [
            ("nginx", None, "Always"),
            ("nginx:latest", None, "Always"),
            ("nginx:1.14", None, "IfNotPresent"),
            ("localhost:5000/nginx", None, "Always"),
            ("localhost:5000/nginx:1.0", None, "IfNotPresent"),
            ("nginx@sha256:abc", None, "IfNotPresent"),
            ("nginx", Some("Never"), "Never"),
        ] {
            assert_eq!(effective_policy(image, policy), want, "{image}");
        }
    }
}
