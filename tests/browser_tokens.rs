//! The Tokens pages in headless Chromium against the DEP simulator, as an admin walks them:
//! download the public key, upload the `.p7m` Apple's portal made for it with the Apple ID, see
//! the token listed with its organisation, Apple ID, expiry and portal; renew it; have a token of
//! another MDM server refused until the replacement is confirmed by typing; and wrong files, each
//! with its message on the page and nothing stored.
//! Set ORCHARD_SCREENSHOTS=DIR to save screenshots of the pages visited.

mod common;

use std::path::{Path, PathBuf};

use common::browser::{Browser, start_browser};
use common::dep_app::{self, APPLE_ID};
use common::{ADMIN_PASSWORD, ADMIN_USER};
use orchard::ade::token::{TokenView, human_date};
use orchard::apple::dep::ServerToken;
use orchard::pki::cms;
use orchard::pki::token_keypair::TokenKeypair;
use orchard::sim::dep::{SimOptions, random_token, token_p7m, write_token};
use time::{Duration, OffsetDateTime};

const SERVER: &str = "Orchard Simulated MDM";
const ORG: &str = "Example Primary School";
const PORTAL: &str = "Apple School Manager";

/// An expiry `days` whole days ahead (plus an hour, so the days left do not tick over mid-test).
fn days_ahead(days: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let at = now + Duration::days(days) + Duration::hours(1);
    at.replace_nanosecond(0).unwrap_or(at)
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the file");
    path
}

/// The `.p7m` Apple's portal downloads for `token`, encrypted for `cert_pem`, saved in `dir`.
fn portal_download(dir: &Path, token: &ServerToken, server: &str, cert_pem: &str) -> PathBuf {
    let cert = cms::load_certificate(cert_pem.as_bytes()).expect("the certificate");
    write_token(token, &cert, dir, server, OffsetDateTime::now_utc()).expect("the .p7m")
}

/// Fills the upload form on the page and submits it.
async fn submit_upload(browser: &Browser, apple_id: &str, file: &Path) {
    browser.fill("#field-apple_id", apple_id).await;
    browser.choose_file("#field-token", file).await;
    browser
        .click_and_load("main form button[type=submit]")
        .await;
}

/// Uploads `file`, a token of another MDM server, on token `id`'s renewal form; Orchard asks
/// whether to replace the token.
async fn renew_with_another_servers(browser: &Browser, base: &str, id: &str, file: &Path) {
    browser.goto(&format!("{base}/tokens/{id}/renew")).await;
    browser.wait_for_heading("Renew the token").await;
    submit_upload(browser, APPLE_ID, file).await;
    browser.wait_for_heading("Replace the token?").await;
}

/// The text of the error summary that a refused form shows (waits for it).
async fn error_summary(browser: &Browser) -> String {
    browser
        .find(".error-summary")
        .await
        .text()
        .await
        .expect("text")
}

/// The one token's row on the Tokens page.
async fn token_row(browser: &Browser, base: &str) -> String {
    browser.goto(&format!("{base}/tokens")).await;
    browser.wait_for_heading("Server tokens").await;
    browser
        .find("table tbody tr")
        .await
        .text()
        .await
        .expect("text")
}

/// What the list keeps of a token, to compare before and after a refused upload.
fn kept(tokens: &[TokenView]) -> Vec<(String, String, OffsetDateTime)> {
    tokens
        .iter()
        .map(|t| (t.server_name.clone(), t.apple_id.clone(), t.expires_at))
        .collect()
}

#[tokio::test]
async fn admin_adds_renews_and_replaces_a_token_and_wrong_files_are_refused() {
    let first_expiry = days_ahead(20);
    let app = dep_app::start(SimOptions {
        token: Some(random_token(first_expiry)),
        devices: 5,
        ..SimOptions::default()
    })
    .await;
    let base = app.base_url.clone();
    let files = tempfile::tempdir().unwrap();
    let browser = start_browser().await;
    browser.sign_in(&base, ADMIN_USER, ADMIN_PASSWORD).await;

    // Step 1: the public key.
    browser.click("nav a[href='/tokens']").await;
    browser.wait_for_heading("Server tokens").await;
    assert!(
        browser
            .main_text()
            .await
            .contains("There are no tokens yet")
    );
    browser.click("main a[href='/tokens/add']").await;
    browser.wait_for_heading("Download your public key").await;
    browser.snap("token-public-key").await;
    let link = browser.find("main a[download]").await;
    let href = link.attr("href").await.unwrap().expect("a link to the key");
    let pem = browser.fetch_text(&href).await;
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let shown = browser
        .find("#public-key")
        .await
        .prop("textContent")
        .await
        .unwrap();
    assert_eq!(shown.as_deref().map(str::trim), Some(pem.trim()));

    // Step 2, Apple's portal: the simulator makes the token encrypted for that key.
    let good = portal_download(files.path(), &app.sim.token, SERVER, &pem);
    browser.click("main a[href='/tokens/add/apple']").await;
    browser
        .wait_for_heading("Create the token in Apple's portal")
        .await;
    browser.click("main a[href='/tokens/add/upload']").await;
    browser.wait_for_heading("Upload the server token").await;

    // Wrong files first: each refused with its message, and nothing is stored.
    let p7m = std::fs::read(&good).unwrap();
    let stranger = TokenKeypair::generate(OffsetDateTime::now_utc()).unwrap();
    let wrong: Vec<(&str, String, PathBuf, &str)> = vec![
        (
            "certificate",
            APPLE_ID.into(),
            save(files.path(), "orchard-public-key.pem", pem.as_bytes()),
            "This file is a certificate (the public key you give Apple), not the server token.",
        ),
        (
            "truncated",
            APPLE_ID.into(),
            save(files.path(), "truncated_smime.p7m", &p7m[..p7m.len() / 2]),
            "This server token file is damaged or incomplete.",
        ),
        (
            "another key",
            APPLE_ID.into(),
            save(
                files.path(),
                "other_key_smime.p7m",
                token_p7m(&app.sim.token, stranger.certificate())
                    .unwrap()
                    .as_bytes(),
            ),
            "This token was encrypted for a public key that Orchard does not hold",
        ),
        (
            "no Apple ID",
            String::new(),
            good.clone(),
            "Enter the Apple ID you used to create the token",
        ),
    ];
    for (what, apple_id, file, message) in &wrong {
        submit_upload(&browser, apple_id, file).await;
        let summary = error_summary(&browser).await;
        assert!(summary.contains(message), "{what}: {summary}");
        browser.wait_for_heading("Upload the server token").await;
        let beside = browser.find(".field-error").await.text().await.unwrap();
        assert!(
            beside.contains(message),
            "{what}: the message beside the field"
        );
        let kept_id = browser
            .find("#field-apple_id")
            .await
            .prop("value")
            .await
            .unwrap();
        assert_eq!(kept_id.as_deref(), Some(apple_id.as_str()), "{what}");
        assert!(app.tokens().is_empty(), "{what}: nothing is stored");
        browser
            .snap(&format!("token-wrong-{}", what.replace(' ', "-")))
            .await;
    }
    assert_eq!(
        browser.fetch_text(&href).await,
        pem,
        "the staged key is still the one offered"
    );

    // The right file with the Apple ID: review, then add.
    submit_upload(&browser, APPLE_ID, &good).await;
    browser.wait_for_heading("Check the token").await;
    let review = browser.main_text().await;
    for expected in [SERVER, ORG, PORTAL, APPLE_ID] {
        assert!(
            review.contains(expected),
            "review lacks {expected}: {review}"
        );
    }
    browser.snap("token-review").await;
    browser
        .click_and_load("main form button[type=submit]")
        .await;
    browser.wait_for_heading(SERVER).await;
    assert!(
        browser
            .main_text()
            .await
            .contains(&format!("Token for \"{SERVER}\" added."))
    );
    let row = token_row(&browser, &base).await;
    for expected in [
        SERVER,
        ORG,
        PORTAL,
        APPLE_ID,
        &human_date(first_expiry),
        "Expires in 20 days",
    ] {
        assert!(row.contains(expected), "the row lacks {expected}: {row}");
    }
    browser.snap("tokens-list").await;
    assert_eq!(
        kept(&app.tokens()),
        [(SERVER.into(), APPLE_ID.into(), first_expiry)]
    );
    let id = app.tokens()[0].id.unwrap().to_string();

    // Renew: Apple's portal gives a new token for the same server; the list shows the new expiry.
    let renewed_expiry = days_ahead(365);
    let renewed_token = app.sim.world.renew_token(renewed_expiry);
    let renewed_dir = files.path().join("renewed");
    let renewed = portal_download(&renewed_dir, &renewed_token, SERVER, &pem);
    browser.click(&format!("main a[href='/tokens/{id}']")).await;
    browser.wait_for_heading(SERVER).await;
    browser
        .click(&format!("main a[href='/tokens/{id}/renew']"))
        .await;
    browser.wait_for_heading("Renew the token").await;
    let prefilled = browser
        .find("#field-apple_id")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(prefilled.as_deref(), Some(APPLE_ID));
    submit_upload(&browser, APPLE_ID, &renewed).await;
    browser.wait_for_heading(SERVER).await;
    let text = browser.main_text().await;
    assert!(
        text.contains(&format!(
            "It now expires on {}.",
            human_date(renewed_expiry)
        )),
        "{text}"
    );
    let row = token_row(&browser, &base).await;
    assert!(row.contains(&human_date(renewed_expiry)), "{row}");
    assert!(row.contains("365 days left"), "{row}");
    let after_renewal = kept(&app.tokens());
    assert_eq!(
        after_renewal,
        [(SERVER.into(), APPLE_ID.into(), renewed_expiry)]
    );

    // A token of another MDM server (the same key uploaded to it in Apple's portal): refused
    // with the plain message, and nothing changes until the current name is typed.
    let staff = app.sim.add_server("Staff Macs", 3);
    let staff_file = portal_download(
        &files.path().join("staff"),
        &staff.token(),
        "Staff Macs",
        &pem,
    );
    renew_with_another_servers(&browser, &base, &id, &staff_file).await;
    let text = browser.main_text().await;
    assert!(
        text.contains(&format!(
            "This token belongs to another MDM server (\"Staff Macs\") than this one (\"{SERVER}\")."
        )),
        "{text}"
    );
    browser.snap("token-replace").await;
    assert_eq!(
        kept(&app.tokens()),
        after_renewal,
        "refused: nothing changed"
    );
    let row = token_row(&browser, &base).await;
    assert!(row.contains(SERVER) && !row.contains("Staff Macs"), "{row}");

    // The wrong name typed: refused beside the field, nothing changed.
    renew_with_another_servers(&browser, &base, &id, &staff_file).await;
    browser.fill("#field-confirm_name", "Staff Macs").await;
    browser
        .click_and_load("main form button[type=submit]")
        .await;
    let summary = error_summary(&browser).await;
    assert!(
        summary.contains(&format!(
            "To replace the token, type the server name \"{SERVER}\" exactly."
        )),
        "{summary}"
    );
    assert_eq!(
        kept(&app.tokens()),
        after_renewal,
        "a wrong name changes nothing"
    );

    // Typed exactly: the token is replaced by the other server's.
    browser.fill("#field-confirm_name", SERVER).await;
    browser
        .click_and_load("main form button[type=submit]")
        .await;
    browser.wait_for_heading("Staff Macs").await;
    let text = browser.main_text().await;
    assert!(
        text.contains(&format!(
            "Orchard now syncs \"Staff Macs\" instead of \"{SERVER}\"."
        )),
        "{text}"
    );
    let row = token_row(&browser, &base).await;
    assert!(row.contains("Staff Macs") && row.contains(ORG), "{row}");
    let tokens = app.tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].server_uuid, staff.account().server_uuid);

    browser.close().await;
    app.stop().await;
}
