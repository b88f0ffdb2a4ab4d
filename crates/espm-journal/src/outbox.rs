//! The outbox and the sinks' cursors.

#[allow(unused_imports)]
use super::*;

/// One event in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Outbox sequence number: strictly increasing, never reused.
    pub seq: i64,
    /// The event; shared, so a sink's batch and the driver's copy for dead letters need no deep
    /// clone of it.
    pub event: std::sync::Arc<CloudEvent>,
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

/// A registered sink and its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkCursor {
    /// Sink name.
    pub name: String,
    /// Highest outbox sequence number the sink has passed.
    pub cursor: i64,
}

/// An event the journal stored ([`CloudEvent::to_stored_json`]: one line, without what its type
/// implies; rows in the full form read the same).
pub(crate) fn parse_event(seq: i64, json: &str) -> Result<CloudEvent, JournalError> {
    CloudEvent::from_stored_json(json)
        .map_err(|e| JournalError::Corrupt(format!("outbox seq {seq}: {e}")))
}

/// Append events to the outbox inside `tx`, skipping ids ever enqueued before (`event_log`).
/// Returns how many were appended. Events of a notification go through
/// [`Journal::commit_notifications`] instead, which appends them once per notification link.
pub(crate) fn append_events(
    tx: &Transaction<'_>,
    events: &[CloudEvent],
    now: i64,
) -> Result<usize, JournalError> {
    let mut logged = tx
        .prepare_cached("SELECT 1 FROM event_log WHERE event_id = ?1")
        .j()?;
    let mut ins_log = tx
        .prepare_cached(
            "INSERT INTO event_log(event_id, event_type, seq, enqueued_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .j()?;
    let mut appended = 0;
    for ev in events {
        if logged.exists([&ev.id]).j()? {
            continue;
        }
        // A page of one: these events are few, and each is compacted on its own.
        let seq = insert_page(tx, &[ev], now)?;
        ins_log.execute(params![ev.id, ev.ty, seq, now]).j()?;
        appended += 1;
    }
    Ok(appended)
}

/// The highest sequence number ever assigned, inside a transaction (0 for an empty journal).
pub(crate) fn outbox_head(tx: &Transaction<'_>) -> Result<i64, JournalError> {
    Ok(tx
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        .j()?
        .query_row([], |r| r.get(0))
        .optional()
        .j()?
        .unwrap_or(0))
}

/// Append `events` as one untargeted page (schema version 9): one row whose `event_json` holds
/// them one per line, `seq` the last one's sequence number. Returns the first one's sequence
/// number; the others follow it one by one.
pub(crate) fn insert_page(
    tx: &Transaction<'_>,
    events: &[&CloudEvent],
    now: i64,
) -> Result<i64, JournalError> {
    let first = outbox_head(tx)? + 1;
    let Some(ev) = events.first() else {
        return Ok(first);
    };
    let mut page = Vec::with_capacity(events.len() * 1024);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            // serde_json escapes every newline inside a string: a line is one event.
            page.push(b'\n');
        }
        e.write_stored_json(&mut page);
    }
    // serde_json writes UTF-8 only; the column holds text.
    let json = String::from_utf8(page)
        .map_err(|e| JournalError::Corrupt(format!("an event encoded to invalid UTF-8: {e}")))?;
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    // An explicit seq above sqlite_sequence moves it on: no later row can reuse these numbers.
    tx.prepare_cached(
        "INSERT INTO outbox(seq, event_id, event_type, target_sink, event_json, enqueued_at, events) \
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6)",
    )
    .j()?
    .execute(params![first + n - 1, ev.id, ev.ty, json, now, n])
    .j()?;
    Ok(first)
}

pub(crate) fn register_sink(conn: &Connection, sink: &str, now: i64) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO sinks(name, cursor, registered_at, updated_at) VALUES (?1, 0, ?2, ?2) \
         ON CONFLICT(name) DO NOTHING",
    )
    .j()?
    .execute(params![sink, now])
    .j()?;
    Ok(())
}

/// Cursors only move forward (see [`Journal::set_cursor`]).
pub(crate) fn store_cursor(
    conn: &Connection,
    sink: &str,
    seq: i64,
    now: i64,
) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO sinks(name, cursor, registered_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT(name) DO UPDATE SET cursor = MAX(sinks.cursor, excluded.cursor), \
         updated_at = excluded.updated_at",
    )
    .j()?
    .execute(params![sink, seq, now])
    .j()?;
    Ok(())
}

impl Journal {
    /// Up to `limit` events after `after_seq` that `sink` should see (untargeted events and
    /// replays aimed at `sink`), in sequence order.
    pub fn read_outbox(
        &self,
        sink: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        self.read_rows(sink, after_seq, limit, false)
    }

    /// [`Journal::read_outbox`] for a reader that keeps what it read ahead: at least `limit`
    /// events unless the outbox ends first, and never part of a page, so each page (a drain
    /// part's events, more than a sink's batch) is read and decoded once, not once per batch.
    /// Returns at most `limit` events plus one page.
    pub fn read_outbox_pages(
        &self,
        sink: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        self.read_rows(sink, after_seq, limit, true)
    }

    fn read_rows(
        &self,
        sink: &str,
        after_seq: i64,
        limit: usize,
        whole_pages: bool,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        let conn = self.reader();
        // A page holds up to a part's events: rows are fewer than events, so `limit` rows are
        // always enough, and the loop stops at `limit` events.
        let mut st = conn
            .prepare_cached(
                "SELECT seq, events, event_json, enqueued_at FROM outbox \
                 WHERE seq > ?1 AND (target_sink IS NULL OR target_sink = ?2) ORDER BY seq LIMIT ?3",
            )
            .j()?;
        let limit_rows = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = st.query(params![after_seq, sink, limit_rows]).j()?;
        let mut out = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let Some(r) = rows.next().j()? else { break };
            let seq: i64 = r.get(0).j()?;
            let events: i64 = r.get(1).j()?;
            let json = r
                .get_ref(2)
                .j()?
                .as_str()
                .map_err(|e| JournalError::Corrupt(format!("outbox seq {seq}: {e}")))?;
            let enqueued_at = from_ms(r.get(3).j()?);
            let first = seq - events + 1;
            let mut lines = 0;
            for (i, line) in json.split('\n').enumerate() {
                lines += 1;
                let at = first + i as i64;
                if at <= after_seq || (out.len() >= limit && !whole_pages) {
                    continue;
                }
                out.push(OutboxRow {
                    seq: at,
                    event: parse_event(at, line)?.into(),
                    enqueued_at,
                });
            }
            if lines != events {
                return Err(JournalError::Corrupt(format!(
                    "outbox seq {seq}: a page of {events} events holds {lines} lines"
                )));
            }
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

    /// Move the sink's cursor forward (registering it if needed). A cursor never moves backwards:
    /// a lower value is ignored, so a stale writer cannot re-open what a sink already passed.
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

    /// Register every configured sink (at 0 when new) and return the cursors of registered sinks
    /// that are not in `configured`: they hold back compaction until
    /// [`Journal::forget_sink`] releases them.
    pub fn register_sinks(&self, configured: &[String]) -> Result<Vec<SinkCursor>, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            for s in configured {
                register_sink(tx, s, now)?;
            }
            Ok(())
        })?;
        Ok(self
            .sinks()?
            .into_iter()
            .filter(|s| !configured.contains(&s.name))
            .collect())
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
    /// Its retry queue and endpoint health go with it; its dead letters stay until dropped.
    pub fn forget_sink(&self, sink: &str) -> Result<bool, JournalError> {
        self.write(|tx| {
            for table in ["sink_retries", "sink_health"] {
                tx.execute(&format!("DELETE FROM {table} WHERE sink = ?1"), [sink])
                    .j()?;
            }
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
                // A page the cursor is inside counts only the events after it.
                "SELECT COALESCE(SUM(MIN(events, seq - ?1)), 0), MIN(enqueued_at) FROM outbox \
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
}
