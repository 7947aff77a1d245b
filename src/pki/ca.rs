//! Orchard's local certificate authority and the TLS server certificate it issues for Orchard's host
//! names. Both are made on first start, kept in `DATA_DIR/tls/` (private keys sealed with the data
//! directory's secret key) and reused on restart; the server certificate is re-issued when the host
//! names change or it nears expiry. An admin may instead give a PEM certificate and key of their own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::pki::secret::{Sealed, SecretError, SecretKey};

/// How long the local CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Apple platforms refuse TLS server certificates valid for more than 825 days; stay well inside.
const SERVER_VALIDITY: Duration = Duration::days(397);
/// A server certificate this close to expiry is re-issued at start-up.
const SERVER_RENEW_BEFORE: Duration = Duration::days(30);

/// Why the CA or the TLS certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged ({message}); move it away to make a new one")]
    Damaged { path: PathBuf, message: String },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot open a sealed private key: {0}")]
    Secret(#[from] SecretError),
}

#[derive(Serialize, Deserialize)]
struct StoredCa {
    common_name: String,
    cert_pem: String,
    key: Sealed,
}

#[derive(Serialize, Deserialize)]
struct StoredServer {
    hostnames: Vec<String>,
    not_after: i64,
    /// Leaf then the CA.
    chain_pem: String,
    key: Sealed,
}

/// The local certificate authority.
pub struct LocalCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A certificate chain and its private key, ready for rustls.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl LocalCa {
    /// Loads the CA from `tls_dir`, or makes one (and saves it) when there is none.
    pub fn load_or_create(
        tls_dir: &Path,
        secret: &SecretKey,
        now: OffsetDateTime,
    ) -> Result<LocalCa, CaError> {
        ensure_dir(tls_dir)?;
        let path = tls_dir.join("ca.json");
        if path.exists() {
            let stored: StoredCa = read_json(&path)?;
            let key_pem =
                String::from_utf8(secret.open(&stored.key)?).map_err(|e| damaged(&path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| damaged(&path, e))?;
            let cert_der = pem_certs(&stored.cert_pem)
                .into_iter()
                .next()
                .ok_or_else(|| damaged(&path, "no certificate"))?;
            let issuer = Issuer::new(ca_params(&stored.common_name, now), key);
            return Ok(LocalCa {
                cert_der,
                cert_pem: stored.cert_pem,
                issuer,
            });
        }
        let common_name = format!("Orchard local CA {}", &hex::encode(random_bytes::<4>()));
        let key = KeyPair::generate()?;
        let cert = ca_params(&common_name, now).self_signed(&key)?;
        let stored = StoredCa {
            common_name: common_name.clone(),
            cert_pem: cert.pem(),
            key: secret.seal(key.serialize_pem().as_bytes())?,
        };
        write_json(&path, &stored)?;
        write_file(&tls_dir.join("ca.crt"), cert.pem().as_bytes())?;
        tracing::info!(path = %tls_dir.join("ca.crt").display(), "created the local certificate authority");
        Ok(LocalCa {
            cert_der: cert.der().clone(),
            cert_pem: stored.cert_pem,
            issuer: Issuer::new(ca_params(&common_name, now), key),
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate, as colon-separated hex (what admins compare on a device).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.cert_der.as_ref());
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The DER of the CA's subject name (for TLS client-certificate hints).
    pub fn subject_der(&self) -> Option<Vec<u8>> {
        use der::{Decode, Encode};
        let cert = x509_cert::Certificate::from_der(self.cert_der.as_ref()).ok()?;
        cert.tbs_certificate().subject().to_der().ok()
    }

    /// Issues a TLS server certificate for `hostnames` (DNS names or IP addresses).
    pub fn issue_server(
        &self,
        hostnames: &[String],
        now: OffsetDateTime,
    ) -> Result<(String, KeyPair), CaError> {
        let mut params = CertificateParams::new(hostnames.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            hostnames.first().cloned().unwrap_or_default(),
        );
        dn.push(DnType::OrganizationName, "Orchard");
        params.distinguished_name = dn;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + SERVER_VALIDITY;
        params.serial_number = Some(serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key))
    }
}

/// The TLS identity for `hostnames`: the saved one when it still fits, else a fresh one from `ca`.
/// Loopback names are always included so local health checks and tests verify.
pub fn server_identity(
    tls_dir: &Path,
    ca: &LocalCa,
    secret: &SecretKey,
    hostnames: &[String],
    now: OffsetDateTime,
) -> Result<TlsIdentity, CaError> {
    let mut names: Vec<String> = hostnames.to_vec();
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    let path = tls_dir.join("server.json");
    if path.exists() {
        let stored: StoredServer = read_json(&path)?;
        let fresh = stored.not_after - now.unix_timestamp() > SERVER_RENEW_BEFORE.whole_seconds();
        let chain = pem_certs(&stored.chain_pem);
        let same_ca = chain.get(1) == Some(ca.cert_der());
        if stored.hostnames == names && fresh && same_ca {
            let key_der = secret.open(&stored.key)?;
            return Ok(TlsIdentity {
                chain,
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            });
        }
    }
    let (leaf_pem, key) = ca.issue_server(&names, now)?;
    let chain_pem = format!("{leaf_pem}{}", ca.cert_pem());
    let stored = StoredServer {
        hostnames: names.clone(),
        not_after: (now + SERVER_VALIDITY).unix_timestamp(),
        chain_pem: chain_pem.clone(),
        key: secret.seal(&key.serialize_der())?,
    };
    write_json(&path, &stored)?;
    tracing::info!(hostnames = ?names, "issued a TLS server certificate");
    Ok(TlsIdentity {
        chain: pem_certs(&chain_pem),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

fn ca_params(common_name: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Orchard");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(serial());
    params
}

fn serial() -> SerialNumber {
    let mut bytes = random_bytes::<16>();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out);
    out
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> CaError {
    CaError::Damaged {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    set_mode(dir, 0o700).map_err(io)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CaError> {
    let bytes = std::fs::read(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| damaged(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CaError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| damaged(path, e))?;
    write_file(path, &bytes)
}

/// Writes via a temporary file and rename, mode 0600, so a crash never leaves half a key.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    set_mode(&tmp, 0o600).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-09-01 08:00 UTC);

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ca_and_server_certificate_are_reused_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::ephemeral();
        let ca = LocalCa::load_or_create(dir.path(), &secret, NOW).unwrap();
        let id1 = server_identity(
            dir.path(),
            &ca,
            &secret,
            &names(&["mdm.school.example"]),
            NOW,
        )
        .unwrap();

        let ca2 = LocalCa::load_or_create(dir.path(), &secret, NOW + Duration::days(1)).unwrap();
        assert_eq!(ca.cert_der(), ca2.cert_der());
        assert_eq!(ca.fingerprint(), ca2.fingerprint());
        let id2 = server_identity(
            dir.path(),
            &ca2,
            &secret,
            &names(&["mdm.school.example"]),
            NOW,
        )
        .unwrap();
        assert_eq!(id1.chain, id2.chain);
        assert_eq!(id2.chain.len(), 2);
        assert_eq!(&id2.chain[1], ca.cert_der());
    }

    #[test]
    fn server_certificate_is_reissued_for_new_names_and_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::ephemeral();
        let ca = LocalCa::load_or_create(dir.path(), &secret, NOW).unwrap();
        let a = server_identity(dir.path(), &ca, &secret, &names(&["a.example"]), NOW).unwrap();
        let b = server_identity(dir.path(), &ca, &secret, &names(&["b.example"]), NOW).unwrap();
        assert_ne!(a.chain[0], b.chain[0]);
        let later = NOW + SERVER_VALIDITY - Duration::days(10);
        let c = server_identity(dir.path(), &ca, &secret, &names(&["b.example"]), later).unwrap();
        assert_ne!(b.chain[0], c.chain[0]);
    }

    #[test]
    fn issued_certificate_is_signed_by_the_ca_and_names_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::ephemeral();
        let ca = LocalCa::load_or_create(dir.path(), &secret, NOW).unwrap();
        let id = server_identity(
            dir.path(),
            &ca,
            &secret,
            &names(&["mdm.school.example"]),
            NOW,
        )
        .unwrap();
        let leaf = x509_cert::Certificate::from_der(id.chain[0].as_ref()).unwrap();
        let root = x509_cert::Certificate::from_der(ca.cert_der().as_ref()).unwrap();
        assert_eq!(
            leaf.tbs_certificate().issuer(),
            root.tbs_certificate().subject()
        );
        let text = String::from_utf8_lossy(id.chain[0].as_ref()).to_string();
        assert!(text.contains("mdm.school.example"));
        assert!(text.contains("localhost"));
        // A rustls server config accepts the pair (key matches certificate).
        crate::http::tls::server_config(id.chain, id.key, vec![]).unwrap();
    }

    #[test]
    fn a_damaged_ca_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::ephemeral();
        std::fs::write(dir.path().join("ca.json"), b"{not json").unwrap();
        let err = LocalCa::load_or_create(dir.path(), &secret, NOW).unwrap_err();
        assert!(err.to_string().contains("ca.json"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("ca.json")).unwrap(),
            b"{not json"
        );
        // A key sealed under another secret key is refused too.
        let dir2 = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir2.path(), &secret, NOW).unwrap();
        assert!(LocalCa::load_or_create(dir2.path(), &SecretKey::ephemeral(), NOW).is_err());
    }
}
