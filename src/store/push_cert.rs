//! Storage of the push certificate, its pending request and the APNs alert (one table, fixed keys).

use crate::apple::push_cert::{CertAlert, InstalledCert, PendingRequest, PushCertStorage};
use crate::store::{Store, StoreError, Table};

pub const PUSH_CERT: Table = Table::new("push_cert");
const PENDING: &[u8] = b"pending";
const INSTALLED: &[u8] = b"installed";
const ALERT: &[u8] = b"alert";

impl PushCertStorage for Store {
    fn pending(&self) -> Result<Option<PendingRequest>, StoreError> {
        self.get(PUSH_CERT, PENDING)
    }

    fn put_pending(&self, request: &PendingRequest) -> Result<(), StoreError> {
        self.put(PUSH_CERT, PENDING, request)?;
        self.flush_blocking()
    }

    fn installed(&self) -> Result<Option<InstalledCert>, StoreError> {
        self.get(PUSH_CERT, INSTALLED)
    }

    fn install(&self, cert: &InstalledCert) -> Result<(), StoreError> {
        let mut batch = self.batch();
        batch.put(PUSH_CERT, INSTALLED, cert)?;
        batch.delete(PUSH_CERT, PENDING);
        batch.delete(PUSH_CERT, ALERT);
        self.apply(batch)?;
        self.flush_blocking()
    }

    fn alert(&self) -> Result<Option<CertAlert>, StoreError> {
        self.get(PUSH_CERT, ALERT)
    }

    fn put_alert(&self, alert: &CertAlert) -> Result<(), StoreError> {
        self.put(PUSH_CERT, ALERT, alert)
    }
}
