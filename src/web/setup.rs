//! The one-time setup link that creates the first admin. While no admin exists, each start of
//! `orchard serve` makes a fresh random token (its SHA-256 stored, valid 24 hours) and logs the
//! link; using it creates the admin, signs them in and retires the token.

use ::http::{Method, StatusCode};
use askama::Template;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::accounts::{self, AccountError};
use super::audit;
use super::forms::{Field, Fields};
use super::response::{Chrome, Flash, redirect_with_flash, render, render_status};
use super::routes::Routes;
use super::session;
use super::storage::WebStore;
use super::{App, Req, WebError, WebResult};
use crate::store::StoreError;

const LIFETIME: Duration = Duration::hours(24);

/// The stored setup token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupToken {
    /// SHA-256 of the token in the link, hex.
    pub hash: String,
    pub expires: OffsetDateTime,
}

/// When there is no admin yet, makes a new setup token and returns the link to log. Replaces any
/// earlier token, so only the newest printed link works.
pub fn issue_link(app: &App) -> Result<Option<String>, StoreError> {
    if app.store.admin_count()? > 0 {
        app.store.clear_setup_token()?;
        return Ok(None);
    }
    let token = session::random_token();
    app.store.put_setup_token(&SetupToken {
        hash: hex::encode(session::key_of(&token)),
        expires: app.now() + LIFETIME,
    })?;
    Ok(Some(app.url(&format!("/setup/{token}"))))
}

pub fn routes(r: &mut Routes) {
    r.public(Method::GET, "/setup/{token}", show);
    r.public(Method::POST, "/setup/{token}", create);
}

fn valid(app: &App, token: &str) -> Result<bool, StoreError> {
    if !session::well_formed(token) || app.store.admin_count()? > 0 {
        return Ok(false);
    }
    Ok(match app.store.setup_token()? {
        Some(stored) => {
            stored.expires > app.now()
                && session::constant_time_eq(
                    stored.hash.as_bytes(),
                    hex::encode(session::key_of(token)).as_bytes(),
                )
        }
        None => false,
    })
}

fn invalid() -> WebError {
    WebError::Forbidden(
        "This setup link is not valid: it may have expired or been used already. Restart Orchard to \
         print a new link, or create an admin with `orchard admin create` while Orchard is stopped."
            .into(),
    )
}

fn fields() -> Fields {
    Fields::new(vec![
        Field::text("username", "Username")
            .hint("You sign in with this. Letters, numbers and . _ @ -")
            .autocomplete("username"),
        Field::password("password", "Password")
            .hint("At least 10 characters. A few unrelated words work well.")
            .autocomplete("new-password"),
        Field::password("confirm", "Confirm password").autocomplete("new-password"),
    ])
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    chrome: Chrome,
    form: Fields,
    action: String,
}

async fn show(app: App, req: Req) -> WebResult {
    let token = req.param("token")?.to_string();
    if !valid(&app, &token)? {
        return Err(invalid());
    }
    render(&SetupPage {
        chrome: Chrome::new(&req, "Create the first admin account"),
        form: fields(),
        action: format!("/setup/{token}"),
    })
}

async fn create(app: App, req: Req) -> WebResult {
    let token = req.param("token")?.to_string();
    if !valid(&app, &token)? {
        return Err(invalid());
    }
    let form = req.form();
    let mut fields = fields().keep(form);
    let username = match accounts::parse_username(&form.text("username")) {
        Ok(u) => Some(u),
        Err(e) => {
            fields.error("username", e);
            None
        }
    };
    let password = form.get("password").unwrap_or_default();
    if let Err(e) =
        accounts::check_new_password(&password, Some(&form.get("confirm").unwrap_or_default()))
    {
        let field = if e.contains("match") {
            "confirm"
        } else {
            "password"
        };
        fields.error(field, e);
    }
    let retry = |fields: Fields| {
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SetupPage {
                chrome: Chrome::new(&req, "Create the first admin account"),
                form: fields,
                action: format!("/setup/{token}"),
            },
        )
    };
    let Some(username) = username.filter(|_| !fields.has_errors()) else {
        return retry(fields);
    };
    let hash = accounts::hash_password(password)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    // Another tab may have used the link while the hash was computed.
    if !valid(&app, &token)? {
        return Err(invalid());
    }
    let user = match accounts::create_admin_with_hash(&app.store, app.now(), &username, hash) {
        Ok(u) => u,
        Err(AccountError::Taken(_)) => {
            fields.error("username", "That username is taken: choose another");
            return retry(fields);
        }
        Err(e) => return Err(WebError::Internal(e.to_string())),
    };
    app.store.clear_setup_token()?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &username,
        "created the first admin account",
        &username,
    )?;
    let cookie = session::create(&app, &user)?;
    app.store.flush().await?;
    req.set_cookie(session::cookie(session::SESSION_COOKIE, &cookie));
    Ok(redirect_with_flash(
        "/",
        Flash::success(format!("Welcome, {username}. Your admin account is ready.")),
    ))
}
