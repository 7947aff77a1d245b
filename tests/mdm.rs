//! MDM end to end, in process: simulated Macs with their own keys get an identity from the SCEP
//! CA with the challenge of a signed enrollment profile, then check in and answer commands
//! through the same adapters the HTTP server uses (`Mdm-Signature` on every request).

#[path = "common/mdm_app.rs"]
mod app;

use base64::Engine;
use http::HeaderMap;
use orchard::mdm::checkin::Checkin;
use orchard::mdm::command::{Command, Udid};
use orchard::mdm::service::{CommandStatus, MdmStorage};
use orchard::pki::cms::{self, CertKind, Cipher, DigestAlg};
use orchard::sim::mac::{MacError, MacModel, ScepAlgorithms, SimMac};

use app::{App, Direct, TOPIC, enrolled_mac, rsa_key, self_signed};

fn udid(mac: &SimMac) -> Udid {
    mac.udid()
}

#[tokio::test]
async fn scep_issues_an_identity_for_each_algorithm_mix_key_type_and_method() {
    let app = App::new();
    let mut n = 0;
    for cipher in [
        Cipher::DesCbc,
        Cipher::Des3Cbc,
        Cipher::Aes128Cbc,
        Cipher::Aes256Cbc,
    ] {
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256] {
            n += 1;
            let mut mac = SimMac::new(MacModel::numbered(n), vec![1; 32]).unwrap();
            // Every other Mac sends PKIOperation by GET; every third has a P-256 key.
            mac.algorithms = ScepAlgorithms {
                cipher,
                digest,
                ec_key: n % 3 == 0,
                by_get: n % 2 == 0,
            };
            mac.install_profile(&Direct(app.clone()), &app.profile())
                .await
                .unwrap_or_else(|e| panic!("{cipher:?}/{digest:?}: {e}"));
            let cert = mac.certificate().unwrap();
            cms::verify_chain(
                cert,
                &[],
                &[app.scep.ca_certificate().clone()],
                cms::CheckTime::Ignore,
            )
            .unwrap();
        }
    }
    assert_eq!(
        app.metrics
            .value("orchard_scep_certificates_issued_total", &[]),
        Some(f64::from(n))
    );
    assert_eq!(
        app.store.count(orchard::store::mdm::ENROLLMENTS).unwrap(),
        n as usize
    );
}

#[tokio::test]
async fn a_challenge_works_only_once() {
    let app = App::new();
    let profile = app.profile();
    let mut first = SimMac::new(MacModel::numbered(1), vec![1; 32]).unwrap();
    first
        .install_profile(&Direct(app.clone()), &profile)
        .await
        .unwrap();
    let mut second = SimMac::new(MacModel::numbered(2), vec![2; 32]).unwrap();
    let err = second
        .install_profile(&Direct(app.clone()), &profile)
        .await
        .unwrap_err();
    assert!(
        matches!(err, MacError::Scep(ref m) if m.contains("refused")),
        "{err}"
    );
    assert!(second.certificate().is_none());
    assert_eq!(
        app.metrics
            .value("orchard_scep_certificates_issued_total", &[]),
        Some(1.0)
    );
    assert!(app.store.enrollment(&udid(&second)).unwrap().is_none());
}

#[tokio::test]
async fn a_queued_command_is_pushed_fetched_and_acknowledged() {
    let app = App::new();
    let mut mac = enrolled_mac(&app, 1).await;
    let uuid = app
        .service()
        .enqueue(&udid(&mac), &Command::device_information())
        .unwrap();
    let pushes = app.pushes.0.lock().unwrap().clone();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].token_hex, hex::encode([1u8; 32]));
    assert_eq!(pushes[0].push_magic.as_str(), mac.push_magic);
    assert_eq!(pushes[0].topic, TOPIC);

    mac.model.not_now_every = 0;
    assert_eq!(mac.session(&Direct(app.clone())).await.unwrap(), 1);
    let history = app.service().history(&udid(&mac)).unwrap();
    assert_eq!(history[0].uuid, uuid);
    assert_eq!(history[0].status, CommandStatus::Acknowledged);
    let result = history[0].result.as_deref().unwrap();
    assert!(
        result.contains("QueryResponses") && result.contains("ORCHSIM00001"),
        "{result}"
    );
}

#[tokio::test]
async fn not_now_keeps_the_command_for_the_next_session() {
    let app = App::new();
    let mut mac = enrolled_mac(&app, 1).await;
    mac.model.not_now_every = 1;
    app.service()
        .enqueue(&udid(&mac), &Command::SecurityInfo)
        .unwrap();
    // The Mac says NotNow; the server does not offer it again in this session.
    assert_eq!(mac.session(&Direct(app.clone())).await.unwrap(), 1);
    assert_eq!(
        app.service().history(&udid(&mac)).unwrap()[0].status,
        CommandStatus::NotNow
    );
    // Next time (the Mac now has time) it runs.
    assert_eq!(mac.session(&Direct(app.clone())).await.unwrap(), 1);
    assert_eq!(
        app.service().history(&udid(&mac)).unwrap()[0].status,
        CommandStatus::Acknowledged
    );
}

fn snapshot(app: &App) -> String {
    let mut out = Vec::new();
    for e in app.store.enrollments(None, 100).unwrap() {
        out.push(format!(
            "{:?} {} {:?} {}",
            e.udid, e.cert_hash, e.state, e.last_seen
        ));
    }
    out.join("\n")
}

#[tokio::test]
async fn forged_unknown_reused_and_unsigned_requests_are_refused_and_change_nothing() {
    let app = App::new();
    let mac1 = enrolled_mac(&app, 1).await;
    let mut mac2 = enrolled_mac(&app, 2).await;
    let before = snapshot(&app);
    let t = Direct(app.clone());

    // A forged signature: signed over one body, sent with another.
    let token = Checkin::TokenUpdate {
        udid: udid(&mac1),
        topic: TOPIC.into(),
        token: vec![9; 32],
        push_magic: orchard::mdm::command::PushMagic::parse("stolen").unwrap(),
        awaiting_configuration: false,
        user_id: None,
    }
    .to_plist();
    let other = Checkin::CheckOut { udid: udid(&mac1) }.to_plist();
    let sig = cms::sign_detached(&other, mac1.certificate().unwrap(), &rsa_key());
    // (A different key cannot even produce a signature that verifies over the certificate.)
    let sig = sig.unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        "mdm-signature",
        base64::engine::general_purpose::STANDARD
            .encode(&sig)
            .parse()
            .unwrap(),
    );
    let r = app.endpoints.checkin(&headers, &token, &[]);
    assert_eq!(r.status(), 400);

    // An unknown certificate: self-signed, not from Orchard's SCEP CA.
    let (rogue, rogue_key) = self_signed("rogue", CertKind::ClientIdentity);
    let sig = cms::sign_detached(&token, &rogue, &rogue_key).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "mdm-signature",
        base64::engine::general_purpose::STANDARD
            .encode(&sig)
            .parse()
            .unwrap(),
    );
    assert_eq!(app.endpoints.checkin(&headers, &token, &[]).status(), 400);

    // Unsigned.
    assert_eq!(
        app.endpoints
            .checkin(&HeaderMap::new(), &token, &[])
            .status(),
        400
    );
    assert_eq!(
        app.endpoints
            .connect(
                &HeaderMap::new(),
                &orchard::mdm::command::Report::build(
                    &udid(&mac1),
                    orchard::mdm::command::Status::Idle,
                    None,
                    plist::Dictionary::new()
                ),
                &[]
            )
            .status(),
        400
    );

    // mac2 presents mac1's certificate while claiming its own UDID.
    let own_udid = udid(&mac2);
    mac2.steal_identity_of(&mac1);
    let auth = Checkin::Authenticate {
        udid: own_udid.clone(),
        topic: TOPIC.into(),
        facts: mac2.model.facts(),
    }
    .to_plist();
    let err = mac2.checkin(&t, &auth).await.unwrap_err();
    assert!(
        matches!(err, MacError::Refused { status: 403, .. }),
        "{err}"
    );
    // ... and its reports are refused as well.
    let idle = orchard::mdm::command::Report::build(
        &own_udid,
        orchard::mdm::command::Status::Idle,
        None,
        plist::Dictionary::new(),
    );
    let r = mac2
        .signed_put(&t, "/mdm/connect", "application/x-apple-aspen-mdm", &idle)
        .await
        .unwrap();
    assert_eq!(r.status, 403);

    assert_eq!(snapshot(&app), before);
}

#[tokio::test]
async fn re_enrolling_a_mac_replaces_its_enrollment() {
    let app = App::new();
    let mut mac = enrolled_mac(&app, 1).await;
    let first = app.store.enrollment(&udid(&mac)).unwrap().unwrap();
    // Wiped and enrolled again: new key, new certificate, same UDID and serial.
    mac.install_profile(&Direct(app.clone()), &app.profile())
        .await
        .unwrap();
    let second = app.store.enrollment(&udid(&mac)).unwrap().unwrap();
    assert_ne!(first.cert_hash, second.cert_hash);
    assert_eq!(
        app.store.count(orchard::store::mdm::ENROLLMENTS).unwrap(),
        1
    );
    assert_eq!(app.store.cert_owner(&first.cert_hash).unwrap(), None);
}
