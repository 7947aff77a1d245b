//! The Tokens pages and `/api/v1/tokens`: list, add in short steps (public key → Apple's portal →
//! Apple ID and `.p7m` → review), token detail, renewal, and the typed confirmation that replaces
//! a token with another MDM server's. Handlers only translate: every rule is in
//! [`crate::ade::token`].

use ::http::{Method, StatusCode, header};
use askama::Template;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;

use super::audit;
use super::fmt::Date;
use super::forms::{Field, Fields};
use super::response::{Chrome, Flash, json, redirect_with_flash, render, render_status, with_body};
use super::routes::{Nav, Routes};
use super::{App, Req, WebError, WebResult};
use crate::ade::token::{
    self, KeyOwner, Replace, TokenError, TokenId, TokenState, TokenView, Upload,
};

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Tokens, "/tokens");
    r.page(Method::GET, "/tokens", list);
    r.page(Method::GET, "/tokens/add", add_step_key);
    r.page(Method::GET, "/tokens/add/public-key.pem", new_public_key);
    r.page(Method::GET, "/tokens/add/apple", add_step_apple);
    r.page(Method::GET, "/tokens/add/upload", add_step_upload);
    r.upload(Method::POST, "/tokens/add/upload", add_review);
    r.page(Method::POST, "/tokens/add/confirm", add_confirm);
    r.page(Method::GET, "/tokens/{id}", detail);
    r.page(Method::GET, "/tokens/{id}/public-key.pem", token_public_key);
    r.page(Method::GET, "/tokens/{id}/renew", renew_form);
    r.upload(Method::POST, "/tokens/{id}/renew", renew);
    r.page(Method::POST, "/tokens/{id}/replace", replace);

    r.api(Method::GET, "/api/v1/tokens", api_list);
    r.api(Method::POST, "/api/v1/tokens", api_add);
    r.api(Method::GET, "/api/v1/tokens/public-key", api_new_public_key);
    r.api(Method::GET, "/api/v1/tokens/{id}", api_get);
    r.api(
        Method::GET,
        "/api/v1/tokens/{id}/public-key",
        api_token_public_key,
    );
    r.api(Method::POST, "/api/v1/tokens/{id}/renew", api_renew);
}

/// A token as the pages show it.
struct Row {
    id: String,
    server_name: String,
    server_uuid: String,
    org_name: String,
    portal: String,
    apple_id: String,
    expires: Date,
    days_left: i64,
    state: &'static str,
    expiring: bool,
    terms_accepted: bool,
    last_sync: Option<Date>,
    device_count: String,
    added: Option<Date>,
    renewed: Option<Date>,
    key_staged: bool,
}

impl From<TokenView> for Row {
    fn from(t: TokenView) -> Row {
        Row {
            id: t.id.map(|id| id.to_string()).unwrap_or_default(),
            server_name: t.server_name,
            server_uuid: t.server_uuid,
            org_name: t.org_name,
            portal: t.portal,
            apple_id: t.apple_id,
            expires: Date(t.expires_at),
            days_left: t.days_left,
            state: t.state.as_str(),
            // Terms not accepted still shows the expiry warning when one is due.
            expiring: t.state != TokenState::Expired && t.days_left <= token::EXPIRING_WITHIN_DAYS,
            terms_accepted: t.terms_accepted,
            last_sync: t.last_sync.map(Date),
            device_count: super::fmt::count(usize::try_from(t.device_count).unwrap_or(usize::MAX)),
            added: t.added_at.map(Date),
            renewed: t.renewed_at.map(Date),
            key_staged: t.key_staged,
        }
    }
}

#[derive(Template)]
#[template(path = "tokens/list.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "tokens/add.html")]
struct AddPage {
    chrome: Chrome,
    step: u8,
    back: &'static str,
    public_key: String,
}

#[derive(Template)]
#[template(path = "tokens/upload.html")]
struct UploadPage {
    chrome: Chrome,
    back: String,
    step: &'static str,
    intro: String,
    action: String,
    submit: &'static str,
    form: Fields,
}

#[derive(Template)]
#[template(path = "tokens/review.html")]
struct ReviewPage {
    chrome: Chrome,
    t: Row,
    token_b64: String,
}

#[derive(Template)]
#[template(path = "tokens/detail.html")]
struct DetailPage {
    chrome: Chrome,
    t: Row,
}

#[derive(Template)]
#[template(path = "tokens/replace.html")]
struct ReplacePage {
    chrome: Chrome,
    id: String,
    message: String,
    current: String,
    uploaded: String,
    device_count: String,
    apple_id: String,
    token_b64: String,
    form: Fields,
}

const APPLE_ID: &str = "apple_id";
const FILE: &str = "token";
const CONFIRM: &str = "confirm_name";

fn upload_fields() -> Fields {
    Fields::new(vec![
        Field::text(APPLE_ID, "Apple ID")
            .hint("The account you signed in to Apple's portal with, such as admin@school.example. Apple asks for it again to renew the token.")
            .autocomplete("email"),
        Field {
            kind: "file",
            ..Field::text(FILE, "Server token file")
                .hint("The file ending in .p7m that Apple's portal downloaded.")
        },
    ])
}

fn token_id(req: &Req) -> Result<TokenId, WebError> {
    req.param("id")?.parse().map_err(|_| WebError::NotFound)
}

/// A token error on a page: input errors go beside their field; the rest become the page error.
fn field_error(fields: &mut Fields, e: &TokenError) -> bool {
    let name = match e.field() {
        Some(token::Field::AppleId) => APPLE_ID,
        Some(token::Field::File) => FILE,
        Some(token::Field::Confirm) => CONFIRM,
        None => return false,
    };
    let message = match e.detail() {
        Some(detail) => format!("{e} (Detail: {detail})"),
        None => e.to_string(),
    };
    fields.error(name, message);
    true
}

/// Errors that have no field: the page's whole answer.
fn web_error(e: TokenError) -> WebError {
    match e {
        TokenError::NotFound(_) => WebError::NotFound,
        TokenError::AlreadyAdded { .. } | TokenError::OtherServer { .. } => {
            WebError::Conflict(e.to_string())
        }
        TokenError::Internal(detail) => WebError::Internal(detail),
        TokenError::Apple(ref dep) if !dep.needs_admin() => WebError::Unavailable(e.to_string()),
        other => WebError::BadRequest(other.to_string()),
    }
}

fn upload_from_form(req: &Req) -> Upload {
    let form = req.form();
    Upload {
        apple_id: form.text(APPLE_ID),
        file: form
            .file(FILE)
            .map(|f| f.bytes.to_vec())
            .unwrap_or_default(),
    }
}

/// The upload carried through a confirmation page as a hidden field.
fn upload_from_hidden(req: &Req) -> Result<Upload, WebError> {
    let form = req.form();
    let file = B64.decode(form.text("token_b64")).map_err(|_| {
        WebError::BadRequest("The form was changed: upload the token again.".into())
    })?;
    Ok(Upload {
        apple_id: form.text(APPLE_ID),
        file,
    })
}

fn pem_download(pem: String) -> WebResult {
    let mut response = with_body(StatusCode::OK, "application/x-pem-file", Bytes::from(pem));
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        header::HeaderValue::from_static("attachment; filename=\"orchard-public-key.pem\""),
    );
    Ok(response)
}

async fn list(app: App, req: Req) -> WebResult {
    let rows = app
        .tokens
        .list()
        .map_err(web_error)?
        .into_iter()
        .map(Row::from)
        .collect();
    render(&ListPage {
        chrome: Chrome::new(&req, "Server tokens"),
        rows,
    })
}

async fn add_step_key(app: App, req: Req) -> WebResult {
    let public_key = app
        .tokens
        .public_key(KeyOwner::NewToken)
        .await
        .map_err(web_error)?;
    render(&AddPage {
        chrome: Chrome::new(&req, "Download your public key"),
        step: 1,
        back: "/tokens",
        public_key,
    })
}

async fn new_public_key(app: App, _req: Req) -> WebResult {
    pem_download(
        app.tokens
            .public_key(KeyOwner::NewToken)
            .await
            .map_err(web_error)?,
    )
}

async fn add_step_apple(_app: App, req: Req) -> WebResult {
    render(&AddPage {
        chrome: Chrome::new(&req, "Create the token in Apple's portal"),
        step: 2,
        back: "/tokens/add",
        public_key: String::new(),
    })
}

fn add_upload_page(req: &Req, form: Fields) -> UploadPage {
    UploadPage {
        chrome: Chrome::new(req, "Upload the server token"),
        back: "/tokens/add/apple".into(),
        step: "Add a token: step 3 of 3",
        intro: "Give the Apple ID you used in Apple's portal and the token file it downloaded. Orchard checks the token with Apple before anything is saved.".into(),
        action: "/tokens/add/upload".into(),
        submit: "Continue",
        form,
    }
}

async fn add_step_upload(_app: App, req: Req) -> WebResult {
    render(&add_upload_page(&req, upload_fields()))
}

async fn add_review(app: App, req: Req) -> WebResult {
    let upload = upload_from_form(&req);
    match app.tokens.preview(&upload).await {
        Ok(view) => render(&ReviewPage {
            chrome: Chrome::new(&req, "Check the token"),
            t: Row::from(view),
            token_b64: B64.encode(&upload.file),
        }),
        Err(e) => {
            let mut fields = upload_fields().keep(req.form());
            if !field_error(&mut fields, &e) {
                return Err(web_error(e));
            }
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &add_upload_page(&req, fields),
            )
        }
    }
}

async fn add_confirm(app: App, req: Req) -> WebResult {
    let upload = upload_from_hidden(&req)?;
    let view = match app.tokens.add(&upload).await {
        Ok(view) => view,
        Err(e) => {
            // Something changed since the review (the key, Apple's answer): start the step again.
            let mut fields = upload_fields().keep(req.form());
            if !field_error(&mut fields, &e) {
                return Err(web_error(e));
            }
            return render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &add_upload_page(&req, fields),
            );
        }
    };
    let id = view.id.map(|id| id.to_string()).unwrap_or_default();
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "added server token",
        &view.server_name,
    )?;
    app.store.flush().await?;
    Ok(redirect_with_flash(
        &format!("/tokens/{id}"),
        Flash::success(format!(
            "Token for \"{}\" added. Orchard will sync devices from Apple within a minute.",
            view.server_name
        )),
    ))
}

async fn detail(app: App, req: Req) -> WebResult {
    let view = app.tokens.get(token_id(&req)?).map_err(web_error)?;
    render(&DetailPage {
        chrome: Chrome::new(&req, &view.server_name),
        t: Row::from(view),
    })
}

async fn token_public_key(app: App, req: Req) -> WebResult {
    let owner = KeyOwner::Token(token_id(&req)?);
    pem_download(app.tokens.public_key(owner).await.map_err(web_error)?)
}

fn renew_page(req: &Req, view: &TokenView, form: Fields) -> UploadPage {
    let id = view.id.map(|id| id.to_string()).unwrap_or_default();
    UploadPage {
        chrome: Chrome::new(req, "Renew the token"),
        back: format!("/tokens/{id}"),
        step: "",
        intro: format!(
            "In {}, open the MDM server \"{}\", choose Download Token, and upload the new file here with the Apple ID you used.",
            view.portal, view.server_name
        ),
        action: format!("/tokens/{id}/renew"),
        submit: "Renew token",
        form,
    }
}

async fn renew_form(app: App, req: Req) -> WebResult {
    let view = app.tokens.get(token_id(&req)?).map_err(web_error)?;
    let mut form = upload_fields();
    if let Some(f) = form.fields.iter_mut().find(|f| f.name == APPLE_ID) {
        f.value = view.apple_id.clone();
    }
    render(&renew_page(&req, &view, form))
}

async fn renew(app: App, req: Req) -> WebResult {
    let id = token_id(&req)?;
    let current = app.tokens.get(id).map_err(web_error)?;
    let upload = upload_from_form(&req);
    match app.tokens.renew(id, &upload, Replace::No).await {
        Ok(view) => renewed(&app, &req, view, None).await,
        Err(TokenError::OtherServer {
            current: name,
            uploaded,
        }) => {
            let e = TokenError::OtherServer {
                current: name.clone(),
                uploaded: uploaded.clone(),
            };
            render_status(
                StatusCode::CONFLICT,
                &ReplacePage {
                    chrome: Chrome::new(&req, "Replace the token?"),
                    id: id.to_string(),
                    message: e.to_string(),
                    current: name,
                    uploaded,
                    device_count: super::fmt::count(
                        usize::try_from(current.device_count).unwrap_or(usize::MAX),
                    ),
                    apple_id: upload.apple_id,
                    token_b64: B64.encode(&upload.file),
                    form: confirm_fields(),
                },
            )
        }
        Err(e) => {
            let mut fields = upload_fields().keep(req.form());
            if !field_error(&mut fields, &e) {
                return Err(web_error(e));
            }
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &renew_page(&req, &current, fields),
            )
        }
    }
}

fn confirm_fields() -> Fields {
    Fields::new(vec![Field::text(
        CONFIRM,
        "To replace it, type the name of the current MDM server",
    )])
}

async fn replace(app: App, req: Req) -> WebResult {
    let id = token_id(&req)?;
    let current = app.tokens.get(id).map_err(web_error)?;
    let upload = upload_from_hidden(&req)?;
    let typed_name = req.form().text(CONFIRM);
    match app
        .tokens
        .renew(id, &upload, Replace::Confirmed { typed_name })
        .await
    {
        Ok(view) => renewed(&app, &req, view, Some(&current.server_name)).await,
        Err(e @ TokenError::ConfirmMismatch { .. }) => {
            let mut form = confirm_fields().keep(req.form());
            field_error(&mut form, &e);
            // Shown only: the name Apple gave for the uploaded token, carried by the form.
            let uploaded = req.form().text("uploaded_name");
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ReplacePage {
                    chrome: Chrome::new(&req, "Replace the token?"),
                    id: id.to_string(),
                    message: format!(
                        "This token belongs to another MDM server than \"{}\".",
                        current.server_name
                    ),
                    current: current.server_name.clone(),
                    uploaded,
                    device_count: super::fmt::count(
                        usize::try_from(current.device_count).unwrap_or(usize::MAX),
                    ),
                    apple_id: upload.apple_id,
                    token_b64: B64.encode(&upload.file),
                    form,
                },
            )
        }
        Err(e) => {
            let mut fields = upload_fields();
            if !field_error(&mut fields, &e) {
                return Err(web_error(e));
            }
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &renew_page(&req, &current, fields),
            )
        }
    }
}

/// After a renewal, or a replacement of the server `replaced`: audit, and the token's page.
async fn renewed(app: &App, req: &Req, view: TokenView, replaced: Option<&str>) -> WebResult {
    let id = view.id.map(|id| id.to_string()).unwrap_or_default();
    let action = match replaced {
        None => "renewed server token",
        Some(_) => "replaced server token",
    };
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        action,
        &view.server_name,
    )?;
    app.store.flush().await?;
    let expires = Date(view.expires_at).day();
    let message = match replaced {
        None => format!(
            "Token for \"{}\" renewed. It now expires on {expires}.",
            view.server_name
        ),
        Some(old) => format!(
            "Token replaced: Orchard now syncs \"{}\" instead of \"{old}\". It expires on {expires}.",
            view.server_name
        ),
    };
    Ok(redirect_with_flash(
        &format!("/tokens/{id}"),
        Flash::success(message),
    ))
}

// --- API ---------------------------------------------------------------------------------

/// `POST /api/v1/tokens` and `/api/v1/tokens/{id}/renew` body.
#[derive(Deserialize)]
struct ApiUpload {
    apple_id: String,
    /// The `.p7m` file's text, as Apple's portal downloads it.
    p7m: String,
    /// Renewal only: the current server name, to replace the token with another server's.
    #[serde(default)]
    replace_confirm: Option<String>,
}

impl ApiUpload {
    fn upload(&self) -> Upload {
        Upload {
            apple_id: self.apple_id.clone(),
            file: self.p7m.clone().into_bytes(),
        }
    }
}

async fn api_list(app: App, _req: Req) -> WebResult {
    Ok(json(StatusCode::OK, &app.tokens.list().map_err(web_error)?))
}

async fn api_get(app: App, req: Req) -> WebResult {
    Ok(json(
        StatusCode::OK,
        &app.tokens.get(token_id(&req)?).map_err(web_error)?,
    ))
}

async fn api_new_public_key(app: App, _req: Req) -> WebResult {
    pem_download(
        app.tokens
            .public_key(KeyOwner::NewToken)
            .await
            .map_err(web_error)?,
    )
}

async fn api_token_public_key(app: App, req: Req) -> WebResult {
    let owner = KeyOwner::Token(token_id(&req)?);
    pem_download(app.tokens.public_key(owner).await.map_err(web_error)?)
}

async fn api_add(app: App, req: Req) -> WebResult {
    let body: ApiUpload = req.json()?;
    let view = app.tokens.add(&body.upload()).await.map_err(web_error)?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "added server token",
        &view.server_name,
    )?;
    app.store.flush().await?;
    Ok(json(StatusCode::CREATED, &view))
}

async fn api_renew(app: App, req: Req) -> WebResult {
    let id = token_id(&req)?;
    let body: ApiUpload = req.json()?;
    let replace = match &body.replace_confirm {
        Some(name) => Replace::Confirmed {
            typed_name: name.clone(),
        },
        None => Replace::No,
    };
    let view = app
        .tokens
        .renew(id, &body.upload(), replace)
        .await
        .map_err(web_error)?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "renewed server token",
        &view.server_name,
    )?;
    app.store.flush().await?;
    Ok(json(StatusCode::OK, &view))
}
