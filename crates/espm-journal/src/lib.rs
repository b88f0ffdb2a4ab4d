//! The durable SQLite journal: raw bodies, quarantine, notifications, outbox, cursors, dead letters.
//!
//! The journal owns the only copy of every notification drained from Portfolio Manager, so every
//! write is a SQLite transaction in WAL mode with `synchronous=FULL`: when a method returns `Ok`,
//! the data is on disk.
//!
//! The API is synchronous. [`Journal`] is `Clone + Send + Sync` (an `Arc` inside) and cheap to
//! clone; async callers run journal calls on the blocking pool:
//!
//! ```no_run
//! # async fn f(journal: espm_journal::Journal) -> Result<(), Box<dyn std::error::Error>> {
//! let j = journal.clone();
//! let head = tokio::task::spawn_blocking(move || j.head_seq()).await??;
//! # let _ = head; Ok(()) }
//! ```
//!
//! Writes go through one connection, reads of the outbox and lists through a second one, so a
//! sink driver reading a batch does not wait for a poller's commit (WAL allows concurrent readers).

mod error;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

pub use error::{JournalError, UnwritableKind};
pub use espm_events::CloudEvent;
pub use schema::SCHEMA_VERSION;

use error::SqlResultExt;

/// How long a writer waits for a lock held by another connection before reporting
/// [`UnwritableKind::Locked`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespace of a PM provider account: its environment and configured name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// PM environment: `live`, `test` or `sim`.
    pub environment: String,
    /// Configured account name.
    pub account: String,
}

impl Scope {
    /// A scope from an environment name and an account name.
    pub fn new(environment: impl Into<String>, account: impl Into<String>) -> Self {
        Self {
            environment: environment.into(),
            account: account.into(),
        }
    }
}

/// Id of a journalled raw PM response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawId(pub i64);

impl std::fmt::Display for RawId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One parsed PM notification, as stored for deduplication and history.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEntry {
    /// PM's notification id (unique per environment and account).
    pub notification_id: i64,
    /// PM's notification type code (e.g. `SHARE_UPDATE`).
    pub type_code: String,
    /// The parsed notification, kept for history and re-normalisation.
    pub json: serde_json::Value,
}

/// A raw body left unprocessed by a crash (see [`Journal::unprocessed_raw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnprocessedBody {
    /// Its id.
    pub id: RawId,
    /// The endpoint it came from, as recorded.
    pub endpoint: String,
    /// HTTP status.
    pub http_status: u16,
    /// The bytes.
    pub body: Vec<u8>,
}

/// What [`Journal::commit_notifications`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Notifications seen for the first time.
    pub new_notifications: usize,
    /// Notifications already in the journal (e.g. seen by the peek of peek-then-clear).
    pub duplicate_notifications: usize,
    /// Events appended to the outbox (events whose id was already enqueued are not counted).
    pub new_events: usize,
}

/// One event in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Outbox sequence number: strictly increasing, never reused.
    pub seq: i64,
    /// The event.
    pub event: CloudEvent,
    /// When it was appended to the outbox.
    pub enqueued_at: SystemTime,
}

/// How far a sink is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxDepth {
    /// Events after the sink's cursor that it has not yet passed.
    pub pending: u64,
    /// Enqueue time of the oldest of them.
    pub oldest_enqueued_at: Option<SystemTime>,
}

/// A dead letter: an event one sink gave up on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Dead-letter id, for `dlq replay` / `dlq drop`.
    pub id: i64,
    /// The sink that gave up.
    pub sink: String,
    /// Outbox sequence number the event had.
    pub seq: i64,
    /// CloudEvent id.
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// Why the sink gave up.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub failed_at: SystemTime,
    /// The event itself (kept here, so compaction of the outbox never loses it).
    pub event: CloudEvent,
}

/// Input to [`Journal::settle`]: a row to store as a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// The outbox row the sink gave up on.
    pub row: OutboxRow,
    /// Why.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: u32,
}

/// A quarantined raw body (one that could not be parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedBody {
    /// Raw body id; fetch the bytes with [`Journal::raw_body`].
    pub id: RawId,
    /// Account it was polled for.
    pub scope: Scope,
    /// PM endpoint that returned it.
    pub endpoint: String,
    /// HTTP status of the response.
    pub http_status: u16,
    /// When it was received.
    pub received_at: SystemTime,
    /// Body size in bytes.
    pub len: usize,
    /// The parse error.
    pub error: String,
}

/// What [`Journal::compact`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Outbox rows deleted.
    pub outbox_rows: u64,
    /// Parsed raw bodies deleted.
    pub raw_bodies: u64,
}

/// Delivery state of one event occurrence for one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// The sink's cursor has not reached it yet.
    Pending,
    /// The sink's cursor passed it (delivered, or skipped because the sink does not accept it).
    Delivered,
    /// The sink gave up on it; it is in the dead-letter queue.
    DeadLettered {
        /// Why.
        reason: String,
        /// Delivery attempts made.
        attempts: u32,
    },
}

/// One sink's view of one event occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDelivery {
    /// Sink name.
    pub sink: String,
    /// Where the event is for that sink.
    pub status: DeliveryStatus,
}

/// One outbox occurrence of an event: the original append, or a dead-letter replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHistory {
    /// CloudEvent id.
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// Outbox sequence number of this occurrence.
    pub seq: i64,
    /// `Some(sink)` for a replay aimed at one sink only.
    pub target_sink: Option<String>,
    /// Per registered sink (only the target for a replay).
    pub deliveries: Vec<SinkDelivery>,
}

/// The life of one notification, for `espm-bridge history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Account it was drained from.
    pub scope: Scope,
    /// PM notification id.
    pub notification_id: i64,
    /// PM type code.
    pub type_code: String,
    /// The stored notification.
    pub json: serde_json::Value,
    /// When the bridge first journalled it.
    pub first_seen_at: SystemTime,
    /// Every raw body that contained it (bodies may since have been compacted).
    pub raw_ids: Vec<RawId>,
    /// Its events and their delivery state.
    pub events: Vec<EventHistory>,
}

/// A registered sink and its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkCursor {
    /// Sink name.
    pub name: String,
    /// Highest outbox sequence number the sink has passed.
    pub cursor: i64,
}

struct Inner {
    path: PathBuf,
    read_only: bool,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

/// Handle to the journal. Clone it freely; all clones share two SQLite connections.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn event_json(event: &CloudEvent) -> Result<String, JournalError> {
    serde_json::to_string(event).map_err(|e| JournalError::Corrupt(format!("event encode: {e}")))
}

fn parse_event(seq: i64, json: &str) -> Result<CloudEvent, JournalError> {
    serde_json::from_str(json).map_err(|e| JournalError::Corrupt(format!("outbox seq {seq}: {e}")))
}

/// Lock a connection; a poisoned lock only means another thread panicked mid-call, and SQLite
/// rolled back its open transaction when the statement/transaction was dropped.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection, read_only: bool) -> Result<(), JournalError> {
    conn.busy_timeout(BUSY_TIMEOUT).j()?;
    conn.set_prepared_statement_cache_capacity(64);
    if !read_only {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .j()?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "journal could not switch to WAL mode");
        }
    }
    // FULL: a commit returns only after the WAL is fsynced.
    conn.pragma_update(None, "synchronous", "FULL").j()?;
    Ok(())
}

/// Append events to the outbox inside `tx`, skipping ids ever enqueued before. Returns how many
/// were appended.
fn append_events(
    tx: &Transaction<'_>,
    events: &[CloudEvent],
    now: i64,
) -> Result<usize, JournalError> {
    let mut ins_outbox = tx
        .prepare_cached(
            "INSERT INTO outbox(event_id, event_type, target_sink, event_json, enqueued_at) \
             SELECT ?1, ?2, NULL, ?3, ?4 \
             WHERE NOT EXISTS (SELECT 1 FROM event_log WHERE event_id = ?1)",
        )
        .j()?;
    let mut ins_log = tx
        .prepare_cached(
            "INSERT INTO event_log(event_id, event_type, seq, enqueued_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .j()?;
    let mut appended = 0;
    for ev in events {
        let json = event_json(ev)?;
        if ins_outbox.execute(params![ev.id, ev.ty, json, now]).j()? == 1 {
            let seq = tx.last_insert_rowid();
            ins_log.execute(params![ev.id, ev.ty, seq, now]).j()?;
            appended += 1;
        }
    }
    Ok(appended)
}

fn mark_parsed(tx: &Transaction<'_>, raw_ids: &[RawId]) -> Result<(), JournalError> {
    let mut st = tx
        .prepare_cached(
            "UPDATE raw_bodies SET state = 'parsed' WHERE id = ?1 AND state = 'received'",
        )
        .j()?;
    for id in raw_ids {
        st.execute([id.0]).j()?;
    }
    Ok(())
}

fn register_sink(conn: &Connection, sink: &str, now: i64) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO sinks(name, cursor, registered_at, updated_at) VALUES (?1, 0, ?2, ?2) \
         ON CONFLICT(name) DO NOTHING",
    )
    .j()?
    .execute(params![sink, now])
    .j()?;
    Ok(())
}

fn store_cursor(conn: &Connection, sink: &str, seq: i64, now: i64) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO sinks(name, cursor, registered_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT(name) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
    )
    .j()?
    .execute(params![sink, seq, now])
    .j()?;
    Ok(())
}

fn store_dead_letter(
    conn: &Connection,
    sink: &str,
    row: &OutboxRow,
    reason: &str,
    attempts: u32,
    now: i64,
) -> Result<(), JournalError> {
    let json = event_json(&row.event)?;
    // UNIQUE(sink, seq): a driver that crashed after storing but before moving its cursor
    // dead-letters the same row again; keep one entry with the latest reason.
    conn.prepare_cached(
        "INSERT INTO dead_letters(sink, seq, event_id, event_type, event_json, reason, attempts, failed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT(sink, seq) DO UPDATE SET reason = excluded.reason, \
             attempts = excluded.attempts, failed_at = excluded.failed_at",
    )
    .j()?
    .execute(params![
        sink,
        row.seq,
        row.event.id,
        row.event.ty,
        json,
        reason,
        attempts,
        now
    ])
    .j()?;
    Ok(())
}

/// The notification an event belongs to: `data.notificationId` when it names one of `items`,
/// otherwise the only item of a single-item commit.
fn linked_notification(
    event: &CloudEvent,
    items: &[NotificationEntry],
    ids: &std::collections::HashSet<i64>,
) -> Option<i64> {
    let from_data = event.data.get("notificationId").and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    match from_data {
        Some(id) if ids.contains(&id) => Some(id),
        _ if items.len() == 1 => Some(items[0].notification_id),
        _ => None,
    }
}

impl Journal {
    /// Open (or create) the journal at `path`: creates parent directories, switches to WAL with
    /// `synchronous=FULL` and migrates the schema. Errors that mean the location cannot be
    /// written report [`JournalError::is_unwritable`].
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(JournalError::from_io)?;
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut writer = Connection::open_with_flags(path, flags).j()?;
        configure(&writer, false)?;
        schema::migrate(&mut writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .j()?;
        configure(&reader, true)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                read_only: false,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// Open an existing journal read-only (for inspection commands while the bridge runs). Every
    /// write, including [`Journal::check_writable`], fails with an unwritable error.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let writer = Connection::open_with_flags(path, flags).j()?;
        configure(&writer, true)?;
        let found: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .j()?;
        if found > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let reader = Connection::open_with_flags(path, flags).j()?;
        configure(&reader, true)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                read_only: true,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.writer)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.reader)
    }

    /// Run `f` in one write transaction and commit it durably.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut conn = self.writer();
        // IMMEDIATE takes the write lock up front, so a busy journal fails here, not mid-way.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .j()?;
        let out = f(&tx)?;
        tx.commit().j()?;
        Ok(out)
    }

    /// A real write probe: commits a tiny row. `Ok` means the journal can durably accept writes
    /// now; use it for `/readyz` and before every `clear=true`.
    pub fn check_writable(&self) -> Result<(), JournalError> {
        if self.inner.read_only {
            return Err(JournalError::Unwritable {
                kind: UnwritableKind::ReadOnly,
                message: "journal opened read-only".into(),
            });
        }
        self.write(|tx| {
            tx.prepare_cached("INSERT OR REPLACE INTO write_probe(id, at) VALUES (1, ?1)")
                .j()?
                .execute([now_ms()])
                .j()?;
            Ok(())
        })
    }

    // ---- raw bodies ------------------------------------------------------------------------

    /// Journal a raw PM response body. It is committed to disk before this returns, so it is
    /// safe to parse it (and, for a drain, to consider it received) afterwards.
    pub fn record_raw(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        body: &[u8],
    ) -> Result<RawId, JournalError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO raw_bodies(environment, account, endpoint, http_status, body, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .j()?
            .execute(params![
                scope.environment,
                scope.account,
                endpoint,
                http_status,
                body,
                now_ms()
            ])
            .j()?;
            Ok(RawId(tx.last_insert_rowid()))
        })
    }

    /// Raw bodies of `scope` that were journalled but never parsed nor quarantined, oldest first:
    /// what a crash between [`Journal::record_raw`] and the commit left behind. The poller
    /// processes them at start-up, so a drained body is never stranded.
    pub fn unprocessed_raw(&self, scope: &Scope) -> Result<Vec<UnprocessedBody>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT id, endpoint, http_status, body FROM raw_bodies \
                 WHERE environment = ?1 AND account = ?2 AND state = 'received' ORDER BY id",
            )
            .j()?;
        let rows = st
            .query_map(params![scope.environment, scope.account], |r| {
                Ok(UnprocessedBody {
                    id: RawId(r.get(0)?),
                    endpoint: r.get(1)?,
                    http_status: r.get(2)?,
                    body: r.get(3)?,
                })
            })
            .j()?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.j()?);
        }
        Ok(out)
    }

    /// Mark a raw body processed without committing anything from it (e.g. a pending-list page
    /// whose walk was interrupted: the next walk reads the list again).
    pub fn mark_raw_processed(&self, raw: RawId) -> Result<(), JournalError> {
        self.write(|tx| mark_parsed(tx, &[raw]))
    }

    /// Mark a raw body as unparseable. Its bytes are kept (never compacted) for an operator.
    pub fn quarantine(&self, raw: RawId, error: &str) -> Result<(), JournalError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE raw_bodies SET state = 'quarantined', error = ?2 WHERE id = ?1",
                )
                .j()?
                .execute(params![raw.0, error])
                .j()?;
            if n == 0 {
                return Err(JournalError::NotFound {
                    what: "raw body",
                    id: raw.0,
                });
            }
            Ok(())
        })
    }

    /// Every quarantined body, oldest first (without the bytes).
    pub fn quarantine_list(&self) -> Result<Vec<QuarantinedBody>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT id, environment, account, endpoint, http_status, received_at, length(body), \
                 COALESCE(error, '') FROM raw_bodies WHERE state = 'quarantined' ORDER BY id",
            )
            .j()?;
        let rows = st
            .query_map([], |r| {
                Ok(QuarantinedBody {
                    id: RawId(r.get(0)?),
                    scope: Scope::new(r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                    endpoint: r.get(3)?,
                    http_status: r.get(4)?,
                    received_at: from_ms(r.get(5)?),
                    len: r.get::<_, i64>(6)?.max(0) as usize,
                    error: r.get(7)?,
                })
            })
            .j()?;
        rows.collect::<Result<_, _>>().j()
    }

    /// The bytes of a raw body, if it exists (and was not compacted).
    pub fn raw_body(&self, id: RawId) -> Result<Option<Vec<u8>>, JournalError> {
        let conn = self.reader();
        let body = conn
            .prepare_cached("SELECT body FROM raw_bodies WHERE id = ?1")
            .j()?
            .query_row([id.0], |r| r.get(0))
            .optional()
            .j()?;
        Ok(body)
    }

    // ---- notifications -----------------------------------------------------------------------

    /// Commit the notifications parsed from raw body `raw` and their events, in one transaction:
    /// notifications are deduplicated on (environment, account, notification id), events are
    /// appended to the outbox unless their id was ever enqueued before, and the raw body is
    /// marked parsed.
    ///
    /// Events are linked to a notification (for [`Journal::notification_history`]) through
    /// `data.notificationId`, or to the only item when `items` has one element.
    pub fn commit_notifications(
        &self,
        scope: &Scope,
        raw: RawId,
        items: &[NotificationEntry],
        events: &[CloudEvent],
    ) -> Result<CommitStats, JournalError> {
        self.commit_notifications_part(scope, raw, items, events, true)
    }

    /// [`Journal::commit_notifications`] for one part of a large body: with `last = false` the
    /// raw body stays unprocessed, so a crash before the last part leaves it to
    /// [`Journal::unprocessed_raw`] (re-committing the earlier parts is idempotent).
    pub fn commit_notifications_part(
        &self,
        scope: &Scope,
        raw: RawId,
        items: &[NotificationEntry],
        events: &[CloudEvent],
        last: bool,
    ) -> Result<CommitStats, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            let mut stats = CommitStats::default();
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notifications(environment, account, notification_id, \
                         type_code, json, first_seen_at, first_raw_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .j()?;
                let mut link = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notification_raw(environment, account, notification_id, raw_id) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .j()?;
                for item in items {
                    let json = item.json.to_string();
                    let n = ins
                        .execute(params![
                            scope.environment,
                            scope.account,
                            item.notification_id,
                            item.type_code,
                            json,
                            now,
                            raw.0
                        ])
                        .j()?;
                    if n == 1 {
                        stats.new_notifications += 1;
                    } else {
                        stats.duplicate_notifications += 1;
                    }
                    link.execute(params![
                        scope.environment,
                        scope.account,
                        item.notification_id,
                        raw.0
                    ])
                    .j()?;
                }
                let mut ev_link = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notification_events(environment, account, notification_id, event_id) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .j()?;
                // A set, not a scan: one drain can hold tens of thousands of notifications.
                let ids: std::collections::HashSet<i64> =
                    items.iter().map(|i| i.notification_id).collect();
                for ev in events {
                    if let Some(nid) = linked_notification(ev, items, &ids) {
                        ev_link
                            .execute(params![scope.environment, scope.account, nid, ev.id])
                            .j()?;
                    }
                }
            }
            stats.new_events = append_events(tx, events, now)?;
            if last {
                mark_parsed(tx, &[raw])?;
            }
            Ok(stats)
        })
    }

    /// Append events (e.g. error events) to the outbox; ids ever enqueued before are skipped.
    /// Returns how many were appended.
    pub fn enqueue(&self, events: &[CloudEvent]) -> Result<usize, JournalError> {
        let now = now_ms();
        self.write(|tx| append_events(tx, events, now))
    }

    // ---- pending lists -----------------------------------------------------------------------

    /// The last committed snapshot of one pending list (`list` names it, e.g. `connection`),
    /// keyed by the caller's item key.
    pub fn pending_snapshot(
        &self,
        scope: &Scope,
        list: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT item_key, json FROM pending_snapshots \
                 WHERE environment = ?1 AND account = ?2 AND list = ?3",
            )
            .j()?;
        let rows = st
            .query_map(params![scope.environment, scope.account, list], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .j()?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (k, json) = row.j()?;
            let v = serde_json::from_str(&json)
                .map_err(|e| JournalError::Corrupt(format!("pending snapshot {list}/{k}: {e}")))?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Replace the snapshot of one pending list, mark its raw bodies parsed and enqueue the
    /// events derived from the difference, atomically: after a restart the old snapshot and the
    /// outbox agree, so nothing is emitted twice. Returns how many events were appended.
    pub fn commit_pending(
        &self,
        scope: &Scope,
        list: &str,
        raw_ids: &[RawId],
        snapshot: &BTreeMap<String, serde_json::Value>,
        events: &[CloudEvent],
    ) -> Result<usize, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM pending_snapshots WHERE environment = ?1 AND account = ?2 AND list = ?3",
            )
            .j()?
            .execute(params![scope.environment, scope.account, list])
            .j()?;
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO pending_snapshots(environment, account, list, item_key, json) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .j()?;
                for (k, v) in snapshot {
                    ins.execute(params![scope.environment, scope.account, list, k, v.to_string()])
                        .j()?;
                }
            }
            mark_parsed(tx, raw_ids)?;
            append_events(tx, events, now)
        })
    }

    // ---- answers -----------------------------------------------------------------------------

    /// Remember that the bridge answered a pending request (`kind` e.g. `connection`, `action`
    /// e.g. `accept`), so the next list walk can attribute its disappearance.
    pub fn record_answer(
        &self,
        scope: &Scope,
        kind: &str,
        id: i64,
        action: &str,
    ) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO answers(environment, account, kind, id, action, answered_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(environment, account, kind, id) DO UPDATE SET \
                 action = excluded.action, answered_at = excluded.answered_at",
            )
            .j()?
            .execute(params![
                scope.environment,
                scope.account,
                kind,
                id,
                action,
                now_ms()
            ])
            .j()?;
            Ok(())
        })
    }

    /// The action the bridge took on a pending request, if any.
    pub fn answer_for(
        &self,
        scope: &Scope,
        kind: &str,
        id: i64,
    ) -> Result<Option<String>, JournalError> {
        let conn = self.reader();
        let action = conn
            .prepare_cached(
                "SELECT action FROM answers WHERE environment = ?1 AND account = ?2 AND kind = ?3 AND id = ?4",
            )
            .j()?
            .query_row(params![scope.environment, scope.account, kind, id], |r| {
                r.get(0)
            })
            .optional()
            .j()?;
        Ok(action)
    }

    // ---- outbox and cursors ------------------------------------------------------------------

    /// Up to `limit` events after `after_seq` that `sink` should see (untargeted events and
    /// replays aimed at `sink`), in sequence order.
    pub fn read_outbox(
        &self,
        sink: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT seq, event_json, enqueued_at FROM outbox \
                 WHERE seq > ?1 AND (target_sink IS NULL OR target_sink = ?2) ORDER BY seq LIMIT ?3",
            )
            .j()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st
            .query_map(params![after_seq, sink, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .j()?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, json, at) = row.j()?;
            out.push(OutboxRow {
                seq,
                event: parse_event(seq, &json)?,
                enqueued_at: from_ms(at),
            });
        }
        Ok(out)
    }

    /// Register `sink` (starting at 0, i.e. everything still retained) without reading it.
    /// Register every configured sink at startup so compaction keeps what they have not seen.
    pub fn register_sink(&self, sink: &str) -> Result<(), JournalError> {
        self.write(|tx| register_sink(tx, sink, now_ms()))
    }

    /// The sink's cursor (highest sequence number it has passed). A new sink is registered at 0.
    pub fn cursor(&self, sink: &str) -> Result<i64, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            register_sink(tx, sink, now)?;
            tx.prepare_cached("SELECT cursor FROM sinks WHERE name = ?1")
                .j()?
                .query_row([sink], |r| r.get(0))
                .j()
        })
    }

    /// Move the sink's cursor (registering it if needed). Moving it backwards re-delivers.
    pub fn set_cursor(&self, sink: &str, seq: i64) -> Result<(), JournalError> {
        self.write(|tx| store_cursor(tx, sink, seq, now_ms()))
    }

    /// Atomically store dead letters and move the cursor: what the driver does after a batch, so
    /// a crash can neither lose a dead letter nor skip an event.
    pub fn settle(
        &self,
        sink: &str,
        dead_letters: &[NewDeadLetter],
        cursor: i64,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        self.write(|tx| {
            for d in dead_letters {
                store_dead_letter(tx, sink, &d.row, &d.reason, d.attempts, now)?;
            }
            store_cursor(tx, sink, cursor, now)
        })
    }

    /// Every registered sink with its cursor.
    pub fn sinks(&self) -> Result<Vec<SinkCursor>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached("SELECT name, cursor FROM sinks ORDER BY name")
            .j()?;
        let rows = st
            .query_map([], |r| {
                Ok(SinkCursor {
                    name: r.get(0)?,
                    cursor: r.get(1)?,
                })
            })
            .j()?;
        rows.collect::<Result<_, _>>().j()
    }

    /// Unregister a sink removed from the configuration, so compaction stops waiting for it.
    /// Its dead letters stay until dropped.
    pub fn forget_sink(&self, sink: &str) -> Result<bool, JournalError> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM sinks WHERE name = ?1")
                .j()?
                .execute([sink])
                .j()?
                > 0)
        })
    }

    /// How many events `sink` has not passed yet, and the oldest one's enqueue time. Does not
    /// register the sink (an unknown sink counts from 0).
    pub fn outbox_depth(&self, sink: &str) -> Result<OutboxDepth, JournalError> {
        let conn = self.reader();
        let cursor: i64 = conn
            .prepare_cached("SELECT cursor FROM sinks WHERE name = ?1")
            .j()?
            .query_row([sink], |r| r.get(0))
            .optional()
            .j()?
            .unwrap_or(0);
        let (pending, oldest): (i64, Option<i64>) = conn
            .prepare_cached(
                "SELECT COUNT(*), MIN(enqueued_at) FROM outbox \
                 WHERE seq > ?1 AND (target_sink IS NULL OR target_sink = ?2)",
            )
            .j()?
            .query_row(params![cursor, sink], |r| Ok((r.get(0)?, r.get(1)?)))
            .j()?;
        Ok(OutboxDepth {
            pending: pending.max(0) as u64,
            oldest_enqueued_at: oldest.map(from_ms),
        })
    }

    /// The highest sequence number ever assigned (0 for an empty journal); survives compaction.
    pub fn head_seq(&self) -> Result<i64, JournalError> {
        let conn = self.reader();
        let seq: Option<i64> = conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
            .j()?
            .query_row([], |r| r.get(0))
            .optional()
            .j()?;
        Ok(seq.unwrap_or(0))
    }

    // ---- dead letters ------------------------------------------------------------------------

    /// Store an event `sink` gave up on. Prefer [`Journal::settle`], which also moves the cursor.
    pub fn dead_letter(
        &self,
        sink: &str,
        row: &OutboxRow,
        reason: &str,
        attempts: u32,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        self.write(|tx| store_dead_letter(tx, sink, row, reason, attempts, now))
    }

    /// Dead letters, oldest first, of one sink or of all.
    pub fn dlq_list(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT id, sink, seq, event_id, event_type, reason, attempts, failed_at, event_json \
                 FROM dead_letters WHERE ?1 IS NULL OR sink = ?1 ORDER BY id",
            )
            .j()?;
        let rows = st
            .query_map([sink], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .j()?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sink, seq, event_id, event_type, reason, attempts, failed_at, json) =
                row.j()?;
            out.push(DeadLetter {
                id,
                sink,
                seq,
                event_id,
                event_type,
                reason,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                failed_at: from_ms(failed_at),
                event: parse_event(seq, &json)?,
            });
        }
        Ok(out)
    }

    /// Number of dead letters of one sink, or of all.
    pub fn dlq_count(&self, sink: Option<&str>) -> Result<u64, JournalError> {
        let conn = self.reader();
        let n: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM dead_letters WHERE ?1 IS NULL OR sink = ?1")
            .j()?
            .query_row([sink], |r| r.get(0))
            .j()?;
        Ok(n.max(0) as u64)
    }

    /// Re-append a dead letter's event to the outbox aimed only at its sink (other sinks skip
    /// it), and remove it from the dead-letter queue. Returns the new sequence number.
    pub fn dlq_replay(&self, id: i64) -> Result<i64, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            let found: Option<(String, String, String, String)> = tx
                .prepare_cached(
                    "SELECT sink, event_id, event_type, event_json FROM dead_letters WHERE id = ?1",
                )
                .j()?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
                .j()?;
            let Some((sink, event_id, event_type, json)) = found else {
                return Err(JournalError::NotFound {
                    what: "dead letter",
                    id,
                });
            };
            tx.prepare_cached(
                "INSERT INTO outbox(event_id, event_type, target_sink, event_json, enqueued_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .j()?
            .execute(params![event_id, event_type, sink, json, now])
            .j()?;
            let seq = tx.last_insert_rowid();
            tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                .j()?
                .execute([id])
                .j()?;
            Ok(seq)
        })
    }

    /// Delete a dead letter for good. Returns whether it existed.
    pub fn dlq_drop(&self, id: i64) -> Result<bool, JournalError> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                .j()?
                .execute([id])
                .j()?
                > 0)
        })
    }

    // ---- history -----------------------------------------------------------------------------

    /// The life of a notification: when it was first seen, in which raw bodies, its events and
    /// per sink whether each is pending, delivered (the cursor passed it) or dead-lettered.
    /// With `scope = None`, every account's notification with that id is returned.
    pub fn notification_history(
        &self,
        scope: Option<&Scope>,
        notification_id: i64,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        let conn = self.reader();
        // One read transaction, so the picture is consistent.
        let tx = conn.unchecked_transaction().j()?;
        let (env, acct) = match scope {
            Some(s) => (Some(s.environment.as_str()), Some(s.account.as_str())),
            None => (None, None),
        };
        let mut entries = Vec::new();
        {
            let mut st = tx
                .prepare_cached(
                    "SELECT environment, account, type_code, json, first_seen_at FROM notifications \
                     WHERE notification_id = ?1 AND (?2 IS NULL OR environment = ?2) \
                     AND (?3 IS NULL OR account = ?3) ORDER BY environment, account",
                )
                .j()?;
            let rows = st
                .query_map(params![notification_id, env, acct], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .j()?;
            for row in rows {
                let (e, a, type_code, json, seen) = row.j()?;
                let json = serde_json::from_str(&json).map_err(|err| {
                    JournalError::Corrupt(format!("notification {notification_id}: {err}"))
                })?;
                entries.push(HistoryEntry {
                    scope: Scope::new(e, a),
                    notification_id,
                    type_code,
                    json,
                    first_seen_at: from_ms(seen),
                    raw_ids: Vec::new(),
                    events: Vec::new(),
                });
            }
        }
        let sinks: Vec<(String, i64)> = {
            let mut st = tx
                .prepare_cached("SELECT name, cursor FROM sinks ORDER BY name")
                .j()?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).j()?;
            rows.collect::<Result<_, _>>().j()?
        };
        for entry in &mut entries {
            let s = &entry.scope;
            let mut st = tx
                .prepare_cached(
                    "SELECT raw_id FROM notification_raw WHERE environment = ?1 AND account = ?2 \
                     AND notification_id = ?3 ORDER BY raw_id",
                )
                .j()?;
            let raws = st
                .query_map(params![s.environment, s.account, notification_id], |r| {
                    Ok(RawId(r.get(0)?))
                })
                .j()?;
            entry.raw_ids = raws.collect::<Result<_, _>>().j()?;

            let mut st = tx
                .prepare_cached(
                    "SELECT l.event_id, l.event_type, l.seq FROM notification_events n \
                     JOIN event_log l ON l.event_id = n.event_id \
                     WHERE n.environment = ?1 AND n.account = ?2 AND n.notification_id = ?3 \
                     ORDER BY l.seq",
                )
                .j()?;
            let evs: Vec<(String, String, i64)> = st
                .query_map(params![s.environment, s.account, notification_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .j()?
                .collect::<Result<_, _>>()
                .j()?;
            for (event_id, event_type, seq) in evs {
                let mut dead: HashMap<(String, i64), (String, u32)> = HashMap::new();
                let mut st = tx
                    .prepare_cached(
                        "SELECT sink, seq, reason, attempts FROM dead_letters WHERE event_id = ?1",
                    )
                    .j()?;
                let rows = st
                    .query_map([&event_id], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .j()?;
                for row in rows {
                    let (sink, dseq, reason, attempts) = row.j()?;
                    dead.insert(
                        (sink, dseq),
                        (reason, u32::try_from(attempts).unwrap_or(u32::MAX)),
                    );
                }
                let mut occurrences = vec![(seq, None::<String>)];
                let mut st = tx
                    .prepare_cached(
                        "SELECT seq, target_sink FROM outbox WHERE event_id = ?1 \
                         AND target_sink IS NOT NULL ORDER BY seq",
                    )
                    .j()?;
                let rows = st
                    .query_map([&event_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .j()?;
                for row in rows {
                    occurrences.push(row.j()?);
                }
                for (oseq, target) in occurrences {
                    let deliveries = sinks
                        .iter()
                        .filter(|(name, _)| target.as_ref().is_none_or(|t| t == name))
                        .map(|(name, cursor)| {
                            let status = match dead.get(&(name.clone(), oseq)) {
                                Some((reason, attempts)) => DeliveryStatus::DeadLettered {
                                    reason: reason.clone(),
                                    attempts: *attempts,
                                },
                                None if *cursor >= oseq => DeliveryStatus::Delivered,
                                None => DeliveryStatus::Pending,
                            };
                            SinkDelivery {
                                sink: name.clone(),
                                status,
                            }
                        })
                        .collect();
                    entry.events.push(EventHistory {
                        event_id: event_id.clone(),
                        event_type: event_type.clone(),
                        seq: oseq,
                        target_sink: target,
                        deliveries,
                    });
                }
            }
        }
        drop(tx);
        Ok(entries)
    }

    // ---- compaction --------------------------------------------------------------------------

    /// Delete outbox rows that every registered sink's cursor has passed (for a replay: its
    /// target's cursor) and that are older than `retention`, and parsed raw bodies older than
    /// `retention`. Quarantined bodies, unparsed bodies and events some registered sink has not
    /// passed are never deleted; with no sink registered, no untargeted event is deleted.
    pub fn compact(
        &self,
        retention: Duration,
        now: SystemTime,
    ) -> Result<CompactStats, JournalError> {
        let cutoff = to_ms(now.checked_sub(retention).unwrap_or(UNIX_EPOCH));
        self.write(|tx| {
            let outbox_rows = tx
                .prepare_cached(
                    "DELETE FROM outbox WHERE enqueued_at < ?1 AND ( \
                       (target_sink IS NULL AND seq <= (SELECT MIN(cursor) FROM sinks)) \
                       OR (target_sink IS NOT NULL AND ( \
                           NOT EXISTS (SELECT 1 FROM sinks WHERE name = outbox.target_sink) \
                           OR seq <= (SELECT cursor FROM sinks WHERE name = outbox.target_sink))))",
                )
                .j()?
                .execute([cutoff])
                .j()? as u64;
            let raw_bodies = tx
                .prepare_cached(
                    "DELETE FROM raw_bodies WHERE state = 'parsed' AND received_at < ?1",
                )
                .j()?
                .execute([cutoff])
                .j()? as u64;
            Ok(CompactStats {
                outbox_rows,
                raw_bodies,
            })
        })
    }
}
