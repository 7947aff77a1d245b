//! The MDM push certificate's life: Orchard makes the key and the CSR, takes back the certificate
//! Apple issued for it, keeps the topic across renewals (a different topic needs a typed
//! confirmation, since every enrolled Mac would be cut off), warns before expiry, and hands the
//! pusher the new identity at once through the shared [`IdentityCell`].
//!
//! The steps outside Orchard (vendor signing, Apple's Push Certificates Portal) are described in
//! `apple-mdm-protocol.md` (g) and on the admin page.

use std::sync::Arc;

use rsa::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::apple::apns::pusher::{CertificateAlerts, IdentityCell};
use crate::apple::apns::{CertificateError, PushCertificate, PushIdentity, Topic, public_key_of};
use crate::clock::SharedClock;
use crate::pki::secret::{Sealed, SecretError, SecretKey};
use crate::store::StoreError;

/// Warn this long before the certificate expires.
pub const EXPIRY_WARNING: Duration = Duration::days(30);
/// The word the admin types to accept a certificate with a different topic.
pub const TOPIC_CHANGE_WORD: &str = "CHANGE";
/// The largest certificate file accepted.
pub const MAX_CERT_FILE: usize = 64 * 1024;

/// The request waiting for Apple's certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingRequest {
    pub key: Sealed,
    pub csr_pem: String,
    pub created_at: OffsetDateTime,
}

/// The certificate in use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstalledCert {
    pub cert_pem: String,
    pub key: Sealed,
    pub apple_id: String,
    pub installed_at: OffsetDateTime,
}

/// APNs refused the certificate; shown until a new certificate is installed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertAlert {
    pub topic: String,
    pub reason: String,
    pub at: OffsetDateTime,
}

/// What the push-certificate service keeps. Implemented for [`crate::store::Store`] in
/// `store/push_cert.rs`.
pub trait PushCertStorage: Send + Sync {
    fn pending(&self) -> Result<Option<PendingRequest>, StoreError>;
    fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError>;
    fn installed(&self) -> Result<Option<InstalledCert>, StoreError>;
    /// Atomically: the new certificate becomes current, the pending request and any alert go.
    fn install(&self, cert: &InstalledCert) -> Result<(), StoreError>;
    fn alert(&self) -> Result<Option<CertAlert>, StoreError>;
    fn put_alert(&self, alert: &CertAlert) -> Result<(), StoreError>;
}

/// Everything that can go wrong, worded for the admin.
#[derive(Debug, thiserror::Error)]
pub enum PushCertError {
    #[error("{0}")]
    Certificate(#[from] CertificateError),
    #[error(
        "this certificate was not made from Orchard's certificate request: download the request from this page, have it signed, and upload it to Apple again"
    )]
    NotOurRequest,
    #[error("this certificate expired on {0}: renew it in Apple's Push Certificates Portal")]
    Expired(String),
    #[error("enter the Apple ID you used in Apple's Push Certificates Portal (an email address)")]
    BadAppleId,
    #[error("the file is too large to be a push certificate")]
    TooLarge,
    #[error(
        "this certificate has a different topic ({new}) than the one in use ({current}): every enrolled Mac would stop receiving commands until it enrolls again. Renew the existing certificate in Apple's Push Certificates Portal instead, or confirm the change"
    )]
    TopicChange { current: String, new: String },
    #[error("type {TOPIC_CHANGE_WORD} to confirm the topic change")]
    ConfirmationMismatch,
    #[error("the certificate request could not be made: {0}")]
    KeyGeneration(String),
    #[error("a stored secret could not be used: {0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The admin's typed agreement to replace the certificate with one of another topic. It names the
/// topic it agrees to, so it cannot be replayed for a different certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicChangeConfirmation {
    new_topic: String,
}

impl TopicChangeConfirmation {
    pub fn from_typed(typed: &str, new_topic: &str) -> Result<Self, PushCertError> {
        if typed.trim() != TOPIC_CHANGE_WORD {
            return Err(PushCertError::ConfirmationMismatch);
        }
        Ok(TopicChangeConfirmation {
            new_topic: new_topic.to_owned(),
        })
    }
}

/// Where the certificate stands on the expiry calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Expiry {
    Valid,
    ExpiresSoon { days: i64 },
    Expired,
}

impl Expiry {
    pub fn at(not_after: OffsetDateTime, now: OffsetDateTime) -> Expiry {
        if now >= not_after {
            Expiry::Expired
        } else if not_after - now <= EXPIRY_WARNING {
            Expiry::ExpiresSoon {
                days: (not_after - now).whole_days(),
            }
        } else {
            Expiry::Valid
        }
    }
}

/// What the page and the API show about the certificate in use.
#[derive(Clone, Debug, Serialize)]
pub struct PushCertStatus {
    pub topic: Topic,
    pub apple_id: String,
    pub subject: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub expiry: Expiry,
    #[serde(with = "time::serde::rfc3339")]
    pub installed_at: OffsetDateTime,
    pub alert: Option<CertAlert>,
}

/// The push-certificate service.
pub struct PushCertService {
    store: Arc<dyn PushCertStorage>,
    secret: Arc<SecretKey>,
    clock: SharedClock,
    identity: Arc<IdentityCell>,
}

impl std::fmt::Debug for PushCertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushCertService")
    }
}

impl PushCertService {
    /// Loads the installed certificate (if any) into a fresh identity cell.
    pub fn new(
        store: Arc<dyn PushCertStorage>,
        secret: Arc<SecretKey>,
        clock: SharedClock,
    ) -> Result<PushCertService, PushCertError> {
        let service = PushCertService {
            store,
            secret,
            clock,
            identity: IdentityCell::new(),
        };
        if let Some(installed) = service.store.installed()? {
            let identity = service.identity_of(&installed)?;
            service.identity.set(Some(Arc::new(identity)));
        }
        Ok(service)
    }

    /// The identity the pusher reads; swapped on every install.
    pub fn identity(&self) -> Arc<IdentityCell> {
        self.identity.clone()
    }

    /// The topic for enrollment profiles, if a certificate is installed.
    pub fn topic(&self) -> Option<Topic> {
        self.identity.get().map(|i| i.topic().clone())
    }

    /// The CSR to have signed: the pending one, or a new one (new RSA-2048 key) if none is pending.
    pub fn csr(&self) -> Result<String, PushCertError> {
        match self.store.pending()? {
            Some(p) => Ok(p.csr_pem),
            None => self.new_csr(),
        }
    }

    /// Always makes a new key and CSR, replacing any pending request.
    pub fn new_csr(&self) -> Result<String, PushCertError> {
        let (key_der, csr_pem) = make_csr()?;
        let request = PendingRequest {
            key: self.secret.seal(&key_der)?,
            csr_pem: csr_pem.clone(),
            created_at: self.clock.now(),
        };
        self.store.put_pending(&request)?;
        Ok(csr_pem)
    }

    /// Takes the certificate Apple issued (PEM) and the Apple ID used, and puts it in use at once.
    ///
    /// The certificate must match the pending request's key (or the installed key, for a renewal
    /// from the same request), must not be expired, and must keep the installed topic unless
    /// `confirm` names the new topic.
    pub fn upload(
        &self,
        pem: &[u8],
        apple_id: &str,
        confirm: Option<&TopicChangeConfirmation>,
    ) -> Result<PushCertStatus, PushCertError> {
        if pem.len() > MAX_CERT_FILE {
            return Err(PushCertError::TooLarge);
        }
        let apple_id = apple_id.trim();
        if !valid_apple_id(apple_id) {
            return Err(PushCertError::BadAppleId);
        }
        let cert = PushCertificate::parse_pem(pem)?;
        let now = self.clock.now();
        if cert.is_expired(now) {
            return Err(PushCertError::Expired(date(cert.not_after)));
        }
        let installed = self.store.installed()?;
        let key = self.matching_key(&cert, installed.as_ref())?;
        if let Some(current) = self.identity.get() {
            let (old, new) = (current.topic().as_str(), cert.topic.as_str());
            let confirmed = confirm.is_some_and(|c| c.new_topic == new);
            if old != new && !confirmed {
                return Err(PushCertError::TopicChange {
                    current: old.to_owned(),
                    new: new.to_owned(),
                });
            }
        }
        let identity = PushIdentity::new(cert.clone(), self.secret.open(&key)?)?;
        let record = InstalledCert {
            cert_pem: cert.to_pem(),
            key,
            apple_id: apple_id.to_owned(),
            installed_at: now,
        };
        self.store.install(&record)?;
        self.identity.set(Some(Arc::new(identity)));
        tracing::info!(topic = %cert.topic, not_after = %date(cert.not_after), "push certificate installed");
        self.status_of(&record, cert, None)
    }

    /// The certificate in use, with its expiry state and any APNs alert.
    pub fn status(&self) -> Result<Option<PushCertStatus>, PushCertError> {
        let Some(installed) = self.store.installed()? else {
            return Ok(None);
        };
        let cert = PushCertificate::parse_pem(installed.cert_pem.as_bytes())?;
        let alert = self.store.alert()?;
        self.status_of(&installed, cert, alert).map(Some)
    }

    /// Whether a request is waiting for Apple's certificate.
    pub fn has_pending_request(&self) -> Result<bool, PushCertError> {
        Ok(self.store.pending()?.is_some())
    }

    fn status_of(
        &self,
        installed: &InstalledCert,
        cert: PushCertificate,
        alert: Option<CertAlert>,
    ) -> Result<PushCertStatus, PushCertError> {
        Ok(PushCertStatus {
            expiry: Expiry::at(cert.not_after, self.clock.now()),
            topic: cert.topic,
            apple_id: installed.apple_id.clone(),
            subject: cert.subject,
            serial: cert.serial,
            not_before: cert.not_before,
            not_after: cert.not_after,
            installed_at: installed.installed_at,
            alert,
        })
    }

    /// The sealed key the certificate was issued for: the pending request's, else the installed one.
    fn matching_key(
        &self,
        cert: &PushCertificate,
        installed: Option<&InstalledCert>,
    ) -> Result<Sealed, PushCertError> {
        let pending = self.store.pending()?.map(|p| p.key);
        for sealed in pending.into_iter().chain(installed.map(|i| i.key.clone())) {
            let key = self.secret.open(&sealed)?;
            if public_key_of(&key)? == cert.public_key {
                return Ok(sealed);
            }
        }
        Err(PushCertError::NotOurRequest)
    }

    fn identity_of(&self, installed: &InstalledCert) -> Result<PushIdentity, PushCertError> {
        let cert = PushCertificate::parse_pem(installed.cert_pem.as_bytes())?;
        Ok(PushIdentity::new(cert, self.secret.open(&installed.key)?)?)
    }
}

impl CertificateAlerts for PushCertService {
    fn certificate_rejected(&self, topic: &Topic, reason: &str) {
        let alert = CertAlert {
            topic: topic.as_str().to_owned(),
            reason: reason.to_owned(),
            at: self.clock.now(),
        };
        if let Err(e) = self.store.put_alert(&alert) {
            tracing::error!(error = %e, "could not record the push certificate alert");
        }
    }
}

fn valid_apple_id(id: &str) -> bool {
    let Some((local, domain)) = id.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && id.len() <= 254
        && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn date(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[day padding:none] [month repr:short] [year]");
    t.format(&format).unwrap_or_else(|_| t.to_string())
}

/// A new RSA-2048 key (PKCS#8 DER) and a CSR for it (PEM), as Apple's portal requires.
fn make_csr() -> Result<(Vec<u8>, String), PushCertError> {
    let gen_err = |e: &dyn std::fmt::Display| PushCertError::KeyGeneration(e.to_string());
    let mut rng = rand::rng();
    let key = rsa::PrivateKey::new(&mut rng, 2048).map_err(|e| gen_err(&e))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| gen_err(&e))?
        .as_bytes()
        .to_vec();
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_slice()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| gen_err(&e))?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "Orchard MDM push");
    name.push(rcgen::DnType::OrganizationName, "Orchard");
    params.distinguished_name = name;
    let csr = params.serialize_request(&pair).map_err(|e| gen_err(&e))?;
    let pem = csr.pem().map_err(|e| gen_err(&e))?;
    Ok((der, pem))
}
