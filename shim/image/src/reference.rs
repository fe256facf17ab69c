//! Image references, normalised the way Docker does (`nginx:1.14` -> `docker.io/library/nginx:1.14`).

use oci_client::Reference;

/// Why a reference string was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "invalid image reference {input:?}: {reason}; use NAME[:TAG][@sha256:DIGEST], e.g. nginx:1.14"
    )]
    Invalid { input: String, reason: String },
}

/// A parsed, normalised image reference: registry, repository and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses `input`, filling in `docker.io`, `library/` and the `latest` tag like `docker pull`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: String| ReferenceError::Invalid {
            input: input.to_string(),
            reason,
        };
        if input.trim() != input || input.is_empty() {
            return Err(invalid("empty or surrounded by spaces".into()));
        }
        let parsed: Reference = input.parse().map_err(|e| invalid(format!("{e}")))?;
        let mut registry = parsed.registry().to_string();
        // Docker's historical aliases for the Hub all mean docker.io.
        if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            registry = "docker.io".into();
        }
        let mut repository = parsed.repository().to_string();
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase".into()));
        }
        if registry == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        let digest = parsed.digest().map(str::to_string);
        let tag = match (parsed.tag(), &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        if let Some(d) = &digest
            && (!d.starts_with("sha256:") || d.len() != 71)
        {
            return Err(invalid(format!("digest {d} is not a sha256 digest")));
        }
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as written by users (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The tag or digest the registry is asked for (digest wins: it is what the user pinned).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository and tag/digest on another registry host with another path.
    pub(crate) fn to_client_ref(&self, host: &str, repository: &str) -> Reference {
        match &self.digest {
            Some(d) => Reference::with_digest(host.to_string(), repository.to_string(), d.clone()),
            None => Reference::with_tag(
                host.to_string(),
                repository.to_string(),
                self.manifest_ref().to_string(),
            ),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.14", "docker.io/library/nginx:1.14"),
            ("rancher/pause:3.6", "docker.io/rancher/pause:3.6"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            ("hub.test.com/nginx", "hub.test.com/nginx:latest"),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
            ("localhost/x", "localhost/x:latest"),
        ];
        for (input, want) in cases {
            let r = ImageRef::parse(input).expect(input);
            assert_eq!(r.to_string(), want, "{input}");
        }
    }

    #[test]
    fn digests_are_kept() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).expect("parse");
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_ref(), d);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", " nginx", "UPPER/case", "a@sha256:zz", "nginx:"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
