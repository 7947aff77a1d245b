//! The Devices and Sync pages in headless Chromium, on `orchard demo`'s simulated Apple School
//! Manager: the first sync fills the Devices page, a search narrows it, and the Sync button starts a
//! run, which the page reports, and is then disabled under the 15-minute rule.
//! Set ORCHARD_SCREENSHOTS=DIR to save screenshots of the pages visited.

mod common;

use std::time::Duration;

use common::browser::{Browser, start_browser};
use common::dep_app;
use common::{ADMIN_PASSWORD, ADMIN_USER};
use orchard::demo::{DEMO_ADMIN, Demo, DemoArgs};
use orchard::sim::dep::SimOptions;
use orchard::web::App;

/// Lets the start-up sync bring `devices` devices and finish (bounded), so the button is free.
async fn wait_for_first_sync(app: &App, token: &str, devices: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while app.inventory.len() < devices || app.sync.is_running(token) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first sync did not finish: {} of {devices} devices",
            app.inventory.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the Sync page, checks the button is free and presses it.
async fn press_sync(browser: &Browser, base: &str) {
    browser.goto(&format!("{base}/sync")).await;
    browser.wait_for_heading("Sync devices from Apple").await;
    let button = browser.find("button[data-role=button]").await;
    assert_eq!(
        button.attr("disabled").await.unwrap(),
        None,
        "free before the press"
    );
    browser.click_and_load("button[data-role=button]").await;
    browser.wait_for_heading("Sync devices from Apple").await;
    assert!(browser.main_text().await.contains("Sync started"));
}

#[tokio::test]
async fn admin_watches_devices_arrive_and_uses_the_sync_button() {
    let demo = Demo::start(&DemoArgs {
        macs: 40,
        data_dir: Some(tempfile::tempdir().unwrap().keep()),
        listen: None,
        change_every: 0,
        enroll: Some(0),
        ..DemoArgs::default()
    })
    .await
    .expect("the demo starts");
    let app = demo.running.app.clone();
    let token = app.tokens.list().unwrap()[0].id.unwrap().0.to_string();
    wait_for_first_sync(&app, &token, 40).await;
    let base = demo
        .running
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let browser = start_browser().await;

    browser.sign_in(&base, DEMO_ADMIN, &demo.password).await;

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
    press_sync(&browser, &base).await;
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

/// "1,204 pages" in the Sync page's progress sentence → 1204.
fn pages_in(status: &str) -> Option<u64> {
    let (before, _) = status.split_once(" pages")?;
    before
        .split_whitespace()
        .last()?
        .replace(',', "")
        .parse()
        .ok()
}

/// With Apple's latency and small pages, a run of the Sync button takes long enough to watch:
/// its progress on the Sync page moves by itself (the page polls; it is not reloaded), the button
/// stays disabled while it runs, and the finished run shows in the history.
#[tokio::test]
async fn sync_progress_moves_on_the_page_while_the_button_run_goes() {
    let app = dep_app::start(SimOptions {
        devices: 2000,
        page_default: 100,
        ..SimOptions::default()
    })
    .await;
    let token = app.connect_token().await;
    wait_for_first_sync(app.app(), &token, 2000).await;
    // The school buys 3,000 more Macs, and Apple answers at its usual pace.
    app.sim.world.add_macs(3000);
    app.sim.set_latency(Duration::from_millis(250));

    let browser = start_browser().await;
    browser
        .sign_in(&app.base_url, ADMIN_USER, ADMIN_PASSWORD)
        .await;
    press_sync(&browser, &app.base_url).await;
    browser
        .client
        .execute("window.orchardSamePage = true;", vec![])
        .await
        .unwrap();

    // Watch (bounded) until the page count has moved twice, all on the same page.
    let look = "var s = document.querySelector('[data-role=status]');\n\
        var b = document.querySelector('button[data-role=button]');\n\
        return [window.orchardSamePage === true, s.textContent, b.disabled];";
    let mut seen: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < 3 {
        let v = browser.client.execute(look, vec![]).await.unwrap();
        let status = v[1].as_str().unwrap_or_default().to_string();
        assert_eq!(
            v[0], true,
            "the page was reloaded before its progress moved twice (saw {seen:?})"
        );
        assert!(
            status.contains("Running"),
            "the run ended before its progress moved twice (saw {seen:?}): {status}"
        );
        assert_eq!(v[2], true, "the button is disabled while the sync runs");
        let pages = pages_in(&status).unwrap_or_else(|| panic!("no page count in {status:?}"));
        if seen.last() != Some(&pages) {
            seen.push(pages);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the progress did not move twice: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    browser.snap("sync-live").await;

    // When it finishes the page shows the run in its history (bounded).
    let newest = "var r = document.querySelector('table tbody tr');\n\
        return r ? r.textContent : '';";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let row = browser.client.execute(newest, vec![]).await.unwrap();
        let row = row.as_str().unwrap_or_default();
        if row.contains("Sync button") && row.contains("Done") {
            assert!(row.contains("3,000"), "3,000 Macs added: {row}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not reach the history: {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.app().inventory.len(), 5000);
    let text = browser.main_text().await;
    assert!(text.contains("Idle"), "{text}");
    assert!(text.contains("can be used again at"), "{text}");
    browser.snap("sync-live-done").await;
    browser.close().await;
    app.stop().await;
}
