//! One notification drain: catch up, check for room, fetch, journal (or spool) the raw body,
//! then parse per notification and commit.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use espm_client::{BodyStream, ClientError, PmClient};
use espm_events::{
    event_time, quarantine_event, BodyQuarantinedData, CustomFieldsByTarget,
    NotificationCorrelator, Origin,
};
use espm_journal::{
    Journal, JournalError, NotificationEntry, QuarantineOutcome, RawId, Scope, SpoolWriter,
};
use espm_model::{ListItem, Notification, NotificationStream};
use tokio_util::sync::CancellationToken;

use crate::{share_fields, DrainMode, PollError, Poller, PollerStatus};

const ENDPOINT: &str = "notification/list";

/// Suffix of the endpoint recorded for one bad `<notification>` cut out of a list.
const FRAGMENT: &str = "#notification";

/// Notifications committed per journal transaction. 2,000 peaked at 64.9–65.9 MiB on a
/// 1,000,000 burst, 1,000 at 59.5–60.1 MiB, at the same speed (espm-load, side by side).
const COMMIT_PART: usize = 1000;

/// One normalized part of a body, ready for the journal.
struct Part {
    entries: Vec<NotificationEntry>,
    events: Vec<espm_events::CloudEvent>,
    /// Marks the body processed.
    last: bool,
}

/// The parse side of one journalled body: its stream and what reading it found so far.
struct BodyParse {
    stream: NotificationStream<espm_journal::RawReader>,
    targets: share_fields::BodyTargets,
    /// When the body's custom field reads must be done by (set by the first).
    deadline: Option<tokio::time::Instant>,
    /// Done when the reads started last are (the next part's wait for it).
    turn: Option<tokio::sync::oneshot::Receiver<()>>,
    processed: Processed,
    /// Bad parts quarantined as they came.
    quarantined: usize,
    /// SHAREUPDATEs over the body's cap of targets.
    skipped: usize,
    first: bool,
    parse: Duration,
}

/// The normalizing side of one journalled body: its parts' events, in order.
struct BodyBuild {
    /// One per body: a DISCONNECT and its UNSHAREs may fall into different parts, and values
    /// read for one part serve the SHAREUPDATEs of the next.
    correlator: NotificationCorrelator,
    normalize: Duration,
}

/// The commit side of one journalled body.
struct BodyCommit {
    out: DrainOutcome,
    commit: Duration,
}

/// What [`Committer::parse_part`] found.
enum Step {
    /// The next notifications; `scan`: the custom field targets to read for them.
    Part {
        part: Vec<Notification>,
        last: bool,
        scan: Option<share_fields::Scan>,
    },
    /// The body is not a notification list: quarantined whole.
    NotAList,
}

/// Parts parsed and waiting for their commit: while the oldest waits for its custom field
/// reads, up to [`PARSE_AHEAD`]; otherwise [`PARSE_NEXT`] (the commit is the slower side). 2
/// ahead instead of 8 made no measurable difference to a 1,000,000 burst's peak RSS.
const PARSE_AHEAD: usize = 8;
const PARSE_NEXT: usize = 1;

/// A part parsed, to be committed once its custom field reads are done.
struct Parsed {
    part: Vec<Notification>,
    last: bool,
    reads: Option<Reads>,
}

/// Custom field reads running in the background; dropped (the drain stopped on an error), they
/// are cancelled.
struct Reads {
    handle: tokio::task::JoinHandle<CustomFieldsByTarget>,
    done: Option<CustomFieldsByTarget>,
}

impl Reads {
    fn is_finished(&self) -> bool {
        self.done.is_some() || self.handle.is_finished()
    }

    /// Until the reads are done (cancel-safe: the answer is kept as soon as it is there).
    async fn wait(&mut self) {
        if self.done.is_none() {
            // Reads that did not finish are missing: their events go out flagged.
            self.done = Some((&mut self.handle).await.unwrap_or_default());
        }
    }

    /// What was read.
    async fn fields(mut self) -> CustomFieldsByTarget {
        self.wait().await;
        self.done.take().unwrap_or_default()
    }
}

impl Drop for Reads {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What an optional blocking step in flight gives; never ready when there is none.
async fn in_flight<F: std::future::Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Wait for a blocking step in flight, if any, whatever its outcome.
async fn finish<F: std::future::Future>(f: Option<F>) {
    if let Some(f) = f {
        f.await;
    }
}

/// Ready once the reads of `part` (if any) are done.
async fn reads_of(part: Option<&mut Parsed>) {
    if let Some(reads) = part.and_then(|p| p.reads.as_mut()) {
        reads.wait().await;
    }
}

/// A body is journalled in parts of about this size as it arrives: memory holds one part.
const PART_BYTES: usize = 1024 * 1024;

/// A body journalled as it arrived.
struct Received {
    id: RawId,
    len: u64,
    /// The transfer broke off after these bytes (PM already handed them out).
    cut: Option<ClientError>,
}

/// A body takes about this many times its size in the journal while it is committed (the row,
/// the WAL copy, the parsed notifications and their events).
const ROOM_FACTOR: u64 = 4;

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Notifications PM handed out with `clear=true` (0 means idle).
    pub received: usize,
    /// Of all notifications seen (peek and clear), those new to the journal.
    pub new_notifications: usize,
    /// Events appended to the outbox.
    pub new_events: usize,
    /// Bodies or parts of bodies that failed to parse and were quarantined (or counted again).
    pub quarantined: usize,
    /// Bodies finished that an earlier failure or crash had left journalled but uncommitted.
    pub recovered: usize,
    /// Spooled bodies moved into the journal.
    pub unspooled: usize,
}

impl DrainOutcome {
    fn add(&mut self, o: &DrainOutcome) {
        self.received += o.received;
        self.new_notifications += o.new_notifications;
        self.new_events += o.new_events;
        self.quarantined += o.quarantined;
        self.recovered += o.recovered;
        self.unspooled += o.unspooled;
    }
}

/// What one parse-and-commit of a journalled body found.
#[derive(Debug, Clone, Copy, Default)]
struct Processed {
    /// Notifications that parsed.
    notifications: usize,
    /// Parts quarantined.
    bad: usize,
}

impl Poller {
    /// Drain notifications once, per the configured mode.
    pub async fn drain_once(&self) -> Result<DrainOutcome, PollError> {
        self.drain_until(&CancellationToken::new()).await
    }

    /// Drain once; once `shutdown` is cancelled no new `clear=true` is started, but one already
    /// sent is awaited and its body kept.
    pub async fn drain_until(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<DrainOutcome, PollError> {
        let mut out = DrainOutcome::default();
        // What PM already handed out comes before anything new, in order.
        self.catch_up(&mut out).await?;
        let mut expected = self.status.last_clear_len.load(Ordering::Relaxed);
        if self.cfg.drain_mode == DrainMode::PeekThenClear {
            // The peek is harmless (clear=false), but there is no point in it when nothing
            // could be stored: the checks below would stop the clear anyway.
            self.ensure_room(expected).await?;
            let peek = tokio::select! {
                _ = shutdown.cancelled() => return Ok(out),
                r = self.fetch_and_commit(false, shutdown, &mut out) => r?,
            };
            // A peek that did not parse still means PM holds something: clear it, so one poison
            // notification cannot stop the drain.
            if peek.notifications == 0 && peek.bad == 0 {
                return Ok(out);
            }
            expected = expected.max(peek_len(&self.status));
        }
        if shutdown.is_cancelled() {
            tracing::info!(account = %self.account(), "shutdown began: no clear=true is started");
            return Ok(out);
        }
        self.ensure_room(expected).await?;
        let cleared = self.fetch_and_commit(true, shutdown, &mut out).await?;
        out.received = cleared.notifications + cleared.bad;
        Ok(out)
    }

    /// Spooled bodies into the journal, then journalled-but-uncommitted bodies committed, in
    /// order. An error leaves the rest waiting, and the drain does not clear anything new.
    pub(crate) async fn catch_up(&self, out: &mut DrainOutcome) -> Result<(), PollError> {
        let spool = self.cfg.spool.clone();
        let scope = self.cfg.scope.clone();
        if !spool.pending(Some(&scope)).is_empty() {
            let res = self
                .journal
                .call(move |j| spool.ingest(j, Some(&scope)))
                .await;
            self.status.spooled.store(
                self.cfg.spool.pending(Some(&self.cfg.scope)).len(),
                Ordering::Relaxed,
            );
            out.unspooled += res?;
        }
        out.recovered += self.recover().await?;
        Ok(())
    }

    /// Never call clear=true unless the journal's filesystem has the configured floor plus room
    /// for the body about to arrive, and the journal takes writes right now.
    async fn ensure_room(&self, expected_body: u64) -> Result<(), PollError> {
        let needed = self
            .cfg
            .min_free
            .saturating_add(expected_body.saturating_mul(ROOM_FACTOR));
        let res = self
            .journal
            .call(move |j| {
                j.check_room(needed)?;
                j.check_writable()
            })
            .await;
        if let Err(e) = &res {
            metrics::counter!("espm_bridge_polls_total", "account" => self.account().to_string(), "endpoint" => ENDPOINT, "outcome" => "journal_unwritable").increment(1);
            tracing::error!(account = %self.account(), error = %e, "journal cannot take a drained body: NOT draining PM notifications until it can");
        }
        // /readyz says so while it lasts: small writes may still fit, PM is not drained.
        self.status
            .set_no_room(res.as_ref().err().map(ToString::to_string));
        Ok(res?)
    }

    /// One GET, journalled as it arrives and committed from the journal as a stream.
    async fn fetch_and_commit(
        &self,
        clear: bool,
        shutdown: &CancellationToken,
        out: &mut DrainOutcome,
    ) -> Result<Processed, PollError> {
        let endpoint = if clear {
            "notification/list?clear=true"
        } else {
            "notification/list?clear=false"
        };
        let account = self.account().to_string();
        let holding = clear.then(|| HoldingBody::new(&self.status));
        let mut stream = match self.client.notifications_stream(clear).await {
            Ok(s) => s,
            Err(e) => {
                self.count_failed_poll(&e);
                return Err(e.into());
            }
        };
        let t0 = Instant::now();
        let received = self.receive(endpoint, &mut stream, clear, shutdown).await?;
        // The body is in hand: give back the account's PM turn the stream holds, so the
        // pre-pass of the commit can call PM.
        drop(stream);
        drop(holding);
        tracing::debug!(account = %account, raw_id = %received.id, bytes = received.len, ms = t0.elapsed().as_millis() as u64, "body journalled");
        if clear {
            self.status
                .last_clear_len
                .store(received.len, Ordering::Relaxed);
        } else {
            self.status.last_peek_len(received.len);
        }
        metrics::gauge!("espm_bridge_last_poll_timestamp_seconds", "account" => account.clone())
            .set(chrono::Utc::now().timestamp() as f64);
        // A body cut off mid-transfer after PM committed the read: its complete notifications
        // are real and committed, the tail quarantined.
        let processed = self
            .committer()
            .process_journalled(received.id, endpoint.to_string(), clear, out)
            .await;
        if processed.is_err() {
            // Journalled but not committed: stranded until the next drain's catch-up.
            self.status.stranded.fetch_add(1, Ordering::Relaxed);
        }
        let processed = processed?;
        if let Some(e) = received.cut {
            self.count_failed_poll(&e);
            return Err(e.into());
        }
        Ok(processed)
    }

    fn count_failed_poll(&self, e: &ClientError) {
        let outcome = match e.status() {
            Some(s) if (400..500).contains(&s) => "http_4xx",
            Some(_) => "http_5xx",
            None => "transport",
        };
        metrics::counter!("espm_bridge_polls_total", "account" => self.account().to_string(), "endpoint" => ENDPOINT, "outcome" => outcome).increment(1);
    }

    /// Journal a body as it arrives, in parts of [`PART_BYTES`], each on disk before the next is
    /// read. When the journal stops taking a `clear=true` body midway, the body (what the journal
    /// took, then the rest as it arrives) goes to the spool; if the spool fails too, it is held in
    /// memory as the last resort ([`Poller::keep_body`]).
    async fn receive(
        &self,
        endpoint: &str,
        stream: &mut BodyStream,
        clear: bool,
        shutdown: &CancellationToken,
    ) -> Result<Received, PollError> {
        let status = stream.status;
        let mut raw: Option<RawId> = None;
        let mut seq = 0i64;
        let mut len = 0u64;
        let mut part = BytesMut::new();
        let mut cut = None;
        let mut failed: Option<JournalError> = None;
        loop {
            let next = stream.chunk().await;
            let end = match next {
                Ok(Some(c)) => {
                    len += c.len() as u64;
                    part.extend_from_slice(&c);
                    false
                }
                Ok(None) => true,
                Err(e) if len == 0 => {
                    // Nothing arrived: nothing to keep, and no empty body to quarantine.
                    self.count_failed_poll(&e);
                    return Err(e.into());
                }
                Err(e) => {
                    cut = Some(e);
                    true
                }
            };
            if part.len() >= PART_BYTES || (end && (raw.is_none() || !part.is_empty())) {
                let data = part.split().freeze();
                let scope = self.cfg.scope.clone();
                let ep = endpoint.to_string();
                let d = data.clone();
                let res = match raw {
                    None => {
                        self.journal
                            .call(move |j| j.begin_raw(&scope, &ep, status, &d))
                            .await
                    }
                    Some(id) => {
                        let s = seq;
                        self.journal
                            .call(move |j| j.append_raw(id, s, &d).map(|()| id))
                            .await
                    }
                };
                match res {
                    Ok(id) => {
                        raw = Some(id);
                        seq += 1;
                    }
                    Err(e) => {
                        // Not stored: `data` goes to the spool.
                        failed = Some(e);
                        return self
                            .spool_rest(
                                endpoint, status, raw, data, stream, clear, shutdown, failed,
                            )
                            .await;
                    }
                }
            }
            if end {
                break;
            }
        }
        let Some(id) = raw else {
            return Err(PollError::Journal(failed.unwrap_or(JournalError::Corrupt(
                "a received body was never journalled".into(),
            ))));
        };
        if cut.is_none() {
            self.journal.call(move |j| j.finish_raw(id)).await?;
        }
        Ok(Received { id, len, cut })
    }

    /// The journal refused part of a body: a peek returns the error; a `clear=true` body (the
    /// only copy) goes to the spool whole: the parts the journal took, `data`, then the rest.
    #[allow(clippy::too_many_arguments)]
    async fn spool_rest(
        &self,
        endpoint: &str,
        status: u16,
        partial: Option<RawId>,
        data: Bytes,
        stream: &mut BodyStream,
        clear: bool,
        shutdown: &CancellationToken,
        failed: Option<JournalError>,
    ) -> Result<Received, PollError> {
        let journal_err =
            failed.unwrap_or_else(|| JournalError::Corrupt("journal refused a body".into()));
        if !clear {
            return Err(journal_err.into());
        }
        tracing::error!(account = %self.account(), error = %journal_err,
            "CANNOT JOURNAL a drained PM body (the only copy): spooling it");
        let spool = self.cfg.spool.clone();
        let scope = self.cfg.scope.clone();
        let ep = endpoint.to_string();
        let journal = self.journal.clone();
        let first = data.clone();
        // What the journal took, copied to the spool file first (read back chunk by chunk).
        let begun = tokio::task::spawn_blocking(move || {
            let mut w = spool.begin(&scope, &ep, status, partial)?;
            if let Some(id) = partial {
                let mut r = journal.raw_reader(id);
                loop {
                    let chunk = std::io::BufRead::fill_buf(&mut r).map_err(|e| {
                        JournalError::Corrupt(format!("reading back a partial body: {e}"))
                    })?;
                    if chunk.is_empty() {
                        break;
                    }
                    let n = chunk.len();
                    w.write(chunk)?;
                    std::io::BufRead::consume(&mut r, n);
                }
            }
            w.write(&first)?;
            Ok::<_, JournalError>(w)
        })
        .await
        .map_err(|e| JournalError::Task(e.to_string()))
        .and_then(|r| r);
        let (mut writer, mut held) = match begun {
            Ok(w) => (Some(w), None),
            Err(e) => {
                tracing::error!(account = %self.account(), error = %e, "CANNOT SPOOL a drained PM body either: holding it in memory");
                (None, Some(self.partial_plus(partial, &data).await))
            }
        };
        loop {
            match stream.chunk().await {
                Ok(Some(c)) => {
                    if let Some(mut w) = writer.take() {
                        match w.write(&c) {
                            Ok(()) => writer = Some(w),
                            Err(e) => {
                                tracing::error!(account = %self.account(), error = %e, "spool stopped taking the body: holding it in memory");
                                held = Some(self.unspool(w, partial, &data).await);
                            }
                        }
                    }
                    if let Some(h) = held.as_mut() {
                        h.extend_from_slice(&c);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(account = %self.account(), error = %e, "the drained body broke off while being spooled: keeping what arrived");
                    break;
                }
            }
        }
        if let Some(mut w) = writer {
            let (finished, w) = tokio::task::spawn_blocking(move || (w.finish(), w))
                .await
                .map_err(|e| JournalError::Task(e.to_string()))?;
            match finished {
                Ok(path) => return Err(self.spooled(journal_err, &path)),
                Err(e) => {
                    tracing::error!(account = %self.account(), error = %e, "CANNOT SPOOL a drained PM body either: holding it in memory");
                    held = Some(self.unspool(w, partial, &data).await);
                }
            }
        }
        let bytes = held.unwrap_or_default();
        let id = self
            .keep_body(endpoint, status, bytes, clear, shutdown)
            .await?;
        if let Some(old) = partial {
            // The whole copy is journalled: the partial one would only add duplicates.
            if let Err(e) = self.journal.call(move |j| j.discard_partial_raw(old)).await {
                tracing::warn!(account = %self.account(), error = %e, raw_id = %old, "could not discard a partial copy of a journalled body: its notifications may be delivered twice");
            }
        }
        let len = self
            .journal
            .call(move |j| j.raw_info(id))
            .await?
            .map_or(0, |i| i.len);
        Ok(Received { id, len, cut: None })
    }

    /// Everything a failed spool writer holds, read back: the whole body so far. If the file
    /// cannot be read, the journal's partial copy and `data` are what is left.
    async fn unspool(&self, w: SpoolWriter, partial: Option<RawId>, data: &[u8]) -> Vec<u8> {
        let taken = tokio::task::spawn_blocking(move || w.take_bytes())
            .await
            .map_err(|e| JournalError::Task(e.to_string()))
            .and_then(|r| r);
        match taken {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(account = %self.account(), error = %e, "cannot read back the spooled part: keeping what the journal took");
                self.partial_plus(partial, data).await
            }
        }
    }

    /// A drained body is safe in the spool: count it, say so, and stop the drain with
    /// [`PollError::Spooled`] until the journal takes it.
    fn spooled(&self, journal: JournalError, path: &std::path::Path) -> PollError {
        self.status.spooled.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("espm_bridge_bodies_spooled_total", "account" => self.account().to_string()).increment(1);
        tracing::error!(account = %self.account(), path = %path.display(), "drained PM body spooled; it is journalled as soon as the journal takes writes");
        PollError::Spooled {
            journal,
            path: path.display().to_string(),
        }
    }

    /// The last resort when no spool directory takes a body (memory, and stderr on shutdown):
    /// what the journal took of it, then `data`.
    async fn partial_plus(&self, partial: Option<RawId>, data: &[u8]) -> Vec<u8> {
        let mut all = match partial {
            Some(id) => self
                .journal
                .call(move |j| j.raw_body(id))
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
            None => Vec::new(),
        };
        all.extend_from_slice(data);
        all
    }

    /// Finish what a failure or a crash interrupted: notification bodies that were journalled
    /// but never committed are parsed and committed now (idempotently), oldest first;
    /// interrupted pending-list pages are set aside, because the next walk reads the lists
    /// again. Returns how many bodies were recovered. While one cannot be committed, the
    /// account reports it (`/readyz`) and the error stops the drain.
    pub async fn recover(&self) -> Result<usize, PollError> {
        let scope = self.cfg.scope.clone();
        let ids = self
            .journal
            .call(move |j| j.unprocessed_raw_ids(&scope))
            .await?;
        self.status.stranded.store(ids.len(), Ordering::Relaxed);
        let mut recovered = 0;
        for id in ids {
            // Where it came from only: the bytes are read as a stream.
            let info = self.journal.call(move |j| j.raw_info(id)).await?;
            let Some(info) = info else { continue };
            if info.endpoint.starts_with("notification/list") {
                let mut out = DrainOutcome::default();
                let p = self
                    .committer()
                    .process_stored(info.id, &info.endpoint, &mut out)
                    .await?;
                tracing::warn!(account = %self.account(), raw_id = %info.id, complete = info.complete, notifications = p.notifications, "recovered a journalled body left unprocessed by a crash or a failed commit");
                metrics::counter!("espm_bridge_bodies_recovered_total", "account" => self.account().to_string()).increment(1);
                recovered += 1;
            } else {
                self.journal.call(move |j| j.mark_raw_processed(id)).await?;
            }
            self.status.stranded.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(recovered)
    }

    /// Journal raw bytes of a list read (never destructive): an error is returned as is.
    pub(crate) async fn store_raw(
        &self,
        endpoint: &str,
        status: u16,
        bytes: Vec<u8>,
    ) -> Result<RawId, PollError> {
        let scope = self.cfg.scope.clone();
        let ep = endpoint.to_string();
        Ok(self
            .journal
            .call(move |j| j.record_raw(&scope, &ep, status, &bytes))
            .await?)
    }

    /// Keep a body PM handed out. A peek is journalled or the error returned. A `clear=true`
    /// body is the only copy: journalled, or else spooled at once (then the drain stops with
    /// [`PollError::Spooled`]); if neither takes it, it is held in memory and retried, and on
    /// shutdown dumped to stderr as the last resort.
    async fn keep_body(
        &self,
        endpoint: &str,
        status: u16,
        bytes: Vec<u8>,
        clear: bool,
        shutdown: &CancellationToken,
    ) -> Result<RawId, PollError> {
        if !clear {
            return self.store_raw(endpoint, status, bytes).await;
        }
        let bytes = std::sync::Arc::new(bytes);
        let mut wait = Duration::from_millis(200);
        loop {
            let scope = self.cfg.scope.clone();
            let ep = endpoint.to_string();
            let b = bytes.clone();
            let journal_err = match self
                .journal
                .call(move |j| j.record_raw(&scope, &ep, status, &b))
                .await
            {
                Ok(id) => return Ok(id),
                Err(e) => e,
            };
            tracing::error!(account = %self.account(), error = %journal_err, bytes = bytes.len(),
                "CANNOT JOURNAL a drained PM body (the only copy): spooling it");
            let spool = self.cfg.spool.clone();
            let scope = self.cfg.scope.clone();
            let ep = endpoint.to_string();
            let b = bytes.clone();
            let spooled = tokio::task::spawn_blocking(move || spool.write(&scope, &ep, status, &b))
                .await
                .map_err(|e| espm_journal::JournalError::Task(e.to_string()))
                .and_then(|r| r);
            match spooled {
                Ok(path) => return Err(self.spooled(journal_err, &path)),
                Err(e) => {
                    tracing::error!(account = %self.account(), error = %e, "CANNOT SPOOL a drained PM body either: holding it in memory and retrying");
                }
            }
            if shutdown.is_cancelled() {
                dump_to_stderr(&self.cfg.scope, endpoint, &bytes);
                self.status.unsaved.store(true, Ordering::Relaxed);
                return Err(PollError::Unsaved(journal_err));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    pub(crate) async fn quarantine(
        &self,
        endpoint: &str,
        raw_id: RawId,
        error: &str,
    ) -> Result<(), PollError> {
        self.committer().quarantine(endpoint, raw_id, error).await
    }

    fn committer(&self) -> Committer {
        Committer {
            journal: self.journal.clone(),
            scope: self.cfg.scope.clone(),
            origin: self.origin.clone(),
            wake: self.wake.clone(),
            status: Some(self.status.clone()),
            client: Some(self.client.clone()),
            lookup_budget: self.customers.budget,
        }
    }
}

fn peek_len(status: &PollerStatus) -> u64 {
    status.last_peek_len.load(Ordering::Relaxed)
}

impl PollerStatus {
    fn last_peek_len(&self, len: u64) {
        self.last_peek_len.store(len, Ordering::Relaxed);
    }
}

/// Marks the span from sending `clear=true` to keeping its body, for shutdown.
struct HoldingBody<'a>(&'a PollerStatus);

impl<'a> HoldingBody<'a> {
    fn new(status: &'a PollerStatus) -> Self {
        status.holding_body.store(true, Ordering::Relaxed);
        HoldingBody(status)
    }
}

impl Drop for HoldingBody<'_> {
    fn drop(&mut self) {
        self.0.holding_body.store(false, Ordering::Relaxed);
    }
}

/// The last resort for a drained body nothing would store: the process's stderr (the container
/// log), between marker lines, as base64.
fn dump_to_stderr(scope: &Scope, endpoint: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "-----BEGIN ESPM-BRIDGE UNJOURNALLED BODY environment={} account={} endpoint={} bytes={}-----",
        scope.environment,
        scope.account,
        endpoint,
        bytes.len()
    );
    let _ = writeln!(err, "{}", base64_encode(bytes));
    let _ = writeln!(err, "-----END ESPM-BRIDGE UNJOURNALLED BODY-----");
    let _ = err.flush();
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Parses journalled notification bodies and commits them: the poller's path, recovery's, and
/// `journal reprocess`'s.
#[derive(Clone)]
struct Committer {
    journal: Journal,
    scope: Scope,
    origin: Origin,
    wake: Vec<std::sync::Arc<tokio::sync::Notify>>,
    status: Option<std::sync::Arc<PollerStatus>>,
    /// Reads the custom field values of `share.updated` events; `None` (`journal reprocess`):
    /// not read, the events are flagged.
    client: Option<PmClient>,
    /// The time the custom field reads of one body may take, all together.
    lookup_budget: Duration,
}

impl Committer {
    async fn process_stored(
        &self,
        id: RawId,
        endpoint: &str,
        out: &mut DrainOutcome,
    ) -> Result<Processed, PollError> {
        let clear = endpoint.contains("clear=true");
        if endpoint.ends_with(FRAGMENT) {
            // A fragment is one element: small enough to read whole.
            let body = self.journal.call(move |j| j.stored_body(id)).await?;
            let Some(body) = body else {
                return Err(JournalError::NotFound {
                    what: "raw body",
                    id: id.0,
                }
                .into());
            };
            // One `<notification>` cut out of a list: read it as a list of one; if it still does
            // not parse, it goes back to quarantine as it is.
            let mut wrapped = b"<notificationList>".to_vec();
            wrapped.extend_from_slice(&body.body);
            wrapped.extend_from_slice(b"</notificationList>");
            return match espm_model::parse::<espm_model::NotificationList>(&wrapped) {
                Ok(list) => {
                    let scan = share_fields::BodyTargets::new(share_fields::MAX_TARGETS).choose(
                        &share_fields::share_updates(&list.notifications),
                        &Default::default(),
                    );
                    let fields = self.read_fields(scan, &mut None).await;
                    let c = self.clone();
                    let id = body.id;
                    let n = list.notifications.len();
                    let delta = self
                        .journal
                        .call(move |j| {
                            let mut d = DrainOutcome::default();
                            c.store_part(
                                j,
                                id,
                                c.build_part(
                                    &list.notifications,
                                    true,
                                    &mut NotificationCorrelator::new().with_custom_fields(fields),
                                ),
                                &mut d,
                            )?;
                            Ok(d)
                        })
                        .await?;
                    out.add(&delta);
                    Ok(Processed {
                        notifications: n,
                        bad: 0,
                    })
                }
                Err(e) => {
                    self.quarantine(&body.endpoint, body.id, &e.to_string())
                        .await?;
                    Ok(Processed {
                        notifications: 0,
                        bad: 1,
                    })
                }
            };
        }
        self.process_journalled(id, endpoint.to_string(), clear, out)
            .await
    }

    /// Parse a journalled notification body as a stream and commit it: good notifications in
    /// parts of [`COMMIT_PART`] (sinks start on a huge drain before all of it is stored), each bad
    /// part quarantined with its bytes and event as it comes. Memory holds a few parts, never the
    /// body. The custom field values of a part's SHAREUPDATEs are read from PM
    /// ([`share_fields`]) in the background while the next parts parse (up to [`PARSE_AHEAD`]),
    /// and a part is committed, in order, once its reads are done, so the body is parsed once
    /// and the drain does not wait for PM while there is parsing to do. The raw body is marked
    /// processed only with the last part; a crash before that leaves it to
    /// [`Poller::recover`], and every step is idempotent. Parsing, normalizing and committing
    /// overlap, each stage in body order: the drain itself is 10% faster (its benchmark), though
    /// end to end on two cores the sinks set the pace (README, Performance).
    async fn process_journalled(
        &self,
        raw_id: RawId,
        endpoint: String,
        clear: bool,
        out: &mut DrainOutcome,
    ) -> Result<Processed, PollError> {
        type Blocking<'a, T> = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, JournalError>> + Send + 'a>,
        >;
        let mut parse_side = Some(BodyParse {
            stream: NotificationStream::new(self.journal.raw_reader(raw_id)),
            targets: share_fields::BodyTargets::new(share_fields::MAX_TARGETS),
            deadline: None,
            turn: None,
            processed: Processed {
                notifications: 0,
                bad: 0,
            },
            quarantined: 0,
            skipped: 0,
            first: true,
            parse: Duration::ZERO,
        });
        let mut build_side = Some(BodyBuild {
            // Every SHAREUPDATE gets its values or the flag (no client, `journal reprocess`:
            // always the flag), even in a body with nothing to read.
            correlator: NotificationCorrelator::new()
                .with_custom_fields(CustomFieldsByTarget::new()),
            normalize: Duration::ZERO,
        });
        let mut commit_side = Some(BodyCommit {
            out: DrainOutcome::default(),
            commit: Duration::ZERO,
        });
        // Parsing the next part, normalizing an earlier one and committing the one before run
        // at once, each on its own blocking thread, each in body order (SQLite's WAL lets the
        // reader read while the writer commits).
        let mut parsing: Option<Blocking<'_, (BodyParse, Step)>> = None;
        let mut building: Option<Blocking<'_, (BodyBuild, Part)>> = None;
        let mut committing: Option<Blocking<'_, (BodyCommit, bool)>> = None;
        // Parts parsed and not yet normalized, oldest first; a part normalized, to commit.
        let mut ahead: std::collections::VecDeque<Parsed> = Default::default();
        let mut built: Option<Part> = None;
        let mut parsed_all = false;
        let mut lookup = Duration::ZERO;
        loop {
            let waiting = ahead
                .front()
                .and_then(|p| p.reads.as_ref())
                .is_some_and(|r| !r.is_finished());
            let room = if waiting { PARSE_AHEAD } else { PARSE_NEXT };
            if parsing.is_none() && !parsed_all && ahead.len() < room {
                if let Some(mut body) = parse_side.take() {
                    let c = self.clone();
                    let ep = endpoint.clone();
                    parsing = Some(Box::pin(self.journal.call(move |j| {
                        let step = c.parse_part(j, raw_id, &ep, &mut body)?;
                        Ok((body, step))
                    })));
                }
            }
            if building.is_none() && built.is_none() && !waiting {
                if let Some(mut body) = build_side.take() {
                    match ahead.pop_front() {
                        Some(Parsed { part, last, reads }) => {
                            if let Some(reads) = reads {
                                // Finished: no wait.
                                body.correlator.add_custom_fields(reads.fields().await);
                            }
                            let c = self.clone();
                            building = Some(Box::pin(async move {
                                tokio::task::spawn_blocking(move || {
                                    let t = Instant::now();
                                    let part = c.build_part(&part, last, &mut body.correlator);
                                    body.normalize += t.elapsed();
                                    (body, part)
                                })
                                .await
                                .map_err(|e| JournalError::Task(e.to_string()))
                            }));
                        }
                        None => build_side = Some(body),
                    }
                }
            }
            if committing.is_none() {
                if let Some(mut body) = commit_side.take() {
                    match built.take() {
                        Some(part) => {
                            let c = self.clone();
                            committing = Some(Box::pin(self.journal.call(move |j| {
                                let t = Instant::now();
                                let last = part.last;
                                c.store_part(j, raw_id, part, &mut body.out)?;
                                body.commit += t.elapsed();
                                Ok((body, last))
                            })));
                        }
                        None => commit_side = Some(body),
                    }
                }
            }
            let idle = parsing.is_none() && building.is_none() && committing.is_none();
            if idle && !waiting {
                // Nothing to parse, normalize or commit, no reads to wait for.
                break;
            }
            let t = Instant::now();
            let finished = tokio::select! {
                r = in_flight(&mut parsing) => {
                    parsing = None;
                    r.map(|(body, step)| {
                        parse_side = Some(body);
                        match step {
                            Step::Part { part, last, scan } => {
                                let reads = scan.and_then(|scan| {
                                    let body = parse_side.as_mut()?;
                                    body.skipped += scan.skipped;
                                    self.start_reads(scan, &mut body.deadline, &mut body.turn)
                                });
                                parsed_all = last;
                                ahead.push_back(Parsed { part, last, reads });
                            }
                            // Only a body's start says so: nothing was parsed before it.
                            Step::NotAList => parsed_all = true,
                        }
                        false
                    })
                }
                r = in_flight(&mut building) => {
                    building = None;
                    r.map(|(body, part)| {
                        build_side = Some(body);
                        built = Some(part);
                        false
                    })
                }
                r = in_flight(&mut committing) => {
                    committing = None;
                    r.map(|(body, last)| {
                        commit_side = Some(body);
                        last
                    })
                }
                () = reads_of(ahead.front_mut()), if waiting => Ok(false),
            };
            match finished {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    // What is still in flight finishes first: a retry of this body must not
                    // find a commit of this one still running.
                    finish(parsing.take()).await;
                    finish(building.take()).await;
                    finish(committing.take()).await;
                    return Err(e.into());
                }
            }
            if idle {
                lookup += t.elapsed();
            }
        }
        let (Some(parsed), Some(built), Some(committed)) = (parse_side, build_side, commit_side)
        else {
            // Every side is back once nothing is in flight.
            return Err(JournalError::Corrupt(format!(
                "journalled body {raw_id}: its parse ended with a part in flight"
            ))
            .into());
        };
        Ok(self.finish_body(parsed, built, committed, lookup, clear, out))
    }

    /// The custom field values of `scan`'s targets, read from PM by the body's deadline (set by
    /// its first read: the lookup budget is for the whole body).
    async fn read_fields(
        &self,
        scan: share_fields::Scan,
        deadline: &mut Option<tokio::time::Instant>,
    ) -> CustomFieldsByTarget {
        match self.start_reads(scan, deadline, &mut None) {
            Some(reads) => reads.fields().await,
            None => CustomFieldsByTarget::new(),
        }
    }

    /// Start reading `scan`'s targets in the background (`None`: nothing to read, or no PM
    /// client), after the reads started before with the same `turn` (the client takes turns
    /// anyway: one part's reads done first let its commit start while the next part's run).
    fn start_reads(
        &self,
        scan: share_fields::Scan,
        deadline: &mut Option<tokio::time::Instant>,
        turn: &mut Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Option<Reads> {
        match &self.client {
            Some(client) if !scan.targets.is_empty() || scan.skipped > 0 => {
                let by = *deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.lookup_budget);
                let client = client.clone();
                let account = self.scope.account.clone();
                let before = turn.take();
                let (done, next) = tokio::sync::oneshot::channel::<()>();
                *turn = Some(next);
                Some(Reads {
                    handle: tokio::spawn(async move {
                        if let Some(before) = before {
                            // Sent or dropped (done, or cancelled): either way, our turn.
                            let _ = before.await;
                        }
                        let fields =
                            share_fields::read_custom_fields(&client, &scan, by, &account).await;
                        drop(done);
                        fields
                    }),
                    done: None,
                })
            }
            _ => None,
        }
    }

    /// Metrics and the log line of a body parsed to its end.
    fn finish_body(
        &self,
        parsed: BodyParse,
        built: BodyBuild,
        committed: BodyCommit,
        lookup: Duration,
        clear: bool,
        out: &mut DrainOutcome,
    ) -> Processed {
        let account = &self.scope.account;
        let mut body_out = committed.out;
        body_out.quarantined += parsed.quarantined;
        out.add(&body_out);
        let Processed {
            notifications: n,
            bad,
        } = parsed.processed;
        let outcome = if bad > 0 { "parse_error" } else { "ok" };
        metrics::counter!("espm_bridge_polls_total", "account" => account.clone(), "endpoint" => ENDPOINT, "outcome" => outcome).increment(1);
        self.set_parse_failing(bad > 0);
        if parsed.skipped > 0 {
            tracing::warn!(account = %account, skipped = parsed.skipped, cap = share_fields::MAX_TARGETS, "a body names more shares than are re-read at once: the rest of its share.updated events go out flagged enrichment=unavailable");
        }
        if clear {
            metrics::counter!("espm_bridge_notifications_drained_total", "account" => account.clone()).increment(n as u64);
        }
        if n > 0 || bad > 0 {
            // Parsing and committing overlap: these are each side's own time, not the body's.
            tracing::info!(
                account = %account, clear, received = n, new = body_out.new_notifications, quarantined = bad,
                parse_ms = parsed.parse.as_millis() as u64, normalize_ms = built.normalize.as_millis() as u64,
                commit_ms = committed.commit.as_millis() as u64, lookup_ms = lookup.as_millis() as u64,
                "drained notifications"
            );
        }
        parsed.processed
    }

    /// Parse the next part of a body (up to [`COMMIT_PART`] notifications), quarantining bad
    /// fragments as they come, and choose the custom field targets it needs read. A body that
    /// is not a list at all is quarantined whole ([`Step::NotAList`]).
    fn parse_part(
        &self,
        j: &Journal,
        raw_id: RawId,
        endpoint: &str,
        body: &mut BodyParse,
    ) -> Result<Step, JournalError> {
        let account = &self.scope.account;
        let mut part: Vec<Notification> = Vec::with_capacity(COMMIT_PART);
        let last = loop {
            let t = Instant::now();
            let item = body.stream.next_item();
            body.parse += t.elapsed();
            // A journal read that failed is not a parse error: the body stays unprocessed.
            if let Some(e) = body.stream.get_ref().failed() {
                return Err(JournalError::Corrupt(format!(
                    "reading journalled body {raw_id}: {e}"
                )));
            }
            let first = std::mem::replace(&mut body.first, false);
            match item {
                Err(not_a_list) => {
                    if !first {
                        // Only the start can say this; never drop what follows silently.
                        return Err(JournalError::Corrupt(format!(
                            "journalled body {raw_id}: {not_a_list} after its start"
                        )));
                    }
                    let error = not_a_list.to_string();
                    tracing::error!(account = %account, raw_id = %raw_id, error = %error, "PM notification body does not parse: quarantined");
                    self.quarantine_blocking(j, endpoint, raw_id, &error)?;
                    body.quarantined += 1;
                    body.processed.bad = 1;
                    return Ok(Step::NotAList);
                }
                Ok(None) => break true,
                Ok(Some(ListItem::Notification(x))) => {
                    body.processed.notifications += 1;
                    part.push(x);
                    if part.len() == COMMIT_PART {
                        break false;
                    }
                }
                Ok(Some(ListItem::Bad { bytes, error, cut })) => {
                    let error = if cut {
                        format!("{error} (only its first {} bytes are kept here; raw body {raw_id} has all of them)", bytes.len())
                    } else {
                        error
                    };
                    let ep = format!("{}{FRAGMENT}", endpoint.trim_end_matches(FRAGMENT));
                    let origin = self.origin.clone();
                    let outcome =
                        j.quarantine_fragment(raw_id, &ep, &bytes, &error, |id, digest| {
                            quarantine_event(
                                &origin,
                                &BodyQuarantinedData {
                                    endpoint: ep.clone(),
                                    raw_id: id.0,
                                    sha256: digest.to_string(),
                                    fragment_of: Some(raw_id.0),
                                    error: error.clone(),
                                    received_at: event_time(chrono::Utc::now()),
                                },
                            )
                        })?;
                    tracing::error!(account = %account, raw_id = %raw_id, error = %error, outcome = ?outcome, "one part of a PM notification body does not parse: quarantined, the rest goes on");
                    self.counted_quarantine(outcome);
                    body.quarantined += 1;
                    body.processed.bad += 1;
                }
            }
        };
        let scan = match &self.client {
            Some(_) => {
                let updates = share_fields::share_updates(&part);
                if updates.is_empty() {
                    None
                } else {
                    let ids: Vec<i64> = updates.iter().map(|(id, _)| *id).collect();
                    let known = j.known_notifications(&self.scope, &ids)?;
                    Some(body.targets.choose(&updates, &known))
                }
            }
            None => None,
        };
        Ok(Step::Part { part, last, scan })
    }

    /// Normalize one part: the notifications' journal entries and their events.
    fn build_part(
        &self,
        part: &[Notification],
        last: bool,
        correlator: &mut NotificationCorrelator,
    ) -> Part {
        let mut entries = Vec::with_capacity(part.len());
        let mut events = Vec::with_capacity(part.len());
        for notification in part {
            let event = correlator.event(&self.origin, notification);
            let _span = tracing::debug_span!("notification", notification_id = notification.notification_id, event_id = %event.id).entered();
            tracing::debug!(code = %notification.notification_type_code, "normalized");
            // Sized for a notification at once (grown from serde_json's 128 bytes, reallocating
            // was 4% of the drain's instructions).
            let mut json = Vec::with_capacity(512);
            let json = match serde_json::to_writer(&mut json, notification) {
                Ok(()) => String::from_utf8(json).unwrap_or_else(|_| "null".into()),
                Err(_) => "null".into(),
            };
            entries.push(NotificationEntry {
                notification_id: notification.notification_id,
                type_code: notification.notification_type_code.clone(),
                json,
            });
            events.push(event);
        }
        Part {
            entries,
            events,
            last,
        }
    }

    /// Commit one normalized part with its events; the last part marks the body processed.
    fn store_part(
        &self,
        j: &Journal,
        raw_id: RawId,
        part: Part,
        out: &mut DrainOutcome,
    ) -> Result<(), JournalError> {
        // `build_part` makes one event per notification, in order.
        let stats =
            j.commit_paired_part(&self.scope, raw_id, &part.entries, &part.events, part.last)?;
        if stats.new_events > 0 {
            self.wake_sinks();
        }
        // One counter update per type and part, not per event.
        let mut by_type: std::collections::BTreeMap<&str, u64> = Default::default();
        for e in &part.events {
            *by_type.entry(e.ty.as_str()).or_default() += 1;
        }
        for (ty, k) in by_type {
            metrics::counter!("espm_bridge_events_emitted_total", "account" => self.scope.account.clone(), "type" => ty.to_string()).increment(k);
        }
        out.new_notifications += stats.new_notifications;
        out.new_events += stats.new_events;
        Ok(())
    }

    async fn quarantine(
        &self,
        endpoint: &str,
        raw_id: RawId,
        error: &str,
    ) -> Result<(), PollError> {
        let c = self.clone();
        let endpoint = endpoint.to_string();
        let error = error.to_string();
        self.journal
            .call(move |j| c.quarantine_blocking(j, &endpoint, raw_id, &error))
            .await?;
        Ok(())
    }

    fn quarantine_blocking(
        &self,
        j: &Journal,
        endpoint: &str,
        raw_id: RawId,
        error: &str,
    ) -> Result<(), JournalError> {
        let origin = self.origin.clone();
        let outcome = j.quarantine(raw_id, error, |id, digest| {
            quarantine_event(
                &origin,
                &BodyQuarantinedData {
                    endpoint: endpoint.to_string(),
                    raw_id: id.0,
                    sha256: digest.to_string(),
                    fragment_of: None,
                    error: error.to_string(),
                    received_at: event_time(chrono::Utc::now()),
                },
            )
        })?;
        self.counted_quarantine(outcome);
        Ok(())
    }

    fn counted_quarantine(&self, outcome: QuarantineOutcome) {
        if matches!(outcome, QuarantineOutcome::Stored(_)) {
            self.wake_sinks();
        }
        let kind = match outcome {
            QuarantineOutcome::Stored(_) => "stored",
            QuarantineOutcome::Duplicate(_) => "duplicate",
        };
        metrics::counter!("espm_bridge_quarantined_bodies_total", "account" => self.scope.account.clone(), "kind" => kind).increment(1);
    }

    fn set_parse_failing(&self, failing: bool) {
        if let Some(s) = &self.status {
            s.parse_failing.store(failing, Ordering::Relaxed);
        }
    }

    fn wake_sinks(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }
}

/// What `espm-bridge journal reprocess` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reprocessed {
    /// Notifications that parsed now.
    pub notifications: usize,
    /// Events newly appended (0 when an earlier run already delivered them: ids are
    /// deterministic).
    pub new_events: usize,
    /// True when it still does not parse (it stays quarantined).
    pub still_bad: bool,
}

/// Parse a quarantined body again (after an upgrade that reads it) and commit what parses.
/// Idempotent: events already appended are not appended again.
pub async fn reprocess(journal: &Journal, raw: RawId) -> Result<Reprocessed, PollError> {
    let body = journal.call(move |j| j.requeue_quarantined(raw)).await?;
    let committer = Committer {
        journal: journal.clone(),
        scope: body.scope.clone(),
        origin: Origin {
            environment: body.scope.environment.clone(),
            account: body.scope.account.clone(),
        },
        wake: Vec::new(),
        status: None,
        client: None,
        lookup_budget: Duration::ZERO,
    };
    let mut out = DrainOutcome::default();
    let p = committer
        .process_stored(body.id, &body.endpoint, &mut out)
        .await?;
    Ok(Reprocessed {
        notifications: p.notifications,
        new_events: out.new_events,
        still_bad: p.bad > 0,
    })
}
