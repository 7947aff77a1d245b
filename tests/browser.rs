//! The admin UI in headless Chromium: setup link → create admin → dashboard → sign out; a wrong
//! password shows a message; a form posted without its CSRF token is refused.
//! Set ORCHARD_SCREENSHOTS=DIR to save screenshots of the pages visited.

mod common;

use common::browser::start_browser;
use common::{ADMIN_PASSWORD, ADMIN_USER, spawn_app};

#[tokio::test]
async fn first_admin_signs_in_and_out_in_a_browser() {
    let app = spawn_app(&[], &[]).await;
    let link = app.setup_link.clone().expect("setup link");
    let path = format!("/setup/{}", link.split_once("/setup/").unwrap().1);
    let browser = start_browser().await;

    // Create the first admin through the setup link; a mistake first.
    browser.goto(&format!("{}{}", app.base_url, path)).await;
    browser
        .wait_for_heading("Create the first admin account")
        .await;
    browser.snap("setup").await;
    browser.fill("#field-username", ADMIN_USER).await;
    browser.fill("#field-password", ADMIN_PASSWORD).await;
    browser
        .fill("#field-confirm", "something else entirely")
        .await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for_heading("Create the first admin account")
        .await;
    let text = browser.main_text().await;
    assert!(text.contains("There is a problem"), "{text}");
    assert!(text.contains("The two passwords do not match"), "{text}");
    browser.snap("setup-error").await;
    // The username was kept.
    let kept = browser
        .find("#field-username")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some(ADMIN_USER));
    browser.fill("#field-password", ADMIN_PASSWORD).await;
    browser.fill("#field-confirm", ADMIN_PASSWORD).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_heading("Dashboard").await;
    assert!(
        browser
            .main_text()
            .await
            .contains("Your admin account is ready")
    );
    browser.snap("dashboard").await;

    // Sign out.
    browser.click("form[action='/signout'] button").await;
    browser.wait_for_heading("Sign in to Orchard").await;
    assert!(browser.main_text().await.contains("You are signed out."));

    // A wrong password shows a message.
    browser.fill("#field-username", ADMIN_USER).await;
    browser.fill("#field-password", "not my password").await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_heading("Sign in to Orchard").await;
    let text = browser.main_text().await;
    assert!(
        text.contains("The username or password is not right."),
        "{text}"
    );
    browser.snap("signin-error").await;

    // The right one signs in.
    browser.fill("#field-password", ADMIN_PASSWORD).await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_heading("Dashboard").await;

    // A form whose CSRF token was tampered with is refused and changes nothing.
    browser.goto(&format!("{}/users", app.base_url)).await;
    browser.wait_for_heading("Admin accounts").await;
    browser.snap("users").await;
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=_csrf]').forEach(function (e) { e.remove(); });",
            vec![],
        )
        .await
        .expect("remove the CSRF fields");
    browser.fill("#field-username", "mallory").await;
    browser
        .fill("#field-password", "long enough password")
        .await;
    browser
        .click("main form[action='/users'] button[type=submit]")
        .await;
    browser.wait_for_heading("Request refused").await;
    assert!(browser.main_text().await.contains("This form has expired"));
    browser.goto(&format!("{}/users", app.base_url)).await;
    browser.wait_for_heading("Admin accounts").await;
    assert!(!browser.main_text().await.contains("mallory"));

    browser.close().await;
}
