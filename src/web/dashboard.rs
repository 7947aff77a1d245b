//! The dashboard: what Orchard is doing and what needs attention. Features add their panels here.

use ::http::Method;
use askama::Template;

use super::audit::AuditEvent;
use super::fmt::{self, Date};
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

struct StateRow {
    state: &'static str,
    label: &'static str,
    count: String,
}

struct TokenRow {
    id: String,
    name: String,
    days_left: i64,
    expires: Date,
    last_sync: Option<Date>,
    next_sync: Option<Date>,
    error: Option<String>,
}

/// One bar of the "devices added" chart: a week.
struct Bar {
    x: usize,
    y: usize,
    height: usize,
    label: String,
    count: usize,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    public_url: String,
    ca_fingerprint: String,
    admins: usize,
    recent: Vec<RecentRow>,
    total: String,
    states: Vec<StateRow>,
    tokens: Vec<TokenRow>,
    bars: Vec<Bar>,
    chart_summary: String,
}

/// Weeks shown in the chart.
const WEEKS: usize = 12;
const CHART_HEIGHT: usize = 120;
const BAR_WIDTH: usize = 40;

/// Devices first seen per week, the last [`WEEKS`] weeks, oldest first.
fn weekly_bars(app: &App) -> (Vec<Bar>, String) {
    let now = app.clock.now();
    let mut counts = [0usize; WEEKS];
    for (seen, _) in app.inventory.first_seen_dates() {
        let weeks_ago = (now - seen).whole_weeks();
        if (0..WEEKS as i64).contains(&weeks_ago) {
            counts[WEEKS - 1 - weeks_ago as usize] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let height = count * CHART_HEIGHT / max;
            let week_start = now - time::Duration::weeks((WEEKS - 1 - i) as i64);
            Bar {
                x: i * (BAR_WIDTH + 8),
                y: CHART_HEIGHT - height,
                height,
                label: Date(week_start).day(),
                count,
            }
        })
        .collect();
    let total: usize = counts.iter().sum();
    let summary = format!(
        "{} devices were added in the last {WEEKS} weeks; the busiest week added {}.",
        fmt::count(total),
        fmt::count(counts.iter().copied().max().unwrap_or(0))
    );
    (bars, summary)
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
    let states = app
        .inventory
        .counts()
        .into_iter()
        .map(|(state, n)| StateRow {
            state: state.as_str(),
            label: state.label(),
            count: fmt::count(n),
        })
        .collect();
    let settings = app.sync.settings();
    let mut tokens = Vec::new();
    for view in app.tokens.list().unwrap_or_default() {
        let Some(id) = view.id else { continue };
        let id = id.0.to_string();
        let state = crate::ade::sync::state(&app.store, &id)?;
        tokens.push(TokenRow {
            name: view.server_name.clone(),
            days_left: view.days_left,
            expires: Date(view.expires_at),
            last_sync: state.last_ok_at.map(Date),
            next_sync: state.next_scheduled(settings).map(Date),
            error: state.last_error.clone(),
            id,
        });
    }
    let (bars, chart_summary) = weekly_bars(&app);
    render(&Dashboard {
        chrome: Chrome::new(&req, "Dashboard"),
        public_url: app.public_url.to_string(),
        ca_fingerprint: app.ca.fingerprint(),
        admins: app.store.admin_count()?,
        recent,
        total: fmt::count(app.inventory.len()),
        states,
        tokens,
        bars,
        chart_summary,
    })
}
