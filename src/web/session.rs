//! Server-side admin sessions: a random cookie value whose SHA-256 keys the session record (so the
//! store never holds a usable cookie), a CSRF token per session, idle and absolute expiry.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::App;
use super::accounts::User;
use super::storage::WebStore;
use crate::store::StoreError;

pub const SESSION_COOKIE: &str = "orchard_session";
/// The CSRF token of visitors who are not signed in (sign-in and setup forms).
pub const CSRF_COOKIE: &str = "orchard_csrf";
pub const FLASH_COOKIE: &str = "orchard_flash";

/// A session is never longer than this, however active.
const ABSOLUTE_LIFETIME: Duration = Duration::hours(12);
/// `last_seen` is written at most this often, so page views do not each write the store.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// A stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: u64,
    pub username: String,
    pub csrf: String,
    pub created: OffsetDateTime,
    pub last_seen: OffsetDateTime,
}

/// A session found for a request, with the key it is stored under.
#[derive(Debug, Clone)]
pub struct LoadedSession {
    pub key: Vec<u8>,
    pub record: Session,
}

/// Starts a session for `user`; returns the cookie value.
pub fn create(app: &App, user: &User) -> Result<String, StoreError> {
    let token = random_token();
    let now = app.now();
    let record = Session {
        user_id: user.id,
        username: user.username.clone(),
        csrf: random_token(),
        created: now,
        last_seen: now,
    };
    app.store.put_session(&key_of(&token), &record)?;
    Ok(token)
}

/// The live session for a cookie value, if any. Expired sessions are deleted; garbage is ignored.
pub fn load(app: &App, token: Option<&str>) -> Result<Option<LoadedSession>, StoreError> {
    let Some(token) = token.filter(|t| well_formed(t)) else {
        return Ok(None);
    };
    let key = key_of(token);
    let Some(mut record) = app.store.get_session(&key)? else {
        return Ok(None);
    };
    let now = app.now();
    let idle = Duration::minutes(i64::from(app.config.session_idle_minutes));
    if now - record.last_seen > idle || now - record.created > ABSOLUTE_LIFETIME {
        app.store.delete_session(&key)?;
        return Ok(None);
    }
    // The account may have been removed since.
    if app.store.user_by_id(record.user_id)?.is_none() {
        app.store.delete_session(&key)?;
        return Ok(None);
    }
    if now - record.last_seen > TOUCH_EVERY {
        record.last_seen = now;
        app.store.put_session(&key, &record)?;
    }
    Ok(Some(LoadedSession { key, record }))
}

/// Deletes sessions that can no longer be used (run at start; live ones expire when presented).
pub fn purge_expired(app: &App) -> Result<usize, StoreError> {
    let now = app.now();
    let idle = Duration::minutes(i64::from(app.config.session_idle_minutes));
    app.store
        .purge_sessions(&|s| now - s.last_seen > idle || now - s.created > ABSOLUTE_LIFETIME)
}

/// Ends a session.
pub fn destroy(app: &App, session: &LoadedSession) -> Result<(), StoreError> {
    app.store.delete_session(&session.key)
}

/// A `Set-Cookie` value for a session-scoped, script-invisible, same-site cookie.
pub fn cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// 32 random bytes, base64url (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a cookie value looks like one of our tokens (so garbage never reaches the store).
pub fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The store key of a token: its SHA-256.
pub fn key_of(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::web::accounts::{Role, User};
    use crate::web::testing;

    fn user(app: &App) -> User {
        let u = User {
            id: 7,
            username: "alice".into(),
            password_hash: String::new(),
            role: Role::Admin,
            created: app.now(),
            last_sign_in: None,
        };
        app.store.insert_user(&u).unwrap();
        u
    }

    #[test]
    fn sessions_expire_when_idle_and_are_kept_alive_by_use() {
        let (app, clock) = testing::app();
        let u = user(&app);
        let token = create(&app, &u).unwrap();
        assert!(load(&app, Some(&token)).unwrap().is_some());
        clock.advance(Duration::minutes(29));
        assert!(load(&app, Some(&token)).unwrap().is_some());
        clock.advance(Duration::minutes(29));
        assert!(
            load(&app, Some(&token)).unwrap().is_some(),
            "use keeps it alive"
        );
        clock.advance(Duration::minutes(31));
        assert!(load(&app, Some(&token)).unwrap().is_none());
        // And it is gone for good.
        clock.set(clock.now() - Duration::minutes(31));
        assert!(load(&app, Some(&token)).unwrap().is_none());
    }

    #[test]
    fn sessions_end_after_twelve_hours_whatever_the_use() {
        let (app, clock) = testing::app();
        let token = create(&app, &user(&app)).unwrap();
        for _ in 0..25 {
            clock.advance(Duration::minutes(29));
            let _ = load(&app, Some(&token)).unwrap();
        }
        assert!(load(&app, Some(&token)).unwrap().is_none());
    }

    #[test]
    fn expired_sessions_are_purged_and_live_ones_kept() {
        let (app, clock) = testing::app();
        let u = user(&app);
        let old = create(&app, &u).unwrap();
        clock.advance(Duration::minutes(31));
        let fresh = create(&app, &u).unwrap();
        assert_eq!(purge_expired(&app).unwrap(), 1);
        assert!(app.store.get_session(&key_of(&old)).unwrap().is_none());
        assert!(load(&app, Some(&fresh)).unwrap().is_some());
    }

    #[test]
    fn garbage_and_unknown_cookies_find_nothing() {
        let (app, _) = testing::app();
        assert!(load(&app, Some("garbage")).unwrap().is_none());
        assert!(load(&app, Some("")).unwrap().is_none());
        assert!(load(&app, Some(&random_token())).unwrap().is_none());
        assert!(load(&app, None).unwrap().is_none());
    }

    #[test]
    fn removing_the_account_ends_its_sessions() {
        let (app, _) = testing::app();
        let u = user(&app);
        let token = create(&app, &u).unwrap();
        app.store.delete_user(&u).unwrap();
        assert!(load(&app, Some(&token)).unwrap().is_none());
    }

    #[test]
    fn store_holds_only_the_hash() {
        let (app, _) = testing::app();
        let token = create(&app, &user(&app)).unwrap();
        assert!(app.store.get_session(token.as_bytes()).unwrap().is_none());
        assert!(app.store.get_session(&key_of(&token)).unwrap().is_some());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
