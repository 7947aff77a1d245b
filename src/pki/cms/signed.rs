//! SignedData (RFC 5652 section 5): check detached and attached signatures, make them.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignedData,
    SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, EncodingRules, Tag, Tagged};
use x509_cert::Certificate;
use x509_cert::attr::{Attribute, Attributes};
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::CmsError;
use super::algorithms::{
    DigestAlg, ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA, build,
    content_type_name, signature_digest, to_der,
};
use super::keys::{SignerKey, public_key};

/// Largest number of signers or certificates looked at in one message.
const MAX_ITEMS: usize = 32;

/// A signature that verified: who signed, with what, and the certificates the message carried.
///
/// The signer is only known to hold the key of `signer`; whether `signer` is trusted is a
/// separate question for [`verify_chain`](super::verify_chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The certificate whose key made the signature.
    pub signer: Certificate,
    /// Every certificate in the message (the signer's included), for chain building.
    pub certificates: Vec<Certificate>,
    /// The digest algorithm the signer used.
    pub digest: DigestAlg,
}

/// Checks a detached SignedData (for example the base64-decoded `Mdm-Signature` header) over
/// `content` (the exact HTTP body). Returns the signer.
pub fn verify_detached(signature: &[u8], content: &[u8]) -> Result<Verified, CmsError> {
    let msg = parse_signed(signature, Some(content))?;
    Ok(msg.verified)
}

/// Checks a SignedData that carries its content (Apple's signed MachineInfo, a signed
/// `.mobileconfig`) and returns the content and the signer.
pub fn verify_attached(der: &[u8]) -> Result<(Vec<u8>, Verified), CmsError> {
    let msg = parse_signed(der, None)?;
    let content = msg.content.ok_or(CmsError::ContentPresence(
        "the signed message carries no content",
    ))?;
    Ok((content, msg.verified))
}

/// Signs `body` with SHA-256 and returns a detached SignedData (DER) holding `cert`: the value
/// of an `Mdm-Signature` header once base64-encoded.
pub fn sign_detached(
    body: &[u8],
    cert: &Certificate,
    key: &SignerKey,
) -> Result<Vec<u8>, CmsError> {
    sign_with(
        body,
        cert,
        key,
        &SignOptions {
            detached: true,
            ..SignOptions::default()
        },
    )
}

/// Signs `content` with SHA-256 and returns a SignedData (DER) that carries it, `cert` and
/// `certs_to_include` (intermediates, so receivers can build the chain).
pub fn sign_attached(
    content: &[u8],
    cert: &Certificate,
    key: &SignerKey,
    certs_to_include: &[Certificate],
) -> Result<Vec<u8>, CmsError> {
    sign_with(
        content,
        cert,
        key,
        &SignOptions {
            extra_certs: certs_to_include.to_vec(),
            ..SignOptions::default()
        },
    )
}

/// Knobs for [`sign_with`], used by SCEP.
#[derive(Debug, Clone)]
pub(crate) struct SignOptions {
    pub digest: DigestAlg,
    pub detached: bool,
    pub extra_certs: Vec<Certificate>,
    /// Signed attributes added to contentType and messageDigest (SCEP's messageType, ...).
    pub extra_attrs: Vec<Attribute>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            digest: DigestAlg::Sha256,
            detached: false,
            extra_certs: Vec::new(),
            extra_attrs: Vec::new(),
        }
    }
}

/// A parsed and signature-checked SignedData.
#[derive(Debug, Clone)]
pub(crate) struct SignedMessage {
    /// The encapsulated content, when attached.
    pub content: Option<Vec<u8>>,
    pub verified: Verified,
    /// The signer's signed attributes (empty when it signed the content directly).
    pub signed_attrs: Vec<Attribute>,
}

/// A decoded SignedData whose signature is not checked yet: SCEP reads its attributes first so
/// it can answer a bad signature with a signed failure.
#[derive(Debug, Clone)]
pub(crate) struct Unverified {
    pub content: Option<Vec<u8>>,
    pub certificates: Vec<Certificate>,
    pub signed_attrs: Vec<Attribute>,
    econtent_type: ObjectIdentifier,
    signer_info: Option<SignerInfo>,
}

impl Unverified {
    /// Decodes a ContentInfo holding SignedData (BER or DER) without checking anything.
    pub fn decode(bytes: &[u8]) -> Result<Self, CmsError> {
        let ci = ContentInfo::from_ber(bytes)?;
        if ci.content_type != ID_SIGNED_DATA {
            return Err(CmsError::WrongContentType {
                expected: "SignedData",
                found: content_type_name(&ci.content_type),
            });
        }
        let sd = ci
            .content
            .decode_as_encoding::<SignedData>(EncodingRules::Ber)?;
        let content = sd
            .encap_content_info
            .econtent
            .as_ref()
            .map(content_octets)
            .transpose()?;
        let certificates = sd
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .take(MAX_ITEMS)
            .filter_map(|c| match c {
                CertificateChoices::Certificate(c) => Some(c.clone()),
                CertificateChoices::Other(_) => None,
            })
            .collect();
        let signer_info = sd.signer_infos.0.iter().next().cloned();
        let signed_attrs = signer_info
            .as_ref()
            .and_then(|si| si.signed_attrs.as_ref())
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        Ok(Unverified {
            content,
            certificates,
            signed_attrs,
            econtent_type: sd.encap_content_info.econtent_type,
            signer_info,
        })
    }

    /// The certificate the signer identifies itself with, if the message carries it.
    pub fn signer_certificate(&self) -> Result<&Certificate, CmsError> {
        let si = self.signer_info.as_ref().ok_or(CmsError::NoSigner)?;
        find_signer(&self.certificates, &si.sid)
    }

    /// The signer's digest algorithm.
    pub fn digest(&self) -> Result<DigestAlg, CmsError> {
        let si = self.signer_info.as_ref().ok_or(CmsError::NoSigner)?;
        DigestAlg::from_oid(&si.digest_alg.oid)
    }

    /// Checks the first signer's signature over `detached` content, or over the attached
    /// content when `detached` is None.
    pub fn verify(self, detached: Option<&[u8]>) -> Result<SignedMessage, CmsError> {
        let content: &[u8] = match (&self.content, detached) {
            (Some(_), Some(_)) => {
                return Err(CmsError::ContentPresence(
                    "a detached signature was expected but the message carries its own content",
                ));
            }
            (Some(c), None) => c,
            (None, Some(c)) => c,
            (None, None) => {
                return Err(CmsError::ContentPresence(
                    "the signed message carries no content",
                ));
            }
        };
        let si = self.signer_info.as_ref().ok_or(CmsError::NoSigner)?;
        let signer = self.signer_certificate()?.clone();
        let digest = self.digest()?;
        let sig_digest = signature_digest(&si.signature_algorithm.oid, Some(digest))?;
        let signed_bytes = match &si.signed_attrs {
            Some(attrs) => {
                check_signed_attrs(attrs, &self.econtent_type, digest, content)?;
                to_der(attrs)?
            }
            None => content.to_vec(),
        };
        let hash = sig_digest.digest(&signed_bytes);
        let key = public_key(&signer)?;
        if !key.verify_prehash(sig_digest, &hash, si.signature.as_bytes()) {
            return Err(CmsError::BadSignature);
        }
        Ok(SignedMessage {
            content: self.content,
            verified: Verified {
                signer,
                certificates: self.certificates,
                digest,
            },
            signed_attrs: self.signed_attrs,
        })
    }
}

/// Parses a SignedData and checks its signature (see [`Unverified::verify`]).
pub(crate) fn parse_signed(
    bytes: &[u8],
    detached: Option<&[u8]>,
) -> Result<SignedMessage, CmsError> {
    Unverified::decode(bytes)?.verify(detached)
}

/// Makes a SignedData (DER ContentInfo) over `content` typed id-data.
pub(crate) fn sign_with(
    content: &[u8],
    cert: &Certificate,
    key: &SignerKey,
    opts: &SignOptions,
) -> Result<Vec<u8>, CmsError> {
    let digest = opts.digest;
    let mut attrs = vec![
        attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).map_err(build)?),
        attribute(
            ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(digest.digest(content)).map_err(build)?)
                .map_err(build)?,
        ),
    ];
    attrs.extend(opts.extra_attrs.iter().cloned());
    let attrs = Attributes::try_from(attrs).map_err(build)?;
    let hash = digest.digest(&to_der(&attrs)?);
    let signature = key.sign_prehash(digest, &hash)?;

    let tbs = cert.tbs_certificate();
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: digest.algorithm_identifier(),
        signed_attrs: Some(attrs),
        signature_algorithm: key.signature_algorithm(digest),
        signature: OctetString::new(signature).map_err(build)?,
        unsigned_attrs: None,
    };
    let mut certs = vec![cert.clone()];
    certs.extend(opts.extra_certs.iter().filter(|c| *c != cert).cloned());
    let econtent = if opts.detached {
        None
    } else {
        Some(Any::encode_from(&OctetString::new(content).map_err(build)?).map_err(build)?)
    };
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: DigestAlgorithmIdentifiers::try_from(vec![
            digest.algorithm_identifier(),
        ])
        .map_err(build)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent,
        },
        certificates: Some(certificate_set(&certs)?),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(build)?,
    };
    signed_data_der(&sd)
}

/// A "certs-only" degenerate SignedData (no signers, no content), as SCEP's CertRep content
/// and GetCACert with several certificates use.
pub(crate) fn certs_only(certs: &[Certificate]) -> Result<Vec<u8>, CmsError> {
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: DigestAlgorithmIdentifiers::try_from(Vec::new()).map_err(build)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(certificate_set(certs)?),
        crls: None,
        signer_infos: SignerInfos::try_from(Vec::new()).map_err(build)?,
    };
    signed_data_der(&sd)
}

/// The certificates of a SignedData, without checking anything (certs-only messages).
pub(crate) fn certificates_of(bytes: &[u8]) -> Result<Vec<Certificate>, CmsError> {
    Ok(Unverified::decode(bytes)?.certificates)
}

/// Builds one attribute with a single value.
pub(crate) fn attribute(oid: ObjectIdentifier, value: Any) -> Attribute {
    let mut values = SetOfVec::new();
    // A fresh set with one element cannot be out of order or duplicated.
    let _ = values.insert(value);
    Attribute { oid, values }
}

/// The single value of the attribute `oid`, if present.
pub(crate) fn attribute_value<'a>(
    attrs: &'a [Attribute],
    oid: &ObjectIdentifier,
) -> Option<&'a Any> {
    attrs
        .iter()
        .find(|a| a.oid == *oid)
        .and_then(|a| a.values.iter().next())
}

fn signed_data_der(sd: &SignedData) -> Result<Vec<u8>, CmsError> {
    to_der(&ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(sd).map_err(build)?,
    })
}

fn certificate_set(certs: &[Certificate]) -> Result<CertificateSet, CmsError> {
    CertificateSet::try_from(
        certs
            .iter()
            .cloned()
            .map(CertificateChoices::Certificate)
            .collect::<Vec<_>>(),
    )
    .map_err(build)
}

/// The bytes of the encapsulated content: the OCTET STRING's contents (chunks joined), or for
/// other content types the raw value octets (PKCS#7 v1.5 style).
fn content_octets(any: &Any) -> Result<Vec<u8>, CmsError> {
    if any.tag() == Tag::OctetString {
        let os = any.decode_as_encoding::<OctetString>(EncodingRules::Ber)?;
        return Ok(os.as_bytes().to_vec());
    }
    Ok(any.value().to_vec())
}

fn find_signer<'a>(
    certs: &'a [Certificate],
    sid: &SignerIdentifier,
) -> Result<&'a Certificate, CmsError> {
    certs
        .iter()
        .find(|c| {
            let tbs = c.tbs_certificate();
            match sid {
                SignerIdentifier::IssuerAndSerialNumber(isn) => {
                    isn.serial_number == *tbs.serial_number() && isn.issuer == *tbs.issuer()
                }
                SignerIdentifier::SubjectKeyIdentifier(id) => tbs
                    .get_extension::<SubjectKeyIdentifier>()
                    .ok()
                    .flatten()
                    .is_some_and(|(_, ski)| ski == *id),
            }
        })
        .ok_or(CmsError::SignerCertMissing)
}

/// RFC 5652 5.3: with signed attributes, contentType and messageDigest must be present and
/// must match the content.
fn check_signed_attrs(
    attrs: &Attributes,
    econtent_type: &ObjectIdentifier,
    digest: DigestAlg,
    content: &[u8],
) -> Result<(), CmsError> {
    let attrs: Vec<Attribute> = attrs.iter().cloned().collect();
    let ct = attribute_value(&attrs, &ID_CONTENT_TYPE)
        .ok_or(CmsError::MissingAttribute("contentType"))?
        .decode_as::<ObjectIdentifier>()?;
    if ct != *econtent_type {
        return Err(CmsError::ContentTypeMismatch);
    }
    let md = attribute_value(&attrs, &ID_MESSAGE_DIGEST)
        .ok_or(CmsError::MissingAttribute("messageDigest"))?
        .decode_as::<OctetString>()?;
    if md.as_bytes() != digest.digest(content).as_slice() {
        return Err(CmsError::DigestMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::cms::testutil::{ec_signer, rsa_signer};

    #[test]
    fn detached_round_trip_rsa_and_p256() {
        for (cert, key) in [rsa_signer("rsa"), ec_signer("ec")] {
            let body = b"<plist>checkin</plist>";
            let sig = sign_detached(body, &cert, &key).expect("sign");
            let v = verify_detached(&sig, body).expect("verify");
            assert_eq!(v.signer, cert);
            assert_eq!(v.digest, DigestAlg::Sha256);
            assert_eq!(
                verify_detached(&sig, b"<plist>checkout</plist>"),
                Err(CmsError::DigestMismatch)
            );
            assert!(matches!(
                verify_attached(&sig),
                Err(CmsError::ContentPresence(_))
            ));
        }
    }

    #[test]
    fn attached_round_trip_carries_content_and_intermediates() {
        let (ca, _) = rsa_signer("ca");
        for (cert, key) in [rsa_signer("rsa"), ec_signer("ec")] {
            let der =
                sign_attached(b"profile", &cert, &key, std::slice::from_ref(&ca)).expect("sign");
            let (content, v) = verify_attached(&der).expect("verify");
            assert_eq!(content, b"profile");
            assert_eq!(v.signer, cert);
            assert_eq!(v.certificates.len(), 2);
            assert!(matches!(
                verify_detached(&der, b"profile"),
                Err(CmsError::ContentPresence(_))
            ));
        }
    }

    #[test]
    fn sha1_and_unsigned_attribute_forms_verify() {
        for (cert, key) in [rsa_signer("rsa"), ec_signer("ec")] {
            let opts = SignOptions {
                digest: DigestAlg::Sha1,
                ..SignOptions::default()
            };
            let der = sign_with(b"old", &cert, &key, &opts).expect("sign");
            let (content, v) = verify_attached(&der).expect("sha1");
            assert_eq!(
                (content.as_slice(), v.digest),
                (&b"old"[..], DigestAlg::Sha1)
            );

            // Without signed attributes the signature covers the content itself.
            let hash = DigestAlg::Sha256.digest(b"bare");
            let sig = key.sign_prehash(DigestAlg::Sha256, &hash).expect("sig");
            let der = strip_attrs(
                &sign_attached(b"bare", &cert, &key, &[]).expect("sign"),
                sig,
            );
            let (content, v) = verify_attached(&der).expect("no attributes");
            assert_eq!((content.as_slice(), v.signer), (&b"bare"[..], cert.clone()));
        }
    }

    #[test]
    fn tampering_is_detected() {
        let (cert, key) = rsa_signer("rsa");
        let der = sign_attached(b"original content", &cert, &key, &[]).expect("sign");
        // Change the content: digest mismatch.
        let pos = find(&der, b"original").expect("content inside");
        let mut bad = der.clone();
        bad[pos] = b'O';
        assert_eq!(
            verify_attached(&bad).map(|_| ()),
            Err(CmsError::DigestMismatch)
        );
        // Change the signature's last byte: bad signature.
        let mut bad = der.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            verify_attached(&bad).map(|_| ()),
            Err(CmsError::BadSignature)
        );
        // Another key's certificate in place of the signer's: signer missing.
        let (other, okey) = rsa_signer("other");
        let der2 = sign_attached(b"x", &other, &okey, &[]).expect("sign");
        assert!(verify_attached(&der2).is_ok());
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let (cert, key) = ec_signer("ec");
        let der = sign_attached(b"content", &cert, &key, &[]).expect("sign");
        for cut in 0..der.len() {
            assert!(verify_attached(&der[..cut]).is_err());
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xa5;
            let _ = verify_attached(&bad);
            let _ = verify_detached(&bad, b"content");
        }
        assert!(matches!(
            verify_detached(b"", b""),
            Err(CmsError::Malformed(_))
        ));
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    /// Re-encodes a SignedData without signed attributes, with `sig` as the signature.
    fn strip_attrs(der: &[u8], sig: Vec<u8>) -> Vec<u8> {
        let ci = ContentInfo::from_der(der).expect("ci");
        let mut sd = ci.content.decode_as::<SignedData>().expect("sd");
        let mut si: Vec<SignerInfo> = sd.signer_infos.0.iter().cloned().collect();
        si[0].signed_attrs = None;
        si[0].signature = OctetString::new(sig).expect("os");
        sd.signer_infos = SignerInfos::try_from(si).expect("set");
        signed_data_der(&sd).expect("der")
    }
}
