//! `orchard demo` end to end: the simulated Apple School Manager's Macs reach the Devices page
//! through the first sync, and an admin searches, opens, exports and deletes devices and uses the
//! Sync button over HTTPS, as a browser would.

mod common;

use std::time::Duration;

use common::TestClient;
use hyper::StatusCode;
use orchard::demo::{DEMO_ADMIN, Demo, DemoArgs};

async fn demo(macs: usize) -> (Demo, TestClient) {
    let dir = tempfile::tempdir().unwrap().keep();
    let demo = Demo::start(&DemoArgs {
        macs,
        data_dir: Some(dir),
        listen: None,
        change_every: 0,
        enroll: Some(0),
        ..DemoArgs::default()
    })
    .await
    .expect("the demo starts");
    // The first sync runs by itself; wait for it (bounded).
    let inventory = demo.running.app.inventory.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while inventory.len() < macs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {macs} Macs after 60 s",
            inventory.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = TestClient::new(
        demo.running.public_url.as_str().trim_end_matches('/'),
        demo.running.app.ca.cert_pem().as_bytes(),
        false,
    );
    client.sign_in(DEMO_ADMIN, &demo.password).await;
    (demo, client)
}

#[tokio::test]
async fn demo_with_20_macs_shows_all_20_after_its_first_sync() {
    let (demo, client) = demo(20).await;
    let page = client.get("/devices").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<strong>20</strong> devices match"),
        "{}",
        page.body
    );
    for serial in demo.sim.world.serials() {
        assert!(
            page.body.contains(&serial),
            "{serial} missing from the Devices page"
        );
    }
    let dashboard = client.get("/").await;
    assert!(
        dashboard.body.contains("<strong>20</strong> devices"),
        "{}",
        dashboard.body
    );
    assert!(
        dashboard
            .body
            .contains("20 devices were added in the last 12 weeks")
    );
    assert!(
        dashboard.body.contains("Orchard Simulated MDM"),
        "the token is listed"
    );
    let metrics = client.get("/metrics").await;
    assert!(
        metrics
            .body
            .contains("orchard_devices{state=\"unassigned\"} 20"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("orchard_dep_tokens{state=\"ok\"} 1"),
        "{}",
        metrics.body
    );
    let sync = client.get("/sync").await;
    assert!(
        sync.body.contains("Done"),
        "the first run is listed: {}",
        sync.body
    );
    assert!(sync.body.contains("Example Primary School"));
    demo.stop().await.unwrap();
}

#[tokio::test]
async fn devices_are_searched_opened_exported_and_deleted_with_a_typed_count() {
    let (demo, client) = demo(12).await;
    let serials = demo.sim.world.serials();
    let serial = &serials[0];

    let found = client
        .get(&format!(
            "/devices?q={}",
            &serial[..serial.len() - 1].to_lowercase()
        ))
        .await;
    assert!(found.body.contains(serial.as_str()));
    assert!(
        !found.body.contains("<strong>12</strong>"),
        "the search narrows the list"
    );

    let detail = client.get(&format!("/devices/{serial}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(detail.body.contains("Added from Apple"), "history is shown");
    assert_eq!(
        client.get("/devices/NOSUCHSERIAL").await.status,
        StatusCode::NOT_FOUND
    );

    let csv = client.get("/devices.csv").await;
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(csv.body.lines().count(), 13, "a header and 12 devices");

    // Nothing selected: a plain refusal.
    client.get("/devices").await;
    let none = client.post_form("/devices/delete", &[]).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);

    // The confirmation page, then a wrong count: nothing is deleted.
    client.get("/devices").await;
    let confirm = client
        .post_form("/devices/delete", &[("serial", serial)])
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Type 1 to confirm"));
    let wrong = client
        .post_form(
            "/devices/delete/confirmed",
            &[("serial", serial), ("confirm", "2")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(demo.running.app.inventory.get(serial).unwrap().is_some());

    let done = client
        .post_form(
            "/devices/delete/confirmed",
            &[("serial", serial), ("confirm", "1")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(demo.running.app.inventory.get(serial).unwrap().is_none());
    assert!(demo.running.app.inventory.is_tombstoned(serial).unwrap());
    demo.stop().await.unwrap();
}

#[tokio::test]
async fn the_sync_button_is_refused_within_15_minutes() {
    let (demo, client) = demo(3).await;
    let token = demo.running.app.tokens.list().unwrap()[0]
        .id
        .unwrap()
        .0
        .to_string();
    // Wait for the start-up run to finish, so the button is free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while demo.running.app.sync.is_running(&token) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.get("/sync").await;
    let first = client.post_form(&format!("/sync/{token}"), &[]).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let page = client.follow(&first).await;
    assert!(page.body.contains("Sync started"), "{}", page.body);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while demo.running.app.sync.is_running(&token) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = client.post_form(&format!("/sync/{token}"), &[]).await;
    let page = client.follow(&second).await;
    assert!(page.body.contains("once every 15 minutes"), "{}", page.body);
    assert!(page.body.contains("disabled"), "the button is disabled");
    let runs = orchard::ade::sync::runs(&demo.running.app.store, &token, 10).unwrap();
    assert_eq!(
        runs.len(),
        2,
        "start-up and one button run; the refused press ran nothing"
    );
    demo.stop().await.unwrap();
}

#[tokio::test]
async fn demo_fast_with_20_macs_ends_with_20_enrolled_macs_each_with_an_acknowledged_command() {
    use orchard::ade::inventory::DeviceState;
    use orchard::mdm::service::{CommandStatus, EnrollmentState};

    let mut demo = Demo::start(&DemoArgs {
        macs: 20,
        data_dir: Some(tempfile::tempdir().unwrap().keep()),
        change_every: 0,
        fast: true,
        ..DemoArgs::default()
    })
    .await
    .expect("the demo starts");
    demo.macs_ready(20, Duration::from_secs(180)).await.unwrap();

    // Orchard's records say the same, for the Macs Apple School Manager lists.
    let app = demo.running.app.clone();
    let storage = app.mdm.service().storage();
    for serial in demo.sim.world.serials() {
        let e = storage
            .enrollment_by_serial(&serial)
            .unwrap()
            .unwrap_or_else(|| panic!("{serial} has no enrollment"));
        assert_eq!(e.state, EnrollmentState::Enrolled, "{serial}");
        assert!(e.push_token.is_some());
        let history = app.mdm.service().history(&e.udid).unwrap();
        assert!(
            history.iter().any(|c| c.request_type == "DeviceInformation"
                && c.status == CommandStatus::Acknowledged),
            "{serial}: {history:?}"
        );
        // Its answer reached the enrollment's facts.
        assert_eq!(e.facts.os_version.as_deref(), Some("15.4"));
    }
    // And the Devices page shows them enrolled (the first sync and the enrollments may interleave).
    let inventory = app.inventory.clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let enrolled = inventory
            .counts()
            .into_iter()
            .find(|(s, _)| *s == DeviceState::Enrolled)
            .map_or(0, |(_, n)| n);
        if enrolled == 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{enrolled} of 20 shown enrolled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pushes = app
        .metrics
        .value("orchard_apns_pushes_total", &[("outcome", "delivered")])
        .unwrap_or(0.0);
    assert!(pushes >= 20.0, "{pushes} pushes delivered");
    assert!(demo.apns.accepted().len() >= 20);
    demo.stop().await.unwrap();
}
