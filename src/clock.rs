//! Time as a dependency: production reads the system clock, tests move a manual one.
//!
//! Every rule with a duration in it (24-hour sync, 15-minute button, 7-day cursor, 45-day purge,
//! token and certificate expiry) reads the time from a [`Clock`], so tests never sleep.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real time, in UTC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// A clock that stands still until a test moves it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: Mutex::new(start),
        })
    }

    /// A manual clock starting at the current real time (rounded to whole seconds).
    pub fn starting_now() -> Arc<ManualClock> {
        let now = OffsetDateTime::now_utc();
        ManualClock::new(now.replace_nanosecond(0).unwrap_or(now))
    }

    pub fn set(&self, to: OffsetDateTime) {
        *self.lock() = to;
    }

    pub fn advance(&self, by: time::Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetDateTime> {
        // The guarded value is a plain timestamp: a poisoned lock still holds a valid one.
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(datetime!(2026-09-01 08:00 UTC));
        assert_eq!(clock.now(), datetime!(2026-09-01 08:00 UTC));
        clock.advance(Duration::hours(24));
        assert_eq!(clock.now(), datetime!(2026-09-02 08:00 UTC));
        clock.set(datetime!(2027-01-01 00:00 UTC));
        let shared: SharedClock = clock.clone();
        assert_eq!(shared.now(), datetime!(2027-01-01 00:00 UTC));
    }
}
