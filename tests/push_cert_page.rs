//! The Push certificate page in the real binary: download the request, upload the certificate
//! "Apple" issued (the simulator's push CA), refuse a wrong file, and change the topic only after
//! the typed confirmation. Also the API beside the page.

mod common;

use hyper::StatusCode;
use orchard::sim::apns::PushCa;
use time::{Duration, OffsetDateTime};

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).map(|i| i + marker.len()).unwrap();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

fn topic() -> String {
    format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4())
}

fn sign(ca: &PushCa, csr: &str, topic: &str) -> String {
    let now = OffsetDateTime::now_utc();
    ca.sign_csr(
        csr,
        topic,
        now - Duration::minutes(5),
        now + Duration::days(365),
    )
    .unwrap()
}

#[tokio::test]
async fn upload_renew_and_confirmed_topic_change() {
    let app = common::spawn_app(&[], &[]).await;
    app.sign_in_admin().await;
    let c = &app.client;
    let ca = PushCa::new().unwrap();

    let page = c.get("/push-certificate").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("There is no push certificate yet"),
        "{}",
        page.body
    );

    let csr = c.get("/push-certificate/request.csr").await;
    assert_eq!(csr.status, StatusCode::OK);
    assert_eq!(csr.header("content-type"), Some("application/pkcs10"));
    assert!(csr.body.contains("BEGIN CERTIFICATE REQUEST"));

    // A wrong file: refused, said beside the field, nothing installed.
    c.get("/push-certificate").await;
    let wrong = c
        .post_multipart(
            "/push-certificate",
            &[("apple_id", "it@school.example")],
            &[("certificate", "request.csr", csr.body.as_bytes())],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.body.contains("There is a problem"));
    assert!(wrong.body.contains("no PEM certificate"), "{}", wrong.body);

    let first = topic();
    let pem = sign(&ca, &csr.body, &first);
    c.get("/push-certificate").await;
    let done = c
        .post_multipart(
            "/push-certificate",
            &[("apple_id", "it@school.example")],
            &[("certificate", "MDM_Orchard.pem", pem.as_bytes())],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = c.get("/push-certificate").await;
    assert!(page.body.contains(&first));
    assert!(page.body.contains("it@school.example"));
    assert!(page.body.contains(">Valid<"));

    // A certificate with another topic: a confirmation page, nothing changed yet.
    c.post_form("/push-certificate/request", &[]).await;
    let csr = c.get("/push-certificate/request.csr").await;
    let second = topic();
    let other = sign(&ca, &csr.body, &second);
    c.get("/push-certificate").await;
    let ask = c
        .post_multipart(
            "/push-certificate",
            &[("apple_id", "it@school.example")],
            &[("certificate", "MDM_Other.pem", other.as_bytes())],
        )
        .await;
    assert_eq!(ask.status, StatusCode::CONFLICT, "{}", ask.body);
    assert!(ask.body.contains(&first) && ask.body.contains(&second));
    assert!(c.get("/push-certificate").await.body.contains(&first));

    let ask = c
        .post_multipart(
            "/push-certificate",
            &[("apple_id", "it@school.example")],
            &[("certificate", "MDM_Other.pem", other.as_bytes())],
        )
        .await;
    let fields = |word: &str| {
        vec![
            ("certificate".to_string(), hidden(&ask.body, "certificate")),
            ("apple_id".to_string(), hidden(&ask.body, "apple_id")),
            ("new_topic".to_string(), hidden(&ask.body, "new_topic")),
            ("confirm".to_string(), word.to_string()),
        ]
    };
    let refused = c
        .post_form_exact("/push-certificate/confirm", &{
            let mut f = fields("yes");
            f.push(("_csrf".into(), c.csrf().unwrap()));
            f
        })
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("type CHANGE"), "{}", refused.body);
    assert!(c.get("/push-certificate").await.body.contains(&first));

    c.get("/push-certificate").await;
    let token = c.csrf().unwrap();
    let confirmed = c
        .post_form_exact("/push-certificate/confirm", &{
            let mut f = fields("CHANGE");
            f.push(("_csrf".into(), token));
            f
        })
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::SEE_OTHER,
        "{}",
        confirmed.body
    );
    let page = c.get("/push-certificate").await;
    assert!(page.body.contains(&second) && !page.body.contains(&first));
}
