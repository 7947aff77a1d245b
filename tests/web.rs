//! The foundation over the wire: the real `orchard` binary on HTTPS, first admin through the setup
//! link, sign-in, CSRF and Origin checks, body limits, error pages, API keys, health and metrics,
//! graceful shutdown and restart with the same CA.

mod common;

use common::{ADMIN_PASSWORD, ADMIN_USER, spawn_app, spawn_in, spawn_in_trusting};
use hyper::{Method, StatusCode};

#[tokio::test]
async fn setup_link_creates_the_first_admin_once() {
    let app = spawn_app(&[], &[]).await;
    let link = app.setup_link.clone().expect("a setup link is logged");
    assert!(link.contains("/setup/"), "{link}");

    // Before setup, admin pages send visitors to sign in.
    let resp = app.client.get("/").await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(resp.location(), Some("/signin?next=%2F"));

    // A wrong setup token gets a clear refusal and creates nothing.
    let wrong = app
        .client
        .get("/setup/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(
        wrong.body.contains("setup link is not valid"),
        "{}",
        wrong.body
    );

    // A too-short password is refused with the message beside the field and the input kept.
    let path = format!("/setup/{}", link.split_once("/setup/").unwrap().1);
    assert_eq!(app.client.get(&path).await.status, StatusCode::OK);
    let resp = app
        .client
        .post_form(
            &path,
            &[
                ("username", "Alice"),
                ("password", "short"),
                ("confirm", "short"),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.body.contains("There is a problem"));
    assert!(resp.body.contains("href=\"#field-password\""));
    assert!(resp.body.contains("value=\"alice\"") || resp.body.contains("value=\"Alice\""));
    assert!(
        !resp.body.contains("value=\"short\""),
        "passwords are never sent back"
    );

    app.sign_in_admin().await;
    let dash = app.client.get("/").await;
    assert_eq!(dash.status, StatusCode::OK);
    assert!(dash.body.contains("Signed in as"), "{}", dash.body);
    assert!(dash.body.contains("Your admin account is ready"));

    // The link is spent.
    let again = app.new_client(false);
    assert_eq!(again.get(&path).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_in_out_wrong_password_and_throttling() {
    let app = spawn_app(&[], &[]).await;
    app.sign_in_admin().await;
    let signed_in = app.client.get("/").await;
    // Sign out with the form's CSRF token.
    let out = app.client.post_form("/signout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), Some("/signin"));
    assert!(signed_in.body.contains("Sign out"));
    assert_eq!(app.client.get("/").await.status, StatusCode::SEE_OTHER);

    let c = app.new_client(false);
    c.get("/signin").await;
    let resp = c
        .post_form(
            "/signin",
            &[("username", ADMIN_USER), ("password", "not the password")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp.body.contains("The username or password is not right."));
    assert!(resp.body.contains(&format!("value=\"{ADMIN_USER}\"")));
    for _ in 0..5 {
        c.post_form(
            "/signin",
            &[("username", ADMIN_USER), ("password", "wrong again")],
        )
        .await;
    }
    let locked = c
        .post_form(
            "/signin",
            &[("username", ADMIN_USER), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(locked.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        locked.body.contains("Too many failed sign-ins"),
        "{}",
        locked.body
    );
}

#[tokio::test]
async fn forms_without_csrf_or_from_other_sites_change_nothing() {
    let app = spawn_app(&[], &[]).await;
    app.sign_in_admin().await;
    app.client.get("/users").await;

    // No token.
    let resp = app
        .client
        .post_form_exact(
            "/users",
            &[
                ("username".into(), "mallory".into()),
                ("password".into(), "long enough password".into()),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.body.contains("This form has expired"), "{}", resp.body);
    // Stale token.
    let resp = app
        .client
        .post_form(
            "/users",
            &[
                ("username", "mallory"),
                ("password", "long enough password"),
                ("_csrf", "stale"),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    // Right token, wrong Origin.
    app.client.get("/users").await;
    let token = app.client.csrf().unwrap();
    let body = format!("username=mallory&password=long+enough+password&_csrf={token}");
    let resp = app
        .client
        .send(
            Method::POST,
            "/users",
            vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("origin".into(), "https://evil.example".into()),
            ],
            body.into(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.body.contains("another web site"));

    let users = app.client.get("/users").await;
    assert!(!users.body.contains("mallory"), "nothing was created");

    // With everything right it works.
    let resp = app
        .client
        .post_form(
            "/users",
            &[("username", "bob"), ("password", "long enough password")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert!(app.client.get("/users").await.body.contains("bob"));
    let audit = app.client.get("/audit").await;
    assert!(
        audit.body.contains("created admin account"),
        "{}",
        audit.body
    );
    assert!(audit.body.contains("<time datetime="));
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let app = spawn_app(&[], &[]).await;
    // Unknown route: a 404 page for people, JSON for the API, plain for devices.
    let resp = app.client.get("/no/such/page").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert!(resp.body.contains("Page not found"));
    let resp = app.client.get("/api/v1/nothing").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let resp = app
        .client
        .send(Method::DELETE, "/signin", vec![], "".into())
        .await;
    assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.header("allow").unwrap().contains("GET"));

    // A garbage cookie is just "not signed in".
    app.client
        .set_cookie("orchard_session", "garbage-%%%-not-a-session");
    let resp = app.client.get("/").await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    app.client.clear_cookies();

    // Oversized body: 413 with a message, for forms and for the sign-in page.
    app.client.get("/signin").await;
    let big = "x".repeat(70 * 1024);
    let resp = app
        .client
        .post_form("/signin", &[("username", &big), ("password", "x")])
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.body.contains("64 KiB"), "{}", resp.body);

    // A malformed form body is refused, not a crash.
    let resp = app
        .client
        .send(
            Method::POST,
            "/signin",
            vec![("content-type".into(), "application/json".into())],
            "{}".into(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);

    // Security headers on every page.
    let resp = app.client.get("/signin").await;
    let csp = resp.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    assert!(resp.header("strict-transport-security").is_some());
    // The pre-session CSRF cookie is HttpOnly, Secure, SameSite=Strict.
    let fresh = app.new_client(false).get("/signin").await;
    let set_cookie = fresh.header("set-cookie").unwrap();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("Secure")
            && set_cookie.contains("SameSite=Strict")
    );
}

#[tokio::test]
async fn api_keys_health_metrics_and_both_http_versions() {
    let app = spawn_app(&[], &[]).await;
    assert_eq!(
        app.client.get("/healthz").await.version,
        hyper::Version::HTTP_2
    );
    let h1 = app.new_client(true);
    let health = h1.get("/healthz").await;
    assert_eq!(health.version, hyper::Version::HTTP_11);
    assert_eq!(health.body, "ok\n");

    // No key, a bad key: 401 JSON.
    let resp = app.client.get("/api/v1/status").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.body.contains("Bearer"));
    let bad = vec![(
        "authorization".to_string(),
        "Bearer orchard_0000000000000000_nope".to_string(),
    )];
    assert_eq!(
        app.client
            .send(Method::GET, "/api/v1/status", bad, "".into())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // An admin creates a key in the UI; it works until revoked.
    app.sign_in_admin().await;
    app.client.get("/settings").await;
    let page = app
        .client
        .post_form("/settings/api-keys", &[("name", "inventory script")])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let at = page.body.find("orchard_").expect("the new key is shown");
    let key: String = page.body[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '<')
        .collect();
    let auth = vec![("authorization".to_string(), format!("Bearer {key}"))];
    let status = app
        .client
        .send(Method::GET, "/api/v1/status", auth.clone(), "".into())
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    let json: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(json["admins"], 1);
    let audit = app
        .client
        .send(
            Method::GET,
            "/api/v1/audit?limit=0",
            auth.clone(),
            "".into(),
        )
        .await;
    assert_eq!(audit.status, StatusCode::BAD_REQUEST);

    let settings = app.client.get("/settings").await;
    let id = key.split('_').nth(1).unwrap();
    let resp = app
        .client
        .post_form(&format!("/settings/api-keys/{id}/revoke"), &[])
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert!(settings.body.contains("inventory script"));
    assert_eq!(
        app.client
            .send(Method::GET, "/api/v1/status", auth, "".into())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let metrics = app.client.get("/metrics").await;
    assert!(
        metrics.body.contains("orchard_build_info{version=\""),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("orchard_http_requests_total{"));
    assert!(metrics.body.contains("surface=\"api\""));
}

#[tokio::test]
async fn restart_keeps_the_ca_accounts_and_sessions_and_sigterm_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut app = spawn_in(&data, &[], &[]).await;
    app.sign_in_admin().await;
    let ca1 = std::fs::read(data.join("tls/ca.crt")).unwrap();
    let session = app.client.cookie("orchard_session").unwrap();
    assert!(app.terminate(), "exits cleanly on SIGTERM:\n{}", app.logs());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    let app2 = spawn_in(&data, &[], &[]).await;
    assert!(
        app2.setup_link.is_none(),
        "no setup link once an admin exists"
    );
    assert_eq!(std::fs::read(data.join("tls/ca.crt")).unwrap(), ca1);
    // The old session survives the restart (the client trusts the same CA).
    app2.client.set_cookie("orchard_session", &session);
    assert_eq!(app2.client.get("/").await.status, StatusCode::OK);

    // The CLI refuses to open the store while the server runs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchard"))
        .args(["admin", "api-key", "create", "--name", "x", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Stop `orchard serve` first"));
}

#[tokio::test]
async fn admin_commands_work_on_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut app = spawn_in(&data, &[], &[]).await;
    assert!(app.terminate());

    let run = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orchard"))
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["admin", "create", "--username", "carol"], "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"));
    let out = run(
        &["admin", "create", "--username", "carol"],
        "carols long password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["admin", "reset-password", "--username", "carol"],
        "carols new password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["admin", "reset-password", "--username", "nobody"],
        "whatever password\n",
    );
    assert!(!out.status.success());
    let out = run(&["admin", "api-key", "create", "--name", "ci"], "");
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("orchard_"));

    let app = spawn_in(&data, &[], &[]).await;
    assert!(app.setup_link.is_none());
    app.client.sign_in("carol", "carols new password").await;
    let auth = vec![("authorization".to_string(), format!("Bearer {key}"))];
    assert_eq!(
        app.client
            .send(Method::GET, "/api/v1/status", auth, "".into())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_supplied_certificate_and_json_logs() {
    // The admin's own certificate (here self-signed for 127.0.0.1) replaces Orchard's.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let app = spawn_in_trusting(
        &data,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[("ORCHARD_LOG_FORMAT", "json")],
        Some(cert.pem().into_bytes()),
    )
    .await;
    assert_eq!(app.client.get("/healthz").await.status, StatusCode::OK);
    assert!(
        app.setup_link.is_some(),
        "the link is found in JSON logs too"
    );
    // Every log line is one JSON object.
    let logs = app.logs();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    // A key that does not match is refused at start with a clear message.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key_path, other.serialize_pem()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS certificate or key"), "{err}");
}
