//! Per-event retries and endpoint health, for sinks that retry each event on its own schedule
//! (webhooks).
//!
//! A sink in per-event mode never holds its cursor on a failing event: the driver moves the event
//! into `sink_retries` (with its attempt count and next attempt time) in the same transaction as
//! the cursor move, delivers the events behind it, and delivers due rows of `sink_retries` as
//! they fall due. The row carries the event itself, so compaction of the outbox never loses it,
//! and the schedule survives restarts.
//!
//! `sink_health` keeps, per sink, since when every attempt has failed and whether the endpoint is
//! disabled (410 Gone, or failing for too long). `espm-bridge webhook enable NAME` clears the
//! flag; the running driver polls it.

#[allow(unused_imports)]
use super::*;

/// An event waiting in a sink's retry queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryRow {
    /// The outbox row (the event and its original sequence number).
    pub row: OutboxRow,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: SystemTime,
    /// The last failure, for diagnosis.
    pub last_error: String,
}

/// Input to [`Settlement`]: an event to (re)schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRetry {
    /// The outbox row.
    pub row: OutboxRow,
    /// Attempts made so far (after this batch).
    pub attempts: u32,
    /// When to try again.
    pub next_attempt_at: SystemTime,
    /// Why the last attempt failed.
    pub last_error: String,
}

/// What the driver stores after a batch, atomically: dead letters, retries to (re)schedule,
/// retries that are settled (delivered or dead-lettered), the cursor, and the endpoint's health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settlement {
    /// Events given up on.
    pub dead_letters: Vec<NewDeadLetter>,
    /// Events to put in (or keep in) the retry queue.
    pub retries: Vec<NewRetry>,
    /// Sequence numbers to remove from the retry queue.
    pub settled_retries: Vec<i64>,
    /// The new cursor (never moves backwards).
    pub cursor: i64,
    /// `Some(true)`: at least one delivery succeeded (the endpoint is healthy again);
    /// `Some(false)`: every attempt of the batch failed; `None`: nothing was attempted.
    pub succeeded: Option<bool>,
    /// Disable the endpoint with this reason.
    pub disable: Option<String>,
}

/// An endpoint's health as stored in the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkHealth {
    /// Since when every attempt has failed (`None` after a success).
    pub failing_since: Option<SystemTime>,
    /// Why the endpoint is disabled, if it is.
    pub disabled_reason: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<SystemTime>,
}

fn store_retry(conn: &Connection, sink: &str, r: &NewRetry) -> Result<(), JournalError> {
    let json = r.row.event.to_stored_json();
    conn.prepare_cached(
        "INSERT INTO sink_retries(sink, seq, event_json, enqueued_at, attempts, next_attempt_at, last_error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT(sink, seq) DO UPDATE SET attempts = excluded.attempts, \
             next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error",
    )
    .j()?
    .execute(params![
        sink,
        r.row.seq,
        json,
        to_ms(r.row.enqueued_at),
        r.attempts,
        to_ms(r.next_attempt_at),
        r.last_error
    ])
    .j()?;
    Ok(())
}

fn ensure_health_row(conn: &Connection, sink: &str) -> Result<(), JournalError> {
    conn.prepare_cached("INSERT INTO sink_health(sink) VALUES (?1) ON CONFLICT(sink) DO NOTHING")
        .j()?
        .execute([sink])
        .j()?;
    Ok(())
}

fn store_disabled(
    conn: &Connection,
    sink: &str,
    reason: &str,
    now: i64,
) -> Result<(), JournalError> {
    ensure_health_row(conn, sink)?;
    conn.prepare_cached(
        "UPDATE sink_health SET disabled_reason = ?2, disabled_at = ?3 WHERE sink = ?1",
    )
    .j()?
    .execute(params![sink, reason, now])
    .j()?;
    Ok(())
}

impl Journal {
    /// Store one batch's result atomically (see [`Settlement`]).
    pub fn settle_batch(&self, sink: &str, s: &Settlement) -> Result<(), JournalError> {
        let now = now_ms();
        self.write(|tx| {
            for d in &s.dead_letters {
                store_dead_letter(tx, sink, &d.row, &d.reason, d.attempts, now)?;
            }
            for seq in &s.settled_retries {
                tx.prepare_cached("DELETE FROM sink_retries WHERE sink = ?1 AND seq = ?2")
                    .j()?
                    .execute(params![sink, seq])
                    .j()?;
            }
            for r in &s.retries {
                store_retry(tx, sink, r)?;
            }
            match s.succeeded {
                Some(true) => {
                    tx.prepare_cached("UPDATE sink_health SET failing_since = NULL WHERE sink = ?1")
                        .j()?
                        .execute([sink])
                        .j()?;
                }
                Some(false) => {
                    ensure_health_row(tx, sink)?;
                    tx.prepare_cached(
                        "UPDATE sink_health SET failing_since = COALESCE(failing_since, ?2) WHERE sink = ?1",
                    )
                    .j()?
                    .execute(params![sink, now])
                    .j()?;
                }
                None => {}
            }
            if let Some(reason) = &s.disable {
                store_disabled(tx, sink, reason, now)?;
            }
            store_cursor(tx, sink, s.cursor, now)
        })
    }

    /// Up to `limit` events of `sink`'s retry queue due at `now`, earliest due first.
    pub fn due_retries(
        &self,
        sink: &str,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<RetryRow>, JournalError> {
        self.retries_where(sink, Some(now), limit)
    }

    /// Events of `sink`'s retry queue due by `due_by` (all when `None`), earliest due first.
    fn retries_where(
        &self,
        sink: &str,
        due_by: Option<SystemTime>,
        limit: usize,
    ) -> Result<Vec<RetryRow>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT seq, event_json, enqueued_at, attempts, next_attempt_at, last_error \
                 FROM sink_retries WHERE sink = ?1 AND (?2 IS NULL OR next_attempt_at <= ?2) \
                 ORDER BY next_attempt_at, seq LIMIT ?3",
            )
            .j()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st
            .query_map(params![sink, due_by.map(to_ms), limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .j()?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, json, enq, attempts, next, last_error) = row.j()?;
            out.push(RetryRow {
                row: OutboxRow {
                    seq,
                    event: parse_event(seq, &json)?.into(),
                    enqueued_at: from_ms(enq),
                },
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                next_attempt_at: from_ms(next),
                last_error,
            });
        }
        Ok(out)
    }

    /// Every event waiting in `sink`'s retry queue, earliest due first.
    pub fn retry_list(&self, sink: &str) -> Result<Vec<RetryRow>, JournalError> {
        self.retries_where(sink, None, usize::MAX)
    }

    /// When the earliest event of `sink`'s retry queue falls due, if any.
    pub fn next_retry_at(&self, sink: &str) -> Result<Option<SystemTime>, JournalError> {
        let conn = self.reader();
        let at: Option<i64> = conn
            .prepare_cached("SELECT MIN(next_attempt_at) FROM sink_retries WHERE sink = ?1")
            .j()?
            .query_row([sink], |r| r.get(0))
            .j()?;
        Ok(at.map(from_ms))
    }

    /// How many events wait in `sink`'s retry queue.
    pub fn retry_count(&self, sink: &str) -> Result<u64, JournalError> {
        let conn = self.reader();
        let n: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM sink_retries WHERE sink = ?1")
            .j()?
            .query_row([sink], |r| r.get(0))
            .j()?;
        Ok(n.max(0) as u64)
    }

    /// The endpoint health stored for `sink` (default: healthy, enabled).
    pub fn sink_health(&self, sink: &str) -> Result<SinkHealth, JournalError> {
        let conn = self.reader();
        let row: Option<(Option<i64>, Option<String>, Option<i64>)> = conn
            .prepare_cached(
                "SELECT failing_since, disabled_reason, disabled_at FROM sink_health WHERE sink = ?1",
            )
            .j()?
            .query_row([sink], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .j()?;
        Ok(match row {
            None => SinkHealth::default(),
            Some((failing, reason, at)) => SinkHealth {
                failing_since: failing.map(from_ms),
                disabled_reason: reason,
                disabled_at: at.map(from_ms),
            },
        })
    }

    /// Disable `sink`'s endpoint: its driver stops delivering until [`Journal::enable_sink`].
    pub fn disable_sink(&self, sink: &str, reason: &str) -> Result<(), JournalError> {
        let now = now_ms();
        self.write(|tx| store_disabled(tx, sink, reason, now))
    }

    /// Re-enable a disabled endpoint and forget its failure streak; its retry queue falls due at
    /// once. Returns whether it was disabled.
    pub fn enable_sink(&self, sink: &str) -> Result<bool, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            let was = tx
                .prepare_cached(
                    "UPDATE sink_health SET disabled_reason = NULL, disabled_at = NULL, \
                     failing_since = NULL WHERE sink = ?1 AND disabled_reason IS NOT NULL",
                )
                .j()?
                .execute([sink])
                .j()?
                > 0;
            if was {
                retries_due_at(tx, sink, now)?;
            }
            Ok(was)
        })
    }

    /// Make `sink`'s whole retry queue due now: its endpoint was down and is back, so what failed
    /// meanwhile need not wait for its schedule. Returns how many rows it moved forward.
    pub fn retries_due_now(&self, sink: &str) -> Result<usize, JournalError> {
        let now = now_ms();
        self.write(|tx| retries_due_at(tx, sink, now))
    }
}

fn retries_due_at(tx: &Transaction<'_>, sink: &str, at: i64) -> Result<usize, JournalError> {
    tx.prepare_cached(
        "UPDATE sink_retries SET next_attempt_at = ?2 WHERE sink = ?1 AND next_attempt_at > ?2",
    )
    .j()?
    .execute(params![sink, at])
    .j()
}
