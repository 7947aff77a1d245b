//! The audit log: who did what to which object, when. [`record`] is for every module; the
//! "Audit log" page lists events newest first.

use ::http::Method;
use askama::Template;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::fmt::Date;
use super::response::{Chrome, render};
use super::routes::{Nav, Routes};
use super::storage::WebStore;
use super::{App, Req, WebResult};
use crate::clock::Clock;
use crate::store::{Store, StoreError};

const PAGE_SIZE: usize = 50;

/// One audited action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who: an admin's username, "API key NAME", "system", or "anonymous (ADDRESS)".
    pub actor: String,
    /// What, as a short sentence fragment: "signed in", "created admin", "uploaded server token".
    pub action: String,
    /// To what: a username, a serial number, a token name (may be empty).
    pub object: String,
}

/// Records an event now. Failing to audit is reported to the caller, who decides whether the
/// action may stand without it.
pub fn record(
    store: &Store,
    clock: &dyn Clock,
    actor: &str,
    action: &str,
    object: &str,
) -> Result<(), StoreError> {
    let event = AuditEvent {
        at: clock.now(),
        actor: actor.to_string(),
        action: action.to_string(),
        object: object.to_string(),
    };
    tracing::info!(actor, action, object, "audit");
    store.append_audit(&event)
}

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Audit, "/audit");
    r.page(Method::GET, "/audit", page);
}

struct Row {
    at: Date,
    actor: String,
    action: String,
    object: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<Row>,
    next: Option<String>,
    first_page: bool,
}

async fn page(app: App, req: Req) -> WebResult {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A bad cursor just shows the first page.
    let from = req.query("from").and_then(|c| b64.decode(c).ok());
    let (events, next) = app.store.audit_page(from.as_deref(), PAGE_SIZE)?;
    let rows = events
        .into_iter()
        .map(|e| Row {
            at: Date(e.at),
            actor: e.actor,
            action: e.action,
            object: e.object,
        })
        .collect();
    render(&AuditPage {
        chrome: Chrome::new(&req, "Audit log"),
        rows,
        next: next.map(|n| b64.encode(n)),
        first_page: from.is_none(),
    })
}
