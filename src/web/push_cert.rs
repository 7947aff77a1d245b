//! The Push certificate page and its API: download Orchard's certificate request, upload the
//! certificate Apple issued with the Apple ID used, see the topic and expiry, renew, and confirm a
//! topic change (which cuts off every enrolled Mac) by typing a word.

use ::http::{Method, StatusCode};
use askama::Template;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use super::audit;
use super::fmt::Date;
use super::response::{self, Chrome, Flash, redirect_with_flash, render, render_status};
use super::routes::{Nav, Routes};
use super::{App, Req, WebError, WebResult};
use crate::apple::push_cert::{
    Expiry, PushCertError, PushCertStatus, TOPIC_CHANGE_WORD, TopicChangeConfirmation,
};

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Push, "/push-certificate");
    r.page(Method::GET, "/push-certificate", show);
    r.page(Method::GET, "/push-certificate/request.csr", download_csr);
    r.page(Method::POST, "/push-certificate/request", new_request);
    r.upload(Method::POST, "/push-certificate", upload);
    r.page(Method::POST, "/push-certificate/confirm", confirm);
    r.api(Method::GET, "/api/v1/push-certificate", api_status);
    r.api(Method::GET, "/api/v1/push-certificate/request", api_csr);
    r.api(
        Method::POST,
        "/api/v1/push-certificate/request",
        api_new_csr,
    );
    r.api(Method::PUT, "/api/v1/push-certificate", api_upload);
}

/// The certificate in use, as the page shows it.
struct Current {
    topic: String,
    apple_id: String,
    not_after: Date,
    installed: Date,
    expiry: Expiry,
    alert: Option<(String, Date)>,
}

impl From<PushCertStatus> for Current {
    fn from(s: PushCertStatus) -> Current {
        Current {
            topic: s.topic.to_string(),
            apple_id: s.apple_id,
            not_after: Date(s.not_after),
            installed: Date(s.installed_at),
            expiry: s.expiry,
            alert: s.alert.map(|a| (a.reason, Date(a.at))),
        }
    }
}

impl Current {
    /// The words and the class of the expiry tag (words, never colour alone).
    fn expiry_tag(&self) -> (String, &'static str) {
        match self.expiry {
            Expiry::Valid => ("Valid".into(), "tag"),
            Expiry::ExpiresSoon { days: 0 } => ("Expires today".into(), "tag tag--amber"),
            Expiry::ExpiresSoon { days: 1 } => ("Expires in 1 day".into(), "tag tag--amber"),
            Expiry::ExpiresSoon { days } => (format!("Expires in {days} days"), "tag tag--amber"),
            Expiry::Expired => ("Expired".into(), "tag tag--red"),
        }
    }
}

#[derive(Template)]
#[template(path = "push_cert.html")]
struct PushCertPage {
    chrome: Chrome,
    current: Option<Current>,
    pending: bool,
    apple_id: String,
    /// The field in error and the message.
    error: Option<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "push_cert_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    current_topic: String,
    new_topic: String,
    certificate_b64: String,
    apple_id: String,
    word: &'static str,
    error: Option<String>,
}

fn page(
    app: &App,
    req: &Req,
    apple_id: String,
    error: Option<(&'static str, String)>,
) -> Result<PushCertPage, WebError> {
    let current: Option<Current> = app
        .push_certs
        .status()
        .map_err(internal)?
        .map(Current::from);
    let apple_id = if apple_id.is_empty() {
        current
            .as_ref()
            .map(|c| c.apple_id.clone())
            .unwrap_or_default()
    } else {
        apple_id
    };
    Ok(PushCertPage {
        chrome: Chrome::new(req, "Push certificate"),
        pending: app.push_certs.has_pending_request().map_err(internal)?,
        current,
        apple_id,
        error,
    })
}

async fn show(app: App, req: Req) -> WebResult {
    render(&page(&app, &req, String::new(), None)?)
}

async fn download_csr(app: App, _req: Req) -> WebResult {
    Ok(csr_response(csr(&app, false).await?))
}

async fn new_request(app: App, req: Req) -> WebResult {
    csr(&app, true).await?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "made a new push certificate request",
        "",
    )?;
    Ok(redirect_with_flash(
        "/push-certificate",
        Flash::success("Orchard made a new certificate request. Download it and have it signed."),
    ))
}

async fn upload(app: App, req: Req) -> WebResult {
    let form = req.form();
    let apple_id = form.text("apple_id");
    let Some(file) = form.file("certificate") else {
        let err = (
            "certificate",
            "Choose the certificate file (.pem) you downloaded from Apple".to_string(),
        );
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &page(&app, &req, apple_id, Some(err))?,
        );
    };
    let pem = file.bytes.clone();
    install(&app, &req, pem, apple_id, None).await
}

async fn confirm(app: App, req: Req) -> WebResult {
    let form = req.form();
    let apple_id = form.text("apple_id");
    let pem = STANDARD.decode(form.text("certificate")).map_err(|_| {
        WebError::BadRequest(
            "The confirmation form was damaged: upload the certificate again.".into(),
        )
    })?;
    let new_topic = form.text("new_topic");
    match TopicChangeConfirmation::from_typed(&form.text("confirm"), &new_topic) {
        Ok(c) => install(&app, &req, Bytes::from(pem), apple_id, Some(c)).await,
        Err(e) => {
            let current_topic = app
                .push_certs
                .topic()
                .map(|t| t.to_string())
                .unwrap_or_default();
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ConfirmPage {
                    chrome: Chrome::new(&req, "Change the push topic?"),
                    current_topic,
                    new_topic,
                    certificate_b64: STANDARD.encode(&pem),
                    apple_id,
                    word: TOPIC_CHANGE_WORD,
                    error: Some(e.to_string()),
                },
            )
        }
    }
}

async fn install(
    app: &App,
    req: &Req,
    pem: Bytes,
    apple_id: String,
    confirm: Option<TopicChangeConfirmation>,
) -> WebResult {
    let result = upload_blocking(app, pem.clone(), apple_id.clone(), confirm).await?;
    match result {
        Ok(status) => {
            audit::record(
                &app.store,
                app.clock.as_ref(),
                &req.actor(),
                "installed push certificate",
                status.topic.as_str(),
            )?;
            app.store.flush().await?;
            Ok(redirect_with_flash(
                "/push-certificate",
                Flash::success(format!(
                    "Push certificate installed. Orchard uses it now; it expires on {}.",
                    Date(status.not_after).day()
                )),
            ))
        }
        Err(PushCertError::TopicChange { current, new }) => render_status(
            StatusCode::CONFLICT,
            &ConfirmPage {
                chrome: Chrome::new(req, "Change the push topic?"),
                current_topic: current,
                new_topic: new,
                certificate_b64: STANDARD.encode(&pem),
                apple_id,
                word: TOPIC_CHANGE_WORD,
                error: None,
            },
        ),
        Err(e) if is_internal(&e) => Err(internal(e)),
        Err(e) => {
            let field = if matches!(e, PushCertError::BadAppleId) {
                "apple_id"
            } else {
                "certificate"
            };
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(app, req, apple_id, Some((field, e.to_string())))?,
            )
        }
    }
}

/// Runs the upload off the async threads (it opens sealed keys and parses certificates).
async fn upload_blocking(
    app: &App,
    pem: Bytes,
    apple_id: String,
    confirm: Option<TopicChangeConfirmation>,
) -> Result<Result<PushCertStatus, PushCertError>, WebError> {
    let certs = app.push_certs.clone();
    tokio::task::spawn_blocking(move || certs.upload(&pem, &apple_id, confirm.as_ref()))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))
}

async fn csr(app: &App, fresh: bool) -> Result<String, WebError> {
    let certs = app.push_certs.clone();
    // RSA key generation takes a moment: keep it off the async threads.
    tokio::task::spawn_blocking(move || if fresh { certs.new_csr() } else { certs.csr() })
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?
        .map_err(internal)
}

fn csr_response(csr: String) -> crate::http::Response {
    let mut resp = response::with_body(StatusCode::OK, "application/pkcs10", Bytes::from(csr));
    resp.headers_mut().insert(
        ::http::header::CONTENT_DISPOSITION,
        ::http::HeaderValue::from_static("attachment; filename=\"orchard-push-request.csr\""),
    );
    resp
}

fn is_internal(e: &PushCertError) -> bool {
    matches!(
        e,
        PushCertError::Store(_) | PushCertError::Secret(_) | PushCertError::KeyGeneration(_)
    )
}

fn internal(e: PushCertError) -> WebError {
    WebError::Internal(e.to_string())
}

// ---- API ----

async fn api_status(app: App, _req: Req) -> WebResult {
    let status = app.push_certs.status().map_err(internal)?;
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({ "certificate": status }),
    ))
}

async fn api_csr(app: App, _req: Req) -> WebResult {
    Ok(csr_response(csr(&app, false).await?))
}

async fn api_new_csr(app: App, req: Req) -> WebResult {
    let csr = csr(&app, true).await?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "made a new push certificate request",
        "",
    )?;
    Ok(csr_response(csr))
}

#[derive(serde::Deserialize)]
struct UploadBody {
    certificate: String,
    apple_id: String,
    /// The new topic, to confirm replacing a certificate of another topic.
    confirm_topic_change: Option<String>,
}

async fn api_upload(app: App, req: Req) -> WebResult {
    let body: UploadBody = req.json()?;
    let confirm = body
        .confirm_topic_change
        .as_deref()
        .map(|topic| TopicChangeConfirmation::from_typed(TOPIC_CHANGE_WORD, topic))
        .transpose()
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    let pem = Bytes::from(body.certificate.into_bytes());
    match upload_blocking(&app, pem, body.apple_id, confirm).await? {
        Ok(status) => {
            audit::record(
                &app.store,
                app.clock.as_ref(),
                &req.actor(),
                "installed push certificate",
                status.topic.as_str(),
            )?;
            app.store.flush().await?;
            Ok(response::json(
                StatusCode::OK,
                &serde_json::json!({ "certificate": status }),
            ))
        }
        Err(e @ PushCertError::TopicChange { .. }) => Err(WebError::Conflict(e.to_string())),
        Err(e) if is_internal(&e) => Err(internal(e)),
        Err(e) => Err(WebError::BadRequest(e.to_string())),
    }
}
