//! The Devices and Sync pages in headless Chromium, on `orchard demo`'s simulated Apple School
//! Manager: the first sync fills the Devices page, a search narrows it, and the Sync button starts a
//! run, which the page reports, and is then disabled under the 15-minute rule.
//! Set ORCHARD_SCREENSHOTS=DIR to save screenshots of the pages visited.

mod common;

use std::time::Duration;

use common::browser::start_browser;
use orchard::demo::{DEMO_ADMIN, Demo, DemoArgs};

#[tokio::test]
async fn admin_watches_devices_arrive_and_uses_the_sync_button() {
    let demo = Demo::start(&DemoArgs {
        macs: 40,
        data_dir: Some(tempfile::tempdir().unwrap().keep()),
        listen: None,
        change_every: 0,
    })
    .await
    .expect("the demo starts");
    let app = demo.running.app.clone();
    let token = app.tokens.list().unwrap()[0].id.unwrap().0.to_string();
    // Let the start-up sync finish (bounded), so the button is free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.inventory.len() < 40 || app.sync.is_running(&token) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first sync did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = demo
        .running
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let browser = start_browser().await;

    browser.goto(&format!("{base}/signin")).await;
    browser.wait_for_heading("Sign in to Orchard").await;
    browser.fill("#field-username", DEMO_ADMIN).await;
    browser.fill("#field-password", &demo.password).await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_heading("Dashboard").await;

    browser.goto(&format!("{base}/devices")).await;
    browser.wait_for_heading("Devices").await;
    assert!(browser.main_text().await.contains("40 devices match"));
    browser.snap("devices").await;
    let serial = demo.sim.world.serials()[7].clone();
    browser.fill("#q", &serial).await;
    browser.click(".filters button[type=submit]").await;
    browser.wait_for_heading("Devices").await;
    let text = browser.main_text().await;
    assert!(text.contains("1 device matches"), "{text}");
    assert!(text.contains(&serial));

    // A Mac is bought; the Sync button brings it in.
    let added = demo.sim.world.add_macs(1).remove(0);
    browser.goto(&format!("{base}/sync")).await;
    browser.wait_for_heading("Sync devices from Apple").await;
    let button = browser.find("button[data-role=button]").await;
    assert_eq!(
        button.attr("disabled").await.unwrap(),
        None,
        "free before the first press"
    );
    browser.click("button[data-role=button]").await;
    browser.wait_for_heading("Sync devices from Apple").await;
    assert!(browser.main_text().await.contains("Sync started"));
    browser.snap("sync-started").await;
    // Pressed: the button is disabled (running, then the 15-minute rule) and says why.
    let button = browser.find("button[data-role=button]").await;
    assert!(
        button.attr("disabled").await.unwrap().is_some(),
        "disabled after a press"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.inventory.get(&added).unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the button's sync did not bring the new Mac"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.goto(&format!("{base}/sync")).await;
    browser.wait_for_heading("Sync devices from Apple").await;
    let text = browser.main_text().await;
    assert!(
        text.contains("Sync button"),
        "the run is in the history: {text}"
    );
    assert!(text.contains("can be used again at"), "{text}");
    let button = browser.find("button[data-role=button]").await;
    assert!(button.attr("disabled").await.unwrap().is_some());
    browser.snap("sync-history").await;
    browser.close().await;
    demo.stop().await.unwrap();
}
