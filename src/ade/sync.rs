//! The sync worker: keeps each server token's device list in step with Apple, by Apple's and the
//! seed's rules.
//!
//! - **Full sync** (fetch, cursor pages) when there is no cursor, when Apple rejects the cursor, or
//!   when the last full sync is 7 days old; never more often otherwise. **Incremental sync** the rest
//!   of the time.
//! - Runs at start, every 24 hours, and on the admin's Sync button (at most once per 15 minutes per
//!   token, refused while a run is going). Each run has 15 minutes.
//! - The cursor is stored after every page, so a crash or a timeout resumes where it stopped.
//! - Released devices are flagged removed and purged after the grace period, once Apple confirms.
//!
//! [`Syncer::run_once`] is one run; [`SyncManager`] schedules runs for every token. Time comes from
//! the injected clock, so tests never wait.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use tokio::sync::{mpsc, watch};

use crate::ade::inventory::{Device, HistoryEntry, Inventory, InventoryError};
use crate::apple::dep::{self, DepError, DevicePage};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, Table};

pub const SYNC_STATE: Table = Table::new("sync_state");
pub const SYNC_RUNS: Table = Table::new("sync_runs");

/// Runs kept per token in the history.
const RUNS_KEPT: usize = 100;
/// Most serials Apple takes in one details call.
const DETAILS_BATCH: usize = 1000;

/// The timing rules. The defaults are the seed's.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    pub button_cooldown: Duration,
    pub full_every: Duration,
    pub run_limit: Duration,
    /// How long a removed device stays listed before it is purged (30 to 45 days).
    pub removed_grace: Duration,
    /// Devices per page asked of Apple (`None`: Apple's default).
    pub page_limit: Option<u32>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            interval: Duration::hours(24),
            button_cooldown: Duration::minutes(15),
            full_every: Duration::days(7),
            run_limit: Duration::minutes(15),
            removed_grace: Duration::days(45),
            page_limit: None,
        }
    }
}

impl SyncSettings {
    /// The grace period, held to the 30-45 days the seed promises.
    pub fn with_removed_grace_days(mut self, days: i64) -> SyncSettings {
        self.removed_grace = Duration::days(days.clamp(30, 45));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("a sync is already running for this token")]
    Running,
    #[error("the Sync button can be used again at {0}")]
    TooSoon(OffsetDateTime),
    #[error("there is no sync worker for this token")]
    UnknownToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Full,
    Incremental,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Start,
    Schedule,
    Button,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Ok,
    Error,
    Timeout,
    /// The process stopped while the run was going; the next run resumes from the stored cursor.
    Interrupted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
        }
    }
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Schedule => "schedule",
            Trigger::Button => "button",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What the worker remembers per token between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The cursor for incremental sync (from the last full fetch or sync page).
    pub cursor: Option<String>,
    /// A full fetch under way: the cursor of its last stored page (`Some("")` before the first).
    pub fetch_cursor: Option<String>,
    /// Increases with every full fetch; devices seen by it carry the number.
    pub generation: u64,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_full_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_ok_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_button_at: Option<OffsetDateTime>,
    /// The admin's sentence for the last failure, cleared by a good run.
    pub last_error: Option<String>,
    /// Apple's code for the last failure (`T_C_NOT_SIGNED`, ...).
    pub last_error_code: Option<String>,
}

impl SyncState {
    /// Which kind the next run must be.
    pub fn next_kind(&self, now: OffsetDateTime, settings: &SyncSettings) -> Kind {
        let full_due = self
            .last_full_at
            .is_none_or(|t| now - t >= settings.full_every);
        if self.fetch_cursor.is_some() || self.cursor.is_none() || full_due {
            Kind::Full
        } else {
            Kind::Incremental
        }
    }

    /// When the schedule next wants a run.
    pub fn next_scheduled(&self, settings: &SyncSettings) -> Option<OffsetDateTime> {
        self.last_run_at.map(|t| t + settings.interval)
    }

    /// When the Sync button may be used again (`None`: now).
    pub fn button_available_at(
        &self,
        now: OffsetDateTime,
        settings: &SyncSettings,
    ) -> Option<OffsetDateTime> {
        self.last_button_at
            .map(|t| t + settings.button_cooldown)
            .filter(|at| *at > now)
    }

    pub fn terms_not_signed(&self) -> bool {
        self.last_error_code.as_deref() == Some("T_C_NOT_SIGNED")
    }
}

/// One run, as the Sync page lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    pub token_id: String,
    pub kind: Kind,
    pub trigger: Trigger,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub pages: u32,
    pub devices: u32,
    pub added: u32,
    pub modified: u32,
    pub removed: u32,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub error_code: Option<String>,
}

impl SyncRun {
    /// A run that has just started: nothing counted yet.
    pub fn started(token_id: &str, kind: Kind, trigger: Trigger, at: OffsetDateTime) -> SyncRun {
        SyncRun {
            token_id: token_id.to_string(),
            kind,
            trigger,
            started_at: at,
            finished_at: None,
            pages: 0,
            devices: 0,
            added: 0,
            modified: 0,
            removed: 0,
            outcome: Outcome::Running,
            error: None,
            error_code: None,
        }
    }

    pub fn duration(&self) -> Option<Duration> {
        self.finished_at.map(|f| f - self.started_at)
    }
}

/// What the worker needs from Apple. `apple::dep::Client` is the real one; tests wrap it.
pub trait DeviceSource: Send + Sync {
    fn fetch(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<DevicePage, DepError>> + Send;
    fn sync(
        &self,
        cursor: &str,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<DevicePage, DepError>> + Send;
    fn details(
        &self,
        serials: &[String],
    ) -> impl Future<Output = Result<dep::DeviceDetails, DepError>> + Send;
}

impl DeviceSource for dep::Client {
    async fn fetch(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DevicePage, DepError> {
        self.fetch_devices(cursor, limit).await
    }

    async fn sync(&self, cursor: &str, limit: Option<u32>) -> Result<DevicePage, DepError> {
        self.sync_devices(cursor, limit).await
    }

    async fn details(&self, serials: &[String]) -> Result<dep::DeviceDetails, DepError> {
        self.device_details(serials).await
    }
}

/// Progress of the run under way, for the live Sync page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub running: Option<SyncRun>,
}

/// One token's worker.
pub struct Syncer {
    token_id: String,
    store: Store,
    inventory: Inventory,
    clock: SharedClock,
    metrics: Metrics,
    settings: SyncSettings,
    progress: Arc<Mutex<Progress>>,
}

/// Why a run stopped early.
enum Stop {
    Dep(DepError),
    Timeout,
    Local(SyncError),
}

impl From<DepError> for Stop {
    fn from(e: DepError) -> Self {
        Stop::Dep(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Local(e.into())
    }
}

impl From<InventoryError> for Stop {
    fn from(e: InventoryError) -> Self {
        Stop::Local(e.into())
    }
}

impl Syncer {
    pub fn new(
        token_id: &str,
        store: Store,
        inventory: Inventory,
        clock: SharedClock,
        metrics: Metrics,
        settings: SyncSettings,
    ) -> Syncer {
        Syncer {
            token_id: token_id.to_string(),
            store,
            inventory,
            clock,
            metrics,
            settings,
            progress: Arc::new(Mutex::new(Progress::default())),
        }
    }

    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    pub fn state(&self) -> Result<SyncState, StoreError> {
        Ok(self
            .store
            .get(SYNC_STATE, self.token_id.as_bytes())?
            .unwrap_or_default())
    }

    fn save_state(&self, state: &SyncState) -> Result<(), StoreError> {
        self.store.put(SYNC_STATE, self.token_id.as_bytes(), state)
    }

    pub fn progress(&self) -> Progress {
        lock(&self.progress).clone()
    }

    /// One sync run, start to finish. Errors from Apple end the run and are recorded in it (and
    /// in the token's state) with the admin's sentence; only local storage errors are returned.
    pub async fn run_once(
        &self,
        source: &impl DeviceSource,
        trigger: Trigger,
    ) -> Result<SyncRun, SyncError> {
        let started = self.clock.now();
        let mut state = self.state()?;
        let kind = state.next_kind(started, &self.settings);
        let mut run = SyncRun::started(&self.token_id, kind, trigger, started);
        let run_key = self.run_key(started)?;
        self.store.put(SYNC_RUNS, &run_key, &run)?;
        state.last_run_at = Some(started);
        self.save_state(&state)?;
        self.store.flush().await?;
        self.publish(Some(&run));

        let deadline = started + self.settings.run_limit;
        let result = match kind {
            Kind::Full => {
                self.full(source, &mut state, &mut run, deadline, &run_key)
                    .await
            }
            Kind::Incremental => match self
                .incremental(source, &mut state, &mut run, deadline, &run_key)
                .await
            {
                Err(Stop::Dep(e)) if e.needs_full_fetch() => {
                    tracing::info!(token = %self.token_id, error = %e, "cursor refused, starting a full fetch");
                    state.cursor = None;
                    run.kind = Kind::Full;
                    self.full(source, &mut state, &mut run, deadline, &run_key)
                        .await
                }
                other => other,
            },
        };
        if result.is_ok() {
            self.purge_removed(source, &mut run).await.ok();
        }
        let now = self.clock.now();
        run.finished_at = Some(now);
        match result {
            Ok(()) => {
                run.outcome = Outcome::Ok;
                state.last_ok_at = Some(now);
                state.last_error = None;
                state.last_error_code = None;
            }
            Err(Stop::Timeout) => {
                run.outcome = Outcome::Timeout;
                run.error = Some(
                    "The sync took longer than its 15 minutes and was stopped. The next sync continues where it stopped."
                        .into(),
                );
            }
            Err(Stop::Dep(e)) => {
                run.outcome = Outcome::Error;
                run.error = Some(e.admin_message());
                run.error_code = Some(error_code(&e));
                state.last_error = run.error.clone();
                state.last_error_code = run.error_code.clone();
            }
            Err(Stop::Local(e)) => {
                run.outcome = Outcome::Error;
                run.error = Some(format!("Orchard could not save what Apple sent: {e}"));
            }
        }
        self.save_state(&state)?;
        self.store.put(SYNC_RUNS, &run_key, &run)?;
        self.store.flush().await?;
        self.prune_runs()?;
        self.publish(None);
        self.metrics.inc(
            "orchard_sync_runs_total",
            &[
                ("kind", run.kind.as_str()),
                ("trigger", run.trigger.as_str()),
                ("outcome", run.outcome.as_str()),
            ],
        );
        tracing::info!(
            token = %self.token_id, kind = run.kind.as_str(), trigger = run.trigger.as_str(),
            outcome = run.outcome.as_str(), pages = run.pages, added = run.added,
            modified = run.modified, removed = run.removed, "sync finished"
        );
        Ok(run)
    }

    async fn full(
        &self,
        source: &impl DeviceSource,
        state: &mut SyncState,
        run: &mut SyncRun,
        deadline: OffsetDateTime,
        run_key: &[u8],
    ) -> Result<(), Stop> {
        if state.fetch_cursor.is_none() {
            // A new full fetch: devices deleted in Orchard may come back now.
            state.generation += 1;
            state.fetch_cursor = Some(String::new());
            self.inventory.clear_tombstones(&self.token_id)?;
            self.save_state(state)?;
        }
        loop {
            if self.clock.now() >= deadline {
                return Err(Stop::Timeout);
            }
            let cursor = state.fetch_cursor.clone().filter(|c| !c.is_empty());
            let page = match source
                .fetch(cursor.as_deref(), self.settings.page_limit)
                .await
            {
                Ok(page) => page,
                // The last page was already taken: the fetch is complete.
                Err(DepError::ExhaustedCursor) => break,
                Err(e) if e.needs_full_fetch() => {
                    // The half-done fetch's cursor is no good: start it again next time.
                    state.fetch_cursor = None;
                    self.save_state(state)?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            self.apply_page(&page, run, Some(state.generation))?;
            state.fetch_cursor = Some(page.cursor.clone());
            self.checkpoint(state, run, run_key).await?;
            if !page.more_to_follow {
                break;
            }
        }
        // Devices the complete list no longer holds have left this MDM server.
        let generation = state.generation;
        let now = self.clock.now();
        for serial in self.inventory.serials(Some(&self.token_id)) {
            if let Some(device) = self.inventory.get(&serial)?
                && device.removed_at.is_none()
                && device.seen_generation != generation
            {
                self.mark_removed(
                    device,
                    now,
                    "No longer in the device list Apple sent for this token",
                )?;
                run.removed += 1;
            }
        }
        state.cursor = state.fetch_cursor.take().filter(|c| !c.is_empty());
        state.last_full_at = Some(run.started_at);
        self.save_state(state)?;
        Ok(())
    }

    async fn incremental(
        &self,
        source: &impl DeviceSource,
        state: &mut SyncState,
        run: &mut SyncRun,
        deadline: OffsetDateTime,
        run_key: &[u8],
    ) -> Result<(), Stop> {
        loop {
            if self.clock.now() >= deadline {
                return Err(Stop::Timeout);
            }
            let Some(cursor) = state.cursor.clone() else {
                return Err(Stop::Dep(DepError::CursorRequired));
            };
            let page = match source.sync(&cursor, self.settings.page_limit).await {
                Ok(page) => page,
                Err(DepError::ExhaustedCursor) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            self.apply_page(&page, run, None)?;
            let same_cursor = page.cursor.is_empty() || page.cursor == cursor;
            if !page.cursor.is_empty() {
                state.cursor = Some(page.cursor.clone());
            }
            self.checkpoint(state, run, run_key).await?;
            // A page that says "more" but hands back the same cursor would loop for ever.
            if !page.more_to_follow || same_cursor {
                return Ok(());
            }
        }
    }

    /// Stores the cursor and the run after a page, durably, and updates the live progress.
    async fn checkpoint(
        &self,
        state: &SyncState,
        run: &mut SyncRun,
        run_key: &[u8],
    ) -> Result<(), Stop> {
        run.pages += 1;
        self.save_state(state)?;
        self.store.put(SYNC_RUNS, run_key, run)?;
        self.store.flush().await?;
        self.publish(Some(run));
        Ok(())
    }

    /// Applies one page. `fetch_generation` is `Some` for pages of a full fetch (the complete
    /// list, no `op_type`: every device listed is assigned here), `None` for sync pages (events).
    fn apply_page(
        &self,
        page: &DevicePage,
        run: &mut SyncRun,
        fetch_generation: Option<u64>,
    ) -> Result<(), Stop> {
        // Within a page the latest op_date wins for a serial; keep page order among equals.
        let mut latest: HashMap<&str, &dep::Device> = HashMap::new();
        for d in &page.devices {
            if d.serial_number.is_empty() {
                continue;
            }
            match latest.get(d.serial_number.as_str()) {
                Some(prev) if prev.op_date > d.op_date => {}
                _ => {
                    latest.insert(&d.serial_number, d);
                }
            }
        }
        let now = self.clock.now();
        let mut ordered: Vec<&dep::Device> = latest.into_values().collect();
        ordered.sort_by(|a, b| a.serial_number.cmp(&b.serial_number));
        for d in ordered {
            run.devices += 1;
            // The MDM side writes devices too (enrollment, check-in): no write in between.
            let _guard = self.inventory.write_guard();
            if fetch_generation.is_none() && self.inventory.is_tombstoned(&d.serial_number)? {
                continue;
            }
            let existing = self.inventory.get(&d.serial_number)?;
            if let (Some(old), Some(op)) =
                (existing.as_ref().and_then(|e| e.last_op_date), d.op_date)
                && op < old
            {
                // An older event than what the device already reflects.
                continue;
            }
            let op_type = d.op_type.as_deref().map(str::to_ascii_lowercase);
            let at = d.op_date.unwrap_or(now);
            match (op_type.as_deref(), existing) {
                (Some("deleted"), Some(device)) => {
                    if device.removed_at.is_none() {
                        let mut device = device;
                        device.last_op_date = d.op_date.or(device.last_op_date);
                        self.mark_removed(
                            device,
                            at,
                            "Released from Apple School Manager or Apple Business Manager",
                        )?;
                        run.removed += 1;
                        self.metrics
                            .inc("orchard_sync_devices_total", &[("op", "deleted")]);
                    }
                }
                (Some("deleted"), None) => {}
                (_, existing) => {
                    let is_new = existing.is_none();
                    let was_removed = existing.as_ref().is_some_and(|e| e.removed_at.is_some());
                    let mut device = existing.unwrap_or_else(|| {
                        Device::new(&d.serial_number, Some(&self.token_id), now)
                    });
                    let before = device.clone();
                    fill_from_apple(&mut device, d);
                    device.token_id = Some(self.token_id.clone());
                    device.removed_at = None;
                    device.last_op_date = d.op_date.or(device.last_op_date);
                    let what = if is_new {
                        run.added += 1;
                        self.metrics
                            .inc("orchard_sync_devices_total", &[("op", "added")]);
                        Some(format!("Added from Apple ({})", describe_device(&device)))
                    } else if was_removed {
                        run.added += 1;
                        self.metrics
                            .inc("orchard_sync_devices_total", &[("op", "added")]);
                        Some("Assigned to this MDM server again".to_string())
                    } else if before != device {
                        run.modified += 1;
                        self.metrics
                            .inc("orchard_sync_devices_total", &[("op", "modified")]);
                        Some(changes(&before, &device))
                    } else {
                        None
                    };
                    if let Some(generation) = fetch_generation {
                        device.seen_generation = generation;
                    }
                    if what.is_none() && device.seen_generation == before.seen_generation {
                        continue;
                    }
                    let history: Vec<HistoryEntry> = what
                        .into_iter()
                        .map(|what| HistoryEntry { at, what })
                        .collect();
                    device.updated_at = now;
                    self.inventory.save(&device, &history)?;
                }
            }
        }
        Ok(())
    }

    fn mark_removed(
        &self,
        mut device: Device,
        at: OffsetDateTime,
        why: &str,
    ) -> Result<(), InventoryError> {
        device.removed_at = Some(at);
        device.updated_at = self.clock.now();
        self.inventory.save(
            &device,
            &[HistoryEntry {
                at,
                what: why.to_string(),
            }],
        )
    }

    /// Purges devices removed longer than the grace period ago, after asking Apple whether each
    /// is really gone; one Apple still lists for this server is restored instead.
    async fn purge_removed(
        &self,
        source: &impl DeviceSource,
        run: &mut SyncRun,
    ) -> Result<(), Stop> {
        let now = self.clock.now();
        let due: Vec<String> = self
            .inventory
            .serials(Some(&self.token_id))
            .into_iter()
            .filter_map(|s| self.inventory.get(&s).ok().flatten())
            .filter(|d| {
                d.removed_at
                    .is_some_and(|at| now - at >= self.settings.removed_grace)
            })
            .map(|d| d.serial)
            .collect();
        for chunk in due.chunks(DETAILS_BATCH) {
            let details = source.details(chunk).await?;
            for serial in chunk {
                let still_ours = details
                    .devices
                    .get(serial)
                    .is_some_and(|d| d.response_status.as_deref() == Some("SUCCESS"));
                if still_ours {
                    self.inventory.modify(serial, |d| {
                        d.removed_at = None;
                        vec![HistoryEntry {
                            at: now,
                            what: "Apple still lists this device for this MDM server: kept".into(),
                        }]
                    })?;
                    run.added += 1;
                } else {
                    self.inventory.purge(serial)?;
                    self.metrics
                        .inc("orchard_sync_devices_total", &[("op", "purged")]);
                }
            }
        }
        Ok(())
    }

    fn run_key(&self, started: OffsetDateTime) -> Result<Vec<u8>, StoreError> {
        let mut key = self.token_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&(started.unix_timestamp_nanos() as u64).to_be_bytes());
        key.extend_from_slice(&self.store.next_id()?.to_be_bytes());
        Ok(key)
    }

    fn prune_runs(&self) -> Result<(), StoreError> {
        let prefix = run_prefix(&self.token_id);
        let keys: Vec<Vec<u8>> = self
            .store
            .keys(SYNC_RUNS, &prefix)
            .collect::<Result<_, _>>()?;
        if keys.len() > RUNS_KEPT {
            let mut batch = self.store.batch();
            for key in &keys[..keys.len() - RUNS_KEPT] {
                batch.delete(SYNC_RUNS, key);
            }
            self.store.apply(batch)?;
        }
        Ok(())
    }

    fn publish(&self, run: Option<&SyncRun>) {
        lock(&self.progress).running = run.cloned();
    }

    /// Marks runs left `Running` by a stopped process as interrupted.
    pub fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self
            .store
            .scan::<SyncRun>(SYNC_RUNS, &run_prefix(&self.token_id))
        {
            let (key, mut run) = item?;
            if run.outcome == Outcome::Running {
                run.outcome = Outcome::Interrupted;
                run.error = Some("Orchard stopped during this sync; the next sync continued from the stored position.".into());
                self.store.put(SYNC_RUNS, &key, &run)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Runs of one token, newest first.
pub fn runs(store: &Store, token_id: &str, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
    store
        .scan_rev::<SyncRun>(SYNC_RUNS, &run_prefix(token_id))
        .take(limit)
        .map(|r| r.map(|(_, run)| run))
        .collect()
}

pub fn state(store: &Store, token_id: &str) -> Result<SyncState, StoreError> {
    Ok(store
        .get(SYNC_STATE, token_id.as_bytes())?
        .unwrap_or_default())
}

fn run_prefix(token_id: &str) -> Vec<u8> {
    let mut key = token_id.as_bytes().to_vec();
    key.push(0);
    key
}

fn fill_from_apple(device: &mut Device, d: &dep::Device) {
    let set = |field: &mut String, value: &Option<String>| {
        if let Some(v) = value {
            field.clone_from(v);
        }
    };
    set(&mut device.model, &d.model);
    set(&mut device.description, &d.description);
    set(&mut device.color, &d.color);
    set(&mut device.asset_tag, &d.asset_tag);
    set(&mut device.os, &d.os);
    set(&mut device.device_family, &d.device_family);
    set(&mut device.profile_status, &d.profile_status);
    if let Some(v) = &d.device_assigned_by {
        device.device_assigned_by.clone_from(v);
    }
    if d.profile_uuid.is_some() || d.profile_status.as_deref() == Some("empty") {
        device.profile_uuid = d.profile_uuid.clone().filter(|u| !u.is_empty());
    }
    device.profile_assign_time = d.profile_assign_time.or(device.profile_assign_time);
    device.profile_push_time = d.profile_push_time.or(device.profile_push_time);
    device.device_assigned_date = d.device_assigned_date.or(device.device_assigned_date);
}

fn describe_device(d: &Device) -> String {
    match (d.description.is_empty(), d.model.is_empty()) {
        (false, _) => d.description.clone(),
        (true, false) => d.model.clone(),
        (true, true) => d.serial.clone(),
    }
}

/// "Changed by Apple: profile status assigned → pushed, colour ..."
fn changes(before: &Device, after: &Device) -> String {
    let mut parts = Vec::new();
    let mut diff = |name: &str, a: &str, b: &str| {
        if a != b {
            parts.push(format!("{name} {} → {}", or_dash(a), or_dash(b)));
        }
    };
    diff("model", &before.model, &after.model);
    diff("description", &before.description, &after.description);
    diff("colour", &before.color, &after.color);
    diff("asset tag", &before.asset_tag, &after.asset_tag);
    diff("OS", &before.os, &after.os);
    diff(
        "profile status",
        &before.profile_status,
        &after.profile_status,
    );
    diff(
        "profile",
        before.profile_uuid.as_deref().unwrap_or(""),
        after.profile_uuid.as_deref().unwrap_or(""),
    );
    diff(
        "assigned by",
        &before.device_assigned_by,
        &after.device_assigned_by,
    );
    if parts.is_empty() {
        "Updated by Apple".into()
    } else {
        format!("Changed by Apple: {}", parts.join(", "))
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "—" } else { s }
}

fn error_code(e: &DepError) -> String {
    match e {
        DepError::TermsNotSigned => "T_C_NOT_SIGNED".into(),
        DepError::AccessDenied => "ACCESS_DENIED".into(),
        DepError::TokenRejected { code } => code.clone(),
        DepError::TokenExpired | DepError::TokenPastExpiry { .. } => "token_expired".into(),
        DepError::Throttled { status, .. } => format!("HTTP {status}"),
        DepError::Server { status, .. } => format!("HTTP {status}"),
        DepError::Network(_) => "network".into(),
        other => format!("{other}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Progress is replaced whole under the lock; a poisoned lock still holds a valid value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the manager gets tokens and their clients; the token service implements it.
pub trait Tokens: Send + Sync + 'static {
    /// Ids of the tokens that should be synced.
    fn token_ids(&self) -> Vec<String>;
    /// A client for the token, or the admin's sentence for why there is none (expired, ...).
    fn client(&self, token_id: &str) -> Result<dep::Client, String>;
    /// Tells the token what a finished run found (the Tokens page shows it).
    fn after_run<'a>(
        &'a self,
        token_id: &'a str,
        run: &'a SyncRun,
        devices: usize,
    ) -> BoxFuture<'a, ()>;
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Tokens for crate::ade::token::TokenService {
    fn token_ids(&self) -> Vec<String> {
        match self.list() {
            Ok(views) => views
                .iter()
                .filter_map(|v| v.id)
                .map(|id| id.0.to_string())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list server tokens for sync");
                Vec::new()
            }
        }
    }

    fn client(&self, token_id: &str) -> Result<dep::Client, String> {
        let id = token_id
            .parse()
            .map(crate::ade::token::TokenId)
            .map_err(|_| format!("{token_id} is not a token id"))?;
        crate::ade::token::TokenService::client(self, id).map_err(|e| e.to_string())
    }

    fn after_run<'a>(
        &'a self,
        token_id: &'a str,
        run: &'a SyncRun,
        devices: usize,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(id) = token_id.parse().map(crate::ade::token::TokenId) else {
                return;
            };
            let terms = run.error_code.as_deref() == Some("T_C_NOT_SIGNED");
            let at = run.finished_at.unwrap_or(run.started_at);
            if let Err(e) = self.record_sync(id, at, devices as u64, terms).await {
                tracing::warn!(token = %token_id, error = %e, "could not record the sync on the token");
            }
        })
    }
}

struct Worker {
    syncer: Arc<Syncer>,
    button: mpsc::Sender<()>,
    running: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts and schedules one worker per token, and takes the Sync button.
#[derive(Clone)]
pub struct SyncManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    store: Store,
    inventory: Inventory,
    clock: SharedClock,
    metrics: Metrics,
    settings: SyncSettings,
    tokens: Arc<dyn Tokens>,
    workers: Mutex<HashMap<String, Worker>>,
    shutdown: watch::Receiver<bool>,
}

impl SyncManager {
    pub fn new(
        store: Store,
        inventory: Inventory,
        clock: SharedClock,
        metrics: Metrics,
        settings: SyncSettings,
        tokens: Arc<dyn Tokens>,
        shutdown: watch::Receiver<bool>,
    ) -> SyncManager {
        metrics.describe(
            "orchard_sync_runs_total",
            "Device sync runs by kind, trigger and outcome.",
        );
        metrics.describe(
            "orchard_sync_devices_total",
            "Device changes applied by sync, by operation.",
        );
        SyncManager {
            inner: Arc::new(ManagerInner {
                store,
                inventory,
                clock,
                metrics,
                settings,
                tokens,
                workers: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    pub fn settings(&self) -> &SyncSettings {
        &self.inner.settings
    }

    /// Starts a worker for every token that has none; call at start and when tokens change.
    pub fn reconcile(&self) {
        let ids = self.inner.tokens.token_ids();
        let mut workers = lock(&self.inner.workers);
        workers.retain(|id, _| ids.contains(id));
        for id in ids {
            if workers.contains_key(&id) {
                continue;
            }
            let syncer = Arc::new(Syncer::new(
                &id,
                self.inner.store.clone(),
                self.inner.inventory.clone(),
                self.inner.clock.clone(),
                self.inner.metrics.clone(),
                self.inner.settings.clone(),
            ));
            if let Err(e) = syncer.recover_interrupted() {
                tracing::warn!(token = %id, error = %e, "could not mark interrupted sync runs");
            }
            let (tx, rx) = mpsc::channel(1);
            let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(
                self.clone()
                    .worker_loop(syncer.clone(), rx, running.clone()),
            );
            workers.insert(
                id,
                Worker {
                    syncer,
                    button: tx,
                    running,
                },
            );
        }
    }

    /// Keeps workers in step with the token list until shutdown.
    pub async fn supervise(self) {
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            self.reconcile();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The admin's Sync button.
    pub fn sync_now(&self, token_id: &str) -> Result<(), SyncError> {
        self.reconcile();
        let workers = lock(&self.inner.workers);
        let worker = workers.get(token_id).ok_or(SyncError::UnknownToken)?;
        if worker.running.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SyncError::Running);
        }
        let now = self.inner.clock.now();
        let mut state = worker.syncer.state()?;
        if let Some(at) = state.button_available_at(now, &self.inner.settings) {
            return Err(SyncError::TooSoon(at));
        }
        state.last_button_at = Some(now);
        worker.syncer.save_state(&state)?;
        worker.button.try_send(()).map_err(|_| SyncError::Running)?;
        // Mark it running at once so a second press is refused before the worker wakes.
        worker
            .running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub fn is_running(&self, token_id: &str) -> bool {
        lock(&self.inner.workers)
            .get(token_id)
            .is_some_and(|w| w.running.load(std::sync::atomic::Ordering::SeqCst))
    }

    pub fn progress(&self, token_id: &str) -> Option<Progress> {
        lock(&self.inner.workers)
            .get(token_id)
            .map(|w| w.syncer.progress())
    }

    async fn worker_loop(
        self,
        syncer: Arc<Syncer>,
        mut button: mpsc::Receiver<()>,
        running: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let mut shutdown = self.inner.shutdown.clone();
        let mut trigger = Trigger::Start;
        loop {
            if *shutdown.borrow() {
                return;
            }
            running.store(true, std::sync::atomic::Ordering::SeqCst);
            self.run_with_limit(&syncer, trigger).await;
            running.store(false, std::sync::atomic::Ordering::SeqCst);
            // Wait for the schedule or the button, re-checking the clock every minute.
            trigger = loop {
                let now = self.inner.clock.now();
                let state = syncer.state().unwrap_or_default();
                if state
                    .next_scheduled(&self.inner.settings)
                    .is_none_or(|at| at <= now)
                {
                    break Trigger::Schedule;
                }
                tokio::select! {
                    got = button.recv() => match got {
                        Some(()) => break Trigger::Button,
                        None => return,
                    },
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                    _ = shutdown.changed() => return,
                }
            };
        }
    }

    async fn run_with_limit(&self, syncer: &Syncer, trigger: Trigger) {
        let token_id = syncer.token_id().to_string();
        let client = match self.inner.tokens.client(&token_id) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(token = %token_id, %why, "sync skipped");
                return;
            }
        };
        let limit = std::time::Duration::from_secs(
            self.inner.settings.run_limit.whole_seconds().max(1) as u64,
        );
        match tokio::time::timeout(limit, syncer.run_once(&client, trigger)).await {
            Ok(Ok(run)) => {
                let devices = self.inner.inventory.count_for_token(&token_id);
                self.inner.tokens.after_run(&token_id, &run, devices).await;
            }
            Ok(Err(e)) => tracing::error!(token = %token_id, error = %e, "sync failed"),
            Err(_) => {
                // The wall-clock limit: the run record is still "running"; mark it.
                if let Err(e) = syncer.recover_interrupted() {
                    tracing::error!(token = %token_id, error = %e, "could not record the sync timeout");
                }
                syncer.publish(None);
                self.inner.metrics.inc(
                    "orchard_sync_runs_total",
                    &[
                        ("kind", "unknown"),
                        ("trigger", trigger.as_str()),
                        ("outcome", "timeout"),
                    ],
                );
            }
        }
    }
}
