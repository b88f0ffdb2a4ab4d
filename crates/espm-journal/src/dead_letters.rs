//! Dead letters: events a sink gave up on, kept until replayed or dropped.

#[allow(unused_imports)]
use super::*;

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

pub(crate) fn store_dead_letter(
    conn: &Connection,
    sink: &str,
    row: &OutboxRow,
    reason: &str,
    attempts: u32,
    now: i64,
) -> Result<(), JournalError> {
    let json = row.event.to_stored_json();
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

impl Journal {
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
}
