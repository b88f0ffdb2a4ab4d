//! Schema and migrations, versioned by `PRAGMA user_version`.

use rusqlite::Connection;

use crate::error::{JournalError, SqlResultExt};

/// The schema version this build writes and understands: one per migration step.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Every migration step, in order: step `i` brings the file from version `i` to `i + 1`. Append
/// new steps at the end (one self-contained step per change); never edit a released one.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10];

/// Version 7: commands (answers, disconnects, unshares, new customers asked of PM through the
/// bridge). A command is journalled before its PM call, so a retried request or a restart finds
/// it and never repeats a call that landed; `attempts` counts the PM calls begun, so a command
/// found unfinished with `attempts > 0` is checked against PM before any new call. Answers
/// remember the command behind them, so a `resolved` event can say who answered.
const V7: &str = r#"
CREATE TABLE commands (
    id          TEXT    PRIMARY KEY,
    environment TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    requester   TEXT,
    origin      TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX commands_unfinished ON commands(state) WHERE state <> 'completed' AND state <> 'failed';
ALTER TABLE answers ADD COLUMN command_id TEXT;
ALTER TABLE answers ADD COLUMN requester TEXT;
"#;

/// Version 10: notification tables keyed by notification id first, and a notification's first
/// event kept in its own row.
/// - Keys that began with two equal strings (environment, account) cost two string comparisons
///   at every step of every seek; the id first decides nearly every comparison by an integer (a
///   fifth of the drain's commit), and `journal history` by id alone seeks instead of scanning.
/// - `event_id`, `event_type`, `event_seq`: the event appended with the notification when both
///   were first committed together (one event per notification, the drain's case): one row per
///   notification instead of two. Events linked later, or found through `data.notificationId`,
///   stay in `notification_events`; history reads both.
const V10: &str = r#"
CREATE TABLE notifications_v10 (
    notification_id INTEGER NOT NULL,
    environment     TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    type_code       TEXT    NOT NULL,
    json            TEXT    NOT NULL,
    first_seen_at   INTEGER NOT NULL,
    first_raw_id    INTEGER NOT NULL,
    event_id        TEXT,
    event_type      TEXT,
    event_seq       INTEGER,
    PRIMARY KEY (notification_id, environment, account)
) WITHOUT ROWID;
INSERT INTO notifications_v10(notification_id, environment, account, type_code, json,
    first_seen_at, first_raw_id)
  SELECT notification_id, environment, account, type_code, json, first_seen_at, first_raw_id
  FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_v10 RENAME TO notifications;

CREATE TABLE notification_raw_v10 (
    notification_id INTEGER NOT NULL,
    environment     TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    raw_id          INTEGER NOT NULL,
    PRIMARY KEY (notification_id, environment, account, raw_id)
) WITHOUT ROWID;
INSERT INTO notification_raw_v10(notification_id, environment, account, raw_id)
  SELECT notification_id, environment, account, raw_id FROM notification_raw;
DROP TABLE notification_raw;
ALTER TABLE notification_raw_v10 RENAME TO notification_raw;

CREATE TABLE notification_events_v10 (
    notification_id INTEGER NOT NULL,
    environment     TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    event_id        TEXT    NOT NULL,
    event_type      TEXT,
    seq             INTEGER,
    PRIMARY KEY (notification_id, environment, account, event_id)
) WITHOUT ROWID;
INSERT INTO notification_events_v10(notification_id, environment, account, event_id,
    event_type, seq)
  SELECT notification_id, environment, account, event_id, event_type, seq
  FROM notification_events;
DROP TABLE notification_events;
ALTER TABLE notification_events_v10 RENAME TO notification_events;
"#;

/// Version 9: outbox pages. The events a drain part appends for its notifications take one
/// outbox row, a page, instead of one row each: `event_json` holds them one per line and `seq`
/// is the last one's sequence number, so the page covers `seq - events + 1 ..= seq` and a cursor
/// still counts events. Every row written before is a page of one. One row per part instead of
/// one per event was the largest share of the drain's commit left (issue 9).
const V9: &str = r#"
ALTER TABLE outbox ADD COLUMN events INTEGER NOT NULL DEFAULT 1;
"#;

/// Version 8: the property cache, beside the customer cache and for the same reasons: what
/// `GET /property/{id}` last answered (the events' `property`, as JSON), per provider account.
const V8: &str = r#"
CREATE TABLE properties (
    environment  TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    property_id  INTEGER NOT NULL,
    data         TEXT    NOT NULL,
    fetched_at   INTEGER NOT NULL,
    PRIMARY KEY (environment, account, property_id)
) WITHOUT ROWID;
"#;

/// Version 6: the customer cache. Who a PM customer is (username, organisation) as
/// `GET /customer/{id}` last answered, per provider account (what PM lets an account read
/// differs), so events can carry it without a PM call each; `fetched_at` drives the TTL.
const V6: &str = r#"
CREATE TABLE customers (
    environment  TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    customer_id  INTEGER NOT NULL,
    username     TEXT,
    organization TEXT,
    fetched_at   INTEGER NOT NULL,
    PRIMARY KEY (environment, account, customer_id)
) WITHOUT ROWID;
"#;

/// Version 5: a notification's events are appended once by their link to the notification
/// (`notification_events`, keyed by notification id: new rows land at the end of the tree)
/// instead of by event id. Event ids are UUIDs, so a unique index on them takes writes all over
/// its pages: for a large burst, several KiB of WAL per event. `event_log` now keeps only the
/// ids of events without a notification (few); history finds a notification's events through
/// the link's `seq`, or `event_log` for events linked before this version.
const V5: &str = r#"
DROP INDEX outbox_event_once;
ALTER TABLE notification_events ADD COLUMN event_type TEXT;
ALTER TABLE notification_events ADD COLUMN seq INTEGER;
"#;

/// Version 4: a body of any size is journalled as it arrives, in chunks, so no process holds
/// a whole PM body in memory. `chunked` bodies keep their bytes in `raw_chunks` (the `body`
/// column is empty); `complete = 0` marks one still arriving, or cut off by a crash or a
/// dropped connection (its bytes are real: what parses in them is committed).
const V4: &str = r#"
CREATE TABLE raw_chunks (
    raw_id INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    data   BLOB    NOT NULL,
    PRIMARY KEY (raw_id, seq)
);
ALTER TABLE raw_bodies ADD COLUMN chunked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE raw_bodies ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
ALTER TABLE raw_bodies ADD COLUMN len INTEGER;
"#;

/// Version 3: per-event retries and endpoint health of sinks that retry each event on its own
/// schedule (webhooks). A retry row carries its event, so outbox compaction never loses it.
const V3: &str = r#"
CREATE TABLE sink_retries (
    sink            TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    event_json      TEXT    NOT NULL,
    enqueued_at     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT    NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
CREATE INDEX sink_retries_due ON sink_retries(sink, next_attempt_at);

CREATE TABLE sink_health (
    sink            TEXT    PRIMARY KEY,
    failing_since   INTEGER,
    disabled_reason TEXT,
    disabled_at     INTEGER
) WITHOUT ROWID;
"#;

/// Version 2: quarantined bytes are recognised by digest (stored once, counted), and one bad
/// `<notification>` of a list is quarantined on its own, pointing at its whole body.
const V2: &str = r#"
ALTER TABLE raw_bodies ADD COLUMN sha256 TEXT;
ALTER TABLE raw_bodies ADD COLUMN seen_count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE raw_bodies ADD COLUMN parent_id INTEGER;
CREATE INDEX raw_bodies_quarantined_digest ON raw_bodies(environment, account, endpoint, sha256)
    WHERE state = 'quarantined';
"#;

/// Version 1. Times are Unix milliseconds.
///
/// - `outbox.seq` is AUTOINCREMENT so a sequence number is never reused after compaction
///   deletes the newest rows; otherwise a cursor could silently skip new events.
/// - `event_log` remembers every event id ever enqueued (not compacted), so idempotent append
///   still holds after the outbox row was compacted away.
/// - `outbox_event_once` makes an untargeted event id unique; replays (`target_sink` set) are
///   exempt so a dead letter can always be re-appended.
const V1: &str = r#"
CREATE TABLE raw_bodies (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    endpoint    TEXT    NOT NULL,
    http_status INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'received' CHECK (state IN ('received','parsed','quarantined')),
    error       TEXT
);
CREATE INDEX raw_bodies_state ON raw_bodies(state, received_at);

CREATE TABLE notifications (
    environment     TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    notification_id INTEGER NOT NULL,
    type_code       TEXT    NOT NULL,
    json            TEXT    NOT NULL,
    first_seen_at   INTEGER NOT NULL,
    first_raw_id    INTEGER NOT NULL,
    PRIMARY KEY (environment, account, notification_id)
) WITHOUT ROWID;

CREATE TABLE notification_raw (
    environment     TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    notification_id INTEGER NOT NULL,
    raw_id          INTEGER NOT NULL,
    PRIMARY KEY (environment, account, notification_id, raw_id)
) WITHOUT ROWID;

CREATE TABLE notification_events (
    environment     TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    notification_id INTEGER NOT NULL,
    event_id        TEXT    NOT NULL,
    PRIMARY KEY (environment, account, notification_id, event_id)
) WITHOUT ROWID;

CREATE TABLE event_log (
    event_id    TEXT    PRIMARY KEY,
    event_type  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    target_sink TEXT,
    event_json  TEXT    NOT NULL,
    enqueued_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX outbox_event_once ON outbox(event_id) WHERE target_sink IS NULL;
CREATE INDEX outbox_replays ON outbox(event_id) WHERE target_sink IS NOT NULL;

CREATE TABLE sinks (
    name          TEXT    PRIMARY KEY,
    cursor        INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sink       TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    event_json TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    failed_at  INTEGER NOT NULL,
    UNIQUE (sink, seq)
);
CREATE INDEX dead_letters_event ON dead_letters(event_id);

CREATE TABLE pending_snapshots (
    environment TEXT NOT NULL,
    account     TEXT NOT NULL,
    list        TEXT NOT NULL,
    item_key    TEXT NOT NULL,
    json        TEXT NOT NULL,
    PRIMARY KEY (environment, account, list, item_key)
) WITHOUT ROWID;

CREATE TABLE answers (
    environment TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    id          INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    answered_at INTEGER NOT NULL,
    PRIMARY KEY (environment, account, kind, id)
) WITHOUT ROWID;

CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
"#;

/// Bring the file up to [`SCHEMA_VERSION`], one version per transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), JournalError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .j()?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction().j()?;
        tx.execute_batch(step).j()?;
        tx.pragma_update(None, "user_version", i as i64 + 1).j()?;
        tx.commit().j()?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Journal, NotificationEntry, Scope};
    use espm_events::CloudEvent;

    /// A small notification event (`data.notificationId` only).
    pub(crate) fn event(id: &str, notification_id: i64) -> CloudEvent {
        CloudEvent {
            specversion: "1.0".into(),
            id: id.into(),
            source: "espm://sim/acme".into(),
            ty: "gov.energystar.pm.share.revoked".into(),
            subject: None,
            time: None,
            datacontenttype: "application/json".into(),
            dataschema: "https://example.invalid/s.json".into(),
            espmenvironment: "sim".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: serde_json::json!({ "notificationId": notification_id }).into(),
        }
    }

    /// An UNSHARE notification's journal entry.
    pub(crate) fn unshare(id: i64) -> NotificationEntry {
        NotificationEntry {
            notification_id: id,
            type_code: "UNSHARE".into(),
            json: "{}".into(),
        }
    }

    /// A journal written by a version-4 build (event appended by event id, linked without a
    /// seq) still appends that event once after the upgrade, and its history still finds it.
    #[test]
    fn events_appended_before_v5_are_not_appended_again_and_keep_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            for (i, step) in MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(step).unwrap();
                conn.pragma_update(None, "user_version", i as i64 + 1)
                    .unwrap();
            }
            let json = serde_json::to_string(&event("ev-old", 7)).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(&format!(
                "INSERT INTO notifications VALUES ('sim', 'acme', 7, 'UNSHARE', '{{}}', 1, 1);
                 INSERT INTO outbox(event_id, event_type, target_sink, event_json, enqueued_at)
                   VALUES ('ev-old', 'gov.energystar.pm.share.revoked', NULL, '{json}', 1);
                 INSERT INTO event_log VALUES ('ev-old', 'gov.energystar.pm.share.revoked', 1, 1);
                 INSERT INTO notification_events VALUES ('sim', 'acme', 7, 'ev-old');"
            ))
            .unwrap();
            tx.commit().unwrap();
        }

        let j = Journal::open(&path).unwrap();
        let scope = Scope::new("sim", "acme");
        let raw = j
            .record_raw(&scope, "notification/list", 200, b"<x/>")
            .unwrap();
        let stats = j
            .commit_notifications(
                &scope,
                raw,
                &[unshare(7), unshare(8)],
                &[event("ev-old", 7), event("ev-new", 8)],
            )
            .unwrap();
        assert_eq!(
            stats.new_events, 1,
            "only the event of notification 8 is new"
        );
        assert_eq!(j.head_seq().unwrap(), 2);
        // Committing the same part again (a crash before the body was marked parsed) adds nothing.
        let again = j
            .commit_notifications(&scope, raw, &[unshare(8)], &[event("ev-new", 8)])
            .unwrap();
        assert_eq!(again.new_events, 0);
        assert_eq!(j.head_seq().unwrap(), 2);

        let old = j.notification_history(Some(&scope), 7).unwrap();
        assert_eq!(old[0].events.len(), 1);
        assert_eq!(
            (old[0].events[0].event_id.as_str(), old[0].events[0].seq),
            ("ev-old", 1)
        );
        let new = j.notification_history(Some(&scope), 8).unwrap();
        assert_eq!(new[0].events.len(), 1);
        assert_eq!(
            (new[0].events[0].event_id.as_str(), new[0].events[0].seq),
            ("ev-new", 2)
        );
        assert_eq!(
            new[0].events[0].event_type,
            "gov.energystar.pm.share.revoked"
        );
    }

    /// A version-9 journal (notification tables keyed by scope first, every event linked in
    /// `notification_events`) keeps its notifications, bodies and links through version 10:
    /// history is unchanged, a stored event is not appended again, and a new one is.
    #[test]
    fn a_v9_journal_keeps_notifications_and_links_in_v10() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let json = serde_json::to_string(&event("ev-7", 7)).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            for (i, step) in MIGRATIONS[..9].iter().enumerate() {
                conn.execute_batch(step).unwrap();
                conn.pragma_update(None, "user_version", i as i64 + 1)
                    .unwrap();
            }
            conn.execute_batch(&format!(
                "INSERT INTO raw_bodies(environment, account, endpoint, http_status, body, received_at, state)
                   VALUES ('sim', 'acme', 'notification/list', 200, x'00', 1, 'parsed');
                 INSERT INTO raw_bodies(environment, account, endpoint, http_status, body, received_at, state)
                   VALUES ('sim', 'acme', 'notification/list', 200, x'00', 2, 'parsed');
                 INSERT INTO notifications VALUES ('sim', 'acme', 7, 'UNSHARE', '{{\"id\":7}}', 1, 1);
                 INSERT INTO notifications VALUES ('sim', 'other', 7, 'UNSHARE', '{{}}', 1, 1);
                 INSERT INTO notification_raw VALUES ('sim', 'acme', 7, 2);
                 INSERT INTO outbox(seq, event_id, event_type, target_sink, event_json, enqueued_at, events)
                   VALUES (1, 'ev-7', 'gov.energystar.pm.share.revoked', NULL, '{json}', 1, 1);
                 INSERT INTO notification_events VALUES ('sim', 'acme', 7, 'ev-7', 'gov.energystar.pm.share.revoked', 1);"
            ))
            .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let scope = Scope::new("sim", "acme");
        let history = j.notification_history(Some(&scope), 7).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].json, serde_json::json!({ "id": 7 }));
        assert_eq!(history[0].raw_ids, [crate::RawId(1), crate::RawId(2)]);
        let events: Vec<(&str, i64)> = history[0]
            .events
            .iter()
            .map(|e| (e.event_id.as_str(), e.seq))
            .collect();
        assert_eq!(events, [("ev-7", 1)]);
        assert_eq!(j.notification_history(None, 7).unwrap().len(), 2);
        assert_eq!(j.known_notifications(&scope, &[6, 7]).unwrap(), [7].into());

        let raw = j
            .record_raw(&scope, "notification/list", 200, b"<x/>")
            .unwrap();
        let stats = j
            .commit_paired_part(
                &scope,
                raw,
                &[unshare(7), unshare(8)],
                &[event("ev-7", 7), event("ev-8", 8)],
                true,
            )
            .unwrap();
        assert_eq!((stats.new_notifications, stats.new_events), (1, 1));
        assert_eq!(j.head_seq().unwrap(), 2);
        let eight = j.notification_history(Some(&scope), 8).unwrap();
        assert_eq!(eight[0].events[0].event_id, "ev-8");
        assert_eq!(eight[0].events[0].seq, 2);
    }

    /// A version-5 journal gains the customer cache, empty, and keeps what it had.
    #[test]
    fn a_v5_journal_gains_the_customer_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let conn = Connection::open(&path).unwrap();
            for (i, step) in MIGRATIONS[..5].iter().enumerate() {
                conn.execute_batch(step).unwrap();
                conn.pragma_update(None, "user_version", i as i64 + 1)
                    .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO answers VALUES ('sim', 'acme', 'connection', 7, 'accepted', 1);",
            )
            .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let scope = Scope::new("sim", "acme");
        assert_eq!(
            j.answer_for(&scope, "connection", 7).unwrap().as_deref(),
            Some("accepted")
        );
        assert!(j.cached_customers(&scope, &[7]).unwrap().is_empty());
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 10);
        assert!(j.cached_properties(&scope, &[5]).unwrap().is_empty());
    }
}
