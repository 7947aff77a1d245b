//! APNs against the simulator: every outcome of the client, the pusher's coalescing, backoff,
//! dead tokens and certificate alerts, and the push certificate's upload, renewal, topic change
//! and hot reload.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use orchard::apple::apns::pusher::{
    CertificateAlerts, DeadTokens, IdentityCell, PUSHES_TOTAL, Pusher, PusherSettings, Queued,
};
use orchard::apple::apns::{
    ApnsClient, ApnsSettings, CertificateError, DeviceToken, PushMagic, PushOutcome, PushTarget,
    Topic,
};
use orchard::apple::push_cert::{
    Expiry, PushCertError, PushCertService, TOPIC_CHANGE_WORD, TopicChangeConfirmation,
};
use orchard::clock::{Clock, ManualClock, SharedClock};
use orchard::metrics::Metrics;
use orchard::pki::secret::SecretKey;
use orchard::sim::apns::{ApnsSim, PushCa};
use orchard::store::Store;
use time::Duration;

struct World {
    clock: Arc<ManualClock>,
    sim: ApnsSim,
    ca: Arc<PushCa>,
    store: Store,
    secret: Arc<SecretKey>,
    certs: Arc<PushCertService>,
}

impl World {
    async fn new() -> World {
        let clock = ManualClock::starting_now();
        let ca = Arc::new(PushCa::new().unwrap());
        let shared: SharedClock = clock.clone();
        let sim = ApnsSim::start(ca.clone(), shared.clone()).await.unwrap();
        let store = Store::memory();
        let secret = Arc::new(SecretKey::ephemeral());
        let certs = Arc::new(
            PushCertService::new(Arc::new(store.clone()), secret.clone(), shared).unwrap(),
        );
        World {
            clock,
            sim,
            ca,
            store,
            secret,
            certs,
        }
    }

    fn settings(&self) -> ApnsSettings {
        ApnsSettings {
            base_url: self.sim.base_url(),
            extra_roots: vec![self.sim.server_root()],
            attempts: 3,
            retry_delay: StdDuration::from_millis(5),
            max_delay: StdDuration::from_millis(20),
            timeout: StdDuration::from_secs(10),
        }
    }

    /// Goes through the portal: Orchard's CSR, signed by the simulated Apple CA with `topic`.
    fn issue(&self, topic: &str) -> String {
        let csr = self.certs.csr().unwrap();
        let now = self.clock.now();
        self.ca
            .sign_csr(
                &csr,
                topic,
                now - Duration::minutes(5),
                now + Duration::days(365),
            )
            .unwrap()
    }

    /// Installs a first certificate and returns its topic.
    fn install_first(&self) -> Topic {
        let topic = new_topic();
        let pem = self.issue(&topic);
        self.certs
            .upload(pem.as_bytes(), "it@school.example", None)
            .unwrap()
            .topic
    }

    fn client(&self) -> ApnsClient {
        let identity = self.certs.identity().get().unwrap();
        ApnsClient::new(&identity, &self.settings()).unwrap()
    }

    fn pusher(&self, dead: Arc<DeadRecorder>) -> (Pusher, Metrics) {
        let metrics = Metrics::new();
        let settings = PusherSettings {
            concurrency: 4,
            spacing: StdDuration::from_millis(1),
            backoff: StdDuration::from_millis(10),
            max_backoff: StdDuration::from_millis(40),
            max_throttled: 2,
        };
        let pusher = Pusher::new(
            self.certs.identity(),
            self.settings(),
            settings,
            dead,
            self.certs.clone(),
            metrics.clone(),
        );
        (pusher, metrics)
    }
}

fn new_topic() -> String {
    format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4())
}

fn target(token: &DeviceToken, magic: &str) -> PushTarget {
    PushTarget {
        token: token.clone(),
        push_magic: PushMagic::parse(magic).unwrap(),
    }
}

#[derive(Default)]
struct DeadRecorder(Mutex<Vec<DeviceToken>>);

impl DeadTokens for DeadRecorder {
    fn token_unregistered(&self, token: &DeviceToken, _since: Option<time::OffsetDateTime>) {
        self.0.lock().unwrap().push(token.clone());
    }
}

// ---- the client, one test per outcome ----

#[tokio::test]
async fn delivered_push_carries_topic_push_type_and_magic() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let mut woken = w.sim.subscribe();
    let outcome = w.client().send(&target(&token, "MAGIC-1")).await;
    let PushOutcome::Delivered { apns_id: Some(id) } = outcome else {
        panic!("expected delivery, got {outcome:?}");
    };
    let pushes = w.sim.accepted();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].token, token);
    assert_eq!(pushes[0].topic, topic.as_str());
    assert_eq!(pushes[0].payload, serde_json::json!({"mdm": "MAGIC-1"}));
    assert_eq!(pushes[0].apns_id, id);
    assert_eq!(woken.recv().await.unwrap().token, token);
}

#[tokio::test]
async fn unknown_token_is_bad_device_token() {
    let w = World::new().await;
    w.install_first();
    let stranger = DeviceToken::from_bytes(vec![7; 32]).unwrap();
    let outcome = w.client().send(&target(&stranger, "m")).await;
    assert_eq!(
        outcome,
        PushOutcome::Rejected {
            status: 400,
            reason: "BadDeviceToken".into()
        }
    );
    assert!(w.sim.accepted().is_empty());
}

#[tokio::test]
async fn token_of_another_topic_is_refused() {
    let w = World::new().await;
    w.install_first();
    let token = w.sim.register_device(&new_topic());
    let outcome = w.client().send(&target(&token, "m")).await;
    assert_eq!(
        outcome,
        PushOutcome::Rejected {
            status: 400,
            reason: "DeviceTokenNotForTopic".into()
        }
    );
}

#[tokio::test]
async fn certificate_from_another_ca_is_forbidden() {
    let w = World::new().await;
    // A certificate the simulated Apple never issued: signed by a look-alike CA.
    let impostor = PushCa::new().unwrap();
    let csr = w.certs.csr().unwrap();
    let now = w.clock.now();
    let topic = new_topic();
    let pem = impostor
        .sign_csr(
            &csr,
            &topic,
            now - Duration::minutes(1),
            now + Duration::days(30),
        )
        .unwrap();
    w.certs
        .upload(pem.as_bytes(), "it@school.example", None)
        .unwrap();
    let token = w.sim.register_device(&topic);
    let outcome = w.client().send(&target(&token, "m")).await;
    assert_eq!(
        outcome,
        PushOutcome::CertificateRejected {
            reason: "BadCertificate".into()
        }
    );
    assert!(w.sim.accepted().is_empty());
}

#[tokio::test]
async fn expired_certificate_is_forbidden() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let client = w.client();
    w.clock.advance(Duration::days(400));
    let outcome = client.send(&target(&token, "m")).await;
    assert_eq!(
        outcome,
        PushOutcome::CertificateRejected {
            reason: "ExpiredProviderToken".into()
        }
    );
}

#[tokio::test]
async fn unregistered_token_is_gone_with_a_timestamp() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    w.sim.unregister_device(&token);
    let outcome = w.client().send(&target(&token, "m")).await;
    let PushOutcome::Unregistered { reason, since } = outcome else {
        panic!("expected 410, got {outcome:?}");
    };
    assert_eq!(reason, "Unregistered");
    assert_eq!(
        since.map(|t| t.unix_timestamp()),
        Some(w.clock.now().unix_timestamp())
    );
}

#[tokio::test]
async fn too_many_pushes_to_one_token_get_429() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    w.sim.set_rate_limit(1, Duration::minutes(1));
    let client = w.client();
    assert!(matches!(
        client.send(&target(&token, "m")).await,
        PushOutcome::Delivered { .. }
    ));
    assert_eq!(
        client.send(&target(&token, "m")).await,
        PushOutcome::TooManyRequests {
            reason: "TooManyRequests".into()
        }
    );
    // A 429 is not retried by the client: the pusher backs off instead.
    assert_eq!(w.sim.requests(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let client = w.client();

    w.sim.fail_next(2, 503);
    assert!(matches!(
        client.send(&target(&token, "m")).await,
        PushOutcome::Delivered { .. }
    ));
    assert_eq!(w.sim.requests(), 3, "two failures, then success");

    w.sim.fail_next(5, 500);
    assert_eq!(
        client.send(&target(&token, "m")).await,
        PushOutcome::ServerError {
            status: 500,
            reason: "InternalServerError".into()
        }
    );
    assert_eq!(w.sim.requests(), 6, "bounded: three attempts, no more");
    assert_eq!(w.sim.accepted().len(), 1);
}

#[tokio::test]
async fn unreachable_apns_is_a_transport_outcome() {
    let w = World::new().await;
    w.install_first();
    let identity = w.certs.identity().get().unwrap();
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let settings = ApnsSettings {
        base_url: format!("https://localhost:{port}"),
        ..w.settings()
    };
    let client = ApnsClient::new(&identity, &settings).unwrap();
    let token = DeviceToken::from_bytes(vec![1; 32]).unwrap();
    let outcome = client.send(&target(&token, "m")).await;
    assert_eq!(outcome.label(), "transport_error", "{outcome:?}");
}

#[tokio::test]
async fn client_refuses_a_plain_http_base_url() {
    let w = World::new().await;
    w.install_first();
    let identity = w.certs.identity().get().unwrap();
    let settings = ApnsSettings {
        base_url: "http://api.push.apple.com".into(),
        ..ApnsSettings::default()
    };
    assert!(ApnsClient::new(&identity, &settings).is_err());
    assert_eq!(
        ApnsSettings::default().base_url,
        "https://api.push.apple.com"
    );
}

// ---- the pusher ----

#[tokio::test]
async fn pushes_coalesce_per_device_until_sent() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let (pusher, metrics) = w.pusher(Arc::default());
    assert_eq!(pusher.push(target(&token, "old")), Queued::New);
    assert_eq!(pusher.push(target(&token, "new")), Queued::Coalesced);
    assert_eq!(pusher.push(target(&token, "new")), Queued::Coalesced);
    assert_eq!(pusher.pending(), 1);
    let sent = pusher.run_once().await;
    assert_eq!(sent.len(), 1);
    let pushes = w.sim.accepted();
    assert_eq!(pushes.len(), 1, "three requests, one push");
    assert_eq!(pushes[0].payload, serde_json::json!({"mdm": "new"}));
    assert_eq!(
        metrics.value(PUSHES_TOTAL, &[("outcome", "coalesced")]),
        Some(2.0)
    );
    assert_eq!(
        metrics.value(PUSHES_TOTAL, &[("outcome", "delivered")]),
        Some(1.0)
    );
    // Once sent, the next request is a new push.
    assert_eq!(pusher.push(target(&token, "new")), Queued::New);
}

#[tokio::test]
async fn bulk_pushes_all_go_out() {
    let w = World::new().await;
    let topic = w.install_first();
    let tokens: Vec<_> = (0..40)
        .map(|_| w.sim.register_device(topic.as_str()))
        .collect();
    let (pusher, _) = w.pusher(Arc::default());
    assert_eq!(pusher.push_all(tokens.iter().map(|t| target(t, "m"))), 40);
    let outcomes = pusher.run_once().await;
    assert_eq!(outcomes.len(), 40);
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, PushOutcome::Delivered { .. }))
    );
    let mut pushed: Vec<_> = w.sim.accepted().into_iter().map(|p| p.token).collect();
    let mut expected = tokens.clone();
    pushed.sort();
    expected.sort();
    assert_eq!(pushed, expected);
}

#[tokio::test]
async fn gone_token_is_reported_dead() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    w.sim.unregister_device(&token);
    let dead = Arc::new(DeadRecorder::default());
    let (pusher, metrics) = w.pusher(dead.clone());
    pusher.push(target(&token, "m"));
    pusher.run_once().await;
    assert_eq!(*dead.0.lock().unwrap(), vec![token]);
    assert_eq!(
        metrics.value(PUSHES_TOTAL, &[("outcome", "unregistered")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn refused_certificate_raises_the_admin_alert() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let (pusher, _) = w.pusher(Arc::default());
    assert!(w.certs.status().unwrap().unwrap().alert.is_none());
    w.clock.advance(Duration::days(400));
    pusher.push(target(&token, "m"));
    pusher.run_once().await;
    let alert = w.certs.status().unwrap().unwrap().alert.unwrap();
    assert_eq!(alert.reason, "ExpiredProviderToken");
    assert_eq!(alert.topic, topic.as_str());
}

#[tokio::test]
async fn throttled_push_backs_off_and_is_sent_later() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    w.sim.set_rate_limit(1, Duration::minutes(1));
    let (pusher, metrics) = w.pusher(Arc::default());
    pusher.push(target(&token, "m"));
    pusher.run_once().await;
    pusher.push(target(&token, "m"));
    let outcomes = pusher.run_once().await;
    assert_eq!(outcomes[0].1.label(), "too_many_requests");
    assert_eq!(pusher.pending(), 1, "requeued");
    // Not due yet: the backoff holds it back.
    assert!(pusher.run_once().await.is_empty());
    w.clock.advance(Duration::minutes(2));
    tokio::time::sleep(StdDuration::from_millis(15)).await;
    let outcomes = pusher.run_once().await;
    assert!(matches!(outcomes[0].1, PushOutcome::Delivered { .. }));
    assert_eq!(w.sim.accepted().len(), 2);
    assert_eq!(
        metrics.value(PUSHES_TOTAL, &[("outcome", "too_many_requests")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn run_loop_sends_without_being_stepped() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let (pusher, _) = w.pusher(Arc::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let pusher = pusher.clone();
        async move {
            pusher
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let mut woken = w.sim.subscribe();
    pusher.push(target(&token, "m"));
    let push = tokio::time::timeout(StdDuration::from_secs(10), woken.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(push.token, token);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn without_a_certificate_nothing_is_sent() {
    let w = World::new().await;
    let (pusher, metrics) = w.pusher(Arc::default());
    pusher.push(target(&DeviceToken::from_bytes(vec![1; 32]).unwrap(), "m"));
    assert!(pusher.run_once().await.is_empty());
    assert_eq!(w.sim.requests(), 0);
    assert_eq!(
        metrics.value(PUSHES_TOTAL, &[("outcome", "no_certificate")]),
        Some(1.0)
    );
}

// ---- the push certificate ----

#[tokio::test]
async fn upload_records_topic_apple_id_and_expiry() {
    let w = World::new().await;
    let topic = new_topic();
    let pem = w.issue(&topic);
    let status = w
        .certs
        .upload(pem.as_bytes(), "  it@school.example ", None)
        .unwrap();
    assert_eq!(status.topic.as_str(), topic);
    assert_eq!(status.apple_id, "it@school.example");
    assert_eq!(status.expiry, Expiry::Valid);
    assert_eq!(w.certs.topic().unwrap().as_str(), topic);
    assert!(!w.certs.has_pending_request().unwrap());

    w.clock.advance(Duration::days(340));
    let soon = w.certs.status().unwrap().unwrap().expiry;
    assert!(
        matches!(soon, Expiry::ExpiresSoon { days } if days <= 30),
        "{soon:?}"
    );
    w.clock.advance(Duration::days(30));
    assert_eq!(w.certs.status().unwrap().unwrap().expiry, Expiry::Expired);
}

#[tokio::test]
async fn bad_uploads_are_refused_and_change_nothing() {
    let w = World::new().await;
    let topic = w.install_first();
    let before = w.certs.status().unwrap().unwrap();

    let csr = w.certs.new_csr().unwrap();
    let err = w
        .certs
        .upload(b"hello", "it@school.example", None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PushCertError::Certificate(CertificateError::NoCertificate)
        ),
        "{err}"
    );
    let err = w
        .certs
        .upload(csr.as_bytes(), "it@school.example", None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PushCertError::Certificate(CertificateError::NoCertificate)
        ),
        "{err}"
    );

    // A certificate Apple made for somebody else's request.
    let other = PushCertService::new(
        Arc::new(Store::memory()),
        Arc::new(SecretKey::ephemeral()),
        w.clock.clone(),
    )
    .unwrap();
    let now = w.clock.now();
    let foreign =
        w.ca.sign_csr(
            &other.csr().unwrap(),
            topic.as_str(),
            now,
            now + Duration::days(365),
        )
        .unwrap();
    let err = w
        .certs
        .upload(foreign.as_bytes(), "it@school.example", None)
        .unwrap_err();
    assert!(matches!(err, PushCertError::NotOurRequest), "{err}");

    // Ours, but expired already.
    let expired =
        w.ca.sign_csr(
            &csr,
            topic.as_str(),
            now - Duration::days(400),
            now - Duration::days(35),
        )
        .unwrap();
    let err = w
        .certs
        .upload(expired.as_bytes(), "it@school.example", None)
        .unwrap_err();
    assert!(matches!(err, PushCertError::Expired(_)), "{err}");

    let good = w.issue(topic.as_str());
    let err = w
        .certs
        .upload(good.as_bytes(), "not an email", None)
        .unwrap_err();
    assert!(matches!(err, PushCertError::BadAppleId), "{err}");

    let after = w.certs.status().unwrap().unwrap();
    assert_eq!(after.serial, before.serial);
    assert!(w.certs.has_pending_request().unwrap());
}

#[tokio::test]
async fn renewal_keeps_the_topic_and_reloads_the_pusher() {
    let w = World::new().await;
    let topic = w.install_first();
    let token = w.sim.register_device(topic.as_str());
    let (pusher, _) = w.pusher(Arc::default());
    pusher.push(target(&token, "m"));
    pusher.run_once().await;
    let first_serial = w.sim.accepted()[0].client_serial.clone();

    // Renew: a new request, signed for the same topic; no confirmation needed.
    w.certs.new_csr().unwrap();
    let renewed = w.issue(topic.as_str());
    let status = w
        .certs
        .upload(renewed.as_bytes(), "it@school.example", None)
        .unwrap();
    assert_eq!(status.topic, topic);

    pusher.push(target(&token, "m"));
    pusher.run_once().await;
    let second_serial = w.sim.accepted()[1].client_serial.clone();
    assert_ne!(
        first_serial, second_serial,
        "the new certificate is used at once"
    );
    assert_eq!(second_serial, status.serial);
}

#[tokio::test]
async fn topic_change_needs_typed_confirmation() {
    let w = World::new().await;
    let old = w.install_first();
    w.certs.new_csr().unwrap();
    let new = new_topic();
    let pem = w.issue(&new);

    let err = w
        .certs
        .upload(pem.as_bytes(), "it@school.example", None)
        .unwrap_err();
    let PushCertError::TopicChange {
        current,
        new: offered,
    } = &err
    else {
        panic!("expected a topic change refusal, got {err}");
    };
    assert_eq!(current, old.as_str());
    assert_eq!(offered, &new);
    assert_eq!(w.certs.topic().unwrap(), old, "nothing changed");

    assert!(matches!(
        TopicChangeConfirmation::from_typed("yes", &new),
        Err(PushCertError::ConfirmationMismatch)
    ));
    // A confirmation for another topic does not count.
    let elsewhere = TopicChangeConfirmation::from_typed(TOPIC_CHANGE_WORD, &new_topic()).unwrap();
    assert!(matches!(
        w.certs
            .upload(pem.as_bytes(), "it@school.example", Some(&elsewhere)),
        Err(PushCertError::TopicChange { .. })
    ));

    let confirm = TopicChangeConfirmation::from_typed(TOPIC_CHANGE_WORD, &new).unwrap();
    let status = w
        .certs
        .upload(pem.as_bytes(), "it@school.example", Some(&confirm))
        .unwrap();
    assert_eq!(status.topic.as_str(), new);
    assert_eq!(w.certs.topic().unwrap().as_str(), new);

    // The pusher now speaks for the new topic.
    let token = w.sim.register_device(&new);
    let (pusher, _) = w.pusher(Arc::default());
    pusher.push(target(&token, "m"));
    assert!(matches!(
        pusher.run_once().await[0].1,
        PushOutcome::Delivered { .. }
    ));
}

#[tokio::test]
async fn installed_certificate_survives_a_restart() {
    let w = World::new().await;
    let topic = w.install_first();
    // Same store, same sealing key: a fresh service finds the certificate and its key.
    let restarted =
        PushCertService::new(Arc::new(w.store.clone()), w.secret.clone(), w.clock.clone()).unwrap();
    assert_eq!(restarted.topic(), Some(topic));
    assert!(restarted.identity().get().is_some());
    // Another sealing key cannot open the stored key: a clear error, not a panic.
    let other = PushCertService::new(
        Arc::new(w.store.clone()),
        Arc::new(SecretKey::ephemeral()),
        w.clock.clone(),
    );
    assert!(matches!(other, Err(PushCertError::Secret(_))));
}

#[test]
fn identity_cell_starts_empty() {
    assert!(IdentityCell::new().get().is_none());
}

#[tokio::test]
async fn alert_is_cleared_by_a_new_certificate() {
    let w = World::new().await;
    let topic = w.install_first();
    w.certs.certificate_rejected(&topic, "BadCertificate");
    assert!(w.certs.status().unwrap().unwrap().alert.is_some());
    w.certs.new_csr().unwrap();
    let pem = w.issue(topic.as_str());
    w.certs
        .upload(pem.as_bytes(), "it@school.example", None)
        .unwrap();
    assert!(w.certs.status().unwrap().unwrap().alert.is_none());
}

#[tokio::test]
async fn certificate_without_an_mdm_topic_is_not_a_push_certificate() {
    let w = World::new().await;
    // A TLS certificate (no UID attribute): the wrong file from the download folder.
    let key = rcgen::KeyPair::generate().unwrap();
    let tls = rcgen::CertificateParams::new(vec!["school.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    assert_eq!(
        orchard::apple::apns::PushCertificate::parse_pem(tls.as_bytes()).unwrap_err(),
        CertificateError::NotPushCertificate
    );
    let err = w
        .certs
        .upload(tls.as_bytes(), "it@school.example", None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PushCertError::Certificate(CertificateError::NotPushCertificate)
        ),
        "{err}"
    );
    assert!(w.certs.status().unwrap().is_none());
}
