//! The Tokens pages over HTTPS against the DEP simulator, for what a browser test need not click
//! through: oversized uploads and expired tokens, on the add and the renew forms, each refused
//! with its message and nothing stored. And `orchard sim dep --write-token` run as an admin would,
//! its files opened by `orchard token inspect`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::dep_app::{self, APPLE_ID, DepApp};
use hyper::StatusCode;
use orchard::ade::token::{MAX_UPLOAD, TokenView, human_date};
use orchard::apple::dep::ServerToken;
use orchard::pki::cms;
use orchard::sim::dep::{KEY_FILE, SimOptions, random_token, token_p7m};
use time::OffsetDateTime;

/// Posts `file` (and the Apple ID) to the upload form at `form` (fetched first for its CSRF
/// token).
async fn upload(app: &DepApp, form: &str, file: &[u8]) -> common::TestResponse {
    let page = app.client.get(form).await;
    assert_eq!(page.status, StatusCode::OK, "{form}");
    app.client
        .post_multipart(
            form,
            &[("apple_id", APPLE_ID)],
            &[("token", "token_smime.p7m", file)],
        )
        .await
}

/// What may not change when an upload is refused: every token and the key offered for a new one.
async fn snapshot(app: &DepApp) -> (Vec<String>, String) {
    let tokens = app
        .tokens()
        .iter()
        .map(|t: &TokenView| format!("{} {} {}", t.server_name, t.apple_id, t.expires_at))
        .collect();
    let key = app.client.get("/tokens/add/public-key.pem").await;
    assert_eq!(key.status, StatusCode::OK);
    (tokens, key.body)
}

/// `token` as Apple's portal would encrypt it for the key Orchard offers for a new token.
async fn p7m_for_new(app: &DepApp, token: &ServerToken) -> Vec<u8> {
    let pem = app.client.get("/tokens/add/public-key.pem").await.body;
    let cert = cms::load_certificate(pem.as_bytes()).unwrap();
    token_p7m(token, &cert).unwrap().into_bytes()
}

/// `token` encrypted for token `id`'s own key, as a renewal download is.
async fn p7m_for_renewal(app: &DepApp, id: &str, token: &ServerToken) -> Vec<u8> {
    let pem = app
        .client
        .get(&format!("/tokens/{id}/public-key.pem"))
        .await
        .body;
    let cert = cms::load_certificate(pem.as_bytes()).unwrap();
    token_p7m(token, &cert).unwrap().into_bytes()
}

#[tokio::test]
async fn oversized_uploads_are_refused_with_their_message_and_nothing_is_stored() {
    let app = dep_app::start(SimOptions::default()).await;
    let big = vec![b'A'; MAX_UPLOAD + 1];
    let huge = vec![b'A'; 2 * 1024 * 1024];

    // A new token.
    let before = snapshot(&app).await;
    let resp = upload(&app, "/tokens/add/upload", &big).await;
    assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = format!(
        "The file is {} bytes; a server token is a few kilobytes.",
        MAX_UPLOAD + 1
    );
    assert!(resp.body.contains("There is a problem"), "{}", resp.body);
    assert!(resp.body.contains(&message), "{}", resp.body);
    let resp = upload(&app, "/tokens/add/upload", &huge).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        resp.body
            .contains("The upload is too large: the limit is 1 MiB."),
        "{}",
        resp.body
    );
    assert_eq!(snapshot(&app).await, before, "nothing stored");
    assert!(app.tokens().is_empty());

    // A renewal.
    let id = app.connect_token().await;
    let before = snapshot(&app).await;
    let renew = format!("/tokens/{id}/renew");
    let resp = upload(&app, &renew, &big).await;
    assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.body.contains(&message), "{}", resp.body);
    let resp = upload(&app, &renew, &huge).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    app.stop().await;
}

#[tokio::test]
async fn expired_tokens_are_refused_with_their_message_and_nothing_is_stored() {
    let app = dep_app::start(SimOptions::default()).await;
    let expired_at = OffsetDateTime::now_utc() - time::Duration::days(3);
    let message = format!(
        "This server token expired on {}. In Apple School Manager or Apple Business Manager, download a new token for this MDM server and upload it here.",
        human_date(expired_at)
    );

    // A new token that has expired.
    let before = snapshot(&app).await;
    let file = p7m_for_new(&app, &random_token(expired_at)).await;
    let resp = upload(&app, "/tokens/add/upload", &file).await;
    assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.body.contains(&message), "{}", resp.body);
    assert_eq!(snapshot(&app).await, before, "nothing stored");
    assert!(app.tokens().is_empty());

    // A renewal with an old download of the same server's token.
    let id = app.connect_token().await;
    let before = snapshot(&app).await;
    let mut old = random_token(expired_at);
    old.consumer_key = app.sim.token.consumer_key.clone();
    let file = p7m_for_renewal(&app, &id, &old).await;
    let resp = upload(&app, &format!("/tokens/{id}/renew"), &file).await;
    assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.body.contains(&message), "{}", resp.body);
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    app.stop().await;
}

/// `orchard sim dep --write-token DIR` without a certificate writes the `.p7m` and the key it is
/// encrypted for; `orchard token inspect --key` opens them and shows the token the simulator
/// accepts.
#[test]
fn sim_dep_writes_a_token_and_key_that_token_inspect_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_orchard"))
        .args(["sim", "dep", "--listen", "127.0.0.1:0", "--devices", "1"])
        .arg("--write-token")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start orchard sim dep");
    let stdout = sim.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Read until the token's JSON line (bounded).
    let mut printed = Vec::new();
    let accepted = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with('{') => break line,
            Ok(line) => printed.push(line),
            Err(e) => {
                let _ = sim.kill();
                panic!("orchard sim dep printed no token ({e}): {printed:?}");
            }
        }
    };
    let _ = sim.kill();
    let _ = sim.wait();
    let accepted = ServerToken::from_json(&accepted).expect("the token it accepts");
    let token_line = printed
        .iter()
        .find_map(|l| l.strip_prefix("server token written to "))
        .expect("the token's path is printed");
    let key = dir.path().join(KEY_FILE);
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("its private key written to {}", key.display()))),
        "{printed:?}"
    );

    let inspect = Command::new(env!("CARGO_BIN_EXE_orchard"))
        .args(["token", "inspect", "--key"])
        .arg(&key)
        .arg(token_line)
        .output()
        .expect("run orchard token inspect");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(shown["consumer_key"], accepted.consumer_key.as_str());
    assert_eq!(shown["expired"], false);
}
