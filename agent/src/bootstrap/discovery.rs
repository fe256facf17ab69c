//! kubeadm token discovery: the `cluster-info` ConfigMap in `kube-public` is read without
//! trusting TLS, its detached HS256 JWS (`jws-kubeconfig-<token-id>`) is checked with the whole
//! token as key, and the CA it names is pinned by the SHA-256 of its SubjectPublicKeyInfo
//! (kubernetes/website bootstrap-tokens.md; kubeadm_join.md `--discovery-token-ca-cert-hash`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What discovery found out, each case carrying what the user message needs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiscoveryError {
    #[error("cluster-info has no signature for token id {id}")]
    NoSignature { id: String },
    #[error("the cluster-info signature for token id {id} does not verify with this token")]
    BadSignature { id: String },
    #[error("the cluster-info signature uses {alg}, expected HS256")]
    Algorithm { alg: String },
    #[error("cluster-info is malformed: {detail}")]
    Malformed { detail: String },
    #[error("CA hash mismatch")]
    CaHash {
        expected: Vec<String>,
        actual: String,
    },
    #[error("bad --discovery-token-ca-cert-hash {value}: {detail}")]
    PinFormat { value: String, detail: String },
    #[error(
        "the cluster CA is valid from {not_before} to {not_after}, but this machine's clock says {now}"
    )]
    Clock {
        not_before: String,
        not_after: String,
        now: String,
    },
}

/// The trusted result of discovery.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The API server URL published in cluster-info.
    pub server: String,
    pub ca_pem: String,
    pub ca_der: Vec<Vec<u8>>,
}

/// Checks a `sha256:<64 hex>` pin and returns it lowercased.
pub fn parse_pin(value: &str) -> Result<String, DiscoveryError> {
    let err = |detail: &str| DiscoveryError::PinFormat {
        value: value.into(),
        detail: detail.into(),
    };
    let hex_part = value
        .strip_prefix("sha256:")
        .ok_or_else(|| err("it must start with sha256:"))?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("expected 64 hex digits after sha256:"));
    }
    Ok(format!("sha256:{}", hex_part.to_lowercase()))
}

/// Verifies the detached JWS `header..signature` over `payload` with `token` (RFC 7515 §F).
pub fn verify_jws(jws: &str, payload: &[u8], token: &str) -> Result<(), DiscoveryError> {
    let id = token.split('.').next().unwrap_or_default().to_string();
    let malformed = |detail: &str| DiscoveryError::Malformed {
        detail: format!("jws-kubeconfig-{id}: {detail}"),
    };
    let mut parts = jws.trim().split('.');
    let (header, body, sig) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(b), Some(s), None) => (h, b, s),
        _ => return Err(malformed("expected header..signature")),
    };
    if !body.is_empty() {
        return Err(malformed("the payload must be detached"));
    }
    let header_json: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| malformed("the header is not base64url JSON"))?;
    let alg = header_json["alg"].as_str().unwrap_or_default();
    if alg != "HS256" {
        return Err(DiscoveryError::Algorithm { alg: alg.into() });
    }
    if let Some(kid) = header_json["kid"].as_str()
        && kid != id
    {
        return Err(DiscoveryError::BadSignature { id });
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| malformed("the signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .map_err(|_| malformed("unusable token"))?;
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(URL_SAFE_NO_PAD.encode(payload).as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&sig)
        .map_err(|_| DiscoveryError::BadSignature { id })
}

/// `sha256:<hex>` over the SubjectPublicKeyInfo of a DER certificate.
pub fn spki_hash(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.public_key().raw))
    ))
}

/// Parses the (already verified) cluster-info kubeconfig, pins the CA and checks the clock.
pub fn trust(kubeconfig: &str, pins: &[String]) -> Result<Cluster, DiscoveryError> {
    let malformed = |detail: &str| DiscoveryError::Malformed {
        detail: detail.into(),
    };
    let v: serde_yaml::Value =
        serde_yaml::from_str(kubeconfig).map_err(|_| malformed("kubeconfig is not YAML"))?;
    let cluster = &v["clusters"][0]["cluster"];
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| malformed("kubeconfig has no server"))?
        .to_string();
    let ca_pem = cluster["certificate-authority-data"]
        .as_str()
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| malformed("kubeconfig has no certificate-authority-data"))?;
    let ca_der: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .filter_map(|c| c.ok().map(|c| c.to_vec()))
        .collect();
    let first = ca_der
        .first()
        .ok_or_else(|| malformed("certificate-authority-data holds no certificate"))?;
    let actual = spki_hash(first).ok_or_else(|| malformed("the CA certificate does not parse"))?;
    if !pins.contains(&actual) {
        return Err(DiscoveryError::CaHash {
            expected: pins.to_vec(),
            actual,
        });
    }
    check_clock(first, chrono::Utc::now().timestamp())?;
    Ok(Cluster {
        server,
        ca_pem,
        ca_der,
    })
}

/// Fails when `now` (Unix seconds) is outside the certificate's validity window.
pub fn check_clock(der: &[u8], now: i64) -> Result<(), DiscoveryError> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Ok(());
    };
    let v = cert.validity();
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    if now < nb || now > na {
        let fmt = |t: i64| {
            chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default()
        };
        return Err(DiscoveryError::Clock {
            not_before: fmt(nb),
            not_after: fmt(na),
            now: fmt(now),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    fn sign(token: &str, payload: &[u8], alg: &str) -> String {
        let id = token.split('.').next().expect("id");
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"{id}"}}"#));
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("key");
        mac.update(format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload)).as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}..{sig}")
    }

    #[test]
    fn jws_verifies_with_the_right_token_only() {
        let jws = sign(TOKEN, b"kubeconfig", "HS256");
        assert_eq!(verify_jws(&jws, b"kubeconfig", TOKEN), Ok(()));
        assert!(matches!(
            verify_jws(&jws, b"kubeconfig", "abcdef.ffffffffffffffff"),
            Err(DiscoveryError::BadSignature { .. })
        ));
        assert!(matches!(
            verify_jws(&jws, b"tampered", TOKEN),
            Err(DiscoveryError::BadSignature { .. })
        ));
        assert!(matches!(
            verify_jws(&sign(TOKEN, b"k", "none"), b"k", TOKEN),
            Err(DiscoveryError::Algorithm { .. })
        ));
        assert!(matches!(
            verify_jws("a.b.c", b"k", TOKEN),
            Err(DiscoveryError::Malformed { .. })
        ));
    }

    fn ca() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let c = p.self_signed(&key).expect("cert");
        (c.pem(), c.der().to_vec())
    }

    #[test]
    fn pins_the_ca_by_spki() {
        let (pem, der) = ca();
        let hash = spki_hash(&der).expect("hash");
        let kc = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://10.0.0.1:6443\n  name: \"\"\n",
            STANDARD.encode(&pem)
        );
        let c = trust(&kc, std::slice::from_ref(&hash)).expect("trusted");
        assert_eq!(c.server, "https://10.0.0.1:6443");
        let wrong = format!("sha256:{}", "0".repeat(64));
        match trust(&kc, std::slice::from_ref(&wrong)) {
            Err(DiscoveryError::CaHash { expected, actual }) => {
                assert_eq!(expected, vec![wrong]);
                assert_eq!(actual, hash);
            }
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
    }

    #[test]
    fn clock_outside_validity_is_reported() {
        let (_, der) = ca();
        assert!(check_clock(&der, chrono::Utc::now().timestamp()).is_ok());
        assert!(matches!(
            check_clock(&der, 0),
            Err(DiscoveryError::Clock { .. })
        ));
    }

    #[test]
    fn pin_format() {
        assert!(parse_pin("sha256:abc").is_err());
        assert!(parse_pin(&format!("md5:{}", "a".repeat(64))).is_err());
        assert_eq!(
            parse_pin(&format!("sha256:{}", "A".repeat(64))).expect("ok"),
            format!("sha256:{}", "a".repeat(64))
        );
    }
}
