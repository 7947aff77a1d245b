//! SCEP (RFC 8894) messages as pure functions: the CA side Orchard's `/scep` endpoint uses, and
//! the client side the simulated Macs use. No HTTP here (the `mdm` module adapts it).
//!
//! # CA side
//! - [`ca_caps`]: the `GetCACaps` answer text.
//! - [`ca_cert_response`]: the `GetCACert` answer (content type and body).
//! - [`parse_pki_operation`]: opens a `PKIOperation` (SignedData by the requester's throwaway
//!   certificate, around EnvelopedData for the CA, around a PKCS#10 CSR) into a [`PkiRequest`]
//!   with messageType, transactionID, senderNonce, the CSR and its challenge password. The
//!   caller checks the challenge. A request that can be answered but not granted gives
//!   [`ScepError::Refused`] carrying the [`FailInfo`] and the [`ReplyTo`] needed to answer.
//! - [`issue_device_certificate`]: a one-purpose client-auth certificate for a CSR.
//! - [`cert_rep_success`] / [`cert_rep_failure`]: the signed `CertRep` answers.
//!
//! # Client side
//! - [`build_pkcs_req`]: a `PKCSReq` from a key, a subject, a challenge and the CA certificate.
//! - [`parse_cert_rep`]: the issued certificate (or the failure) from a `CertRep`.
//!
//! Accepted: SHA-1 and SHA-256 signatures, RSA and P-256 requester keys, DES-CBC, 3DES and
//! AES-128/192/256-CBC envelopes. The CA key is RSA (requests are encrypted to it).

use std::fmt;

use der::asn1::{ObjectIdentifier, OctetString, PrintableString};
use der::{Any, Decode, Tag, Tagged};
use rand::Rng as _;
use rsa::PrivateKey as RsaPrivateKey;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use super::cms::{
    CertKind, CertSpec, CheckTime, Cipher, CmsError, DigestAlg, RecipientKey, SignOptions,
    SignerKey, Unverified, attribute, attribute_value, build, certificates_of, certs_only,
    encrypt_enveloped, issue_certificate, open_enveloped, public_key_of, self_signed_certificate,
    sign_with, signature_digest, spki_of, to_der, verify_chain,
};

/// `GetCACaps` answer: what Orchard's SCEP CA supports (RFC 8894 section 3.5.2).
pub fn ca_caps() -> &'static str {
    "AES\nDES3\nSHA-256\nSHA-1\nPOSTPKIOperation\nSCEPStandard\nRenewal\n"
}

/// `GetCACert` answer: a lone CA certificate is sent as DER (`application/x-x509-ca-cert`),
/// a CA with intermediates as a certs-only SignedData (`application/x-x509-ca-ra-cert`).
pub fn ca_cert_response(
    ca: &Certificate,
    chain: &[Certificate],
) -> Result<(&'static str, Vec<u8>), ScepError> {
    if chain.is_empty() {
        return Ok(("application/x-x509-ca-cert", to_der(ca)?));
    }
    let mut all = vec![ca.clone()];
    all.extend(chain.iter().cloned());
    Ok(("application/x-x509-ca-ra-cert", certs_only(&all)?))
}

/// The SCEP CA's certificate and RSA private key. `Debug` hides the key.
#[derive(Clone)]
pub struct CaIdentity {
    /// The CA certificate (requests are encrypted to it; answers are signed with it).
    pub cert: Certificate,
    /// Its RSA private key.
    pub key: RsaPrivateKey,
}

impl fmt::Debug for CaIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaIdentity")
            .field(
                "subject",
                &self.cert.tbs_certificate().subject().to_string(),
            )
            .field("key", &"<secret>")
            .finish()
    }
}

/// SCEP messageType values (RFC 8894 section 3.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 3: the CA's answer.
    CertRep,
    /// 17: renewal with an existing certificate.
    RenewalReq,
    /// 19: a certificate request.
    PkcsReq,
    /// 20: polling for a pending request.
    CertPoll,
    /// 21: fetch a certificate by serial.
    GetCert,
    /// 22: fetch a CRL.
    GetCrl,
}

impl MessageType {
    fn code(self) -> &'static str {
        match self {
            MessageType::CertRep => "3",
            MessageType::RenewalReq => "17",
            MessageType::PkcsReq => "19",
            MessageType::CertPoll => "20",
            MessageType::GetCert => "21",
            MessageType::GetCrl => "22",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "3" => MessageType::CertRep,
            "17" => MessageType::RenewalReq,
            "19" => MessageType::PkcsReq,
            "20" => MessageType::CertPoll,
            "21" => MessageType::GetCert,
            "22" => MessageType::GetCrl,
            _ => return None,
        })
    }
}

/// SCEP failInfo values (RFC 8894 section 3.2.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    /// 0: unrecognized or unsupported algorithm.
    BadAlg,
    /// 1: integrity check (signature) failed, or the envelope does not open.
    BadMessageCheck,
    /// 2: the request is not permitted or not supported (wrong challenge, bad CSR).
    BadRequest,
    /// 3: the signingTime attribute is too far off.
    BadTime,
    /// 4: no certificate matches the criteria.
    BadCertId,
}

impl FailInfo {
    fn code(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "0",
            FailInfo::BadMessageCheck => "1",
            FailInfo::BadRequest => "2",
            FailInfo::BadTime => "3",
            FailInfo::BadCertId => "4",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "0" => FailInfo::BadAlg,
            "1" => FailInfo::BadMessageCheck,
            "2" => FailInfo::BadRequest,
            "3" => FailInfo::BadTime,
            "4" => FailInfo::BadCertId,
            _ => return None,
        })
    }
}

impl fmt::Display for FailInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        })
    }
}

/// What is needed to answer a request with a signed `CertRep`, even a refused one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The requester's transactionID, echoed back.
    pub transaction_id: String,
    /// The requester's senderNonce, returned as recipientNonce.
    pub sender_nonce: Vec<u8>,
    /// The requester's (usually self-signed) signing certificate.
    pub requester: Certificate,
    /// The digest the requester used; the answer uses it too.
    pub digest: DigestAlg,
}

/// A `PKIOperation` whose signature verified and whose envelope opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiRequest {
    /// `PkcsReq` or `RenewalReq`.
    pub message_type: MessageType,
    /// Who to answer and how.
    pub reply_to: ReplyTo,
    /// The content cipher of the request's envelope; the answer's envelope uses it too.
    pub cipher: Cipher,
    /// The PKCS#10 request (its self-signature is verified).
    pub csr: CertReq,
    /// The challengePassword attribute of the CSR, if any. The caller must check it.
    pub challenge: Option<String>,
}

/// Errors of SCEP processing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScepError {
    /// The message cannot be read well enough to answer it with a CertRep: answer HTTP 400.
    #[error("the SCEP message cannot be read: {0}")]
    Unreadable(String),
    /// The request was read but is refused: answer with [`cert_rep_failure`].
    #[error("the SCEP request is refused ({fail_info}): {reason}")]
    Refused {
        /// The failInfo to send.
        fail_info: FailInfo,
        /// What was wrong, for the log.
        reason: String,
        /// Where the failure goes.
        reply_to: Box<ReplyTo>,
    },
    /// A CertRep did not answer our request, or is not from our CA (client side).
    #[error("the SCEP server's answer is not acceptable: {0}")]
    BadResponse(String),
    /// Building a message failed.
    #[error(transparent)]
    Cms(#[from] CmsError),
}

const MESSAGE_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.2");
const PKI_STATUS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.3");
const FAIL_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.4");
const SENDER_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.5");
const RECIPIENT_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.6");
const TRANSACTION_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.7");
const CHALLENGE_PASSWORD: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");

/// Largest PKIOperation accepted (a CSR in two CMS layers is a few KiB).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Opens a `PKIOperation` body for the CA `ca`.
///
/// Returns [`ScepError::Unreadable`] when no answer can be built (not CMS, no transactionID,
/// no signer certificate) and [`ScepError::Refused`] with `badMessageCheck` (bad signature,
/// envelope not for this CA), `badAlg` (unsupported algorithm) or `badRequest` (bad or unsigned
/// CSR, unsupported message type).
pub fn parse_pki_operation(bytes: &[u8], ca: &CaIdentity) -> Result<PkiRequest, ScepError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ScepError::Unreadable(
            "the message is larger than 64 KiB".into(),
        ));
    }
    let msg = Unverified::decode(bytes).map_err(unreadable)?;
    let transaction_id = printable_attr(&msg.signed_attrs, &TRANSACTION_ID)
        .ok_or_else(|| ScepError::Unreadable("there is no transactionID".into()))?;
    let sender_nonce = octets_attr(&msg.signed_attrs, &SENDER_NONCE)
        .ok_or_else(|| ScepError::Unreadable("there is no senderNonce".into()))?;
    let requester = msg.signer_certificate().map_err(unreadable)?.clone();
    let digest = msg.digest();
    let reply_to = ReplyTo {
        transaction_id,
        sender_nonce,
        requester,
        digest: *digest.as_ref().unwrap_or(&DigestAlg::Sha256),
    };
    let refuse = |fail_info: FailInfo, reason: String| ScepError::Refused {
        fail_info,
        reason,
        reply_to: Box::new(reply_to.clone()),
    };
    if let Err(e) = digest {
        return Err(refuse(FailInfo::BadAlg, e.to_string()));
    }
    let message_type = printable_attr(&msg.signed_attrs, &MESSAGE_TYPE)
        .and_then(|c| MessageType::from_code(&c))
        .ok_or_else(|| refuse(FailInfo::BadRequest, "unknown messageType".into()))?;
    if !matches!(message_type, MessageType::PkcsReq | MessageType::RenewalReq) {
        return Err(refuse(
            FailInfo::BadRequest,
            format!("messageType {message_type:?} is not supported"),
        ));
    }
    let signed = msg.verify(None).map_err(|e| match e {
        CmsError::Unsupported { .. } => refuse(FailInfo::BadAlg, e.to_string()),
        _ => refuse(FailInfo::BadMessageCheck, e.to_string()),
    })?;
    let envelope = signed.content.unwrap_or_default();
    let (csr_der, cipher) = open_enveloped(&envelope, RecipientKey::Rsa(&ca.key), &ca.cert)
        .map_err(|e| match e {
            CmsError::Unsupported { .. } => refuse(FailInfo::BadAlg, e.to_string()),
            _ => refuse(FailInfo::BadMessageCheck, e.to_string()),
        })?;
    let csr = CertReq::from_der(&csr_der).map_err(|e| {
        refuse(
            FailInfo::BadRequest,
            format!("the CSR does not parse ({e})"),
        )
    })?;
    verify_csr(&csr).map_err(|e| refuse(FailInfo::BadRequest, e.to_string()))?;
    let challenge = csr
        .info
        .attributes
        .iter()
        .find(|a| a.oid == CHALLENGE_PASSWORD)
        .and_then(|a| a.values.iter().next())
        .and_then(directory_string);
    Ok(PkiRequest {
        message_type,
        reply_to,
        cipher,
        csr,
        challenge,
    })
}

/// Issues a client-authentication certificate for the CSR's key and subject, signed by the
/// SCEP CA: serial `serial`, valid from `not_before` to `not_after` (a year for devices).
pub fn issue_device_certificate(
    csr: &CertReq,
    ca: &CaIdentity,
    serial: u64,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Certificate, ScepError> {
    verify_csr(csr)?;
    let spec = CertSpec {
        subject: csr.info.subject.clone(),
        serial,
        not_before,
        not_after,
        kind: CertKind::ClientIdentity,
    };
    Ok(issue_certificate(
        &spec,
        &csr.info.public_key,
        &ca.cert,
        &SignerKey::Rsa(ca.key.clone()),
    )?)
}

/// A `CertRep` SUCCESS: the issued certificate in a certs-only SignedData, enveloped to the
/// requester with the request's cipher, signed by the CA with the request's digest.
pub fn cert_rep_success(
    req: &PkiRequest,
    issued: &Certificate,
    ca: &CaIdentity,
) -> Result<Vec<u8>, ScepError> {
    let degenerate = certs_only(std::slice::from_ref(issued))?;
    let envelope = encrypt_enveloped(&degenerate, &req.reply_to.requester, req.cipher)?;
    cert_rep(&req.reply_to, ca, &envelope, &[("0", PKI_STATUS)])
}

/// A `CertRep` FAILURE with `fail_info`, signed by the CA (no envelope).
pub fn cert_rep_failure(
    reply_to: &ReplyTo,
    fail_info: FailInfo,
    ca: &CaIdentity,
) -> Result<Vec<u8>, ScepError> {
    cert_rep(
        reply_to,
        ca,
        &[],
        &[("2", PKI_STATUS), (fail_info.code(), FAIL_INFO)],
    )
}

fn cert_rep(
    reply_to: &ReplyTo,
    ca: &CaIdentity,
    content: &[u8],
    status: &[(&str, ObjectIdentifier)],
) -> Result<Vec<u8>, ScepError> {
    let mut attrs = vec![
        printable(MESSAGE_TYPE, MessageType::CertRep.code())?,
        printable(TRANSACTION_ID, &reply_to.transaction_id)?,
        octets(SENDER_NONCE, &nonce())?,
        octets(RECIPIENT_NONCE, &reply_to.sender_nonce)?,
    ];
    for (value, oid) in status {
        attrs.push(printable(*oid, value)?);
    }
    let opts = SignOptions {
        digest: reply_to.digest,
        extra_attrs: attrs,
        ..SignOptions::default()
    };
    Ok(sign_with(
        content,
        &ca.cert,
        &SignerKey::Rsa(ca.key.clone()),
        &opts,
    )?)
}

/// A `PKCSReq` made by [`build_pkcs_req`], with what is needed to read the answer.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    /// The DER message to POST to `?operation=PKIOperation`.
    pub message: Vec<u8>,
    /// Its transactionID.
    pub transaction_id: String,
    /// Its senderNonce (the answer must return it).
    pub sender_nonce: Vec<u8>,
    /// The throwaway self-signed certificate that signed it (the answer is encrypted to it).
    pub signer: Certificate,
}

/// Builds a `PKCSReq` as a Mac does: a CSR for `key` with `subject` and `challenge`, encrypted
/// to `ca_cert` with `cipher`, signed with `digest` by a throwaway self-signed certificate valid
/// around `now`.
pub fn build_pkcs_req(
    key: &SignerKey,
    subject: &Name,
    challenge: &str,
    ca_cert: &Certificate,
    cipher: Cipher,
    digest: DigestAlg,
    now: OffsetDateTime,
) -> Result<ClientRequest, ScepError> {
    let spki = spki_of(key)?;
    let challenge_attr = Attribute {
        oid: CHALLENGE_PASSWORD,
        values: [
            Any::encode_from(&PrintableString::new(challenge).map_err(|_| {
                ScepError::Cms(CmsError::Build(
                    "the challenge must be printable ASCII (letters, digits, '()+,-./:=? ')".into(),
                ))
            })?)
            .map_err(build)?,
        ]
        .to_vec()
        .try_into()
        .map_err(build)?,
    };
    let info = CertReqInfo {
        version: Version::V1,
        subject: subject.clone(),
        public_key: spki.clone(),
        attributes: vec![challenge_attr].try_into().map_err(build)?,
    };
    let info_der = to_der(&info)?;
    let sig = key.sign_prehash(digest, &digest.digest(&info_der))?;
    let csr = CertReq {
        info,
        algorithm: key.certificate_signature_algorithm(digest),
        signature: der::asn1::BitString::from_bytes(&sig).map_err(build)?,
    };
    let signer = self_signed_certificate(
        &CertSpec {
            subject: subject.clone(),
            serial: u64::from_be_bytes(random_bytes::<8>()) >> 1,
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(1),
            kind: CertKind::EndEntity,
        },
        key,
    )?;
    let envelope = encrypt_enveloped(&to_der(&csr)?, ca_cert, cipher)?;
    let transaction_id = hex::encode_upper(DigestAlg::Sha256.digest(&to_der(&spki)?));
    let sender_nonce = nonce();
    let opts = SignOptions {
        digest,
        extra_attrs: vec![
            printable(MESSAGE_TYPE, MessageType::PkcsReq.code())?,
            printable(TRANSACTION_ID, &transaction_id)?,
            octets(SENDER_NONCE, &sender_nonce)?,
        ],
        ..SignOptions::default()
    };
    let message = sign_with(&envelope, &signer, key, &opts)?;
    Ok(ClientRequest {
        message,
        transaction_id,
        sender_nonce,
        signer,
    })
}

/// The outcome a `CertRep` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRepOutcome {
    /// The CA issued this certificate.
    Issued(Box<Certificate>),
    /// The CA refused.
    Failed(FailInfo),
    /// The CA will decide later (Orchard never answers this).
    Pending,
}

/// Reads the CA's `CertRep` to `request`: checks it is signed by `ca_cert` (or a certificate
/// it issued), echoes the transactionID and our nonce, and opens the certificate with `key`.
pub fn parse_cert_rep(
    bytes: &[u8],
    request: &ClientRequest,
    key: &SignerKey,
    ca_cert: &Certificate,
) -> Result<CertRepOutcome, ScepError> {
    let bad = |m: &str| ScepError::BadResponse(m.to_string());
    let msg = Unverified::decode(bytes)?.verify(None)?;
    verify_chain(
        &msg.verified.signer,
        &[],
        std::slice::from_ref(ca_cert),
        CheckTime::Ignore,
    )
    .map_err(|e| ScepError::BadResponse(format!("not signed by the SCEP CA ({e})")))?;
    let attrs = &msg.signed_attrs;
    if printable_attr(attrs, &MESSAGE_TYPE).as_deref() != Some(MessageType::CertRep.code()) {
        return Err(bad("the messageType is not CertRep"));
    }
    if printable_attr(attrs, &TRANSACTION_ID).as_deref() != Some(request.transaction_id.as_str()) {
        return Err(bad("the transactionID is not ours"));
    }
    if octets_attr(attrs, &RECIPIENT_NONCE).as_deref() != Some(request.sender_nonce.as_slice()) {
        return Err(bad("the recipientNonce is not our senderNonce"));
    }
    match printable_attr(attrs, &PKI_STATUS).as_deref() {
        Some("0") => {}
        Some("2") => {
            let info = printable_attr(attrs, &FAIL_INFO)
                .and_then(|c| FailInfo::from_code(&c))
                .ok_or_else(|| bad("a failure without a known failInfo"))?;
            return Ok(CertRepOutcome::Failed(info));
        }
        Some("3") => return Ok(CertRepOutcome::Pending),
        _ => return Err(bad("the pkiStatus is missing or unknown")),
    }
    let envelope = msg.content.unwrap_or_default();
    let (degenerate, _) = open_enveloped(&envelope, key.into(), &request.signer)?;
    let ours = spki_of(key)?;
    certificates_of(&degenerate)?
        .into_iter()
        .find(|c| *c.tbs_certificate().subject_public_key_info() == ours)
        .map(|c| CertRepOutcome::Issued(Box::new(c)))
        .ok_or_else(|| bad("no certificate for our key in the answer"))
}

/// Checks a CSR's self-signature.
fn verify_csr(csr: &CertReq) -> Result<(), ScepError> {
    let digest = signature_digest(&csr.algorithm.oid, None)?;
    let info = to_der(&csr.info)?;
    let key = public_key_of(&csr.info.public_key)?;
    if !key.verify_prehash(digest, &digest.digest(&info), csr.signature.raw_bytes()) {
        return Err(ScepError::Cms(CmsError::BadSignature));
    }
    Ok(())
}

fn unreadable(e: CmsError) -> ScepError {
    ScepError::Unreadable(e.to_string())
}

fn nonce() -> Vec<u8> {
    random_bytes::<16>().to_vec()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

fn printable(oid: ObjectIdentifier, value: &str) -> Result<Attribute, CmsError> {
    let v = PrintableString::new(value).map_err(build)?;
    Ok(attribute(oid, Any::encode_from(&v).map_err(build)?))
}

fn octets(oid: ObjectIdentifier, value: &[u8]) -> Result<Attribute, CmsError> {
    let v = OctetString::new(value).map_err(build)?;
    Ok(attribute(oid, Any::encode_from(&v).map_err(build)?))
}

fn printable_attr(attrs: &[Attribute], oid: &ObjectIdentifier) -> Option<String> {
    attribute_value(attrs, oid).and_then(directory_string)
}

fn octets_attr(attrs: &[Attribute], oid: &ObjectIdentifier) -> Option<Vec<u8>> {
    let v = attribute_value(attrs, oid)?;
    (v.tag() == Tag::OctetString).then(|| v.value().to_vec())
}

/// The text of a PrintableString, UTF8String, IA5String or TeletexString value.
fn directory_string(v: &Any) -> Option<String> {
    matches!(
        v.tag(),
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::TeletexString
    )
    .then(|| String::from_utf8(v.value().to_vec()).ok())
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::pki::cms::testutil::{ec_key, rsa_key, spec};

    fn new_ca() -> CaIdentity {
        let key = rsa_key();
        let cert = self_signed_certificate(&spec("CN=Orchard SCEP CA", CertKind::Authority), &key)
            .expect("ca");
        let SignerKey::Rsa(key) = key else {
            unreachable!("rsa_key makes RSA keys")
        };
        CaIdentity { cert, key }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
    }

    fn subject() -> Name {
        Name::from_str("CN=device-1,O=Orchard").expect("name")
    }

    /// A PKCSReq with the subject and time every test uses.
    fn request(
        key: &SignerKey,
        ca: &CaIdentity,
        challenge: &str,
        cipher: Cipher,
        digest: DigestAlg,
    ) -> ClientRequest {
        build_pkcs_req(key, &subject(), challenge, &ca.cert, cipher, digest, now()).expect("build")
    }

    /// Request, parse, issue, answer, read the answer: for every digest and cipher.
    fn round_trip_every_mix(key: &SignerKey) {
        let ca = new_ca();
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256] {
            for cipher in Cipher::ALL {
                let req = request(key, &ca, "s3cret", cipher, digest);
                let parsed = parse_pki_operation(&req.message, &ca).expect("parse");
                assert_eq!(parsed.message_type, MessageType::PkcsReq);
                assert_eq!(parsed.challenge.as_deref(), Some("s3cret"));
                assert_eq!(parsed.cipher, cipher);
                assert_eq!(parsed.reply_to.digest, digest);
                assert_eq!(parsed.reply_to.transaction_id, req.transaction_id);
                assert_eq!(parsed.reply_to.sender_nonce, req.sender_nonce);
                assert_eq!(parsed.csr.info.subject, subject());
                let issued = issue_device_certificate(
                    &parsed.csr,
                    &ca,
                    42,
                    now(),
                    now() + time::Duration::days(365),
                )
                .expect("issue");
                assert_eq!(
                    issued.tbs_certificate().subject_public_key_info(),
                    &spki_of(key).expect("spki")
                );
                let rep = cert_rep_success(&parsed, &issued, &ca).expect("reply");
                let outcome = parse_cert_rep(&rep, &req, key, &ca.cert).expect("read reply");
                assert_eq!(outcome, CertRepOutcome::Issued(Box::new(issued.clone())));
                verify_chain(
                    &issued,
                    &[],
                    std::slice::from_ref(&ca.cert),
                    CheckTime::At(now()),
                )
                .expect("issued cert chains to the CA");
            }
        }
    }

    #[test]
    fn round_trip_every_digest_and_cipher_with_rsa_clients() {
        round_trip_every_mix(&rsa_key());
    }

    #[test]
    fn round_trip_every_digest_and_cipher_with_ec_clients() {
        // The answer is enveloped by key agreement to the EC requester.
        round_trip_every_mix(&ec_key());
    }

    #[test]
    fn wrong_challenge_reaches_the_caller_and_failure_round_trips() {
        let ca = new_ca();
        let key = rsa_key();
        let req = request(&key, &ca, "wrong", Cipher::Aes128Cbc, DigestAlg::Sha256);
        let parsed = parse_pki_operation(&req.message, &ca).expect("parse");
        assert_eq!(parsed.challenge.as_deref(), Some("wrong"));
        let rep = cert_rep_failure(&parsed.reply_to, FailInfo::BadRequest, &ca).expect("failure");
        assert_eq!(
            parse_cert_rep(&rep, &req, &key, &ca.cert).expect("read"),
            CertRepOutcome::Failed(FailInfo::BadRequest)
        );
    }

    #[test]
    fn tampered_message_is_refused_with_bad_message_check() {
        let ca = new_ca();
        let key = rsa_key();
        let req = request(&key, &ca, "pw", Cipher::Des3Cbc, DigestAlg::Sha256);
        // Flip a byte of the enveloped content (well inside the message, before the signer).
        let mut bad = req.message.clone();
        let pos = bad.len() / 3;
        bad[pos] ^= 0x01;
        match parse_pki_operation(&bad, &ca) {
            Err(ScepError::Refused {
                fail_info,
                reply_to,
                ..
            }) => {
                assert_eq!(fail_info, FailInfo::BadMessageCheck);
                assert_eq!(reply_to.transaction_id, req.transaction_id);
                let rep = cert_rep_failure(&reply_to, fail_info, &ca).expect("failure");
                assert_eq!(
                    parse_cert_rep(&rep, &req, &key, &ca.cert).expect("read"),
                    CertRepOutcome::Failed(FailInfo::BadMessageCheck)
                );
            }
            other => panic!("expected badMessageCheck, got {other:?}"),
        }
    }

    #[test]
    fn a_request_for_another_ca_is_bad_message_check() {
        let ca = new_ca();
        let other = new_ca();
        let req = request(&rsa_key(), &other, "pw", Cipher::Aes256Cbc, DigestAlg::Sha1);
        assert!(matches!(
            parse_pki_operation(&req.message, &ca),
            Err(ScepError::Refused {
                fail_info: FailInfo::BadMessageCheck,
                ..
            })
        ));
    }

    #[test]
    fn replies_are_checked_by_the_client() {
        let ca = new_ca();
        let key = rsa_key();
        let req = request(&key, &ca, "pw", Cipher::Aes128Cbc, DigestAlg::Sha256);
        let other_req = request(&key, &ca, "pw", Cipher::Aes128Cbc, DigestAlg::Sha256);
        let parsed = parse_pki_operation(&other_req.message, &ca).expect("parse");
        let rep = cert_rep_failure(&parsed.reply_to, FailInfo::BadTime, &ca).expect("rep");
        // Answer to another request (other nonce).
        assert!(matches!(
            parse_cert_rep(&rep, &req, &key, &ca.cert),
            Err(ScepError::BadResponse(_))
        ));
        // Signed by another CA.
        let impostor = new_ca();
        assert!(matches!(
            parse_cert_rep(&rep, &other_req, &key, &impostor.cert),
            Err(ScepError::BadResponse(_))
        ));
    }

    #[test]
    fn garbage_truncation_and_caps() {
        let ca = new_ca();
        let req = request(&rsa_key(), &ca, "pw", Cipher::Aes128Cbc, DigestAlg::Sha256);
        for cut in (0..req.message.len()).step_by(7) {
            assert!(parse_pki_operation(&req.message[..cut], &ca).is_err());
        }
        assert!(matches!(
            parse_pki_operation(b"hello", &ca),
            Err(ScepError::Unreadable(_))
        ));
        assert!(ca_caps().contains("POSTPKIOperation") && ca_caps().contains("SHA-256"));
        let (ct, body) = ca_cert_response(&ca.cert, &[]).expect("cacert");
        assert_eq!(
            (ct, body),
            ("application/x-x509-ca-cert", to_der(&ca.cert).expect("der"))
        );
        let (ct, body) = ca_cert_response(&ca.cert, std::slice::from_ref(&ca.cert)).expect("chain");
        assert_eq!(ct, "application/x-x509-ca-ra-cert");
        assert!(certificates_of(&body).expect("certs").contains(&ca.cert));
    }
}
