//! The MDM service's storage ([`crate::mdm::service::MdmStorage`]) on the store: enrollments by
//! UDID, certificate bindings by hash, a serial-number index, and each device's command queue.

use super::{Store, StoreError, Table, be};
use time::OffsetDateTime;

use crate::mdm::command::Udid;
use crate::mdm::enroll::{Challenge, EnrollStorage, Ticket};
use crate::mdm::scep::{IssuedCert, ScepStorage, StoredCa};
use crate::mdm::service::{CommandRecord, Enrollment, MdmStorage};

pub const ENROLLMENTS: Table = Table::new("mdm_enrollments");
/// Certificate SHA-256 (hex) → UDID.
pub const CERT_BINDINGS: Table = Table::new("mdm_cert_bindings");
/// Serial number → UDID.
pub const SERIALS: Table = Table::new("mdm_serials");
/// UDID, 0, big-endian sequence → command.
pub const COMMANDS: Table = Table::new("mdm_commands");

fn queue_prefix(udid: &Udid) -> Vec<u8> {
    let mut k = udid.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

fn command_key(udid: &Udid, seq: u64) -> Vec<u8> {
    let mut k = queue_prefix(udid);
    k.extend_from_slice(&be(seq));
    k
}

impl Store {
    fn drop_pending(&self, b: &mut super::Batch, udid: &Udid, all: bool) -> Result<(), StoreError> {
        for item in self.scan::<CommandRecord>(COMMANDS, &queue_prefix(udid)) {
            let (k, c) = item?;
            if all || c.status.is_pending() {
                b.delete(COMMANDS, &k);
            }
        }
        Ok(())
    }
}

impl MdmStorage for Store {
    fn enrollment(&self, udid: &Udid) -> Result<Option<Enrollment>, StoreError> {
        self.get(ENROLLMENTS, udid.as_str().as_bytes())
    }

    fn enrollment_by_serial(&self, serial: &str) -> Result<Option<Enrollment>, StoreError> {
        match self.get::<Udid>(SERIALS, serial.as_bytes())? {
            Some(udid) => self.enrollment(&udid),
            None => Ok(None),
        }
    }

    fn enrollments(
        &self,
        after: Option<&Udid>,
        limit: usize,
    ) -> Result<Vec<Enrollment>, StoreError> {
        let start = match after {
            // The smallest key greater than `after`.
            Some(u) => {
                let mut k = u.as_str().as_bytes().to_vec();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        Ok(self
            .range::<Enrollment>(ENROLLMENTS, &start, limit)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    fn cert_owner(&self, cert_hash: &str) -> Result<Option<Udid>, StoreError> {
        self.get(CERT_BINDINGS, cert_hash.as_bytes())
    }

    fn save_authenticated(
        &self,
        e: &Enrollment,
        replaced: &[Enrollment],
    ) -> Result<(), StoreError> {
        let mut b = self.batch();
        for old in replaced {
            b.delete(CERT_BINDINGS, old.cert_hash.as_bytes());
            if old.udid != e.udid {
                if let Some(s) = &old.facts.serial_number {
                    b.delete(SERIALS, s.as_bytes());
                }
                b.delete(ENROLLMENTS, old.udid.as_str().as_bytes());
                self.drop_pending(&mut b, &old.udid, true)?;
            }
        }
        self.drop_pending(&mut b, &e.udid, false)?;
        b.put(ENROLLMENTS, e.udid.as_str().as_bytes(), e)?;
        b.put(CERT_BINDINGS, e.cert_hash.as_bytes(), &e.udid)?;
        if let Some(s) = &e.facts.serial_number {
            b.put(SERIALS, s.as_bytes(), &e.udid)?;
        }
        self.apply(b)
    }

    fn put_enrollment(&self, e: &Enrollment) -> Result<(), StoreError> {
        self.put(ENROLLMENTS, e.udid.as_str().as_bytes(), e)
    }

    fn check_out(&self, e: &Enrollment) -> Result<(), StoreError> {
        let mut b = self.batch();
        b.delete(CERT_BINDINGS, e.cert_hash.as_bytes());
        self.drop_pending(&mut b, &e.udid, false)?;
        b.put(ENROLLMENTS, e.udid.as_str().as_bytes(), e)?;
        self.apply(b)
    }

    fn commands(&self, udid: &Udid) -> Result<Vec<(u64, CommandRecord)>, StoreError> {
        let prefix = queue_prefix(udid);
        self.scan::<CommandRecord>(COMMANDS, &prefix)
            .map(|item| {
                let (k, c) = item?;
                let mut seq = [0u8; 8];
                // Keys are written by command_key: prefix + 8 bytes.
                if k.len() == prefix.len() + 8 {
                    seq.copy_from_slice(&k[prefix.len()..]);
                }
                Ok((u64::from_be_bytes(seq), c))
            })
            .collect()
    }

    fn put_command(&self, udid: &Udid, seq: u64, c: &CommandRecord) -> Result<(), StoreError> {
        self.put(COMMANDS, &command_key(udid, seq), c)
    }

    fn delete_commands(&self, udid: &Udid, seqs: &[u64]) -> Result<(), StoreError> {
        let mut b = self.batch();
        for s in seqs {
            b.delete(COMMANDS, &command_key(udid, *s));
        }
        self.apply(b)
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        self.next_id()
    }
}

pub const CHALLENGES: Table = Table::new("mdm_scep_challenges");
pub const TICKETS: Table = Table::new("mdm_enroll_tickets");

impl Store {
    /// Removes and returns one record, atomically (so a one-time code works once).
    fn take<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let mut taken = None;
        self.update::<T, _>(table, key, |old| {
            taken = old;
            None
        })?;
        Ok(taken)
    }
}

impl EnrollStorage for Store {
    fn put_challenge(&self, code: &str, c: &Challenge) -> Result<(), StoreError> {
        self.put(CHALLENGES, code.as_bytes(), c)
    }

    fn take_challenge(&self, code: &str) -> Result<Option<Challenge>, StoreError> {
        self.take(CHALLENGES, code.as_bytes())
    }

    fn put_ticket(&self, id: &str, t: &Ticket) -> Result<(), StoreError> {
        self.put(TICKETS, id.as_bytes(), t)
    }

    fn take_ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        self.take(TICKETS, id.as_bytes())
    }

    fn purge_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let mut b = self.batch();
        for item in self.scan::<Challenge>(CHALLENGES, b"") {
            let (k, c) = item?;
            if c.expires_at <= now {
                b.delete(CHALLENGES, &k);
            }
        }
        for item in self.scan::<Ticket>(TICKETS, b"") {
            let (k, t) = item?;
            if t.expires_at <= now {
                b.delete(TICKETS, &k);
            }
        }
        let n = b.len();
        self.apply(b)?;
        Ok(n)
    }
}

pub const SCEP_CA: Table = Table::new("mdm_scep_ca");
/// Big-endian serial → issued device certificate.
pub const ISSUED: Table = Table::new("mdm_scep_issued");

impl ScepStorage for Store {
    fn ca(&self) -> Result<Option<StoredCa>, StoreError> {
        self.get(SCEP_CA, b"ca")
    }

    fn put_ca(&self, ca: &StoredCa) -> Result<(), StoreError> {
        self.put(SCEP_CA, b"ca", ca)
    }

    fn record_issued(&self, serial: u64, c: &IssuedCert) -> Result<(), StoreError> {
        self.put(ISSUED, &be(serial), c)
    }

    fn next_serial(&self) -> Result<u64, StoreError> {
        self.next_id()
    }
}
