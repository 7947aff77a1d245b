//! The Devices pages: the searchable inventory (filters, sort, pages, selection, CSV export), a
//! device's detail and history, and deleting devices from Orchard. API endpoints beside them.

use ::http::{Method, StatusCode};
use askama::Template;
use bytes::Bytes;
use serde::Serialize;

use super::fmt::{Date, count};
use super::response::{Chrome, Flash, json, redirect_with_flash, render, render_status, with_body};
use super::routes::{Nav, Routes};
use super::{App, Req, WebError, WebResult};
use crate::ade::inventory::{Device, DeviceState, Page, Query, Removed, SortKey, Summary};

/// Rows per page unless the admin asks for another size.
const PER_PAGE: usize = 50;
/// Most devices one bulk action takes.
const MAX_SELECTION: usize = 100_000;

pub fn routes(r: &mut Routes) {
    r.nav(Nav::Devices, "/devices");
    r.page(Method::GET, "/devices", list);
    r.page(Method::GET, "/devices.csv", csv);
    r.page(Method::POST, "/devices/delete", delete_confirm);
    r.page(Method::POST, "/devices/delete/confirmed", delete_confirmed);
    r.page(Method::GET, "/devices/{serial}", detail);
    r.api(Method::GET, "/api/v1/devices", api_list);
    r.api(Method::GET, "/api/v1/devices/{serial}", api_get);
    r.api(Method::DELETE, "/api/v1/devices/{serial}", api_delete);
}

/// Reads the Devices query from a query string or form (the same names in both).
fn query_from(get: impl Fn(&str) -> Option<String>) -> Query {
    let page = get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page = get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(PER_PAGE);
    let non_empty = |name: &str| {
        get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Query {
        search: non_empty("q").unwrap_or_default(),
        token_id: non_empty("token"),
        profile_name: non_empty("profile"),
        state: non_empty("state").and_then(|s| DeviceState::parse(&s)),
        removed: match non_empty("removed").as_deref() {
            Some("exclude") => Removed::Exclude,
            Some("only") => Removed::Only,
            _ => Removed::Include,
        },
        sort: non_empty("sort")
            .and_then(|s| SortKey::parse(&s))
            .unwrap_or_default(),
        descending: non_empty("dir").as_deref() == Some("desc"),
        page,
        per_page,
    }
}

/// The query as URL parameters, for links that keep it (pages, sort headers, CSV).
fn query_string(q: &Query, page: usize, sort: SortKey, descending: bool) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    if !q.search.is_empty() {
        s.append_pair("q", &q.search);
    }
    if let Some(t) = &q.token_id {
        s.append_pair("token", t);
    }
    if let Some(p) = &q.profile_name {
        s.append_pair("profile", p);
    }
    if let Some(st) = q.state {
        s.append_pair("state", st.as_str());
    }
    match q.removed {
        Removed::Include => {}
        Removed::Exclude => {
            s.append_pair("removed", "exclude");
        }
        Removed::Only => {
            s.append_pair("removed", "only");
        }
    }
    if sort != SortKey::Serial {
        s.append_pair("sort", sort.as_str());
    }
    if descending {
        s.append_pair("dir", "desc");
    }
    if page > 1 {
        s.append_pair("page", &page.to_string());
    }
    if q.per_page != PER_PAGE {
        s.append_pair("per_page", &q.per_page.to_string());
    }
    s.finish()
}

/// A row of the devices table, ready for the template.
struct Row {
    serial: String,
    model: String,
    description: String,
    color: String,
    os: String,
    removed: Option<Date>,
    profile_status: String,
    profile_name: String,
    state: DeviceState,
    user: String,
    last_checkin: Option<Date>,
}

impl Row {
    fn of(s: &Summary) -> Row {
        Row {
            serial: s.serial.clone(),
            model: s.model.clone(),
            description: s.description.clone(),
            color: s.color.clone(),
            os: s.os.clone(),
            removed: s.removed_at.map(Date),
            profile_status: profile_status_label(&s.profile_status).to_string(),
            profile_name: s.profile_name.clone().unwrap_or_default(),
            state: s.state,
            user: s.user.clone().unwrap_or_default(),
            last_checkin: s.last_checkin.map(Date),
        }
    }
}

/// A sortable column header.
struct Column {
    label: &'static str,
    href: String,
    /// `ascending`, `descending` or `none`, for `aria-sort`.
    aria_sort: &'static str,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "devices/list.html")]
struct ListPage {
    chrome: Chrome,
    q: String,
    matching: String,
    matching_n: usize,
    total: String,
    rows: Vec<Row>,
    columns: Vec<Column>,
    tokens: Vec<Choice>,
    states: Vec<Choice>,
    removed: Vec<Choice>,
    profiles: Vec<Choice>,
    page: usize,
    pages: usize,
    prev_href: Option<String>,
    next_href: Option<String>,
    csv_href: String,
    /// The query again, as hidden fields of the bulk form.
    hidden: Vec<(String, String)>,
}

async fn list(app: App, req: Req) -> WebResult {
    let q = query_from(|n| req.query(n));
    let page = app.inventory.query(&q);
    render(&list_page(&app, &req, &q, &page))
}

fn list_page(app: &App, req: &Req, q: &Query, page: &Page) -> ListPage {
    let columns = [
        (SortKey::Serial, "Serial number"),
        (SortKey::Model, "Model"),
        (SortKey::Description, "Description"),
        (SortKey::State, "State"),
        (SortKey::User, "User"),
        (SortKey::LastCheckin, "Last check-in"),
    ]
    .into_iter()
    .map(|(key, label)| {
        let current = q.sort == key;
        // A click on the current column flips the direction; on another, sorts ascending.
        let descending = current && !q.descending;
        Column {
            label,
            href: format!("/devices?{}", query_string(q, 1, key, descending)),
            aria_sort: match (current, q.descending) {
                (false, _) => "none",
                (true, false) => "ascending",
                (true, true) => "descending",
            },
        }
    })
    .collect();
    let token_choices = super::sync::token_names(app)
        .into_iter()
        .map(|(id, name)| Choice {
            selected: q.token_id.as_deref() == Some(id.as_str()),
            value: id,
            label: name,
        })
        .collect();
    let states = DeviceState::ALL
        .into_iter()
        .map(|s| Choice {
            value: s.as_str().into(),
            label: s.label().into(),
            selected: q.state == Some(s),
        })
        .collect();
    let removed = [
        ("", "Include removed devices"),
        ("exclude", "Hide removed devices"),
        ("only", "Only removed devices"),
    ]
    .into_iter()
    .map(|(v, l)| Choice {
        value: v.into(),
        label: l.into(),
        selected: matches!(
            (v, q.removed),
            ("", Removed::Include) | ("exclude", Removed::Exclude) | ("only", Removed::Only)
        ),
    })
    .collect();
    let profiles = app
        .inventory
        .profile_names()
        .into_iter()
        .map(|name| Choice {
            selected: q.profile_name.as_deref() == Some(name.as_str()),
            value: name.clone(),
            label: name,
        })
        .collect();
    let link = |p: usize| format!("/devices?{}", query_string(q, p, q.sort, q.descending));
    let mut hidden = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query_string(q, 1, q.sort, q.descending).as_bytes()) {
        hidden.push((k.into_owned(), v.into_owned()));
    }
    ListPage {
        chrome: Chrome::new(req, "Devices"),
        q: q.search.clone(),
        matching: count(page.matching),
        matching_n: page.matching,
        total: count(app.inventory.len()),
        rows: page.rows.iter().map(|s| Row::of(s)).collect(),
        columns,
        tokens: token_choices,
        states,
        removed,
        profiles,
        page: page.page,
        pages: page.pages,
        prev_href: (page.page > 1).then(|| link(page.page - 1)),
        next_href: (page.page < page.pages).then(|| link(page.page + 1)),
        csv_href: format!("/devices.csv?{}", query_string(q, 1, q.sort, q.descending)),
        hidden,
    }
}

/// The CSV export of every device the current view matches (all pages).
async fn csv(app: App, req: Req) -> WebResult {
    let rows = app.inventory.matching(&query_from(|n| req.query(n)));
    let mut out = String::from(
        "serial_number,model,description,color,os,state,profile_status,profile_name,user,last_checkin,removed_at\r\n",
    );
    for s in &rows {
        let fields = [
            s.serial.as_str(),
            &s.model,
            &s.description,
            &s.color,
            &s.os,
            s.state.as_str(),
            &s.profile_status,
            s.profile_name.as_deref().unwrap_or(""),
            s.user.as_deref().unwrap_or(""),
            &s.last_checkin.map(|d| Date(d).iso()).unwrap_or_default(),
            &s.removed_at.map(|d| Date(d).iso()).unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    let mut resp = with_body(StatusCode::OK, "text/csv; charset=utf-8", Bytes::from(out));
    resp.headers_mut().insert(
        ::http::header::CONTENT_DISPOSITION,
        ::http::HeaderValue::from_static("attachment; filename=\"orchard-devices.csv\""),
    );
    Ok(resp)
}

/// Quotes a CSV field, and defuses values a spreadsheet would run as a formula.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The serials a bulk form chose: the ticked rows, or everything the filter matches.
pub(super) fn selection(app: &App, req: &Req) -> Result<Vec<String>, WebError> {
    let form = req.form();
    let serials = if form.text("all_matching") == "yes" {
        app.inventory.matching_serials(&query_from(|n| form.get(n)))
    } else {
        form.all("serial")
    };
    if serials.is_empty() {
        return Err(WebError::BadRequest(
            "No devices were selected: tick the devices to act on, or choose “Select all devices that match”.".into(),
        ));
    }
    if serials.len() > MAX_SELECTION {
        return Err(WebError::BadRequest(format!(
            "{} devices were selected; one action takes at most {}. Narrow the search first.",
            count(serials.len()),
            count(MAX_SELECTION)
        )));
    }
    Ok(serials)
}

#[derive(Template)]
#[template(path = "devices/delete.html")]
struct DeletePage {
    chrome: Chrome,
    count: String,
    count_n: usize,
    serials: Vec<String>,
    shown: Vec<String>,
    error: Option<String>,
    still_assigned: usize,
}

fn delete_page(req: &Req, app: &App, serials: Vec<String>, error: Option<String>) -> DeletePage {
    let still_assigned = serials
        .iter()
        .filter_map(|s| app.inventory.get(s).ok().flatten())
        .filter(|d| d.token_id.is_some() && d.removed_at.is_none())
        .count();
    DeletePage {
        chrome: Chrome::new(req, "Delete devices from Orchard"),
        count: count(serials.len()),
        count_n: serials.len(),
        shown: serials.iter().take(20).cloned().collect(),
        serials,
        error,
        still_assigned,
    }
}

/// Step 1 of a delete: say what will happen and ask for the count to be typed.
async fn delete_confirm(app: App, req: Req) -> WebResult {
    let serials = selection(&app, &req)?;
    render(&delete_page(&req, &app, serials, None))
}

/// Step 2: the admin typed the count; delete.
async fn delete_confirmed(app: App, req: Req) -> WebResult {
    let form = req.form();
    let serials = form.all("serial");
    if serials.is_empty() || serials.len() > MAX_SELECTION {
        return Err(WebError::BadRequest("No devices were selected.".into()));
    }
    let typed = form.text("confirm");
    if typed.replace(',', "") != serials.len().to_string() {
        let error = format!(
            "Type the number of devices, {}, to confirm. Nothing was deleted.",
            serials.len()
        );
        let page = delete_page(&req, &app, serials, Some(error));
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let n = app.inventory.delete(&serials, app.clock.now())?;
    app.store.flush().await?;
    let what = if n == 1 {
        serials[0].clone()
    } else {
        format!("{n} devices")
    };
    super::audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "deleted from Orchard",
        &what,
    )?;
    Ok(redirect_with_flash(
        "/devices",
        Flash::success(format!(
            "{} deleted from Orchard. Devices still assigned in Apple School Manager come back with the next full sync.",
            if n == 1 {
                "1 device".to_string()
            } else {
                format!("{} devices", count(n))
            }
        )),
    ))
}

struct Field {
    label: &'static str,
    value: String,
}

struct HistoryRow {
    at: Date,
    what: String,
}

#[derive(Template)]
#[template(path = "devices/detail.html")]
struct DetailPage {
    chrome: Chrome,
    serial: String,
    state: DeviceState,
    removed: Option<Date>,
    purge_on: Option<Date>,
    apple: Vec<Field>,
    orchard: Vec<Field>,
    history: Vec<HistoryRow>,
    token_name: String,
    management: super::mdm::Management,
}

async fn detail(app: App, req: Req) -> WebResult {
    let serial = req.param("serial")?.to_string();
    let device = app.inventory.get(&serial)?.ok_or(WebError::NotFound)?;
    let history = app
        .inventory
        .history(&serial)?
        .into_iter()
        .map(|h| HistoryRow {
            at: Date(h.at),
            what: h.what,
        })
        .collect();
    let date =
        |d: Option<time::OffsetDateTime>| d.map(|d| Date(d).exact()).unwrap_or_else(|| "—".into());
    let text = |s: &str| {
        if s.is_empty() {
            "—".to_string()
        } else {
            s.to_string()
        }
    };
    let apple = vec![
        Field {
            label: "Serial number",
            value: device.serial.clone(),
        },
        Field {
            label: "Model",
            value: text(&device.model),
        },
        Field {
            label: "Description",
            value: text(&device.description),
        },
        Field {
            label: "Colour",
            value: text(&device.color),
        },
        Field {
            label: "Asset tag",
            value: text(&device.asset_tag),
        },
        Field {
            label: "Operating system",
            value: text(&device.os),
        },
        Field {
            label: "Device family",
            value: text(&device.device_family),
        },
        Field {
            label: "Profile status",
            value: profile_status_label(&device.profile_status).to_string(),
        },
        Field {
            label: "Profile UUID",
            value: device.profile_uuid.clone().unwrap_or_else(|| "—".into()),
        },
        Field {
            label: "Profile assigned",
            value: date(device.profile_assign_time),
        },
        Field {
            label: "Profile pushed",
            value: date(device.profile_push_time),
        },
        Field {
            label: "Assigned to this MDM server",
            value: date(device.device_assigned_date),
        },
        Field {
            label: "Assigned by",
            value: text(&device.device_assigned_by),
        },
    ];
    let orchard = vec![
        Field {
            label: "Enrollment profile",
            value: device.profile_name.clone().unwrap_or_else(|| "—".into()),
        },
        Field {
            label: "User",
            value: device.user.clone().unwrap_or_else(|| "—".into()),
        },
        Field {
            label: "UDID",
            value: device.udid.clone().unwrap_or_else(|| "—".into()),
        },
        Field {
            label: "Enrolled",
            value: date(device.enrolled_at),
        },
        Field {
            label: "Last check-in",
            value: date(device.last_checkin),
        },
        Field {
            label: "First seen by Orchard",
            value: date(Some(device.first_seen)),
        },
        Field {
            label: "Last change",
            value: date(Some(device.updated_at)),
        },
    ];
    let token_name = device
        .token_id
        .as_deref()
        .map(|id| {
            super::sync::token_names(&app)
                .into_iter()
                .find(|(t, _)| t == id)
                .map(|(_, n)| n)
                .unwrap_or_else(|| id.to_string())
        })
        .unwrap_or_else(|| "Enrolled by hand (not in Apple School Manager)".into());
    let purge_on = device
        .removed_at
        .map(|at| Date(at + app.sync.settings().removed_grace));
    render(&DetailPage {
        chrome: Chrome::new(&req, format!("Device {}", device.serial)),
        serial: device.serial.clone(),
        state: device.state(),
        removed: device.removed_at.map(Date),
        purge_on,
        apple,
        orchard,
        history,
        token_name,
        management: super::mdm::management(&app, &device)?,
    })
}

fn profile_status_label(status: &str) -> &'static str {
    match status {
        "assigned" => "Assigned",
        "pushed" => "Pushed to the device",
        "removed" => "Removed",
        "empty" | "" => "No profile",
        _ => "Unknown",
    }
}

/// The API's view of a device.
#[derive(Serialize)]
struct ApiDevice<'a> {
    #[serde(flatten)]
    device: &'a Device,
    state: DeviceState,
}

#[derive(Serialize)]
struct ApiList<'a> {
    matching: usize,
    page: usize,
    pages: usize,
    per_page: usize,
    devices: Vec<&'a Summary>,
}

async fn api_list(app: App, req: Req) -> WebResult {
    let q = query_from(|n| req.query(n));
    let page = app.inventory.query(&q);
    Ok(json(
        StatusCode::OK,
        &ApiList {
            matching: page.matching,
            page: page.page,
            pages: page.pages,
            per_page: page.per_page,
            devices: page.rows.iter().map(|r| r.as_ref()).collect(),
        },
    ))
}

async fn api_get(app: App, req: Req) -> WebResult {
    let device = app
        .inventory
        .get(req.param("serial")?)?
        .ok_or(WebError::NotFound)?;
    Ok(json(
        StatusCode::OK,
        &ApiDevice {
            state: device.state(),
            device: &device,
        },
    ))
}

async fn api_delete(app: App, req: Req) -> WebResult {
    let serial = req.param("serial")?.to_string();
    if app
        .inventory
        .delete(std::slice::from_ref(&serial), app.clock.now())?
        == 0
    {
        return Err(WebError::NotFound);
    }
    app.store.flush().await?;
    super::audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "deleted from Orchard",
        &serial,
    )?;
    Ok(with_body(
        StatusCode::NO_CONTENT,
        "text/plain",
        Bytes::new(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips_through_its_url() {
        let q = Query {
            search: "C02 x".into(),
            token_id: Some("t1".into()),
            profile_name: Some("Staff Macs".into()),
            state: Some(DeviceState::Removed),
            removed: Removed::Only,
            sort: SortKey::Model,
            descending: true,
            page: 3,
            per_page: 25,
        };
        let s = query_string(&q, 3, q.sort, q.descending);
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(s.as_bytes())
            .into_owned()
            .collect();
        let back = query_from(|n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()));
        assert_eq!(back, q);
    }

    #[test]
    fn bad_query_values_fall_back_to_defaults() {
        let q = query_from(|n| match n {
            "state" => Some("bogus".into()),
            "sort" => Some("nope".into()),
            "page" => Some("-1".into()),
            _ => None,
        });
        assert_eq!(q.state, None);
        assert_eq!(q.sort, SortKey::Serial);
        assert_eq!(q.page, 1);
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
