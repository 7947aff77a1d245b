//! Making X.509 certificates signed with a [`SignerKey`]: SCEP device identities, throwaway
//! self-signed SCEP requester certificates, and test authorities.

use der::asn1::{BitString, OctetString, UtcTime};
use der::oid::AssociatedOid;
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::CmsError;
use super::algorithms::{DigestAlg, build, to_der};
use super::keys::SignerKey;

/// id-kp-clientAuth (RFC 5280 4.2.1.12).
const ID_KP_CLIENT_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// What a certificate is for; decides its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// A certificate authority (basicConstraints CA, keyCertSign).
    Authority,
    /// A TLS/SCEP client identity: digitalSignature + keyEncipherment, EKU clientAuth.
    ClientIdentity,
    /// A plain end-entity key (signing and key encipherment, no EKU), e.g. a SCEP requester.
    EndEntity,
}

/// The fields of a certificate to make.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject name.
    pub subject: Name,
    /// Serial number as a positive integer.
    pub serial: u64,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Extensions profile.
    pub kind: CertKind,
}

/// Makes a self-signed certificate for `key`.
pub fn self_signed_certificate(spec: &CertSpec, key: &SignerKey) -> Result<Certificate, CmsError> {
    let spki = spki_of(key)?;
    build_certificate(spec, &spki, None, key)
}

/// Makes a certificate for the public key `subject_key` (DER SubjectPublicKeyInfo), signed by
/// `issuer` whose private key is `issuer_key`.
pub fn issue_certificate(
    spec: &CertSpec,
    subject_key: &SubjectPublicKeyInfoOwned,
    issuer: &Certificate,
    issuer_key: &SignerKey,
) -> Result<Certificate, CmsError> {
    build_certificate(spec, subject_key, Some(issuer), issuer_key)
}

pub(crate) fn spki_of(key: &SignerKey) -> Result<SubjectPublicKeyInfoOwned, CmsError> {
    SubjectPublicKeyInfoOwned::from_der(&key.public_key_der()?).map_err(build)
}

/// TBSCertificate, encoded by hand because x509-cert keeps its fields private.
#[derive(Sequence)]
struct Tbs {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: u8,
    serial_number: SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

#[derive(Sequence)]
struct SignedCert {
    tbs: Tbs,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

fn build_certificate(
    spec: &CertSpec,
    subject_key: &SubjectPublicKeyInfoOwned,
    issuer: Option<&Certificate>,
    signer: &SignerKey,
) -> Result<Certificate, CmsError> {
    if spec.not_after <= spec.not_before {
        return Err(CmsError::Build(
            "the certificate would end before it starts".into(),
        ));
    }
    let signature = signer.certificate_signature_algorithm(DigestAlg::Sha256);
    let ski = key_identifier(subject_key);
    let aki = match issuer {
        Some(ca) => key_identifier(ca.tbs_certificate().subject_public_key_info()),
        None => ski.clone(),
    };
    let (usages, ca) = match spec.kind {
        CertKind::Authority => (
            KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature,
            true,
        ),
        CertKind::ClientIdentity | CertKind::EndEntity => (
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
            false,
        ),
    };
    let mut extensions = vec![
        extension(
            &BasicConstraints {
                ca,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&KeyUsage(usages), true)?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(ski).map_err(build)?),
            false,
        )?,
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(aki).map_err(build)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?,
    ];
    if spec.kind == CertKind::ClientIdentity {
        extensions.push(extension(
            &ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]),
            false,
        )?);
    }
    let tbs = Tbs {
        version: 2,
        serial_number: SerialNumber::new(&positive_integer(spec.serial)).map_err(build)?,
        signature: signature.clone(),
        issuer: issuer.map_or_else(
            || spec.subject.clone(),
            |c| c.tbs_certificate().subject().clone(),
        ),
        validity: Validity::new(x509_time(spec.not_before)?, x509_time(spec.not_after)?),
        subject: spec.subject.clone(),
        subject_public_key_info: subject_key.clone(),
        extensions: Some(extensions),
    };
    let tbs_der = to_der(&tbs)?;
    let sig = signer.sign_prehash(DigestAlg::Sha256, &DigestAlg::Sha256.digest(&tbs_der))?;
    let cert = SignedCert {
        tbs,
        signature_algorithm: signature,
        signature: BitString::from_bytes(&sig).map_err(build)?,
    };
    Certificate::from_der(&to_der(&cert)?).map_err(build)
}

fn extension<T: Encode + AssociatedOid>(value: &T, critical: bool) -> Result<Extension, CmsError> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(to_der(value)?).map_err(build)?,
    })
}

/// RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    DigestAlg::Sha1.digest(spki.subject_public_key.raw_bytes())
}

/// Big-endian bytes of a positive INTEGER (leading zero when the top bit is set).
fn positive_integer(n: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = n
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    bytes
}

/// RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after.
pub(crate) fn x509_time(t: OffsetDateTime) -> Result<Time, CmsError> {
    let secs = u64::try_from(t.unix_timestamp())
        .map_err(|_| CmsError::Build("dates before 1970 are not supported".into()))?;
    let dt =
        der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)).map_err(build)?;
    if dt.year() < 2050 {
        Ok(Time::UtcTime(UtcTime::from_date_time(dt).map_err(build)?))
    } else {
        Ok(Time::GeneralTime(
            der::asn1::GeneralizedTime::from_date_time(dt),
        ))
    }
}
