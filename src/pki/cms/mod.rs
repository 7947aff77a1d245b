//! CMS (RFC 5652) as Orchard needs it: open Apple's encrypted server tokens, check and make
//! signatures, check certificate chains by hand.
//!
//! # API
//!
//! Enveloped data (the ADE server token, SCEP envelopes):
//! - [`decrypt_enveloped`]`(der_or_ber, &key, &cert)`: finds the `KeyTransRecipientInfo` for `cert`
//!   (issuer and serial number, or subject key identifier), unwraps the content key with RSA
//!   PKCS#1 v1.5 and decrypts DES-CBC, DES-EDE3-CBC or AES-128/192/256-CBC content. BER with
//!   indefinite lengths and chunked OCTET STRINGs is accepted.
//! - [`encrypt_enveloped`]`(content, &recipient_cert, Cipher)` gives DER.
//! - [`smime_unwrap`] / [`smime_wrap`]: the S/MIME text around a `.p7m` file.
//!
//! Signed data (the `Mdm-Signature` header, Apple's signed MachineInfo, signed profiles):
//! - [`verify_detached`]`(signature_der, body)` and [`verify_attached`]`(der)` check the
//!   signature (SHA-1 or SHA-256; RSA PKCS#1 v1.5 or ECDSA P-256; with or without signed
//!   attributes) and return the [`Verified`] signer certificate. They do **not** judge who the
//!   signer is: call [`verify_chain`] for that.
//! - [`sign_detached`] and [`sign_attached`] make SignedData with SHA-256 and a [`SignerKey`].
//! - [`verify_chain`]`(leaf, intermediates, roots, CheckTime)` checks every signature up to a
//!   trusted root by hand, SHA-1 RSA included, optionally ignoring validity dates (Apple says to
//!   ignore them for "Apple iPhone Device CA").
//!
//! Keys and certificates: [`load_rsa_private_key`], [`load_certificate`], [`load_certificates`].
//!
//! Every function returns [`CmsError`], whose `Display` is a sentence a person can act on.
//! Nothing here panics on input.

mod algorithms;
mod certs;
mod chain;
mod envelope;
mod error;
mod kari;
mod keys;
mod signed;
mod smime;

pub(crate) use algorithms::signature_digest;
pub use algorithms::{Cipher, DigestAlg};
pub(crate) use algorithms::{build, to_der};
pub(crate) use certs::spki_of;
pub use certs::{CertKind, CertSpec, issue_certificate, self_signed_certificate};
pub use chain::{CheckTime, verify_chain};
pub(crate) use envelope::{RecipientKey, open_enveloped};
pub use envelope::{decrypt_enveloped, decrypt_enveloped_with_key, encrypt_enveloped};
pub use error::CmsError;
pub(crate) use keys::public_key_of;
pub use keys::{
    SignerKey, certificate_to_pem, load_certificate, load_certificates, load_rsa_private_key,
    rsa_private_key_to_pem,
};
pub(crate) use signed::{
    SignOptions, Unverified, attribute, attribute_value, certificates_of, certs_only, sign_with,
};
pub use signed::{Verified, sign_attached, sign_detached, verify_attached, verify_detached};
pub use smime::{smime_unwrap, smime_wrap};

pub use rsa::PrivateKey as RsaPrivateKey;
pub use x509_cert::Certificate;

#[cfg(test)]
pub(crate) mod testutil {
    //! Keys and certificates for tests.

    use std::str::FromStr;

    use time::OffsetDateTime;
    use x509_cert::name::Name;

    use super::*;

    /// 2020-01-01 to 2035-01-01.
    pub fn spec(subject: &str, kind: CertKind) -> CertSpec {
        CertSpec {
            subject: Name::from_str(subject).expect("name"),
            serial: u64::from(subject.len() as u32) * 7919 + 1,
            not_before: OffsetDateTime::from_unix_timestamp(1_577_836_800).expect("time"),
            not_after: OffsetDateTime::from_unix_timestamp(2_051_222_400).expect("time"),
            kind,
        }
    }

    pub fn rsa_key() -> SignerKey {
        SignerKey::Rsa(RsaPrivateKey::new(&mut rand::rng(), 2048).expect("rsa keygen"))
    }

    pub fn ec_key() -> SignerKey {
        use rand::Rng as _;
        let mut bytes = [0u8; 32];
        loop {
            rand::rng().fill_bytes(&mut bytes);
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return SignerKey::P256(k);
            }
        }
    }

    /// A self-signed RSA end-entity certificate and its key.
    pub fn rsa_signer(cn: &str) -> (Certificate, SignerKey) {
        let key = rsa_key();
        let cert = self_signed_certificate(&spec(&format!("CN={cn}"), CertKind::EndEntity), &key)
            .expect("self-signed");
        (cert, key)
    }

    /// A self-signed P-256 end-entity certificate and its key.
    pub fn ec_signer(cn: &str) -> (Certificate, SignerKey) {
        let key = ec_key();
        let cert = self_signed_certificate(&spec(&format!("CN={cn}"), CertKind::EndEntity), &key)
            .expect("self-signed");
        (cert, key)
    }

    /// An RSA CA and a client certificate it issued, with both keys.
    pub fn ca_and_leaf(ca: &str, leaf: &str) -> (Certificate, SignerKey, Certificate, SignerKey) {
        let ca_key = rsa_key();
        let ca_cert = self_signed_certificate(&spec(ca, CertKind::Authority), &ca_key).expect("ca");
        let leaf_key = rsa_key();
        let leaf_cert = issue_certificate(
            &spec(leaf, CertKind::ClientIdentity),
            &spki_of(&leaf_key).expect("spki"),
            &ca_cert,
            &ca_key,
        )
        .expect("leaf");
        (ca_cert, ca_key, leaf_cert, leaf_key)
    }
}
