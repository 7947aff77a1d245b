//! ADE server tokens: the keypair an admin gives Apple, the `.p7m` upload with its checks, renewal
//! and replacement, expiry and terms state, and ready DEP clients for the other ADE parts.
//!
//! Rules (issue 3, "Tokens"):
//! - A new keypair stays *staged* until a token decrypts with it; asking again re-offers it; it
//!   never replaces the key of a working token.
//! - An upload is checked completely (format, key, content, expiry, Apple's `/account`) before
//!   anything is written; any failure changes nothing.
//! - A renewal must decrypt with the token's key or its staged one; a token of another MDM server
//!   (other consumer key or server UUID) is refused unless the admin confirms the replacement.
//! - OAuth values and private keys are sealed with the data directory's key and never shown.

mod error;
pub mod inspect;
mod record;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;

use crate::apple::dep::{Account, Client, ClientOptions, DepError, ServerToken};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::pki::cms::{self, CmsError};
use crate::pki::secret::SecretKey;
use crate::pki::token_keypair::TokenKeypair;
use crate::store::{StoreError, Table};

pub use error::{Field, TokenError};
pub use record::{
    AccountInfo, AppleId, AppleIdError, EXPIRING_WITHIN_DAYS, KeyOwner, Portal, RECORD_VERSION,
    StoredKeypair, Terms, TokenId, TokenKeys, TokenRecord, TokenState,
};

/// Token records, by [`TokenId`].
pub const TOKENS: Table = Table::new("tokens");
/// Token keypairs, by [`KeyOwner`].
pub const TOKEN_KEYS: Table = Table::new("token_keys");
/// Largest upload accepted as a token: Apple's are about 2 KB.
pub const MAX_UPLOAD: usize = 64 * 1024;
/// The gauge of tokens per state.
pub const TOKENS_METRIC: &str = "orchard_dep_tokens";

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the token service needs from the store.
pub trait TokenStore: Send + Sync + 'static {
    fn next_token_id(&self) -> Result<TokenId, StoreError>;
    /// Every token, in id order.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    fn token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;
    /// The keypairs of `owner` (empty when there are none).
    fn token_keys(&self, owner: KeyOwner) -> Result<TokenKeys, StoreError>;
    fn put_token_keys(&self, owner: KeyOwner, keys: &TokenKeys) -> Result<(), StoreError>;
    /// Writes a token and its keys atomically, and empties the new-token slot if asked.
    fn save_token(
        &self,
        token: &TokenRecord,
        keys: &TokenKeys,
        clear_new_slot: bool,
    ) -> Result<(), StoreError>;
    /// Changes one token atomically; `None` when it does not exist.
    fn update_token(
        &self,
        id: TokenId,
        change: &mut dyn FnMut(&mut TokenRecord),
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Makes the writes so far durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The one question the token service asks Apple before it keeps a token: `GET /account`.
/// Production uses [`DepAccounts`]; unit tests answer it themselves.
pub trait AccountLookup: Send + Sync + 'static {
    fn account(&self, token: ServerToken) -> BoxFuture<'static, Result<Account, DepError>>;
}

/// [`AccountLookup`] through the DEP client at the configured base URL.
#[derive(Clone)]
pub struct DepAccounts {
    options: ClientOptions,
    metrics: Metrics,
    clock: SharedClock,
}

impl DepAccounts {
    pub fn new(options: ClientOptions, metrics: Metrics, clock: SharedClock) -> Self {
        Self {
            options,
            metrics,
            clock,
        }
    }
}

impl AccountLookup for DepAccounts {
    fn account(&self, token: ServerToken) -> BoxFuture<'static, Result<Account, DepError>> {
        let client = Client::new(
            self.options.clone(),
            token,
            self.metrics.clone(),
            self.clock.clone(),
        );
        Box::pin(async move { client?.account().await })
    }
}

/// An uploaded token file with the Apple ID typed beside it, as the form or the API gives them.
#[derive(Clone, Default)]
pub struct Upload {
    pub apple_id: String,
    pub file: Vec<u8>,
}

/// What a token holds and belongs to, shown before and after it is kept. No secrets.
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub id: Option<TokenId>,
    pub server_name: String,
    pub server_uuid: String,
    pub org_name: String,
    pub portal: String,
    pub apple_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub days_left: i64,
    pub state: TokenState,
    pub terms_accepted: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_sync: Option<OffsetDateTime>,
    pub device_count: u64,
    pub default_profile: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub added_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub renewed_at: Option<OffsetDateTime>,
    /// Whether a new public key waits for a token of this server.
    pub key_staged: bool,
}

/// How a renewal treats a token of another MDM server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// Refuse it (the default).
    No,
    /// Replace, confirmed by typing the current server name.
    Confirmed { typed_name: String },
}

/// Where the key that opened an upload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySource {
    NewSlot,
    /// The current key of an existing token (one key may serve several MDM servers).
    TokenCurrent(TokenId),
    TokenStaged(TokenId),
}

/// An upload that passed every check, not yet kept.
struct Checked {
    apple_id: AppleId,
    token: ServerToken,
    account: AccountInfo,
    source: KeySource,
    keypair: StoredKeypair,
}

/// The token service. Share it behind an `Arc`.
pub struct TokenService {
    store: Arc<dyn TokenStore>,
    secret: Arc<SecretKey>,
    clock: SharedClock,
    accounts: Arc<dyn AccountLookup>,
    dep: ClientOptions,
    metrics: Metrics,
    /// Serialises every change, so two uploads or key requests never interleave.
    write: tokio::sync::Mutex<()>,
    /// One client per token: the DEP client keeps one request at a time per token.
    clients: Mutex<HashMap<TokenId, Client>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("dep_base_url", &self.dep.base_url)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// A service that asks Apple (or the simulator) at `dep.base_url`.
    pub fn new(
        store: Arc<dyn TokenStore>,
        secret: Arc<SecretKey>,
        clock: SharedClock,
        dep: ClientOptions,
        metrics: Metrics,
    ) -> Self {
        let accounts = Arc::new(DepAccounts::new(
            dep.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        Self::with_accounts(store, secret, clock, dep, metrics, accounts)
    }

    /// Like [`TokenService::new`] with another way to answer `/account`.
    pub fn with_accounts(
        store: Arc<dyn TokenStore>,
        secret: Arc<SecretKey>,
        clock: SharedClock,
        dep: ClientOptions,
        metrics: Metrics,
        accounts: Arc<dyn AccountLookup>,
    ) -> Self {
        metrics.describe(
            TOKENS_METRIC,
            "ADE server tokens by state (ok, expiring, expired, terms_not_signed)",
        );
        Self {
            store,
            secret,
            clock,
            accounts,
            dep,
            metrics,
            write: tokio::sync::Mutex::new(()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The public key certificate (PEM) to give Apple: for a new token (`None`) or for renewing
    /// token `id`. A staged keypair is re-offered; a token's own certificate is offered while it
    /// is valid; otherwise a new keypair is made and staged. A token's current key is never
    /// replaced here.
    pub async fn public_key(&self, owner: KeyOwner) -> Result<String, TokenError> {
        let _guard = self.write.lock().await;
        if let KeyOwner::Token(id) = owner {
            self.record(id)?;
        }
        let mut keys = self.store.token_keys(owner)?;
        if let Some(staged) = &keys.staged {
            return Ok(staged.cert_pem.clone());
        }
        let now = self.clock.now();
        if let (KeyOwner::Token(_), Some(current)) = (owner, &keys.current) {
            let pair = self.unseal(current)?;
            if pair.not_after() > now + time::Duration::days(1) {
                return Ok(current.cert_pem.clone());
            }
        }
        let pair = tokio::task::spawn_blocking(move || TokenKeypair::generate(now))
            .await
            .map_err(|e| TokenError::Internal(format!("key generation stopped: {e}")))??;
        let stored = StoredKeypair {
            key: self.secret.seal(&pair.key_pkcs1_der()?)?,
            cert_pem: pair.cert_pem().to_string(),
            created_at: now,
        };
        keys.staged = Some(stored);
        self.store.put_token_keys(owner, &keys)?;
        self.store.flush().await?;
        tracing::info!(owner = ?owner, "token keypair staged");
        Ok(pair.cert_pem().to_string())
    }

    /// Stages an existing keypair (PEM key and certificate) for `owner`, replacing a staged one.
    /// For importing a key made elsewhere (and for tests with fixed vectors).
    pub async fn import_keypair(
        &self,
        owner: KeyOwner,
        pair: &TokenKeypair,
    ) -> Result<(), TokenError> {
        let _guard = self.write.lock().await;
        let mut keys = self.store.token_keys(owner)?;
        keys.staged = Some(StoredKeypair {
            key: self.secret.seal(&pair.key_pkcs1_der()?)?,
            cert_pem: pair.cert_pem().to_string(),
            created_at: self.clock.now(),
        });
        self.store.put_token_keys(owner, &keys)?;
        self.store.flush().await?;
        Ok(())
    }

    /// Checks a new token without keeping it: what the Review step shows.
    pub async fn preview(&self, upload: &Upload) -> Result<TokenView, TokenError> {
        let checked = self.check_new(upload).await?;
        Ok(self.preview_view(&checked))
    }

    /// Checks and keeps a new token; the key that opened it becomes the token's key.
    pub async fn add(&self, upload: &Upload) -> Result<TokenView, TokenError> {
        let _guard = self.write.lock().await;
        let checked = self.check_new(upload).await?;
        let id = self.store.next_token_id()?;
        let now = self.clock.now();
        let record = TokenRecord {
            version: RECORD_VERSION,
            id,
            apple_id: checked.apple_id.clone(),
            consumer_key: checked.token.consumer_key.clone(),
            secrets: self.secret.seal(checked.token.to_json().as_bytes())?,
            access_token_expiry: checked.token.access_token_expiry,
            account: checked.account.clone(),
            terms: Terms::Accepted,
            added_at: now,
            renewed_at: None,
            cursor: None,
            last_full_fetch: None,
            last_sync: None,
            device_count: 0,
            default_profile: None,
        };
        let keys = TokenKeys {
            current: Some(checked.keypair.clone()),
            staged: None,
        };
        self.store
            .save_token(&record, &keys, checked.source == KeySource::NewSlot)?;
        self.store.flush().await?;
        tracing::info!(token = %id, server = %record.account.server_name, "server token added");
        self.refresh_metrics_from(&self.store.tokens()?);
        Ok(self.view(&record, &keys))
    }

    /// Renews token `id` with a new `.p7m` (and the Apple ID, which may have changed). The file
    /// must open with the token's key or its staged key. A token of another MDM server is refused
    /// unless `replace` is confirmed with the current server name typed exactly.
    pub async fn renew(
        &self,
        id: TokenId,
        upload: &Upload,
        replace: Replace,
    ) -> Result<TokenView, TokenError> {
        let _guard = self.write.lock().await;
        let current = self.record(id)?;
        let apple_id = AppleId::parse(&upload.apple_id).map_err(TokenError::AppleId)?;
        let keys = self.store.token_keys(KeyOwner::Token(id))?;
        let mut candidates = Vec::new();
        if let Some(k) = &keys.current {
            candidates.push((KeySource::TokenCurrent(id), k.clone()));
        }
        if let Some(k) = &keys.staged {
            candidates.push((KeySource::TokenStaged(id), k.clone()));
        }
        let (token, source, keypair) = self.open_upload(&upload.file, candidates)?;
        self.check_expiry(&token)?;
        let account = self.account(&token).await?;
        let same_server = token.consumer_key == current.consumer_key
            && account.server_uuid == current.account.server_uuid;
        if !same_server {
            match &replace {
                Replace::No => {
                    return Err(TokenError::OtherServer {
                        current: current.account.server_name.clone(),
                        uploaded: account.server_name.clone(),
                    });
                }
                Replace::Confirmed { typed_name }
                    if typed_name.trim() != current.account.server_name =>
                {
                    return Err(TokenError::ConfirmMismatch {
                        expected: current.account.server_name.clone(),
                    });
                }
                Replace::Confirmed { .. } => {}
            }
        }
        let now = self.clock.now();
        let mut record = current.clone();
        record.apple_id = apple_id;
        record.consumer_key = token.consumer_key.clone();
        record.secrets = self.secret.seal(token.to_json().as_bytes())?;
        record.access_token_expiry = token.access_token_expiry;
        record.account = account;
        record.terms = Terms::Accepted;
        record.renewed_at = Some(now);
        if !same_server {
            // Another MDM server's devices: the sync starts over.
            record.cursor = None;
            record.last_full_fetch = None;
            record.device_count = 0;
        }
        let new_keys = match source {
            KeySource::TokenStaged(_) => TokenKeys {
                current: Some(keypair),
                staged: None,
            },
            _ => keys,
        };
        self.store.save_token(&record, &new_keys, false)?;
        self.store.flush().await?;
        self.forget_client(id);
        tracing::info!(
            token = %id,
            server = %record.account.server_name,
            replaced = !same_server,
            "server token renewed"
        );
        self.refresh_metrics_from(&self.store.tokens()?);
        Ok(self.view(&record, &new_keys))
    }

    /// Every token, in the order they were added.
    pub fn list(&self) -> Result<Vec<TokenView>, TokenError> {
        let records = self.store.tokens()?;
        self.refresh_metrics_from(&records);
        records
            .iter()
            .map(|r| Ok(self.view(r, &self.store.token_keys(KeyOwner::Token(r.id))?)))
            .collect()
    }

    pub fn get(&self, id: TokenId) -> Result<TokenView, TokenError> {
        let record = self.record(id)?;
        Ok(self.view(&record, &self.store.token_keys(KeyOwner::Token(id))?))
    }

    /// The stored record (for the sync worker's fields). No secrets in clear.
    pub fn record(&self, id: TokenId) -> Result<TokenRecord, TokenError> {
        self.store.token(id)?.ok_or(TokenError::NotFound(id))
    }

    /// A ready DEP client for token `id`, shared by every caller, talking to the configured base
    /// URL. Refuses an expired token with the admin's sentence.
    pub fn client(&self, id: TokenId) -> Result<Client, TokenError> {
        let record = self.record(id)?;
        if self.clock.now() >= record.access_token_expiry {
            return Err(TokenError::Expired {
                expiry: human_date(record.access_token_expiry),
            });
        }
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| TokenError::Internal("client cache poisoned".into()))?;
        if let Some(client) = clients.get(&id) {
            return Ok(client.clone());
        }
        let token = self.open_secrets(&record)?;
        let client = Client::new(
            self.dep.clone(),
            token,
            self.metrics.clone(),
            self.clock.clone(),
        )
        .map_err(TokenError::Apple)?;
        clients.insert(id, client.clone());
        Ok(client)
    }

    /// Records a finished sync on the token (its time and device count), and whether Apple
    /// accepted the organisation's terms, as the Tokens page shows them.
    pub async fn record_sync(
        &self,
        id: TokenId,
        at: OffsetDateTime,
        device_count: u64,
        terms_not_signed: bool,
    ) -> Result<(), TokenError> {
        let updated = self.store.update_token(id, &mut |t| {
            t.last_sync = Some(at);
            t.device_count = device_count;
            t.terms = match (terms_not_signed, t.terms) {
                (false, _) => Terms::Accepted,
                (true, Terms::NotSigned { since }) => Terms::NotSigned { since },
                (true, Terms::Accepted) => Terms::NotSigned { since: at },
            }
        })?;
        updated.ok_or(TokenError::NotFound(id))?;
        self.store.flush().await?;
        self.refresh_metrics()?;
        Ok(())
    }

    /// Records whether Apple accepts the organisation's terms (the sync worker calls this when
    /// Apple answers `T_C_NOT_SIGNED`, and again when a call succeeds).
    pub async fn set_terms(&self, id: TokenId, accepted: bool) -> Result<(), TokenError> {
        let now = self.clock.now();
        let updated = self.store.update_token(id, &mut |t| {
            t.terms = match (accepted, t.terms) {
                (true, _) => Terms::Accepted,
                (false, Terms::NotSigned { since }) => Terms::NotSigned { since },
                (false, Terms::Accepted) => Terms::NotSigned { since: now },
            }
        })?;
        updated.ok_or(TokenError::NotFound(id))?;
        self.store.flush().await?;
        self.refresh_metrics()?;
        Ok(())
    }

    /// Sets `orchard_dep_tokens{state}` from the store (expiry moves with time, so housekeeping
    /// calls this too).
    pub fn refresh_metrics(&self) -> Result<(), TokenError> {
        self.refresh_metrics_from(&self.store.tokens()?);
        Ok(())
    }

    fn refresh_metrics_from(&self, records: &[TokenRecord]) {
        let now = self.clock.now();
        for state in TokenState::ALL {
            let n = records.iter().filter(|r| r.state(now) == state).count();
            self.metrics
                .set(TOKENS_METRIC, &[("state", state.as_str())], n as f64);
        }
    }

    /// Every check of a new token: Apple ID, file, key (the staged key, or a key a token already
    /// uses), content, expiry, not already added, and Apple's `/account`.
    async fn check_new(&self, upload: &Upload) -> Result<Checked, TokenError> {
        let apple_id = AppleId::parse(&upload.apple_id).map_err(TokenError::AppleId)?;
        let mut candidates = Vec::new();
        if let Some(k) = self.store.token_keys(KeyOwner::NewToken)?.staged {
            candidates.push((KeySource::NewSlot, k));
        }
        let existing = self.store.tokens()?;
        for t in &existing {
            if let Some(k) = self.store.token_keys(KeyOwner::Token(t.id))?.current {
                candidates.push((KeySource::TokenCurrent(t.id), k));
            }
        }
        let (token, source, keypair) = self.open_upload(&upload.file, candidates)?;
        self.check_expiry(&token)?;
        let already = |t: &&TokenRecord| TokenError::AlreadyAdded {
            id: t.id,
            server_name: t.account.server_name.clone(),
        };
        if let Some(t) = existing
            .iter()
            .find(|t| t.consumer_key == token.consumer_key)
        {
            return Err(already(&t));
        }
        let account = self.account(&token).await?;
        if let Some(t) = existing
            .iter()
            .find(|t| t.account.server_uuid == account.server_uuid)
        {
            return Err(already(&t));
        }
        Ok(Checked {
            apple_id,
            token,
            account,
            source,
            keypair,
        })
    }

    /// Unwraps and decrypts the file with the first candidate key that opens it, and parses the
    /// token inside.
    fn open_upload(
        &self,
        file: &[u8],
        candidates: Vec<(KeySource, StoredKeypair)>,
    ) -> Result<(ServerToken, KeySource, StoredKeypair), TokenError> {
        let envelope = unwrap_file(file)?;
        if candidates.is_empty() {
            return Err(TokenError::NoKey);
        }
        for (source, stored) in candidates {
            let pair = self.unseal(&stored)?;
            match cms::decrypt_enveloped(&envelope, pair.private_key(), pair.certificate()) {
                Ok(plain) => return Ok((parse_plaintext(&plain)?, source, stored)),
                Err(CmsError::NotForUs | CmsError::KeyUnwrap | CmsError::BadPadding) => continue,
                Err(other) => return Err(TokenError::from_format(other)),
            }
        }
        Err(TokenError::WrongKey)
    }

    fn check_expiry(&self, token: &ServerToken) -> Result<(), TokenError> {
        if token.is_expired(self.clock.now()) {
            return Err(TokenError::Expired {
                expiry: human_date(token.access_token_expiry),
            });
        }
        Ok(())
    }

    async fn account(&self, token: &ServerToken) -> Result<AccountInfo, TokenError> {
        let account = self
            .accounts
            .account(token.clone())
            .await
            .map_err(TokenError::Apple)?;
        Ok(AccountInfo {
            portal: Portal::from_org_type(account.org_type.as_deref()),
            server_name: account.server_name,
            server_uuid: account.server_uuid,
            org_name: account.org_name,
            org_email: account.org_email,
            admin_id: account.admin_id,
        })
    }

    fn unseal(&self, stored: &StoredKeypair) -> Result<TokenKeypair, TokenError> {
        let der = self.secret.open(&stored.key)?;
        Ok(TokenKeypair::from_parts(&der, &stored.cert_pem)?)
    }

    fn open_secrets(&self, record: &TokenRecord) -> Result<ServerToken, TokenError> {
        let json = self.secret.open(&record.secrets)?;
        let json = String::from_utf8(json)
            .map_err(|_| TokenError::Internal("stored token is not text".into()))?;
        ServerToken::from_json(&json).map_err(|e| TokenError::Internal(e.to_string()))
    }

    fn forget_client(&self, id: TokenId) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(&id);
        }
    }

    fn view(&self, record: &TokenRecord, keys: &TokenKeys) -> TokenView {
        let now = self.clock.now();
        TokenView {
            id: Some(record.id),
            server_name: record.account.server_name.clone(),
            server_uuid: record.account.server_uuid.clone(),
            org_name: record.account.org_name.clone(),
            portal: record.account.portal.label().to_string(),
            apple_id: record.apple_id.to_string(),
            expires_at: record.access_token_expiry,
            days_left: record.days_left(now),
            state: record.state(now),
            terms_accepted: record.terms == Terms::Accepted,
            last_sync: record.last_sync,
            device_count: record.device_count,
            default_profile: record.default_profile.clone(),
            added_at: Some(record.added_at),
            renewed_at: record.renewed_at,
            key_staged: keys.staged.is_some(),
        }
    }

    fn preview_view(&self, checked: &Checked) -> TokenView {
        let now = self.clock.now();
        let expiry = checked.token.access_token_expiry;
        let days_left = (expiry - now).whole_days();
        TokenView {
            id: None,
            server_name: checked.account.server_name.clone(),
            server_uuid: checked.account.server_uuid.clone(),
            org_name: checked.account.org_name.clone(),
            portal: checked.account.portal.label().to_string(),
            apple_id: checked.apple_id.to_string(),
            expires_at: expiry,
            days_left,
            state: if days_left <= EXPIRING_WITHIN_DAYS {
                TokenState::Expiring
            } else {
                TokenState::Ok
            },
            terms_accepted: true,
            last_sync: None,
            device_count: 0,
            default_profile: None,
            added_at: None,
            renewed_at: None,
            key_staged: false,
        }
    }
}

/// Checks an uploaded file's size and takes the CMS envelope out of its S/MIME wrapping (binary
/// DER/BER is accepted as it is).
pub(crate) fn unwrap_file(file: &[u8]) -> Result<Vec<u8>, TokenError> {
    if file.iter().all(u8::is_ascii_whitespace) {
        return Err(TokenError::NoFile);
    }
    if file.len() > MAX_UPLOAD {
        return Err(TokenError::TooLarge { size: file.len() });
    }
    if file.first() == Some(&0x30) {
        // A SEQUENCE: the envelope itself, as `openssl cms -outform DER` writes it.
        return Ok(file.to_vec());
    }
    cms::smime_unwrap(file).map_err(TokenError::from_format)
}

/// Parses the decrypted content: MIME headers and the JSON between the message markers.
pub(crate) fn parse_plaintext(plain: &[u8]) -> Result<ServerToken, TokenError> {
    let text = std::str::from_utf8(plain)
        .map_err(|_| TokenError::BadContent(crate::apple::dep::TokenError::NoMessage))?;
    ServerToken::from_message(text).map_err(TokenError::BadContent)
}

/// "3 Sep 2027", the date format of the admin UI.
pub fn human_date(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[day padding:none] [month repr:short] [year]");
    at.format(&format).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests;
