//! The device inventory: every Mac that Apple School Manager or Apple Business Manager lists for a
//! token, what Orchard knows of it, its history, and the in-memory index that answers the Devices
//! page in milliseconds at 100,000 devices.
//!
//! All device writes go through [`Inventory`], which keeps the index in step with the store.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, OnceLock, RwLock};

use memchr::memmem;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, Table};

pub const DEVICES: Table = Table::new("devices");
pub const HISTORY: Table = Table::new("device_history");
/// Devices an admin deleted in Orchard: not imported again until the next full sync.
pub const TOMBSTONES: Table = Table::new("device_tombstones");

/// Most history entries kept per device; the oldest go first.
const HISTORY_LIMIT: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("there is no device with serial number {0}")]
    NotFound(String),
}

/// A device as Orchard keeps it: Apple's fields, then Orchard's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub serial: String,
    /// The server token the device came from; `None` for a Mac enrolled by hand.
    pub token_id: Option<String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub color: String,
    #[serde(default)]
    pub asset_tag: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub device_family: String,
    /// Apple's `profile_status`: `empty`, `assigned`, `pushed` or `removed`.
    #[serde(default)]
    pub profile_status: String,
    #[serde(default)]
    pub profile_uuid: Option<String>,
    /// The name of the enrollment profile, when Orchard knows it.
    #[serde(default)]
    pub profile_name: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub profile_assign_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub profile_push_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub device_assigned_date: Option<OffsetDateTime>,
    #[serde(default)]
    pub device_assigned_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The newest `op_date` applied, so an older event never overwrites a newer one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_op_date: Option<OffsetDateTime>,
    /// When Apple reported the device released (or it left the token's full list).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub enrollment: Enrollment,
    #[serde(default)]
    pub udid: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_checkin: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub enrolled_at: Option<OffsetDateTime>,
    /// The last full fetch that listed this device (see `ade::sync`).
    #[serde(default)]
    pub seen_generation: u64,
}

/// Where the device is in its MDM life, as Orchard sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enrollment {
    #[default]
    NotEnrolled,
    /// Got its enrollment profile, has not finished check-in yet.
    Enrolling,
    Enrolled,
    /// Checked out or unenrolled.
    Unenrolled,
}

/// The one state shown for a device (and counted in `orchard_devices{state}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Unassigned,
    Assigned,
    Enrolling,
    Enrolled,
    Removed,
}

impl DeviceState {
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Unassigned,
        DeviceState::Assigned,
        DeviceState::Enrolling,
        DeviceState::Enrolled,
        DeviceState::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Unassigned => "unassigned",
            DeviceState::Assigned => "assigned",
            DeviceState::Enrolling => "enrolling",
            DeviceState::Enrolled => "enrolled",
            DeviceState::Removed => "removed",
        }
    }

    /// The words on the status tag.
    pub fn label(self) -> &'static str {
        match self {
            DeviceState::Unassigned => "Not assigned",
            DeviceState::Assigned => "Assigned",
            DeviceState::Enrolling => "Enrolling",
            DeviceState::Enrolled => "Enrolled",
            DeviceState::Removed => "Removed from Apple School Manager",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl Device {
    /// A device first seen now, with only its serial and token.
    pub fn new(serial: &str, token_id: Option<&str>, now: OffsetDateTime) -> Device {
        Device {
            serial: serial.to_string(),
            token_id: token_id.map(str::to_string),
            model: String::new(),
            description: String::new(),
            color: String::new(),
            asset_tag: String::new(),
            os: String::new(),
            device_family: String::new(),
            profile_status: String::new(),
            profile_uuid: None,
            profile_name: None,
            profile_assign_time: None,
            profile_push_time: None,
            device_assigned_date: None,
            device_assigned_by: String::new(),
            first_seen: now,
            updated_at: now,
            last_op_date: None,
            removed_at: None,
            enrollment: Enrollment::NotEnrolled,
            udid: None,
            user: None,
            last_checkin: None,
            enrolled_at: None,
            seen_generation: 0,
        }
    }

    pub fn state(&self) -> DeviceState {
        if self.removed_at.is_some() {
            return DeviceState::Removed;
        }
        match self.enrollment {
            Enrollment::Enrolled => DeviceState::Enrolled,
            Enrollment::Enrolling => DeviceState::Enrolling,
            Enrollment::NotEnrolled | Enrollment::Unenrolled => {
                let assigned = self.profile_uuid.as_deref().is_some_and(|u| !u.is_empty())
                    && matches!(self.profile_status.as_str(), "assigned" | "pushed");
                if assigned {
                    DeviceState::Assigned
                } else {
                    DeviceState::Unassigned
                }
            }
        }
    }
}

/// One line of a device's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tombstone {
    pub token_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
}

/// What the Devices page shows for one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub serial: String,
    pub token_id: Option<String>,
    pub model: String,
    pub description: String,
    pub color: String,
    pub os: String,
    pub profile_status: String,
    pub profile_name: Option<String>,
    pub state: DeviceState,
    pub user: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_checkin: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
}

impl Summary {
    fn of(d: &Device) -> Summary {
        Summary {
            serial: d.serial.clone(),
            token_id: d.token_id.clone(),
            model: d.model.clone(),
            description: d.description.clone(),
            color: d.color.clone(),
            os: d.os.clone(),
            profile_status: d.profile_status.clone(),
            profile_name: d.profile_name.clone(),
            state: d.state(),
            user: d.user.clone(),
            last_checkin: d.last_checkin,
            removed_at: d.removed_at,
            first_seen: d.first_seen,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Serial,
    Model,
    Description,
    State,
    User,
    LastCheckin,
    FirstSeen,
}

impl SortKey {
    pub const ALL: [(SortKey, &'static str); 7] = [
        (SortKey::Serial, "serial"),
        (SortKey::Model, "model"),
        (SortKey::Description, "description"),
        (SortKey::State, "state"),
        (SortKey::User, "user"),
        (SortKey::LastCheckin, "last_checkin"),
        (SortKey::FirstSeen, "first_seen"),
    ];

    pub fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }

    pub fn as_str(self) -> &'static str {
        SortKey::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("serial")
    }
}

/// Whether removed devices are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Removed {
    /// Everything, removed devices included (what Intune shows: "Removed from ABM/ASM").
    #[default]
    Include,
    Exclude,
    Only,
}

/// The Devices page's question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Serial prefix, or part of the model, description or user; case does not matter.
    pub search: String,
    pub token_id: Option<String>,
    pub profile_name: Option<String>,
    pub state: Option<DeviceState>,
    pub removed: Removed,
    pub sort: SortKey,
    pub descending: bool,
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
}

/// One page of answers.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<Arc<Summary>>,
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    pub per_page: usize,
}

/// The inventory. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    store: Store,
    index: Arc<RwLock<Index>>,
    /// Held from reading a device to saving it, so the sync and the MDM side never overwrite
    /// each other's changes to one device.
    writes: Arc<std::sync::Mutex<()>>,
}

impl Inventory {
    /// Loads the index from the store.
    pub fn open(store: Store) -> Result<Inventory, InventoryError> {
        let mut index = Index::default();
        for item in store.scan::<Device>(DEVICES, b"") {
            let (_, device) = item?;
            index.insert(Summary::of(&device));
        }
        Ok(Inventory {
            store,
            index: Arc::new(RwLock::new(index)),
            writes: Arc::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, serial: &str) -> Result<Option<Device>, InventoryError> {
        Ok(self.store.get(DEVICES, serial.as_bytes())?)
    }

    /// Writes a device with history lines, all at once, and updates the index.
    pub fn save(&self, device: &Device, history: &[HistoryEntry]) -> Result<(), InventoryError> {
        let mut batch = self.store.batch();
        batch.put(DEVICES, device.serial.as_bytes(), device)?;
        for entry in history {
            batch.put(
                HISTORY,
                &history_key(&device.serial, self.store.next_id()?),
                entry,
            )?;
        }
        self.store.apply(batch)?;
        self.write_index().insert(Summary::of(device));
        if !history.is_empty() {
            self.trim_history(&device.serial)?;
        }
        Ok(())
    }

    /// The guard a read-modify-write of a device holds (see [`Inventory::update`]); the sync
    /// takes it around each device it applies.
    pub fn write_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data of its own: a poisoned lock is still usable.
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads one device (or `None`), lets `f` decide what to save (the device and history lines,
    /// or nothing), and saves it, with no other writer in between. Returns what was saved.
    pub fn update(
        &self,
        serial: &str,
        f: impl FnOnce(Option<Device>) -> Option<(Device, Vec<HistoryEntry>)>,
    ) -> Result<Option<Device>, InventoryError> {
        let _guard = self.write_guard();
        match f(self.get(serial)?) {
            Some((device, history)) => {
                self.save(&device, &history)?;
                Ok(Some(device))
            }
            None => Ok(None),
        }
    }

    /// Changes one existing device with `f` (which returns the history lines to add), with no
    /// other writer in between.
    pub fn modify(
        &self,
        serial: &str,
        f: impl FnOnce(&mut Device) -> Vec<HistoryEntry>,
    ) -> Result<Device, InventoryError> {
        let mut found = false;
        let saved = self.update(serial, |existing| {
            let mut device = existing?;
            found = true;
            let history = f(&mut device);
            Some((device, history))
        })?;
        match saved {
            Some(device) if found => Ok(device),
            _ => Err(InventoryError::NotFound(serial.to_string())),
        }
    }

    /// Deletes devices from Orchard. Those that came from Apple are remembered, so incremental
    /// syncs do not bring them back; the next full sync does. Returns how many were deleted.
    pub fn delete(&self, serials: &[String], now: OffsetDateTime) -> Result<usize, InventoryError> {
        let mut batch = self.store.batch();
        let mut deleted = Vec::new();
        for serial in serials {
            let Some(device) = self.get(serial)? else {
                continue;
            };
            batch.delete(DEVICES, serial.as_bytes());
            if device.token_id.is_some() && device.removed_at.is_none() {
                let tomb = Tombstone {
                    token_id: device.token_id.clone(),
                    deleted_at: now,
                };
                batch.put(TOMBSTONES, serial.as_bytes(), &tomb)?;
            }
            for key in self.store.keys(HISTORY, &history_prefix(serial)) {
                batch.delete(HISTORY, &key?);
            }
            deleted.push(serial.clone());
        }
        self.store.apply(batch)?;
        let mut index = self.write_index();
        for serial in &deleted {
            index.remove(serial);
        }
        Ok(deleted.len())
    }

    /// Forgets a device entirely (purge after the grace period): no tombstone.
    pub fn purge(&self, serial: &str) -> Result<(), InventoryError> {
        let mut batch = self.store.batch();
        batch.delete(DEVICES, serial.as_bytes());
        batch.delete(TOMBSTONES, serial.as_bytes());
        for key in self.store.keys(HISTORY, &history_prefix(serial)) {
            batch.delete(HISTORY, &key?);
        }
        self.store.apply(batch)?;
        self.write_index().remove(serial);
        Ok(())
    }

    pub fn is_tombstoned(&self, serial: &str) -> Result<bool, InventoryError> {
        Ok(self.store.contains(TOMBSTONES, serial.as_bytes())?)
    }

    /// Clears the tombstones of one token (a full sync re-imports what Apple still lists).
    pub fn clear_tombstones(&self, token_id: &str) -> Result<usize, InventoryError> {
        let mut batch = self.store.batch();
        for item in self.store.scan::<Tombstone>(TOMBSTONES, b"") {
            let (key, tomb) = item?;
            if tomb.token_id.as_deref() == Some(token_id) {
                batch.delete(TOMBSTONES, &key);
            }
        }
        let n = batch.len();
        self.store.apply(batch)?;
        Ok(n)
    }

    /// Newest first.
    pub fn history(&self, serial: &str) -> Result<Vec<HistoryEntry>, InventoryError> {
        self.store
            .scan_rev::<HistoryEntry>(HISTORY, &history_prefix(serial))
            .map(|r| r.map(|(_, e)| e).map_err(InventoryError::from))
            .collect()
    }

    fn trim_history(&self, serial: &str) -> Result<(), InventoryError> {
        let keys: Vec<Vec<u8>> = self
            .store
            .keys(HISTORY, &history_prefix(serial))
            .collect::<Result<_, _>>()?;
        if keys.len() > HISTORY_LIMIT {
            let mut batch = self.store.batch();
            for key in &keys[..keys.len() - HISTORY_LIMIT] {
                batch.delete(HISTORY, key);
            }
            self.store.apply(batch)?;
        }
        Ok(())
    }

    /// Serials of one token's devices (or every device), from the index.
    pub fn serials(&self, token_id: Option<&str>) -> Vec<String> {
        let index = self.read_index();
        (index.by_serial.values())
            .map(|&at| &index.entries[at].summary)
            .filter(|s| token_id.is_none() || s.token_id.as_deref() == token_id)
            .map(|s| s.serial.clone())
            .collect()
    }

    /// The enrollment profile names devices carry, sorted (for the profile filter).
    pub fn profile_names(&self) -> Vec<String> {
        let mut names = self.read_index().profiles.all();
        names.sort();
        names
    }

    /// Devices per state, for the dashboard and `orchard_devices{state}`.
    pub fn counts(&self) -> Vec<(DeviceState, usize)> {
        let index = self.read_index();
        DeviceState::ALL
            .into_iter()
            .map(|s| (s, index.by_state[s as usize]))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read_index().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Devices of one token.
    pub fn count_for_token(&self, token_id: &str) -> usize {
        let index = self.read_index();
        index
            .tokens
            .get(token_id)
            .map_or(0, |sym| index.tokens.uses(sym))
    }

    /// Summaries of all devices, ordered by first sighting (for the dashboard chart).
    pub fn first_seen_dates(&self) -> Vec<(OffsetDateTime, DeviceState)> {
        let mut v: Vec<_> = self
            .read_index()
            .entries
            .iter()
            .map(|e| (e.summary.first_seen, e.state))
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }

    /// Answers the Devices page: one page of the matching devices in the query's order, and how
    /// many match in all.
    pub fn query(&self, q: &Query) -> Page {
        let per_page = q.per_page.clamp(1, 500);
        let page = q.page.max(1);
        let index = self.read_index();
        let (matching, found) = index.matching(q);
        let rows = found
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .map(|e| e.summary.clone())
            .collect();
        Page {
            rows,
            matching,
            page,
            pages: matching.div_ceil(per_page).max(1),
            per_page,
        }
    }

    /// Every device the query matches, in its order (all pages, for the CSV export).
    pub fn matching(&self, q: &Query) -> Vec<Arc<Summary>> {
        let index = self.read_index();
        let (_, found) = index.matching(q);
        found.map(|e| e.summary.clone()).collect()
    }

    /// Every serial the query matches, in serial order (for "select everything the filter
    /// matches").
    pub fn matching_serials(&self, q: &Query) -> Vec<String> {
        let q = Query {
            sort: SortKey::Serial,
            descending: false,
            ..q.clone()
        };
        let index = self.read_index();
        let (_, found) = index.matching(&q);
        found.map(|e| e.summary.serial.clone()).collect()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Index updates only follow positions and numbers the index gave out, so they do not
        // panic; a poisoned lock still holds a usable index.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The devices in memory, arranged to answer queries without looking at every device's text:
/// the distinct strings are kept once, each device holds their numbers, and each sort order is a
/// list of positions made by the first query that needs it after a change. Sync writes in
/// batches and the page reads far more often, so a write only drops the orders it affects.
#[derive(Default)]
struct Index {
    /// Every device, in no particular order (a removal moves the last one into the gap).
    entries: Vec<Entry>,
    /// Each device's position in `entries`, by serial: the serial order, and serial prefix
    /// search as a range.
    by_serial: BTreeMap<String, usize>,
    models: Strings,
    descriptions: Strings,
    users: Strings,
    tokens: Strings,
    profiles: Strings,
    /// Devices per state, by `DeviceState as usize`.
    by_state: [usize; DeviceState::ALL.len()],
    /// Positions in `entries` in each sort key's ascending order (by `SortKey as usize`), ties
    /// in serial order. A new or removed device empties them all; a changed one, those by what
    /// changed.
    orders: [OnceLock<Vec<usize>>; SortKey::ALL.len()],
}

/// One device in the index: its row, and the numbers a query compares.
struct Entry {
    summary: Arc<Summary>,
    state: DeviceState,
    token: Option<Sym>,
    profile: Option<Sym>,
    model: Sym,
    description: Sym,
    user: Option<Sym>,
}

/// A query turned into numbers for one index.
struct Filter {
    token: Option<Sym>,
    profile: Option<Sym>,
    state: Option<DeviceState>,
    removed: Removed,
    search: Option<Search>,
}

/// By string number: whether its lower-case text contains the search text.
struct Search {
    models: Vec<bool>,
    descriptions: Vec<bool>,
    users: Vec<bool>,
    /// By position in `entries`: whether the serial starts with the search text.
    serial: Vec<bool>,
}

impl Index {
    fn insert(&mut self, summary: Summary) {
        let entry = Entry {
            state: summary.state,
            token: summary.token_id.as_deref().map(|t| self.tokens.intern(t)),
            profile: summary
                .profile_name
                .as_deref()
                .map(|p| self.profiles.intern(p)),
            model: self.models.intern(&summary.model),
            description: self.descriptions.intern(&summary.description),
            user: summary.user.as_deref().map(|u| self.users.intern(u)),
            summary: Arc::new(summary),
        };
        self.by_state[entry.state as usize] += 1;
        match self.by_serial.get(&entry.summary.serial) {
            Some(&at) => {
                // The device keeps its place: only the orders by what changed are stale.
                for (key, _) in SortKey::ALL {
                    if !entry.sorts_with(&self.entries[at], key) {
                        self.orders[key as usize] = OnceLock::new();
                    }
                }
                let old = std::mem::replace(&mut self.entries[at], entry);
                self.forget(old);
            }
            None => {
                self.by_serial
                    .insert(entry.summary.serial.clone(), self.entries.len());
                self.entries.push(entry);
                self.orders = Default::default();
            }
        }
    }

    fn remove(&mut self, serial: &str) {
        let Some(at) = self.by_serial.remove(serial) else {
            return;
        };
        let old = self.entries.swap_remove(at);
        if let Some(moved) = self.entries.get(at) {
            self.by_serial.insert(moved.summary.serial.clone(), at);
        }
        self.forget(old);
        self.orders = Default::default();
    }

    /// Releases what a replaced or removed entry held.
    fn forget(&mut self, old: Entry) {
        self.by_state[old.state as usize] -= 1;
        if let Some(sym) = old.token {
            self.tokens.release(sym);
        }
        if let Some(sym) = old.profile {
            self.profiles.release(sym);
        }
        self.models.release(old.model);
        self.descriptions.release(old.description);
        if let Some(sym) = old.user {
            self.users.release(sym);
        }
    }

    /// How many devices `q` matches, and the devices in its order (all pages).
    fn matching<'a>(&'a self, q: &Query) -> (usize, impl Iterator<Item = &'a Entry> + 'a) {
        // Each device is tested in the order of `entries`, reading memory front to back (several
        // times quicker than in a sort order); the sort order then only looks up the answers,
        // and stops where the page ends.
        let hits: Vec<bool> = match self.filter(q) {
            Some(filter) => (self.entries.iter().enumerate())
                .map(|(at, e)| filter.matches(at, e))
                .collect(),
            // A token or profile no device carries: nothing matches.
            None => Vec::new(),
        };
        let count = hits.iter().filter(|&&hit| hit).count();
        let order = if count == 0 { &[] } else { self.order(q.sort) };
        let descending = q.descending;
        let n = order.len();
        let found = (0..n).filter_map(move |i| {
            let at = order[if descending { n - 1 - i } else { i }];
            hits[at].then(|| &self.entries[at])
        });
        (count, found)
    }

    /// `q` in numbers; `None` when it names a token or profile no device carries.
    fn filter(&self, q: &Query) -> Option<Filter> {
        let token = match &q.token_id {
            Some(t) => Some(self.tokens.get(t)?),
            None => None,
        };
        let profile = match &q.profile_name {
            Some(p) => Some(self.profiles.get(p)?),
            None => None,
        };
        let needle = q.search.trim();
        let search = (!needle.is_empty()).then(|| {
            // Serials are upper case, so a prefix is a range of the serial order.
            let prefix = needle.to_uppercase();
            let mut serial = vec![false; self.entries.len()];
            for (_, &at) in self
                .by_serial
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(s, _)| s.starts_with(&prefix))
            {
                serial[at] = true;
            }
            let lower = needle.to_lowercase();
            let finder = memmem::Finder::new(&lower);
            Search {
                models: self.models.containing(&finder),
                descriptions: self.descriptions.containing(&finder),
                users: self.users.containing(&finder),
                serial,
            }
        });
        Some(Filter {
            token,
            profile,
            state: q.state,
            removed: q.removed,
            search,
        })
    }

    /// Positions in `entries` in `key`'s ascending order, ties in serial order.
    fn order(&self, key: SortKey) -> &[usize] {
        self.orders[key as usize].get_or_init(|| {
            // Each device's value, as a number: read front to back through `entries`, which is
            // far quicker than in serial order, then sorted beside its device.
            let values = |value: &dyn Fn(&Entry) -> i128| -> Vec<i128> {
                self.entries.iter().map(value).collect()
            };
            let rank = |ranks: &[usize], sym: Sym| ranks[sym.at()] as i128;
            // No real date is at `i128::MIN` nanoseconds.
            let time =
                |t: Option<OffsetDateTime>| t.map_or(i128::MIN, |t| t.unix_timestamp_nanos());
            let values = match key {
                SortKey::Serial => return self.by_serial.values().copied().collect(),
                SortKey::Model => {
                    let ranks = self.models.ranks();
                    values(&|e| rank(ranks, e.model))
                }
                SortKey::Description => {
                    let ranks = self.descriptions.ranks();
                    values(&|e| rank(ranks, e.description))
                }
                SortKey::User => {
                    let ranks = self.users.ranks();
                    // No user first.
                    values(&|e| e.user.map_or(-1, |u| rank(ranks, u)))
                }
                SortKey::State => values(&|e| e.state as i128),
                SortKey::LastCheckin => values(&|e| time(e.summary.last_checkin)),
                SortKey::FirstSeen => values(&|e| time(Some(e.summary.first_seen))),
            };
            // A stable sort of the serial order, so ties stay in serial order.
            let serial = self.order(SortKey::Serial);
            let mut keyed: Vec<(i128, usize)> = serial.iter().map(|&at| (values[at], at)).collect();
            keyed.sort_by_key(|&(value, _)| value);
            keyed.into_iter().map(|(_, at)| at).collect()
        })
    }
}

impl Entry {
    /// Whether the two have the same value for `key` (the same device before and after a
    /// change, so the serial is the same).
    fn sorts_with(&self, other: &Entry, key: SortKey) -> bool {
        match key {
            SortKey::Serial => true,
            SortKey::Model => self.model == other.model,
            SortKey::Description => self.description == other.description,
            SortKey::State => self.state == other.state,
            SortKey::User => self.user == other.user,
            SortKey::LastCheckin => self.summary.last_checkin == other.summary.last_checkin,
            SortKey::FirstSeen => self.summary.first_seen == other.summary.first_seen,
        }
    }
}

impl Filter {
    /// Whether the entry at position `at` matches.
    fn matches(&self, at: usize, e: &Entry) -> bool {
        let removed_ok = match self.removed {
            Removed::Include => true,
            // A device is in the removed state exactly when it has a removal date.
            Removed::Exclude => e.state != DeviceState::Removed,
            Removed::Only => e.state == DeviceState::Removed,
        };
        removed_ok
            && self.token.is_none_or(|t| e.token == Some(t))
            && self.profile.is_none_or(|p| e.profile == Some(p))
            && self.state.is_none_or(|s| e.state == s)
            && self.search.as_ref().is_none_or(|s| {
                s.serial[at]
                    || s.models[e.model.at()]
                    || s.descriptions[e.description.at()]
                    || e.user.is_some_and(|u| s.users[u.at()])
            })
    }
}

/// A string's number in its [`Strings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sym(u32);

impl Sym {
    fn at(self) -> usize {
        self.0 as usize
    }
}

/// Distinct strings, each kept once with how many devices use it. A fleet has a few dozen models
/// and descriptions, so a text search tests each once, not once a device.
#[derive(Default)]
struct Strings {
    numbers: HashMap<Arc<str>, Sym>,
    /// By number; an unused number has empty text until it is given out again.
    strings: Vec<Interned>,
    unused: Vec<Sym>,
    /// Made when first needed after a new string arrives. A string that falls out of use stays
    /// in them, which is harmless: no device refers to its number.
    ranks: OnceLock<Vec<usize>>,
    haystack: OnceLock<Haystack>,
}

#[derive(Default)]
struct Interned {
    text: Arc<str>,
    uses: usize,
}

/// The lower case of every string, one after another, so a search reads them in one pass.
struct Haystack {
    text: Vec<u8>,
    /// By number: where its text ends in `text`.
    ends: Vec<usize>,
}

impl Strings {
    /// The number of `text`, counting one more use.
    fn intern(&mut self, text: &str) -> Sym {
        if let Some(&sym) = self.numbers.get(text) {
            self.strings[sym.at()].uses += 1;
            return sym;
        }
        let interned = Interned {
            text: Arc::from(text),
            uses: 1,
        };
        let sym = match self.unused.pop() {
            Some(sym) => {
                self.strings[sym.at()] = interned;
                sym
            }
            None => {
                // 2^32 distinct strings would need hundreds of GiB before this could fail.
                let sym = Sym(u32::try_from(self.strings.len()).expect("fewer than 2^32 strings"));
                self.strings.push(interned);
                sym
            }
        };
        self.numbers
            .insert(self.strings[sym.at()].text.clone(), sym);
        self.ranks = OnceLock::new();
        self.haystack = OnceLock::new();
        sym
    }

    /// Counts one use fewer; an unused string is forgotten.
    fn release(&mut self, sym: Sym) {
        let interned = &mut self.strings[sym.at()];
        interned.uses -= 1;
        if interned.uses == 0 {
            self.numbers.remove(&interned.text);
            *interned = Interned::default();
            self.unused.push(sym);
        }
    }

    fn get(&self, text: &str) -> Option<Sym> {
        self.numbers.get(text).copied()
    }

    fn uses(&self, sym: Sym) -> usize {
        self.strings[sym.at()].uses
    }

    /// Every string in use.
    fn all(&self) -> Vec<String> {
        self.numbers.keys().map(|t| t.to_string()).collect()
    }

    /// By number: whether its lower case contains the needle (lower case, not empty).
    fn containing(&self, needle: &memmem::Finder) -> Vec<bool> {
        let haystack = self.haystack.get_or_init(|| {
            let mut text = Vec::new();
            let mut ends = Vec::with_capacity(self.strings.len());
            for s in &self.strings {
                text.extend_from_slice(s.text.to_lowercase().as_bytes());
                ends.push(text.len());
            }
            Haystack { text, ends }
        });
        let mut hits = vec![false; self.strings.len()];
        let mut from = 0;
        while let Some(found) = needle.find(&haystack.text[from..]) {
            let start = from + found;
            // The string the match starts in; a match that runs past its end spans two
            // strings, and any later one in it would too.
            let at = haystack.ends.partition_point(|&end| end <= start);
            hits[at] = start + needle.needle().len() <= haystack.ends[at];
            from = haystack.ends[at];
        }
        hits
    }

    /// By number: the place of its text in byte order.
    fn ranks(&self) -> &[usize] {
        self.ranks.get_or_init(|| {
            let mut by_text: Vec<usize> = (0..self.strings.len()).collect();
            by_text.sort_unstable_by(|a, b| self.strings[*a].text.cmp(&self.strings[*b].text));
            let mut ranks = vec![0; by_text.len()];
            for (rank, at) in by_text.into_iter().enumerate() {
                ranks[at] = rank;
            }
            ranks
        })
    }
}

fn history_prefix(serial: &str) -> Vec<u8> {
    let mut k = serial.as_bytes().to_vec();
    k.push(0);
    k
}

fn history_key(serial: &str, id: u64) -> Vec<u8> {
    let mut k = history_prefix(serial);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-09-01 08:00 UTC);

    fn device(serial: &str, model: &str, desc: &str) -> Device {
        let mut d = Device::new(serial, Some("t1"), NOW);
        d.model = model.into();
        d.description = desc.into();
        d
    }

    fn entry(what: &str) -> HistoryEntry {
        HistoryEntry {
            at: NOW,
            what: what.into(),
        }
    }

    fn inventory_with(devices: &[Device]) -> Inventory {
        let inv = Inventory::open(Store::memory()).unwrap();
        for d in devices {
            inv.save(d, &[entry("added")]).unwrap();
        }
        inv
    }

    #[test]
    fn state_follows_removal_enrollment_and_profile() {
        let mut d = device("C02A", "Mac15,3", "MacBook Air");
        assert_eq!(d.state(), DeviceState::Unassigned);
        d.profile_uuid = Some("P1".into());
        d.profile_status = "assigned".into();
        assert_eq!(d.state(), DeviceState::Assigned);
        d.enrollment = Enrollment::Enrolled;
        assert_eq!(d.state(), DeviceState::Enrolled);
        d.removed_at = Some(NOW);
        assert_eq!(d.state(), DeviceState::Removed);
    }

    #[test]
    fn search_matches_serial_prefix_model_description_and_user() {
        let mut c = device("C02XL0AAJGH5", "Mac15,3", "MacBook Air 13-inch");
        c.user = Some("ada.lovelace".into());
        let inv = inventory_with(&[
            c,
            device("C02XL0ABJGH5", "Mac14,7", "MacBook Pro 13-inch"),
            device("FVFXL0ACQ6L4", "iMac21,1", "iMac 24-inch"),
        ]);
        let find = |s: &str| -> Vec<String> {
            let q = Query {
                search: s.into(),
                per_page: 50,
                ..Query::default()
            };
            inv.query(&q)
                .rows
                .iter()
                .map(|r| r.serial.clone())
                .collect()
        };
        assert_eq!(find("c02xl0a").len(), 2, "serial prefix, any case");
        assert_eq!(
            find("XL0A"),
            Vec::<String>::new(),
            "serial matches by prefix only"
        );
        assert_eq!(find("imac"), vec!["FVFXL0ACQ6L4"]);
        assert_eq!(find("Mac14,7"), vec!["C02XL0ABJGH5"]);
        assert_eq!(find("lovelace"), vec!["C02XL0AAJGH5"]);
        assert_eq!(find("").len(), 3);
    }

    #[test]
    fn filters_sort_and_pages_are_consistent() {
        let mut devices = Vec::new();
        for i in 0..25 {
            let mut d = device(
                &format!("SER{i:03}"),
                if i % 2 == 0 { "Mac15,3" } else { "Mac14,2" },
                "Mac",
            );
            if i % 5 == 0 {
                d.removed_at = Some(NOW);
            }
            devices.push(d);
        }
        let inv = inventory_with(&devices);
        let q = Query {
            removed: Removed::Exclude,
            per_page: 7,
            page: 3,
            ..Query::default()
        };
        let page = inv.query(&q);
        assert_eq!(page.matching, 20);
        assert_eq!(page.pages, 3);
        assert_eq!(page.rows.len(), 6);
        assert_eq!(page.rows[0].serial, "SER018");

        let only = inv.query(&Query {
            removed: Removed::Only,
            per_page: 50,
            ..Query::default()
        });
        assert_eq!(only.matching, 5);
        assert!(only.rows.iter().all(|r| r.state == DeviceState::Removed));

        // Sorting by model, descending, then by serial within a model; pages do not overlap.
        let sorted = |page| {
            inv.query(&Query {
                sort: SortKey::Model,
                descending: true,
                per_page: 10,
                page,
                ..Query::default()
            })
        };
        let p1 = sorted(1);
        let p2 = sorted(2);
        assert_eq!(p1.rows[0].model, "Mac15,3");
        assert_eq!(p1.rows[0].serial, "SER024");
        let mut seen: Vec<_> = p1
            .rows
            .iter()
            .chain(p2.rows.iter())
            .map(|r| r.serial.clone())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 20);
        assert_eq!(sorted(3).rows.len(), 5);

        let by_state = inv.query(&Query {
            state: Some(DeviceState::Removed),
            per_page: 50,
            ..Query::default()
        });
        assert_eq!(by_state.matching, 5);
        assert_eq!(inv.matching_serials(&q).len(), 20);
    }

    #[test]
    fn counts_follow_saves_and_deletes() {
        let inv = inventory_with(&[device("A", "m", "d"), device("B", "m", "d")]);
        inv.modify("A", |d| {
            d.removed_at = Some(NOW);
            vec![entry("removed")]
        })
        .unwrap();
        let counts: HashMap<_, _> = inv.counts().into_iter().collect();
        assert_eq!(counts[&DeviceState::Removed], 1);
        assert_eq!(counts[&DeviceState::Unassigned], 1);
        assert_eq!(inv.delete(&["B".into(), "nope".into()], NOW).unwrap(), 1);
        let counts: HashMap<_, _> = inv.counts().into_iter().collect();
        assert_eq!(counts[&DeviceState::Unassigned], 0);
        assert_eq!(inv.len(), 1);
    }

    #[test]
    fn deleted_device_is_tombstoned_until_cleared_and_history_goes_with_it() {
        let inv = inventory_with(&[device("A", "m", "d")]);
        assert_eq!(inv.history("A").unwrap().len(), 1);
        inv.delete(&["A".into()], NOW).unwrap();
        assert!(inv.get("A").unwrap().is_none());
        assert!(inv.history("A").unwrap().is_empty());
        assert!(inv.is_tombstoned("A").unwrap());
        assert_eq!(inv.clear_tombstones("other").unwrap(), 0);
        assert_eq!(inv.clear_tombstones("t1").unwrap(), 1);
        assert!(!inv.is_tombstoned("A").unwrap());
    }

    #[test]
    fn index_is_rebuilt_from_the_store_on_open() {
        let inv = inventory_with(&[device("A", "Mac15,3", "d"), device("B", "m", "d")]);
        let reopened = Inventory::open(inv.store().clone()).unwrap();
        assert_eq!(reopened.len(), 2);
        let q = Query {
            search: "mac15".into(),
            per_page: 10,
            ..Query::default()
        };
        assert_eq!(reopened.query(&q).matching, 1);
    }

    /// The plain answer the index must agree with: each device tested one by one, then all
    /// sorted. The serials of every match, in order.
    fn plain_query(devices: &BTreeMap<String, Device>, q: &Query) -> Vec<String> {
        let needle = q.search.trim().to_lowercase();
        let prefix = q.search.trim().to_uppercase();
        let mut found: Vec<Summary> = devices
            .values()
            .map(Summary::of)
            .filter(|s| {
                let removed_ok = match q.removed {
                    Removed::Include => true,
                    Removed::Exclude => s.removed_at.is_none(),
                    Removed::Only => s.removed_at.is_some(),
                };
                let text = [
                    &s.model,
                    &s.description,
                    s.user.as_ref().unwrap_or(&s.model),
                ];
                removed_ok
                    && q.token_id
                        .as_ref()
                        .is_none_or(|t| s.token_id.as_ref() == Some(t))
                    && (q.profile_name.as_ref()).is_none_or(|p| s.profile_name.as_ref() == Some(p))
                    && q.state.is_none_or(|st| s.state == st)
                    && (needle.is_empty()
                        || s.serial.starts_with(&prefix)
                        || text.iter().any(|t| t.to_lowercase().contains(&needle)))
            })
            .collect();
        found.sort_by(|a, b| {
            let ord = match q.sort {
                SortKey::Serial => std::cmp::Ordering::Equal,
                SortKey::Model => a.model.cmp(&b.model),
                SortKey::Description => a.description.cmp(&b.description),
                SortKey::State => a.state.cmp(&b.state),
                SortKey::User => a.user.cmp(&b.user),
                SortKey::LastCheckin => a.last_checkin.cmp(&b.last_checkin),
                SortKey::FirstSeen => a.first_seen.cmp(&b.first_seen),
            }
            .then_with(|| a.serial.cmp(&b.serial));
            if q.descending { ord.reverse() } else { ord }
        });
        found.into_iter().map(|s| s.serial).collect()
    }

    fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
        &from[rng.random_range(0..from.len())]
    }

    /// A device with fields drawn from small sets, so searches, filters and sort ties all hit.
    fn random_device(rng: &mut StdRng, serial: &str) -> Device {
        let mut d = Device::new(serial, *pick(rng, &[None, Some("t1"), Some("t2")]), NOW);
        d.model = pick(rng, &["Mac15,3", "Mac14,2", "iMac21,1", "", "MACBOOK Ünï"]).to_string();
        d.description = pick(
            rng,
            &["MacBook Air", "MacBook Pro", "iMac 24-inch", "", "Mac mini"],
        )
        .to_string();
        d.user = match rng.random_range(0..4) {
            0 => None,
            1 => Some("Ada Lovelace".into()),
            _ => Some(format!("user{}", rng.random_range(0..300))),
        };
        d.profile_name = pick(rng, &[None, Some("Staff"), Some("Lab")]).map(str::to_string);
        d.profile_uuid = d.profile_name.as_ref().map(|p| format!("uuid-{p}"));
        d.profile_status = pick(rng, &["empty", "assigned", "pushed"]).to_string();
        d.enrollment = *pick(
            rng,
            &[
                Enrollment::NotEnrolled,
                Enrollment::Enrolling,
                Enrollment::Enrolled,
                Enrollment::Unenrolled,
            ],
        );
        d.removed_at = rng.random_bool(0.1).then_some(NOW);
        d.last_checkin = rng
            .random_bool(0.7)
            .then(|| NOW - time::Duration::minutes(rng.random_range(0..50)));
        d.first_seen = NOW - time::Duration::days(rng.random_range(0..20));
        d
    }

    fn random_serial(rng: &mut StdRng) -> String {
        // Mostly Apple's upper case; now and then lower case, which a search never matches as a
        // serial prefix (it is upper-cased) but may match through digits.
        let chars: &[u8] = if rng.random_bool(0.05) {
            b"bc01"
        } else {
            b"BCDF0123"
        };
        (0..6).map(|_| char::from(*pick(rng, chars))).collect()
    }

    fn random_query(rng: &mut StdRng, devices: &BTreeMap<String, Device>) -> Query {
        let serials: Vec<&String> = devices.keys().collect();
        let search = match rng.random_range(0..4) {
            0 => String::new(),
            1 if !serials.is_empty() => {
                let serial = pick(rng, &serials);
                let prefix = &serial[..rng.random_range(1..=serial.len())];
                if rng.random_bool(0.5) {
                    prefix.to_lowercase()
                } else {
                    format!(" {prefix} ")
                }
            }
            _ => pick(
                rng,
                &[
                    "mac",
                    "MACBOOK",
                    "book a",
                    "user1",
                    "user29",
                    "ada",
                    "zz",
                    " pro ",
                    "c",
                    "ü",
                    "1",
                    "14,",
                    "-inch",
                    "2u",
                    "3mac",
                    "ada lovelaceuser",
                ],
            )
            .to_string(),
        };
        let state = rng.random_bool(0.3).then(|| *pick(rng, &DeviceState::ALL));
        Query {
            search,
            token_id: pick(rng, &[None, None, Some("t1"), Some("t2"), Some("nope")])
                .map(str::to_string),
            profile_name: pick(rng, &[None, None, Some("Staff"), Some("Lab"), Some("nope")])
                .map(str::to_string),
            state,
            removed: *pick(rng, &[Removed::Include, Removed::Exclude, Removed::Only]),
            sort: pick(rng, &SortKey::ALL).0,
            descending: rng.random_bool(0.5),
            page: *pick(rng, &[0, 1, 1, 2, 3, 5, 40]),
            per_page: *pick(rng, &[0, 1, 7, 50, 600]),
        }
    }

    /// Checks `n` random queries, and the counts, against the plain answer.
    fn assert_agrees(
        inv: &Inventory,
        devices: &BTreeMap<String, Device>,
        rng: &mut StdRng,
        n: usize,
    ) {
        for _ in 0..n {
            assert_query_agrees(inv, devices, &random_query(rng, devices));
        }
        assert_counts_agree(inv, devices);
    }

    fn assert_query_agrees(inv: &Inventory, devices: &BTreeMap<String, Device>, q: &Query) {
        let page = inv.query(q);
        let all = plain_query(devices, q);
        let per_page = q.per_page.clamp(1, 500);
        let skip = (q.page.max(1) - 1) * per_page;
        let plain_rows: Vec<&String> = all.iter().skip(skip).take(per_page).collect();
        let rows: Vec<&String> = page.rows.iter().map(|r| &r.serial).collect();
        assert_eq!((page.matching, rows), (all.len(), plain_rows), "{q:?}");
        assert_eq!(page.pages, all.len().div_ceil(per_page).max(1));
        let every: Vec<String> = (inv.matching(q).iter()).map(|s| s.serial.clone()).collect();
        assert_eq!(every, all, "{q:?}");
        let in_serial_order = Query {
            sort: SortKey::Serial,
            descending: false,
            ..q.clone()
        };
        assert_eq!(
            inv.matching_serials(q),
            plain_query(devices, &in_serial_order),
            "{q:?}"
        );
    }

    fn assert_counts_agree(inv: &Inventory, devices: &BTreeMap<String, Device>) {
        for (state, n) in inv.counts() {
            let plain = devices.values().filter(|d| d.state() == state).count();
            assert_eq!(n, plain, "{state:?}");
        }
        for token in ["t1", "t2", "nope"] {
            let plain = devices
                .values()
                .filter(|d| d.token_id.as_deref() == Some(token))
                .count();
            assert_eq!(inv.count_for_token(token), plain);
        }
        let mut profiles: Vec<String> = devices
            .values()
            .filter_map(|d| d.profile_name.clone())
            .collect();
        profiles.sort();
        profiles.dedup();
        assert_eq!(inv.profile_names(), profiles);
        assert_eq!(inv.len(), devices.len());
        assert_eq!(
            inv.serials(None),
            devices.keys().cloned().collect::<Vec<_>>()
        );
    }

    #[test]
    fn index_answers_what_a_plain_filter_and_sort_would() {
        let mut rng = StdRng::seed_from_u64(4);
        let inv = Inventory::open(Store::memory()).unwrap();
        let mut devices = BTreeMap::new();
        for _ in 0..2000 {
            let serial = random_serial(&mut rng);
            let d = random_device(&mut rng, &serial);
            inv.save(&d, &[]).unwrap();
            devices.insert(d.serial.clone(), d);
        }
        assert_agrees(&inv, &devices, &mut rng, 300);

        // The same query in every order before and after each write: the second time sees the
        // index as it is now, never an order the first left behind.
        let in_every_order = |inv: &Inventory, devices: &BTreeMap<String, Device>, q: &Query| {
            for (sort, _) in SortKey::ALL {
                assert_query_agrees(inv, devices, &Query { sort, ..q.clone() });
            }
        };
        for round in 0..200 {
            let q = random_query(&mut rng, &devices);
            in_every_order(&inv, &devices, &q);
            let serials: Vec<String> = devices.keys().cloned().collect();
            let serial = pick(&mut rng, &serials).clone();
            match rng.random_range(0..8) {
                0 => {
                    let serial = random_serial(&mut rng);
                    let d = random_device(&mut rng, &serial);
                    inv.save(&d, &[]).unwrap();
                    devices.insert(d.serial.clone(), d);
                }
                1 => {
                    let fresh = random_device(&mut rng, &serial);
                    inv.modify(&serial, |d| {
                        *d = fresh.clone();
                        vec![]
                    })
                    .unwrap();
                    devices.insert(serial, fresh);
                }
                2 => {
                    inv.delete(std::slice::from_ref(&serial), NOW).unwrap();
                    devices.remove(&serial);
                }
                3 => {
                    inv.purge(&serial).unwrap();
                    devices.remove(&serial);
                }
                _ => {
                    // One field, so the orders by the others are kept.
                    let mut d = devices[&serial].clone();
                    match rng.random_range(0..7) {
                        0 => d.model = random_device(&mut rng, &serial).model,
                        1 => d.description = format!("Changed {round}"),
                        2 => d.user = Some(format!("new user {round}")),
                        3 => d.last_checkin = Some(NOW + time::Duration::minutes(round)),
                        4 => d.removed_at = d.removed_at.xor(Some(NOW)),
                        5 => d.enrollment = Enrollment::Enrolled,
                        _ => d.first_seen = NOW - time::Duration::days(rng.random_range(0..20)),
                    }
                    inv.save(&d, &[]).unwrap();
                    devices.insert(serial, d);
                }
            }
            in_every_order(&inv, &devices, &q);
            if round % 50 == 0 {
                assert_counts_agree(&inv, &devices);
            }
        }
        assert_agrees(&inv, &devices, &mut rng, 200);

        let reopened = Inventory::open(inv.store().clone()).unwrap();
        assert_agrees(&reopened, &devices, &mut rng, 100);

        for serial in devices.keys() {
            inv.purge(serial).unwrap();
        }
        assert_agrees(&inv, &BTreeMap::new(), &mut rng, 20);
        assert!(
            inv.read_index().users.numbers.is_empty(),
            "no string outlives its devices"
        );
    }

    /// The strings in use whose lower case contains `needle`, sorted.
    fn containing(strings: &Strings, needle: &str) -> Vec<String> {
        let hits = strings.containing(&memmem::Finder::new(needle));
        let mut found: Vec<String> = (strings.strings.iter().zip(hits))
            .filter(|(s, hit)| *hit && s.uses > 0)
            .map(|(s, _)| s.text.to_string())
            .collect();
        found.sort();
        found
    }

    #[test]
    fn text_search_finds_each_string_alone_never_across_two() {
        let mut strings = Strings::default();
        strings.intern("xa");
        let aa = strings.intern("aa");
        for text in ["ab", "c", "", "ÄBC"] {
            strings.intern(text);
        }
        assert_eq!(
            containing(&strings, "aa"),
            ["aa"],
            "after the xa+a that spans two"
        );
        assert_eq!(containing(&strings, "xaa"), Vec::<String>::new());
        assert_eq!(containing(&strings, "bc"), ["ÄBC"], "not ab+c");
        assert_eq!(containing(&strings, "a"), ["aa", "ab", "xa"]);
        assert_eq!(containing(&strings, "äb"), ["ÄBC"]);
        strings.release(aa);
        assert_eq!(containing(&strings, "aa"), Vec::<String>::new());
        strings.intern("ba");
        assert_eq!(containing(&strings, "ba"), ["ba"], "a new string is found");
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let inv = inventory_with(&[device("A", "m", "d")]);
        for i in 0..(HISTORY_LIMIT + 10) {
            inv.modify("A", |_| vec![entry(&format!("change {i}"))])
                .unwrap();
        }
        let h = inv.history("A").unwrap();
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h[0].what, format!("change {}", HISTORY_LIMIT + 9));
    }
}
