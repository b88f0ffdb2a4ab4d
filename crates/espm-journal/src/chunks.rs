//! Bodies journalled as they arrive, in chunks, and read back as a stream: no process holds a
//! whole PM body in memory, whatever its size (schema version 4).

use std::io::{BufRead, Read};

#[allow(unused_imports)]
use super::*;

/// Where a raw body came from and how far it got (see [`Journal::raw_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInfo {
    /// Its id.
    pub id: RawId,
    /// The account it was polled for.
    pub scope: Scope,
    /// The endpoint it came from, as recorded.
    pub endpoint: String,
    /// HTTP status.
    pub http_status: u16,
    /// `received`, `parsed` or `quarantined`.
    pub state: String,
    /// False while it arrives, and for ever when the transfer broke off (a dropped connection,
    /// a crash): its bytes are then a truncated body.
    pub complete: bool,
    /// Bytes stored.
    pub len: u64,
    /// For a quarantined part of a list: the whole body's id.
    pub fragment_of: Option<RawId>,
}

impl Journal {
    /// Start journalling a body that arrives in parts, with its first part (may be empty). The
    /// part is on disk when this returns; the body counts as received but not complete.
    pub fn begin_raw(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        first: &[u8],
    ) -> Result<RawId, JournalError> {
        let now = now_ms();
        self.write(|tx| {
            let id = insert_chunked(tx, scope, endpoint, http_status, now, first.len())?;
            insert_chunk(tx, id, 0, first)?;
            Ok(id)
        })
    }

    /// Append part `seq` (1, 2, …) of a body begun with [`Journal::begin_raw`]; on disk when
    /// this returns.
    pub fn append_raw(&self, raw: RawId, seq: i64, data: &[u8]) -> Result<(), JournalError> {
        self.write(|tx| {
            insert_chunk(tx, raw, seq, data)?;
            tx.prepare_cached("UPDATE raw_bodies SET len = len + ?2 WHERE id = ?1")
                .j()?
                .execute(params![raw.0, data.len() as i64])
                .j()?;
            Ok(())
        })
    }

    /// Mark a body begun with [`Journal::begin_raw`] complete: every byte PM sent is stored.
    pub fn finish_raw(&self, raw: RawId) -> Result<(), JournalError> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE raw_bodies SET complete = 1 WHERE id = ?1")
                .j()?
                .execute([raw.0])
                .j()?;
            Ok(())
        })
    }

    /// Delete a body that was still arriving (`complete = 0`, unprocessed) once a whole copy
    /// of it is journalled another way; anything else is left alone.
    pub fn discard_partial_raw(&self, raw: RawId) -> Result<(), JournalError> {
        self.write(|tx| {
            let partial: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM raw_bodies WHERE id = ?1 AND complete = 0 AND state = 'received'",
                )
                .j()?
                .query_row([raw.0], |r| r.get(0))
                .optional()
                .j()?;
            if partial.is_some() {
                delete_raw(tx, raw)?;
            }
            Ok(())
        })
    }

    /// Journal a whole body read from `input` (a spooled file) in one transaction, chunk by
    /// chunk, with the time it was received; `supersedes` names a partial copy of the same body
    /// that is deleted in the same transaction. Memory holds one chunk.
    pub fn record_raw_from(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        input: &mut dyn Read,
        received_at_ms: i64,
        supersedes: Option<RawId>,
    ) -> Result<RawId, JournalError> {
        self.write(|tx| {
            if let Some(old) = supersedes {
                delete_raw(tx, old)?;
            }
            let id = insert_chunked(tx, scope, endpoint, http_status, received_at_ms, 0)?;
            let mut chunk = vec![0u8; CHUNK];
            let (mut seq, mut len) = (0i64, 0i64);
            loop {
                let n = read_full(input, &mut chunk).map_err(JournalError::from_io)?;
                if n == 0 && seq > 0 {
                    break;
                }
                insert_chunk(tx, id, seq, &chunk[..n])?;
                seq += 1;
                len += n as i64;
                if n < CHUNK {
                    break;
                }
            }
            tx.prepare_cached("UPDATE raw_bodies SET complete = 1, len = ?2 WHERE id = ?1")
                .j()?
                .execute(params![id.0, len])
                .j()?;
            Ok(id)
        })
    }

    /// Where a raw body came from and how far it got.
    pub fn raw_info(&self, id: RawId) -> Result<Option<RawInfo>, JournalError> {
        let conn = self.reader();
        let info = conn
            .prepare_cached(
                "SELECT id, environment, account, endpoint, http_status, state, complete, \
                 COALESCE(len, length(body)), parent_id FROM raw_bodies WHERE id = ?1",
            )
            .j()?
            .query_row([id.0], |r| {
                Ok(RawInfo {
                    id: RawId(r.get(0)?),
                    scope: Scope::new(r.get::<_, String>(1)?, r.get::<_, String>(2)?),
                    endpoint: r.get(3)?,
                    http_status: r.get(4)?,
                    state: r.get(5)?,
                    complete: r.get::<_, i64>(6)? != 0,
                    len: r.get::<_, i64>(7)?.max(0) as u64,
                    fragment_of: r.get::<_, Option<i64>>(8)?.map(RawId),
                })
            })
            .optional()
            .j();
        info
    }

    /// The bytes of a raw body as a stream, one stored chunk in memory at a time. The reader
    /// connection is taken per chunk only, so sinks keep reading the outbox meanwhile.
    pub fn raw_reader(&self, id: RawId) -> RawReader {
        RawReader {
            journal: self.clone(),
            id,
            next_seq: 0,
            chunked: None,
            buf: Vec::new(),
            pos: 0,
            done: false,
            error: None,
        }
    }
}

/// Size of the chunks a body read from a file is stored in.
pub const CHUNK: usize = 1024 * 1024;

fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A new chunked raw body row, not complete yet, holding `len` bytes so far.
fn insert_chunked(
    tx: &Transaction<'_>,
    scope: &Scope,
    endpoint: &str,
    http_status: u16,
    received_at_ms: i64,
    len: usize,
) -> Result<RawId, JournalError> {
    tx.prepare_cached(
        "INSERT INTO raw_bodies(environment, account, endpoint, http_status, body, \
         received_at, chunked, complete, len) VALUES (?1, ?2, ?3, ?4, x'', ?5, 1, 0, ?6)",
    )
    .j()?
    .execute(params![
        scope.environment,
        scope.account,
        endpoint,
        http_status,
        received_at_ms,
        len as i64
    ])
    .j()?;
    Ok(RawId(tx.last_insert_rowid()))
}

fn insert_chunk(
    tx: &Transaction<'_>,
    raw: RawId,
    seq: i64,
    data: &[u8],
) -> Result<(), JournalError> {
    tx.prepare_cached("INSERT OR REPLACE INTO raw_chunks(raw_id, seq, data) VALUES (?1, ?2, ?3)")
        .j()?
        .execute(params![raw.0, seq, data])
        .j()?;
    Ok(())
}

/// Delete a raw body and its chunks.
pub(crate) fn delete_raw(tx: &Transaction<'_>, raw: RawId) -> Result<(), JournalError> {
    tx.prepare_cached("DELETE FROM raw_chunks WHERE raw_id = ?1")
        .j()?
        .execute([raw.0])
        .j()?;
    tx.prepare_cached("DELETE FROM raw_bodies WHERE id = ?1")
        .j()?
        .execute([raw.0])
        .j()?;
    Ok(())
}

/// SHA-256 of a stored body, read chunk by chunk inside `tx`.
pub(crate) fn stored_digest(tx: &Transaction<'_>, raw: RawId) -> Result<String, JournalError> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let inline: Vec<u8> = tx
        .prepare_cached("SELECT body FROM raw_bodies WHERE id = ?1")
        .j()?
        .query_row([raw.0], |r| r.get(0))
        .j()?;
    h.update(&inline);
    let mut st = tx
        .prepare_cached("SELECT data FROM raw_chunks WHERE raw_id = ?1 ORDER BY seq")
        .j()?;
    let mut rows = st.query([raw.0]).j()?;
    while let Some(row) = rows.next().j()? {
        let data = row.get_ref(0).j()?.as_blob().unwrap_or_default();
        h.update(data);
    }
    let mut s = String::with_capacity(64);
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

/// The whole bytes of a stored body (inline, or its chunks joined): for small bodies and
/// inspection.
pub(crate) fn whole_body(conn: &Connection, raw: RawId) -> Result<Option<Vec<u8>>, JournalError> {
    let inline: Option<Vec<u8>> = conn
        .prepare_cached("SELECT body FROM raw_bodies WHERE id = ?1")
        .j()?
        .query_row([raw.0], |r| r.get(0))
        .optional()
        .j()?;
    let Some(mut body) = inline else {
        return Ok(None);
    };
    let mut st = conn
        .prepare_cached("SELECT data FROM raw_chunks WHERE raw_id = ?1 ORDER BY seq")
        .j()?;
    let mut rows = st.query([raw.0]).j()?;
    while let Some(row) = rows.next().j()? {
        body.extend_from_slice(row.get_ref(0).j()?.as_blob().unwrap_or_default());
    }
    Ok(Some(body))
}

/// A stored body as a stream (see [`Journal::raw_reader`]).
pub struct RawReader {
    journal: Journal,
    id: RawId,
    next_seq: i64,
    chunked: Option<bool>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    error: Option<String>,
}

impl RawReader {
    /// Why reading the journal failed, if it did (a parser reading this sees only an I/O
    /// error, and must not take it for a bad body).
    pub fn failed(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn refill(&mut self) -> Result<(), JournalError> {
        let conn = self.journal.reader();
        self.pos = 0;
        self.buf.clear();
        if self.chunked.is_none() {
            let row: Option<(bool, Vec<u8>)> = conn
                .prepare_cached("SELECT chunked, body FROM raw_bodies WHERE id = ?1")
                .j()?
                .query_row([self.id.0], |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)))
                .optional()
                .j()?;
            let Some((chunked, inline)) = row else {
                return Err(JournalError::NotFound {
                    what: "raw body",
                    id: self.id.0,
                });
            };
            self.chunked = Some(chunked);
            if !chunked {
                self.buf = inline;
                self.done = true;
                return Ok(());
            }
        }
        let data: Option<Vec<u8>> = conn
            .prepare_cached("SELECT data FROM raw_chunks WHERE raw_id = ?1 AND seq = ?2")
            .j()?
            .query_row(params![self.id.0, self.next_seq], |r| r.get(0))
            .optional()
            .j()?;
        match data {
            Some(d) => {
                self.buf = d;
                self.next_seq += 1;
            }
            None => self.done = true,
        }
        Ok(())
    }
}

impl Read for RawReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for RawReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        // Empty chunks (an empty first part) are skipped, not taken for the end.
        while self.pos >= self.buf.len() && !self.done {
            if let Err(e) = self.refill() {
                self.error = Some(e.to_string());
                return Err(std::io::Error::other(e));
            }
        }
        Ok(&self.buf[self.pos.min(self.buf.len())..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}
