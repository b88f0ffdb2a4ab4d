//! The outbox delivery driver: one task per sink moving that sink's cursor through the journal.
//!
//! Delivery is at least once. The cursor only moves over a contiguous prefix of events the sink
//! delivered or dead-lettered, together with those dead letters in one journal transaction, so a
//! crash at any point re-delivers rather than loses.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use espm_journal::{Journal, JournalError, NewDeadLetter, OutboxRow};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Acks, DeliveryMode, Envelope, Outcome, Sink};

/// After this many consecutive [`Outcome::Retry`] batches the driver calls [`Sink::start`] again
/// (reconnect, re-verify topics) before the next attempt.
const RESTART_AFTER_RETRIES: u32 = 3;

/// The longest `Retry-After` the driver honours; a larger value is treated as this.
const MAX_HONOURED_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// At most this many deliveries are settled in one journal transaction.
const GROUP_MAX: usize = 20_000;

/// Gauges that need a COUNT over the outbox are refreshed at most this often while busy.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Tuning of one sink's driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Events read from the outbox and handed to the sink per batch.
    pub batch_size: usize,
    /// How long to sleep when the outbox is empty, if nobody wakes the driver sooner.
    pub idle_poll: Duration,
    /// First back-off delay after a failed batch.
    pub retry_initial: Duration,
    /// Longest back-off delay (a server's `Retry-After` may ask for more and is honoured).
    pub retry_max: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_poll: Duration::from_millis(250),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// Live state of one sink's driver, shared with `/readyz`.
#[derive(Debug, Default)]
pub struct SinkState {
    pub(crate) connected: AtomicBool,
    disabled: AtomicBool,
    pub(crate) cursor: AtomicI64,
    last_error: RwLock<Option<String>>,
    disabled_reason: RwLock<Option<String>>,
    pub(crate) last_delivery: RwLock<Option<SystemTime>>,
}

impl SinkState {
    /// A fresh state: not connected, not disabled, no error, nothing delivered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the last `start` or batch succeeded (false after a failure until the next success).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the sink reported [`Outcome::Disabled`]; its driver has stopped.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Connected and not disabled.
    pub fn is_ready(&self) -> bool {
        self.is_connected() && !self.is_disabled()
    }

    /// Why the sink was disabled, if it was.
    pub fn disabled_reason(&self) -> Option<String> {
        read(&self.disabled_reason)
    }

    /// The most recent failure (start, delivery or journal), kept after recovery for diagnosis.
    pub fn last_error(&self) -> Option<String> {
        read(&self.last_error)
    }

    /// When the driver last moved the cursor over a delivered event.
    pub fn last_delivery(&self) -> Option<SystemTime> {
        read(&self.last_delivery)
    }

    /// The sink's cursor as last stored in the journal.
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// Clear the disabled flag (an operator re-enabled the sink); the caller restarts the driver.
    pub fn clear_disabled(&self) {
        self.disabled.store(false, Ordering::Relaxed);
        write(&self.disabled_reason, None);
    }

    pub(crate) fn fail(&self, error: String) {
        self.connected.store(false, Ordering::Relaxed);
        write(&self.last_error, Some(error));
    }

    pub(crate) fn disable(&self, reason: String) {
        self.disabled.store(true, Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        write(&self.last_error, Some(reason.clone()));
        write(&self.disabled_reason, Some(reason));
    }
}

// A poisoned lock only means a panic elsewhere while holding a plain value; the value is fine.
fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

pub(crate) fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(|p| p.into_inner()) = v;
}

/// Run a journal call on the blocking pool.
pub(crate) async fn blocking<T, F>(journal: &Journal, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
{
    journal.call(f).await.map_err(|e| format!("journal: {e}"))
}

/// Sleep, unless shutdown comes first. Returns true on shutdown.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

pub(crate) fn new_backoff(cfg: &DriverConfig) -> ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(cfg.retry_initial)
        .with_max_interval(cfg.retry_max.max(cfg.retry_initial))
        .with_randomization_factor(0.5)
        .with_multiplier(2.0)
        .with_max_elapsed_time(None)
        .build()
}

pub(crate) struct Metrics {
    pub(crate) sink: String,
    pub(crate) last_gauges: Option<Instant>,
}

impl Metrics {
    /// A batch the driver stopped (per batch; failed attempts per event are the sinks'
    /// `espm_bridge_sink_attempt_failures_total`).
    pub(crate) fn failure(&self, reason: &'static str, n: u64) {
        metrics::counter!("espm_bridge_sink_stalls_total", "sink" => self.sink.clone(), "reason" => reason)
            .increment(n);
    }

    /// Events given up on (per event): an outcome, like `published`.
    pub(crate) fn dead_lettered(&self, n: u64) {
        metrics::counter!("espm_bridge_sink_dead_lettered_total", "sink" => self.sink.clone())
            .increment(n);
    }

    pub(crate) fn published(&self, n: u64) {
        metrics::counter!("espm_bridge_sink_published_total", "sink" => self.sink.clone())
            .increment(n);
    }

    /// Each delivered event's time from enqueue to `now`. One histogram lookup for the lot: a
    /// lookup per event (label string, hash, registry) was about 1% of a Kafka burst's CPU.
    pub(crate) fn latencies(&self, enqueued: &[SystemTime], now: SystemTime) {
        let h = metrics::histogram!("espm_bridge_delivery_latency_seconds", "sink" => self.sink.clone());
        for at in enqueued {
            h.record(
                now.duration_since(*at)
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64(),
            );
        }
    }

    pub(crate) fn empty(&mut self) {
        metrics::gauge!("espm_bridge_outbox_depth", "sink" => self.sink.clone()).set(0.0);
        metrics::gauge!("espm_bridge_outbox_oldest_age_seconds", "sink" => self.sink.clone())
            .set(0.0);
    }

    /// Refresh depth, age and DLQ gauges from the journal (throttled unless `force`).
    pub(crate) async fn refresh(&mut self, journal: &Journal, force: bool) {
        if !force
            && self
                .last_gauges
                .is_some_and(|t| t.elapsed() < GAUGE_INTERVAL)
        {
            return;
        }
        self.last_gauges = Some(Instant::now());
        let name = self.sink.clone();
        let res = blocking(journal, move |j| {
            Ok((j.outbox_depth(&name)?, j.dlq_count(Some(&name))?))
        })
        .await;
        match res {
            Ok((depth, dlq)) => {
                let age = depth
                    .oldest_enqueued_at
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or(Duration::ZERO);
                metrics::gauge!("espm_bridge_outbox_depth", "sink" => self.sink.clone())
                    .set(depth.pending as f64);
                metrics::gauge!("espm_bridge_outbox_oldest_age_seconds", "sink" => self.sink.clone())
                    .set(age.as_secs_f64());
                metrics::gauge!("espm_bridge_dlq_size", "sink" => self.sink.clone())
                    .set(dlq as f64);
            }
            Err(e) => tracing::warn!(sink = %self.sink, error = %e, "cannot refresh outbox gauges"),
        }
    }
}

/// Why a batch stopped before its end.
enum Stop {
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Disabled {
        reason: String,
    },
}

/// Deliver the outbox to one sink until shutdown or until the sink disables itself.
///
/// This describes [`DeliveryMode::InOrder`]; a sink in [`DeliveryMode::PerEvent`] is driven by
/// its retry queue instead (see that variant).
///
/// Reads batches after the sink's journal cursor, hands the events the sink accepts to
/// [`Sink::deliver`] and moves the cursor over the contiguous prefix of delivered or
/// dead-lettered events (dead letters are stored in the same transaction). At the first
/// [`Outcome::Retry`] it backs off (exponential with jitter, at least the sink's `retry_after`)
/// and re-reads from the cursor, so events after the failed one may be delivered again. At
/// [`Outcome::Disabled`] it marks `state` disabled and returns, leaving the events in the outbox.
///
/// When idle it waits for `wake` or `cfg.idle_poll`. Wake it with `wake.notify_one()` (the
/// permit is kept if the driver is busy); with one `Notify` shared by several drivers use
/// `notify_waiters()`, and `idle_poll` bounds the delay of a missed wake-up.
///
/// A sink with a [`Sink::pipeline_depth`] above 1 has that many batches in flight: the next
/// ones are [`Sink::submit`]ted while the oldest one's acknowledgements are awaited, so the
/// broker never waits for the journal. Settling stays in order; after a failure the batches
/// sent behind the failed event are read again from the cursor (sent twice, never skipped).
///
/// On `shutdown` it takes no new batch; the batches in flight are finished unless the caller
/// drops this future (bound it with a grace timeout), in which case their events are delivered
/// again after restart. The caller calls [`Sink::close`] afterwards.
pub async fn run_sink(
    journal: Journal,
    sink: Arc<dyn Sink>,
    cfg: DriverConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    state: Arc<SinkState>,
) {
    if let DeliveryMode::PerEvent { disable_after } = sink.delivery_mode() {
        return crate::retry_queue::run(journal, sink, cfg, wake, shutdown, state, disable_after)
            .await;
    }
    let name = sink.name().to_string();
    let batch_size = cfg.batch_size.max(1);
    let mut backoff = new_backoff(&cfg);
    let mut metrics = Metrics {
        sink: name.clone(),
        last_gauges: None,
    };

    // Registering the sink makes compaction keep what it has not seen.
    let mut cursor = loop {
        let n = name.clone();
        match blocking(&journal, move |j| j.cursor(&n)).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "cannot read sink cursor");
                state.fail(e);
                metrics.failure("journal", 1);
                let delay = backoff.next_backoff().unwrap_or(cfg.retry_max);
                if sleep_or_shutdown(delay, &shutdown).await {
                    return;
                }
            }
        }
    };
    state.cursor.store(cursor, Ordering::Relaxed);
    metrics.refresh(&journal, true).await;

    let mut attempts: HashMap<i64, u32> = HashMap::new();
    let mut started = false;
    let mut retry_streak = 0u32;
    let depth = sink.pipeline_depth().max(1);
    // Batches handed to the sink, oldest first, and the last outbox position read.
    let mut window: VecDeque<InFlight> = VecDeque::with_capacity(depth);
    let mut read_pos = cursor;
    let mut ahead = ReadAhead::default();

    loop {
        // At shutdown, take no new batch but settle what is already in flight.
        if shutdown.is_cancelled() && window.is_empty() {
            return;
        }
        if !started {
            match sink.start().await {
                Ok(()) => {
                    started = true;
                    state.connected.store(true, Ordering::Relaxed);
                    tracing::info!(sink = %name, kind = sink.kind(), cursor, depth, "sink started");
                }
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "sink start failed");
                    state.fail(e.to_string());
                    metrics.failure("unavailable", 1);
                    let delay = backoff.next_backoff().unwrap_or(cfg.retry_max);
                    if sleep_or_shutdown(delay, &shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }

        // Keep up to `depth` batches in flight.
        let mut read_error = None;
        while window.len() < depth && !shutdown.is_cancelled() {
            let mut read = Vec::new();
            if let Some((from, want)) = ahead.need(read_pos, batch_size) {
                let n = name.clone();
                match blocking(&journal, move |j| j.read_outbox_pages(&n, from, want)).await {
                    Ok(rows) => read = rows,
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
            }
            let rows = ahead.take(read, batch_size);
            let Some(last) = rows.last() else { break };
            read_pos = last.seq;
            let full = rows.len() == batch_size;
            window.push_back(submit(sink.as_ref(), rows, &attempts).await);
            if !full {
                break; // the outbox has nothing more right now
            }
        }

        let Some(batch) = window.pop_front() else {
            if let Some(e) = read_error {
                tracing::error!(sink = %name, error = %e, "cannot read outbox");
                state.fail(e);
                metrics.failure("journal", 1);
                let delay = backoff.next_backoff().unwrap_or(cfg.retry_max);
                if sleep_or_shutdown(delay, &shutdown).await {
                    return;
                }
                continue;
            }
            metrics.empty();
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(cfg.idle_poll) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        };
        let mut walk = Walk {
            new_cursor: cursor,
            dead: Vec::new(),
            delivered: Vec::new(),
        };
        let outcomes = batch.acks.await;
        let mut stop = walk.batch(&name, &batch.rows, &batch.accepted, outcomes, &mut attempts);
        // Group commit: batches already acknowledged behind this one settle in the same
        // journal transaction (one fsync).
        while stop.is_none() && walk.delivered.len() < GROUP_MAX {
            let Some(next) = window.front_mut() else {
                break;
            };
            let Poll::Ready(outcomes) = futures::poll!(next.acks.as_mut()) else {
                break;
            };
            let Some(next) = window.pop_front() else {
                break;
            };
            stop = walk.batch(&name, &next.rows, &next.accepted, outcomes, &mut attempts);
        }
        let Walk {
            new_cursor,
            dead,
            delivered,
        } = walk;
        let now = SystemTime::now();

        if stop.is_some() {
            // Batches sent after the failed one are read again from the cursor; their attempts
            // still count.
            for later in window.drain(..) {
                let outcomes = later.acks.await;
                let made = attempts_made(&outcomes);
                count_attempts(
                    &mut attempts,
                    &later.rows,
                    &later.accepted,
                    &made,
                    new_cursor,
                );
            }
            read_pos = new_cursor;
            ahead.clear();
        }

        if new_cursor != cursor || !dead.is_empty() {
            let n = name.clone();
            let dead_n = dead.len() as u64;
            match blocking(&journal, move |j| j.settle(&n, &dead, new_cursor)).await {
                Ok(()) => {
                    cursor = new_cursor;
                    state.cursor.store(cursor, Ordering::Relaxed);
                    attempts.retain(|seq, _| *seq > cursor);
                    if !delivered.is_empty() {
                        metrics.published(delivered.len() as u64);
                        metrics.latencies(&delivered, now);
                        write(&state.last_delivery, Some(now));
                    }
                    if dead_n > 0 {
                        metrics.dead_lettered(dead_n);
                    }
                    metrics.refresh(&journal, dead_n > 0).await;
                }
                Err(e) => {
                    // Nothing moved: everything after the cursor is delivered again later (at
                    // least once).
                    tracing::error!(sink = %name, error = %e, "cannot store sink cursor");
                    state.fail(e);
                    metrics.failure("journal", 1);
                    for later in window.drain(..) {
                        drop(later.acks.await);
                    }
                    read_pos = cursor;
                    ahead.clear();
                    let delay = backoff.next_backoff().unwrap_or(cfg.retry_max);
                    if sleep_or_shutdown(delay, &shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }

        match stop {
            None => {
                backoff.reset();
                retry_streak = 0;
                state.connected.store(true, Ordering::Relaxed);
            }
            Some(Stop::Disabled { reason }) => {
                tracing::error!(sink = %name, %reason, cursor, "sink disabled itself; its events stay in the outbox");
                metrics.failure("disabled", 1);
                state.disable(reason);
                return;
            }
            Some(Stop::Retry {
                reason,
                retry_after,
            }) => {
                retry_streak += 1;
                if retry_streak >= RESTART_AFTER_RETRIES {
                    started = false;
                }
                let mut delay = backoff.next_backoff().unwrap_or(cfg.retry_max);
                if let Some(ra) = retry_after {
                    // Honour the server, but never let one header park the sink for days.
                    delay = delay.max(ra.min(MAX_HONOURED_RETRY_AFTER));
                }
                tracing::warn!(sink = %name, %reason, ?delay, cursor, "delivery failed; backing off");
                metrics.failure("retry", 1);
                state.fail(reason);
                if sleep_or_shutdown(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Outbox events read past a driver's position and not yet handed out: the rest of a page. A
/// drain part's events share one page (1,000), more than a batch; reading whole pages and
/// cutting batches from them reads and decodes each page once, not once per batch.
#[derive(Default)]
pub(crate) struct ReadAhead {
    rows: VecDeque<OutboxRow>,
}

impl ReadAhead {
    /// Where the next read starts, and how many events it needs, for `n` events to be held;
    /// `None` when enough are held already.
    pub(crate) fn need(&self, pos: i64, n: usize) -> Option<(i64, usize)> {
        let held = self.rows.len();
        (held < n).then(|| (self.rows.back().map_or(pos, |r| r.seq), n - held))
    }

    /// Keep what a read returned, then hand out up to `n` events in order.
    pub(crate) fn take(&mut self, read: Vec<OutboxRow>, n: usize) -> Vec<OutboxRow> {
        self.rows.extend(read);
        self.rows.drain(..n.min(self.rows.len())).collect()
    }

    /// Forget what is held: the driver goes back to its cursor.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }
}

/// A batch handed to the sink whose acknowledgements are outstanding.
struct InFlight {
    rows: Vec<OutboxRow>,
    /// Per row: whether the sink wanted it (only those were sent).
    accepted: Vec<bool>,
    acks: Acks,
}

/// What one settle stores: the cursor over the contiguous settled prefix, dead letters, and the
/// enqueue times of what was delivered (for the latency histogram).
struct Walk {
    new_cursor: i64,
    dead: Vec<NewDeadLetter>,
    delivered: Vec<SystemTime>,
}

impl Walk {
    /// Walk one batch's outcomes in order. Returns why it stopped before the end, if it did;
    /// events the cursor does not pass keep their attempt count for the next batch.
    fn batch(
        &mut self,
        sink: &str,
        rows: &[OutboxRow],
        accepted: &[bool],
        mut outcomes: Vec<Outcome>,
        attempts: &mut HashMap<i64, u32>,
    ) -> Option<Stop> {
        let envelopes = accepted.iter().filter(|a| **a).count();
        if outcomes.len() != envelopes {
            tracing::error!(
                sink,
                expected = envelopes,
                got = outcomes.len(),
                "sink returned a wrong number of outcomes; retrying the rest"
            );
            outcomes.resize(
                envelopes,
                Outcome::Retry {
                    reason: "sink returned no outcome".into(),
                    retry_after: None,
                    attempts: 0,
                },
            );
        }
        let made = attempts_made(&outcomes);
        let mut stop = None;
        let mut outcome_iter = outcomes.into_iter();
        for (row, ok) in rows.iter().zip(accepted) {
            if !*ok {
                self.new_cursor = row.seq;
                continue;
            }
            let Some(outcome) = outcome_iter.next() else {
                break; // unreachable: outcomes were resized to match
            };
            match outcome {
                Outcome::Delivered => {
                    tracing::debug!(sink, seq = row.seq, event_id = %row.event.id, "delivered");
                    self.new_cursor = row.seq;
                    self.delivered.push(row.enqueued_at);
                }
                Outcome::DeadLetter {
                    reason,
                    attempts: n,
                } => {
                    tracing::warn!(sink, seq = row.seq, event_id = %row.event.id, %reason, "dead-lettering event");
                    self.dead.push(NewDeadLetter {
                        row: row.clone(),
                        reason,
                        attempts: attempts.get(&row.seq).copied().unwrap_or(0) + n,
                    });
                    self.new_cursor = row.seq;
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                    ..
                } => {
                    stop = Some(Stop::Retry {
                        reason,
                        retry_after,
                    });
                    break;
                }
                Outcome::Disabled { reason } => {
                    stop = Some(Stop::Disabled { reason });
                    break;
                }
            }
        }
        count_attempts(attempts, rows, accepted, &made, self.new_cursor);
        stop
    }
}

/// Hand the rows the sink wants to it ([`Sink::submit`]; a sink that does not pipeline
/// delivers them before it returns).
async fn submit(sink: &dyn Sink, rows: Vec<OutboxRow>, attempts: &HashMap<i64, u32>) -> InFlight {
    let accepted: Vec<bool> = rows.iter().map(|r| sink.accepts(&r.event)).collect();
    let envelopes: Vec<Envelope> = rows
        .iter()
        .zip(&accepted)
        .filter(|(_, a)| **a)
        .map(|(r, _)| Envelope {
            seq: r.seq,
            event: r.event.clone(),
            enqueued_at: r.enqueued_at,
            attempts: attempts.get(&r.seq).copied().unwrap_or(0),
        })
        .collect();
    let acks: Acks = if envelopes.is_empty() {
        Box::pin(std::future::ready(Vec::new()))
    } else {
        sink.submit(envelopes).await
    };
    InFlight {
        rows,
        accepted,
        acks,
    }
}

/// Every attempt the sink made counts, whatever the batch's fate: an event handed back unsent
/// counts nothing, one retried in place counts each try.
fn attempts_made(outcomes: &[Outcome]) -> Vec<u32> {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Retry { attempts, .. } | Outcome::DeadLetter { attempts, .. } => *attempts,
            Outcome::Delivered | Outcome::Disabled { .. } => 0,
        })
        .collect()
}

/// Events the cursor does not pass keep their attempt count for the next batch.
fn count_attempts(
    attempts: &mut HashMap<i64, u32>,
    rows: &[OutboxRow],
    accepted: &[bool],
    made: &[u32],
    cursor: i64,
) {
    let sent = rows
        .iter()
        .zip(accepted)
        .filter(|(_, ok)| **ok)
        .map(|(r, _)| r);
    for (row, n) in sent.zip(made) {
        if row.seq > cursor && *n > 0 {
            *attempts.entry(row.seq).or_insert(0) += n;
        }
    }
}
