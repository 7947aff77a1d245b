//! Signing in and out of the admin UI.

use ::http::{Method, StatusCode};
use askama::Template;

use super::accounts::{self, SignInError};
use super::audit;
use super::forms::{Field, Fields};
use super::response::{Chrome, Flash, redirect, redirect_with_flash, render, render_status};
use super::routes::Routes;
use super::session;
use super::{App, Req, WebError, WebResult};

pub fn routes(r: &mut Routes) {
    r.public(Method::GET, "/signin", show);
    r.public(Method::POST, "/signin", submit);
    r.page(Method::POST, "/signout", sign_out);
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    chrome: Chrome,
    form: Fields,
    next: String,
    problem: Option<String>,
}

fn fields() -> Fields {
    Fields::new(vec![
        Field::text("username", "Username").autocomplete("username"),
        Field::password("password", "Password").autocomplete("current-password"),
    ])
}

/// Only a local path may be the target after sign-in.
fn safe_next(next: Option<String>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n,
        _ => "/".into(),
    }
}

async fn show(_app: App, req: Req) -> WebResult {
    let next = safe_next(req.query("next"));
    if req.session.is_some() {
        return Ok(redirect(&next));
    }
    render(&SignInPage {
        chrome: Chrome::new(&req, "Sign in to Orchard"),
        form: fields(),
        next,
        problem: None,
    })
}

async fn submit(app: App, req: Req) -> WebResult {
    let form = req.form();
    let next = safe_next(form.get("next"));
    let mut fields = fields().keep(form);
    let username = form.text("username");
    let password = form.get("password").unwrap_or_default();
    if username.is_empty() {
        fields.error("username", "Enter your username");
    }
    if password.is_empty() {
        fields.error("password", "Enter your password");
    }
    let mut problem = None;
    if !fields.has_errors() {
        match accounts::sign_in(&app, &username, &password, req.client_addr().ip()).await {
            Ok(user) => {
                let token = session::create(&app, &user)?;
                audit::record(
                    &app.store,
                    app.clock.as_ref(),
                    &user.username,
                    "signed in",
                    "",
                )?;
                req.set_cookie(session::cookie(session::SESSION_COOKIE, &token));
                return Ok(redirect(&next));
            }
            Err(e @ (SignInError::Wrong | SignInError::Throttled { .. })) => {
                let actor = format!("anonymous ({})", req.client_addr().ip());
                audit::record(
                    &app.store,
                    app.clock.as_ref(),
                    &actor,
                    "failed to sign in as",
                    &username,
                )?;
                problem = Some(e.to_string());
            }
            Err(SignInError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(WebError::Internal(e.to_string())),
        }
    }
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &SignInPage {
            chrome: Chrome::new(&req, "Sign in to Orchard"),
            form: fields,
            next,
            problem,
        },
    )
}

async fn sign_out(app: App, req: Req) -> WebResult {
    if let Some(s) = &req.session {
        session::destroy(&app, s)?;
        audit::record(
            &app.store,
            app.clock.as_ref(),
            &s.record.username,
            "signed out",
            "",
        )?;
    }
    req.set_cookie(session::clear_cookie(session::SESSION_COOKIE));
    Ok(redirect_with_flash(
        "/signin",
        Flash::info("You are signed out."),
    ))
}
