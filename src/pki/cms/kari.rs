//! KeyAgreeRecipientInfo (RFC 5753) for P-256 recipients: ephemeral-static ECDH,
//! dhSinglePass-stdDH-sha256kdf, AES-128 key wrap (RFC 3394). SCEP needs it to answer a
//! requester whose key is EC.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, OriginatorIdentifierOrKey,
    OriginatorPublicKey, RecipientEncryptedKey,
};
use der::asn1::{BitString, ObjectIdentifier, OctetString};
use der::{Any, Sequence};
use p256::elliptic_curve::point::AffineCoordinates as _;
use rand::Rng as _;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use super::CmsError;
use super::algorithms::{DigestAlg, EC_PUBLIC_KEY, build, to_der};
use super::keys::{PublicKey, public_key};

const DH_SHA256_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.1");
const AES128_WRAP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.5");
const KW_IV: u64 = 0xA6A6_A6A6_A6A6_A6A6;

/// ECC-CMS-SharedInfo (RFC 5753 section 7.2), the KDF's other input.
#[derive(Sequence)]
struct SharedInfo {
    key_info: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    supp_pub_info: OctetString,
}

/// A recipient info wrapping `content_key` for the P-256 key of `recipient`.
pub(crate) fn ec_recipient(
    recipient: &Certificate,
    content_key: &[u8],
) -> Result<KeyAgreeRecipientInfo, CmsError> {
    let PublicKey::P256(their) = public_key(recipient)? else {
        return Err(CmsError::Certificate(
            "the certificate's key is not P-256".into(),
        ));
    };
    let ephemeral = random_p256();
    let z = shared_x(&ephemeral, their.as_affine());
    let kek = kdf(&z)?;
    let wrapped = wrap(&kek, content_key)?;
    let tbs = recipient.tbs_certificate();
    Ok(KeyAgreeRecipientInfo {
        version: CmsVersion::V3,
        originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
            algorithm: AlgorithmIdentifierOwned {
                oid: EC_PUBLIC_KEY,
                parameters: None,
            },
            public_key: BitString::from_bytes(
                ephemeral.verifying_key().to_sec1_point(false).as_bytes(),
            )
            .map_err(build)?,
        }),
        ukm: None,
        key_enc_alg: key_enc_alg()?,
        recipient_enc_keys: vec![RecipientEncryptedKey {
            rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            enc_key: OctetString::new(wrapped).map_err(build)?,
        }],
    })
}

/// Unwraps the content key from `kari` (addressed to `cert`) with our P-256 `key`.
pub(crate) fn ec_open(
    kari: &KeyAgreeRecipientInfo,
    key: &p256::ecdsa::SigningKey,
    cert: &Certificate,
) -> Result<Vec<u8>, CmsError> {
    if kari.key_enc_alg.oid != DH_SHA256_KDF {
        return Err(CmsError::Unsupported {
            what: "key agreement",
            oid: kari.key_enc_alg.oid.to_string(),
        });
    }
    let OriginatorIdentifierOrKey::OriginatorKey(orig) = &kari.originator else {
        return Err(CmsError::Malformed("the originator key is missing".into()));
    };
    let theirs = p256::ecdsa::VerifyingKey::from_sec1_bytes(orig.public_key.raw_bytes())
        .map_err(|_| CmsError::Malformed("the originator key is not a P-256 point".into()))?;
    let tbs = cert.tbs_certificate();
    let rek = kari
        .recipient_enc_keys
        .iter()
        .find(|r| match &r.rid {
            KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(isn) => {
                isn.issuer == *tbs.issuer() && isn.serial_number == *tbs.serial_number()
            }
            KeyAgreeRecipientIdentifier::RKeyId(_) => false,
        })
        .ok_or(CmsError::NotForUs)?;
    let kek = kdf(&shared_x(key, theirs.as_affine()))?;
    unwrap(&kek, rek.enc_key.as_bytes())
}

fn key_enc_alg() -> Result<AlgorithmIdentifierOwned, CmsError> {
    let wrap = AlgorithmIdentifierOwned {
        oid: AES128_WRAP,
        parameters: None,
    };
    Ok(AlgorithmIdentifierOwned {
        oid: DH_SHA256_KDF,
        parameters: Some(Any::encode_from(&wrap).map_err(build)?),
    })
}

fn random_p256() -> p256::ecdsa::SigningKey {
    let mut bytes = [0u8; 32];
    loop {
        rand::rng().fill_bytes(&mut bytes);
        // Fails only for zero or values above the group order (probability ~2^-32).
        if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
            return k;
        }
    }
}

fn shared_x(ours: &p256::ecdsa::SigningKey, theirs: &p256::AffinePoint) -> Vec<u8> {
    let point = (p256::ProjectivePoint::from(*theirs) * **ours.as_nonzero_scalar()).to_affine();
    point.x().to_vec()
}

/// ANSI X9.63 KDF with SHA-256 for a 128-bit key encryption key.
fn kdf(z: &[u8]) -> Result<Vec<u8>, CmsError> {
    let info = SharedInfo {
        key_info: AlgorithmIdentifierOwned {
            oid: AES128_WRAP,
            parameters: None,
        },
        supp_pub_info: OctetString::new(128u32.to_be_bytes()).map_err(build)?,
    };
    let mut input = z.to_vec();
    input.extend_from_slice(&1u32.to_be_bytes());
    input.extend_from_slice(&to_der(&info)?);
    Ok(DigestAlg::Sha256.digest(&input)[..16].to_vec())
}

/// RFC 3394 AES key wrap.
fn wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, CmsError> {
    if key.is_empty() || !key.len().is_multiple_of(8) {
        return Err(CmsError::Build(
            "a wrapped key must be whole 8-byte blocks".into(),
        ));
    }
    let aes = aes::Aes128::new_from_slice(kek).map_err(build)?;
    let mut a = KW_IV;
    let mut r: Vec<u64> = key.chunks(8).map(be_u64).collect();
    let n = r.len() as u64;
    for j in 0..6u64 {
        for (i, ri) in r.iter_mut().enumerate() {
            let mut block = aes::Block::default();
            block[..8].copy_from_slice(&a.to_be_bytes());
            block[8..].copy_from_slice(&ri.to_be_bytes());
            aes.encrypt_block(&mut block);
            a = be_u64(&block[..8]) ^ (n * j + i as u64 + 1);
            *ri = be_u64(&block[8..]);
        }
    }
    let mut out = a.to_be_bytes().to_vec();
    r.iter()
        .for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
    Ok(out)
}

/// RFC 3394 AES key unwrap; a wrong key or damaged input fails the integrity check.
fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, CmsError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(CmsError::Malformed(
            "the wrapped key has a wrong length".into(),
        ));
    }
    let aes = aes::Aes128::new_from_slice(kek).map_err(|_| CmsError::KeyUnwrap)?;
    let mut a = be_u64(&wrapped[..8]);
    let mut r: Vec<u64> = wrapped[8..].chunks(8).map(be_u64).collect();
    let n = r.len() as u64;
    for j in (0..6u64).rev() {
        for (i, ri) in r.iter_mut().enumerate().rev() {
            let mut block = aes::Block::default();
            block[..8].copy_from_slice(&(a ^ (n * j + i as u64 + 1)).to_be_bytes());
            block[8..].copy_from_slice(&ri.to_be_bytes());
            aes.decrypt_block(&mut block);
            a = be_u64(&block[..8]);
            *ri = be_u64(&block[8..]);
        }
    }
    if a != KW_IV {
        return Err(CmsError::KeyUnwrap);
    }
    Ok(r.iter().flat_map(|v| v.to_be_bytes()).collect())
}

/// Callers pass 8-byte chunks of lengths checked to be multiples of 8.
fn be_u64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_be_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3394_known_answer() {
        // RFC 3394 section 4.1: 128-bit data with a 128-bit KEK.
        let kek = hex::decode("000102030405060708090A0B0C0D0E0F").expect("hex");
        let key = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
        let wrapped = wrap(&kek, &key).expect("wrap");
        assert_eq!(
            hex::encode_upper(&wrapped),
            "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"
        );
        assert_eq!(unwrap(&kek, &wrapped).expect("unwrap"), key);
        let mut bad = wrapped.clone();
        bad[3] ^= 1;
        assert_eq!(unwrap(&kek, &bad), Err(CmsError::KeyUnwrap));
    }
}
