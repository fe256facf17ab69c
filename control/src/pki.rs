//! The cluster's certificates: an ECDSA P-256 CA, the API server's serving certificate, the
//! admin client certificate and kubeconfig, and signing of client certificates for nodes.
//! Files live in the data dir (`ca.crt`, `ca.key`, `apiserver.crt`, ...); keys are mode 0600
//! and every file is written to a temporary name and renamed, so none is left half-written.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid PEM certificate or key: {detail}")]
    Parse { path: PathBuf, detail: String },
}

pub type Result<T> = std::result::Result<T, PkiError>;

/// Writes `data` to `path` atomically (temp file, fsync, rename) with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn gen_key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::Generate { what, source })
}

/// The CA, loaded for signing.
pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
    issuer: rcgen::Certificate,
}

impl Ca {
    pub fn create(dir: &Path) -> Result<Ca> {
        let key = gen_key("CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, 3650);
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        write_file(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key,
            issuer: cert,
        })
    }

    pub fn load(dir: &Path) -> Result<Ca> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| PkiError::Parse {
            path: key_path.clone(),
            detail: e.to_string(),
        })?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| PkiError::Parse {
                path: cert_path.clone(),
                detail: e.to_string(),
            })?;
        // rcgen signs with an issuer Certificate; re-deriving it from the same subject and key
        // yields identical issuer fields, which is all a signed certificate refers to.
        let issuer = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA issuer",
                source,
            })?;
        Ok(Ca {
            cert_pem,
            key,
            issuer,
        })
    }

    /// `sha256:<hex>` over the CA's SubjectPublicKeyInfo (kubeadm's discovery hash).
    pub fn spki_hash(&self) -> String {
        spki_hash_of_pem(&self.cert_pem).unwrap_or_default()
    }

    /// Issues a certificate for `cn`/`orgs` with the public key of `key`.
    pub fn issue(
        &self,
        key: &KeyPair,
        cn: &str,
        orgs: &[&str],
        sans: &[SanType],
        server: bool,
        days: i64,
    ) -> Result<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans.to_vec();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        validity(&mut params, days);
        let cert = params
            .signed_by(key, &self.issuer, &self.key)
            .map_err(|source| PkiError::Generate {
                what: "certificate",
                source,
            })?;
        Ok(cert.pem())
    }

    /// Signs a PEM/DER PKCS#10 request (the CSR approver's signer), returning the certificate PEM.
    pub fn sign_csr_der(&self, der: &[u8], days: i64) -> Result<String> {
        let csr = rcgen::CertificateSigningRequestParams::from_der(&der.to_vec().into()).map_err(
            |e| PkiError::Parse {
                path: PathBuf::from("certificate signing request"),
                detail: e.to_string(),
            },
        )?;
        let mut params = csr.params;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, days);
        let cert = params
            .signed_by(&csr.public_key, &self.issuer, &self.key)
            .map_err(|source| PkiError::Generate {
                what: "signed certificate",
                source,
            })?;
        Ok(cert.pem())
    }
}

pub fn spki_hash_of_pem(pem: &str) -> Option<String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.public_key().raw))
    ))
}

/// A kubeconfig for `server` trusting `ca_pem`, authenticating with a client cert/key.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keel\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {user}@keel\n  context:\n    cluster: keel\n    user: {user}\n    namespace: default\ncurrent-context: {user}@keel\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem)
    )
}

/// The cluster-only kubeconfig published in `cluster-info` for discovery.
pub fn discovery_kubeconfig(server: &str, ca_pem: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {b64}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
    )
}

/// Creates the serving certificate and the admin credentials for a new data dir.
pub fn init_certs(
    dir: &Path,
    advertise: IpAddr,
    service_ip: IpAddr,
    hostname: &str,
    server_url: &str,
) -> Result<Ca> {
    let ca = Ca::create(dir)?;
    let mut sans = vec![
        SanType::IpAddress(advertise),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(service_ip),
    ];
    for dns in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        hostname,
    ] {
        if let Ok(name) = dns.to_string().try_into() {
            sans.push(SanType::DnsName(name));
        }
    }
    let key = gen_key("API server key")?;
    let cert = ca.issue(&key, "kube-apiserver", &[], &sans, true, 365)?;
    write_file(
        &dir.join("apiserver.key"),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&dir.join("apiserver.crt"), cert.as_bytes(), 0o644)?;
    let admin_key = gen_key("admin key")?;
    let admin = ca.issue(
        &admin_key,
        "kubernetes-admin",
        &["system:masters"],
        &[],
        false,
        365,
    )?;
    let kc = kubeconfig(
        server_url,
        &ca.cert_pem,
        "kubernetes-admin",
        &admin,
        &admin_key.serialize_pem(),
    );
    write_file(&dir.join("admin.kubeconfig"), kc.as_bytes(), 0o600)?;
    // The API server's own client identity (for calling agents later).
    let client_key = gen_key("API server client key")?;
    let client = ca.issue(
        &client_key,
        "kube-apiserver-kubelet-client",
        &["system:masters"],
        &[],
        false,
        365,
    )?;
    write_file(
        &dir.join("apiserver-kubelet-client.key"),
        client_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(
        &dir.join("apiserver-kubelet-client.crt"),
        client.as_bytes(),
        0o644,
    )?;
    Ok(ca)
}
