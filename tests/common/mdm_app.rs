//! An in-process Orchard MDM side (SCEP CA, enrollment, check-in and connect adapters) and a
//! transport that lets simulated Macs call it directly: shared by `tests/mdm.rs` and the
//! `bench_mdm` example.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use http::HeaderMap;
use orchard::clock::SystemClock;
use orchard::mdm::auth::Authenticator;
use orchard::mdm::enroll::{EnrollSettings, Enroller, ProfileSigner, Purpose, TopicSource};
use orchard::mdm::http::MdmEndpoints;
use orchard::mdm::scep::ScepService;
use orchard::mdm::service::{MdmService, PushTarget, Waker};
use orchard::metrics::Metrics;
use orchard::pki::cms::{self, CertKind, CertSpec, Certificate, SignerKey};
use orchard::pki::secret::SecretKey;
use orchard::sim::mac::{MacModel, SimFuture, SimMac, SimRequest, SimResponse, Transport};
use orchard::store::Store;

pub const TOPIC: &str = "com.apple.mgmt.External.0f1e2d3c-aaaa-bbbb-cccc-000011112222";

#[derive(Clone, Default)]
pub struct Pushes(pub Arc<Mutex<Vec<PushTarget>>>);
impl Waker for Pushes {
    fn wake(&self, t: PushTarget) {
        self.0.lock().unwrap().push(t);
    }
}

pub struct Signer(Certificate, SignerKey);
impl ProfileSigner for Signer {
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        cms::sign_attached(content, &self.0, &self.1, &[]).map_err(|e| e.to_string())
    }
}

pub struct Topic;
impl TopicSource for Topic {
    fn topic(&self) -> Option<String> {
        Some(TOPIC.into())
    }
}

pub fn rsa_key() -> SignerKey {
    SignerKey::Rsa(rsa::PrivateKey::new(&mut rand::rng(), 2048).unwrap())
}

pub fn self_signed(cn: &str, kind: CertKind) -> (Certificate, SignerKey) {
    let key = rsa_key();
    let now = time::OffsetDateTime::now_utc();
    let spec = CertSpec {
        subject: x509_cert::name::Name::from_str(&format!("CN={cn}")).unwrap(),
        serial: 7,
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(30),
        kind,
    };
    (cms::self_signed_certificate(&spec, &key).unwrap(), key)
}

/// Orchard's MDM side, wired as `serve` wires it, minus the sockets.
pub struct App {
    pub store: Store,
    pub enroller: Enroller,
    pub scep: ScepService,
    pub endpoints: MdmEndpoints,
    pub pushes: Pushes,
    pub metrics: Metrics,
}

impl App {
    pub fn new() -> Arc<App> {
        let store = Store::memory();
        let clock = SystemClock::shared();
        let metrics = Metrics::new();
        let secrets = Arc::new(SecretKey::ephemeral());
        let (cert, key) = self_signed("Orchard profile signing", CertKind::EndEntity);
        let enroller = Enroller::new(
            store.clone(),
            clock.clone(),
            Signer(cert, key),
            Topic,
            EnrollSettings {
                base_url: "https://orchard.test:8443".into(),
                organization: "Hill School".into(),
                root_ca_der: None,
                locked: false,
            },
        );
        let scep = ScepService::load_or_create(
            store.clone(),
            &secrets,
            enroller.clone(),
            clock.clone(),
            metrics.clone(),
        )
        .unwrap();
        let pushes = Pushes::default();
        let service = MdmService::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            secrets,
            pushes.clone(),
        );
        let endpoints = MdmEndpoints::new(
            service,
            Authenticator::new(scep.ca_certificate().clone(), clock),
        );
        Arc::new(App {
            store,
            enroller,
            scep,
            endpoints,
            pushes,
            metrics,
        })
    }

    pub fn profile(&self) -> Vec<u8> {
        self.enroller.profile(Purpose::Manual).unwrap()
    }

    pub fn service(&self) -> &MdmService {
        self.endpoints.service()
    }
}

/// Calls the adapters directly, as the router would.
pub struct Direct(pub Arc<App>);

impl Transport for Direct {
    fn send(&self, req: SimRequest) -> SimFuture<'_> {
        Box::pin(async move {
            let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
            let mut headers = HeaderMap::new();
            for (k, v) in &req.headers {
                headers.insert(*k, v.parse().unwrap());
            }
            let (status, body) = match (req.method, path) {
                ("GET", "/scep") => {
                    let r = self.0.scep.get(query);
                    (r.status, r.body)
                }
                ("POST", "/scep") => {
                    let r = self.0.scep.pki_operation(&req.body);
                    (r.status, r.body)
                }
                ("PUT", "/mdm/checkin") => {
                    to_pair(self.0.endpoints.checkin(&headers, &req.body, &[])).await
                }
                ("PUT", "/mdm/connect") => {
                    to_pair(self.0.endpoints.connect(&headers, &req.body, &[])).await
                }
                _ => (404, Vec::new()),
            };
            Ok(SimResponse { status, body })
        })
    }
}

async fn to_pair(r: http::Response<http_body_util::Full<bytes::Bytes>>) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let status = r.status().as_u16();
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

pub async fn enrolled_mac(app: &Arc<App>, n: u32) -> SimMac {
    let mut mac = SimMac::new(MacModel::numbered(n), vec![n as u8; 32]).unwrap();
    mac.install_profile(&Direct(app.clone()), &app.profile())
        .await
        .unwrap();
    // Its first session answers the DeviceInformation every new Mac is asked.
    assert_eq!(mac.session(&Direct(app.clone())).await.unwrap(), 1);
    app.pushes.0.lock().unwrap().clear();
    mac
}
