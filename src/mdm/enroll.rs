//! Enrollment: one-time SCEP challenges, manual enrollment (a one-time profile download for a
//! Mac that did not come through Apple School Manager), and building signed enrollment profiles.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::profile::{self, ProfileSpec};
use crate::clock::SharedClock;
use crate::store::StoreError;

/// How long a SCEP challenge stays usable after its profile was made.
pub const CHALLENGE_LIFETIME: Duration = Duration::hours(24);
/// How long a manual enrollment download link stays usable.
pub const TICKET_LIFETIME: Duration = Duration::hours(24);

/// Why a profile was made, and so what its challenge may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    Manual,
    Renewal,
    Automated,
}

/// A one-time SCEP challenge (keyed by its code).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    pub purpose: Purpose,
    /// The subject common name the profile asked for.
    pub subject_cn: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A manual enrollment download link (keyed by its random id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    /// What the admin typed to recognise the Mac ("Library Mac 3"), or a serial number.
    pub label: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The storage enrollment needs. `take_*` remove atomically, so a code works once.
pub trait EnrollStorage: Send + Sync + 'static {
    fn put_challenge(&self, code: &str, c: &Challenge) -> Result<(), StoreError>;
    fn take_challenge(&self, code: &str) -> Result<Option<Challenge>, StoreError>;
    fn put_ticket(&self, id: &str, t: &Ticket) -> Result<(), StoreError>;
    fn take_ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError>;
    /// Deletes challenges and tickets that expired before `now`; returns how many.
    fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError>;
}

/// Signs a profile (CMS SignedData with the content attached).
pub trait ProfileSigner: Send + Sync + 'static {
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String>;
}

/// The APNs topic of the current push certificate, if one is installed.
pub trait TopicSource: Send + Sync + 'static {
    fn topic(&self) -> Option<String>;
}

/// Fixed settings of the profiles Orchard hands out.
#[derive(Debug, Clone)]
pub struct EnrollSettings {
    /// `https://host:port` as devices reach Orchard.
    pub base_url: String,
    pub organization: String,
    /// Orchard's local CA, when it serves TLS (so the Mac trusts it).
    pub root_ca_der: Option<Vec<u8>>,
    /// Locked enrollment: the Mac's user cannot remove the profile.
    pub locked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "Orchard has no push certificate yet. Upload it on the Push certificate page, then try again."
    )]
    NoPushCertificate,
    #[error("this enrollment link was already used or has expired. Make a new one.")]
    TicketUnusable,
    #[error("the SCEP challenge was already used or has expired")]
    ChallengeUnusable,
    #[error("the name is empty or longer than 100 characters")]
    BadLabel,
    #[error("the profile could not be signed: {0}")]
    Sign(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Issues challenges, tickets and signed profiles. Cheap to clone.
#[derive(Clone)]
pub struct Enroller {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn EnrollStorage>,
    clock: SharedClock,
    signer: Box<dyn ProfileSigner>,
    topic: Box<dyn TopicSource>,
    settings: EnrollSettings,
}

impl Enroller {
    pub fn new(
        store: impl EnrollStorage,
        clock: SharedClock,
        signer: impl ProfileSigner,
        topic: impl TopicSource,
        settings: EnrollSettings,
    ) -> Self {
        Enroller {
            inner: Arc::new(Inner {
                store: Box::new(store),
                clock,
                signer: Box::new(signer),
                topic: Box::new(topic),
                settings,
            }),
        }
    }

    /// A signed enrollment profile with a fresh one-time challenge and a unique subject.
    pub fn profile(&self, purpose: Purpose) -> Result<Vec<u8>, EnrollError> {
        let topic = self
            .inner
            .topic
            .topic()
            .ok_or(EnrollError::NoPushCertificate)?;
        let code = random_code();
        let subject_cn = format!("orchard-{}", uuid::Uuid::new_v4());
        let now = self.inner.clock.now();
        self.inner.store.put_challenge(
            &code,
            &Challenge {
                purpose,
                subject_cn: subject_cn.clone(),
                expires_at: now + CHALLENGE_LIFETIME,
            },
        )?;
        let s = &self.inner.settings;
        let unsigned = profile::build(&ProfileSpec {
            base_url: &s.base_url,
            topic: &topic,
            challenge: &code,
            subject_cn: &subject_cn,
            organization: &s.organization,
            root_ca_der: s.root_ca_der.as_deref(),
            locked: s.locked,
        });
        self.inner.signer.sign(&unsigned).map_err(EnrollError::Sign)
    }

    /// Redeems a SCEP challenge: succeeds once, before it expires.
    pub fn redeem_challenge(&self, code: &str) -> Result<Challenge, EnrollError> {
        if code.is_empty() || code.len() > 128 {
            return Err(EnrollError::ChallengeUnusable);
        }
        let now = self.inner.clock.now();
        match self.inner.store.take_challenge(code)? {
            Some(c) if c.expires_at > now => Ok(c),
            _ => Err(EnrollError::ChallengeUnusable),
        }
    }

    /// A one-time download link for a manual enrollment profile; returns its id.
    pub fn new_ticket(
        &self,
        label: &str,
        created_by: &str,
    ) -> Result<(String, Ticket), EnrollError> {
        let label = label.trim();
        if label.is_empty() || label.chars().count() > 100 {
            return Err(EnrollError::BadLabel);
        }
        if self.inner.topic.topic().is_none() {
            return Err(EnrollError::NoPushCertificate);
        }
        let now = self.inner.clock.now();
        let t = Ticket {
            label: label.to_string(),
            created_by: created_by.to_string(),
            created_at: now,
            expires_at: now + TICKET_LIFETIME,
        };
        let id = random_code();
        self.inner.store.put_ticket(&id, &t)?;
        Ok((id, t))
    }

    /// Downloads the profile of a manual enrollment link; the link then stops working.
    pub fn redeem_ticket(&self, id: &str) -> Result<Vec<u8>, EnrollError> {
        if id.is_empty() || id.len() > 128 {
            return Err(EnrollError::TicketUnusable);
        }
        // Check the push certificate first, so a missing one does not burn the link.
        if self.inner.topic.topic().is_none() {
            return Err(EnrollError::NoPushCertificate);
        }
        let now = self.inner.clock.now();
        match self.inner.store.take_ticket(id)? {
            Some(t) if t.expires_at > now => self.profile(Purpose::Manual),
            _ => Err(EnrollError::TicketUnusable),
        }
    }

    /// Housekeeping: forget expired challenges and links.
    pub fn purge_expired(&self) -> Result<usize, EnrollError> {
        Ok(self.inner.store.purge_expired(self.inner.clock.now())?)
    }
}

/// 32 random bytes as hex: unguessable, URL- and plist-safe.
fn random_code() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    // Invariant: the system random source only fails if the OS has none, which Orchard cannot
    // run without; fall back to a v4 UUID's randomness rather than panic.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        b[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        b[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::mdm::profile::ProfileView;
    use crate::store::Store;

    struct Unsigned;
    impl ProfileSigner for Unsigned {
        fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
            Ok(content.to_vec())
        }
    }
    struct FixedTopic(Option<&'static str>);
    impl TopicSource for FixedTopic {
        fn topic(&self) -> Option<String> {
            self.0.map(str::to_string)
        }
    }

    fn enroller(topic: Option<&'static str>) -> (Enroller, Arc<ManualClock>) {
        let clock = ManualClock::starting_now();
        let e = Enroller::new(
            Store::memory(),
            clock.clone(),
            Unsigned,
            FixedTopic(topic),
            EnrollSettings {
                base_url: "https://orchard.test".into(),
                organization: "Hill School".into(),
                root_ca_der: None,
                locked: false,
            },
        );
        (e, clock)
    }

    #[test]
    fn a_challenge_works_once() {
        let (e, _) = enroller(Some("com.apple.mgmt.External.t"));
        let p = ProfileView::parse(&e.profile(Purpose::Manual).unwrap()).unwrap();
        assert_eq!(p.topic, "com.apple.mgmt.External.t");
        let c = e.redeem_challenge(&p.challenge).unwrap();
        assert!(p.subject.contains(&("CN".into(), c.subject_cn)));
        assert!(matches!(
            e.redeem_challenge(&p.challenge),
            Err(EnrollError::ChallengeUnusable)
        ));
        assert!(e.redeem_challenge("guess").is_err());
    }

    #[test]
    fn an_expired_challenge_is_refused() {
        let (e, clock) = enroller(Some("t"));
        let p = ProfileView::parse(&e.profile(Purpose::Manual).unwrap()).unwrap();
        clock.advance(CHALLENGE_LIFETIME + Duration::seconds(1));
        assert!(e.redeem_challenge(&p.challenge).is_err());
    }

    #[test]
    fn each_profile_has_its_own_challenge_and_subject() {
        let (e, _) = enroller(Some("t"));
        let a = ProfileView::parse(&e.profile(Purpose::Manual).unwrap()).unwrap();
        let b = ProfileView::parse(&e.profile(Purpose::Manual).unwrap()).unwrap();
        assert_ne!(a.challenge, b.challenge);
        assert_ne!(a.subject, b.subject);
    }

    #[test]
    fn a_manual_link_downloads_once_and_expires() {
        let (e, clock) = enroller(Some("t"));
        let (id, _) = e.new_ticket("Library Mac 3", "admin").unwrap();
        assert!(e.redeem_ticket(&id).is_ok());
        assert!(matches!(
            e.redeem_ticket(&id),
            Err(EnrollError::TicketUnusable)
        ));
        let (id, _) = e.new_ticket("Library Mac 4", "admin").unwrap();
        clock.advance(TICKET_LIFETIME + Duration::seconds(1));
        assert!(e.redeem_ticket(&id).is_err());
        assert!(matches!(
            e.new_ticket("  ", "admin"),
            Err(EnrollError::BadLabel)
        ));
    }

    #[test]
    fn without_a_push_certificate_nothing_is_handed_out() {
        let (e, _) = enroller(None);
        assert!(matches!(
            e.profile(Purpose::Manual),
            Err(EnrollError::NoPushCertificate)
        ));
        assert!(matches!(
            e.new_ticket("Mac", "admin"),
            Err(EnrollError::NoPushCertificate)
        ));
    }

    #[test]
    fn purge_forgets_expired_codes_only() {
        let (e, clock) = enroller(Some("t"));
        e.profile(Purpose::Manual).unwrap();
        e.new_ticket("Mac", "admin").unwrap();
        assert_eq!(e.purge_expired().unwrap(), 0);
        clock.advance(Duration::days(2));
        let fresh = ProfileView::parse(&e.profile(Purpose::Manual).unwrap()).unwrap();
        assert_eq!(e.purge_expired().unwrap(), 2);
        assert!(e.redeem_challenge(&fresh.challenge).is_ok());
    }
}
