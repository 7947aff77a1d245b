//! Object identifiers and the symmetric ciphers and digests CMS messages use.

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Encode};
use sha2::Digest as _;
use spki::AlgorithmIdentifierOwned;

use super::CmsError;

pub(crate) const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
pub(crate) const ID_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
pub(crate) const ID_CONTENT_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
pub(crate) const ID_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

pub(crate) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const SHA1_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
pub(crate) const SHA256_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const ECDSA_WITH_SHA1: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
pub(crate) const ECDSA_WITH_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_WITH_SHA384: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
pub(crate) const SHA384_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

const DES_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.7");
const DES_EDE3_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.3.7");
const AES128_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
const AES192_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.22");
const AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// A content-encryption cipher for [`encrypt_enveloped`](super::encrypt_enveloped).
///
/// All are CBC with PKCS#7 padding. DES-CBC exists only because old SCEP clients ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// Single DES, CBC (weak; SCEP compatibility only).
    DesCbc,
    /// Triple DES (EDE3), CBC.
    Des3Cbc,
    /// AES-128, CBC.
    Aes128Cbc,
    /// AES-192, CBC.
    Aes192Cbc,
    /// AES-256, CBC.
    Aes256Cbc,
}

impl Cipher {
    /// Every cipher, for tests and capability lists.
    pub const ALL: [Cipher; 5] = [
        Cipher::DesCbc,
        Cipher::Des3Cbc,
        Cipher::Aes128Cbc,
        Cipher::Aes192Cbc,
        Cipher::Aes256Cbc,
    ];

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Cipher::DesCbc => DES_CBC,
            Cipher::Des3Cbc => DES_EDE3_CBC,
            Cipher::Aes128Cbc => AES128_CBC,
            Cipher::Aes192Cbc => AES192_CBC,
            Cipher::Aes256Cbc => AES256_CBC,
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Result<Self, CmsError> {
        Self::ALL
            .into_iter()
            .find(|c| c.oid() == *oid)
            .ok_or_else(|| CmsError::Unsupported {
                what: "content encryption",
                oid: oid.to_string(),
            })
    }

    pub(crate) fn key_len(self) -> usize {
        match self {
            Cipher::DesCbc => 8,
            Cipher::Des3Cbc => 24,
            Cipher::Aes128Cbc => 16,
            Cipher::Aes192Cbc => 24,
            Cipher::Aes256Cbc => 32,
        }
    }

    pub(crate) fn iv_len(self) -> usize {
        match self {
            Cipher::DesCbc | Cipher::Des3Cbc => 8,
            _ => 16,
        }
    }

    /// The AlgorithmIdentifier with the IV as its OCTET STRING parameter.
    pub(crate) fn algorithm_identifier(
        self,
        iv: &[u8],
    ) -> Result<AlgorithmIdentifierOwned, CmsError> {
        let iv = OctetString::new(iv).map_err(build)?;
        Ok(AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: Some(Any::encode_from(&iv).map_err(build)?),
        })
    }

    pub(crate) fn encrypt(
        self,
        key: &[u8],
        iv: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CmsError> {
        fn run<C: KeyIvInit + BlockModeEncrypt>(
            k: &[u8],
            iv: &[u8],
            p: &[u8],
        ) -> Result<Vec<u8>, CmsError> {
            let c = C::new_from_slices(k, iv)
                .map_err(|_| CmsError::Build("bad key or IV length".into()))?;
            Ok(c.encrypt_padded_vec::<Pkcs7>(p))
        }
        match self {
            Cipher::DesCbc => run::<cbc::Encryptor<des::Des>>(key, iv, plaintext),
            Cipher::Des3Cbc => run::<cbc::Encryptor<des::TdesEde3>>(key, iv, plaintext),
            Cipher::Aes128Cbc => run::<cbc::Encryptor<aes::Aes128>>(key, iv, plaintext),
            Cipher::Aes192Cbc => run::<cbc::Encryptor<aes::Aes192>>(key, iv, plaintext),
            Cipher::Aes256Cbc => run::<cbc::Encryptor<aes::Aes256>>(key, iv, plaintext),
        }
    }

    /// Decrypts; a wrong key length, IV length or padding is an error, never a panic.
    pub(crate) fn decrypt(
        self,
        key: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CmsError> {
        fn run<C: KeyIvInit + BlockModeDecrypt>(
            k: &[u8],
            iv: &[u8],
            c: &[u8],
        ) -> Result<Vec<u8>, CmsError> {
            let d = C::new_from_slices(k, iv).map_err(|_| CmsError::KeyUnwrap)?;
            d.decrypt_padded_vec::<Pkcs7>(c)
                .map_err(|_| CmsError::BadPadding)
        }
        if key.len() != self.key_len() {
            // RSA unwrapped a key of the wrong size: the wrong private key was used.
            return Err(CmsError::KeyUnwrap);
        }
        if iv.len() != self.iv_len() {
            return Err(CmsError::Malformed(format!(
                "the IV is {} bytes, {} expected",
                iv.len(),
                self.iv_len()
            )));
        }
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(self.iv_len()) {
            return Err(CmsError::Malformed(
                "the encrypted content is not a whole number of cipher blocks".into(),
            ));
        }
        match self {
            Cipher::DesCbc => run::<cbc::Decryptor<des::Des>>(key, iv, ciphertext),
            Cipher::Des3Cbc => run::<cbc::Decryptor<des::TdesEde3>>(key, iv, ciphertext),
            Cipher::Aes128Cbc => run::<cbc::Decryptor<aes::Aes128>>(key, iv, ciphertext),
            Cipher::Aes192Cbc => run::<cbc::Decryptor<aes::Aes192>>(key, iv, ciphertext),
            Cipher::Aes256Cbc => run::<cbc::Decryptor<aes::Aes256>>(key, iv, ciphertext),
        }
    }
}

/// A message digest used in signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    /// SHA-1 (accepted for old devices and SCEP clients; never chosen by Orchard when signing).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384 (certificate chains).
    Sha384,
    /// SHA-512 (certificate chains).
    Sha512,
}

impl DigestAlg {
    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            DigestAlg::Sha1 => SHA1,
            DigestAlg::Sha256 => SHA256,
            DigestAlg::Sha384 => SHA384,
            DigestAlg::Sha512 => SHA512,
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Result<Self, CmsError> {
        match *oid {
            SHA1 => Ok(DigestAlg::Sha1),
            SHA256 => Ok(DigestAlg::Sha256),
            SHA384 => Ok(DigestAlg::Sha384),
            SHA512 => Ok(DigestAlg::Sha512),
            _ => Err(CmsError::Unsupported {
                what: "digest",
                oid: oid.to_string(),
            }),
        }
    }

    pub(crate) fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        // RFC 5754: the parameters of SHA-2 identifiers are absent; SHA-1 likewise (RFC 3370).
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: None,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// An AlgorithmIdentifier with a NULL parameter (what RSA identifiers carry).
pub(crate) fn with_null(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// Readable name of a CMS content type, for error messages.
pub(crate) fn content_type_name(oid: &ObjectIdentifier) -> String {
    match *oid {
        ID_DATA => "data".into(),
        ID_SIGNED_DATA => "SignedData".into(),
        ID_ENVELOPED_DATA => "EnvelopedData".into(),
        other => other.to_string(),
    }
}

pub(crate) fn build(e: impl std::fmt::Display) -> CmsError {
    CmsError::Build(e.to_string())
}

pub(crate) fn to_der(value: &impl Encode) -> Result<Vec<u8>, CmsError> {
    value.to_der().map_err(build)
}

/// The digest a signature algorithm uses. `rsaEncryption` and `ecPublicKey` name no digest
/// (CMS SignerInfos use them with the separate digest algorithm), so `unnamed` is used then.
pub(crate) fn signature_digest(
    oid: &ObjectIdentifier,
    unnamed: Option<DigestAlg>,
) -> Result<DigestAlg, CmsError> {
    let named = match *oid {
        SHA1_WITH_RSA | ECDSA_WITH_SHA1 => Some(DigestAlg::Sha1),
        SHA256_WITH_RSA | ECDSA_WITH_SHA256 => Some(DigestAlg::Sha256),
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Some(DigestAlg::Sha384),
        SHA512_WITH_RSA => Some(DigestAlg::Sha512),
        RSA_ENCRYPTION | EC_PUBLIC_KEY => unnamed,
        _ => None,
    };
    named.ok_or_else(|| CmsError::Unsupported {
        what: "signature",
        oid: oid.to_string(),
    })
}
