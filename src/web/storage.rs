//! The storage the web module needs, declared here and implemented for [`crate::store::Store`] in
//! `store/web.rs`.

use time::{Duration, OffsetDateTime};

use super::accounts::{Failures, User};
use super::api::ApiKeyRecord;
use super::audit::AuditEvent;
use super::session::Session;
use super::setup::SetupToken;
use crate::store::StoreError;

pub trait WebStore {
    fn user_by_id(&self, id: u64) -> Result<Option<User>, StoreError>;
    fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// Every account, by id.
    fn users(&self) -> Result<Vec<User>, StoreError>;
    fn admin_count(&self) -> Result<usize, StoreError>;
    /// Adds an account; `false` (and nothing written) when the username is taken.
    fn insert_user(&self, user: &User) -> Result<bool, StoreError>;
    /// Rewrites an existing account (same username).
    fn save_user(&self, user: &User) -> Result<(), StoreError>;
    /// Removes an account and its sessions.
    fn delete_user(&self, user: &User) -> Result<(), StoreError>;

    fn get_session(&self, key: &[u8]) -> Result<Option<Session>, StoreError>;
    fn put_session(&self, key: &[u8], session: &Session) -> Result<(), StoreError>;
    fn delete_session(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Ends every session of an account; returns how many.
    fn delete_sessions_of(&self, user_id: u64) -> Result<usize, StoreError>;
    /// Deletes the sessions `expired` says are over; returns how many.
    fn purge_sessions(&self, expired: &dyn Fn(&Session) -> bool) -> Result<usize, StoreError>;

    fn setup_token(&self) -> Result<Option<SetupToken>, StoreError>;
    fn put_setup_token(&self, token: &SetupToken) -> Result<(), StoreError>;
    fn clear_setup_token(&self) -> Result<(), StoreError>;

    /// Counts one failed sign-in for `username` within a rolling `window`; returns the new count.
    fn record_failure(
        &self,
        username: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<Failures, StoreError>;
    fn failures(&self, username: &str) -> Result<Option<Failures>, StoreError>;
    fn clear_failures(&self, username: &str) -> Result<(), StoreError>;

    fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Up to `limit` events, newest first, starting at `from` (a cursor from a previous page).
    /// Returns the events and the cursor of the next (older) page.
    fn audit_page(
        &self,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError>;

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    fn delete_api_key(&self, id: &str) -> Result<(), StoreError>;
}
