//! An APNs simulator: HTTP/2 over TLS on loopback that requires a client certificate and answers
//! like Apple (errors included), records accepted pushes and tells listeners so simulated Macs wake.
//! It also plays "Apple's push CA": [`PushCa::sign_csr`] turns Orchard's push CSR into a push
//! certificate with a topic, which the simulator trusts.
//!
//! Statuses and `reason` strings follow Apple's "Handling notification responses from APNs".

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use der::{Decode, Encode};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName as TlsName, SignatureScheme};
use time::{Duration, OffsetDateTime};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::apple::apns::{DeviceToken, MAX_PAYLOAD, MDM_TOPIC_PREFIX, PushCertificate};
use crate::clock::SharedClock;

/// What went wrong setting up the simulator or signing a request.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the push CSR is not usable: {0}")]
    BadCsr(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// `userId` (UID) as rcgen spells an OID.
const UID_ARCS: [u64; 7] = [0, 9, 2342, 19_200_300, 100, 1, 1];
const RSA_ENCRYPTION: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// The simulated Apple push certification authority.
pub struct PushCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl std::fmt::Debug for PushCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushCa")
    }
}

impl PushCa {
    pub fn new() -> Result<PushCa, SimError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Orchard Simulated Apple Push CA");
        name.push(DnType::OrganizationName, "Orchard simulator (not Apple)");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(3650);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(PushCa {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate: trusted by the simulator for client certificates, and by the client for
    /// the simulator's own TLS certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Signs a push CSR (PEM, RSA with SHA-256, as Orchard makes them) into a push certificate
    /// for `topic`, valid over the given window. Refuses a CSR whose signature does not verify.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        topic: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<String, SimError> {
        if !topic.starts_with(MDM_TOPIC_PREFIX) {
            return Err(SimError::BadCsr(format!("{topic} is not an MDM topic")));
        }
        let public_key = verified_csr_key(csr_pem)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CustomDnType(UID_ARCS.to_vec()),
            DnValue::Utf8String(topic.to_owned()),
        );
        name.push(DnType::CommonName, format!("APSP:{}", uuid::Uuid::new_v4()));
        name.push(DnType::CountryName, "US");
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(rcgen::SerialNumber::from(
            uuid::Uuid::new_v4().as_bytes()[..12].to_vec(),
        ));
        Ok(params.signed_by(&public_key, &self.issuer)?.pem())
    }

    /// Signs a CSR with a fresh `com.apple.mgmt.External.<uuid>` topic, valid a year from `now`
    /// (what the Push Certificates Portal does on "Create a certificate").
    pub fn sign_csr_new_topic(
        &self,
        csr_pem: &str,
        now: OffsetDateTime,
    ) -> Result<String, SimError> {
        let topic = format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4());
        self.sign_csr(
            csr_pem,
            &topic,
            now - Duration::minutes(5),
            now + Duration::days(365),
        )
    }

    /// A TLS server certificate for the simulator's loopback listener.
    fn server_certificate(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SimError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| SimError::Tls(e.to_string()))?;
        Ok((vec![cert.der().clone(), self.cert.clone()], key_der))
    }
}

/// An RSA public key taken from a verified CSR, for rcgen to certify.
struct CsrKey(Vec<u8>);

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

fn verified_csr_key(csr_pem: &str) -> Result<CsrKey, SimError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| SimError::BadCsr(e.to_string()))?;
    let req = x509_cert::request::CertReq::from_der(der.as_ref())
        .map_err(|e| SimError::BadCsr(e.to_string()))?;
    let spki = &req.info.public_key;
    if spki.algorithm.oid != RSA_ENCRYPTION || req.algorithm.oid != SHA256_WITH_RSA {
        return Err(SimError::BadCsr(
            "Apple takes RSA keys signed with SHA-256 only".into(),
        ));
    }
    let key = spki.subject_public_key.raw_bytes().to_vec();
    let info = req
        .info
        .to_der()
        .map_err(|e| SimError::BadCsr(e.to_string()))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &key)
        .verify(&info, req.signature.raw_bytes())
        .map_err(|_| SimError::BadCsr("the CSR signature does not verify".into()))?;
    Ok(CsrKey(key))
}

/// One push the simulator accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct SimPush {
    pub token: DeviceToken,
    pub topic: String,
    pub payload: serde_json::Value,
    pub apns_id: String,
    /// Serial of the push certificate the provider connected with.
    pub client_serial: String,
}

#[derive(Debug)]
struct Device {
    topic: String,
    unregistered_at: Option<OffsetDateTime>,
}

#[derive(Debug)]
struct State {
    devices: HashMap<DeviceToken, Device>,
    /// Injected answers for the next requests (500, 503), oldest first.
    faults: VecDeque<u16>,
    /// At most `rate_max` pushes per token within `rate_window`.
    rate_max: usize,
    rate_window: Duration,
    recent: HashMap<DeviceToken, VecDeque<OffsetDateTime>>,
    accepted: Vec<SimPush>,
    requests: usize,
}

struct Shared {
    ca: Arc<PushCa>,
    clock: SharedClock,
    chain_check: Arc<dyn ClientCertVerifier>,
    state: Mutex<State>,
    events: broadcast::Sender<SimPush>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere does not make it unusable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running APNs simulator on `127.0.0.1`. Stops when dropped.
pub struct ApnsSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ApnsSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApnsSim {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(ca: Arc<PushCa>, clock: SharedClock) -> Result<ApnsSim, SimError> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        ApnsSim::serve(listener, ca, clock)
    }

    /// Serves on an already bound listener.
    pub fn serve(
        listener: TcpListener,
        ca: Arc<PushCa>,
        clock: SharedClock,
    ) -> Result<ApnsSim, SimError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.certificate().clone())
            .map_err(|e| SimError::Tls(e.to_string()))?;
        let chain_check =
            WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
                .build()
                .map_err(|e| SimError::Tls(e.to_string()))?;
        let (chain, key) = ca.server_certificate()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| SimError::Tls(e.to_string()))?
            .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
            .with_single_cert(chain, key)
            .map_err(|e| SimError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            ca,
            clock,
            chain_check,
            state: Mutex::new(State {
                devices: HashMap::new(),
                faults: VecDeque::new(),
                rate_max: 100,
                rate_window: Duration::minutes(1),
                recent: HashMap::new(),
                accepted: Vec::new(),
                requests: 0,
            }),
            events,
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(ApnsSim { shared, addr, task })
    }

    /// The base URL to configure as Orchard's APNs address.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The root the client must trust for the simulator's TLS certificate.
    pub fn server_root(&self) -> CertificateDer<'static> {
        self.shared.ca.certificate().clone()
    }

    pub fn ca(&self) -> &Arc<PushCa> {
        &self.shared.ca
    }

    /// Gives a simulated device a token for `topic`, as APNs does when a Mac registers.
    pub fn register_device(&self, topic: &str) -> DeviceToken {
        let bytes: [u8; 32] = rand::random();
        let token = DeviceToken::from_bytes(bytes.to_vec())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid token length"));
        self.shared.state().devices.insert(
            token.clone(),
            Device {
                topic: topic.to_owned(),
                unregistered_at: None,
            },
        );
        token
    }

    /// The app was removed (the Mac unenrolled): later pushes get 410 `Unregistered`.
    pub fn unregister_device(&self, token: &DeviceToken) {
        let now = self.shared.clock.now();
        if let Some(d) = self.shared.state().devices.get_mut(token) {
            d.unregistered_at = Some(now);
        }
    }

    /// The next `count` requests get `status` (500 or 503) whatever they carry.
    pub fn fail_next(&self, count: usize, status: u16) {
        let mut state = self.shared.state();
        state.faults.extend(std::iter::repeat_n(status, count));
    }

    /// At most `max` pushes per token within `window`; more get 429.
    pub fn set_rate_limit(&self, max: usize, window: Duration) {
        let mut state = self.shared.state();
        state.rate_max = max;
        state.rate_window = window;
    }

    /// Every push accepted so far, in order.
    pub fn accepted(&self) -> Vec<SimPush> {
        self.shared.state().accepted.clone()
    }

    /// How many requests reached the simulator (accepted or not).
    pub fn requests(&self) -> usize {
        self.shared.state().requests
    }

    /// Accepted pushes as they happen (for simulated Macs to wake up).
    pub fn subscribe(&self) -> broadcast::Receiver<SimPush> {
        self.shared.events.subscribe()
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer = Arc::new(peer);
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&shared, &peer, req).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    reply_json(status, serde_json::json!({ "reason": reason }))
}

fn reply_json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// One request, checked in the order APNs reports problems.
async fn handle(
    shared: &Shared,
    peer: &[CertificateDer<'static>],
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let now = shared.clock.now();
    shared.state().requests += 1;
    if let Some(status) = shared.state().faults.pop_front() {
        return match status {
            503 => reply(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            _ => reply(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        };
    }
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    }
    let Some(token_hex) = req
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .map(str::to_owned)
    else {
        return reply(StatusCode::NOT_FOUND, "BadPath");
    };
    if token_hex.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "MissingDeviceToken");
    }
    let (cert_topic, client_serial) = match check_certificate(shared, peer, now) {
        Ok(found) => found,
        Err(reason) => return reply(StatusCode::FORBIDDEN, reason),
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (push_type, topic, priority, apns_id) = (
        header("apns-push-type"),
        header("apns-topic"),
        header("apns-priority"),
        header("apns-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    );
    if push_type.as_deref() != Some("mdm") {
        return reply(StatusCode::BAD_REQUEST, "InvalidPushType");
    }
    if let Some(topic) = topic
        && topic != cert_topic
    {
        return reply(StatusCode::BAD_REQUEST, "TopicDisallowed");
    }
    if let Some(p) = priority
        && !matches!(p.as_str(), "1" | "5" | "10")
    {
        return reply(StatusCode::BAD_REQUEST, "BadPriority");
    }
    let body = match Limited::new(req.into_body(), MAX_PAYLOAD).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
    };
    if body.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "PayloadEmpty");
    }
    let Ok(token) = DeviceToken::parse_hex(&token_hex) else {
        return reply(StatusCode::BAD_REQUEST, "BadDeviceToken");
    };
    let mut state = shared.state();
    match state.devices.get(&token) {
        None => return reply(StatusCode::BAD_REQUEST, "BadDeviceToken"),
        Some(d) if d.topic != cert_topic => {
            return reply(StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic");
        }
        Some(Device {
            unregistered_at: Some(at),
            ..
        }) => {
            let ms = at.unix_timestamp_nanos() / 1_000_000;
            return reply_json(
                StatusCode::GONE,
                serde_json::json!({ "reason": "Unregistered", "timestamp": ms }),
            );
        }
        Some(_) => {}
    }
    let (max, window) = (state.rate_max, state.rate_window);
    let recent = state.recent.entry(token.clone()).or_default();
    while recent.front().is_some_and(|t| *t <= now - window) {
        recent.pop_front();
    }
    if recent.len() >= max {
        return reply(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    }
    recent.push_back(now);
    let push = SimPush {
        token,
        topic: cert_topic,
        payload: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        apns_id: apns_id.clone(),
        client_serial,
    };
    state.accepted.push(push.clone());
    drop(state);
    // No listener is fine: nobody is waiting for this device.
    let _ = shared.events.send(push);
    let mut resp = Response::new(Full::new(Bytes::new()));
    if let Ok(v) = http::HeaderValue::from_str(&apns_id) {
        resp.headers_mut().insert("apns-id", v);
    }
    resp
}

/// The client certificate must be a push certificate from the (simulated) Apple push CA, valid now.
fn check_certificate(
    shared: &Shared,
    peer: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<(String, String), &'static str> {
    let (leaf, intermediates) = peer.split_first().ok_or("MissingProviderToken")?;
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    match shared
        .chain_check
        .verify_client_cert(leaf, intermediates, at)
    {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
        )) => return Err("ExpiredProviderToken"),
        Err(_) => return Err("BadCertificate"),
    }
    PushCertificate::parse(vec![leaf.clone()])
        .map(|c| (c.topic.as_str().to_owned(), c.serial))
        .map_err(|_| "BadCertificate")
}

/// Requires a client certificate and checks its handshake signature, but leaves the chain to the
/// request handler, so a bad certificate gets Apple's 403 answer instead of a TLS alert.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[TlsName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apple::apns::{ApnsClient, ApnsSettings};
    use crate::apple::push_cert::PushCertService;
    use crate::clock::{Clock, ManualClock};
    use crate::pki::secret::SecretKey;
    use crate::store::Store;

    struct Rig {
        sim: ApnsSim,
        client: ApnsClient,
        topic: String,
        token: DeviceToken,
    }

    async fn rig() -> Rig {
        let clock = ManualClock::starting_now();
        let ca = Arc::new(PushCa::new().unwrap());
        let sim = ApnsSim::start(ca.clone(), clock.clone()).await.unwrap();
        let certs = PushCertService::new(
            Arc::new(Store::memory()),
            Arc::new(SecretKey::ephemeral()),
            clock.clone(),
        )
        .unwrap();
        let now = clock.now();
        let topic = format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4());
        let pem = ca
            .sign_csr(
                &certs.csr().unwrap(),
                &topic,
                now,
                now + Duration::days(365),
            )
            .unwrap();
        certs
            .upload(pem.as_bytes(), "it@school.example", None)
            .unwrap();
        let settings = ApnsSettings {
            base_url: sim.base_url(),
            extra_roots: vec![sim.server_root()],
            ..ApnsSettings::default()
        };
        let client = ApnsClient::new(&certs.identity().get().unwrap(), &settings).unwrap();
        let token = sim.register_device(&topic);
        Rig {
            sim,
            client,
            topic,
            token,
        }
    }

    fn request(
        rig: &Rig,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut builder =
            Request::builder()
                .method(method)
                .uri(format!("{}{}", rig.client.base(), path));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(Full::new(Bytes::from(body))).unwrap()
    }

    fn mdm_headers(topic: &str) -> Vec<(&'static str, String)> {
        vec![
            ("apns-push-type", "mdm".into()),
            ("apns-topic", topic.to_owned()),
        ]
    }

    async fn send(
        rig: &Rig,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rig.client
            .raw(request(rig, method, path, &headers, body.to_vec()))
            .await
    }

    #[tokio::test]
    async fn refuses_what_apns_refuses() {
        let rig = rig().await;
        let path = format!("/3/device/{}", rig.token);
        let ok = br#"{"mdm":"m"}"#;
        let h = mdm_headers(&rig.topic);

        let cases: Vec<(u16, &str, (u16, String))> = vec![
            (
                405,
                "MethodNotAllowed",
                send(&rig, "GET", &path, &h, b"").await,
            ),
            (
                404,
                "BadPath",
                send(&rig, "POST", "/2/device/00", &h, ok).await,
            ),
            (
                400,
                "MissingDeviceToken",
                send(&rig, "POST", "/3/device/", &h, ok).await,
            ),
            (
                400,
                "InvalidPushType",
                send(
                    &rig,
                    "POST",
                    &path,
                    &[("apns-topic", rig.topic.clone())],
                    ok,
                )
                .await,
            ),
            (
                400,
                "TopicDisallowed",
                send(
                    &rig,
                    "POST",
                    &path,
                    &[
                        ("apns-push-type", "mdm".into()),
                        ("apns-topic", "com.apple.mgmt.Other".into()),
                    ],
                    ok,
                )
                .await,
            ),
            (
                400,
                "BadPriority",
                send(
                    &rig,
                    "POST",
                    &path,
                    &[h[0].clone(), ("apns-priority", "7".into())],
                    ok,
                )
                .await,
            ),
            (
                400,
                "PayloadEmpty",
                send(&rig, "POST", &path, &h, b"").await,
            ),
            (
                413,
                "PayloadTooLarge",
                send(&rig, "POST", &path, &h, &vec![b' '; MAX_PAYLOAD + 1]).await,
            ),
            (
                400,
                "BadDeviceToken",
                send(&rig, "POST", "/3/device/xyz", &h, ok).await,
            ),
        ];
        for (status, reason, (got_status, body)) in cases {
            assert_eq!(got_status, status, "{reason}: {body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["reason"], reason);
        }
        assert!(
            rig.sim.accepted().is_empty(),
            "nothing refused was recorded"
        );

        // The same connection still delivers a proper push.
        let (status, _) = send(&rig, "POST", &path, &h, ok).await;
        assert_eq!(status, 200);
        assert_eq!(rig.sim.accepted().len(), 1);
    }

    #[test]
    fn push_ca_refuses_a_tampered_csr() {
        let certs = PushCertService::new(
            Arc::new(Store::memory()),
            Arc::new(SecretKey::ephemeral()),
            crate::clock::SystemClock::shared(),
        )
        .unwrap();
        let csr = certs.csr().unwrap();
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        // Flip a bit in the subject (inside the signed part).
        let at = bytes.len() / 3;
        bytes[at] ^= 1;
        let tampered = pem_of("CERTIFICATE REQUEST", &bytes);
        let ca = PushCa::new().unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(
            ca.sign_csr(
                &tampered,
                "com.apple.mgmt.External.x",
                now,
                now + Duration::days(1)
            )
            .is_err()
        );
        assert!(
            ca.sign_csr(&csr, "not.a.push.topic", now, now + Duration::days(1))
                .is_err()
        );
        let pem = ca
            .sign_csr(
                &csr,
                "com.apple.mgmt.External.x",
                now,
                now + Duration::days(1),
            )
            .unwrap();
        let cert = PushCertificate::parse_pem(pem.as_bytes()).unwrap();
        assert_eq!(cert.topic.as_str(), "com.apple.mgmt.External.x");
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    }
}
