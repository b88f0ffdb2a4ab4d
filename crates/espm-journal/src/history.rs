//! The life of one notification, for `espm-bridge history`.

#[allow(unused_imports)]
use super::*;

/// Delivery state of one event occurrence for one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// The sink's cursor has not reached it yet.
    Pending,
    /// The sink's cursor passed it (delivered, or skipped because the sink does not accept it).
    Delivered,
    /// The sink's cursor passed it, but it waits in the sink's retry queue (webhooks) for its
    /// next scheduled attempt.
    Retrying {
        /// Attempts made so far.
        attempts: u32,
        /// When the next attempt is due.
        next_attempt_at: SystemTime,
        /// Why the last attempt failed.
        last_error: String,
    },
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

impl Journal {
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
                    // The body that first carried it, and any that carried it again.
                    "SELECT first_raw_id FROM notifications WHERE notification_id = ?3 \
                     AND environment = ?1 AND account = ?2 UNION SELECT raw_id FROM notification_raw \
                     WHERE notification_id = ?3 AND environment = ?1 AND account = ?2 ORDER BY 1",
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
                    // The event kept in the notification's row (version 10), then the linked ones.
                    "SELECT event_id, event_type, event_seq FROM notifications \
                     WHERE notification_id = ?3 AND environment = ?1 AND account = ?2 \
                     AND event_id IS NOT NULL \
                     UNION ALL \
                     SELECT n.event_id, COALESCE(n.event_type, l.event_type), COALESCE(n.seq, l.seq) \
                     FROM notification_events n LEFT JOIN event_log l ON n.seq IS NULL AND l.event_id = n.event_id \
                     WHERE n.notification_id = ?3 AND n.environment = ?1 AND n.account = ?2 \
                     AND COALESCE(n.seq, l.seq) IS NOT NULL ORDER BY 3",
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
                // The original append, then every dead-letter replay of it.
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
                let mut dead: HashMap<(String, i64), (String, u32)> = HashMap::new();
                let mut retrying: HashMap<(String, i64), (u32, i64, String)> = HashMap::new();
                let mut dead_st = tx
                    .prepare_cached(
                        "SELECT reason, attempts FROM dead_letters WHERE sink = ?1 AND seq = ?2",
                    )
                    .j()?;
                let mut retry_st = tx
                    .prepare_cached(
                        "SELECT attempts, next_attempt_at, last_error FROM sink_retries \
                         WHERE sink = ?1 AND seq = ?2",
                    )
                    .j()?;
                for (oseq, _) in &occurrences {
                    for (sink, _) in &sinks {
                        let d = dead_st
                            .query_row(params![sink, oseq], |r| {
                                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                            })
                            .optional()
                            .j()?;
                        if let Some((reason, attempts)) = d {
                            dead.insert(
                                (sink.clone(), *oseq),
                                (reason, u32::try_from(attempts).unwrap_or(u32::MAX)),
                            );
                        }
                        let r = retry_st
                            .query_row(params![sink, oseq], |r| {
                                Ok((
                                    r.get::<_, i64>(0)?,
                                    r.get::<_, i64>(1)?,
                                    r.get::<_, String>(2)?,
                                ))
                            })
                            .optional()
                            .j()?;
                        if let Some((attempts, next, err)) = r {
                            retrying.insert(
                                (sink.clone(), *oseq),
                                (u32::try_from(attempts).unwrap_or(u32::MAX), next, err),
                            );
                        }
                    }
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
                                None => match retrying.get(&(name.clone(), oseq)) {
                                    Some((attempts, next, err)) => DeliveryStatus::Retrying {
                                        attempts: *attempts,
                                        next_attempt_at: from_ms(*next),
                                        last_error: err.clone(),
                                    },
                                    None if *cursor >= oseq => DeliveryStatus::Delivered,
                                    None => DeliveryStatus::Pending,
                                },
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
}
