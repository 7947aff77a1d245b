//! [`WebStore`] on the store: accounts (with a username index), sessions, the setup token, sign-in
//! failure counts, the audit log (keys sort newest first) and API keys.

use time::{Duration, OffsetDateTime};

use super::{Store, StoreError, Table, be};
use crate::web::accounts::{Failures, Role, User};
use crate::web::api::ApiKeyRecord;
use crate::web::audit::AuditEvent;
use crate::web::session::Session;
use crate::web::setup::SetupToken;
use crate::web::storage::WebStore;

const USERS: Table = Table::new("web.users");
const USERNAMES: Table = Table::new("web.usernames");
const SESSIONS: Table = Table::new("web.sessions");
const SETUP: Table = Table::new("web.setup");
const FAILURES: Table = Table::new("web.signin_failures");
const AUDIT: Table = Table::new("web.audit");
const API_KEYS: Table = Table::new("web.api_keys");

const SETUP_KEY: &[u8] = b"token";

impl WebStore for Store {
    fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError> {
        self.get(USERS, &be(id))
    }

    fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        match self.get::<u64>(USERNAMES, username.as_bytes())? {
            Some(id) => self.user_by_id(id),
            None => Ok(None),
        }
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.scan::<User>(USERS, b"")
            .map(|r| r.map(|(_, u)| u))
            .collect()
    }

    fn admin_count(&self) -> Result<usize, StoreError> {
        Ok(self
            .users()?
            .iter()
            .filter(|u| u.role == Role::Admin)
            .count())
    }

    fn insert_user(&self, user: &User) -> Result<bool, StoreError> {
        // Claim the name atomically; only the claimant writes the record.
        let claimed = self.update::<u64, _>(USERNAMES, user.username.as_bytes(), |old| {
            old.or(Some(user.id))
        })?;
        if claimed != Some(user.id) {
            return Ok(false);
        }
        self.put(USERS, &be(user.id), user)?;
        Ok(true)
    }

    fn save_user(&self, user: &User) -> Result<(), StoreError> {
        self.put(USERS, &be(user.id), user)
    }

    fn delete_user(&self, user: &User) -> Result<(), StoreError> {
        let mut batch = self.batch();
        batch.delete(USERS, &be(user.id));
        batch.delete(USERNAMES, user.username.as_bytes());
        batch.delete(FAILURES, user.username.as_bytes());
        self.apply(batch)?;
        self.delete_sessions_of(user.id)?;
        Ok(())
    }

    fn get_session(&self, key: &[u8]) -> Result<Option<Session>, StoreError> {
        self.get(SESSIONS, key)
    }

    fn put_session(&self, key: &[u8], session: &Session) -> Result<(), StoreError> {
        self.put(SESSIONS, key, session)
    }

    fn delete_session(&self, key: &[u8]) -> Result<(), StoreError> {
        self.delete(SESSIONS, key)
    }

    fn delete_sessions_of(&self, user_id: u64) -> Result<usize, StoreError> {
        self.purge_sessions(&|s| s.user_id == user_id)
    }

    fn purge_sessions(&self, expired: &dyn Fn(&Session) -> bool) -> Result<usize, StoreError> {
        let mut batch = self.batch();
        for item in self.scan::<Session>(SESSIONS, b"") {
            let (key, session) = item?;
            if expired(&session) {
                batch.delete(SESSIONS, &key);
            }
        }
        let n = batch.len();
        self.apply(batch)?;
        Ok(n)
    }

    fn setup_token(&self) -> Result<Option<SetupToken>, StoreError> {
        self.get(SETUP, SETUP_KEY)
    }

    fn put_setup_token(&self, token: &SetupToken) -> Result<(), StoreError> {
        self.put(SETUP, SETUP_KEY, token)
    }

    fn clear_setup_token(&self) -> Result<(), StoreError> {
        self.delete(SETUP, SETUP_KEY)
    }

    fn record_failure(
        &self,
        username: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<Failures, StoreError> {
        let written = self.update::<Failures, _>(FAILURES, username.as_bytes(), |old| {
            Some(match old {
                Some(f) if now - f.first < window => Failures {
                    count: f.count.saturating_add(1),
                    first: f.first,
                    last: now,
                },
                _ => Failures {
                    count: 1,
                    first: now,
                    last: now,
                },
            })
        })?;
        Ok(written.unwrap_or(Failures {
            count: 1,
            first: now,
            last: now,
        }))
    }

    fn failures(&self, username: &str) -> Result<Option<Failures>, StoreError> {
        self.get(FAILURES, username.as_bytes())
    }

    fn clear_failures(&self, username: &str) -> Result<(), StoreError> {
        self.delete(FAILURES, username.as_bytes())
    }

    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        // Inverted time then inverted sequence: a forward range reads newest first.
        let nanos = u64::try_from(event.at.unix_timestamp_nanos().max(0)).unwrap_or(u64::MAX);
        let seq = self.next_id()?;
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&be(u64::MAX - nanos));
        key.extend_from_slice(&be(u64::MAX - seq));
        self.put(AUDIT, &key, event)
    }

    fn audit_page(
        &self,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError> {
        let mut rows = self.range::<AuditEvent>(AUDIT, from.unwrap_or(b""), limit + 1)?;
        let next = if rows.len() > limit {
            rows.pop().map(|(k, _)| k)
        } else {
            None
        };
        Ok((rows.into_iter().map(|(_, e)| e).collect(), next))
    }

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get(API_KEYS, id.as_bytes())
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.scan::<ApiKeyRecord>(API_KEYS, b"")
            .map(|r| r.map(|(_, k)| k))
            .collect()
    }

    fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.put(API_KEYS, key.id.as_bytes(), key)
    }

    fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        self.delete(API_KEYS, id.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    //! The web storage contract, run on both backends.
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-09-01 08:00 UTC);

    fn backends() -> Vec<(Store, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let sled = Store::open(dir.path()).unwrap();
        vec![(Store::memory(), None), (sled, Some(dir))]
    }

    fn user(id: u64, name: &str) -> User {
        User {
            id,
            username: name.into(),
            password_hash: "h".into(),
            role: Role::Admin,
            created: T0,
            last_sign_in: None,
        }
    }

    #[test]
    fn usernames_are_unique_and_indexed() {
        for (store, _dir) in backends() {
            assert!(store.insert_user(&user(1, "alice")).unwrap());
            assert!(!store.insert_user(&user(2, "alice")).unwrap());
            assert!(store.user_by_id(2).unwrap().is_none());
            assert!(store.insert_user(&user(3, "bob")).unwrap());
            assert_eq!(store.user_by_name("alice").unwrap().unwrap().id, 1);
            assert_eq!(store.admin_count().unwrap(), 2);
            store.delete_user(&user(1, "alice")).unwrap();
            assert!(store.user_by_name("alice").unwrap().is_none());
            assert!(store.insert_user(&user(4, "alice")).unwrap());
            let names: Vec<_> = store
                .users()
                .unwrap()
                .into_iter()
                .map(|u| u.username)
                .collect();
            assert_eq!(names, vec!["bob", "alice"]);
        }
    }

    #[test]
    fn failures_count_within_the_window_then_restart() {
        for (store, _dir) in backends() {
            let w = Duration::minutes(15);
            assert_eq!(store.record_failure("a", T0, w).unwrap().count, 1);
            assert_eq!(
                store
                    .record_failure("a", T0 + Duration::minutes(5), w)
                    .unwrap()
                    .count,
                2
            );
            assert_eq!(
                store
                    .record_failure("a", T0 + Duration::minutes(16), w)
                    .unwrap()
                    .count,
                1
            );
            store.clear_failures("a").unwrap();
            assert!(store.failures("a").unwrap().is_none());
        }
    }

    #[test]
    fn audit_pages_are_newest_first_and_complete() {
        for (store, _dir) in backends() {
            for i in 0..25 {
                let e = AuditEvent {
                    at: T0 + Duration::seconds(i / 2),
                    actor: "alice".into(),
                    action: format!("action {i}"),
                    object: String::new(),
                };
                store.append_audit(&e).unwrap();
            }
            let mut seen = Vec::new();
            let mut cursor: Option<Vec<u8>> = None;
            loop {
                let (events, next) = store.audit_page(cursor.as_deref(), 10).unwrap();
                seen.extend(events.into_iter().map(|e| e.action));
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            let expected: Vec<_> = (0..25).rev().map(|i| format!("action {i}")).collect();
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn sessions_of_a_user_are_ended_together() {
        for (store, _dir) in backends() {
            let s = |uid| Session {
                user_id: uid,
                username: "x".into(),
                csrf: "c".into(),
                created: T0,
                last_seen: T0,
            };
            store.put_session(b"k1", &s(1)).unwrap();
            store.put_session(b"k2", &s(1)).unwrap();
            store.put_session(b"k3", &s(2)).unwrap();
            assert_eq!(store.delete_sessions_of(1).unwrap(), 2);
            assert!(store.get_session(b"k3").unwrap().is_some());
            assert!(store.get_session(b"k1").unwrap().is_none());
        }
    }
}
