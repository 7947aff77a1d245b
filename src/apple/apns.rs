//! APNs for MDM: the push certificate as a typed identity (its `Topic`), and the HTTP/2 client that
//! wakes a device with `{"mdm": PushMagic}`, returning a typed outcome for every answer Apple
//! documents. It never decides when to push: that is the [`pusher`]'s caller (the MDM command queue).
//!
//! Apple: [Sending notification requests to APNs](https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns),
//! [Handling notification responses from APNs](https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns),
//! [Sending MDM commands to a device](https://developer.apple.com/documentation/devicemanagement/sending-mdm-commands-to-a-device).

pub mod pusher;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use der::Decode;
use der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_cert::Certificate;

/// Apple's production APNs address; tests and the demo point [`ApnsSettings::base_url`] elsewhere.
pub const APNS_PRODUCTION_URL: &str = "https://api.push.apple.com";
/// The largest payload APNs accepts (bytes); larger gets 413.
pub const MAX_PAYLOAD: usize = 4096;
/// The subject attribute holding the topic: `userId` (UID), 0.9.2342.19200300.100.1.1.
pub const UID_OID: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.1");
/// Every MDM push topic starts with this.
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt";

/// Why a push certificate (or the key given with it) cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("the file holds no PEM certificate (it should start with -----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("the certificate cannot be read: {0}")]
    Malformed(String),
    #[error(
        "the certificate is not an MDM push certificate: its subject has no UID starting with com.apple.mgmt"
    )]
    NotPushCertificate,
    #[error("the certificate does not belong to this private key")]
    KeyMismatch,
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
}

/// The APNs topic of an MDM push certificate (`com.apple.mgmt.External.<uuid>`).
///
/// It can only come from a certificate ([`PushCertificate::parse`]), so a device can never be
/// given a topic Orchard cannot push to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

impl Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A parsed MDM push certificate: what the admin page shows and what the pusher needs.
#[derive(Clone, Debug)]
pub struct PushCertificate {
    /// The leaf certificate first, then any chain that came in the same file.
    pub chain: Vec<CertificateDer<'static>>,
    pub topic: Topic,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The subjectPublicKey bits, to match the certificate with its private key.
    pub public_key: Vec<u8>,
}

impl PushCertificate {
    /// Reads a PEM file as downloaded from Apple's Push Certificates Portal.
    pub fn parse_pem(pem: &[u8]) -> Result<PushCertificate, CertificateError> {
        let chain = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map_err(|e| CertificateError::Malformed(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(CertificateError::NoCertificate);
        }
        PushCertificate::parse(chain)
    }

    /// Reads a leaf certificate (DER) and the chain behind it.
    pub fn parse(chain: Vec<CertificateDer<'static>>) -> Result<PushCertificate, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::NoCertificate)?;
        let cert =
            Certificate::from_der(leaf).map_err(|e| CertificateError::Malformed(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let topic = topic_of(tbs.subject()).ok_or(CertificateError::NotPushCertificate)?;
        let validity = tbs.validity();
        Ok(PushCertificate {
            topic,
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            serial: tbs.serial_number().to_string(),
            not_before: to_datetime(validity.not_before)?,
            not_after: to_datetime(validity.not_after)?,
            public_key: tbs
                .subject_public_key_info()
                .subject_public_key
                .raw_bytes()
                .to_vec(),
            chain: chain.clone(),
        })
    }

    /// The leaf certificate as PEM (for storage and download).
    pub fn to_pem(&self) -> String {
        use base64::Engine;
        let mut out = String::new();
        for der in &self.chain {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.not_after
    }
}

fn topic_of(subject: &x509_cert::name::Name) -> Option<Topic> {
    let value = subject.iter().find(|atv| atv.oid == UID_OID)?;
    // Apple encodes it as a UTF8String; accept the other string types a CA might use.
    let text = Utf8StringRef::try_from(&value.value)
        .map(|s| s.as_str().to_owned())
        .or_else(|_| PrintableStringRef::try_from(&value.value).map(|s| s.as_str().to_owned()))
        .or_else(|_| Ia5StringRef::try_from(&value.value).map(|s| s.as_str().to_owned()))
        .ok()?;
    let valid = text.starts_with(MDM_TOPIC_PREFIX)
        && text.len() <= 255
        && text.chars().all(|c| c.is_ascii_graphic());
    valid.then_some(Topic(text))
}

fn to_datetime(t: x509_cert::time::Time) -> Result<OffsetDateTime, CertificateError> {
    let secs = i64::try_from(t.to_unix_duration().as_secs())
        .map_err(|_| CertificateError::Malformed("validity date out of range".into()))?;
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| CertificateError::Malformed("validity date out of range".into()))
}

/// The push certificate with its private key: the TLS client identity for APNs.
#[derive(Clone)]
pub struct PushIdentity {
    pub certificate: PushCertificate,
    key_pkcs8: Vec<u8>,
}

impl fmt::Debug for PushIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushIdentity")
            .field("topic", &self.certificate.topic)
            .field("not_after", &self.certificate.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl PushIdentity {
    /// Pairs a certificate with its key (PKCS#8 DER); refuses a key that is not the certificate's.
    pub fn new(
        certificate: PushCertificate,
        key_pkcs8: Vec<u8>,
    ) -> Result<PushIdentity, CertificateError> {
        if public_key_of(&key_pkcs8)? != certificate.public_key {
            return Err(CertificateError::KeyMismatch);
        }
        Ok(PushIdentity {
            certificate,
            key_pkcs8,
        })
    }

    pub fn topic(&self) -> &Topic {
        &self.certificate.topic
    }
}

/// The subjectPublicKey bits of a PKCS#8 private key.
pub fn public_key_of(key_pkcs8: &[u8]) -> Result<Vec<u8>, CertificateError> {
    let pair =
        rcgen::KeyPair::try_from(key_pkcs8).map_err(|e| CertificateError::BadKey(e.to_string()))?;
    Ok(pair.public_key_raw().to_vec())
}

/// An APNs device token (the `Token` of a TokenUpdate check-in), hex in URLs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceToken(Vec<u8>);

/// Apple's tokens are 32 bytes today and documented as variable length; refuse the absurd.
const MAX_TOKEN_BYTES: usize = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("a device token must be 1 to {MAX_TOKEN_BYTES} bytes")]
    Length,
    #[error("a device token must be hexadecimal")]
    NotHex,
    #[error("a PushMagic must be 1 to 256 printable characters")]
    PushMagic,
}

impl DeviceToken {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<DeviceToken, TokenError> {
        if bytes.is_empty() || bytes.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Length);
        }
        Ok(DeviceToken(bytes))
    }

    pub fn parse_hex(text: &str) -> Result<DeviceToken, TokenError> {
        let bytes = hex::decode(text).map_err(|_| TokenError::NotHex)?;
        DeviceToken::from_bytes(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({})", self.to_hex())
    }
}

impl TryFrom<String> for DeviceToken {
    type Error = TokenError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DeviceToken::parse_hex(&s)
    }
}

impl From<DeviceToken> for String {
    fn from(t: DeviceToken) -> String {
        t.to_hex()
    }
}

/// The `PushMagic` string a device sends in TokenUpdate and expects back in every push.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PushMagic(String);

impl PushMagic {
    pub fn parse(text: &str) -> Result<PushMagic, TokenError> {
        let ok = !text.is_empty() && text.len() <= 256 && text.chars().all(|c| !c.is_control());
        if ok {
            Ok(PushMagic(text.to_owned()))
        } else {
            Err(TokenError::PushMagic)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PushMagic {
    type Error = TokenError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PushMagic::parse(&s)
    }
}

impl From<PushMagic> for String {
    fn from(m: PushMagic) -> String {
        m.0
    }
}

/// One device to wake: where to push and the magic it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    pub token: DeviceToken,
    pub push_magic: PushMagic,
}

impl PushTarget {
    /// From what a TokenUpdate stored: the token as hex and the PushMagic string.
    pub fn from_parts(token_hex: &str, push_magic: &str) -> Result<PushTarget, TokenError> {
        Ok(PushTarget {
            token: DeviceToken::parse_hex(token_hex)?,
            push_magic: PushMagic::parse(push_magic)?,
        })
    }
}

/// How the client reaches APNs.
#[derive(Clone, Debug)]
pub struct ApnsSettings {
    /// `https://api.push.apple.com` unless a simulator is configured.
    pub base_url: String,
    /// Extra server roots to trust besides the public web PKI (the simulator's CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Attempts for 5xx answers and connection failures (at least 1).
    pub attempts: u32,
    /// First retry delay; doubles each attempt, capped at `max_delay`.
    pub retry_delay: Duration,
    pub max_delay: Duration,
    /// Per-request deadline.
    pub timeout: Duration,
}

impl Default for ApnsSettings {
    fn default() -> Self {
        ApnsSettings {
            base_url: APNS_PRODUCTION_URL.to_owned(),
            extra_roots: Vec::new(),
            attempts: 3,
            retry_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("the APNs address {0:?} is not an https:// URL")]
    BadBaseUrl(String),
    #[error("the push certificate cannot be used for TLS: {0}")]
    Tls(String),
}

/// What APNs answered to one push. Apple's `reason` strings are kept for the admin and the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// 200: APNs took it; `apns-id` identifies the notification.
    Delivered { apns_id: Option<String> },
    /// 400, 404, 405, 413: the request or the token is wrong (e.g. `BadDeviceToken`).
    Rejected { status: u16, reason: String },
    /// 403: the push certificate is refused (expired, revoked, wrong topic). Raise an alert.
    CertificateRejected { reason: String },
    /// 410: the token is no longer valid for the topic; stop pushing to it.
    Unregistered {
        reason: String,
        since: Option<OffsetDateTime>,
    },
    /// 429: too many pushes to this token; back off.
    TooManyRequests { reason: String },
    /// 5xx after the retries.
    ServerError { status: u16, reason: String },
    /// No answer at all after the retries (connection, TLS, timeout).
    Transport { error: String },
}

impl PushOutcome {
    /// The `outcome` label of `orchard_apns_pushes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            PushOutcome::Delivered { .. } => "delivered",
            PushOutcome::Rejected { .. } => "rejected",
            PushOutcome::CertificateRejected { .. } => "certificate_rejected",
            PushOutcome::Unregistered { .. } => "unregistered",
            PushOutcome::TooManyRequests { .. } => "too_many_requests",
            PushOutcome::ServerError { .. } => "server_error",
            PushOutcome::Transport { .. } => "transport_error",
        }
    }

    fn retryable(&self) -> bool {
        matches!(
            self,
            PushOutcome::ServerError { .. } | PushOutcome::Transport { .. }
        )
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/2 connection pool to APNs authenticated with one push identity.
///
/// A new certificate means a new client (see [`pusher::IdentityCell`]); one client multiplexes
/// every push over one connection.
pub struct ApnsClient {
    base: String,
    topic: Topic,
    http: HttpClient,
    settings: ApnsSettings,
}

impl fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsClient")
            .field("base", &self.base)
            .field("topic", &self.topic)
            .finish()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
    timestamp: Option<i64>,
}

/// Bound on an APNs error body (Apple's are a few dozen bytes).
const MAX_ERROR_BODY: usize = 4096;

impl ApnsClient {
    pub fn new(identity: &PushIdentity, settings: &ApnsSettings) -> Result<ApnsClient, ApnsError> {
        let url = url::Url::parse(&settings.base_url)
            .map_err(|_| ApnsError::BadBaseUrl(settings.base_url.clone()))?;
        if url.scheme() != "https" || url.host_str().is_none() {
            return Err(ApnsError::BadBaseUrl(settings.base_url.clone()));
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in &settings.extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| ApnsError::Tls(format!("extra root: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ApnsError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                identity.certificate.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.clone())),
            )
            .map_err(|e| ApnsError::Tls(e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http2()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Ok(ApnsClient {
            base: settings.base_url.trim_end_matches('/').to_owned(),
            topic: identity.topic().clone(),
            http,
            settings: settings.clone(),
        })
    }

    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Pushes once, retrying 5xx answers and connection failures with a bounded backoff.
    pub async fn send(&self, target: &PushTarget) -> PushOutcome {
        let mut delay = self.settings.retry_delay;
        let mut attempt = 1;
        loop {
            let outcome = self.send_once(target).await;
            if !outcome.retryable() || attempt >= self.settings.attempts.max(1) {
                return outcome;
            }
            tracing::debug!(token = %target.token, ?outcome, attempt, "APNs push will be retried");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.settings.max_delay);
            attempt += 1;
        }
    }

    /// One POST to `/3/device/<token>`, no retry.
    pub async fn send_once(&self, target: &PushTarget) -> PushOutcome {
        let body = serde_json::json!({ "mdm": target.push_magic.as_str() }).to_string();
        let request = http::Request::post(format!("{}/3/device/{}", self.base, target.token))
            .header("apns-push-type", "mdm")
            .header("apns-topic", self.topic.as_str())
            .header("apns-priority", "10")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                return PushOutcome::Transport {
                    error: e.to_string(),
                };
            }
        };
        let response =
            match tokio::time::timeout(self.settings.timeout, self.http.request(request)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return PushOutcome::Transport {
                        error: error_chain(&e),
                    };
                }
                Err(_) => {
                    return PushOutcome::Transport {
                        error: "APNs did not answer in time".into(),
                    };
                }
            };
        let status = response.status().as_u16();
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        classify(status, apns_id, &body)
    }
}

#[cfg(test)]
impl ApnsClient {
    /// Sends any request on the authenticated connection (for the simulator's refusal tests).
    pub(crate) async fn raw(&self, request: http::Request<Full<Bytes>>) -> (u16, String) {
        let Ok(response) = self.http.request(request).await else {
            return (0, String::new());
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Maps an APNs answer to its outcome (Apple's status codes and `reason` JSON).
fn classify(status: u16, apns_id: Option<String>, body: &[u8]) -> PushOutcome {
    if status == 200 {
        return PushOutcome::Delivered { apns_id };
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let reason = parsed
        .as_ref()
        .and_then(|b| b.reason.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        403 => PushOutcome::CertificateRejected { reason },
        410 => PushOutcome::Unregistered {
            reason,
            since: parsed.and_then(|b| b.timestamp).and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            }),
        },
        429 => PushOutcome::TooManyRequests { reason },
        500..=599 => PushOutcome::ServerError { status, reason },
        _ => PushOutcome::Rejected { status, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_maps_apple_statuses() {
        assert_eq!(
            classify(200, Some("abc".into()), b""),
            PushOutcome::Delivered {
                apns_id: Some("abc".into())
            }
        );
        assert_eq!(
            classify(400, None, br#"{"reason":"BadDeviceToken"}"#),
            PushOutcome::Rejected {
                status: 400,
                reason: "BadDeviceToken".into()
            }
        );
        assert_eq!(
            classify(403, None, br#"{"reason":"BadCertificate"}"#).label(),
            "certificate_rejected"
        );
        let gone = classify(
            410,
            None,
            br#"{"reason":"Unregistered","timestamp":1700000000000}"#,
        );
        assert_eq!(
            gone,
            PushOutcome::Unregistered {
                reason: "Unregistered".into(),
                since: OffsetDateTime::from_unix_timestamp(1_700_000_000).ok()
            }
        );
        assert_eq!(classify(429, None, b"").label(), "too_many_requests");
        assert_eq!(
            classify(503, None, b"not json"),
            PushOutcome::ServerError {
                status: 503,
                reason: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn device_tokens_are_hex_with_bounded_length() {
        let t = DeviceToken::parse_hex("00ff10").unwrap();
        assert_eq!(t.to_hex(), "00ff10");
        assert_eq!(DeviceToken::parse_hex("zz"), Err(TokenError::NotHex));
        assert_eq!(DeviceToken::parse_hex(""), Err(TokenError::Length));
        assert_eq!(
            DeviceToken::from_bytes(vec![1; 101]),
            Err(TokenError::Length)
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"00ff10\"");
        assert!(serde_json::from_str::<DeviceToken>("\"xyz\"").is_err());
    }

    #[test]
    fn push_magic_refuses_empty_and_control_characters() {
        assert!(PushMagic::parse("8A1B-22").is_ok());
        assert_eq!(PushMagic::parse(""), Err(TokenError::PushMagic));
        assert_eq!(PushMagic::parse("a\nb"), Err(TokenError::PushMagic));
        assert_eq!(
            PushMagic::parse(&"x".repeat(257)),
            Err(TokenError::PushMagic)
        );
    }
}
