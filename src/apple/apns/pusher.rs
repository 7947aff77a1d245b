//! The pusher: wakes devices through APNs with the current push certificate.
//!
//! Pushes coalesce per device (a device already waiting for a push is not queued twice), bulk
//! pushes go out with bounded concurrency and a small spacing, a 429 backs that device off, a 410
//! tells the MDM side the token is dead, and a 403 raises the push-certificate alert. The identity
//! is read from an [`IdentityCell`] on every round, so a new certificate is used without a restart.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    ApnsClient, ApnsSettings, DeviceToken, PushIdentity, PushMagic, PushOutcome, PushTarget, Topic,
};
use crate::metrics::Metrics;

/// The metric counting every push by outcome (plus `coalesced` and `no_certificate`).
pub const PUSHES_TOTAL: &str = "orchard_apns_pushes_total";

/// The push identity in use, swapped atomically when the admin uploads a new certificate.
#[derive(Debug, Default)]
pub struct IdentityCell {
    current: RwLock<Option<Arc<PushIdentity>>>,
}

impl IdentityCell {
    pub fn new() -> Arc<IdentityCell> {
        Arc::new(IdentityCell::default())
    }

    pub fn get(&self) -> Option<Arc<PushIdentity>> {
        // Holds a plain Option<Arc>: a poisoned lock still holds a valid value.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, identity: Option<Arc<PushIdentity>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = identity;
    }
}

/// Told when APNs says a token is dead (410). The MDM side implements it and stops pushing there.
pub trait DeadTokens: Send + Sync {
    fn token_unregistered(&self, token: &DeviceToken, since: Option<OffsetDateTime>);
}

/// Told when APNs refuses the push certificate (403). The push-certificate service implements it
/// and shows the admin an alert.
pub trait CertificateAlerts: Send + Sync {
    fn certificate_rejected(&self, topic: &Topic, reason: &str);
}

/// Pacing of the pusher.
#[derive(Clone, Debug)]
pub struct PusherSettings {
    /// Pushes in flight at once.
    pub concurrency: usize,
    /// Pause between starting two pushes of one round.
    pub spacing: Duration,
    /// First wait after a 429 for a device; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// After this many 429s in a row the push is dropped (the next command queues a new one).
    pub max_throttled: u32,
}

impl Default for PusherSettings {
    fn default() -> Self {
        PusherSettings {
            concurrency: 16,
            spacing: Duration::from_millis(2),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            max_throttled: 6,
        }
    }
}

/// What `push` did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// A new push is waiting to be sent.
    New,
    /// The device already had a push waiting; that one will wake it.
    Coalesced,
}

struct Pending {
    magic: PushMagic,
    not_before: Option<Instant>,
    throttled: u32,
}

#[derive(Default)]
struct Queue {
    order: VecDeque<DeviceToken>,
    pending: HashMap<DeviceToken, Pending>,
}

struct Inner {
    identity: Arc<IdentityCell>,
    apns: ApnsSettings,
    settings: PusherSettings,
    client: Mutex<Option<(Arc<PushIdentity>, Arc<ApnsClient>)>>,
    queue: Mutex<Queue>,
    wake: Notify,
    dead: Arc<dyn DeadTokens>,
    alerts: Arc<dyn CertificateAlerts>,
    metrics: Metrics,
}

/// Sends MDM pushes; cheap to clone.
#[derive(Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

impl Pusher {
    pub fn new(
        identity: Arc<IdentityCell>,
        apns: ApnsSettings,
        settings: PusherSettings,
        dead: Arc<dyn DeadTokens>,
        alerts: Arc<dyn CertificateAlerts>,
        metrics: Metrics,
    ) -> Pusher {
        metrics.describe(PUSHES_TOTAL, "MDM pushes sent to APNs, by outcome");
        Pusher {
            inner: Arc::new(Inner {
                identity,
                apns,
                settings,
                client: Mutex::new(None),
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                dead,
                alerts,
                metrics,
            }),
        }
    }

    /// Asks for a push to one device; returns at once (the [`run`](Pusher::run) loop sends it).
    pub fn push(&self, target: PushTarget) -> Queued {
        let queued = self.enqueue(target);
        if queued == Queued::New {
            self.inner.wake.notify_one();
        }
        queued
    }

    /// Asks for pushes to many devices (a bulk action); returns how many were new.
    pub fn push_all(&self, targets: impl IntoIterator<Item = PushTarget>) -> usize {
        let new = targets
            .into_iter()
            .filter(|t| self.enqueue(t.clone()) == Queued::New)
            .count();
        if new > 0 {
            self.inner.wake.notify_one();
        }
        new
    }

    /// Pushes waiting to be sent.
    pub fn pending(&self) -> usize {
        self.queue().pending.len()
    }

    /// Sends every push that is due now, paced, and handles each answer. Returns the outcomes.
    pub async fn run_once(&self) -> Vec<(DeviceToken, PushOutcome)> {
        let due = self.take_due();
        if due.is_empty() {
            return Vec::new();
        }
        let Some(client) = self.client() else {
            tracing::warn!(
                count = due.len(),
                "no push certificate: pushes dropped (upload one on the Push certificate page)"
            );
            self.inner.metrics.add(
                PUSHES_TOTAL,
                &[("outcome", "no_certificate")],
                due.len() as f64,
            );
            return Vec::new();
        };
        let spacing = self.inner.settings.spacing;
        let outcomes: Vec<_> = futures_util::stream::iter(due.into_iter().enumerate())
            .then(|(i, item)| async move {
                if i > 0 && !spacing.is_zero() {
                    tokio::time::sleep(spacing).await;
                }
                item
            })
            .map(|(target, throttled)| {
                let client = client.clone();
                async move {
                    let outcome = client.send(&target).await;
                    (target, throttled, outcome)
                }
            })
            .buffer_unordered(self.inner.settings.concurrency.max(1))
            .collect()
            .await;
        outcomes
            .into_iter()
            .map(|(target, throttled, outcome)| {
                self.handle(&client, target.clone(), throttled, &outcome);
                (target.token, outcome)
            })
            .collect()
    }

    /// Sends pushes as they are asked for until `shutdown` completes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = self.next_due();
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.inner.wake.notified() => {}
                _ = sleep_until(next), if next.is_some() => {}
            }
            self.run_once().await;
        }
    }

    fn handle(
        &self,
        client: &ApnsClient,
        target: PushTarget,
        throttled: u32,
        outcome: &PushOutcome,
    ) {
        self.inner
            .metrics
            .inc(PUSHES_TOTAL, &[("outcome", outcome.label())]);
        match outcome {
            PushOutcome::Delivered { .. } => {}
            PushOutcome::Unregistered { since, .. } => {
                self.inner.dead.token_unregistered(&target.token, *since);
            }
            PushOutcome::CertificateRejected { reason } => {
                tracing::error!(topic = %client.topic(), reason, "APNs refused the push certificate");
                self.inner
                    .alerts
                    .certificate_rejected(client.topic(), reason);
            }
            PushOutcome::TooManyRequests { .. } => self.back_off(target, throttled + 1),
            PushOutcome::Rejected { status, reason } => {
                tracing::warn!(token = %target.token, status, reason, "APNs rejected a push");
            }
            PushOutcome::ServerError { status, reason } => {
                tracing::warn!(token = %target.token, status, reason, "APNs failed after retries");
            }
            PushOutcome::Transport { error } => {
                tracing::warn!(token = %target.token, error, "APNs unreachable after retries");
            }
        }
    }

    /// Requeues a throttled push after an exponential wait, unless it was throttled too often.
    fn back_off(&self, target: PushTarget, throttled: u32) {
        let s = &self.inner.settings;
        if throttled > s.max_throttled {
            tracing::warn!(token = %target.token, "APNs kept throttling this device: push dropped");
            return;
        }
        let factor = 2u32.saturating_pow(throttled.saturating_sub(1));
        let wait = s.backoff.saturating_mul(factor).min(s.max_backoff);
        let mut q = self.queue();
        if q.pending.contains_key(&target.token) {
            // A newer request is already waiting; it wakes the device just as well.
            return;
        }
        q.order.push_back(target.token.clone());
        q.pending.insert(
            target.token,
            Pending {
                magic: target.push_magic,
                not_before: Some(Instant::now() + wait),
                throttled,
            },
        );
        drop(q);
        self.inner.wake.notify_one();
    }

    fn enqueue(&self, target: PushTarget) -> Queued {
        let mut q = self.queue();
        if let Some(p) = q.pending.get_mut(&target.token) {
            // The newest magic wins: a TokenUpdate may have changed it.
            p.magic = target.push_magic;
            drop(q);
            self.inner
                .metrics
                .inc(PUSHES_TOTAL, &[("outcome", "coalesced")]);
            return Queued::Coalesced;
        }
        q.order.push_back(target.token.clone());
        q.pending.insert(
            target.token,
            Pending {
                magic: target.push_magic,
                not_before: None,
                throttled: 0,
            },
        );
        Queued::New
    }

    /// Removes the due pushes from the queue: from now on a new request for them queues again.
    fn take_due(&self) -> Vec<(PushTarget, u32)> {
        let now = Instant::now();
        let mut q = self.queue();
        let Queue { order, pending } = &mut *q;
        let mut due = Vec::new();
        order.retain(|token| match pending.get(token) {
            Some(p) if p.not_before.is_none_or(|t| t <= now) => {
                if let Some(p) = pending.remove(token) {
                    due.push((
                        PushTarget {
                            token: token.clone(),
                            push_magic: p.magic,
                        },
                        p.throttled,
                    ));
                }
                false
            }
            Some(_) => true,
            None => false,
        });
        due
    }

    fn next_due(&self) -> Option<Instant> {
        let q = self.queue();
        q.pending
            .values()
            .map(|p| p.not_before.unwrap_or_else(Instant::now))
            .min()
    }

    /// The client for the current identity, rebuilt when the identity changed.
    fn client(&self) -> Option<Arc<ApnsClient>> {
        let identity = self.inner.identity.get()?;
        let mut cached = self.inner.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, client)) = cached.as_ref()
            && Arc::ptr_eq(id, &identity)
        {
            return Some(client.clone());
        }
        match ApnsClient::new(&identity, &self.inner.apns) {
            Ok(client) => {
                let client = Arc::new(client);
                *cached = Some((identity, client.clone()));
                Some(client)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot use the push certificate for APNs");
                None
            }
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is plain data; a poisoned lock still holds a consistent map.
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
