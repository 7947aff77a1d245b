//! The dashboard: what Orchard is doing and what needs attention. Features add their panels here.

use ::http::Method;
use askama::Template;

use super::audit::AuditEvent;
use super::fmt::Date;
use super::response::{Chrome, render};
use super::routes::{Nav, Routes};
use super::storage::WebStore;
use super::{App, Req, WebResult};

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Dashboard, "/");
    r.page(Method::GET, "/", page);
}

struct RecentRow {
    at: Date,
    actor: String,
    action: String,
    object: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    public_url: String,
    ca_fingerprint: String,
    admins: usize,
    recent: Vec<RecentRow>,
}

async fn page(app: App, req: Req) -> WebResult {
    let (events, _) = app.store.audit_page(None, 5)?;
    let recent = events
        .into_iter()
        .map(|e: AuditEvent| RecentRow {
            at: Date(e.at),
            actor: e.actor,
            action: e.action,
            object: e.object,
        })
        .collect();
    render(&Dashboard {
        chrome: Chrome::new(&req, "Dashboard"),
        public_url: app.public_url.to_string(),
        ca_fingerprint: app.ca.fingerprint(),
        admins: app.store.admin_count()?,
        recent,
    })
}
