//! The Users page: the admin accounts, adding one, removing one (never yourself or the last).

use ::http::{Method, StatusCode};
use askama::Template;

use super::accounts::{self, AccountError, Role};
use super::audit;
use super::fmt::Date;
use super::forms::{Field, Fields};
use super::response::{Chrome, Flash, redirect_with_flash, render, render_status};
use super::routes::{Nav, Routes};
use super::storage::WebStore;
use super::{App, Req, WebError, WebResult};

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Users, "/users");
    r.page(Method::GET, "/users", list);
    r.page(Method::POST, "/users", add);
    r.page(Method::POST, "/users/{id}/remove", remove);
}

struct Row {
    id: u64,
    username: String,
    created: Date,
    last_sign_in: Option<Date>,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    rows: Vec<Row>,
    form: Fields,
}

fn fields() -> Fields {
    Fields::new(vec![
        Field::text("username", "Username").hint("Letters, numbers and . _ @ -"),
        Field::password("password", "Password")
            .hint("At least 10 characters. Give it to them in person.")
            .autocomplete("new-password"),
    ])
}

fn page(app: &App, req: &Req, form: Fields) -> Result<UsersPage, WebError> {
    let me = req.session.as_ref().map(|s| s.record.user_id);
    let rows = app
        .store
        .users()?
        .into_iter()
        .filter(|u| u.role == Role::Admin)
        .map(|u| Row {
            id: u.id,
            is_me: Some(u.id) == me,
            username: u.username,
            created: Date(u.created),
            last_sign_in: u.last_sign_in.map(Date),
        })
        .collect();
    Ok(UsersPage {
        chrome: Chrome::new(req, "Admin accounts"),
        rows,
        form,
    })
}

async fn list(app: App, req: Req) -> WebResult {
    render(&page(&app, &req, fields())?)
}

async fn add(app: App, req: Req) -> WebResult {
    let form = req.form();
    let mut fields = fields().keep(form);
    let username = accounts::parse_username(&form.text("username"))
        .map_err(|e| fields.error("username", e))
        .ok();
    let password = form.get("password").unwrap_or_default();
    if let Err(e) = accounts::check_new_password(&password, None) {
        fields.error("password", e);
    }
    if let Some(name) = &username
        && app.store.user_by_name(name)?.is_some()
    {
        fields.error("username", "That username is taken: choose another");
    }
    let Some(username) = username.filter(|_| !fields.has_errors()) else {
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page(&app, &req, fields)?);
    };
    let hash = accounts::hash_password(password)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    match accounts::create_admin_with_hash(&app.store, app.now(), &username, hash) {
        Ok(_) => {}
        Err(AccountError::Taken(_)) => {
            fields.error("username", "That username is taken: choose another");
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page(&app, &req, fields)?);
        }
        Err(e) => return Err(WebError::Internal(e.to_string())),
    }
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "created admin account",
        &username,
    )?;
    app.store.flush().await?;
    Ok(redirect_with_flash(
        "/users",
        Flash::success(format!("Admin account {username} created.")),
    ))
}

async fn remove(app: App, req: Req) -> WebResult {
    let id: u64 = req.param("id")?.parse().map_err(|_| WebError::NotFound)?;
    let user = app.store.user_by_id(id)?.ok_or(WebError::NotFound)?;
    if req.session.as_ref().map(|s| s.record.user_id) == Some(id) {
        return Ok(redirect_with_flash(
            "/users",
            Flash::warning("You cannot remove your own account. Ask another admin to do it."),
        ));
    }
    if app.store.admin_count()? <= 1 {
        return Ok(redirect_with_flash(
            "/users",
            Flash::warning("Orchard needs at least one admin account."),
        ));
    }
    app.store.delete_user(&user)?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "removed admin account",
        &user.username,
    )?;
    app.store.flush().await?;
    Ok(redirect_with_flash(
        "/users",
        Flash::success(format!("Admin account {} removed.", user.username)),
    ))
}
