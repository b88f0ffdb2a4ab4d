//! The driver of a sink in [`DeliveryMode::PerEvent`](crate::DeliveryMode::PerEvent): a failing
//! event never holds back the others.
//!
//! Each round delivers the due rows of the sink's retry queue and the next events after its
//! cursor, together. Every new event is settled in the round that read it: delivered,
//! dead-lettered, or moved into the retry queue with its attempt count and next attempt time, in
//! the same journal transaction as the cursor move. So the cursor always moves on, the schedule
//! survives restarts, and a crash re-delivers rather than loses (at least once). Order is not kept
//! across a retry: an event retried after 5 minutes arrives after the events enqueued behind it.
//!
//! A sink with a [`Sink::pipeline_depth`] above 1 has that many rounds on the wire at once (each
//! [`Sink::deliver`]ed on a task of its own), so the endpoint is not left idle while a round's
//! last answers come in and it is settled. Rounds settle in order; when a round's outcomes
//! cannot be stored, the rounds sent behind it are not settled either, and all of them go again.
//!
//! An endpoint that fails every attempt of a round is down, not failing event by event: until an
//! attempt succeeds again the driver reads one new event per back-off delay (a probe, which goes
//! into the retry queue like any other) and leaves the rest of the backlog in the outbox behind
//! the cursor, where it flows at full speed once the endpoint is back, and its retry queue falls
//! due at once (a poison event gets one extra attempt then). Moving a whole backlog into
//! the retry queue made it crawl out at a few thousand events a second (issue 9).
//!
//! Endpoint health lives in the journal too: an [`Outcome::Disabled`] (410 Gone), or every attempt
//! failing for `disable_after`, disables the endpoint; the driver keeps running, polls the flag,
//! and resumes once `espm-bridge webhook enable NAME` clears it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backoff::backoff::Backoff;
use espm_journal::{Journal, NewDeadLetter, NewRetry, OutboxRow, RetryRow, Settlement};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::driver::{blocking, new_backoff, sleep_or_shutdown, write, Metrics, ReadAhead};
use crate::{DriverConfig, Envelope, Outcome, Sink, SinkState};

/// The longest delay one outcome may ask for; a larger one is treated as this.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a disabled endpoint's flag is re-read from the journal.
const DISABLED_POLL: Duration = Duration::from_secs(1);

fn humanize(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// One event of a round: a due retry or a new outbox row.
struct Item {
    row: OutboxRow,
    attempts: u32,
    from_queue: bool,
}

/// Drive `sink` until shutdown (see the module documentation).
pub(crate) async fn run(
    journal: Journal,
    sink: Arc<dyn Sink>,
    cfg: DriverConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    state: Arc<SinkState>,
    disable_after: Option<Duration>,
) {
    let name = sink.name().to_string();
    let batch_size = cfg.batch_size.max(1);
    let mut backoff = new_backoff(&cfg);
    let mut metrics = Metrics {
        sink: name.clone(),
        last_gauges: None,
    };

    macro_rules! journal_failed {
        ($e:expr, $what:literal) => {{
            let e = $e;
            tracing::error!(sink = %name, error = %e, $what);
            state.fail(e);
            metrics.failure("journal", 1);
            let delay = backoff.next_backoff().unwrap_or(cfg.retry_max);
            if sleep_or_shutdown(delay, &shutdown).await {
                return;
            }
            continue;
        }};
    }

    let mut cursor = loop {
        let n = name.clone();
        match blocking(&journal, move |j| j.cursor(&n)).await {
            Ok(c) => break c,
            Err(e) => journal_failed!(e, "cannot read sink cursor"),
        }
    };
    state.cursor.store(cursor, Ordering::Relaxed);
    metrics.refresh(&journal, true).await;
    let mut started = false;
    // While the endpoint is down: when the next new event may be read, as a probe.
    let mut outage: Option<tokio::time::Instant> = None;
    let mut probe_backoff = new_backoff(&cfg);

    // Rounds handed to the sink, oldest first, and the last outbox position read.
    let depth = sink.pipeline_depth().max(1);
    let mut window: VecDeque<Round> = VecDeque::with_capacity(depth);
    let mut read_pos = cursor;
    let mut ahead = ReadAhead::default();

    loop {
        // At shutdown, read nothing new but settle the rounds already sent.
        if shutdown.is_cancelled() && window.is_empty() {
            return;
        }
        // Endpoint health: a disabled endpoint waits for an operator, without a restart.
        let n = name.clone();
        let health = match blocking(&journal, move |j| j.sink_health(&n)).await {
            Ok(h) => h,
            Err(e) => journal_failed!(e, "cannot read endpoint health"),
        };
        let disabled = health.disabled_reason.is_some();
        if let Some(reason) = health.disabled_reason.clone() {
            if window.is_empty() {
                if !state.is_disabled() {
                    tracing::error!(sink = %name, %reason, "endpoint disabled; events stay queued until `espm-bridge webhook enable {name}`");
                    metrics.failure("disabled", 1);
                    state.disable(reason);
                }
                if sleep_or_shutdown(
                    DISABLED_POLL.min(cfg.idle_poll.max(Duration::from_millis(50))),
                    &shutdown,
                )
                .await
                {
                    return;
                }
                continue;
            }
        } else if state.is_disabled() {
            tracing::info!(sink = %name, "endpoint re-enabled; resuming delivery");
            state.clear_disabled();
            started = false;
        }

        if !started && window.is_empty() {
            match sink.start().await {
                Ok(()) => {
                    started = true;
                    state.connected.store(true, Ordering::Relaxed);
                    tracing::info!(sink = %name, kind = sink.kind(), cursor, depth, "sink started (per-event retries)");
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

        // Keep up to `depth` rounds in flight, so the endpoint never waits for the journal.
        // Only a round read with nothing in flight takes due retries (a retry is never sent
        // twice at once), and an endpoint that is down gets one round at a time.
        let mut read_error = None;
        while window.len() < depth
            && !shutdown.is_cancelled()
            && !disabled
            && (outage.is_none() || window.is_empty())
        {
            let fresh_limit = match outage {
                None => batch_size,
                Some(at) if tokio::time::Instant::now() >= at => 1,
                Some(_) => 0,
            };
            let with_due = window.is_empty();
            let now = SystemTime::now();
            let n = name.clone();
            let from = read_pos;
            // What to read for a whole round, even if due retries leave less room.
            let need = ahead.need(read_pos, fresh_limit.min(batch_size));
            let read = blocking(&journal, move |j| {
                let due = if with_due {
                    j.due_retries(&n, now, batch_size)?
                } else {
                    Vec::new()
                };
                let room = fresh_limit.min(batch_size - due.len());
                let read = match need {
                    Some((from, want)) if room > 0 => j.read_outbox_pages(&n, from, want)?,
                    _ => Vec::new(),
                };
                Ok((due, read, room))
            })
            .await;
            let (due, read, room): (Vec<RetryRow>, Vec<OutboxRow>, usize) = match read {
                Ok(r) => r,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            let fresh = ahead.take(read, room);
            if due.is_empty() && fresh.is_empty() {
                break;
            }
            let more = room > 0 && fresh.len() == room;
            let round = send_round(&sink, due, fresh, from);
            read_pos = round.settlement.cursor;
            window.push_back(round);
            if !more {
                break; // the outbox has nothing more right now
            }
        }

        let Some(round) = window.pop_front() else {
            if let Some(e) = read_error {
                journal_failed!(e, "cannot read outbox");
            }
            if outage.is_none() {
                metrics.empty();
            }
            let n = name.clone();
            let next = blocking(&journal, move |j| j.next_retry_at(&n))
                .await
                .ok()
                .flatten();
            let mut wait = cfg.idle_poll;
            if let Some(at) = outage {
                wait = wait.min(at.saturating_duration_since(tokio::time::Instant::now()));
            }
            if let Some(at) = next {
                wait = wait.min(
                    at.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO),
                );
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        };

        let Round {
            items,
            mut settlement,
            outcomes,
            sent,
        } = round;
        // A delivery task that died hands back nothing: its events go again, unsent.
        let mut outcomes = outcomes.await.unwrap_or_default();
        if outcomes.len() != sent {
            tracing::error!(sink = %name, expected = sent, got = outcomes.len(),
                "sink returned a wrong number of outcomes; retrying the rest");
            outcomes.resize(
                sent,
                Outcome::Retry {
                    reason: "sink returned no outcome".into(),
                    retry_after: None,
                    attempts: 0,
                },
            );
        }

        let now = SystemTime::now();
        let mut delivered: Vec<SystemTime> = Vec::new();
        let mut failed_attempts = false;
        let mut last_failure = None;
        for (item, outcome) in items.into_iter().zip(outcomes) {
            let seq = item.row.seq;
            match outcome {
                Outcome::Delivered => {
                    tracing::debug!(sink = %name, seq, event_id = %item.row.event.id, "delivered");
                    delivered.push(item.row.enqueued_at);
                    if item.from_queue {
                        settlement.settled_retries.push(seq);
                    }
                }
                Outcome::DeadLetter { reason, attempts } => {
                    tracing::warn!(sink = %name, seq, event_id = %item.row.event.id, %reason, "dead-lettering event");
                    failed_attempts |= attempts > 0;
                    if item.from_queue {
                        settlement.settled_retries.push(seq);
                    }
                    settlement.dead_letters.push(NewDeadLetter {
                        row: item.row,
                        reason,
                        attempts: item.attempts + attempts,
                    });
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                    attempts,
                } => {
                    failed_attempts |= attempts > 0;
                    // Not sent at all (closing, or the batch was stopped): due again at once;
                    // otherwise the sink's delay (its schedule, or the endpoint's Retry-After).
                    let delay = match (attempts, retry_after) {
                        (0, _) => Duration::ZERO,
                        (_, Some(d)) => d.min(MAX_RETRY_DELAY),
                        (_, None) => cfg.retry_initial,
                    };
                    if attempts > 0 {
                        tracing::info!(sink = %name, seq, event_id = %item.row.event.id, %reason,
                            retry_in = %humanize(delay), "delivery failed; scheduled a retry");
                    }
                    last_failure = Some(reason.clone());
                    settlement.retries.push(NewRetry {
                        row: item.row,
                        attempts: item.attempts + attempts,
                        next_attempt_at: now + delay,
                        last_error: reason,
                    });
                }
                Outcome::Disabled { reason } => {
                    failed_attempts = true;
                    settlement.retries.push(NewRetry {
                        row: item.row,
                        attempts: item.attempts + 1,
                        next_attempt_at: now,
                        last_error: reason.clone(),
                    });
                    settlement.disable = Some(reason);
                }
            }
        }
        settlement.succeeded = if !delivered.is_empty() {
            Some(true)
        } else if failed_attempts {
            Some(false)
        } else {
            None
        };
        if settlement.disable.is_none() && settlement.succeeded == Some(false) {
            if let (Some(limit), Some(since)) = (disable_after, health.failing_since) {
                let failing_for = now.duration_since(since).unwrap_or(Duration::ZERO);
                if failing_for >= limit {
                    settlement.disable = Some(format!(
                        "every attempt failed for {} (limit `disable_after` = {}); last: {}",
                        humanize(failing_for),
                        humanize(limit),
                        last_failure.as_deref().unwrap_or("unknown")
                    ));
                }
            }
        }

        let settlement_succeeded = settlement.succeeded;
        let dead_n = settlement.dead_letters.len() as u64;
        let disable = settlement.disable.clone();
        let new_cursor = settlement.cursor;
        let n = name.clone();
        if let Err(e) = blocking(&journal, move |j| j.settle_batch(&n, &settlement)).await {
            // Nothing moved: this round and those sent behind it are delivered again later (at
            // least once); a later round must never move the cursor over this one's events.
            for later in window.drain(..) {
                drop(later.outcomes.await);
            }
            read_pos = cursor;
            ahead.clear();
            journal_failed!(e, "cannot store the round's outcomes");
        }
        backoff.reset();
        match settlement_succeeded {
            Some(true) => {
                if outage.take().is_some() {
                    // What failed while it was down goes again now, not on its schedule.
                    let n = name.clone();
                    let due = blocking(&journal, move |j| j.retries_due_now(&n)).await;
                    tracing::info!(sink = %name, retries_due_now = ?due, "endpoint answering again; delivering the backlog and the retry queue");
                }
                probe_backoff.reset();
            }
            Some(false) => {
                // The driver's back-off, not the failed events' delays: those are their retry
                // schedule (5 minutes and more), far too slow to notice that the endpoint is back.
                let delay = probe_backoff.next_backoff().unwrap_or(cfg.retry_max);
                if outage.is_none() {
                    tracing::warn!(sink = %name, probe_in = %humanize(delay),
                        "every attempt of the round failed: endpoint down; the backlog waits in the outbox, one event probes per back-off delay");
                }
                outage = Some(tokio::time::Instant::now() + delay);
            }
            None => {}
        }
        cursor = cursor.max(new_cursor);
        state.cursor.store(cursor, Ordering::Relaxed);
        if !delivered.is_empty() {
            metrics.published(delivered.len() as u64);
            metrics.latencies(&delivered, now);
            write(&state.last_delivery, Some(now));
            state.connected.store(true, Ordering::Relaxed);
        } else if let Some(reason) = last_failure {
            state.fail(reason);
        }
        if dead_n > 0 {
            metrics.dead_lettered(dead_n);
        }
        let n = name.clone();
        if let Ok(queued) = blocking(&journal, move |j| j.retry_count(&n)).await {
            metrics::gauge!("espm_bridge_sink_retry_queue", "sink" => name.clone())
                .set(queued as f64);
        }
        metrics.refresh(&journal, dead_n > 0).await;
        if let Some(reason) = disable {
            tracing::error!(sink = %name, %reason, "disabling endpoint");
        }
    }
}

/// A round handed to the sink whose outcomes are outstanding.
struct Round {
    items: Vec<Item>,
    /// What settling it stores, so far: its cursor and the retries the sink no longer wants.
    settlement: Settlement,
    /// How many envelopes were sent.
    sent: usize,
    outcomes: tokio::task::JoinHandle<Vec<Outcome>>,
}

/// Hand a round (due retries first, then new events read after `from`) to the sink on a task
/// of its own, so that the next round can be read and sent while this one is on the wire.
fn send_round(sink: &Arc<dyn Sink>, due: Vec<RetryRow>, fresh: Vec<OutboxRow>, from: i64) -> Round {
    let mut settlement = Settlement {
        cursor: fresh.last().map_or(from, |r| r.seq),
        ..Settlement::default()
    };
    let mut items = Vec::new();
    for r in due {
        if sink.accepts(&r.row.event) {
            items.push(Item {
                row: r.row,
                attempts: r.attempts,
                from_queue: true,
            });
        } else {
            // The filter changed since it was queued: the sink no longer wants it.
            settlement.settled_retries.push(r.row.seq);
        }
    }
    items.extend(
        fresh
            .into_iter()
            .filter(|r| sink.accepts(&r.event))
            .map(|row| Item {
                row,
                attempts: 0,
                from_queue: false,
            }),
    );
    let envelopes: Vec<Envelope> = items
        .iter()
        .map(|i| Envelope {
            seq: i.row.seq,
            event: i.row.event.clone(),
            enqueued_at: i.row.enqueued_at,
            attempts: i.attempts,
        })
        .collect();
    let sent = envelopes.len();
    let sink = sink.clone();
    let outcomes = tokio::spawn(async move {
        if envelopes.is_empty() {
            Vec::new()
        } else {
            sink.deliver(&envelopes).await
        }
    });
    Round {
        items,
        settlement,
        sent,
        outcomes,
    }
}
