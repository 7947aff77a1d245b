//! EnvelopedData (RFC 5652 section 6) with RSA key transport: open and make.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::asn1::OctetString;
use der::{Any, Decode, EncodingRules};
use rand::Rng as _;
use rsa::PrivateKey as RsaPrivateKey;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::CmsError;
use super::algorithms::{
    Cipher, ID_DATA, ID_ENVELOPED_DATA, RSA_ENCRYPTION, build, content_type_name, to_der, with_null,
};
use super::kari::{ec_open, ec_recipient};
use super::keys::{PublicKey, SignerKey, public_key};

/// Decrypts a CMS EnvelopedData (DER or BER, as a ContentInfo) addressed to `cert`, whose
/// private key is `key`, and returns the plaintext content.
///
/// Errors: [`CmsError::Malformed`] for truncated or corrupted input, [`CmsError::NotForUs`] when
/// no recipient matches `cert`, [`CmsError::KeyUnwrap`] when `key` cannot unwrap the content key,
/// [`CmsError::BadPadding`] when the content does not decrypt cleanly,
/// [`CmsError::Unsupported`] for other algorithms.
pub fn decrypt_enveloped(
    bytes: &[u8],
    key: &RsaPrivateKey,
    cert: &Certificate,
) -> Result<Vec<u8>, CmsError> {
    open_enveloped(bytes, RecipientKey::Rsa(key), cert).map(|(plain, _)| plain)
}

/// The private key a recipient opens an envelope with.
#[derive(Clone, Copy)]
pub(crate) enum RecipientKey<'a> {
    /// Key transport (KeyTransRecipientInfo).
    Rsa(&'a RsaPrivateKey),
    /// Key agreement (KeyAgreeRecipientInfo).
    P256(&'a p256::ecdsa::SigningKey),
}

impl<'a> From<&'a SignerKey> for RecipientKey<'a> {
    fn from(key: &'a SignerKey) -> Self {
        match key {
            SignerKey::Rsa(k) => RecipientKey::Rsa(k),
            SignerKey::P256(k) => RecipientKey::P256(k),
        }
    }
}

/// [`decrypt_enveloped`], also naming the content cipher (SCEP answers with the same one).
pub(crate) fn open_enveloped(
    bytes: &[u8],
    key: RecipientKey<'_>,
    cert: &Certificate,
) -> Result<(Vec<u8>, Cipher), CmsError> {
    let env = parse_enveloped(bytes)?;
    let content_key = match key {
        RecipientKey::Rsa(key) => {
            let ktri = find_recipient(&env.recip_infos, cert)?;
            if ktri.key_enc_alg.oid != RSA_ENCRYPTION {
                return Err(CmsError::Unsupported {
                    what: "key transport",
                    oid: ktri.key_enc_alg.oid.to_string(),
                });
            }
            key.pkcs1v15_decrypt(ktri.enc_key.as_bytes())
                .map_err(|_| CmsError::KeyUnwrap)?
        }
        RecipientKey::P256(key) => {
            let kari = env
                .recip_infos
                .0
                .iter()
                .find_map(|ri| match ri {
                    RecipientInfo::Kari(k) => Some(k),
                    _ => None,
                })
                .ok_or(CmsError::NotForUs)?;
            ec_open(kari, key, cert)?
        }
    };
    decrypt_content(&env, &content_key)
}

/// Like [`decrypt_enveloped`] for a caller that holds only the RSA private key, not the
/// certificate (`orchard token inspect --key`): tries every RSA key-transport recipient.
pub fn decrypt_enveloped_with_key(bytes: &[u8], key: &RsaPrivateKey) -> Result<Vec<u8>, CmsError> {
    let env = parse_enveloped(bytes)?;
    let mut last = CmsError::NotForUs;
    for ri in env.recip_infos.0.iter() {
        let RecipientInfo::Ktri(ktri) = ri else {
            continue;
        };
        if ktri.key_enc_alg.oid != RSA_ENCRYPTION {
            continue;
        }
        match key.pkcs1v15_decrypt(ktri.enc_key.as_bytes()) {
            Ok(content_key) => match decrypt_content(&env, &content_key) {
                Ok((plain, _)) => return Ok(plain),
                Err(e) => last = e,
            },
            Err(_) => last = CmsError::KeyUnwrap,
        }
    }
    Err(last)
}

/// Decrypts the content of `env` with the unwrapped content-encryption key.
fn decrypt_content(env: &EnvelopedData, content_key: &[u8]) -> Result<(Vec<u8>, Cipher), CmsError> {
    let eci = &env.encrypted_content;
    let cipher = Cipher::from_oid(&eci.content_enc_alg.oid)?;
    let iv = eci
        .content_enc_alg
        .parameters
        .as_ref()
        .ok_or_else(|| CmsError::Malformed("the cipher has no IV".into()))?
        .decode_as_encoding::<OctetString>(EncodingRules::Ber)?;
    let ciphertext = eci.encrypted_content.as_ref().ok_or(CmsError::NoContent)?;
    let plain = cipher.decrypt(content_key, iv.as_bytes(), ciphertext.as_bytes())?;
    Ok((plain, cipher))
}

/// Encrypts `content` (as id-data) for `recipient`'s RSA key with a fresh random key of
/// `cipher`, and returns the ContentInfo as DER. The recipient is named by issuer and serial.
pub fn encrypt_enveloped(
    content: &[u8],
    recipient: &Certificate,
    cipher: Cipher,
) -> Result<Vec<u8>, CmsError> {
    let mut rng = rand::rng();
    let mut key = vec![0u8; cipher.key_len()];
    rng.fill_bytes(&mut key);
    let mut iv = vec![0u8; cipher.iv_len()];
    rng.fill_bytes(&mut iv);
    let ciphertext = cipher.encrypt(&key, &iv, content)?;

    // RSA recipients get key transport (version 0), P-256 ones key agreement (version 2).
    let (version, info) = match public_key(recipient)? {
        PublicKey::Rsa(public) => {
            let tbs = recipient.tbs_certificate();
            let ktri = KeyTransRecipientInfo {
                version: CmsVersion::V0,
                rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                    issuer: tbs.issuer().clone(),
                    serial_number: tbs.serial_number().clone(),
                }),
                key_enc_alg: with_null(RSA_ENCRYPTION),
                enc_key: OctetString::new(public.pkcs1v15_encrypt(&key).map_err(build)?)
                    .map_err(build)?,
            };
            (CmsVersion::V0, RecipientInfo::Ktri(ktri))
        }
        PublicKey::P256(_) => (
            CmsVersion::V2,
            RecipientInfo::Kari(ec_recipient(recipient, &key)?),
        ),
    };
    let env = EnvelopedData {
        version,
        originator_info: None,
        recip_infos: RecipientInfos::try_from(vec![info]).map_err(build)?,
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: cipher.algorithm_identifier(&iv)?,
            encrypted_content: Some(OctetString::new(ciphertext).map_err(build)?),
        },
        unprotected_attrs: None,
    };
    to_der(&ContentInfo {
        content_type: ID_ENVELOPED_DATA,
        content: Any::encode_from(&env).map_err(build)?,
    })
}

/// Parses a ContentInfo holding EnvelopedData, accepting BER (indefinite lengths, chunked
/// OCTET STRINGs) and DER.
fn parse_enveloped(bytes: &[u8]) -> Result<EnvelopedData, CmsError> {
    let ci = ContentInfo::from_ber(bytes)?;
    if ci.content_type != ID_ENVELOPED_DATA {
        return Err(CmsError::WrongContentType {
            expected: "EnvelopedData",
            found: content_type_name(&ci.content_type),
        });
    }
    Ok(ci
        .content
        .decode_as_encoding::<EnvelopedData>(EncodingRules::Ber)?)
}

fn find_recipient<'a>(
    infos: &'a RecipientInfos,
    cert: &Certificate,
) -> Result<&'a KeyTransRecipientInfo, CmsError> {
    let tbs = cert.tbs_certificate();
    let ski = tbs
        .get_extension::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .map(|(_, ski)| ski);
    infos
        .0
        .iter()
        .filter_map(|ri| match ri {
            RecipientInfo::Ktri(k) => Some(k),
            _ => None,
        })
        .find(|k| match &k.rid {
            RecipientIdentifier::IssuerAndSerialNumber(isn) => {
                isn.serial_number == *tbs.serial_number() && isn.issuer == *tbs.issuer()
            }
            RecipientIdentifier::SubjectKeyIdentifier(id) => ski.as_ref() == Some(id),
        })
        .ok_or(CmsError::NotForUs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::cms::{load_certificate, load_rsa_private_key, smime_unwrap};

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/apple-dep/synthetic"
    );

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DIR}/{name}")).expect("test vector present")
    }

    fn dep_key() -> (RsaPrivateKey, Certificate) {
        let key = load_rsa_private_key(&read("dep_key.pem")).expect("key");
        let cert = load_certificate(&read("dep_cert.pem")).expect("cert");
        (key, cert)
    }

    #[test]
    fn apple_style_tokens_decrypt_to_the_exact_plaintext() {
        let (key, cert) = dep_key();
        let expected = read("token_inner_plaintext.txt");
        for name in [
            "token_des3_ber_smime.p7m",
            "token_aes128_der_smime.p7m",
            "token_aes256_ber_smime.p7m",
        ] {
            let der = smime_unwrap(&read(name)).expect(name);
            let plain = decrypt_enveloped(&der, &key, &cert).expect(name);
            assert_eq!(plain, expected, "{name}");
        }
    }

    #[test]
    fn round_trip_every_cipher() {
        let (key, cert) = dep_key();
        for cipher in Cipher::ALL {
            for len in [0usize, 1, 15, 16, 17, 1000] {
                let content: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let der = encrypt_enveloped(&content, &cert, cipher).expect("encrypt");
                assert_eq!(
                    decrypt_enveloped(&der, &key, &cert).expect("decrypt"),
                    content
                );
            }
        }
    }

    #[test]
    fn truncated_input_is_malformed_never_a_panic() {
        let (key, cert) = dep_key();
        for name in ["token_des3_ber_smime.p7m", "token_aes128_der_smime.p7m"] {
            let der = smime_unwrap(&read(name)).expect(name);
            for cut in 0..der.len() {
                let err = decrypt_enveloped(&der[..cut], &key, &cert).expect_err("truncated");
                assert!(
                    matches!(err, CmsError::Malformed(_) | CmsError::BadPadding),
                    "cut at {cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let (key, cert) = dep_key();
        let der = smime_unwrap(&read("token_aes256_ber_smime.p7m")).expect("p7m");
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x5a;
            // CBC has no integrity check, so some flips decrypt to garbage: only a panic fails.
            let _ = decrypt_enveloped(&bad, &key, &cert);
        }
    }

    #[test]
    fn a_truncated_file_is_a_clear_error() {
        let (key, cert) = dep_key();
        let text = read("token_des3_ber_smime.p7m");
        // Cut on a line boundary so the base64 itself stays valid.
        let cut = text.len() / 2;
        let cut = cut
            - text[..cut]
                .iter()
                .rev()
                .position(|b| *b == b'\n')
                .unwrap_or(0);
        let der = smime_unwrap(&text[..cut]).expect("valid base64 prefix");
        let err = decrypt_enveloped(&der, &key, &cert).expect_err("truncated");
        assert!(matches!(err, CmsError::Malformed(_)), "{err:?}");
        assert!(err.to_string().contains("damaged or cut short"));
    }

    #[test]
    fn corrupted_last_block_is_bad_padding() {
        let (key, cert) = dep_key();
        let mut der = smime_unwrap(&read("token_aes128_der_smime.p7m")).expect("p7m");
        // DER, and the encrypted content is the last element: its last byte is the file's.
        let last = der.len() - 1;
        der[last] ^= 0xff;
        assert_eq!(
            decrypt_enveloped(&der, &key, &cert),
            Err(CmsError::BadPadding)
        );
    }

    #[test]
    fn wrong_key_or_certificate_are_distinct_errors() {
        let (key, cert) = dep_key();
        let der = smime_unwrap(&read("token_aes128_der_smime.p7m")).expect("p7m");
        let other_key = RsaPrivateKey::new(&mut rand::rng(), 2048).expect("keygen");
        // Right certificate, wrong private key.
        assert_eq!(
            decrypt_enveloped(&der, &other_key, &cert),
            Err(CmsError::KeyUnwrap)
        );
        // A certificate the token was not encrypted for.
        let other = other_certificate();
        assert_eq!(
            decrypt_enveloped(&der, &key, &other),
            Err(CmsError::NotForUs)
        );
    }

    #[test]
    fn signed_data_is_not_taken_for_an_envelope() {
        let (_, cert) = dep_key();
        let ci = ContentInfo {
            content_type: super::super::algorithms::ID_SIGNED_DATA,
            content: Any::encode_from(&OctetString::new(vec![1u8]).expect("os")).expect("any"),
        };
        let der = to_der(&ci).expect("der");
        let (key, _) = dep_key();
        assert!(matches!(
            decrypt_enveloped(&der, &key, &cert),
            Err(CmsError::WrongContentType { .. })
        ));
    }

    fn other_certificate() -> Certificate {
        let kp = rcgen::KeyPair::generate().expect("keypair");
        let params = rcgen::CertificateParams::new(vec!["other".into()]).expect("params");
        let der = params.self_signed(&kp).expect("self-signed").der().to_vec();
        Certificate::from_der(&der).expect("decode")
    }
}
