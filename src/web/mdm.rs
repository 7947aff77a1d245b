//! MDM on the web: the device endpoints (`/scep`, `/mdm/checkin`, `/mdm/connect`, the one-time
//! enrollment download `/enroll/{id}`), the Enroll page (manual enrollment), the Management
//! section of a device's page (its enrollment, commands to send and their results), bulk commands
//! on a selection of the Devices page, and the API beside them.
//!
//! Every device answer that follows a write is sent only after the store is flushed.

use ::http::{Method, StatusCode};
use askama::Template;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::audit;
use super::fmt::Date;
use super::response::{self, Chrome, Flash, redirect_with_flash, render, with_body};
use super::routes::Routes;
use super::{App, Form, Req, WebError, WebResult};
use crate::ade::inventory::Device;
use crate::mdm::command::{Command, CommandUuid, ParseError};
use crate::mdm::enroll::{EnrollError, TICKET_LIFETIME};
use crate::mdm::service::{CommandRecord, Enrollment, EnrollmentState, MdmError};

pub fn routes(r: &mut Routes) {
    r.device(Method::GET, "/scep", scep_get);
    r.device(Method::POST, "/scep", scep_post);
    r.device(Method::PUT, "/mdm/checkin", checkin);
    r.device(Method::PUT, "/mdm/connect", connect);
    r.device(Method::GET, "/enroll/{id}", download_profile);
    r.page(Method::GET, "/enroll", enroll_page);
    r.page(Method::POST, "/enroll", enroll_create);
    r.page(Method::POST, "/devices/{serial}/commands", send_command);
    r.upload(Method::POST, "/devices/{serial}/profiles", send_profile);
    r.page(Method::POST, "/devices/commands", bulk_command);
    r.api(Method::POST, "/api/v1/enrollment-links", api_enroll);
    r.api(
        Method::GET,
        "/api/v1/devices/{serial}/commands",
        api_commands,
    );
    r.api(Method::POST, "/api/v1/devices/{serial}/commands", api_send);
}

// ---- Device endpoints ----------------------------------------------------------------------

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WebError::Internal(format!("a worker thread failed: {e}")))
}

async fn scep_get(app: App, req: Req) -> WebResult {
    let query = req.uri.query().unwrap_or_default().to_string();
    let scep = app.mdm.scep.clone();
    let r = blocking(move || scep.get(&query)).await?;
    scep_answer(&app, r).await
}

async fn scep_post(app: App, req: Req) -> WebResult {
    let scep = app.mdm.scep.clone();
    let body = req.body.clone();
    let r = blocking(move || scep.pki_operation(&body)).await?;
    scep_answer(&app, r).await
}

async fn scep_answer(app: &App, r: crate::mdm::scep::ScepResponse) -> WebResult {
    app.store.flush().await?;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    Ok(with_body(status, r.content_type, Bytes::from(r.body)))
}

async fn checkin(app: App, req: Req) -> WebResult {
    device_call(app, req, |mdm, headers, body, chain| {
        mdm.endpoints.checkin(headers, body, chain)
    })
    .await
}

async fn connect(app: App, req: Req) -> WebResult {
    device_call(app, req, |mdm, headers, body, chain| {
        mdm.endpoints.connect(headers, body, chain)
    })
    .await
}

/// Runs one check-in or connect off the async threads, then flushes before answering: the Mac
/// treats a 200 as stored.
async fn device_call(
    app: App,
    req: Req,
    f: impl FnOnce(
        &crate::mdm::runtime::Mdm,
        &::http::HeaderMap,
        &[u8],
        &[Vec<u8>],
    ) -> crate::http::Response
    + Send
    + 'static,
) -> WebResult {
    let mdm = app.mdm.clone();
    let chain: Vec<Vec<u8>> = req.client_certs().iter().map(|c| c.to_vec()).collect();
    let Req { headers, body, .. } = req;
    let resp = blocking(move || f(&mdm, &headers, &body, &chain)).await?;
    if resp.status().is_success() {
        app.store.flush().await?;
    }
    Ok(resp)
}

/// `GET /enroll/{id}`: the one-time enrollment profile of a manual enrollment link.
async fn download_profile(app: App, req: Req) -> WebResult {
    let id = req.param("id")?.to_string();
    let enroller = app.mdm.enroller.clone();
    match blocking(move || enroller.redeem_ticket(&id)).await? {
        Ok(profile) => {
            app.store.flush().await?;
            let mut resp = with_body(
                StatusCode::OK,
                "application/x-apple-aspen-config",
                Bytes::from(profile),
            );
            resp.headers_mut().insert(
                ::http::header::CONTENT_DISPOSITION,
                ::http::HeaderValue::from_static("attachment; filename=\"Orchard.mobileconfig\""),
            );
            Ok(resp)
        }
        Err(e @ (EnrollError::TicketUnusable | EnrollError::NoPushCertificate)) => {
            Err(WebError::Forbidden(sentence(&e.to_string())))
        }
        Err(e) => Err(WebError::Internal(e.to_string())),
    }
}

// ---- Enroll page ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "enroll.html")]
struct EnrollPage {
    chrome: Chrome,
    label: String,
    error: Option<String>,
    has_push_cert: bool,
    link: Option<NewLink>,
    lifetime_hours: i64,
}

struct NewLink {
    url: String,
    label: String,
    expires: Date,
}

async fn enroll_page(app: App, req: Req) -> WebResult {
    let label = req.query("label").unwrap_or_default();
    render(&enroll_view(&app, &req, label, None, None))
}

fn enroll_view(
    app: &App,
    req: &Req,
    label: String,
    error: Option<String>,
    link: Option<NewLink>,
) -> EnrollPage {
    EnrollPage {
        chrome: Chrome::new(req, "Enroll a Mac"),
        label,
        error,
        has_push_cert: app.push_certs.topic().is_some(),
        link,
        lifetime_hours: TICKET_LIFETIME.whole_hours(),
    }
}

async fn enroll_create(app: App, req: Req) -> WebResult {
    let label = req.form().text("label").trim().to_string();
    match new_link(&app, &req, &label).await {
        Ok(link) => render(&enroll_view(&app, &req, String::new(), None, Some(link))),
        Err(LinkError::Person(message)) => response::render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &enroll_view(&app, &req, label, Some(message), None),
        ),
        Err(LinkError::Web(e)) => Err(e),
    }
}

enum LinkError {
    /// Shown to the person beside the form.
    Person(String),
    Web(WebError),
}

impl From<WebError> for LinkError {
    fn from(e: WebError) -> Self {
        LinkError::Web(e)
    }
}

async fn new_link(app: &App, req: &Req, label: &str) -> Result<NewLink, LinkError> {
    let enroller = app.mdm.enroller.clone();
    let (actor, owned) = (req.actor(), label.to_string());
    let made = blocking(move || enroller.new_ticket(&owned, &actor)).await?;
    let (id, ticket) = match made {
        Ok(t) => t,
        Err(e @ (EnrollError::BadLabel | EnrollError::NoPushCertificate)) => {
            return Err(LinkError::Person(sentence(&e.to_string())));
        }
        Err(e) => return Err(LinkError::Web(WebError::Internal(e.to_string()))),
    };
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "made a manual enrollment link",
        &ticket.label,
    )
    .map_err(WebError::from)?;
    app.store.flush().await.map_err(WebError::from)?;
    Ok(NewLink {
        url: app.url(&format!("/enroll/{id}")),
        label: ticket.label,
        expires: Date(ticket.expires_at),
    })
}

/// "the link ..." → "The link ...".
fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---- The Management section of a device page ----------------------------------------------

/// What the device page shows about the Mac's MDM enrollment.
pub struct Management {
    pub serial: String,
    pub enrollment: Option<EnrollmentView>,
    pub commands: Vec<CommandRow>,
    pub has_push_cert: bool,
}

pub struct EnrollmentView {
    pub state: &'static str,
    pub enrolled: bool,
    pub udid: String,
    pub enrolled_at: Date,
    pub last_seen: Date,
    pub identity_expires: Date,
    pub push: &'static str,
    pub bootstrap_token: bool,
    pub awaiting_configuration: bool,
    pub os: String,
    pub name: String,
}

pub struct CommandRow {
    pub request_type: String,
    pub status: &'static str,
    pub tag: &'static str,
    pub queued: Date,
    pub answered: Option<Date>,
    pub result: Option<String>,
    pub errors: Vec<String>,
}

impl From<CommandRecord> for CommandRow {
    fn from(c: CommandRecord) -> Self {
        let (status, tag) = match c.status.as_str() {
            "Queued" => ("Waiting for the Mac", "info"),
            "NotNow" => ("Mac said not now", "warning"),
            "Acknowledged" => ("Done", "success"),
            "Error" => ("Failed", "error"),
            _ => ("Not understood", "error"),
        };
        CommandRow {
            request_type: c.request_type,
            status,
            tag,
            queued: Date(c.queued_at),
            answered: c.answered_at.map(Date),
            result: c.result,
            errors: c.errors,
        }
    }
}

fn enrollment_of(app: &App, serial: &str) -> Result<Option<Enrollment>, WebError> {
    Ok(app.mdm.service().storage().enrollment_by_serial(serial)?)
}

/// The Management section for `device`.
pub fn management(app: &App, device: &Device) -> Result<Management, WebError> {
    let enrollment = enrollment_of(app, &device.serial)?;
    let commands = match &enrollment {
        Some(e) => app
            .mdm
            .service()
            .history(&e.udid)
            .map_err(mdm_internal)?
            .into_iter()
            .map(CommandRow::from)
            .collect(),
        None => Vec::new(),
    };
    Ok(Management {
        serial: device.serial.clone(),
        enrollment: enrollment.map(|e| EnrollmentView {
            state: match e.state {
                EnrollmentState::Authenticated => "Finishing enrollment",
                EnrollmentState::Enrolled => "Enrolled",
                EnrollmentState::CheckedOut => "Unenrolled (the MDM profile was removed)",
            },
            enrolled: e.state == EnrollmentState::Enrolled,
            udid: e.udid.to_string(),
            enrolled_at: Date(e.enrolled_at),
            last_seen: Date(e.last_seen),
            identity_expires: Date(e.cert_not_after),
            push: match (&e.push_token, e.state) {
                (Some(_), _) => "Can be woken through APNs",
                (None, EnrollmentState::Enrolled) => {
                    "APNs reported its push token invalid: it is contacted again when it checks in"
                }
                (None, _) => "No push token yet",
            },
            bootstrap_token: e.bootstrap_token.is_some(),
            awaiting_configuration: e.awaiting_configuration,
            os: e.facts.os_version.clone().unwrap_or_default(),
            name: e.facts.device_name.clone().unwrap_or_default(),
        }),
        commands,
        has_push_cert: app.push_certs.topic().is_some(),
    })
}

fn mdm_internal(e: MdmError) -> WebError {
    WebError::Internal(e.to_string())
}

/// The words for a person when a command's parameters are wrong.
fn parse_message(e: &ParseError) -> String {
    match e {
        ParseError::Malformed { why, .. } => sentence(why),
        other => sentence(&other.to_string()),
    }
}

/// Reads the command a form asks for. EraseDevice needs the serial number typed as confirmation.
fn command_from(form: &Form, serial: &str) -> Result<Command, String> {
    let command = match form.text("command").as_str() {
        "DeviceInformation" => Command::device_information(),
        "SecurityInfo" => Command::SecurityInfo,
        "ProfileList" => Command::ProfileList,
        "InstalledApplicationList" => Command::InstalledApplicationList,
        "RestartDevice" => Command::RestartDevice,
        "ShutDownDevice" => Command::ShutDownDevice,
        "DeviceConfigured" => Command::DeviceConfigured,
        "DeviceLock" => Command::DeviceLock {
            pin: form.text("pin").trim().to_string(),
            message: form.text("message").trim().to_string(),
        },
        "Settings" => Command::SetDeviceName {
            name: form.text("name").trim().to_string(),
        },
        "RemoveProfile" => Command::RemoveProfile {
            identifier: form.text("identifier").trim().to_string(),
        },
        "AccountConfiguration" => Command::AccountConfiguration {
            skip_primary_setup_account_creation: form.get("skip_primary").is_some(),
            set_primary_setup_account_as_regular_user: form.get("regular_user").is_some(),
        },
        "EraseDevice" => {
            if form.text("confirm").trim() != serial {
                return Err(format!(
                    "To erase this Mac, type its serial number {serial} in the box. Nothing was sent."
                ));
            }
            let pin = form.text("pin").trim().to_string();
            Command::EraseDevice {
                pin: (!pin.is_empty()).then_some(pin),
            }
        }
        "" => return Err("Choose a command to send.".into()),
        other => return Err(format!("Orchard does not know the command “{other}”.")),
    };
    command.validate().map_err(|e| parse_message(&e))?;
    Ok(command)
}

/// Why a command was not queued, in words for a person.
enum Refused {
    /// Not enrolled, or too many commands waiting: the admin can act on it.
    Mac(String),
    /// The parameters are wrong.
    Bad(String),
    Internal(String),
}

impl Refused {
    fn message(self) -> String {
        match self {
            Refused::Mac(m) | Refused::Bad(m) | Refused::Internal(m) => m,
        }
    }
}

/// Queues `command` for the enrolled Mac with this serial number and wakes it.
fn enqueue_for(app: &App, serial: &str, command: &Command) -> Result<CommandUuid, Refused> {
    let enrollment = enrollment_of(app, serial)
        .map_err(|e| Refused::Internal(e.to_string()))?
        .filter(|e| e.state == EnrollmentState::Enrolled)
        .ok_or_else(|| {
            Refused::Mac(format!(
                "{serial} is not enrolled, so it cannot receive commands. Enroll it first."
            ))
        })?;
    app.mdm
        .service()
        .enqueue(&enrollment.udid, command)
        .map_err(|e| match e {
            MdmError::QueueFull(_) => Refused::Mac(format!(
                "{serial} already has many commands waiting. Wait until it has answered them (it may be offline)."
            )),
            MdmError::BadRequest(e) => Refused::Bad(parse_message(&e)),
            other => Refused::Internal(other.to_string()),
        })
}

async fn send_command(app: App, req: Req) -> WebResult {
    let serial = req.param("serial")?.to_string();
    let back = format!("/devices/{}#management", urlencode(&serial));
    let command = match command_from(req.form(), &serial) {
        Ok(c) => c,
        Err(message) => return Ok(redirect_with_flash(&back, Flash::warning(message))),
    };
    queue_and_report(&app, &req, &serial, command, &back).await
}

async fn send_profile(app: App, req: Req) -> WebResult {
    let serial = req.param("serial")?.to_string();
    let back = format!("/devices/{}#management", urlencode(&serial));
    let Some(file) = req.form().file("profile").filter(|f| !f.bytes.is_empty()) else {
        return Ok(redirect_with_flash(
            &back,
            Flash::warning("Choose the configuration profile (.mobileconfig) to install."),
        ));
    };
    if let Err(message) = check_profile(&file.bytes) {
        return Ok(redirect_with_flash(&back, Flash::warning(message)));
    }
    let command = Command::InstallProfile {
        payload: file.bytes.to_vec(),
    };
    queue_and_report(&app, &req, &serial, command, &back).await
}

/// A profile is a plist (XML or binary) or a CMS-signed one; anything else is refused here rather
/// than by the Mac.
fn check_profile(bytes: &[u8]) -> Result<(), String> {
    let content = match crate::pki::cms::verify_attached(bytes) {
        Ok((content, _)) => content,
        Err(_) => bytes.to_vec(),
    };
    match plist::Value::from_reader(std::io::Cursor::new(&content)) {
        Ok(plist::Value::Dictionary(d)) if d.contains_key("PayloadContent") || d.contains_key("PayloadIdentifier") => Ok(()),
        _ => Err("That file is not a configuration profile: choose a .mobileconfig file made by Apple Configurator, Profile Creator or another MDM tool.".into()),
    }
}

async fn queue_and_report(
    app: &App,
    req: &Req,
    serial: &str,
    command: Command,
    back: &str,
) -> WebResult {
    let request_type = command.request_type();
    let (a, s, c) = (app.clone(), serial.to_string(), command);
    if let Err(refused) = blocking(move || enqueue_for(&a, &s, &c)).await? {
        return Ok(redirect_with_flash(back, Flash::warning(refused.message())));
    }
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        &format!("sent {request_type}"),
        serial,
    )?;
    app.store.flush().await?;
    Ok(redirect_with_flash(
        back,
        Flash::success(format!(
            "{request_type} is queued for {serial}. Orchard woke the Mac through APNs; the result appears here when it answers."
        )),
    ))
}

/// `POST /devices/commands`: one command to every selected Mac (or every Mac the filter matches).
async fn bulk_command(app: App, req: Req) -> WebResult {
    let form = req.form();
    let back = "/devices";
    let serials = match super::devices::selection(&app, &req) {
        Ok(s) => s,
        Err(WebError::BadRequest(message)) => {
            return Ok(redirect_with_flash(back, Flash::warning(message)));
        }
        Err(e) => return Err(e),
    };
    // Erase is never sent in bulk: each Mac needs its own typed confirmation.
    let command = match form.text("command").as_str() {
        "EraseDevice" => Err("Erase one Mac at a time, from its own page.".to_string()),
        _ => command_from(form, ""),
    };
    let command = match command {
        Ok(c) => c,
        Err(message) => return Ok(redirect_with_flash(back, Flash::warning(message))),
    };
    let request_type = command.request_type();
    let (a, list) = (app.clone(), serials.clone());
    let (sent, skipped) = blocking(move || {
        let mut sent = 0usize;
        let mut skipped = 0usize;
        for serial in &list {
            match enqueue_for(&a, serial, &command) {
                Ok(_) => sent += 1,
                Err(_) => skipped += 1,
            }
        }
        (sent, skipped)
    })
    .await?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        &format!("sent {request_type} in bulk"),
        &format!("{sent} Macs"),
    )?;
    app.store.flush().await?;
    let mut message = format!(
        "{request_type} is queued for {}. Orchard woke them through APNs.",
        super::fmt::count(sent) + if sent == 1 { " Mac" } else { " Macs" }
    );
    if skipped > 0 {
        message.push_str(&format!(
            " {} not enrolled (or with a full queue) got nothing.",
            super::fmt::count(skipped)
        ));
    }
    let flash = if sent == 0 {
        Flash::warning(format!(
            "None of the selected Macs is enrolled, so no {request_type} was sent."
        ))
    } else {
        Flash::success(message)
    };
    Ok(redirect_with_flash(back, flash))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- API -----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct LinkRequest {
    label: String,
}

#[derive(Serialize)]
struct LinkAnswer {
    url: String,
    label: String,
    expires_at: String,
}

async fn api_enroll(app: App, req: Req) -> WebResult {
    let body: LinkRequest = req.json()?;
    match new_link(&app, &req, &body.label).await {
        Ok(link) => Ok(response::json(
            StatusCode::CREATED,
            &LinkAnswer {
                url: link.url,
                label: link.label,
                expires_at: link.expires.iso(),
            },
        )),
        Err(LinkError::Person(m)) => Err(WebError::BadRequest(m)),
        Err(LinkError::Web(e)) => Err(e),
    }
}

#[derive(Serialize)]
struct CommandJson {
    command_uuid: String,
    request_type: String,
    status: &'static str,
    queued_at: String,
    answered_at: Option<String>,
    result: Option<String>,
    errors: Vec<String>,
}

async fn api_commands(app: App, req: Req) -> WebResult {
    let serial = req.param("serial")?;
    let e = enrollment_of(&app, serial)?.ok_or(WebError::NotFound)?;
    let list: Vec<CommandJson> = app
        .mdm
        .service()
        .history(&e.udid)
        .map_err(mdm_internal)?
        .into_iter()
        .map(|c| CommandJson {
            command_uuid: c.uuid.to_string(),
            request_type: c.request_type,
            status: c.status.as_str(),
            queued_at: Date(c.queued_at).iso(),
            answered_at: c.answered_at.map(|d| Date(d).iso()),
            result: c.result,
            errors: c.errors,
        })
        .collect();
    Ok(response::json(
        StatusCode::OK,
        &serde_json::json!({ "udid": e.udid.to_string(), "commands": list }),
    ))
}

async fn api_send(app: App, req: Req) -> WebResult {
    let serial = req.param("serial")?.to_string();
    let command: Command = req.json()?;
    if let Command::InstallProfile { payload } = &command {
        check_profile(payload).map_err(WebError::BadRequest)?;
    }
    let (a, s) = (app.clone(), serial.clone());
    let uuid = blocking(move || enqueue_for(&a, &s, &command))
        .await?
        .map_err(|refused| match refused {
            Refused::Mac(m) => WebError::Conflict(m),
            Refused::Bad(m) => WebError::BadRequest(m),
            Refused::Internal(m) => WebError::Internal(m),
        })?;
    audit::record(
        &app.store,
        app.clock.as_ref(),
        &req.actor(),
        "sent a command through the API",
        &serial,
    )?;
    app.store.flush().await?;
    Ok(response::json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "command_uuid": uuid.to_string() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form::from_pairs(pairs)
    }

    #[test]
    fn forms_become_commands_and_bad_parameters_are_explained() {
        assert_eq!(
            command_from(&form(&[("command", "SecurityInfo")]), "S1"),
            Ok(Command::SecurityInfo)
        );
        let lock = command_from(
            &form(&[("command", "DeviceLock"), ("pin", "12"), ("message", "")]),
            "S1",
        );
        assert_eq!(
            lock,
            Err("A Mac needs a PIN of exactly six digits".to_string())
        );
        assert!(command_from(&form(&[("command", "Reboot")]), "S1").is_err());
        assert!(command_from(&form(&[]), "S1").is_err());
    }

    #[test]
    fn erase_needs_the_serial_typed() {
        let wrong = form(&[("command", "EraseDevice"), ("confirm", "S2")]);
        assert!(
            command_from(&wrong, "S1")
                .unwrap_err()
                .contains("type its serial")
        );
        let right = form(&[("command", "EraseDevice"), ("confirm", " S1 ")]);
        assert_eq!(
            command_from(&right, "S1"),
            Ok(Command::EraseDevice { pin: None })
        );
    }

    #[test]
    fn only_configuration_profiles_are_accepted_for_install() {
        let profile = br#"<?xml version="1.0"?><plist version="1.0"><dict><key>PayloadIdentifier</key><string>x</string></dict></plist>"#;
        assert!(check_profile(profile).is_ok());
        assert!(check_profile(b"-----BEGIN CERTIFICATE-----").is_err());
        assert!(check_profile(b"<plist version=\"1.0\"><array/></plist>").is_err());
    }
}
