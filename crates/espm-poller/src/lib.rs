//! The drain loop: notifications behind a durable checkpoint, and pending-list diffs.
//!
//! PM's `GET /notification/list?clear=true` is destructive: from the moment PM answers, the
//! bridge holds the only copy. The poller therefore:
//! 1. finishes what is already in hand first: spooled bodies, then journalled bodies whose
//!    commit failed ("stranded"), in order; while one waits, nothing new is cleared;
//! 2. refuses to call `clear=true` unless the journal's filesystem has `journal.min_free` plus
//!    room for the expected body and a write probe of the journal succeeds, and never starts one
//!    after shutdown began;
//! 3. journals the raw response body (a durable SQLite commit) before parsing it; if the journal
//!    refuses it, the body goes to the spool at once (an fsynced file);
//! 4. parses per notification: one bad `<notification>` is quarantined with its bytes and a
//!    `gov.energystar.pm.bridge.body_quarantined` event (one transaction), the good ones go on;
//! 5. stores parsed notifications idempotently and appends their events to the outbox in the
//!    same transaction, then wakes the sink drivers. Before that commit, an async pre-pass
//!    reads the custom field values of the body's SHAREUPDATEs from PM, within a time budget,
//!    for their `share.updated` events (`share_fields`); a failed read flags the event, never
//!    holds or drops it.
//!
//! A crash between any two steps loses nothing that PM handed out intact: before step 3 PM's
//! response was never received; after it, the bytes are on disk (journal or spool) and a restart
//! re-reads nothing from PM but still has them. Duplicates are possible (peek-then-clear sees a
//! notification twice), never loss; event ids are deterministic.

mod customers;
mod drain;
mod pending;
mod share_fields;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use espm_client::{ClientError, PmClient};
use espm_events::Origin;
use espm_journal::{Journal, JournalError, Scope, Spool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use customers::CustomerLookup;
pub use drain::{reprocess, DrainOutcome};
pub use pending::PendingOutcome;

/// How notifications are drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// One `clear=true` read per drain.
    Clear,
    /// A `clear=false` peek (journalled and committed), then `clear=true` (deduplicated).
    PeekThenClear,
}

/// What one poller needs to know.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// PM environment and configured account name: the journal namespace and event source.
    pub scope: Scope,
    /// Drain mode.
    pub drain_mode: DrainMode,
    /// Idle wait between notification polls; a non-empty drain re-polls at once.
    pub poll_interval: Duration,
    /// Interval between walks of the pending lists.
    pub pending_interval: Duration,
    /// Upper bound of the error back-off.
    pub max_error_backoff: Duration,
    /// Free bytes the journal's filesystem must keep beyond the expected body before a
    /// `clear=true` (`journal.min_free`).
    pub min_free: u64,
    /// Where a drained body goes when the journal refuses it.
    pub spool: Spool,
}

/// Why a poll failed. The loop logs it, counts it and backs off; it never exits on one.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// PM (or the network) failed.
    #[error("PM call failed: {0}")]
    Client(#[from] ClientError),
    /// The journal failed; with an unwritable journal the poller does not clear anything.
    #[error("journal failed: {0}")]
    Journal(#[from] JournalError),
    /// A drained body is safe in the spool, not yet in the journal: nothing more is cleared
    /// until the journal takes it.
    #[error("journal refused a drained body ({journal}); it is spooled at {path}")]
    Spooled {
        /// Why the journal refused it.
        journal: JournalError,
        /// The spool file.
        path: String,
    },
    /// Neither the journal nor any spool directory took a drained body, and shutdown came: its
    /// bytes went to stderr as the last resort.
    #[error("a drained body could be neither journalled nor spooled ({0}); dumped to stderr")]
    Unsaved(JournalError),
}

/// Health of one poller, read by `/readyz` and the metrics.
#[derive(Debug, Default)]
pub struct PollerStatus {
    last_success_unix_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    stranded: AtomicUsize,
    spooled: AtomicUsize,
    parse_failing: AtomicBool,
    holding_body: AtomicBool,
    unsaved: AtomicBool,
    last_clear_len: AtomicU64,
    last_peek_len: AtomicU64,
    /// Why the last `clear=true` was not sent (the journal's volume is below its floor or the
    /// journal refuses writes); cleared when the journal has room again.
    no_room: Mutex<Option<String>>,
}

impl PollerStatus {
    /// Journalled bodies whose commit failed and that wait for a retry.
    pub fn stranded(&self) -> usize {
        self.stranded.load(Ordering::Relaxed)
    }

    /// Drained bodies in the spool, waiting for the journal.
    pub fn spooled(&self) -> usize {
        self.spooled.load(Ordering::Relaxed)
    }

    /// True while the latest notification bodies keep failing to parse (some part quarantined).
    pub fn parse_failing(&self) -> bool {
        self.parse_failing.load(Ordering::Relaxed)
    }

    /// True from the moment a `clear=true` is sent until its body is journalled or spooled:
    /// shutdown must wait for it.
    pub fn holding_body(&self) -> bool {
        self.holding_body.load(Ordering::Relaxed)
    }

    /// True once a drained body could only be dumped to stderr.
    pub fn unsaved(&self) -> bool {
        self.unsaved.load(Ordering::Relaxed)
    }

    /// Why this account is not ready, if it is not: a stranded or spooled body waits, or its
    /// bodies keep failing to parse.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(why) = self.no_room.lock().ok().and_then(|g| g.clone()) {
            return Some(format!(
                "not draining PM: the journal cannot take a body ({why})"
            ));
        }
        if self.unsaved() {
            return Some("a drained PM body could not be journalled nor spooled".into());
        }
        if self.spooled() > 0 {
            return Some(format!(
                "{} drained PM bodies wait in the spool for the journal",
                self.spooled()
            ));
        }
        if self.stranded() > 0 {
            return Some(format!(
                "{} journalled PM bodies wait for their commit to be retried",
                self.stranded()
            ));
        }
        if self.parse_failing() {
            return Some("notification bodies keep failing to parse (quarantined)".into());
        }
        None
    }

    pub(crate) fn set_no_room(&self, why: Option<String>) {
        if let Ok(mut g) = self.no_room.lock() {
            *g = why;
        }
    }

    /// When the last poll (drain) succeeded, if ever.
    pub fn last_success(&self) -> Option<SystemTime> {
        let ms = self.last_success_unix_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms as u64))
    }

    /// The last error, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|g| g.clone()).unwrap_or(None)
    }

    fn success(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success_unix_ms
            .store(now.as_millis() as i64, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
    }

    fn failure(&self, e: &PollError) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// One provider account's poller.
#[derive(Clone)]
pub struct Poller {
    client: PmClient,
    journal: Journal,
    cfg: PollerConfig,
    origin: Origin,
    wake: Vec<Arc<Notify>>,
    status: Arc<PollerStatus>,
    customers: CustomerLookup,
    /// Notified after every successful walk of the pending lists (the account's policy).
    walked: Option<Arc<Notify>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// A poller; every `wake` (one per sink driver) is notified whenever events were appended
    /// to the outbox.
    pub fn new(
        client: PmClient,
        journal: Journal,
        cfg: PollerConfig,
        wake: Vec<Arc<Notify>>,
    ) -> Self {
        let origin = Origin {
            environment: cfg.scope.environment.clone(),
            account: cfg.scope.account.clone(),
        };
        Self {
            client,
            journal,
            cfg,
            origin,
            wake,
            status: Arc::new(PollerStatus::default()),
            customers: CustomerLookup::default(),
            walked: None,
        }
    }

    /// How pending-walk events get their customer's username and organisation (default: cached
    /// for a day, lookups of one walk given 5 s).
    pub fn with_customer_lookup(mut self, customers: CustomerLookup) -> Self {
        self.customers = customers;
        self
    }

    /// Notify `walked` after every successful walk of the pending lists, once the journal holds
    /// its snapshot (a stored permit when nobody waits): the account's auto-accept policy runs
    /// then.
    pub fn with_pending_walk_notify(mut self, walked: Arc<Notify>) -> Self {
        self.walked = Some(walked);
        self
    }

    /// Shared health, for `/readyz`.
    pub fn status(&self) -> Arc<PollerStatus> {
        self.status.clone()
    }

    /// Poll until `shutdown` is cancelled. A `clear=true` in progress is never cancelled
    /// half-way (PM may already have marked its notifications read): it is awaited and its body
    /// journalled or spooled. Waits, peeks and pending-list walks stop at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let account = self.cfg.scope.account.clone();
        let mut next_pending = tokio::time::Instant::now();
        tracing::info!(account = %account, mode = ?self.cfg.drain_mode, "poller started");
        // Spooled bodies and bodies a crash left between journal and commit come first: they may
        // be the only copy.
        let mut backoff = self.error_backoff();
        loop {
            match self.catch_up(&mut DrainOutcome::default()).await {
                Ok(()) => break,
                Err(e) => {
                    let wait = backoff::backoff::Backoff::next_backoff(&mut backoff)
                        .unwrap_or(self.cfg.max_error_backoff);
                    tracing::error!(account = %account, error = %e, retry_in = ?wait, "recovering journalled bodies failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        while !shutdown.is_cancelled() {
            if tokio::time::Instant::now() >= next_pending {
                // A walk only reads (clear never applies to these lists): stop it on shutdown.
                let walk = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = self.pending_once() => r,
                };
                match walk {
                    Ok(_) => {
                        if let Some(w) = &self.walked {
                            w.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(account = %account, error = %e, "pending-list walk failed; will retry next interval");
                    }
                }
                next_pending = tokio::time::Instant::now() + self.cfg.pending_interval;
            }
            let wait = match self.drain_until(&shutdown).await {
                Ok(out) => {
                    self.status.success();
                    backoff = self.error_backoff();
                    if out.received > 0 {
                        continue;
                    }
                    self.cfg.poll_interval
                }
                Err(e) => {
                    self.status.failure(&e);
                    let wait = backoff::backoff::Backoff::next_backoff(&mut backoff)
                        .unwrap_or(self.cfg.max_error_backoff);
                    tracing::error!(account = %account, error = %e, retry_in = ?wait, "notification drain failed");
                    wait
                }
            };
            let wait = wait.min(
                next_pending
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(Duration::from_millis(10)),
            );
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(account = %account, "poller stopped");
    }

    fn error_backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(500),
            max_interval: self.cfg.max_error_backoff,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        }
    }

    /// Tell every sink driver that the outbox grew (a stored permit if it is busy).
    fn wake_sinks(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }

    fn account(&self) -> &str {
        &self.cfg.scope.account
    }
}
