//! Reading and writing keys and certificates (PEM or DER), and the signing key type.

use der::{Decode, DecodePem, Encode, EncodePem};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use x509_cert::Certificate;

use rsa::Pkcs1v15Sign;
use signature::hazmat::{PrehashSigner, PrehashVerifier};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::CmsError;
use super::algorithms::{
    DigestAlg, EC_PUBLIC_KEY, ECDSA_WITH_SHA1, ECDSA_WITH_SHA256, RSA_ENCRYPTION, SHA1_WITH_RSA,
    SHA256_WITH_RSA, SHA384_WITH_RSA, SHA512_WITH_RSA, with_null,
};

/// A private key that can sign CMS messages and certificates.
///
/// `Debug` never shows key material.
#[derive(Clone)]
pub enum SignerKey {
    /// RSA, signing with PKCS#1 v1.5.
    Rsa(RsaPrivateKey),
    /// ECDSA on P-256.
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerKey::Rsa(_) => f.write_str("SignerKey::Rsa(<secret>)"),
            SignerKey::P256(_) => f.write_str("SignerKey::P256(<secret>)"),
        }
    }
}

impl SignerKey {
    /// Reads a private key: RSA (PKCS#1 or PKCS#8) or P-256 (PKCS#8 or SEC1), PEM or DER.
    pub fn load(bytes: &[u8]) -> Result<Self, CmsError> {
        if let Ok(k) = load_rsa_private_key(bytes) {
            return Ok(SignerKey::Rsa(k));
        }
        let text = std::str::from_utf8(bytes).ok();
        let p256 = match text.map(str::trim_start) {
            Some(t) if t.starts_with("-----BEGIN EC PRIVATE KEY") => {
                p256::SecretKey::from_sec1_pem(t)
                    .map(|k| p256::ecdsa::SigningKey::from(&k))
                    .ok()
            }
            Some(t) if t.starts_with("-----BEGIN") => {
                p256::ecdsa::SigningKey::from_pkcs8_pem(t).ok()
            }
            _ => p256::ecdsa::SigningKey::from_pkcs8_der(bytes).ok(),
        };
        p256.map(SignerKey::P256)
            .ok_or_else(|| CmsError::Key("not an RSA or P-256 private key".into()))
    }

    /// The key as PKCS#8 DER (for TLS client authentication with the same identity).
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CmsError> {
        use rsa::pkcs8::EncodePrivateKey;
        let doc = match self {
            SignerKey::Rsa(k) => k.to_pkcs8_der(),
            SignerKey::P256(k) => k.to_pkcs8_der(),
        };
        doc.map(|d| d.as_bytes().to_vec())
            .map_err(|e| CmsError::Key(e.to_string()))
    }

    /// The DER SubjectPublicKeyInfo of this key's public half.
    pub fn public_key_der(&self) -> Result<Vec<u8>, CmsError> {
        use rsa::pkcs8::EncodePublicKey;
        let doc = match self {
            SignerKey::Rsa(k) => k.to_public_key().to_public_key_der(),
            SignerKey::P256(k) => k.verifying_key().to_public_key_der(),
        };
        doc.map(|d| d.as_bytes().to_vec())
            .map_err(|e| CmsError::Key(e.to_string()))
    }
}

/// Reads an RSA private key from PEM (`RSA PRIVATE KEY` = PKCS#1, `PRIVATE KEY` = PKCS#8) or DER.
pub fn load_rsa_private_key(bytes: &[u8]) -> Result<RsaPrivateKey, CmsError> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            let (label, _) = der::pem::decode_vec(text.as_bytes())
                .map_err(|e| CmsError::Key(format!("the PEM text is damaged ({e})")))?;
            return match label {
                "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_pem(text)
                    .map_err(|e| CmsError::Key(format!("bad PKCS#1 RSA key ({e})"))),
                "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_pem(text)
                    .map_err(|e| CmsError::Key(format!("not an RSA PKCS#8 key ({e})"))),
                "ENCRYPTED PRIVATE KEY" => Err(CmsError::Key(
                    "the key is protected by a passphrase; export it without one".into(),
                )),
                other => Err(CmsError::Key(format!(
                    "expected an RSA private key but the PEM block is \"{other}\""
                ))),
            };
        }
    }
    RsaPrivateKey::from_pkcs1_der(bytes)
        .or_else(|_| RsaPrivateKey::from_pkcs8_der(bytes))
        .map_err(|_| CmsError::Key("not an RSA private key in PEM or DER form".into()))
}

/// PKCS#1 PEM (`RSA PRIVATE KEY`) of an RSA key, the format Apple's and nanodep's tools use.
pub fn rsa_private_key_to_pem(key: &RsaPrivateKey) -> Result<String, CmsError> {
    key.to_pkcs1_pem(der::pem::LineEnding::LF)
        .map(|s| s.to_string())
        .map_err(|e| CmsError::Key(e.to_string()))
}

/// Reads one X.509 certificate from PEM (`CERTIFICATE`) or DER.
pub fn load_certificate(bytes: &[u8]) -> Result<Certificate, CmsError> {
    if let Some(text) = pem_text(bytes) {
        return Certificate::from_pem(text.as_bytes())
            .map_err(|e| CmsError::Certificate(format!("bad PEM certificate ({e})")));
    }
    Certificate::from_der(bytes)
        .map_err(|e| CmsError::Certificate(format!("not a DER certificate ({e})")))
}

/// Reads every certificate of a PEM bundle (or one DER certificate).
pub fn load_certificates(bytes: &[u8]) -> Result<Vec<Certificate>, CmsError> {
    if pem_text(bytes).is_some() {
        let certs = Certificate::load_pem_chain(bytes)
            .map_err(|e| CmsError::Certificate(format!("bad PEM certificate bundle ({e})")))?;
        if certs.is_empty() {
            return Err(CmsError::Certificate(
                "the bundle holds no certificate".into(),
            ));
        }
        return Ok(certs);
    }
    load_certificate(bytes).map(|c| vec![c])
}

/// PEM text of a certificate.
pub fn certificate_to_pem(cert: &Certificate) -> Result<String, CmsError> {
    cert.to_pem(der::pem::LineEnding::LF)
        .map_err(|e| CmsError::Certificate(e.to_string()))
}

/// The public key of a certificate, as a signature verifier.
pub(crate) enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

pub(crate) fn public_key(cert: &Certificate) -> Result<PublicKey, CmsError> {
    public_key_of(cert.tbs_certificate().subject_public_key_info())
}

/// The verifier for a SubjectPublicKeyInfo: RSA or P-256.
pub(crate) fn public_key_of(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, CmsError> {
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let der = spki
            .to_der()
            .map_err(|e| CmsError::Certificate(e.to_string()))?;
        return p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map(PublicKey::P256)
            .map_err(|_| CmsError::Certificate("the EC key is not on curve P-256".into()));
    }
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(CmsError::Certificate(format!(
            "the key is neither RSA nor EC ({})",
            spki.algorithm.oid
        )));
    }
    let der = spki
        .to_der()
        .map_err(|e| CmsError::Certificate(e.to_string()))?;
    RsaPublicKey::from_public_key_der(&der)
        .map(PublicKey::Rsa)
        .map_err(|e| CmsError::Certificate(format!("bad RSA public key ({e})")))
}

impl PublicKey {
    /// Checks `sig` over a message whose `digest` hash is `hash`; false on any mismatch.
    pub(crate) fn verify_prehash(&self, digest: DigestAlg, hash: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Rsa(k) => {
                let scheme = match digest {
                    DigestAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
                    DigestAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
                    DigestAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
                    DigestAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
                };
                k.verify(scheme, hash, sig).is_ok()
            }
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .map(|s| k.verify_prehash(hash, &s).is_ok())
                .unwrap_or(false),
        }
    }
}

impl SignerKey {
    /// Signs a precomputed `digest` hash; RSA PKCS#1 v1.5 or ECDSA (DER signature).
    pub(crate) fn sign_prehash(&self, digest: DigestAlg, hash: &[u8]) -> Result<Vec<u8>, CmsError> {
        match self {
            SignerKey::Rsa(k) => match digest {
                DigestAlg::Sha1 => k.pkcs1v15_sign_prehash::<sha1::Sha1>(hash),
                DigestAlg::Sha256 => k.pkcs1v15_sign_prehash::<sha2::Sha256>(hash),
                DigestAlg::Sha384 => k.pkcs1v15_sign_prehash::<sha2::Sha384>(hash),
                DigestAlg::Sha512 => k.pkcs1v15_sign_prehash::<sha2::Sha512>(hash),
            }
            .map_err(|e| CmsError::Build(format!("RSA signing failed ({e})"))),
            SignerKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash(hash)
                    .map_err(|e| CmsError::Build(format!("ECDSA signing failed ({e})")))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }

    /// The X.509/PKCS#10 `signatureAlgorithm` for this key and digest (names the hash).
    pub(crate) fn certificate_signature_algorithm(
        &self,
        digest: DigestAlg,
    ) -> AlgorithmIdentifierOwned {
        match self {
            SignerKey::Rsa(_) => with_null(match digest {
                DigestAlg::Sha1 => SHA1_WITH_RSA,
                DigestAlg::Sha256 => SHA256_WITH_RSA,
                DigestAlg::Sha384 => SHA384_WITH_RSA,
                DigestAlg::Sha512 => SHA512_WITH_RSA,
            }),
            SignerKey::P256(_) => self.signature_algorithm(digest),
        }
    }

    /// The SignerInfo `signatureAlgorithm` for this key and digest.
    pub(crate) fn signature_algorithm(&self, digest: DigestAlg) -> AlgorithmIdentifierOwned {
        match self {
            // rsaEncryption, as OpenSSL and Apple write it; verifiers accept either form.
            SignerKey::Rsa(_) => with_null(RSA_ENCRYPTION),
            SignerKey::P256(_) => AlgorithmIdentifierOwned {
                oid: if digest == DigestAlg::Sha1 {
                    ECDSA_WITH_SHA1
                } else {
                    ECDSA_WITH_SHA256
                },
                parameters: None,
            },
        }
    }
}

fn pem_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.trim_start().starts_with("-----BEGIN").then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/apple-dep/synthetic"
    );

    #[test]
    fn pkcs1_and_pkcs8_pem_and_der_load_to_the_same_key() {
        let pem = std::fs::read(format!("{DIR}/dep_key.pem")).expect("vector");
        let key = load_rsa_private_key(&pem).expect("pkcs1 pem");
        use rsa::pkcs8::EncodePrivateKey;
        let p8 = key.to_pkcs8_pem(der::pem::LineEnding::CRLF).expect("p8");
        assert_eq!(load_rsa_private_key(p8.as_bytes()).expect("pkcs8 pem"), key);
        let p1der = key.to_pkcs1_der().expect("der");
        assert_eq!(
            load_rsa_private_key(p1der.as_bytes()).expect("pkcs1 der"),
            key
        );
        let again = rsa_private_key_to_pem(&key).expect("pem");
        assert_eq!(
            load_rsa_private_key(again.as_bytes()).expect("round trip"),
            key
        );
        assert!(matches!(SignerKey::load(&pem), Ok(SignerKey::Rsa(_))));
    }

    #[test]
    fn a_certificate_is_not_a_key_and_garbage_is_neither() {
        let cert = std::fs::read(format!("{DIR}/dep_cert.pem")).expect("vector");
        let err = load_rsa_private_key(&cert).expect_err("cert is no key");
        assert!(err.to_string().contains("CERTIFICATE"), "{err}");
        assert!(load_rsa_private_key(b"garbage").is_err());
        assert!(load_certificate(b"garbage").is_err());
        assert!(
            load_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
        assert!(SignerKey::load(b"\x30\x03\x02\x01\x00").is_err());
        let c = load_certificate(&cert).expect("cert");
        let pem = certificate_to_pem(&c).expect("pem");
        assert_eq!(load_certificates(pem.as_bytes()).expect("bundle"), vec![c]);
    }
}
