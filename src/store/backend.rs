//! The two key-value backends behind [`super::Store`]: sled on disk, a B-tree in memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

pub(super) enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

pub(super) type Entry = (Vec<u8>, Vec<u8>);
pub(super) type EntryIter = Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send>;

pub(super) trait Backend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// All ops or none.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Entries whose key starts with `prefix`, ascending or (`rev`) descending.
    fn scan(&self, prefix: Vec<u8>, rev: bool) -> EntryIter;
    /// Up to `limit` entries from `start` on whose key starts with `within`.
    fn range_from(
        &self,
        start: Vec<u8>,
        within: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;
    /// Writes `new` only if the current value is `old`; false when it was not.
    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StoreError>;
    fn next_id(&self) -> Result<u64, StoreError>;
    fn flush(&self) -> Result<(), StoreError>;
}

pub(super) struct SledBackend {
    db: sled::Db,
}

impl SledBackend {
    pub(super) fn open(dir: &Path) -> Result<SledBackend, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // Small appliance: a modest page cache is plenty, and keeps memory predictable.
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        Ok(SledBackend { db })
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        Ok(self.db.apply_batch(batch)?)
    }

    fn scan(&self, prefix: Vec<u8>, rev: bool) -> EntryIter {
        let iter = self.db.scan_prefix(prefix);
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        };
        if rev {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn range_from(
        &self,
        start: Vec<u8>,
        within: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&within) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        Ok(self.db.compare_and_swap(key, old, new)?.is_ok())
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    ids: AtomicU64,
}

impl MemoryBackend {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-written (every write is one
        // insert/remove sequence under the lock), so a poisoned lock is still usable.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().get(key).cloned())
    }

    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut map = self.write();
        for op in ops {
            match op {
                Op::Put(k, v) => map.insert(k, v),
                Op::Delete(k) => map.remove(&k),
            };
        }
        Ok(())
    }

    fn scan(&self, prefix: Vec<u8>, rev: bool) -> EntryIter {
        let map = self.read();
        let mut items: Vec<Entry> = map
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if rev {
            items.reverse();
        }
        Box::new(items.into_iter().map(Ok))
    }

    fn range_from(
        &self,
        start: Vec<u8>,
        within: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .read()
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&within))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let mut map = self.write();
        if map.get(key) != old.as_ref() {
            return Ok(false);
        }
        match new {
            Some(v) => map.insert(key.to_vec(), v),
            None => map.remove(key),
        };
        Ok(true)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
