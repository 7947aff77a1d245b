//! The automation API under `/api/v1/` and its keys. A key reads `orchard_<id>_<secret>`; the store
//! keeps only the SHA-256 of the secret. Admins create and revoke keys on the Settings page or with
//! `orchard admin api-key create`. Each feature adds its endpoints beside its pages with
//! [`Routes::api`]; `docs/api.md` documents them.

use ::http::{Method, StatusCode, header};
use askama::Template;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::audit;
use super::fmt::Date;
use super::forms::{Field, Fields};
use super::response::{Chrome, Flash, json, redirect_with_flash, render, render_status};
use super::routes::{Nav, Routes};
use super::session;
use super::storage::WebStore;
use super::{App, Req, WebError, WebResult};
use crate::store::{Store, StoreError};

const PREFIX: &str = "orchard";
/// Keys an installation may hold (a bound on the settings page and the store).
const MAX_KEYS: usize = 100;
/// `last_used` is written at most this often per key.
const TOUCH_EVERY: time::Duration = time::Duration::minutes(1);

/// A stored API key (without its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    pub created: OffsetDateTime,
    pub created_by: String,
    pub last_used: Option<OffsetDateTime>,
}

/// The key that authenticated an API request.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a key; returns the full key text (shown once) and its record.
pub fn create_key(
    store: &Store,
    now: OffsetDateTime,
    name: &str,
    created_by: &str,
) -> Result<(String, ApiKeyRecord), ApiKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiKeyError::Invalid(
            "Give the key a name of 1 to 64 characters".into(),
        ));
    }
    if store.api_keys()?.len() >= MAX_KEYS {
        return Err(ApiKeyError::Invalid(format!(
            "Orchard holds at most {MAX_KEYS} API keys: revoke one you no longer use"
        )));
    }
    let mut id_bytes = [0u8; 8];
    rand::fill(&mut id_bytes);
    let id = hex::encode(id_bytes);
    let secret = session::random_token();
    let record = ApiKeyRecord {
        id: id.clone(),
        name: name.to_string(),
        secret_hash: hex::encode(Sha256::digest(secret.as_bytes())),
        created: now,
        created_by: created_by.to_string(),
        last_used: None,
    };
    store.put_api_key(&record)?;
    Ok((format!("{PREFIX}_{id}_{secret}"), record))
}

/// Checks the `Authorization: Bearer` header of an API request.
pub async fn authenticate(app: &App, req: &Req) -> Result<ApiKey, WebError> {
    let refuse =
        || WebError::Unauthorized("Send a valid API key as `Authorization: Bearer <key>`.".into());
    let value = req
        .header(header::AUTHORIZATION.as_str())
        .ok_or_else(refuse)?;
    let key = value.strip_prefix("Bearer ").ok_or_else(refuse)?.trim();
    let mut parts = key.splitn(3, '_');
    let (Some(PREFIX), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refuse());
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse());
    }
    let mut record = app.store.api_key(id)?.ok_or_else(refuse)?;
    let given = hex::encode(Sha256::digest(secret.as_bytes()));
    if !session::constant_time_eq(given.as_bytes(), record.secret_hash.as_bytes()) {
        return Err(refuse());
    }
    let now = app.now();
    if record.last_used.is_none_or(|t| now - t > TOUCH_EVERY) {
        record.last_used = Some(now);
        app.store.put_api_key(&record)?;
    }
    Ok(ApiKey {
        id: record.id,
        name: record.name,
    })
}

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Settings, "/settings");
    r.page(Method::GET, "/settings", settings);
    r.page(Method::POST, "/settings/api-keys", create);
    r.page(Method::POST, "/settings/api-keys/{id}/revoke", revoke);
    r.api(Method::GET, "/api/v1/status", status);
    r.api(Method::GET, "/api/v1/audit", audit_events);
}

struct KeyRow {
    id: String,
    name: String,
    created: Date,
    created_by: String,
    last_used: Option<Date>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    form: Fields,
    new_key: Option<String>,
}

fn fields() -> Fields {
    Fields::new(vec![
        Field::text("name", "Key name")
            .hint("Say what will use it, for example “inventory script”."),
    ])
}

fn settings_page(
    app: &App,
    req: &Req,
    form: Fields,
    new_key: Option<String>,
) -> Result<SettingsPage, WebError> {
    let keys = app
        .store
        .api_keys()?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            name: k.name,
            created: Date(k.created),
            created_by: k.created_by,
            last_used: k.last_used.map(Date),
        })
        .collect();
    Ok(SettingsPage {
        chrome: Chrome::new(req, "Settings"),
        keys,
        form,
        new_key,
    })
}

async fn settings(app: App, req: Req) -> WebResult {
    render(&settings_page(&app, &req, fields(), None)?)
}

async fn create(app: App, req: Req) -> WebResult {
    let name = req.form().text("name");
    match create_key(&app.store, app.now(), &name, &req.actor()) {
        Ok((key, record)) => {
            audit::record(
                &app.store,
                app.clock.as_ref(),
                &req.actor(),
                "created API key",
                &record.name,
            )?;
            app.store.flush().await?;
            // The key is shown on this response only; it is never stored or shown again.
            render(&settings_page(&app, &req, fields(), Some(key))?)
        }
        Err(ApiKeyError::Invalid(message)) => {
            let mut form = fields().keep(req.form());
            form.error("name", message);
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &settings_page(&app, &req, form, None)?,
            )
        }
        Err(ApiKeyError::Store(e)) => Err(e.into()),
    }
}

async fn revoke(app: App, req: Req) -> WebResult {
    let id = req.param("id")?.to_string();
    let record = app.store.api_key(&id)?.ok_or(WebError::NotFound)?;
    app.store.delete_api_key(&id)?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "revoked API key",
        &record.name,
    )?;
    app.store.flush().await?;
    Ok(redirect_with_flash(
        "/settings",
        Flash::success(format!(
            "API key “{}” revoked. Programs using it are refused from now on.",
            record.name
        )),
    ))
}

async fn status(app: App, _req: Req) -> WebResult {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "public_url": app.public_url.as_str(),
            "admins": app.store.admin_count()?,
        }),
    ))
}

async fn audit_events(app: App, req: Req) -> WebResult {
    let limit = match req.query("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| WebError::BadRequest("limit must be a number from 1 to 500".into()))?,
        None => 100,
    };
    let (events, _) = app.store.audit_page(None, limit)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "events": events }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::testing;

    #[test]
    fn keys_are_named_bounded_and_stored_without_their_secret() {
        let (app, _) = testing::app();
        let (key, record) = create_key(&app.store, app.now(), "inventory script", "alice").unwrap();
        assert!(key.starts_with(&format!("orchard_{}_", record.id)));
        let secret = &key[8 + 16 + 1..];
        assert!(!serde_json::to_string(&record).unwrap().contains(secret));
        assert!(matches!(
            create_key(&app.store, app.now(), "  ", "alice"),
            Err(ApiKeyError::Invalid(_))
        ));
    }
}
