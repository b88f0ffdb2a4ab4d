//! The durable SQLite journal: raw bodies, quarantine, notifications, outbox, cursors, dead letters.
//!
//! The journal owns the only copy of every notification drained from Portfolio Manager, so every
//! write is a SQLite transaction in WAL mode with `synchronous=FULL`: when a method returns `Ok`,
//! the data is on disk. The one exception is a part of a body committed by
//! [`Journal::commit_notifications_part`]: it is derived from the raw body, which is on disk
//! already, so it is committed without waiting for the disk (a power cut can undo it, and the
//! body is then parsed again), and the next durable write takes it to disk with it.
//!
//! The API is synchronous. [`Journal`] is `Clone + Send + Sync` (an `Arc` inside) and cheap to
//! clone; async callers use the one wrapper, [`Journal::call`], which runs a call on the blocking
//! pool:
//!
//! ```no_run
//! # async fn f(journal: espm_journal::Journal) -> Result<(), espm_journal::JournalError> {
//! let head = journal.call(|j| j.head_seq()).await?;
//! # let _ = head; Ok(()) }
//! ```
//!
//! The methods are grouped by role, one module each: raw bodies and quarantine (`raw`),
//! notifications, pending-list snapshots, answers, the outbox and cursors, dead letters, history
//! and compaction.
//!
//! Writes go through one connection, reads of the outbox and lists through a second one, so a
//! sink driver reading a batch does not wait for a poller's commit (WAL allows concurrent readers).

mod answers;
mod chunks;
mod commands;
mod compaction;
mod customers;
mod dead_letters;
mod error;
mod history;
mod lock;
mod notifications;
mod outbox;
mod pending;
mod raw;
mod retries;
mod schema;
mod spool;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

pub use error::{JournalError, UnwritableKind};
pub use espm_events::CloudEvent;
pub use schema::SCHEMA_VERSION;

pub use chunks::{RawInfo, RawReader, CHUNK};
pub use commands::{AnswerBy, AnswerRecord, Begun, CommandState, NewCommand, StoredCommand};
pub use compaction::CompactStats;
pub use customers::{CachedCustomer, CachedProperty};
pub use dead_letters::{DeadLetter, NewDeadLetter};
pub use history::{DeliveryStatus, EventHistory, HistoryEntry, SinkDelivery};
pub use lock::{lock_path, JournalLock};
pub use notifications::{CommitStats, NotificationEntry};
pub use outbox::{OutboxDepth, OutboxRow, SinkCursor};
pub use raw::{body_digest, QuarantineOutcome, QuarantinedBody, StoredBody, UnprocessedBody};
pub use retries::{NewRetry, RetryRow, Settlement, SinkHealth};
pub use spool::{Spool, SpoolEntry, SpoolWriter};

use dead_letters::store_dead_letter;
use error::SqlResultExt;
use outbox::{append_events, insert_page, outbox_head, parse_event, store_cursor};
use raw::mark_parsed;

/// How long a writer waits for a lock held by another connection before reporting
/// [`UnwritableKind::Locked`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer connection, KiB: a part of 2,000 notifications with its events
/// fits, so SQLite does not spill pages to the WAL mid-transaction (its default is 2 MiB). A
/// background checkpointer was tried too: after schema v5 it made no measurable difference.
const WRITER_CACHE_KIB: i64 = 4 * 1024;

/// Page size of a new journal. A burst writes a few KiB per notification, and SQLite reads and
/// writes a page per system call: 16 KiB pages take a quarter of 4 KiB pages' calls (strace of a
/// 100,000 burst: 126,000 `pread`/`pwrite` calls with 4 KiB).
const PAGE_SIZE: i64 = 16 * 1024;

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

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// `file:PATH?immutable=1`, with the characters a URI path cannot carry escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        match b {
            b'?' | b'#' | b'%' | b' ' | 0x80.. => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(b as char),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Run `f` in one write transaction on `conn` and commit it.
fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
) -> Result<T, JournalError> {
    // IMMEDIATE takes the write lock up front, so a busy journal fails here, not mid-way.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .j()?;
    let out = f(&tx)?;
    tx.commit().j()?;
    Ok(out)
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
        // Only a new, empty file takes it (before WAL mode writes the header); an existing
        // journal keeps the page size it was created with.
        conn.pragma_update(None, "page_size", PAGE_SIZE).j()?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .j()?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "journal could not switch to WAL mode");
        }
    }
    // FULL: a commit returns only after the WAL is fsynced.
    conn.pragma_update(None, "synchronous", "FULL").j()?;
    if !read_only {
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .j()?;
    }
    Ok(())
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
        let open = |uri: bool| -> Result<Connection, JournalError> {
            let conn = if uri {
                // A closed WAL journal on a read-only volume has no `-shm` and cannot get one:
                // SQLite opens it only as immutable, which is true there (nobody can write it).
                Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
                    .j()?
            } else {
                Connection::open_with_flags(path, flags).j()?
            };
            configure(&conn, true)?;
            conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                .j()?;
            Ok(conn)
        };
        let immutable = match open(false) {
            Ok(c) => {
                drop(c);
                false
            }
            Err(e) if spool::read_only_filesystem(path) => {
                tracing::debug!(error = %e, "journal on a read-only volume: opening it immutable");
                true
            }
            Err(e) => return Err(e),
        };
        let writer = open(immutable)?;
        let found: i64 = writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .j()?;
        if found > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let reader = open(immutable)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                read_only: true,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// Run a journal call on tokio's blocking pool: SQLite calls block (fsync), so async code never
    /// runs them on a runtime thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    {
        let j = self.clone();
        tokio::task::spawn_blocking(move || f(&j))
            .await
            .map_err(|e| JournalError::Task(e.to_string()))?
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.writer)
    }

    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.reader)
    }

    /// Run `f` in one write transaction and commit it durably.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        in_transaction(&mut self.writer(), f)
    }

    /// [`Journal::write`] without waiting for the disk at commit (`synchronous=NORMAL` for this
    /// transaction): only for rows derived from bytes an earlier durable commit holds (a part of
    /// a journalled body). A power cut can undo such a commit, never what it came from, which is
    /// then parsed again (duplicates, not loss). The WAL is one file written in order, so the
    /// next durable commit (a sink's cursor, the next body) makes this one durable too: no
    /// cursor can outlive the events it passed.
    pub(crate) fn write_relaxed<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut conn = self.writer();
        conn.pragma_update(None, "synchronous", "NORMAL").j()?;
        let out = in_transaction(&mut conn, f);
        // Back to FULL whatever happened: every other write must be durable when it returns.
        let restored = conn.pragma_update(None, "synchronous", "FULL").j();
        let out = out?;
        restored?;
        Ok(out)
    }

    /// Free bytes on the journal's filesystem.
    pub fn free_space(&self) -> Result<u64, JournalError> {
        spool::free_bytes(&self.inner.path)
    }

    /// Prove there is room for `needed` more bytes: the filesystem's free space must be at least
    /// that, or [`UnwritableKind::DiskFull`]. The poller asks before every `clear=true`, with the
    /// configured floor plus what the coming body is expected to take.
    pub fn check_room(&self, needed: u64) -> Result<u64, JournalError> {
        let free = self.free_space()?;
        if free < needed {
            return Err(JournalError::Unwritable {
                kind: UnwritableKind::DiskFull,
                message: format!(
                    "{free} bytes free on the journal's filesystem, {needed} needed (journal.min_free plus the expected body)"
                ),
            });
        }
        Ok(free)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// A relaxed write does not wait for the disk, and every write after it does again, also
    /// after one that failed: only a body's parts are relaxed, never what is not derived.
    #[test]
    fn a_relaxed_write_leaves_the_journal_durable_for_every_other_write() {
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        assert_eq!(synchronous(&j.writer()), FULL);
        let inside = j.write_relaxed(|tx| Ok(synchronous(tx))).unwrap();
        assert_eq!(inside, NORMAL);
        assert_eq!(synchronous(&j.writer()), FULL);
        let failed: Result<(), JournalError> =
            j.write_relaxed(|_| Err(JournalError::Corrupt("refused".into())));
        assert!(failed.is_err());
        assert_eq!(synchronous(&j.writer()), FULL);
        let scope = Scope::new("sim", "acme");
        let raw = j
            .record_raw(&scope, "notification/list", 200, b"<x/>")
            .unwrap();
        j.commit_notifications_part(&scope, raw, &[], &[], true)
            .unwrap();
        assert_eq!(synchronous(&j.writer()), FULL);
    }
}
