//! Parsed notifications: deduplicated, linked to their raw bodies and events.

#[allow(unused_imports)]
use super::*;

/// One parsed PM notification, as stored for deduplication and history.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEntry {
    /// PM's notification id (unique per environment and account).
    pub notification_id: i64,
    /// PM's notification type code (e.g. `SHARE_UPDATE`).
    pub type_code: String,
    /// The parsed notification as JSON, kept for history and re-normalisation (encoded by the
    /// caller straight from the model: no `Value` tree per notification).
    pub json: String,
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

/// The notification an event belongs to: `data.notificationId` when it names one of `items`,
/// otherwise the only item of a single-item commit.
pub(crate) fn linked_notification(
    event: &CloudEvent,
    items: &[NotificationEntry],
    ids: &std::collections::HashSet<i64>,
) -> Option<i64> {
    // One member read from the text, without parsing the rest of `data` (per event of a burst).
    let member = event.data.members(&["notificationId"]).into_iter().next();
    let from_data = member.flatten().and_then(|v| match v {
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
    /// Which of `ids` are stored for `scope` already (their events were committed with them):
    /// the clear of peek-then-clear need not enrich them again.
    ///
    /// One range scan from the smallest id to the largest, not a lookup per id: a part of a
    /// burst names hundreds of SHAREUPDATEs, PM's ids rise, and a fresh burst's range is empty.
    /// Ids far apart (an old notification listed again beside new ones) are looked up one by
    /// one instead, so the scan never walks an account's history.
    pub fn known_notifications(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<std::collections::HashSet<i64>, JournalError> {
        let mut known = std::collections::HashSet::new();
        let (Some(&lo), Some(&hi)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(known);
        };
        let conn = self.reader();
        let dense = (hi as i128 - lo as i128) <= 4 * ids.len() as i128 + 1_000;
        if !dense {
            let mut st = conn
                .prepare_cached(
                    "SELECT 1 FROM notifications WHERE notification_id = ?1 AND environment = ?2 \
                     AND account = ?3",
                )
                .j()?;
            for id in ids {
                if st
                    .exists(params![id, scope.environment, scope.account])
                    .j()?
                {
                    known.insert(*id);
                }
            }
            return Ok(known);
        }
        let asked: std::collections::HashSet<i64> = ids.iter().copied().collect();
        let mut st = conn
            .prepare_cached(
                "SELECT notification_id FROM notifications WHERE notification_id BETWEEN ?1 AND ?2 \
                 AND environment = ?3 AND account = ?4",
            )
            .j()?;
        let mut rows = st
            .query(params![lo, hi, scope.environment, scope.account])
            .j()?;
        while let Some(row) = rows.next().j()? {
            let id: i64 = row.get(0).j()?;
            if asked.contains(&id) {
                known.insert(id);
            }
        }
        Ok(known)
    }

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
    /// [`Journal::unprocessed_raw`] (re-committing the earlier parts is idempotent). Committed
    /// without waiting for the disk, as everything here is derived from `raw`, which is on disk
    /// already (see the crate documentation).
    pub fn commit_notifications_part(
        &self,
        scope: &Scope,
        raw: RawId,
        items: &[NotificationEntry],
        events: &[CloudEvent],
        last: bool,
    ) -> Result<CommitStats, JournalError> {
        // A set, not a scan: one drain can hold tens of thousands of notifications.
        let ids: std::collections::HashSet<i64> = items.iter().map(|i| i.notification_id).collect();
        self.commit_part(scope, raw, items, events, last, false, &|_, ev| {
            linked_notification(ev, items, &ids)
        })
    }

    /// [`Journal::commit_notifications_part`] for events built one per notification, in order:
    /// `events[i]` is the event of `items[i]`, so no event's `data` is read to find its
    /// notification (5% of a drain's instructions). Anything else goes the general way.
    pub fn commit_paired_part(
        &self,
        scope: &Scope,
        raw: RawId,
        items: &[NotificationEntry],
        events: &[CloudEvent],
        last: bool,
    ) -> Result<CommitStats, JournalError> {
        if items.len() != events.len() {
            return self.commit_notifications_part(scope, raw, items, events, last);
        }
        self.commit_part(scope, raw, items, events, last, true, &|i, _| {
            Some(items[i].notification_id)
        })
    }

    /// The commit of a part: `owner(i, event)` names the notification `events[i]` belongs to.
    /// With `paired` (`events[i]` is the event of `items[i]`), a notification stored for the
    /// first time keeps its event in its own row (schema version 10): one row, not two.
    #[allow(clippy::too_many_arguments)]
    fn commit_part(
        &self,
        scope: &Scope,
        raw: RawId,
        items: &[NotificationEntry],
        events: &[CloudEvent],
        last: bool,
        paired: bool,
        owner: &dyn Fn(usize, &CloudEvent) -> Option<i64>,
    ) -> Result<CommitStats, JournalError> {
        let now = now_ms();
        // The body they come from is committed durably already (`record_raw`, `finish_raw`).
        self.write_relaxed(|tx| {
            let mut stats = CommitStats::default();
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notifications(notification_id, environment, account, \
                         type_code, json, first_seen_at, first_raw_id, event_id, event_type, event_seq) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )
                    .j()?;
                let mut link = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notification_raw(notification_id, environment, account, raw_id) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .j()?;
                // The part's new events, appended as one page (one row, whatever the part's
                // size) numbered from `first`, and the links of those not kept in their
                // notification's row.
                let first = outbox_head(tx)? + 1;
                let mut page: Vec<&CloudEvent> = Vec::new();
                let mut links: Vec<(i64, usize)> = Vec::new();
                // Notifications first stored by this transaction: none of their events can be in
                // the outbox yet, so their links need no lookup (two of five statements per
                // notification saved on a burst, where every notification is new).
                let mut fresh = std::collections::HashSet::with_capacity(items.len());
                // (notification, event) pairs appended by this transaction, for a notification
                // listed twice in one body.
                let mut appended = std::collections::HashSet::new();
                // Events already appended in their notification's row.
                let mut carried = vec![false; events.len()];
                for (i, item) in items.iter().enumerate() {
                    let event = if paired { events.get(i) } else { None };
                    let seq = first + page.len() as i64;
                    let n = ins
                        .execute(params![
                            item.notification_id,
                            scope.environment,
                            scope.account,
                            item.type_code,
                            item.json,
                            now,
                            raw.0,
                            event.map(|e| e.id.as_str()),
                            event.map(|e| e.ty.as_str()),
                            event.map(|_| seq),
                        ])
                        .j()?;
                    if n == 1 {
                        stats.new_notifications += 1;
                        // `first_raw_id` names this body; `notification_raw` holds the others.
                        fresh.insert(item.notification_id);
                        if let Some(ev) = event {
                            page.push(ev);
                            appended.insert((item.notification_id, ev.id.as_str()));
                            carried[i] = true;
                        }
                    } else {
                        stats.duplicate_notifications += 1;
                        link.execute(params![
                            item.notification_id,
                            scope.environment,
                            scope.account,
                            raw.0
                        ])
                        .j()?;
                    }
                }
                let mut linked = tx
                    .prepare_cached(
                        "SELECT 1 FROM notification_events WHERE notification_id = ?1 \
                         AND environment = ?2 AND account = ?3 AND event_id = ?4 \
                         UNION ALL SELECT 1 FROM notifications WHERE notification_id = ?1 \
                         AND environment = ?2 AND account = ?3 AND event_id = ?4",
                    )
                    .j()?;
                let mut ev_link = tx
                    .prepare_cached(
                        "INSERT INTO notification_events(notification_id, environment, account, \
                         event_id, event_type, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .j()?;
                let mut unlinked = Vec::new();
                for (i, ev) in events.iter().enumerate() {
                    if carried[i] {
                        continue;
                    }
                    let Some(nid) = owner(i, ev) else {
                        unlinked.push(ev.clone());
                        continue;
                    };
                    if fresh.contains(&nid) {
                        if !appended.insert((nid, ev.id.as_str())) {
                            continue;
                        }
                    } else {
                        let key = params![nid, scope.environment, scope.account, ev.id];
                        // Appended by an earlier commit (before version 5 too: the link was
                        // always written with the event).
                        if linked.exists(key).j()? || !appended.insert((nid, ev.id.as_str())) {
                            continue;
                        }
                    }
                    links.push((nid, page.len()));
                    page.push(ev);
                }
                let start = insert_page(tx, &page, now)?;
                if start != first {
                    // Nothing else writes inside this transaction.
                    return Err(JournalError::Corrupt(format!(
                        "outbox page numbered from {start}, expected {first}"
                    )));
                }
                stats.new_events += page.len();
                for (nid, at) in links {
                    let ev = page[at];
                    ev_link
                        .execute(params![
                            nid,
                            scope.environment,
                            scope.account,
                            ev.id,
                            ev.ty,
                            first + at as i64
                        ])
                        .j()?;
                }
                stats.new_events += append_events(tx, &unlinked, now)?;
            }
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
}

#[cfg(test)]
mod tests {
    use crate::{Journal, NotificationEntry, RawId, Scope};

    /// A fresh journal holding one small body of `sim`/`acme`.
    fn journal_with_body() -> (tempfile::TempDir, Journal, Scope, RawId) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let scope = Scope::new("sim", "acme");
        let raw = j
            .record_raw(&scope, "notification/list", 200, b"<x/>")
            .unwrap();
        (dir, j, scope, raw)
    }

    fn entry(id: i64, type_code: &str) -> NotificationEntry {
        NotificationEntry {
            notification_id: id,
            type_code: type_code.into(),
            json: format!("{{\"id\":{id}}}"),
        }
    }

    /// The notifications committed for one scope, and only those, are known.
    #[test]
    fn known_notifications_are_those_committed_for_the_scope() {
        let (_dir, j, scope, raw) = journal_with_body();
        assert!(j.known_notifications(&scope, &[7]).unwrap().is_empty());
        j.commit_notifications(&scope, raw, &[entry(7, "SHAREUPDATE")], &[])
            .unwrap();
        let known = j.known_notifications(&scope, &[7, 8]).unwrap();
        assert_eq!(known, [7].into());
        let other = Scope::new("sim", "other");
        assert!(j.known_notifications(&other, &[7]).unwrap().is_empty());
    }

    /// Events paired with their notifications by position are stored and linked exactly as
    /// those found through `data.notificationId`, including a notification listed twice.
    #[test]
    fn paired_parts_commit_what_linking_through_data_commits() {
        let event = |id: i64| {
            let mut ev = crate::schema::tests::event(&format!("ev-{id}"), id);
            ev.ty = "t".into();
            ev
        };
        let ids = [4, 5, 4, 9];
        let items: Vec<_> = ids.iter().map(|&i| entry(i, "UNSHARE")).collect();
        let events: Vec<_> = ids.iter().map(|&i| event(i)).collect();
        let rows = |paired: bool| {
            let (_dir, j, scope, raw) = journal_with_body();
            let commit = |range: std::ops::Range<usize>, last: bool| {
                let (items, events) = (&items[range.clone()], &events[range]);
                if paired {
                    j.commit_paired_part(&scope, raw, items, events, last)
                } else {
                    j.commit_notifications_part(&scope, raw, items, events, last)
                }
                .unwrap()
            };
            let (first, second) = (commit(0..2, false), commit(2..4, true));
            // What history tells of each notification's events, wherever the link is kept.
            let mut links: Vec<(i64, String, String, i64)> = Vec::new();
            for id in [4, 5, 9] {
                for entry in j.notification_history(Some(&scope), id).unwrap() {
                    for e in entry.events {
                        links.push((id, e.event_id, e.event_type, e.seq));
                    }
                }
            }
            links.sort_by_key(|l| l.3);
            (first, second, links)
        };
        let (paired, by_data) = (rows(true), rows(false));
        assert_eq!(paired, by_data);
        assert_eq!(paired.2.len(), 3, "ev-4 once, ev-5, ev-9: {:?}", paired.2);
        assert_eq!(paired.0.new_events + paired.1.new_events, 3);
    }

    /// A burst's notification keeps its event in its own row (no link row): committing the
    /// same part again appends nothing, a new event for a stored notification is linked, and
    /// history shows both in outbox order.
    #[test]
    fn paired_events_live_in_their_notification_row_and_are_appended_once() {
        let (_dir, j, scope, raw) = journal_with_body();
        let event = |id: &str, nid: i64| crate::schema::tests::event(id, nid);
        let items = [
            entry(1, "UNSHARE"),
            entry(2, "UNSHARE"),
            entry(3, "UNSHARE"),
        ];
        let events = [event("ev-1", 1), event("ev-2", 2), event("ev-3", 3)];
        let first = j
            .commit_paired_part(&scope, raw, &items, &events, false)
            .unwrap();
        assert_eq!((first.new_notifications, first.new_events), (3, 3));
        let link_rows = |j: &Journal| -> i64 {
            j.reader()
                .query_row("SELECT count(*) FROM notification_events", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(link_rows(&j), 0, "one row per notification");
        // A crash before the body was marked parsed: the part is committed again.
        let again = j
            .commit_paired_part(&scope, raw, &items, &events, true)
            .unwrap();
        assert_eq!((again.duplicate_notifications, again.new_events), (3, 0));
        assert_eq!(j.head_seq().unwrap(), 3);
        // A later body names notification 2 again, with an event of a newer version.
        let later = j
            .commit_paired_part(&scope, raw, &items[1..2], &[event("ev-2b", 2)], true)
            .unwrap();
        assert_eq!(later.new_events, 1);
        assert_eq!(link_rows(&j), 1);
        let history = j.notification_history(Some(&scope), 2).unwrap();
        let seen: Vec<(&str, i64)> = history[0]
            .events
            .iter()
            .map(|e| (e.event_id.as_str(), e.seq))
            .collect();
        assert_eq!(seen, [("ev-2", 2), ("ev-2b", 4)]);
        let outbox: Vec<String> = j
            .read_outbox("s", 0, 10)
            .unwrap()
            .iter()
            .map(|r| r.event.id.clone())
            .collect();
        assert_eq!(outbox, ["ev-1", "ev-2", "ev-3", "ev-2b"]);
    }

    /// Stored notifications between the ids asked about are not answered; the ends of the
    /// range are; the order of the ids asked does not matter.
    #[test]
    fn known_notifications_answers_only_the_ids_asked() {
        let (_dir, j, scope, raw) = journal_with_body();
        let entries: Vec<NotificationEntry> = [3, 5, 6, 9, 12]
            .into_iter()
            .map(|id| entry(id, "SHAREUPDATE"))
            .collect();
        j.commit_notifications(&scope, raw, &entries, &[]).unwrap();
        assert_eq!(
            j.known_notifications(&scope, &[12, 4, 3, 6, 13]).unwrap(),
            [3, 6, 12].into()
        );
        assert!(j.known_notifications(&scope, &[]).unwrap().is_empty());
        assert_eq!(j.known_notifications(&scope, &[9, 9]).unwrap(), [9].into());
        // Far apart: looked up one by one, same answer.
        assert_eq!(
            j.known_notifications(&scope, &[i64::MIN, 5, 4, i64::MAX])
                .unwrap(),
            [5].into()
        );
    }
}
