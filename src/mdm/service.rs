//! The MDM service: check-in handling, identity binding, the per-device command queue and the
//! connect loop, behind the [`MdmStorage`] trait (implemented for `Store` in `store::mdm`).
//!
//! Apple: <https://developer.apple.com/documentation/devicemanagement/implementing-device-management>

use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::checkin::{Checkin, DeviceFacts, bootstrap_token_reply};
use super::command::{Command, CommandUuid, ParseError, PushMagic, Report, Status, Udid, to_xml};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::pki::secret::{Sealed, SecretKey};
use crate::store::StoreError;

/// Pending (queued or NotNow) commands one device may have; more is refused, so a runaway
/// script cannot grow the queue without end.
pub const MAX_PENDING: usize = 200;
/// Finished commands kept per device (older ones are pruned), and for how long at most.
pub const KEEP_FINISHED: usize = 50;
pub const KEEP_FINISHED_FOR: Duration = Duration::days(90);
/// Largest result kept for one command.
const MAX_RESULT: usize = 256 * 1024;

/// The authenticated identity of a request: the certificate the device presented (through
/// `Mdm-Signature` or TLS), already verified to chain to Orchard's SCEP CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub cert_hash: String,
    pub not_after: OffsetDateTime,
}

/// Where an enrollment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollmentState {
    /// `Authenticate` received; waiting for the first `TokenUpdate`.
    Authenticated,
    /// Has a push token: commands can be sent.
    Enrolled,
    /// The device sent `CheckOut` (its MDM profile was removed).
    CheckedOut,
}

/// What Orchard knows about one enrolled device (keyed by UDID).
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub udid: Udid,
    pub state: EnrollmentState,
    pub facts: DeviceFacts,
    pub cert_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub cert_not_after: OffsetDateTime,
    pub topic: String,
    /// Hex of the APNs device token.
    pub push_token: Option<String>,
    pub push_magic: Option<PushMagic>,
    pub awaiting_configuration: bool,
    pub bootstrap_token: Option<Sealed>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// When a renewal profile was last queued (see [`MdmService::renew_expiring`]).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub renewal_queued_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("udid", &self.udid)
            .field("state", &self.state)
            .field("serial", &self.facts.serial_number)
            .field("cert_hash", &self.cert_hash)
            .finish_non_exhaustive()
    }
}

/// Status of a queued or answered command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    Queued,
    /// The device answered NotNow; it stays queued and is retried at the next `Idle`.
    NotNow,
    Acknowledged,
    Error,
    CommandFormatError,
}

impl CommandStatus {
    pub fn is_pending(self) -> bool {
        matches!(self, CommandStatus::Queued | CommandStatus::NotNow)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Queued => "Queued",
            CommandStatus::NotNow => "NotNow",
            CommandStatus::Acknowledged => "Acknowledged",
            CommandStatus::Error => "Error",
            CommandStatus::CommandFormatError => "CommandFormatError",
        }
    }
}

/// One command in a device's queue or history (keyed by UDID + sequence).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    pub uuid: CommandUuid,
    pub request_type: String,
    /// The plist sent to the device, as XML.
    pub plist: String,
    pub status: CommandStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub queued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub answered_at: Option<OffsetDateTime>,
    /// The device's report (XML plist), for Acknowledged and Error.
    pub result: Option<String>,
    pub errors: Vec<String>,
}

/// The storage the MDM service needs.
pub trait MdmStorage: Send + Sync + 'static {
    fn enrollment(&self, udid: &Udid) -> Result<Option<Enrollment>, StoreError>;
    fn enrollment_by_serial(&self, serial: &str) -> Result<Option<Enrollment>, StoreError>;
    /// Enrollments in UDID order starting after `after`, at most `limit`.
    fn enrollments(
        &self,
        after: Option<&Udid>,
        limit: usize,
    ) -> Result<Vec<Enrollment>, StoreError>;
    /// The UDID a certificate hash is bound to.
    fn cert_owner(&self, cert_hash: &str) -> Result<Option<Udid>, StoreError>;
    /// Atomically: writes `e`, binds `e.cert_hash` to it, indexes its serial, deletes its pending
    /// commands, and removes each of `replaced` (binding, serial index, enrollment, commands).
    fn save_authenticated(&self, e: &Enrollment, replaced: &[Enrollment])
    -> Result<(), StoreError>;
    fn put_enrollment(&self, e: &Enrollment) -> Result<(), StoreError>;
    /// Atomically: writes `e` (checked out), unbinds its certificate, drops its pending commands.
    fn check_out(&self, e: &Enrollment) -> Result<(), StoreError>;
    /// The device's commands, oldest first (bounded by the queue and history limits).
    fn commands(&self, udid: &Udid) -> Result<Vec<(u64, CommandRecord)>, StoreError>;
    fn put_command(&self, udid: &Udid, seq: u64, c: &CommandRecord) -> Result<(), StoreError>;
    fn delete_commands(&self, udid: &Udid, seqs: &[u64]) -> Result<(), StoreError>;
    /// A new, increasing sequence number.
    fn next_seq(&self) -> Result<u64, StoreError>;
}

/// What just changed for a device, told to the [`Observer`] once it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `Authenticate`: the Mac has an identity and is finishing enrollment.
    Authenticated,
    /// The first `TokenUpdate`: the Mac can be sent commands.
    Enrolled,
    /// `CheckOut`: the MDM profile was removed.
    CheckedOut,
    /// A `DeviceInformation` answer refreshed the device's facts.
    FactsUpdated,
    /// Any other message from the device.
    Seen,
}

/// Told about each device change (the inventory keeps the Devices page in step with it).
pub trait Observer: Send + Sync + 'static {
    fn observe(&self, e: &Enrollment, event: Event);
}

/// Something that wakes a device through APNs.
pub trait Waker: Send + Sync + 'static {
    fn wake(&self, target: PushTarget);
}

/// Production waking: hand the target to the APNs pusher (which coalesces and staggers).
impl Waker for crate::apple::apns::pusher::Pusher {
    fn wake(&self, t: PushTarget) {
        match crate::apple::apns::PushTarget::from_parts(&t.token_hex, t.push_magic.as_str()) {
            Ok(target) => {
                let _queued = self.push(target);
            }
            Err(e) => {
                tracing::warn!(udid = %t.udid, error = %e, "cannot push: the stored token is unusable")
            }
        }
    }
}

/// What a push to one device needs.
#[derive(Debug, Clone)]
pub struct PushTarget {
    pub udid: Udid,
    pub token_hex: String,
    pub push_magic: PushMagic,
    pub topic: String,
}

/// Errors of the MDM service. Each maps to the status Apple documents for a device (never 401).
#[derive(Debug, thiserror::Error)]
pub enum MdmError {
    #[error("bad request: {0}")]
    BadRequest(#[from] ParseError),
    #[error("the request carries no device certificate")]
    NoIdentity,
    #[error("the device certificate is not valid: {0}")]
    BadIdentity(String),
    #[error("this certificate already belongs to another device")]
    CertReuse,
    #[error("this certificate is not the one bound to device {0}")]
    CertNotBound(Udid),
    #[error("device {0} is not enrolled")]
    NotEnrolled(Udid),
    #[error("the user channel is not enabled")]
    UserChannelDisabled,
    #[error("{0} is not supported by Orchard")]
    NotSupported(&'static str),
    #[error("the report names command {0}, which this device has no record of")]
    UnknownCommand(CommandUuid),
    #[error("device {0} already has {MAX_PENDING} commands waiting")]
    QueueFull(Udid),
    #[error("secret store: {0}")]
    Secret(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl MdmError {
    /// The HTTP status for a device. 401 would unenroll the Mac, so refusals are 400/403.
    pub fn status(&self) -> u16 {
        match self {
            MdmError::BadRequest(_)
            | MdmError::NoIdentity
            | MdmError::BadIdentity(_)
            | MdmError::NotSupported(_)
            | MdmError::UnknownCommand(_) => 400,
            MdmError::CertReuse | MdmError::CertNotBound(_) | MdmError::NotEnrolled(_) => 403,
            MdmError::UserChannelDisabled => 410,
            MdmError::QueueFull(_) => 409,
            MdmError::Secret(_) | MdmError::Store(_) => 500,
        }
    }
}

/// The body of a successful answer to a device.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Empty,
    Plist(Vec<u8>),
}

/// The MDM service. Cheap to clone.
#[derive(Clone)]
pub struct MdmService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn MdmStorage>,
    clock: SharedClock,
    metrics: Metrics,
    secrets: Arc<SecretKey>,
    waker: Box<dyn Waker>,
    observer: OnceLock<Box<dyn Observer>>,
    /// Serialises certificate binding, so two devices cannot claim one certificate at once.
    bind_lock: Mutex<()>,
}

impl MdmService {
    pub fn new(
        store: impl MdmStorage,
        clock: SharedClock,
        metrics: Metrics,
        secrets: Arc<SecretKey>,
        waker: impl Waker,
    ) -> Self {
        metrics.describe("orchard_checkins_total", "MDM check-in messages accepted");
        metrics.describe(
            "orchard_commands_total",
            "MDM commands queued and answered, by request type and status",
        );
        MdmService {
            inner: Arc::new(Inner {
                store: Box::new(store),
                clock,
                metrics,
                secrets,
                waker: Box::new(waker),
                observer: OnceLock::new(),
                bind_lock: Mutex::new(()),
            }),
        }
    }

    pub fn storage(&self) -> &dyn MdmStorage {
        self.inner.store.as_ref()
    }

    /// Sets the one observer of device changes; false if one was already set.
    pub fn set_observer(&self, observer: impl Observer) -> bool {
        self.inner.observer.set(Box::new(observer)).is_ok()
    }

    fn observe(&self, e: &Enrollment, event: Event) {
        if let Some(o) = self.inner.observer.get() {
            o.observe(e, event);
        }
    }

    /// Handles one check-in message (`PUT /mdm/checkin`).
    /// Apple: <https://developer.apple.com/documentation/devicemanagement/check-in>
    pub fn checkin(&self, id: Option<&DeviceIdentity>, body: &[u8]) -> Result<Reply, MdmError> {
        let msg = Checkin::parse(body)?;
        let id = id.ok_or(MdmError::NoIdentity)?;
        let now = self.inner.clock.now();
        let kind = msg.message_type();
        let reply = match msg {
            Checkin::Authenticate { udid, topic, facts } => {
                let e = self.authenticate(id, udid, topic, facts, now)?;
                self.observe(&e, Event::Authenticated);
                Reply::Empty
            }
            Checkin::TokenUpdate {
                udid,
                topic,
                token,
                push_magic,
                awaiting_configuration,
                user_id,
            } => {
                let mut e = self.bound(id, &udid)?;
                let first = user_id.is_none() && e.state == EnrollmentState::Authenticated;
                // Orchard does not run user channels: their TokenUpdates are accepted and ignored.
                if user_id.is_none() {
                    e.state = EnrollmentState::Enrolled;
                    e.topic = topic;
                    e.push_token = Some(hex::encode(token));
                    e.push_magic = Some(push_magic);
                    e.awaiting_configuration = awaiting_configuration;
                }
                e.last_seen = now;
                self.inner.store.put_enrollment(&e)?;
                if first {
                    // What every MDM asks a new Mac first: what it is and what it runs.
                    self.enqueue(&e.udid, &Command::device_information())?;
                    self.observe(&e, Event::Enrolled);
                } else {
                    self.wake_if_pending(&e)?;
                    self.observe(&e, Event::Seen);
                }
                Reply::Empty
            }
            Checkin::CheckOut { udid } => {
                let mut e = self.bound(id, &udid)?;
                e.state = EnrollmentState::CheckedOut;
                e.push_token = None;
                e.push_magic = None;
                e.bootstrap_token = None;
                e.last_seen = now;
                self.inner.store.check_out(&e)?;
                self.observe(&e, Event::CheckedOut);
                Reply::Empty
            }
            Checkin::SetBootstrapToken { udid, token } => {
                let mut e = self.bound(id, &udid)?;
                e.bootstrap_token = match token {
                    Some(t) if !t.is_empty() => Some(
                        self.inner
                            .secrets
                            .seal(&t)
                            .map_err(|e| MdmError::Secret(e.to_string()))?,
                    ),
                    _ => None,
                };
                e.last_seen = now;
                self.inner.store.put_enrollment(&e)?;
                Reply::Empty
            }
            Checkin::GetBootstrapToken { udid } => {
                let e = self.bound(id, &udid)?;
                match &e.bootstrap_token {
                    Some(sealed) => {
                        let t = self
                            .inner
                            .secrets
                            .open(sealed)
                            .map_err(|e| MdmError::Secret(e.to_string()))?;
                        Reply::Plist(bootstrap_token_reply(&t))
                    }
                    None => Reply::Empty,
                }
            }
            Checkin::UserAuthenticate { udid } => {
                self.bound(id, &udid)?;
                return Err(MdmError::UserChannelDisabled);
            }
            Checkin::DeclarativeManagement { udid } => {
                self.bound(id, &udid)?;
                return Err(MdmError::NotSupported("Declarative device management"));
            }
            Checkin::GetToken { udid } => {
                self.bound(id, &udid)?;
                return Err(MdmError::NotSupported("GetToken"));
            }
        };
        self.inner
            .metrics
            .inc("orchard_checkins_total", &[("message_type", kind)]);
        Ok(reply)
    }

    /// Handles one report on the command channel (`PUT /mdm/connect`) and returns the next
    /// command, or `Reply::Empty` when there is none (which ends the device's session).
    /// Apple: <https://developer.apple.com/documentation/devicemanagement/implementing-device-management/sending-mdm-commands-to-a-device>
    pub fn connect(&self, id: Option<&DeviceIdentity>, body: &[u8]) -> Result<Reply, MdmError> {
        let report = Report::parse(body)?;
        let id = id.ok_or(MdmError::NoIdentity)?;
        let mut e = self.bound(id, &report.udid)?;
        if e.state != EnrollmentState::Enrolled {
            return Err(MdmError::NotEnrolled(report.udid));
        }
        let now = self.inner.clock.now();
        let store = &self.inner.store;
        let mut commands = store.commands(&e.udid)?;
        let mut facts_updated = false;
        if let Some(uuid) = &report.command_uuid {
            let (seq, rec) = commands
                .iter_mut()
                .find(|(_, c)| &c.uuid == uuid)
                .ok_or_else(|| MdmError::UnknownCommand(uuid.clone()))?;
            // A report for a command already answered is a retransmission: keep the first answer.
            if rec.status.is_pending() {
                rec.status = match report.status {
                    Status::Acknowledged => CommandStatus::Acknowledged,
                    Status::Error => CommandStatus::Error,
                    Status::CommandFormatError => CommandStatus::CommandFormatError,
                    Status::NotNow => CommandStatus::NotNow,
                    // Idle never carries a CommandUUID (Report::parse only allows it absent).
                    Status::Idle => rec.status,
                };
                rec.answered_at = Some(now);
                if !rec.status.is_pending() {
                    rec.result = Some(result_text(&report.body));
                    rec.errors = report.errors.clone();
                }
                store.put_command(&e.udid, *seq, rec)?;
                self.inner.metrics.inc(
                    "orchard_commands_total",
                    &[
                        ("request_type", rec.request_type.as_str()),
                        ("status", report.status.as_str()),
                    ],
                );
                if rec.status == CommandStatus::Acknowledged {
                    match rec.request_type.as_str() {
                        "DeviceConfigured" => e.awaiting_configuration = false,
                        "DeviceInformation" => {
                            facts_updated = update_facts(&mut e.facts, &report.body);
                        }
                        _ => {}
                    }
                }
            }
        }
        e.last_seen = now;
        store.put_enrollment(&e)?;
        self.observe(
            &e,
            if facts_updated {
                Event::FactsUpdated
            } else {
                Event::Seen
            },
        );
        self.prune(&e.udid, &commands, now)?;

        // NotNow commands wait for the device's next session (which starts with Idle).
        let skip_not_now = report.status != Status::Idle;
        let next = commands.iter().find(|(_, c)| match c.status {
            CommandStatus::Queued => true,
            CommandStatus::NotNow => !skip_not_now,
            _ => false,
        });
        Ok(match next {
            Some((_, c)) => Reply::Plist(c.plist.clone().into_bytes()),
            None => Reply::Empty,
        })
    }

    /// Queues a command for an enrolled device and wakes it.
    pub fn enqueue(&self, udid: &Udid, command: &Command) -> Result<CommandUuid, MdmError> {
        command.validate()?;
        let e = self
            .inner
            .store
            .enrollment(udid)?
            .filter(|e| e.state == EnrollmentState::Enrolled)
            .ok_or_else(|| MdmError::NotEnrolled(udid.clone()))?;
        let pending = self
            .inner
            .store
            .commands(udid)?
            .iter()
            .filter(|(_, c)| c.status.is_pending())
            .count();
        if pending >= MAX_PENDING {
            return Err(MdmError::QueueFull(udid.clone()));
        }
        let uuid = CommandUuid::new();
        let rec = CommandRecord {
            uuid: uuid.clone(),
            request_type: command.request_type().to_string(),
            plist: String::from_utf8_lossy(&command.to_plist(&uuid)).into_owned(),
            status: CommandStatus::Queued,
            queued_at: self.inner.clock.now(),
            answered_at: None,
            result: None,
            errors: Vec::new(),
        };
        let seq = self.inner.store.next_seq()?;
        self.inner.store.put_command(udid, seq, &rec)?;
        self.inner.metrics.inc(
            "orchard_commands_total",
            &[
                ("request_type", command.request_type()),
                ("status", "Queued"),
            ],
        );
        self.wake(&e);
        Ok(uuid)
    }

    /// The device's commands, newest first.
    pub fn history(&self, udid: &Udid) -> Result<Vec<CommandRecord>, MdmError> {
        let mut all: Vec<CommandRecord> = self
            .inner
            .store
            .commands(udid)?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        all.reverse();
        Ok(all)
    }

    /// Certificate renewal: for each enrolled device whose identity expires within `window`, and
    /// that has no renewal queued in that window, queues `InstallProfile` with the profile that
    /// `make_profile` builds (a fresh enrollment profile with a new SCEP challenge). The new
    /// profile makes the Mac enroll for a new certificate and send `Authenticate` with it.
    /// Returns how many were queued.
    pub fn renew_expiring(
        &self,
        window: Duration,
        mut make_profile: impl FnMut(&Enrollment) -> Option<Vec<u8>>,
    ) -> Result<usize, MdmError> {
        let now = self.inner.clock.now();
        let mut after: Option<Udid> = None;
        let mut queued = 0;
        loop {
            let page = self.inner.store.enrollments(after.as_ref(), 500)?;
            let Some(last) = page.last() else { break };
            after = Some(last.udid.clone());
            for mut e in page {
                let due = e.state == EnrollmentState::Enrolled
                    && e.cert_not_after - now < window
                    && e.renewal_queued_at.is_none_or(|t| now - t > window);
                if !due {
                    continue;
                }
                let Some(profile) = make_profile(&e) else {
                    continue;
                };
                self.enqueue(&e.udid, &Command::InstallProfile { payload: profile })?;
                e.renewal_queued_at = Some(now);
                self.inner.store.put_enrollment(&e)?;
                queued += 1;
            }
        }
        Ok(queued)
    }

    fn authenticate(
        &self,
        id: &DeviceIdentity,
        udid: Udid,
        topic: String,
        facts: DeviceFacts,
        now: OffsetDateTime,
    ) -> Result<Enrollment, MdmError> {
        let store = &self.inner.store;
        // Invariant: the lock guards no data, so a poisoned lock is still usable.
        let _guard = self
            .inner
            .bind_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(owner) = store.cert_owner(&id.cert_hash)?
            && owner != udid
        {
            return Err(MdmError::CertReuse);
        }
        // A re-enrollment (a wiped Mac, a renewed certificate) replaces the old enrollment. A
        // different UDID with the same serial number is the same Mac seen again: drop the old one.
        let mut replaced = Vec::new();
        if let Some(serial) = &facts.serial_number
            && let Some(old) = store.enrollment_by_serial(serial)?
            && old.udid != udid
        {
            replaced.push(old);
        }
        let previous = store.enrollment(&udid)?;
        let e = Enrollment {
            udid,
            state: EnrollmentState::Authenticated,
            facts,
            cert_hash: id.cert_hash.clone(),
            cert_not_after: id.not_after,
            topic,
            push_token: None,
            push_magic: None,
            awaiting_configuration: false,
            bootstrap_token: None,
            enrolled_at: now,
            last_seen: now,
            renewal_queued_at: None,
        };
        if let Some(p) = previous
            && p.cert_hash != e.cert_hash
        {
            // Same UDID, new certificate: save_authenticated must also drop the old binding.
            replaced.push(p);
        }
        store.save_authenticated(&e, &replaced)?;
        Ok(e)
    }

    /// The enrollment `udid`, if the request's certificate is the one bound to it.
    fn bound(&self, id: &DeviceIdentity, udid: &Udid) -> Result<Enrollment, MdmError> {
        let e = self
            .inner
            .store
            .enrollment(udid)?
            .ok_or_else(|| MdmError::NotEnrolled(udid.clone()))?;
        if e.state == EnrollmentState::CheckedOut {
            return Err(MdmError::NotEnrolled(udid.clone()));
        }
        if e.cert_hash != id.cert_hash {
            return Err(MdmError::CertNotBound(udid.clone()));
        }
        Ok(e)
    }

    fn wake_if_pending(&self, e: &Enrollment) -> Result<(), MdmError> {
        let pending = self
            .inner
            .store
            .commands(&e.udid)?
            .iter()
            .any(|(_, c)| c.status.is_pending());
        if pending {
            self.wake(e);
        }
        Ok(())
    }

    fn wake(&self, e: &Enrollment) {
        if let (Some(token_hex), Some(push_magic)) = (&e.push_token, &e.push_magic) {
            self.inner.waker.wake(PushTarget {
                udid: e.udid.clone(),
                token_hex: token_hex.clone(),
                push_magic: push_magic.clone(),
                topic: e.topic.clone(),
            });
        }
    }

    /// Keeps at most [`KEEP_FINISHED`] answered commands per device, none older than
    /// [`KEEP_FINISHED_FOR`].
    fn prune(
        &self,
        udid: &Udid,
        commands: &[(u64, CommandRecord)],
        now: OffsetDateTime,
    ) -> Result<(), MdmError> {
        let finished: Vec<&(u64, CommandRecord)> = commands
            .iter()
            .filter(|(_, c)| !c.status.is_pending())
            .collect();
        let excess = finished.len().saturating_sub(KEEP_FINISHED);
        let drop: Vec<u64> = finished
            .iter()
            .enumerate()
            .filter(|(i, (_, c))| {
                *i < excess || c.answered_at.is_some_and(|t| now - t > KEEP_FINISHED_FOR)
            })
            .map(|(_, (seq, _))| *seq)
            .collect();
        if !drop.is_empty() {
            self.inner.store.delete_commands(udid, &drop)?;
        }
        Ok(())
    }
}

/// Takes the device facts out of a `DeviceInformation` answer; true if any changed.
fn update_facts(facts: &mut DeviceFacts, body: &plist::Dictionary) -> bool {
    let Some(answers) = body
        .get("QueryResponses")
        .and_then(plist::Value::as_dictionary)
    else {
        return false;
    };
    let before = facts.clone();
    let fields: [(&str, &mut Option<String>); 6] = [
        ("DeviceName", &mut facts.device_name),
        ("OSVersion", &mut facts.os_version),
        ("BuildVersion", &mut facts.build_version),
        ("ModelName", &mut facts.model_name),
        ("Model", &mut facts.model),
        ("ProductName", &mut facts.product_name),
    ];
    for (key, field) in fields {
        if let Some(v) = answers.get(key).and_then(plist::Value::as_string)
            && !v.is_empty()
        {
            *field = Some(v.chars().take(200).collect());
        }
    }
    *facts != before
}

/// The report as XML text for display, without the identifiers, bounded in size.
fn result_text(body: &plist::Dictionary) -> String {
    let mut d = body.clone();
    for k in ["UDID", "Status", "CommandUUID"] {
        d.remove(k);
    }
    let mut text = String::from_utf8_lossy(&to_xml(&plist::Value::Dictionary(d))).into_owned();
    if text.len() > MAX_RESULT {
        let mut cut = MAX_RESULT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n<!-- truncated -->");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::Store;

    #[derive(Clone, Default)]
    struct Pushes(Arc<Mutex<Vec<Udid>>>);
    impl Waker for Pushes {
        fn wake(&self, t: PushTarget) {
            self.0.lock().unwrap().push(t.udid);
        }
    }
    impl Pushes {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    struct Fixture {
        svc: MdmService,
        store: Store,
        clock: Arc<ManualClock>,
        pushes: Pushes,
        metrics: Metrics,
    }

    fn fixture() -> Fixture {
        let store = Store::memory();
        let clock = ManualClock::starting_now();
        let pushes = Pushes::default();
        let metrics = Metrics::new();
        let svc = MdmService::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            Arc::new(SecretKey::ephemeral()),
            pushes.clone(),
        );
        Fixture {
            svc,
            store,
            clock,
            pushes,
            metrics,
        }
    }

    fn ident(n: u8, now: OffsetDateTime) -> DeviceIdentity {
        DeviceIdentity {
            cert_hash: hex::encode([n; 32]),
            not_after: now + Duration::days(365),
        }
    }

    fn udid(s: &str) -> Udid {
        Udid::parse(s).unwrap()
    }

    fn authenticate(u: &str, serial: &str) -> Vec<u8> {
        Checkin::Authenticate {
            udid: udid(u),
            topic: "com.apple.mgmt.External.t".into(),
            facts: DeviceFacts {
                serial_number: Some(serial.into()),
                ..Default::default()
            },
        }
        .to_plist()
    }

    fn token_update(u: &str) -> Vec<u8> {
        Checkin::TokenUpdate {
            udid: udid(u),
            topic: "com.apple.mgmt.External.t".into(),
            token: vec![0xab; 32],
            push_magic: PushMagic::parse("magic").unwrap(),
            awaiting_configuration: true,
            user_id: None,
        }
        .to_plist()
    }

    /// Authenticate, TokenUpdate, then the first session: the DeviceInformation every new Mac is
    /// asked is answered. Pushes so far are forgotten.
    fn enroll(f: &Fixture, u: &str, serial: &str, id: &DeviceIdentity) {
        assert_eq!(
            f.svc.checkin(Some(id), &authenticate(u, serial)).unwrap(),
            Reply::Empty
        );
        assert_eq!(
            f.svc.checkin(Some(id), &token_update(u)).unwrap(),
            Reply::Empty
        );
        let first = f
            .svc
            .connect(Some(id), &report(u, Status::Idle, None))
            .unwrap();
        let Reply::Plist(bytes) = first else {
            panic!("a new Mac is asked DeviceInformation first")
        };
        let cmd = super::super::command::ReceivedCommand::parse(&bytes).unwrap();
        assert_eq!(cmd.request_type, "DeviceInformation");
        let mut answers = plist::Dictionary::new();
        answers.insert("OSVersion".into(), "15.4".into());
        answers.insert("DeviceName".into(), format!("Mac {serial}").into());
        let mut body = plist::Dictionary::new();
        body.insert("QueryResponses".into(), plist::Value::Dictionary(answers));
        let done = Report::build(&udid(u), Status::Acknowledged, Some(&cmd.uuid), body);
        assert_eq!(f.svc.connect(Some(id), &done).unwrap(), Reply::Empty);
        f.pushes.0.lock().unwrap().clear();
    }

    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<(String, Event)>>>);
    impl Observer for Events {
        fn observe(&self, e: &Enrollment, event: Event) {
            self.0.lock().unwrap().push((e.udid.to_string(), event));
        }
    }

    #[test]
    fn a_new_mac_is_asked_what_it_is_and_the_observer_hears_each_step() {
        let f = fixture();
        let events = Events::default();
        assert!(f.svc.set_observer(events.clone()));
        assert!(!f.svc.set_observer(Events::default()));
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let e = f.store.enrollment(&udid("U-1")).unwrap().unwrap();
        assert_eq!(e.facts.os_version.as_deref(), Some("15.4"));
        assert_eq!(e.facts.device_name.as_deref(), Some("Mac SER1"));
        let history = f.svc.history(&udid("U-1")).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].status, CommandStatus::Acknowledged);
        let seen: Vec<Event> = events.0.lock().unwrap().iter().map(|(_, e)| *e).collect();
        assert_eq!(
            seen,
            [
                Event::Authenticated,
                Event::Enrolled,
                Event::Seen,
                Event::FactsUpdated
            ]
        );
        // A second TokenUpdate (a new push token) is not a new enrollment.
        f.svc.checkin(Some(&id), &token_update("U-1")).unwrap();
        assert_eq!(f.svc.history(&udid("U-1")).unwrap().len(), 1);
        let out = Checkin::CheckOut { udid: udid("U-1") }.to_plist();
        f.svc.checkin(Some(&id), &out).unwrap();
        assert_eq!(
            events.0.lock().unwrap().last().map(|(_, e)| *e),
            Some(Event::CheckedOut)
        );
    }

    fn report(u: &str, status: Status, uuid: Option<&CommandUuid>) -> Vec<u8> {
        Report::build(&udid(u), status, uuid, plist::Dictionary::new())
    }

    fn command_of(r: Reply) -> CommandUuid {
        match r {
            Reply::Plist(b) => {
                super::super::command::ReceivedCommand::parse(&b)
                    .unwrap()
                    .uuid
            }
            Reply::Empty => panic!("expected a command"),
        }
    }

    #[test]
    fn queued_command_is_pushed_delivered_and_acknowledged() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let e = f.store.enrollment(&udid("U-1")).unwrap().unwrap();
        assert_eq!(e.state, EnrollmentState::Enrolled);
        assert!(e.awaiting_configuration);
        assert_eq!(e.push_token.as_deref(), Some("ab".repeat(32).as_str()));

        let uuid = f.svc.enqueue(&udid("U-1"), &Command::ProfileList).unwrap();
        assert_eq!(f.pushes.count(), 1);
        let got = command_of(
            f.svc
                .connect(Some(&id), &report("U-1", Status::Idle, None))
                .unwrap(),
        );
        assert_eq!(got, uuid);

        let mut extra = plist::Dictionary::new();
        extra.insert("ProfileList".into(), plist::Value::Array(vec![]));
        let ack = Report::build(&udid("U-1"), Status::Acknowledged, Some(&uuid), extra);
        assert_eq!(f.svc.connect(Some(&id), &ack).unwrap(), Reply::Empty);
        let h = f.svc.history(&udid("U-1")).unwrap();
        assert_eq!(h[0].status, CommandStatus::Acknowledged);
        assert!(h[0].result.as_deref().unwrap().contains("ProfileList"));
        assert_eq!(
            f.metrics.value(
                "orchard_commands_total",
                &[("request_type", "ProfileList"), ("status", "Acknowledged")]
            ),
            Some(1.0)
        );
        assert_eq!(
            f.metrics
                .value("orchard_checkins_total", &[("message_type", "TokenUpdate")]),
            Some(1.0)
        );
    }

    #[test]
    fn not_now_stays_queued_and_is_skipped_until_the_next_idle() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let a = f.svc.enqueue(&udid("U-1"), &Command::SecurityInfo).unwrap();
        let b = f.svc.enqueue(&udid("U-1"), &Command::ProfileList).unwrap();
        let first = command_of(
            f.svc
                .connect(Some(&id), &report("U-1", Status::Idle, None))
                .unwrap(),
        );
        assert_eq!(first, a);
        let second = command_of(
            f.svc
                .connect(Some(&id), &report("U-1", Status::NotNow, Some(&a)))
                .unwrap(),
        );
        assert_eq!(second, b);
        // After b is acknowledged, a (NotNow) is not offered again in this session.
        let r = f
            .svc
            .connect(Some(&id), &report("U-1", Status::Acknowledged, Some(&b)))
            .unwrap();
        assert_eq!(r, Reply::Empty);
        // The next session (Idle) gets it again.
        let again = command_of(
            f.svc
                .connect(Some(&id), &report("U-1", Status::Idle, None))
                .unwrap(),
        );
        assert_eq!(again, a);
        assert_eq!(
            f.svc.history(&udid("U-1")).unwrap()[1].status,
            CommandStatus::NotNow
        );
    }

    #[test]
    fn a_certificate_bound_to_one_device_cannot_speak_for_another() {
        let f = fixture();
        let now = f.clock.now();
        let (id1, id2) = (ident(1, now), ident(2, now));
        enroll(&f, "U-1", "SER1", &id1);
        enroll(&f, "U-2", "SER2", &id2);
        let before = f.store.enrollment(&udid("U-2")).unwrap().unwrap();

        // Reusing U-1's certificate to Authenticate as U-2 is refused.
        let err = f
            .svc
            .checkin(Some(&id1), &authenticate("U-2", "SER2"))
            .unwrap_err();
        assert!(matches!(err, MdmError::CertReuse), "{err}");
        assert_eq!(err.status(), 403);
        // U-1's certificate cannot send U-2's TokenUpdate or reports.
        let err = f.svc.checkin(Some(&id1), &token_update("U-2")).unwrap_err();
        assert!(matches!(err, MdmError::CertNotBound(_)));
        let err = f
            .svc
            .connect(Some(&id1), &report("U-2", Status::Idle, None))
            .unwrap_err();
        assert!(matches!(err, MdmError::CertNotBound(_)));
        // An unknown certificate, and no certificate at all, are refused too.
        let err = f
            .svc
            .checkin(Some(&ident(9, now)), &token_update("U-1"))
            .unwrap_err();
        assert!(matches!(err, MdmError::CertNotBound(_)));
        let err = f.svc.checkin(None, &token_update("U-1")).unwrap_err();
        assert!(matches!(err, MdmError::NoIdentity));
        assert_ne!(err.status(), 401);

        let after = f.store.enrollment(&udid("U-2")).unwrap().unwrap();
        assert_eq!(after.cert_hash, before.cert_hash);
        assert_eq!(after.last_seen, before.last_seen);
        assert_eq!(
            f.store.cert_owner(&id1.cert_hash).unwrap(),
            Some(udid("U-1"))
        );
    }

    #[test]
    fn re_enrollment_replaces_the_old_enrollment() {
        let f = fixture();
        let now = f.clock.now();
        let old = ident(1, now);
        enroll(&f, "U-1", "SER1", &old);
        f.svc.enqueue(&udid("U-1"), &Command::ProfileList).unwrap();
        // The wiped Mac comes back with a new certificate (and, here, a new UDID).
        let new = ident(2, now);
        enroll(&f, "U-1B", "SER1", &new);
        assert!(f.store.enrollment(&udid("U-1")).unwrap().is_none());
        assert!(f.store.commands(&udid("U-1")).unwrap().is_empty());
        assert_eq!(f.store.cert_owner(&old.cert_hash).unwrap(), None);
        let e = f.store.enrollment_by_serial("SER1").unwrap().unwrap();
        assert_eq!(e.udid, udid("U-1B"));
        assert_eq!(f.store.count(crate::store::mdm::ENROLLMENTS).unwrap(), 1);

        // Same UDID, renewed certificate: the old certificate stops working.
        let renewed = ident(3, now);
        enroll(&f, "U-1B", "SER1", &renewed);
        assert!(matches!(
            f.svc.checkin(Some(&new), &token_update("U-1B")),
            Err(MdmError::CertNotBound(_))
        ));
    }

    #[test]
    fn bootstrap_token_is_sealed_at_rest_and_returned() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let get = Checkin::GetBootstrapToken { udid: udid("U-1") }.to_plist();
        assert_eq!(f.svc.checkin(Some(&id), &get).unwrap(), Reply::Empty);
        let set = Checkin::SetBootstrapToken {
            udid: udid("U-1"),
            token: Some(b"bootstrap-secret".to_vec()),
        }
        .to_plist();
        f.svc.checkin(Some(&id), &set).unwrap();
        let raw =
            serde_json::to_string(&f.store.enrollment(&udid("U-1")).unwrap().unwrap()).unwrap();
        assert!(!raw.contains(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"bootstrap-secret"
        )));
        assert_eq!(
            f.svc.checkin(Some(&id), &get).unwrap(),
            Reply::Plist(bootstrap_token_reply(b"bootstrap-secret"))
        );
    }

    #[test]
    fn unsupported_messages_get_apples_codes_and_never_401() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let ua = Checkin::UserAuthenticate { udid: udid("U-1") }.to_plist();
        assert_eq!(f.svc.checkin(Some(&id), &ua).unwrap_err().status(), 410);
        let dm = Checkin::DeclarativeManagement { udid: udid("U-1") }.to_plist();
        assert_eq!(f.svc.checkin(Some(&id), &dm).unwrap_err().status(), 400);
        assert_eq!(f.svc.checkin(Some(&id), b"junk").unwrap_err().status(), 400);
    }

    #[test]
    fn check_out_unbinds_and_drops_the_queue() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        f.svc.enqueue(&udid("U-1"), &Command::ProfileList).unwrap();
        let out = Checkin::CheckOut { udid: udid("U-1") }.to_plist();
        f.svc.checkin(Some(&id), &out).unwrap();
        let e = f.store.enrollment(&udid("U-1")).unwrap().unwrap();
        assert_eq!(e.state, EnrollmentState::CheckedOut);
        let commands = f.store.commands(&udid("U-1")).unwrap();
        assert!(commands.iter().all(|(_, c)| !c.status.is_pending()));
        assert_eq!(
            commands.len(),
            1,
            "the answered DeviceInformation stays as history"
        );
        assert!(matches!(
            f.svc.enqueue(&udid("U-1"), &Command::ProfileList),
            Err(MdmError::NotEnrolled(_))
        ));
        assert!(
            f.svc
                .connect(Some(&id), &report("U-1", Status::Idle, None))
                .is_err()
        );
    }

    #[test]
    fn history_is_pruned_and_the_queue_is_bounded() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        for _ in 0..KEEP_FINISHED + 10 {
            let u = f.svc.enqueue(&udid("U-1"), &Command::SecurityInfo).unwrap();
            f.svc
                .connect(Some(&id), &report("U-1", Status::Acknowledged, Some(&u)))
                .unwrap();
        }
        // Pruning runs before the answer, so at most one extra survives until the next report.
        f.svc
            .connect(Some(&id), &report("U-1", Status::Idle, None))
            .unwrap();
        assert_eq!(f.svc.history(&udid("U-1")).unwrap().len(), KEEP_FINISHED);
        f.clock.advance(KEEP_FINISHED_FOR + Duration::days(1));
        f.svc
            .connect(Some(&id), &report("U-1", Status::Idle, None))
            .unwrap();
        assert!(f.svc.history(&udid("U-1")).unwrap().is_empty());

        for _ in 0..MAX_PENDING {
            f.svc.enqueue(&udid("U-1"), &Command::SecurityInfo).unwrap();
        }
        assert!(matches!(
            f.svc.enqueue(&udid("U-1"), &Command::SecurityInfo),
            Err(MdmError::QueueFull(_))
        ));
    }

    #[test]
    fn reports_for_unknown_commands_change_nothing() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let err = f
            .svc
            .connect(
                Some(&id),
                &report("U-1", Status::Acknowledged, Some(&CommandUuid::new())),
            )
            .unwrap_err();
        assert!(matches!(err, MdmError::UnknownCommand(_)));
        let bad_lock = Command::DeviceLock {
            pin: "12".into(),
            message: String::new(),
        };
        assert!(f.svc.enqueue(&udid("U-1"), &bad_lock).is_err());
        let history = f.svc.history(&udid("U-1")).unwrap();
        assert_eq!(history.len(), 1, "only the first DeviceInformation");
    }

    #[test]
    fn certificates_near_expiry_get_a_fresh_profile_once() {
        let f = fixture();
        let id = ident(1, f.clock.now());
        enroll(&f, "U-1", "SER1", &id);
        let window = Duration::days(30);
        assert_eq!(
            f.svc
                .renew_expiring(window, |_| Some(b"p".to_vec()))
                .unwrap(),
            0
        );
        f.clock.advance(Duration::days(340));
        assert_eq!(
            f.svc
                .renew_expiring(window, |_| Some(b"p".to_vec()))
                .unwrap(),
            1
        );
        assert_eq!(
            f.svc
                .renew_expiring(window, |_| Some(b"p".to_vec()))
                .unwrap(),
            0
        );
        let h = f.svc.history(&udid("U-1")).unwrap();
        assert_eq!(h[0].request_type, "InstallProfile");
    }
}
