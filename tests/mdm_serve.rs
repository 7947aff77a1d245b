//! MDM through a serving Orchard, over HTTPS: an admin makes a manual enrollment link, a
//! simulated Mac downloads its profile, gets its identity by SCEP, checks in and answers commands
//! the admin sends from the device page, from the Devices page's selection and through the API;
//! pushes go through the APNs simulator. Device requests without a valid identity are refused with
//! the statuses Apple documents and change nothing; a TLS client certificate works in place of
//! `Mdm-Signature`.

mod common;

use std::time::Duration;

use common::TestClient;
use hyper::{Method, StatusCode};
use orchard::demo::{DEMO_ADMIN, Demo, DemoArgs};
use orchard::mdm::service::{CommandStatus, EnrollmentState};
use orchard::sim::fleet::HttpsTransport;
use orchard::sim::mac::{MacModel, SimMac, SimRequest, Transport};

struct Env {
    demo: Demo,
    admin: TestClient,
    transport: HttpsTransport,
}

async fn env() -> Env {
    let demo = Demo::start(&DemoArgs {
        macs: 3,
        data_dir: Some(tempfile::tempdir().unwrap().keep()),
        change_every: 0,
        enroll: Some(0),
        ..DemoArgs::default()
    })
    .await
    .expect("Orchard starts beside the simulators");
    let base = demo.running.public_url.as_str().trim_end_matches('/');
    let admin = TestClient::new(base, demo.running.app.ca.cert_pem().as_bytes(), false);
    admin.sign_in(DEMO_ADMIN, &demo.password).await;
    let transport = HttpsTransport::new(base, demo.running.app.ca.cert_der()).unwrap();
    Env {
        demo,
        admin,
        transport,
    }
}

impl Env {
    fn serial(&self, i: usize) -> String {
        self.demo.sim.world.serials()[i].clone()
    }

    /// The admin makes a link on the Enroll page; returns its path.
    async fn link(&self, label: &str) -> String {
        self.admin.get("/enroll").await;
        let page = self.admin.post_form("/enroll", &[("label", label)]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("is ready"), "{}", page.body);
        let at = page.body.find("/enroll/").expect("the link is shown");
        page.body[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
            .collect()
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .transport
            .send(SimRequest {
                method: "GET",
                path: path.into(),
                headers: Vec::new(),
                body: Vec::new(),
            })
            .await
            .unwrap();
        (r.status, r.body)
    }

    /// A Mac with the serial `serial`, enrolled through a manual link, its first command answered.
    async fn enrolled_mac(&self, n: u32, serial: &str) -> SimMac {
        let topic = self
            .demo
            .running
            .app
            .push_certs
            .topic()
            .unwrap()
            .to_string();
        let token = self.demo.apns.register_device(&topic).as_bytes().to_vec();
        let mut mac = SimMac::new(MacModel::with_serial(n, serial), token).unwrap();
        mac.model.not_now_every = 0;
        let (status, profile) = self.get(&self.link(serial).await).await;
        assert_eq!(status, 200);
        mac.install_profile(&self.transport, &profile)
            .await
            .unwrap();
        assert_eq!(mac.session(&self.transport).await.unwrap(), 1);
        mac
    }

    /// Waits until APNs has accepted `more` pushes beyond `before`.
    async fn pushes_after(&self, before: usize, more: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.demo.apns.accepted().len() < before + more {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no push reached APNs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_mac_enrolls_with_a_manual_link_and_answers_a_command_sent_from_its_page() {
    let env = env().await;
    let serial = env.serial(0);
    let app = env.demo.running.app.clone();

    // The link works once.
    let path = env.link(&serial).await;
    let (status, profile) = env.get(&path).await;
    assert_eq!(status, 200);
    let (again, body) = env.get(&path).await;
    assert_eq!(again, 403);
    assert!(String::from_utf8_lossy(&body).contains("already used"));

    let topic = app.push_certs.topic().unwrap().to_string();
    let token = env.demo.apns.register_device(&topic).as_bytes().to_vec();
    let mut mac = SimMac::new(MacModel::with_serial(1, &serial), token).unwrap();
    mac.model.not_now_every = 0;
    let before = env.demo.apns.accepted().len();
    mac.install_profile(&env.transport, &profile).await.unwrap();
    // Enrolling queued DeviceInformation and pushed the Mac.
    env.pushes_after(before, 1).await;
    assert_eq!(mac.session(&env.transport).await.unwrap(), 1);

    let page = env.admin.get(&format!("/devices/{serial}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Management"), "{}", page.body);
    assert!(page.body.contains("DeviceInformation"));
    assert!(page.body.contains("macOS 15.4"));

    let before = env.demo.apns.accepted().len();
    let sent = env
        .admin
        .post_form(
            &format!("/devices/{serial}/commands"),
            &[("command", "SecurityInfo")],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let shown = env.admin.follow(&sent).await;
    assert!(
        shown.body.contains("SecurityInfo is queued"),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("Waiting for the Mac"));
    env.pushes_after(before, 1).await;
    assert_eq!(mac.session(&env.transport).await.unwrap(), 1);
    let page = env.admin.get(&format!("/devices/{serial}")).await;
    assert!(page.body.contains("FDE_Enabled"), "{}", page.body);

    let e = app
        .mdm
        .service()
        .storage()
        .enrollment_by_serial(&serial)
        .unwrap()
        .unwrap();
    assert_eq!(e.state, EnrollmentState::Enrolled);
    let history = app.mdm.service().history(&e.udid).unwrap();
    assert_eq!(history[0].request_type, "SecurityInfo");
    assert_eq!(history[0].status, CommandStatus::Acknowledged);
    let device = app.inventory.get(&serial).unwrap().unwrap();
    assert_eq!(device.udid.as_deref(), Some(e.udid.as_str()));
    assert!(device.last_checkin.is_some());
    let metrics = env.admin.get("/metrics").await.body;
    assert!(metrics.contains("orchard_scep_certificates_issued_total 1"));
    assert!(metrics.contains("orchard_checkins_total{message_type=\"Authenticate\"} 1"));
    env.demo.stop().await.unwrap();
}

#[tokio::test]
async fn erase_needs_the_serial_typed_bulk_skips_unenrolled_macs_and_the_api_queues_commands() {
    let env = env().await;
    let app = env.demo.running.app.clone();
    let (enrolled, other) = (env.serial(0), env.serial(1));
    let mut mac = env.enrolled_mac(1, &enrolled).await;
    let udid = mac.udid();
    let count = || app.mdm.service().history(&udid).unwrap().len();
    let before = count();

    let wrong = env
        .admin
        .post_form(
            &format!("/devices/{enrolled}/commands"),
            &[("command", "EraseDevice"), ("confirm", "yes")],
        )
        .await;
    let shown = env.admin.follow(&wrong).await;
    assert!(
        shown.body.contains("type its serial number"),
        "{}",
        shown.body
    );
    let bad_pin = env
        .admin
        .post_form(
            &format!("/devices/{enrolled}/commands"),
            &[("command", "DeviceLock"), ("pin", "12ab")],
        )
        .await;
    assert!(
        env.admin
            .follow(&bad_pin)
            .await
            .body
            .contains("PIN of exactly six digits")
    );
    assert_eq!(count(), before, "nothing was queued");

    // Bulk: one enrolled Mac and one that is not.
    env.admin.get("/devices").await;
    let bulk = env
        .admin
        .post_form_exact(
            "/devices/commands",
            &[
                ("_csrf".into(), env.admin.csrf().unwrap()),
                ("command".into(), "ProfileList".into()),
                ("serial".into(), enrolled.clone()),
                ("serial".into(), other.clone()),
            ],
        )
        .await;
    let shown = env.admin.follow(&bulk).await;
    assert!(
        shown.body.contains("ProfileList is queued for 1 Mac"),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("1 not enrolled"));
    assert_eq!(count(), before + 1);
    let erase_all = env
        .admin
        .post_form_exact(
            "/devices/commands",
            &[
                ("_csrf".into(), env.admin.csrf().unwrap()),
                ("command".into(), "EraseDevice".into()),
                ("serial".into(), enrolled.clone()),
            ],
        )
        .await;
    assert!(
        env.admin
            .follow(&erase_all)
            .await
            .body
            .contains("Erase one Mac at a time")
    );
    assert_eq!(count(), before + 1);

    // The API: an key from Settings, then a command and the list.
    env.admin.get("/settings").await;
    let page = env
        .admin
        .post_form("/settings/api-keys", &[("name", "script")])
        .await;
    let at = page.body.find("orchard_").unwrap();
    let key: String = page.body[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '<')
        .collect();
    let auth = vec![
        ("authorization".to_string(), format!("Bearer {key}")),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let api = TestClient::new(&env.admin.base_url, app.ca.cert_pem().as_bytes(), false);
    let sent = api
        .send(
            Method::POST,
            &format!("/api/v1/devices/{enrolled}/commands"),
            auth.clone(),
            r#"{"request_type":"SetDeviceName","name":"Room 12"}"#.into(),
        )
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    let refused = api
        .send(
            Method::POST,
            &format!("/api/v1/devices/{other}/commands"),
            auth.clone(),
            r#"{"request_type":"SecurityInfo"}"#.into(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.contains("not enrolled"));
    assert_eq!(mac.session(&env.transport).await.unwrap(), 2);
    let list = api
        .send(
            Method::GET,
            &format!("/api/v1/devices/{enrolled}/commands"),
            auth.clone(),
            "".into(),
        )
        .await;
    let json: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    assert_eq!(json["commands"][0]["request_type"], "Settings");
    assert_eq!(json["commands"][0]["status"], "Acknowledged");
    let link = api
        .send(
            Method::POST,
            "/api/v1/enrollment-links",
            auth,
            r#"{"label":"Art room Mac"}"#.into(),
        )
        .await;
    assert_eq!(link.status, StatusCode::CREATED, "{}", link.body);
    let json: serde_json::Value = serde_json::from_str(&link.body).unwrap();
    let url = json["url"].as_str().unwrap();
    let path = &url[url.find("/enroll/").unwrap()..];
    assert_eq!(env.get(path).await.0, 200);
    env.demo.stop().await.unwrap();
}

#[tokio::test]
async fn device_requests_without_a_valid_identity_are_refused_and_change_nothing() {
    let env = env().await;
    let app = env.demo.running.app.clone();
    let serial = env.serial(0);
    let mut mac = env.enrolled_mac(1, &serial).await;
    let snapshot = || {
        let e = app
            .mdm
            .service()
            .storage()
            .enrollment_by_serial(&serial)
            .unwrap()
            .unwrap();
        (
            e.cert_hash,
            e.push_token,
            app.mdm.service().history(&e.udid).unwrap().len(),
        )
    };
    let before = snapshot();

    // Unsigned, with no TLS certificate.
    mac.sign_messages = false;
    let err = mac.token_update(&env.transport).await.unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    // A signature over other bytes.
    let body = orchard::mdm::checkin::Checkin::CheckOut { udid: mac.udid() }.to_plist();
    let forged = env
        .transport
        .send(SimRequest {
            method: "PUT",
            path: "/mdm/checkin".into(),
            headers: vec![("mdm-signature", mac.sign(b"something else").unwrap())],
            body,
        })
        .await
        .unwrap();
    assert!(matches!(forged.status, 400 | 403), "{}", forged.status);
    assert_ne!(forged.status, 401, "401 would unenroll the Mac");
    assert_eq!(snapshot(), before, "nothing changed");

    // The same identity as a TLS client certificate works without Mdm-Signature.
    let tls = HttpsTransport::with_identity(
        &env.admin.base_url,
        app.ca.cert_der(),
        mac.identity_der().unwrap(),
    )
    .unwrap();
    app.mdm
        .service()
        .enqueue(&mac.udid(), &orchard::mdm::command::Command::ProfileList)
        .unwrap();
    assert_eq!(mac.session(&tls).await.unwrap(), 1);
    assert_eq!(snapshot().2, before.2 + 1);
    env.demo.stop().await.unwrap();
}

#[tokio::test]
async fn a_push_token_apns_reports_dead_is_forgotten_until_the_mac_sends_a_new_one() {
    let env = env().await;
    let app = env.demo.running.app.clone();
    let serial = env.serial(0);
    let mut mac = env.enrolled_mac(1, &serial).await;
    let token = orchard::apple::apns::DeviceToken::from_bytes(mac.push_token.clone()).unwrap();
    // The Mac was wiped without checking out: APNs answers 410 from now on.
    env.demo.apns.unregister_device(&token);
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.mdm
        .service()
        .enqueue(&mac.udid(), &orchard::mdm::command::Command::SecurityInfo)
        .unwrap();
    let storage = app.mdm.service().storage();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while storage
        .enrollment(&mac.udid())
        .unwrap()
        .unwrap()
        .push_token
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead token is still used"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = env.admin.get(&format!("/devices/{serial}")).await;
    assert!(page.body.contains("APNs reported its push token invalid"));
    // A new TokenUpdate brings it back.
    let topic = app.push_certs.topic().unwrap().to_string();
    mac.push_token = env.demo.apns.register_device(&topic).as_bytes().to_vec();
    mac.token_update(&env.transport).await.unwrap();
    let e = storage.enrollment(&mac.udid()).unwrap().unwrap();
    assert_eq!(e.push_token, Some(hex::encode(&mac.push_token)));
    env.demo.stop().await.unwrap();
}
