//! Managing enrolled Macs in headless Chromium, on `orchard demo --fast`: the simulated Macs
//! enroll by themselves; the admin makes a manual enrollment link, opens an enrolled Mac, sends it
//! a command from its page and sees the Mac's answer, and is stopped from erasing it without
//! typing its serial number. Set ORCHARD_SCREENSHOTS=DIR to save screenshots.

mod common;

use std::time::Duration;

use common::browser::start_browser;
use orchard::demo::{DEMO_ADMIN, Demo, DemoArgs};
use orchard::mdm::service::CommandStatus;

#[tokio::test]
async fn admin_sends_a_command_from_a_macs_page_and_sees_it_answered() {
    let mut demo = Demo::start(&DemoArgs {
        macs: 2,
        data_dir: Some(tempfile::tempdir().unwrap().keep()),
        change_every: 0,
        fast: true,
        ..DemoArgs::default()
    })
    .await
    .expect("the demo starts");
    demo.macs_ready(2, Duration::from_secs(120)).await.unwrap();
    // The fleet keeps answering pushes in the background.
    let mut macs = std::mem::replace(&mut demo.macs, tokio::sync::mpsc::unbounded_channel().1);
    tokio::spawn(async move { while macs.recv().await.is_some() {} });
    let app = demo.running.app.clone();
    let base = demo
        .running
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let serial = demo.sim.world.serials()[0].clone();
    let browser = start_browser().await;
    browser.sign_in(&base, DEMO_ADMIN, &demo.password).await;

    // A Mac from outside Apple School Manager: the Enroll page makes its link.
    browser.goto(&format!("{base}/devices")).await;
    browser.wait_for_heading("Devices").await;
    browser.click_and_load("a[href='/enroll']").await;
    browser.wait_for_heading("Enroll a Mac").await;
    browser
        .click_and_load("main form button[type=submit]")
        .await;
    let text = browser.main_text().await;
    assert!(
        text.contains("There is a problem") && text.contains("The name is empty"),
        "an empty name is explained: {text}"
    );
    browser.fill("#label", "Art room Mac").await;
    browser
        .click_and_load("main form button[type=submit]")
        .await;
    let text = browser.main_text().await;
    assert!(
        text.contains("The enrollment link for Art room Mac is ready"),
        "{text}"
    );
    let link = browser.find("#enroll-link").await.text().await.unwrap();
    assert!(link.starts_with(&format!("{base}/enroll/")), "{link}");
    browser.snap("enroll-link").await;

    // An enrolled Mac's page: its enrollment, and a command sent from there.
    browser.goto(&format!("{base}/devices/{serial}")).await;
    browser.wait_for_heading(&serial).await;
    let text = browser.main_text().await;
    assert!(
        text.contains("Management") && text.contains("Enrolled"),
        "{text}"
    );
    assert!(text.contains("DeviceInformation"), "{text}");
    browser.click("#command option[value=SecurityInfo]").await;
    browser
        .click_and_load("#send-command button[type=submit]")
        .await;
    let text = browser.main_text().await;
    assert!(text.contains("SecurityInfo is queued"), "{text}");

    let storage = app.mdm.service().storage();
    let udid = storage.enrollment_by_serial(&serial).unwrap().unwrap().udid;
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while !app
        .mdm
        .service()
        .history(&udid)
        .unwrap()
        .iter()
        .any(|c| c.request_type == "SecurityInfo" && c.status == CommandStatus::Acknowledged)
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the Mac did not answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.goto(&format!("{base}/devices/{serial}")).await;
    browser.wait_for_heading(&serial).await;
    let text = browser.main_text().await;
    assert!(!text.contains("Waiting for the Mac"), "{text}");
    assert_eq!(text.matches("Done").count(), 2, "{text}");
    browser.click("#management details summary").await;
    assert!(browser.main_text().await.contains("FDE_Enabled"));
    browser.snap("device-management").await;

    // Erase is refused until the serial number is typed.
    let before = app.mdm.service().history(&udid).unwrap().len();
    browser.fill("#erase-confirm", "yes").await;
    browser
        .click_and_load(".danger-zone button.button--danger")
        .await;
    let text = browser.main_text().await;
    assert!(text.contains("type its serial number"), "{text}");
    assert_eq!(app.mdm.service().history(&udid).unwrap().len(), before);
    browser.close().await;
    demo.stop().await.unwrap();
}
