//! Admin accounts: usernames, Argon2id password hashes (computed off the async threads), sign-in
//! with throttling of repeated failures per account (in the store) and per client address (in
//! memory).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::App;
use super::storage::WebStore;
use crate::store::{Store, StoreError};

/// Failed sign-ins allowed per account within [`FAILURE_WINDOW`] before it is locked for the rest of
/// the window.
pub const MAX_FAILURES_PER_ACCOUNT: u32 = 5;
/// Failed sign-ins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
pub const FAILURE_WINDOW: Duration = Duration::minutes(15);
/// Addresses remembered at most (oldest forgotten first), so the map cannot grow without bound.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

pub const MIN_PASSWORD_LEN: usize = 10;
const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    /// A person who signs in only during enrollment (user affinity), never to the admin UI.
    EndUser,
}

/// An account.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub created: OffsetDateTime,
    pub last_sign_in: Option<OffsetDateTime>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Failed sign-ins of one account in the current window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failures {
    pub count: u32,
    pub first: OffsetDateTime,
    pub last: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("the username {0} is already taken")]
    Taken(String),
    #[error("there is no account called {0}")]
    NoSuchUser(String),
    #[error("the password could not be hashed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a sign-in failed. The message never says whether the username exists.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("The username or password is not right.")]
    Wrong,
    #[error("Too many failed sign-ins. Wait {minutes} minutes, then try again.")]
    Throttled { minutes: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the password could not be checked: {0}")]
    Hash(String),
}

/// A username as admins type it: lowercased, 1-64 of `a-z 0-9 . _ @ -`.
pub fn parse_username(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return Err("Enter a username".into());
    }
    if name.chars().count() > 64 {
        return Err("Use 64 characters or fewer for the username".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err("Use only letters, numbers and . _ @ - in the username".into());
    }
    Ok(name)
}

/// Checks a new password (and its confirmation when given).
pub fn check_new_password(password: &str, confirm: Option<&str>) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "Use at least {MIN_PASSWORD_LEN} characters for the password"
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "Use at most {MAX_PASSWORD_LEN} characters for the password"
        ));
    }
    if let Some(confirm) = confirm
        && confirm != password
    {
        return Err("The two passwords do not match".into());
    }
    Ok(())
}

/// Hashes with Argon2id (default parameters) on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || hash_password_blocking(&password))
        .await
        .map_err(|e| AccountError::Hash(e.to_string()))?
}

/// [`hash_password`] for the CLI (no runtime).
pub fn hash_password_blocking(password: &str) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Checks a password against a stored hash on the blocking pool. A malformed hash never matches.
pub async fn verify_password(password: String, hash: String) -> Result<bool, SignInError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .map_err(|e| SignInError::Hash(e.to_string()))
}

/// Creates an admin account (username and password already checked by the caller's form).
pub fn create_admin_with_hash(
    store: &Store,
    now: OffsetDateTime,
    username: &str,
    password_hash: String,
) -> Result<User, AccountError> {
    let user = User {
        id: store.next_id()?,
        username: username.to_string(),
        password_hash,
        role: Role::Admin,
        created: now,
        last_sign_in: None,
    };
    if !store.insert_user(&user)? {
        return Err(AccountError::Taken(username.to_string()));
    }
    Ok(user)
}

/// Sets a new password hash and ends the account's sessions.
pub fn set_password_hash(
    store: &Store,
    username: &str,
    password_hash: String,
) -> Result<User, AccountError> {
    let mut user = store
        .user_by_name(username)?
        .ok_or_else(|| AccountError::NoSuchUser(username.to_string()))?;
    user.password_hash = password_hash;
    store.save_user(&user)?;
    store.delete_sessions_of(user.id)?;
    Ok(user)
}

/// A hash of a random password, checked when the username does not exist so that a wrong
/// username takes as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| hash_password_blocking(&super::session::random_token()).unwrap_or_default())
}

/// Checks a sign-in. Throttles per account and per address; clears the account's count on success.
pub async fn sign_in(
    app: &App,
    username: &str,
    password: &str,
    from: IpAddr,
) -> Result<User, SignInError> {
    let now = app.now();
    let name = parse_username(username).unwrap_or_default();
    if let Some(minutes) = app.throttle.blocked(from, now) {
        return Err(SignInError::Throttled { minutes });
    }
    if let Some(f) = app.store.failures(&name)?
        && f.count >= MAX_FAILURES_PER_ACCOUNT
        && now - f.first < FAILURE_WINDOW
    {
        return Err(SignInError::Throttled {
            minutes: minutes_left(f.first + FAILURE_WINDOW - now),
        });
    }
    let user = app
        .store
        .user_by_name(&name)?
        .filter(|u| u.role == Role::Admin);
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => tokio::task::spawn_blocking(|| decoy_hash().to_string())
            .await
            .map_err(|e| SignInError::Hash(e.to_string()))?,
    };
    let ok = verify_password(password.to_string(), hash).await? && user.is_some();
    match user {
        Some(mut user) if ok => {
            app.store.clear_failures(&name)?;
            user.last_sign_in = Some(now);
            app.store.save_user(&user)?;
            Ok(user)
        }
        _ => {
            app.throttle.fail(from, now);
            if !name.is_empty() {
                app.store.record_failure(&name, now, FAILURE_WINDOW)?;
            }
            Err(SignInError::Wrong)
        }
    }
}

fn minutes_left(d: Duration) -> i64 {
    (d.whole_seconds() + 59).div_euclid(60).max(1)
}

/// Failed sign-ins per client address, in memory.
#[derive(Debug, Default)]
pub struct AddressThrottle {
    map: Mutex<HashMap<IpAddr, Failures>>,
}

impl AddressThrottle {
    /// Minutes left when `addr` has failed too often in the current window.
    pub fn blocked(&self, addr: IpAddr, now: OffsetDateTime) -> Option<i64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.get(&addr)?;
        (f.count >= MAX_FAILURES_PER_ADDRESS && now - f.first < FAILURE_WINDOW)
            .then(|| minutes_left(f.first + FAILURE_WINDOW - now))
    }

    pub fn fail(&self, addr: IpAddr, now: OffsetDateTime) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, f| now - f.first < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(addr).or_insert(Failures {
            count: 0,
            first: now,
            last: now,
        });
        if now - entry.first >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                first: now,
                last: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::testing;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    async fn alice(app: &App) -> User {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        create_admin_with_hash(&app.store, app.now(), "alice", hash).unwrap()
    }

    #[tokio::test]
    async fn sign_in_accepts_the_password_and_refuses_others() {
        let (app, _) = testing::app();
        alice(&app).await;
        assert!(
            sign_in(&app, "Alice ", "correct horse battery", HOME)
                .await
                .is_ok()
        );
        assert!(matches!(
            sign_in(&app, "alice", "wrong", HOME).await,
            Err(SignInError::Wrong)
        ));
        assert!(matches!(
            sign_in(&app, "nobody", "correct horse battery", HOME).await,
            Err(SignInError::Wrong)
        ));
        assert!(
            app.store
                .user_by_name("alice")
                .unwrap()
                .unwrap()
                .last_sign_in
                .is_some()
        );
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_account_for_the_window() {
        let (app, clock) = testing::app();
        alice(&app).await;
        for _ in 0..MAX_FAILURES_PER_ACCOUNT {
            assert!(matches!(
                sign_in(&app, "alice", "nope", HOME).await,
                Err(SignInError::Wrong)
            ));
        }
        // Even the right password is refused while locked.
        let err = sign_in(&app, "alice", "correct horse battery", HOME)
            .await
            .unwrap_err();
        assert!(
            matches!(err, SignInError::Throttled { minutes: 15 }),
            "{err:?}"
        );
        clock.advance(FAILURE_WINDOW);
        assert!(
            sign_in(&app, "alice", "correct horse battery", HOME)
                .await
                .is_ok()
        );
        assert!(app.store.failures("alice").unwrap().is_none());
    }

    #[test]
    fn an_address_that_fails_too_often_is_held_off() {
        let t = AddressThrottle::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..MAX_FAILURES_PER_ADDRESS {
            assert!(t.blocked(HOME, now).is_none());
            t.fail(HOME, now);
        }
        assert_eq!(t.blocked(HOME, now + Duration::minutes(1)), Some(14));
        assert!(t.blocked(HOME, now + FAILURE_WINDOW).is_none());
    }

    #[test]
    fn usernames_and_passwords_are_checked() {
        assert_eq!(
            parse_username(" Alice@School.example ").unwrap(),
            "alice@school.example"
        );
        assert!(parse_username("").is_err());
        assert!(parse_username("a b").is_err());
        assert!(parse_username(&"a".repeat(65)).is_err());
        assert!(check_new_password("short", None).is_err());
        assert!(check_new_password("long enough pw", Some("different pw")).is_err());
        assert!(check_new_password("long enough pw", Some("long enough pw")).is_ok());
    }

    #[tokio::test]
    async fn creating_a_taken_username_changes_nothing() {
        let (app, _) = testing::app();
        let a = alice(&app).await;
        let err = create_admin_with_hash(&app.store, app.now(), "alice", "x".into()).unwrap_err();
        assert!(matches!(err, AccountError::Taken(_)));
        assert_eq!(
            app.store
                .user_by_name("alice")
                .unwrap()
                .unwrap()
                .password_hash,
            a.password_hash
        );
    }
}
