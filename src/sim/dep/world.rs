//! The simulated ABM/ASM organisation behind the DEP simulator: devices indexed by serial, an event
//! log with sequence numbers (what sync replays), enrollment profiles, sessions, nonces, the token's
//! mode and the scripted faults. Tests and the demo drive it through [`World`]; the HTTP layer in
//! `server.rs` calls the `handle_*` methods.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use time::{Duration, OffsetDateTime};

use crate::apple::dep::types::{
    Account, AccountUrl, DefinedProfile, Device, DeviceDetails, DevicePage, DeviceStatus,
    DeviceStatuses, PageLimit, Profile,
};
use crate::apple::dep::{Endpoint, ServerToken};
use crate::clock::SharedClock;

/// Apple keeps sync cursors for 7 days.
pub const CURSOR_LIFETIME: Duration = Duration::days(7);
/// Most serials per assign, remove, disown or details call.
pub const MAX_SERIALS: usize = 1000;

/// What the token's account currently allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Everything works.
    Active,
    /// New terms and conditions wait for an admin: 403 `T_C_NOT_SIGNED` everywhere.
    TermsNotSigned,
    /// The token was revoked or replaced in ABM/ASM: 403 `token_rejected`.
    Revoked,
}

/// A scripted answer for the next `count` calls of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
    pub count: u32,
}

impl Fault {
    /// A fault answered once with `status` and Apple's code string as body.
    pub fn once(status: u16, body: &str) -> Fault {
        Fault {
            status,
            body: body.to_string(),
            retry_after: None,
            count: 1,
        }
    }

    /// The same fault with a `Retry-After` header.
    pub fn retry_after(mut self, value: &str) -> Fault {
        self.retry_after = Some(value.to_string());
        self
    }

    /// The same fault for `count` calls.
    pub fn times(mut self, count: u32) -> Fault {
        self.count = count;
        self
    }
}

/// An HTTP answer of the simulator: status, JSON (or code string) body, extra headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn ok<T: serde::Serialize>(value: &T) -> Reply {
        Reply {
            status: 200,
            body: serde_json::to_string(value).unwrap_or_default(),
            retry_after: None,
        }
    }

    /// An error answer with Apple's code string, JSON-quoted as Apple's simulator wrote it.
    pub fn code(status: u16, code: &str) -> Reply {
        Reply {
            status,
            body: format!("\"{code}\""),
            retry_after: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Added,
    Modified,
    Deleted,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Added => "added",
            Op::Modified => "modified",
            Op::Deleted => "deleted",
        }
    }
}

struct Event {
    op: Op,
    at: OffsetDateTime,
    device: Arc<Device>,
}

struct SimDevice {
    device: Device,
    /// Position in the fetch roster while assigned to this MDM server.
    roster: Option<u64>,
}

struct State {
    token: ServerToken,
    mode: TokenMode,
    account: Account,
    page_default: u32,
    page_max: u32,
    devices: HashMap<String, SimDevice>,
    roster: BTreeMap<u64, String>,
    next_roster: u64,
    events: Vec<Event>,
    profiles: HashMap<String, Profile>,
    sessions: HashMap<String, OffsetDateTime>,
    sessions_issued: u64,
    nonces: HashMap<String, i64>,
    faults: HashMap<Endpoint, VecDeque<Fault>>,
    requests: HashMap<Endpoint, u64>,
    failing: HashSet<String>,
    throttle: Option<(usize, u64)>,
    rng: u64,
    cursor_key: [u8; 32],
    in_flight: usize,
    max_in_flight: usize,
}

/// The simulated organisation; cheap to clone, shared with the HTTP server.
#[derive(Clone)]
pub struct World {
    state: Arc<Mutex<State>>,
    clock: SharedClock,
}

/// Realistic current Macs: model identifier, description, colours.
const MACS: &[(&str, &str, &[&str])] = &[
    (
        "Mac15,12",
        "MacBook Air 13-inch (M3, 2024)",
        &["MIDNIGHT", "STARLIGHT", "SPACE GRAY", "SILVER"],
    ),
    (
        "Mac15,13",
        "MacBook Air 15-inch (M3, 2024)",
        &["MIDNIGHT", "STARLIGHT", "SPACE GRAY", "SILVER"],
    ),
    (
        "Mac14,2",
        "MacBook Air 13-inch (M2, 2022)",
        &["MIDNIGHT", "STARLIGHT", "SPACE GRAY", "SILVER"],
    ),
    (
        "Mac15,3",
        "MacBook Pro 14-inch (M3, Nov 2023)",
        &["SPACE GRAY", "SILVER"],
    ),
    (
        "Mac16,1",
        "MacBook Pro 14-inch (M4, 2024)",
        &["SPACE BLACK", "SILVER"],
    ),
    ("Mac16,10", "Mac mini (2024)", &["SILVER"]),
    (
        "Mac15,4",
        "iMac 24-inch (M3, 2023)",
        &[
            "BLUE", "GREEN", "PINK", "SILVER", "YELLOW", "ORANGE", "PURPLE",
        ],
    ),
];
/// Apple's randomised serials: 10 characters without vowels.
const SERIAL_CHARS: &[u8] = b"0123456789BCDFGHJKLMNPQRSTVWXYZ";

impl World {
    pub(super) fn new(
        clock: SharedClock,
        token: ServerToken,
        account: Account,
        page_default: u32,
        page_max: u32,
        seed: u64,
    ) -> World {
        let mut account = account;
        for (uri, methods) in [
            ("/session", &["GET"][..]),
            ("/account", &["GET"]),
            ("/server/devices", &["POST"]),
            ("/devices/sync", &["POST"]),
            ("/devices", &["POST"]),
            ("/devices/disown", &["POST"]),
            ("/profile", &["POST", "GET"]),
            ("/profile/devices", &["DELETE", "POST", "PUT"]),
        ] {
            let paged = matches!(uri, "/server/devices" | "/devices/sync");
            account.urls.push(AccountUrl {
                uri: uri.into(),
                http_method: methods.iter().map(|m| m.to_string()).collect(),
                limit: paged.then_some(PageLimit {
                    default: page_default,
                    maximum: page_max,
                }),
            });
        }
        World {
            state: Arc::new(Mutex::new(State {
                token,
                mode: TokenMode::Active,
                account,
                page_default,
                page_max,
                devices: HashMap::new(),
                roster: BTreeMap::new(),
                next_roster: 1,
                events: Vec::new(),
                profiles: HashMap::new(),
                sessions: HashMap::new(),
                sessions_issued: 0,
                nonces: HashMap::new(),
                faults: HashMap::new(),
                requests: HashMap::new(),
                failing: HashSet::new(),
                throttle: None,
                rng: seed ^ 0x9E37_79B9_7F4A_7C15,
                cursor_key: rand::random(),
                in_flight: 0,
                max_in_flight: 0,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> OffsetDateTime {
        // Apple's timestamps have whole seconds.
        let now = self.clock.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }

    /// What `/account` reports.
    pub fn account(&self) -> Account {
        self.lock().account.clone()
    }

    /// The token the simulator accepts.
    pub fn token(&self) -> ServerToken {
        self.lock().token.clone()
    }

    /// The admin downloads a new token for this MDM server in ABM/ASM ("Download Token"): the
    /// same consumer key with a new access token, secrets and expiry. The previous token is no
    /// longer accepted. Returns the new token.
    pub fn renew_token(&self, expiry: OffsetDateTime) -> ServerToken {
        let mut s = self.lock();
        let mut token = super::random_token(expiry);
        token.consumer_key = s.token.consumer_key.clone();
        s.token = token.clone();
        token
    }

    /// Another MDM server of the same organisation (same page limits and clock), named
    /// `server_name`, with its own token valid for a year and no devices yet.
    pub(super) fn sibling(&self, server_name: &str) -> World {
        let (mut account, page_default, page_max, seed) = {
            let mut s = self.lock();
            let seed = s.next_random();
            (s.account.clone(), s.page_default, s.page_max, seed)
        };
        account.server_name = server_name.to_string();
        account.server_uuid = hex::encode_upper(rand::random::<[u8; 16]>());
        account.urls.clear();
        let token = super::random_token(self.now() + Duration::days(365));
        World::new(
            self.clock.clone(),
            token,
            account,
            page_default,
            page_max,
            seed,
        )
    }

    /// Adds `n` Macs of mixed models to this MDM server (an `added` event each); returns serials.
    pub fn add_macs(&self, n: usize) -> Vec<String> {
        let now = self.now();
        let mut s = self.lock();
        let mut serials = Vec::with_capacity(n);
        for _ in 0..n {
            let serial = loop {
                let mut chars = String::with_capacity(10);
                for _ in 0..10 {
                    let i = (s.next_random() % SERIAL_CHARS.len() as u64) as usize;
                    chars.push(char::from(SERIAL_CHARS[i]));
                }
                if !s.devices.contains_key(&chars) {
                    break chars;
                }
            };
            let (model, description, colours) =
                MACS[(s.next_random() % MACS.len() as u64) as usize];
            let colour = colours[(s.next_random() % colours.len() as u64) as usize];
            let device = Device {
                serial_number: serial.clone(),
                model: Some(model.into()),
                description: Some(description.into()),
                color: Some(colour.into()),
                os: Some("OSX".into()),
                device_family: Some("Mac".into()),
                profile_status: Some("empty".into()),
                device_assigned_date: Some(now),
                device_assigned_by: Some(s.account.admin_id.clone()),
                ..Default::default()
            };
            s.insert_ours(device, now);
            serials.push(serial);
        }
        serials
    }

    /// Adds one given device to this MDM server (`added`).
    pub fn add_device(&self, device: Device) {
        let now = self.now();
        self.lock().insert_ours(device, now);
    }

    /// Changes a device of this server in place (`modified`); false if it is not ours.
    pub fn modify(&self, serial: &str, change: impl FnOnce(&mut Device)) -> bool {
        let now = self.now();
        let mut s = self.lock();
        let Some(d) = s.devices.get_mut(serial).filter(|d| d.roster.is_some()) else {
            return false;
        };
        change(&mut d.device);
        d.device.serial_number = serial.to_string();
        let snapshot = d.device.clone();
        s.log(Op::Modified, now, snapshot);
        true
    }

    /// The admin moves the device to another MDM server in ABM/ASM (`deleted` for us).
    pub fn move_away(&self, serial: &str) -> bool {
        let now = self.now();
        let mut s = self.lock();
        s.unassign(serial, now, false)
    }

    /// The admin moves a known device (back) to this MDM server (`added`).
    pub fn move_here(&self, serial: &str) -> bool {
        let now = self.now();
        let mut s = self.lock();
        let Some(d) = s.devices.get(serial).filter(|d| d.roster.is_none()) else {
            return false;
        };
        let mut device = d.device.clone();
        device.device_assigned_date = Some(now);
        device.profile_status = Some("empty".into());
        device.profile_uuid = None;
        s.insert_ours(device, now);
        true
    }

    /// The organisation releases the device (sold, returned): `deleted`, then it is gone.
    pub fn release(&self, serial: &str) -> bool {
        let now = self.now();
        self.lock().unassign(serial, now, true)
    }

    /// The device downloaded its profile in Setup Assistant (`pushed`, `modified`).
    pub fn mark_pushed(&self, serial: &str) -> bool {
        let now = self.now();
        let mut s = self.lock();
        let Some(d) = s.devices.get_mut(serial).filter(|d| d.roster.is_some()) else {
            return false;
        };
        if d.device.profile_uuid.is_none() {
            return false;
        }
        d.device.profile_status = Some("pushed".into());
        d.device.profile_push_time = Some(now);
        let snapshot = d.device.clone();
        s.log(Op::Modified, now, snapshot);
        true
    }

    /// A device of this server as Apple currently reports it.
    pub fn device(&self, serial: &str) -> Option<Device> {
        let s = self.lock();
        s.devices
            .get(serial)
            .filter(|d| d.roster.is_some())
            .map(|d| d.device.clone())
    }

    /// How many devices are assigned to this MDM server.
    pub fn device_count(&self) -> usize {
        self.lock().roster.len()
    }

    /// The serials of this server in fetch order.
    pub fn serials(&self) -> Vec<String> {
        self.lock().roster.values().cloned().collect()
    }

    /// How many sync events have happened.
    pub fn event_count(&self) -> usize {
        self.lock().events.len()
    }

    /// A defined profile.
    pub fn profile(&self, uuid: &str) -> Option<Profile> {
        self.lock().profiles.get(uuid).cloned()
    }

    /// How many profiles were defined.
    pub fn profile_count(&self) -> usize {
        self.lock().profiles.len()
    }

    /// Sets what the token's account allows.
    pub fn set_token_mode(&self, mode: TokenMode) {
        self.lock().mode = mode;
    }

    /// Answers the next calls of `endpoint` with `fault`, ahead of any already queued.
    pub fn push_fault(&self, endpoint: Endpoint, fault: Fault) {
        self.lock()
            .faults
            .entry(endpoint)
            .or_default()
            .push_back(fault);
    }

    /// Assign answers `FAILED` for this serial from now on.
    pub fn fail_assign(&self, serial: &str) {
        self.lock().failing.insert(serial.to_string());
    }

    /// Assign takes at most `per_call` serials and answers `THROTTLED` (with
    /// `retry_after_seconds`) for the rest; `None` lifts the limit.
    pub fn throttle_assign(&self, limit: Option<(usize, u64)>) {
        self.lock().throttle = limit;
    }

    /// Forgets every session, as Apple's service does on a restart (403 `FORBIDDEN`).
    pub fn forget_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// How many `/session` calls succeeded.
    pub fn sessions_issued(&self) -> u64 {
        self.lock().sessions_issued
    }

    /// How many requests reached `endpoint` (faults and refusals included).
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        self.lock().requests.get(&endpoint).copied().unwrap_or(0)
    }

    /// The most API requests that were ever being answered at the same time.
    pub fn max_concurrent_requests(&self) -> usize {
        self.lock().max_in_flight
    }

    // ---- used by the HTTP layer ------------------------------------------------------------

    /// Whether this server's token has `consumer_key` (which server a `/session` call is for).
    pub(super) fn has_consumer_key(&self, consumer_key: &str) -> bool {
        self.lock().token.consumer_key == consumer_key
    }

    /// Whether this server issued `session` (which server an API call is for).
    pub(super) fn has_session(&self, session: &str) -> bool {
        self.lock().sessions.contains_key(session)
    }

    /// Marks a request as being answered until the guard drops.
    pub(super) fn enter(&self) -> InFlight {
        let mut s = self.lock();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(self.clone())
    }

    /// Counts the request and pops a scripted fault for it, if any.
    pub(super) fn take_fault(&self, endpoint: Endpoint) -> Option<Reply> {
        let mut s = self.lock();
        *s.requests.entry(endpoint).or_default() += 1;
        let queue = s.faults.get_mut(&endpoint)?;
        let fault = queue.front_mut()?;
        let reply = Reply {
            status: fault.status,
            body: fault.body.clone(),
            retry_after: fault.retry_after.clone(),
        };
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            queue.pop_front();
        }
        Some(reply)
    }

    /// `GET /session`: checks the OAuth header signed for `url` and issues a session.
    pub(super) fn handle_session(
        &self,
        authorization: Option<&str>,
        url: &url::Url,
        timestamp_window: Duration,
        session_ttl: Duration,
    ) -> Reply {
        use crate::apple::dep::oauth::{HeaderError, parse_authorization_header};
        let now = self.now();
        let Some(header) = authorization else {
            return Reply::code(400, "MISSING_OAUTH_PARAMETERS");
        };
        let signed = match parse_authorization_header(header) {
            Ok(s) => s,
            Err(HeaderError::Duplicated(_)) => {
                return Reply::code(400, "DUPLICATED_OAUTH_PARAMETER");
            }
            Err(HeaderError::Unsupported(_)) => {
                return Reply::code(400, "UNSUPPORTED_OAUTH_PARAMETER");
            }
            Err(_) => return Reply::code(400, "MISSING_OAUTH_PARAMETERS"),
        };
        let Ok(timestamp) = signed.params.timestamp.parse::<i64>() else {
            return Reply::code(400, "MALFORMED_OAUTH_TIMESTAMP");
        };
        let mut s = self.lock();
        if signed.params.consumer_key != s.token.consumer_key
            || signed.params.token != s.token.access_token
        {
            return Reply::code(401, "token_rejected");
        }
        let expected =
            signed
                .params
                .signature("GET", url, &s.token.consumer_secret, &s.token.access_secret);
        if expected != signed.signature {
            return Reply::code(401, "signature_invalid");
        }
        if (now.unix_timestamp() - timestamp).abs() > timestamp_window.whole_seconds() {
            return Reply::code(401, "timestamp_refused");
        }
        let oldest = now.unix_timestamp() - timestamp_window.whole_seconds();
        s.nonces.retain(|_, ts| *ts >= oldest);
        if s.nonces
            .insert(signed.params.nonce.clone(), timestamp)
            .is_some()
        {
            return Reply::code(401, "nonce_used");
        }
        if let Some(refusal) = s.mode_refusal(now) {
            return refusal;
        }
        let session = hex::encode(rand::random::<[u8; 20]>());
        s.sessions.retain(|_, expires| *expires > now);
        s.sessions.insert(session.clone(), now + session_ttl);
        s.sessions_issued += 1;
        Reply::ok(&serde_json::json!({ "auth_session_token": session }))
    }

    /// Checks the `X-ADM-Auth-Session` of an API call; with `rotate` replaces it by a new one.
    /// Returns the session to send back, or the refusal.
    pub(super) fn check_session(
        &self,
        session: Option<&str>,
        rotate: bool,
        session_ttl: Duration,
    ) -> Result<String, Reply> {
        let now = self.now();
        let mut s = self.lock();
        let Some(session) = session else {
            return Err(Reply::code(401, "UNAUTHORIZED"));
        };
        match s.sessions.get(session) {
            None => return Err(Reply::code(403, "FORBIDDEN")),
            Some(expires) if *expires <= now => {
                s.sessions.remove(session);
                return Err(Reply::code(401, "UNAUTHORIZED"));
            }
            Some(_) => {}
        }
        if let Some(refusal) = s.mode_refusal(now) {
            return Err(refusal);
        }
        if !rotate {
            return Ok(session.to_string());
        }
        s.sessions.remove(session);
        let new = hex::encode(rand::random::<[u8; 20]>());
        s.sessions.insert(new.clone(), now + session_ttl);
        Ok(new)
    }

    pub(super) fn handle_account(&self) -> Reply {
        Reply::ok(&self.lock().account)
    }

    /// `POST /server/devices`.
    pub(super) fn handle_fetch(&self, cursor: Option<&str>, limit: Option<u32>) -> Reply {
        let now = self.now();
        let s = self.lock();
        let limit = s.page_size(limit);
        let (after, since) = match cursor.filter(|c| !c.is_empty()) {
            None => (0, s.events.len() as u64),
            Some(c) => match s.decode_cursor(c) {
                Some(Cursor::Fetch {
                    after,
                    since,
                    done: false,
                    ..
                }) => (after, since),
                Some(Cursor::Fetch { done: true, .. } | Cursor::Sync { .. }) => {
                    return Reply::code(400, "EXHAUSTED_CURSOR");
                }
                None => return Reply::code(400, "INVALID_CURSOR"),
            },
        };
        let mut devices = Vec::new();
        let mut last = after;
        for (pos, serial) in s.roster.range(after + 1..).take(limit) {
            if let Some(d) = s.devices.get(serial) {
                devices.push(d.device.clone());
            }
            last = *pos;
        }
        let more = s.roster.range(last + 1..).next().is_some();
        let cursor = s.encode_cursor(&Cursor::Fetch {
            after: last,
            since,
            done: !more,
            issued: now.unix_timestamp(),
        });
        Reply::ok(&DevicePage {
            devices,
            cursor,
            fetched_until: Some(now),
            more_to_follow: more,
        })
    }

    /// `POST /devices/sync`.
    pub(super) fn handle_sync(&self, cursor: Option<&str>, limit: Option<u32>) -> Reply {
        let now = self.now();
        let s = self.lock();
        let limit = s.page_size(limit);
        let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
            return Reply::code(400, "CURSOR_REQUIRED");
        };
        let (since, issued) = match s.decode_cursor(cursor) {
            Some(Cursor::Fetch { since, issued, .. } | Cursor::Sync { since, issued }) => {
                (since, issued)
            }
            None => return Reply::code(400, "INVALID_CURSOR"),
        };
        if now.unix_timestamp() - issued > CURSOR_LIFETIME.whole_seconds() {
            return Reply::code(400, "EXPIRED_CURSOR");
        }
        let start = since as usize;
        let end = (start + limit).min(s.events.len());
        let devices = s.events[start..end]
            .iter()
            .map(|e| {
                let mut d = Device::clone(&e.device);
                d.op_type = Some(e.op.name().into());
                d.op_date = Some(e.at);
                d
            })
            .collect();
        let cursor = s.encode_cursor(&Cursor::Sync {
            since: end as u64,
            issued: now.unix_timestamp(),
        });
        Reply::ok(&DevicePage {
            devices,
            cursor,
            fetched_until: Some(now),
            more_to_follow: end < s.events.len(),
        })
    }

    /// `POST /devices` (details).
    pub(super) fn handle_details(&self, serials: &[String]) -> Reply {
        if let Some(refusal) = check_serials(serials) {
            return refusal;
        }
        let s = self.lock();
        let mut out = DeviceDetails::default();
        for serial in serials {
            let device = match s.devices.get(serial).filter(|d| d.roster.is_some()) {
                Some(d) => Device {
                    response_status: Some("SUCCESS".into()),
                    ..d.device.clone()
                },
                None => Device {
                    serial_number: serial.clone(),
                    response_status: Some("NOT_ACCESSIBLE".into()),
                    ..Default::default()
                },
            };
            out.devices.insert(serial.clone(), device);
        }
        Reply::ok(&out)
    }

    /// `POST /profile` (define, and assign its `devices`).
    pub(super) fn handle_define(&self, body: &serde_json::Value, version: u32) -> Reply {
        let Some(fields) = body.as_object() else {
            return Reply::code(400, "MALFORMED_REQUEST_BODY");
        };
        let Ok(mut profile) = serde_json::from_value::<Profile>(body.clone()) else {
            return Reply::code(400, "MALFORMED_REQUEST_BODY");
        };
        if let Some(code) = validate_profile(&profile, fields) {
            return Reply::code(400, code);
        }
        if profile.devices.len() > MAX_SERIALS {
            return Reply::code(400, "DEVICE_LIMIT_EXCEEDED");
        }
        let now = self.now();
        let mut s = self.lock();
        let uuid = hex::encode_upper(rand::random::<[u8; 16]>());
        let serials = std::mem::take(&mut profile.devices);
        profile.profile_uuid = Some(uuid.clone());
        s.profiles.insert(uuid.clone(), profile);
        let statuses = s.assign(&uuid, &serials, now, version);
        Reply::ok(&DefinedProfile {
            profile_uuid: uuid,
            devices: statuses.devices,
        })
    }

    /// `GET /profile?profile_uuid=`.
    pub(super) fn handle_get_profile(&self, uuid: Option<&str>) -> Reply {
        let Some(uuid) = uuid.filter(|u| !u.is_empty()) else {
            return Reply::code(400, "PROFILE_UUID_REQUIRED");
        };
        match self.lock().profiles.get(uuid) {
            Some(p) => Reply::ok(p),
            None => Reply::code(400, "PROFILE_NOT_FOUND"),
        }
    }

    /// `PUT`/`POST /profile/devices` (assign).
    pub(super) fn handle_assign(&self, uuid: &str, serials: &[String], version: u32) -> Reply {
        if uuid.is_empty() {
            return Reply::code(400, "PROFILE_UUID_REQUIRED");
        }
        if let Some(refusal) = check_serials(serials) {
            return refusal;
        }
        let now = self.now();
        let mut s = self.lock();
        if !s.profiles.contains_key(uuid) {
            return Reply::code(404, "NOT_FOUND");
        }
        Reply::ok(&s.assign(uuid, serials, now, version))
    }

    /// `DELETE /profile/devices` (remove).
    pub(super) fn handle_remove(&self, serials: &[String]) -> Reply {
        self.per_serial(serials, |s, serial, now| {
            let d = s.devices.get_mut(serial).filter(|d| d.roster.is_some())?;
            d.device.profile_status = Some("removed".into());
            d.device.profile_uuid = None;
            let snapshot = d.device.clone();
            s.log(Op::Modified, now, snapshot);
            Some(())
        })
    }

    /// `POST /devices/disown`: the device leaves the organisation for good.
    pub(super) fn handle_disown(&self, serials: &[String]) -> Reply {
        self.per_serial(serials, |s, serial, now| {
            s.unassign(serial, now, true).then_some(())
        })
    }

    /// Applies `change` to each serial: `SUCCESS` where it applied, `NOT_ACCESSIBLE` elsewhere.
    fn per_serial(
        &self,
        serials: &[String],
        mut change: impl FnMut(&mut State, &str, OffsetDateTime) -> Option<()>,
    ) -> Reply {
        if let Some(refusal) = check_serials(serials) {
            return refusal;
        }
        let now = self.now();
        let mut s = self.lock();
        let mut out = DeviceStatuses::default();
        for serial in serials {
            let status = match change(&mut s, serial, now) {
                Some(()) => DeviceStatus::Success,
                None => DeviceStatus::NotAccessible,
            };
            out.devices.insert(serial.clone(), status);
        }
        Reply::ok(&out)
    }
}

/// A request being answered; see [`World::enter`].
pub(super) struct InFlight(World);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

fn check_serials(serials: &[String]) -> Option<Reply> {
    if serials.is_empty() || serials.iter().any(|s| s.trim().is_empty()) {
        return Some(Reply::code(400, "DEVICE_ID_REQUIRED"));
    }
    if serials.len() > MAX_SERIALS {
        return Some(Reply::code(400, "DEVICE_LIMIT_EXCEEDED"));
    }
    None
}

/// Apple's define-profile checks, in the order of its documentation.
fn validate_profile(
    p: &Profile,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Option<&'static str> {
    let chars = |s: &str| s.chars().count();
    if !fields.contains_key("profile_name") {
        return Some("CONFIG_NAME_REQUIRED");
    }
    if p.profile_name.trim().is_empty() || chars(&p.profile_name) > 125 {
        return Some("CONFIG_NAME_INVALID");
    }
    if !fields.contains_key("url") {
        return Some("CONFIG_URL_REQUIRED");
    }
    let url_ok = chars(&p.url) <= 2000
        && url::Url::parse(&p.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !url_ok {
        return Some("CONFIG_URL_INVALID");
    }
    if p.department.as_deref().is_some_and(|d| chars(d) > 125) {
        return Some("DEPARTMENT_INVALID");
    }
    if p.is_mdm_removable == Some(false) && p.is_supervised != Some(true) {
        return Some("FLAGS_INVALID");
    }
    let language_ok =
        |l: &str| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
    let region_ok = |r: &str| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase());
    if p.language.as_deref().is_some_and(|l| !language_ok(l))
        || p.region.as_deref().is_some_and(|r| !region_ok(r))
    {
        return Some("LOCALE_INVALID");
    }
    if p.org_magic.as_deref().is_some_and(|m| chars(m) > 256) {
        return Some("MAGIC_INVALID");
    }
    if p.support_email_address
        .as_deref()
        .is_some_and(|e| chars(e) > 250)
    {
        return Some("SUPPORT_EMAIL_INVALID");
    }
    if p.support_phone_number
        .as_deref()
        .is_some_and(|n| chars(n) > 50)
    {
        return Some("SUPPORT_PHONE_INVALID");
    }
    None
}

enum Cursor {
    Fetch {
        after: u64,
        since: u64,
        done: bool,
        issued: i64,
    },
    Sync {
        since: u64,
        issued: i64,
    },
}

impl State {
    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic worlds from a seed.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn page_size(&self, limit: Option<u32>) -> usize {
        match limit {
            None | Some(0) => self.page_default as usize,
            Some(n) => n.min(self.page_max) as usize,
        }
    }

    fn log(&mut self, op: Op, at: OffsetDateTime, device: Device) {
        self.events.push(Event {
            op,
            at,
            device: Arc::new(device),
        });
    }

    fn insert_ours(&mut self, device: Device, now: OffsetDateTime) {
        let serial = device.serial_number.clone();
        let pos = self.next_roster;
        self.next_roster += 1;
        if let Some(old) = self.devices.get(&serial).and_then(|d| d.roster) {
            self.roster.remove(&old);
        }
        self.roster.insert(pos, serial.clone());
        self.log(Op::Added, now, device.clone());
        self.devices.insert(
            serial,
            SimDevice {
                device,
                roster: Some(pos),
            },
        );
    }

    /// Takes a device off this MDM server (`deleted`); with `forget` it leaves the org entirely.
    fn unassign(&mut self, serial: &str, now: OffsetDateTime, forget: bool) -> bool {
        let Some(d) = self.devices.get_mut(serial) else {
            return false;
        };
        let Some(pos) = d.roster.take() else {
            return false;
        };
        let snapshot = d.device.clone();
        self.roster.remove(&pos);
        if forget {
            self.devices.remove(serial);
        }
        self.log(Op::Deleted, now, snapshot);
        true
    }

    fn assign(
        &mut self,
        uuid: &str,
        serials: &[String],
        now: OffsetDateTime,
        version: u32,
    ) -> DeviceStatuses {
        let mut out = DeviceStatuses {
            profile_uuid: Some(uuid.to_string()),
            ..Default::default()
        };
        let mut accepted = 0usize;
        for serial in serials {
            let throttled = self
                .throttle
                .is_some_and(|(per_call, _)| accepted >= per_call);
            let status = if self.failing.contains(serial) {
                DeviceStatus::Failed
            } else if self.devices.get(serial).is_none_or(|d| d.roster.is_none()) {
                DeviceStatus::NotAccessible
            } else if throttled {
                // THROTTLED exists from protocol 9; older clients see FAILED.
                if version >= 9 {
                    DeviceStatus::Throttled
                } else {
                    DeviceStatus::Failed
                }
            } else {
                accepted += 1;
                if let Some(d) = self.devices.get_mut(serial) {
                    d.device.profile_uuid = Some(uuid.to_string());
                    d.device.profile_status = Some("assigned".into());
                    d.device.profile_assign_time = Some(now);
                    let snapshot = d.device.clone();
                    self.log(Op::Modified, now, snapshot);
                }
                DeviceStatus::Success
            };
            out.devices.insert(serial.clone(), status);
        }
        if version >= 10
            && let Some((_, retry)) = self.throttle
            && out.devices.values().any(|s| *s == DeviceStatus::Throttled)
        {
            out.retry_after_seconds = Some(retry);
        }
        out
    }

    /// Refusal for the token's mode or its expiry, if any.
    fn mode_refusal(&self, now: OffsetDateTime) -> Option<Reply> {
        match self.mode {
            TokenMode::TermsNotSigned => return Some(Reply::code(403, "T_C_NOT_SIGNED")),
            TokenMode::Revoked => return Some(Reply::code(403, "token_rejected")),
            TokenMode::Active => {}
        }
        if self.token.is_expired(now) {
            return Some(Reply::code(403, "token_expired"));
        }
        None
    }

    fn encode_cursor(&self, cursor: &Cursor) -> String {
        use base64::Engine as _;
        let payload = match cursor {
            Cursor::Fetch {
                after,
                since,
                done,
                issued,
            } => {
                format!("f:{after}:{since}:{}:{issued}", u8::from(*done))
            }
            Cursor::Sync { since, issued } => format!("s:{since}:{issued}"),
        };
        let mac = self.cursor_mac(&payload);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{payload}:{mac}"))
    }

    fn decode_cursor(&self, cursor: &str) -> Option<Cursor> {
        use base64::Engine as _;
        if cursor.len() > 1000 {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (payload, mac) = text.rsplit_once(':')?;
        if self.cursor_mac(payload) != mac {
            return None;
        }
        let parts: Vec<&str> = payload.split(':').collect();
        let cursor = match parts.as_slice() {
            ["f", after, since, done, issued] => Cursor::Fetch {
                after: after.parse().ok()?,
                since: since.parse().ok()?,
                done: *done == "1",
                issued: issued.parse().ok()?,
            },
            ["s", since, issued] => Cursor::Sync {
                since: since.parse().ok()?,
                issued: issued.parse().ok()?,
            },
            _ => return None,
        };
        let since = match cursor {
            Cursor::Fetch { since, .. } | Cursor::Sync { since, .. } => since,
        };
        (since as usize <= self.events.len()).then_some(cursor)
    }

    fn cursor_mac(&self, payload: &str) -> String {
        use hmac::{KeyInit as _, Mac as _};
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.cursor_key) else {
            return String::new();
        };
        mac.update(payload.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}
