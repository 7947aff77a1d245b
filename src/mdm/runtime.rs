//! The MDM side as `orchard serve` runs it: the SCEP CA, enrollment profiles signed with Orchard's
//! TLS identity, the check-in and connect endpoints, the APNs pusher on the current push
//! certificate, the link that keeps the device inventory in step with enrollments, and the
//! housekeeping loop (identity renewal before certificates expire, expired challenges).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

use super::auth::Authenticator;
use super::command::Udid;
use super::enroll::{EnrollSettings, Enroller, ProfileSigner, Purpose, TopicSource};
use super::http::MdmEndpoints;
use super::scep::{ScepService, ScepSetupError};
use super::service::{Enrollment, EnrollmentState, Event, MdmService, MdmStorage, Observer};
use crate::ade::inventory::{self, Device, HistoryEntry, Inventory, InventoryError};
use crate::apple::apns::pusher::{DeadTokens, Pusher, PusherSettings};
use crate::apple::apns::{ApnsSettings, DeviceToken};
use crate::apple::push_cert::PushCertService;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::pki::cms::{self, Certificate, SignerKey};
use crate::pki::secret::SecretKey;
use crate::store::Store;

/// Device identities are renewed this long before they expire.
pub const RENEW_WITHIN: Duration = Duration::days(30);
/// How often the housekeeping loop runs.
const HOUSEKEEPING_EVERY: StdDuration = StdDuration::from_secs(3600);
/// A check-in is written to the inventory at most this often per device (the enrollment record
/// itself has the exact time).
const LAST_CHECKIN_GRANULARITY: Duration = Duration::minutes(5);

/// Why the MDM side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MdmSetupError {
    #[error(transparent)]
    Scep(#[from] ScepSetupError),
    #[error("the TLS identity cannot sign enrollment profiles: {0}")]
    Signer(String),
}

/// Fixed settings of the MDM side.
#[derive(Debug, Clone)]
pub struct MdmSettings {
    /// `https://host:port` as devices reach Orchard.
    pub base_url: String,
    pub organization: String,
    /// Orchard's local CA, put in profiles when it signed the TLS certificate.
    pub root_ca_der: Option<Vec<u8>>,
    pub apns: ApnsSettings,
    pub pusher: PusherSettings,
}

/// What the MDM side is built from.
pub struct MdmParts {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub secret: Arc<SecretKey>,
    pub push_certs: Arc<PushCertService>,
    pub inventory: Inventory,
    /// Signs enrollment profiles: the TLS certificate chain (leaf first, DER) and its key.
    pub signer: TlsSigner,
    pub settings: MdmSettings,
}

/// The running MDM side. Cheap to clone.
#[derive(Clone)]
pub struct Mdm {
    pub enroller: Enroller,
    pub scep: ScepService,
    pub endpoints: MdmEndpoints,
    pub pusher: Pusher,
}

impl Mdm {
    pub fn new(p: MdmParts) -> Result<Mdm, MdmSetupError> {
        let enroller = Enroller::new(
            p.store.clone(),
            p.clock.clone(),
            p.signer,
            PushTopic(p.push_certs.clone()),
            EnrollSettings {
                base_url: p.settings.base_url,
                organization: p.settings.organization,
                root_ca_der: p.settings.root_ca_der,
                locked: false,
            },
        );
        let scep = ScepService::load_or_create(
            p.store.clone(),
            &p.secret,
            enroller.clone(),
            p.clock.clone(),
            p.metrics.clone(),
        )?;
        let pusher = Pusher::new(
            p.push_certs.identity(),
            p.settings.apns,
            p.settings.pusher,
            Arc::new(ForgetDeadTokens(p.store.clone())),
            p.push_certs.clone(),
            p.metrics.clone(),
        );
        let service = MdmService::new(
            p.store.clone(),
            p.clock.clone(),
            p.metrics,
            p.secret,
            pusher.clone(),
        );
        service.set_observer(InventoryLink(p.inventory));
        let auth = Authenticator::new(scep.ca_certificate().clone(), p.clock);
        Ok(Mdm {
            enroller,
            scep,
            endpoints: MdmEndpoints::new(service, auth),
            pusher,
        })
    }

    pub fn service(&self) -> &MdmService {
        self.endpoints.service()
    }

    /// The DER subject of the SCEP CA, so TLS asks Macs for identities it issued.
    pub fn ca_subject_der(&self) -> Option<Vec<u8>> {
        use der::Encode;
        self.scep
            .ca_certificate()
            .tbs_certificate()
            .subject()
            .to_der()
            .ok()
    }

    /// Sends pushes and does the housekeeping until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let pusher = self.pusher.clone();
        let push_loop = pusher.run(stopped(shutdown.clone()));
        let housekeeping = async {
            let mut stop = shutdown.clone();
            loop {
                let this = self.clone();
                match tokio::task::spawn_blocking(move || this.housekeeping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "MDM housekeeping failed"),
                    Err(e) => tracing::error!(error = %e, "MDM housekeeping panicked"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        tokio::join!(push_loop, housekeeping);
    }

    /// One round: queue fresh enrollment profiles for identities that expire soon, forget
    /// expired challenges and links.
    pub fn housekeeping(&self) -> Result<(), String> {
        let renewed = self
            .service()
            .renew_expiring(RENEW_WITHIN, |e| {
                self.enroller
                    .profile(Purpose::Renewal)
                    .inspect_err(|err| tracing::warn!(udid = %e.udid, error = %err, "cannot make a renewal profile"))
                    .ok()
            })
            .map_err(|e| e.to_string())?;
        if renewed > 0 {
            tracing::info!(
                renewed,
                "queued new enrollment profiles for device identities that expire soon"
            );
        }
        self.enroller.purge_expired().map_err(|e| e.to_string())?;
        Ok(())
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Signs enrollment profiles with Orchard's TLS identity: a Mac that trusts the TLS certificate
/// (its issuer is in the profile, or it is publicly trusted) shows the profile as verified.
pub struct TlsSigner {
    cert: Certificate,
    key: SignerKey,
    chain: Vec<Certificate>,
}

impl TlsSigner {
    /// Signs with the identity Orchard serves TLS with.
    pub fn from_identity(
        identity: &crate::pki::ca::TlsIdentity,
    ) -> Result<TlsSigner, MdmSetupError> {
        let chain: Vec<Vec<u8>> = identity.chain.iter().map(|c| c.to_vec()).collect();
        TlsSigner::new(&chain, identity.key.secret_der())
    }

    /// `chain` is leaf first (DER); `key_der` is the leaf's PKCS#8 (or PKCS#1) private key.
    pub fn new(chain: &[Vec<u8>], key_der: &[u8]) -> Result<TlsSigner, MdmSetupError> {
        let mut certs = chain
            .iter()
            .map(|der| cms::load_certificate(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MdmSetupError::Signer(e.to_string()))?;
        if certs.is_empty() {
            return Err(MdmSetupError::Signer("no certificate".into()));
        }
        let cert = certs.remove(0);
        let key = SignerKey::load(key_der).map_err(|e| MdmSetupError::Signer(e.to_string()))?;
        Ok(TlsSigner {
            cert,
            key,
            chain: certs,
        })
    }
}

impl ProfileSigner for TlsSigner {
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        cms::sign_attached(content, &self.cert, &self.key, &self.chain).map_err(|e| e.to_string())
    }
}

/// The topic of the installed push certificate (read on every profile, so a new one counts).
struct PushTopic(Arc<PushCertService>);

impl TopicSource for PushTopic {
    fn topic(&self) -> Option<String> {
        self.0.topic().map(|t| t.as_str().to_string())
    }
}

/// APNs said a token is dead (410): stop pushing to it until the Mac sends a new one.
struct ForgetDeadTokens(Store);

impl DeadTokens for ForgetDeadTokens {
    fn token_unregistered(&self, token: &DeviceToken, since: Option<OffsetDateTime>) {
        let hex = token.to_hex();
        let mut after: Option<Udid> = None;
        loop {
            let page = match MdmStorage::enrollments(&self.0, after.as_ref(), 500) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot forget a dead push token");
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = Some(last.udid.clone());
            for mut e in page {
                // A TokenUpdate after APNs's date brought a token that may be alive again.
                let stale = since.is_none_or(|s| e.last_seen <= s);
                if e.push_token.as_deref() == Some(hex.as_str()) && stale {
                    e.push_token = None;
                    e.push_magic = None;
                    match self.0.put_enrollment(&e) {
                        Ok(()) => {
                            tracing::info!(udid = %e.udid, "APNs says this Mac's push token is no longer valid; pushes stop until it sends a new one")
                        }
                        Err(err) => {
                            tracing::warn!(udid = %e.udid, error = %err, "cannot forget a dead push token")
                        }
                    }
                    return;
                }
            }
        }
    }
}

/// Keeps the inventory (the Devices page) in step with enrollments. A Mac enrolled by hand that
/// Apple never listed gets a device record of its own.
struct InventoryLink(Inventory);

impl Observer for InventoryLink {
    fn observe(&self, e: &Enrollment, event: Event) {
        let Some(serial) = e.facts.serial_number.as_deref() else {
            return;
        };
        if let Err(err) = self.apply(serial, e, event) {
            tracing::warn!(%serial, error = %err, "cannot update the device inventory");
        }
    }
}

impl InventoryLink {
    fn apply(&self, serial: &str, e: &Enrollment, event: Event) -> Result<(), InventoryError> {
        self.0
            .update(serial, |existing| changed(existing, serial, e, event))
            .map(|_| ())
    }
}

/// The device record after `event`, or `None` when nothing worth writing changed.
fn changed(
    existing: Option<Device>,
    serial: &str,
    e: &Enrollment,
    event: Event,
) -> Option<(Device, Vec<HistoryEntry>)> {
    let now = e.last_seen;
    let udid = e.udid.to_string();
    if event == Event::Seen
        && let Some(d) = &existing
        && d.udid.as_deref() == Some(udid.as_str())
        && d.enrollment == inventory::Enrollment::Enrolled
        && d.last_checkin
            .is_some_and(|t| now - t < LAST_CHECKIN_GRANULARITY)
    {
        return None;
    }
    let mut d = existing.unwrap_or_else(|| Device::new(serial, None, now));
    let what = match event {
        Event::Authenticated => {
            d.enrollment = inventory::Enrollment::Enrolling;
            Some("Installed the enrollment profile and received its device identity")
        }
        Event::Enrolled => {
            d.enrollment = inventory::Enrollment::Enrolled;
            d.enrolled_at = Some(now);
            Some("Enrolled: Orchard can send it commands")
        }
        Event::CheckedOut => {
            d.enrollment = inventory::Enrollment::Unenrolled;
            Some("Unenrolled: the MDM profile was removed from the Mac")
        }
        Event::FactsUpdated | Event::Seen => {
            if e.state == EnrollmentState::Enrolled {
                d.enrollment = inventory::Enrollment::Enrolled;
            }
            None
        }
    };
    d.udid = Some(udid);
    d.last_checkin = Some(now);
    let f = &e.facts;
    if d.model.is_empty()
        && let Some(m) = f.model_name.as_ref().or(f.product_name.as_ref())
    {
        d.model = m.clone();
    }
    if let Some(v) = &f.os_version {
        d.os = format!("macOS {v}");
    }
    // Apple's description wins; a Mac enrolled by hand is described by its own name.
    if d.token_id.is_none()
        && let Some(name) = &f.device_name
    {
        d.description = name.clone();
    }
    d.updated_at = now;
    let history = what
        .map(|what| HistoryEntry {
            at: now,
            what: what.to_string(),
        })
        .into_iter()
        .collect();
    Some((d, history))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ade::inventory::DeviceState;
    use crate::mdm::checkin::DeviceFacts;

    fn enrollment(serial: &str, state: EnrollmentState, at: OffsetDateTime) -> Enrollment {
        Enrollment {
            udid: Udid::parse("0000FE00-5A1E00000001").unwrap(),
            state,
            facts: DeviceFacts {
                serial_number: Some(serial.into()),
                model_name: Some("MacBook Air".into()),
                os_version: Some("15.4".into()),
                device_name: Some("Library Mac 3".into()),
                ..DeviceFacts::default()
            },
            cert_hash: "ab".into(),
            cert_not_after: at + Duration::days(365),
            topic: "t".into(),
            push_token: None,
            push_magic: None,
            awaiting_configuration: false,
            bootstrap_token: None,
            enrolled_at: at,
            last_seen: at,
            renewal_queued_at: None,
        }
    }

    #[test]
    fn a_mac_enrolled_by_hand_gets_a_device_record_of_its_own() {
        let now = OffsetDateTime::now_utc();
        let e = enrollment("MANUAL1", EnrollmentState::Authenticated, now);
        let (d, history) = changed(None, "MANUAL1", &e, Event::Authenticated).unwrap();
        assert_eq!(d.token_id, None);
        assert_eq!(d.state(), DeviceState::Enrolling);
        assert_eq!(d.description, "Library Mac 3");
        assert_eq!(d.model, "MacBook Air");
        assert_eq!(d.os, "macOS 15.4");
        assert_eq!(history.len(), 1);
        let e = enrollment("MANUAL1", EnrollmentState::Enrolled, now);
        let (d, _) = changed(Some(d), "MANUAL1", &e, Event::Enrolled).unwrap();
        assert_eq!(d.state(), DeviceState::Enrolled);
        assert_eq!(d.enrolled_at, Some(now));
    }

    #[test]
    fn apples_fields_win_and_frequent_check_ins_are_not_rewritten() {
        let now = OffsetDateTime::now_utc();
        let mut apple = Device::new("C02X", Some("token-1"), now);
        apple.description = "MacBook Air 13\" M3".into();
        apple.model = "MacBook Air".into();
        let e = enrollment("C02X", EnrollmentState::Enrolled, now);
        let (d, _) = changed(Some(apple), "C02X", &e, Event::Enrolled).unwrap();
        assert_eq!(d.description, "MacBook Air 13\" M3");
        assert_eq!(d.token_id.as_deref(), Some("token-1"));
        let soon = enrollment(
            "C02X",
            EnrollmentState::Enrolled,
            now + Duration::minutes(1),
        );
        assert!(changed(Some(d.clone()), "C02X", &soon, Event::Seen).is_none());
        let later = enrollment(
            "C02X",
            EnrollmentState::Enrolled,
            now + Duration::minutes(6),
        );
        let (d2, history) = changed(Some(d), "C02X", &later, Event::Seen).unwrap();
        assert_eq!(d2.last_checkin, Some(later.last_seen));
        assert!(history.is_empty());
        let out = enrollment(
            "C02X",
            EnrollmentState::CheckedOut,
            now + Duration::minutes(7),
        );
        let (d3, _) = changed(Some(d2), "C02X", &out, Event::CheckedOut).unwrap();
        assert_ne!(d3.state(), DeviceState::Enrolled);
    }
}
