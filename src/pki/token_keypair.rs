//! The keypair an ADE server token is encrypted to: an RSA-2048 key and the self-signed
//! certificate the admin uploads in Apple School Manager or Apple Business Manager
//! ("Download your public key"). Apple encrypts the `.p7m` server token to this certificate.
//!
//! Shape follows what Apple's portal accepts and what nanodep makes: serial 1, subject
//! `CN=orchard`, KeyUsage keyEncipherment + digitalSignature, SHA-256 self-signature.

use std::fmt;
use std::str::FromStr;

use der::referenced::OwnedToRef;
use rsa::PrivateKey as RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::name::Name;

use super::cms::{
    self, CertKind, CertSpec, CmsError, SignerKey, certificate_to_pem, load_certificate,
    load_rsa_private_key, rsa_private_key_to_pem,
};

/// Size of the RSA modulus.
pub const KEY_BITS: usize = 2048;
/// Subject of the certificate (Apple's portal shows nothing of it; it only has to parse).
pub const SUBJECT: &str = "CN=orchard";
/// How long the certificate is valid. It only needs to live until the admin has downloaded the
/// token from Apple; the private key itself is kept for the life of the token.
pub const VALIDITY: Duration = Duration::days(365);

/// Why a token keypair could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeypairError {
    #[error("could not generate the RSA key: {0}")]
    Generate(String),
    #[error("{0}")]
    Cms(#[from] CmsError),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
}

/// An RSA private key and its self-signed certificate. `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenKeypair {
    key: RsaPrivateKey,
    cert: Certificate,
    cert_pem: String,
}

impl TokenKeypair {
    /// Makes a fresh RSA-2048 key and certificate valid from `now` (ten minutes back, for clock
    /// skew) for [`VALIDITY`]. CPU-heavy: call it off the async threads.
    pub fn generate(now: OffsetDateTime) -> Result<Self, KeypairError> {
        let key = RsaPrivateKey::new(&mut rand::rng(), KEY_BITS)
            .map_err(|e| KeypairError::Generate(e.to_string()))?;
        let spec = CertSpec {
            subject: Name::from_str(SUBJECT).map_err(|e| KeypairError::Generate(e.to_string()))?,
            serial: 1,
            not_before: now - Duration::minutes(10),
            not_after: now + VALIDITY,
            kind: CertKind::EndEntity,
        };
        let cert = cms::self_signed_certificate(&spec, &SignerKey::Rsa(key.clone()))?;
        let cert_pem = certificate_to_pem(&cert)?;
        Ok(Self {
            key,
            cert,
            cert_pem,
        })
    }

    /// Reads a key (PKCS#1 or PKCS#8, PEM or DER) and its certificate (PEM or DER), refusing a
    /// pair that does not belong together.
    pub fn from_pem(key: &[u8], cert: &[u8]) -> Result<Self, KeypairError> {
        let key = load_rsa_private_key(key)?;
        let cert = load_certificate(cert)?;
        let public = rsa::PublicKey::try_from(
            cert.tbs_certificate()
                .subject_public_key_info()
                .owned_to_ref(),
        )
        .map_err(|_| KeypairError::Mismatch)?;
        if public.n() != key.n() {
            return Err(KeypairError::Mismatch);
        }
        let cert_pem = certificate_to_pem(&cert)?;
        Ok(Self {
            key,
            cert,
            cert_pem,
        })
    }

    /// Rebuilds a keypair from what the store keeps: the PKCS#1 DER key and the certificate PEM.
    pub fn from_parts(key_pkcs1_der: &[u8], cert_pem: &str) -> Result<Self, KeypairError> {
        let key = RsaPrivateKey::from_pkcs1_der(key_pkcs1_der)
            .map_err(|e| CmsError::Key(e.to_string()))?;
        Ok(Self {
            key,
            cert: load_certificate(cert_pem.as_bytes())?,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The certificate, PEM, as the admin downloads it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// When the certificate stops being valid (Apple's portal refuses an expired one).
    pub fn not_after(&self) -> OffsetDateTime {
        let secs = self
            .cert
            .tbs_certificate()
            .validity()
            .not_after
            .to_unix_duration()
            .as_secs();
        OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn private_key(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// The private key as PKCS#1 DER: a secret, to be sealed before it is stored.
    pub fn key_pkcs1_der(&self) -> Result<Vec<u8>, KeypairError> {
        self.key
            .to_pkcs1_der()
            .map(|doc| doc.as_bytes().to_vec())
            .map_err(|e| KeypairError::Cms(CmsError::Key(e.to_string())))
    }

    /// The private key as PKCS#1 PEM (`orchard token inspect` reads this format).
    pub fn key_pem(&self) -> Result<String, KeypairError> {
        Ok(rsa_private_key_to_pem(&self.key)?)
    }
}

impl fmt::Debug for TokenKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeypair")
            .field("key", &"<secret>")
            .field("cert_pem", &self.cert_pem)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `../shared/testdata/apple-dep/synthetic/`, found from the crate upwards.
    pub(crate) fn synthetic(name: &str) -> Vec<u8> {
        let rel = format!("shared/testdata/apple-dep/synthetic/{name}");
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join(&rel))
            .find(|path| path.exists())
            .and_then(|path| std::fs::read(path).ok())
            .unwrap_or_else(|| panic!("test data {rel} not found above the crate"))
    }

    #[test]
    fn generated_certificate_has_the_shape_apple_accepts() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let pair = TokenKeypair::generate(now).unwrap();
        let tbs = pair.certificate().tbs_certificate();
        assert_eq!(tbs.serial_number().as_bytes(), &[1]);
        assert_eq!(tbs.subject().to_string(), SUBJECT);
        assert_eq!(tbs.issuer().to_string(), SUBJECT);
        assert_eq!(pair.not_after(), now + VALIDITY);
        assert_eq!(pair.key.size() * 8, KEY_BITS);
        assert!(pair.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        // It reads back, belongs together, and its Debug hides the key.
        let again = TokenKeypair::from_pem(
            pair.key_pem().unwrap().as_bytes(),
            pair.cert_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            again.key_pkcs1_der().unwrap(),
            pair.key_pkcs1_der().unwrap()
        );
        let stored =
            TokenKeypair::from_parts(&pair.key_pkcs1_der().unwrap(), pair.cert_pem()).unwrap();
        assert_eq!(stored.key, pair.key);
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }

    #[test]
    fn imports_the_synthetic_vector_keypair_and_refuses_a_mismatch() {
        let key = synthetic("dep_key.pem");
        let pair = TokenKeypair::from_pem(&key, &synthetic("dep_cert.pem")).unwrap();
        assert_eq!(
            pair.certificate().tbs_certificate().subject().to_string(),
            "CN=depserver"
        );
        let other =
            TokenKeypair::generate(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap())
                .unwrap();
        assert!(matches!(
            TokenKeypair::from_pem(&key, other.cert_pem().as_bytes()),
            Err(KeypairError::Mismatch)
        ));
        assert!(TokenKeypair::from_pem(b"not a key", &synthetic("dep_cert.pem")).is_err());
    }
}
