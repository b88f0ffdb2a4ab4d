//! Raw PM response bodies: journalled before parsing, quarantined when they do not parse.

#[allow(unused_imports)]
use super::*;

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
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// How often PM handed out these exact bytes (stored once).
    pub seen_count: u64,
    /// For one bad `<notification>` cut out of a list: the whole body's id.
    pub fragment_of: Option<RawId>,
}

/// What [`Journal::quarantine`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineOutcome {
    /// Stored under this id, with its event.
    Stored(RawId),
    /// The same bytes were already quarantined under this id: counted, no new event.
    Duplicate(RawId),
}

/// One stored raw body and where it came from (see [`Journal::stored_body`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBody {
    /// Its id.
    pub id: RawId,
    /// The account it was polled for.
    pub scope: Scope,
    /// The endpoint it came from, as recorded.
    pub endpoint: String,
    /// HTTP status.
    pub http_status: u16,
    /// The bytes.
    pub body: Vec<u8>,
    /// `received`, `parsed` or `quarantined`.
    pub state: String,
    /// For a quarantined part of a list: the whole body's id.
    pub fragment_of: Option<RawId>,
}

/// SHA-256 of some bytes, lowercase hex: how quarantined bodies are recognised and named.
pub fn body_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// If `digest` is already quarantined for this account (other than `except`), count one more
/// sighting and return it. The endpoint does not matter: a peek and a clear of the same poison
/// notification are the same bytes.
fn bump_duplicate(
    tx: &Transaction<'_>,
    environment: &str,
    account: &str,
    digest: &str,
    except: RawId,
) -> Result<Option<QuarantineOutcome>, JournalError> {
    let first: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM raw_bodies WHERE environment = ?1 AND account = ?2 \
             AND sha256 = ?3 AND state = 'quarantined' AND id != ?4 ORDER BY id LIMIT 1",
        )
        .j()?
        .query_row(params![environment, account, digest, except.0], |r| {
            r.get(0)
        })
        .optional()
        .j()?;
    let Some(first) = first else { return Ok(None) };
    tx.prepare_cached("UPDATE raw_bodies SET seen_count = seen_count + 1 WHERE id = ?1")
        .j()?
        .execute([first])
        .j()?;
    Ok(Some(QuarantineOutcome::Duplicate(RawId(first))))
}

pub(crate) fn mark_parsed(tx: &Transaction<'_>, raw_ids: &[RawId]) -> Result<(), JournalError> {
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

impl Journal {
    /// Journal a raw PM response body. It is committed to disk before this returns, so it is
    /// safe to parse it (and, for a drain, to consider it received) afterwards.
    pub fn record_raw(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        body: &[u8],
    ) -> Result<RawId, JournalError> {
        self.record_raw_at(scope, endpoint, http_status, body, now_ms())
    }

    /// [`Journal::record_raw`] with the time it was received (Unix ms), for a spooled body.
    pub fn record_raw_at(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        body: &[u8],
        received_at_ms: i64,
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
                received_at_ms
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
                "SELECT id, endpoint, http_status FROM raw_bodies \
                 WHERE environment = ?1 AND account = ?2 AND state = 'received' ORDER BY id",
            )
            .j()?;
        let rows = st
            .query_map(params![scope.environment, scope.account], |r| {
                Ok(UnprocessedBody {
                    id: RawId(r.get(0)?),
                    endpoint: r.get(1)?,
                    http_status: r.get(2)?,
                    body: Vec::new(),
                })
            })
            .j()?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.j()?);
        }
        drop(st);
        for b in &mut out {
            b.body = crate::chunks::whole_body(&conn, b.id)?.unwrap_or_default();
        }
        Ok(out)
    }

    /// Mark a raw body processed without committing anything from it (e.g. a pending-list page
    /// whose walk was interrupted: the next walk reads the list again).
    pub fn mark_raw_processed(&self, raw: RawId) -> Result<(), JournalError> {
        self.write(|tx| mark_parsed(tx, &[raw]))
    }

    /// Quarantine a raw body that does not parse, and append its `body_quarantined` event (built
    /// by `event` from the stored id and the bytes' digest), in one transaction: a crash can lose neither the state nor the only signal. Its bytes are
    /// kept (never compacted) for an operator and `journal reprocess`.
    ///
    /// Bytes identical to a body already quarantined for the same account are
    /// stored once: this row is deleted, the first one's count goes up, and no second event is
    /// appended.
    pub fn quarantine(
        &self,
        raw: RawId,
        error: &str,
        event: impl FnOnce(RawId, &str) -> CloudEvent,
    ) -> Result<QuarantineOutcome, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            let row = tx
                .prepare_cached("SELECT environment, account FROM raw_bodies WHERE id = ?1")
                .j()?
                .query_row([raw.0], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .optional()
                .j()?;
            let Some((environment, account)) = row else {
                return Err(JournalError::NotFound {
                    what: "raw body",
                    id: raw.0,
                });
            };
            // Streamed: a quarantined body may be larger than memory.
            let digest = crate::chunks::stored_digest(tx, raw)?;
            if let Some(first) = bump_duplicate(tx, &environment, &account, &digest, raw)? {
                crate::chunks::delete_raw(tx, raw)?;
                return Ok(first);
            }
            tx.prepare_cached(
                "UPDATE raw_bodies SET state = 'quarantined', error = ?2, sha256 = ?3 WHERE id = ?1",
            )
            .j()?
            .execute(params![raw.0, error, digest])
            .j()?;
            append_events(tx, &[event(raw, &digest)], now)?;
            Ok(QuarantineOutcome::Stored(raw))
        })
    }

    /// Quarantine one bad part (`bytes`, e.g. a `<notification>` element) of raw body `parent`,
    /// whose good parts are committed separately, with its event, in one transaction. Identical
    /// bytes already quarantined for the same account and endpoint are counted, not stored again.
    pub fn quarantine_fragment(
        &self,
        parent: RawId,
        endpoint: &str,
        bytes: &[u8],
        error: &str,
        event: impl FnOnce(RawId, &str) -> CloudEvent,
    ) -> Result<QuarantineOutcome, JournalError> {
        let now = now_ms();
        let digest = body_digest(bytes);
        self.write(|tx| {
            let (environment, account, http_status): (String, String, u16) = tx
                .prepare_cached("SELECT environment, account, http_status FROM raw_bodies WHERE id = ?1")
                .j()?
                .query_row([parent.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .j()?
                .ok_or(JournalError::NotFound {
                    what: "raw body",
                    id: parent.0,
                })?;
            if let Some(first) = bump_duplicate(tx, &environment, &account, &digest, RawId(-1))? {
                return Ok(first);
            }
            tx.prepare_cached(
                "INSERT INTO raw_bodies(environment, account, endpoint, http_status, body, received_at, \
                 state, error, sha256, parent_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'quarantined', ?7, ?8, ?9)",
            )
            .j()?
            .execute(params![environment, account, endpoint, http_status, bytes, now, error, digest, parent.0])
            .j()?;
            let id = RawId(tx.last_insert_rowid());
            append_events(tx, &[event(id, &digest)], now)?;
            Ok(QuarantineOutcome::Stored(id))
        })
    }

    /// Put a quarantined body back to `received`, so the poller parses it again (after an upgrade
    /// that reads it). Returns it; deterministic event ids make a second success a no-op.
    pub fn requeue_quarantined(&self, raw: RawId) -> Result<StoredBody, JournalError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE raw_bodies SET state = 'received' WHERE id = ?1 AND state = 'quarantined'",
                )
                .j()?
                .execute([raw.0])
                .j()?;
            if n == 0 {
                return Err(JournalError::NotFound {
                    what: "quarantined body",
                    id: raw.0,
                });
            }
            Ok(())
        })?;
        self.stored_body(raw)?.ok_or(JournalError::NotFound {
            what: "raw body",
            id: raw.0,
        })
    }

    /// Ids of the bodies of `scope` journalled but never parsed nor quarantined, oldest first.
    pub fn unprocessed_raw_ids(&self, scope: &Scope) -> Result<Vec<RawId>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT id FROM raw_bodies \
                 WHERE environment = ?1 AND account = ?2 AND state = 'received' ORDER BY id",
            )
            .j()?;
        let rows = st
            .query_map(params![scope.environment, scope.account], |r| {
                Ok(RawId(r.get(0)?))
            })
            .j()?;
        rows.collect::<Result<_, _>>().j()
    }

    /// One stored body with where it came from.
    pub fn stored_body(&self, id: RawId) -> Result<Option<StoredBody>, JournalError> {
        let Some(info) = self.raw_info(id)? else {
            return Ok(None);
        };
        let body = crate::chunks::whole_body(&self.reader(), id)?.unwrap_or_default();
        Ok(Some(StoredBody {
            id: info.id,
            scope: info.scope,
            endpoint: info.endpoint,
            http_status: info.http_status,
            body,
            state: info.state,
            fragment_of: info.fragment_of,
        }))
    }

    /// Every quarantined body, oldest first (without the bytes).
    pub fn quarantine_list(&self) -> Result<Vec<QuarantinedBody>, JournalError> {
        let conn = self.reader();
        let mut st = conn
            .prepare_cached(
                "SELECT id, environment, account, endpoint, http_status, received_at, COALESCE(len, length(body)), \
                 COALESCE(error, ''), COALESCE(sha256, ''), seen_count, parent_id \
                 FROM raw_bodies WHERE state = 'quarantined' ORDER BY id",
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
                    sha256: r.get(8)?,
                    seen_count: r.get::<_, i64>(9)?.max(1) as u64,
                    fragment_of: r.get::<_, Option<i64>>(10)?.map(RawId),
                })
            })
            .j()?;
        rows.collect::<Result<_, _>>().j()
    }

    /// The bytes of a raw body, if it exists (and was not compacted).
    pub fn raw_body(&self, id: RawId) -> Result<Option<Vec<u8>>, JournalError> {
        crate::chunks::whole_body(&self.reader(), id)
    }
}
