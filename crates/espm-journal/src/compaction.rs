//! Compaction: what every registered sink has passed and retention allows.

#[allow(unused_imports)]
use super::*;

/// What [`Journal::compact`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Outbox events deleted (a page of a part's events counts each of them).
    pub outbox_rows: u64,
    /// Parsed raw bodies deleted.
    pub raw_bodies: u64,
}

impl Journal {
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
            // Counted in events: a page (schema version 9) holds many.
            let mut outbox_rows = 0u64;
            {
                let mut st = tx
                    .prepare_cached(
                        "DELETE FROM outbox WHERE enqueued_at < ?1 AND ( \
                           (target_sink IS NULL AND seq <= (SELECT MIN(cursor) FROM sinks)) \
                           OR (target_sink IS NOT NULL AND ( \
                               NOT EXISTS (SELECT 1 FROM sinks WHERE name = outbox.target_sink) \
                               OR seq <= (SELECT cursor FROM sinks WHERE name = outbox.target_sink)))) \
                         RETURNING events",
                    )
                    .j()?;
                let mut rows = st.query([cutoff]).j()?;
                while let Some(r) = rows.next().j()? {
                    outbox_rows += r.get::<_, i64>(0).j()?.max(0) as u64;
                }
            }
            tx.prepare_cached(
                "DELETE FROM raw_chunks WHERE raw_id IN (SELECT id FROM raw_bodies \
                 WHERE state = 'parsed' AND received_at < ?1)",
            )
            .j()?
            .execute([cutoff])
            .j()?;
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
