//! The Sync page: per server token, the run under way (updating live), the Sync button with its
//! 15-minute rule, when the next sync is due, and the history of runs with each error's fix.

use ::http::{Method, StatusCode};
use askama::Template;
use serde::Serialize;

use super::fmt::{Date, count};
use super::response::{Chrome, Flash, json, redirect_with_flash, render};
use super::routes::{Nav, Routes};
use super::{App, Req, WebError, WebResult};
use crate::ade::sync::{self, Kind, Outcome, SyncError, SyncRun, SyncState};

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Sync, "/sync");
    r.page(Method::GET, "/sync", page);
    r.page(Method::GET, "/sync/live", live_page);
    r.page(Method::POST, "/sync/{token}", sync_now);
    r.api(Method::GET, "/api/v1/sync", api_status);
    r.api(Method::POST, "/api/v1/sync/{token}", api_sync_now);
}

/// `(token id, name shown to admins)` for every token.
pub fn token_names(app: &App) -> Vec<(String, String)> {
    app.tokens
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| {
            let id = t.id?;
            let name = if t.org_name.is_empty() {
                t.server_name.clone()
            } else {
                format!("{} ({})", t.server_name, t.org_name)
            };
            Some((id.0.to_string(), name))
        })
        .collect()
}

struct RunRow {
    kind: &'static str,
    trigger: &'static str,
    started: Date,
    duration: String,
    added: String,
    modified: String,
    removed: String,
    outcome: Outcome,
    error: Option<String>,
    error_code: Option<String>,
}

impl RunRow {
    fn of(run: &SyncRun) -> RunRow {
        RunRow {
            kind: match run.kind {
                Kind::Full => "Full",
                Kind::Incremental => "Incremental",
            },
            trigger: match run.trigger {
                sync::Trigger::Start => "At start",
                sync::Trigger::Schedule => "Every 24 hours",
                sync::Trigger::Button => "Sync button",
            },
            started: Date(run.started_at),
            duration: run
                .duration()
                .map(human_duration)
                .unwrap_or_else(|| "—".into()),
            added: thousands(run.added),
            modified: thousands(run.modified),
            removed: thousands(run.removed),
            outcome: run.outcome,
            error: run.error.clone(),
            error_code: run.error_code.clone(),
        }
    }
}

/// The live part of one token's panel: the run under way, or the button.
#[derive(Serialize)]
struct Live {
    token: String,
    running: bool,
    kind: Option<&'static str>,
    pages: u32,
    devices: u32,
    added: u32,
    modified: u32,
    removed: u32,
    /// When the button may be used again, if not now.
    available_at: Option<String>,
    next_sync: Option<String>,
    last_ok: Option<String>,
    last_error: Option<String>,
}

/// 1204 → "1,204", for a run's counts.
fn thousands(n: u32) -> String {
    count(usize::try_from(n).unwrap_or(usize::MAX))
}

impl Live {
    /// What the run under way has done, as `static/sync.js` also writes it: "Incremental sync:
    /// 3 pages, 1,204 devices so far (1,200 added, 4 changed, 0 removed)."
    fn progress(&self) -> String {
        format!(
            "{}: {} pages, {} devices so far ({} added, {} changed, {} removed).",
            self.kind.unwrap_or("Sync"),
            thousands(self.pages),
            thousands(self.devices),
            thousands(self.added),
            thousands(self.modified),
            thousands(self.removed)
        )
    }
}

struct Panel {
    token: String,
    name: String,
    devices: String,
    live: Live,
    available_at: Option<Date>,
    next_sync: Option<Date>,
    last_ok: Option<Date>,
    last_full: Option<Date>,
    runs: Vec<RunRow>,
}

#[derive(Template)]
#[template(path = "sync/page.html")]
struct SyncPage {
    chrome: Chrome,
    panels: Vec<Panel>,
}

fn live_of(app: &App, token: &str, state: &SyncState) -> Live {
    let now = app.clock.now();
    let settings = app.sync.settings();
    let progress = app.sync.progress(token).and_then(|p| p.running);
    let running = app.sync.is_running(token) || progress.is_some();
    let run = progress
        .unwrap_or_else(|| SyncRun::started(token, Kind::Incremental, sync::Trigger::Button, now));
    Live {
        token: token.to_string(),
        running,
        kind: running.then_some(match run.kind {
            Kind::Full => "Full sync",
            Kind::Incremental => "Incremental sync",
        }),
        pages: run.pages,
        devices: run.devices,
        added: run.added,
        modified: run.modified,
        removed: run.removed,
        available_at: state
            .button_available_at(now, settings)
            .map(|t| Date(t).exact()),
        next_sync: state.next_scheduled(settings).map(|t| Date(t).exact()),
        last_ok: state.last_ok_at.map(|t| Date(t).exact()),
        last_error: state.last_error.clone(),
    }
}

fn panels(app: &App) -> Result<Vec<Panel>, WebError> {
    let now = app.clock.now();
    let settings = app.sync.settings();
    let mut out = Vec::new();
    for (token, name) in token_names(app) {
        let state = sync::state(&app.store, &token)?;
        let runs = sync::runs(&app.store, &token, 20)?
            .iter()
            .map(RunRow::of)
            .collect();
        out.push(Panel {
            devices: count(app.inventory.count_for_token(&token)),
            live: live_of(app, &token, &state),
            available_at: state.button_available_at(now, settings).map(Date),
            next_sync: state.next_scheduled(settings).map(Date),
            last_ok: state.last_ok_at.map(Date),
            last_full: state.last_full_at.map(Date),
            token,
            name,
            runs,
        });
    }
    Ok(out)
}

async fn page(app: App, req: Req) -> WebResult {
    render(&SyncPage {
        chrome: Chrome::new(&req, "Sync devices from Apple"),
        panels: panels(&app)?,
    })
}

/// JSON the page's script polls to update progress without a reload.
fn live_json(app: &App) -> Result<Vec<Live>, WebError> {
    let mut out = Vec::new();
    for (token, _) in token_names(app) {
        let state = sync::state(&app.store, &token)?;
        out.push(live_of(app, &token, &state));
    }
    Ok(out)
}

async fn live_page(app: App, _req: Req) -> WebResult {
    Ok(json(StatusCode::OK, &live_json(&app)?))
}

fn refusal(e: SyncError) -> WebError {
    match e {
        SyncError::Running => WebError::Conflict(
            "A sync is already running for this token: wait for it to finish.".into(),
        ),
        SyncError::TooSoon(at) => WebError::Conflict(format!(
            "The Sync button can be used once every 15 minutes: try again after {}.",
            Date(at).exact()
        )),
        SyncError::UnknownToken => WebError::NotFound,
        other => WebError::Internal(other.to_string()),
    }
}

async fn sync_now(app: App, req: Req) -> WebResult {
    let token = req.param("token")?.to_string();
    match app.sync.sync_now(&token) {
        Ok(()) => {
            super::audit::record(
                &app.store,
                app.clock.as_ref(),
                &req.actor(),
                "started a sync",
                &token,
            )?;
            Ok(redirect_with_flash(
                "/sync",
                Flash::success(
                    "Sync started. This page shows its progress; devices appear on the Devices page as they arrive.",
                ),
            ))
        }
        Err(e) => {
            let message = refusal(e).to_string();
            Ok(redirect_with_flash("/sync", Flash::warning(message)))
        }
    }
}

async fn api_status(app: App, _req: Req) -> WebResult {
    Ok(json(StatusCode::OK, &live_json(&app)?))
}

async fn api_sync_now(app: App, req: Req) -> WebResult {
    let token = req.param("token")?.to_string();
    app.sync.sync_now(&token).map_err(refusal)?;
    super::audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "started a sync",
        &token,
    )?;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "started": true }),
    ))
}

fn human_duration(d: time::Duration) -> String {
    let secs = d.whole_seconds().max(0);
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(time::Duration::seconds(42)), "42 s");
        assert_eq!(human_duration(time::Duration::seconds(125)), "2 min 5 s");
        assert_eq!(human_duration(time::Duration::seconds(7260)), "2 h 1 min");
    }
}
