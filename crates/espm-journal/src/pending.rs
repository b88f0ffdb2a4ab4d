//! Pending-list snapshots, replaced atomically with the events of their difference.

#[allow(unused_imports)]
use super::*;

impl Journal {
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
}
