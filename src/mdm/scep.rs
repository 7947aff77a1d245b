//! Orchard's SCEP certificate authority (`/scep`): `GetCACaps`, `GetCACert`, and `PKIOperation`
//! by POST and GET. A `PKCSReq` must carry a one-time challenge from an enrollment profile
//! Orchard made, for the subject that profile asked for; the issued identity (client auth, one
//! year) is recorded. The CA key is Orchard's own, sealed in the store.
//!
//! RFC 8894; Apple: <https://developer.apple.com/documentation/devicemanagement/scep>

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use der::{Decode, Encode};
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::enroll::Enroller;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::pki::cms::{self, CertKind, CertSpec, Certificate, SignerKey};
use crate::pki::scep::{self, CaIdentity, FailInfo, ScepError};
use crate::pki::secret::{Sealed, SecretKey};
use crate::store::StoreError;

/// How long a device identity is valid.
pub const DEVICE_CERT_LIFETIME: Duration = Duration::days(365);
/// How long Orchard's SCEP CA is valid.
const CA_LIFETIME: Duration = Duration::days(3650);

/// The SCEP CA as stored: certificate and sealed private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCa {
    pub cert_b64: String,
    pub key: Sealed,
}

/// A certificate the CA issued (keyed by serial).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedCert {
    pub subject: String,
    /// Hex SHA-256 of the certificate DER (the key identity binding uses).
    pub cert_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// The storage the SCEP service needs.
pub trait ScepStorage: Send + Sync + 'static {
    fn ca(&self) -> Result<Option<StoredCa>, StoreError>;
    fn put_ca(&self, ca: &StoredCa) -> Result<(), StoreError>;
    fn record_issued(&self, serial: u64, c: &IssuedCert) -> Result<(), StoreError>;
    fn next_serial(&self) -> Result<u64, StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ScepSetupError {
    #[error("the SCEP CA in the store cannot be read: {0}")]
    Corrupt(String),
    #[error("the SCEP CA cannot be made: {0}")]
    Create(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// An answer to a SCEP client.
#[derive(Debug)]
pub struct ScepResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl ScepResponse {
    fn text(status: u16, body: impl Into<String>) -> Self {
        ScepResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

/// The SCEP service. Cheap to clone.
#[derive(Clone)]
pub struct ScepService {
    inner: Arc<Inner>,
}

struct Inner {
    ca: CaIdentity,
    store: Box<dyn ScepStorage>,
    enroller: Enroller,
    clock: SharedClock,
    metrics: Metrics,
}

pub const ISSUED_TOTAL: &str = "orchard_scep_certificates_issued_total";

impl ScepService {
    /// Loads the CA from the store, making (and storing) a new one on first start.
    pub fn load_or_create(
        store: impl ScepStorage,
        secrets: &SecretKey,
        enroller: Enroller,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Result<Self, ScepSetupError> {
        let ca = match store.ca()? {
            Some(s) => open_ca(&s, secrets)?,
            None => {
                let ca = new_ca(clock.now())?;
                store.put_ca(&seal_ca(&ca, secrets)?)?;
                ca
            }
        };
        metrics.describe(
            ISSUED_TOTAL,
            "Device identity certificates issued by the SCEP CA",
        );
        Ok(ScepService {
            inner: Arc::new(Inner {
                ca,
                store: Box::new(store),
                enroller,
                clock,
                metrics,
            }),
        })
    }

    /// The CA certificate (device identities chain to it).
    pub fn ca_certificate(&self) -> &Certificate {
        &self.inner.ca.cert
    }

    /// `GET /scep?operation=...` (with `message=` for a GET PKIOperation).
    pub fn get(&self, query: &str) -> ScepResponse {
        let mut operation = None;
        let mut message = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "operation" => operation = Some(v.into_owned()),
                "message" => message = Some(v.into_owned()),
                _ => {}
            }
        }
        match operation.as_deref() {
            Some("GetCACaps") => ScepResponse::text(200, scep::ca_caps()),
            Some("GetCACert") => match scep::ca_cert_response(&self.inner.ca.cert, &[]) {
                Ok((content_type, body)) => ScepResponse {
                    status: 200,
                    content_type,
                    body,
                },
                Err(e) => ScepResponse::text(500, e.to_string()),
            },
            Some("PKIOperation") => {
                let Some(m) = message else {
                    return ScepResponse::text(
                        400,
                        "PKIOperation by GET needs a message parameter\n",
                    );
                };
                // RFC 8894 4.1: base64, possibly with the URL-unsafe characters left in.
                let compact: String = m.chars().filter(|c| !c.is_whitespace()).collect();
                match base64::engine::general_purpose::STANDARD.decode(compact.replace(' ', "+")) {
                    Ok(der) => self.pki_operation(&der),
                    Err(_) => ScepResponse::text(400, "the message parameter is not base64\n"),
                }
            }
            Some(other) => ScepResponse::text(
                400,
                format!(
                    "unknown SCEP operation {:?}\n",
                    other.chars().take(40).collect::<String>()
                ),
            ),
            None => ScepResponse::text(400, "missing the operation parameter\n"),
        }
    }

    /// `POST /scep?operation=PKIOperation` (or the GET form's decoded message).
    pub fn pki_operation(&self, body: &[u8]) -> ScepResponse {
        if body.len() > scep::MAX_MESSAGE_LEN {
            return ScepResponse::text(413, "the SCEP message is too large\n");
        }
        let ca = &self.inner.ca;
        let req = match scep::parse_pki_operation(body, ca) {
            Ok(r) => r,
            Err(ScepError::Refused {
                fail_info,
                reason,
                reply_to,
            }) => {
                tracing::info!(%reason, "SCEP request refused");
                return self.failure(&reply_to, fail_info);
            }
            Err(e) => {
                tracing::info!(error = %e, "unreadable SCEP request");
                return ScepResponse::text(400, format!("{e}\n"));
            }
        };
        // The challenge is the whole authorisation: it must exist, be unused and unexpired, and
        // the CSR must ask for the subject its profile named.
        let challenge = req.challenge.as_deref().unwrap_or_default();
        let granted = match self.inner.enroller.redeem_challenge(challenge) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(error = %e, "SCEP request with an unusable challenge");
                return self.failure(&req.reply_to, FailInfo::BadRequest);
            }
        };
        let subject = req.csr.info.subject.to_string();
        if !subject
            .split([',', '+'])
            .any(|rdn| rdn.trim() == format!("CN={}", granted.subject_cn))
        {
            tracing::info!(%subject, "SCEP request for a subject its profile did not name");
            return self.failure(&req.reply_to, FailInfo::BadRequest);
        }
        let now = self.inner.clock.now();
        let issued = self
            .inner
            .store
            .next_serial()
            .map_err(|e| e.to_string())
            .and_then(|serial| {
                scep::issue_device_certificate(
                    &req.csr,
                    ca,
                    serial,
                    now - Duration::minutes(5),
                    now + DEVICE_CERT_LIFETIME,
                )
                .map(|c| (serial, c))
                .map_err(|e| e.to_string())
            })
            .and_then(|(serial, cert)| {
                let der = cert.to_der().map_err(|e| e.to_string())?;
                let rec = IssuedCert {
                    subject: subject.clone(),
                    cert_hash: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)),
                    issued_at: now,
                    not_after: now + DEVICE_CERT_LIFETIME,
                };
                self.inner
                    .store
                    .record_issued(serial, &rec)
                    .map_err(|e| e.to_string())?;
                scep::cert_rep_success(&req, &cert, ca).map_err(|e| e.to_string())
            });
        match issued {
            Ok(body) => {
                self.inner.metrics.inc(ISSUED_TOTAL, &[]);
                ScepResponse {
                    status: 200,
                    content_type: "application/x-pki-message",
                    body,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "issuing a device certificate failed");
                self.failure(&req.reply_to, FailInfo::BadRequest)
            }
        }
    }

    fn failure(&self, reply_to: &scep::ReplyTo, fail_info: FailInfo) -> ScepResponse {
        match scep::cert_rep_failure(reply_to, fail_info, &self.inner.ca) {
            Ok(body) => ScepResponse {
                status: 200,
                content_type: "application/x-pki-message",
                body,
            },
            Err(e) => ScepResponse::text(500, format!("{e}\n")),
        }
    }
}

fn new_ca(now: OffsetDateTime) -> Result<CaIdentity, ScepSetupError> {
    let key = rsa::PrivateKey::new(&mut rand::rng(), 2048)
        .map_err(|e| ScepSetupError::Create(e.to_string()))?;
    let signer = SignerKey::Rsa(key.clone());
    let spec = CertSpec {
        subject: x509_cert::name::Name::from_str("CN=Orchard device identity CA,O=Orchard")
            .map_err(|e| ScepSetupError::Create(e.to_string()))?,
        serial: u64::from(rand::random::<u32>()) + 1,
        not_before: now - Duration::hours(1),
        not_after: now + CA_LIFETIME,
        kind: CertKind::Authority,
    };
    let cert = cms::self_signed_certificate(&spec, &signer)
        .map_err(|e| ScepSetupError::Create(e.to_string()))?;
    Ok(CaIdentity { cert, key })
}

fn seal_ca(ca: &CaIdentity, secrets: &SecretKey) -> Result<StoredCa, ScepSetupError> {
    let key_der = ca
        .key
        .to_pkcs1_der()
        .map_err(|e| ScepSetupError::Create(e.to_string()))?;
    let cert_der = ca
        .cert
        .to_der()
        .map_err(|e| ScepSetupError::Create(e.to_string()))?;
    Ok(StoredCa {
        cert_b64: base64::engine::general_purpose::STANDARD.encode(cert_der),
        key: secrets
            .seal(key_der.as_bytes())
            .map_err(|e| ScepSetupError::Create(e.to_string()))?,
    })
}

fn open_ca(s: &StoredCa, secrets: &SecretKey) -> Result<CaIdentity, ScepSetupError> {
    let cert_der = base64::engine::general_purpose::STANDARD
        .decode(&s.cert_b64)
        .map_err(|e| ScepSetupError::Corrupt(e.to_string()))?;
    let cert =
        Certificate::from_der(&cert_der).map_err(|e| ScepSetupError::Corrupt(e.to_string()))?;
    let key_der = secrets
        .open(&s.key)
        .map_err(|e| ScepSetupError::Corrupt(e.to_string()))?;
    let key =
        cms::load_rsa_private_key(&key_der).map_err(|e| ScepSetupError::Corrupt(e.to_string()))?;
    Ok(CaIdentity { cert, key })
}
