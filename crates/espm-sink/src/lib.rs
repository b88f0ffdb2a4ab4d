//! The sink contract and the outbox delivery driver, plus the console and file sinks.
//!
//! Every sink (Kafka, NATS, webhook, console, file) implements [`Sink`]. The driver owns one
//! cursor per sink in the journal: it reads a batch after the cursor, hands it to
//! [`Sink::deliver`], and moves the cursor only past events the sink reported as
//! [`Outcome::Delivered`] (or dead-lettered). A sink therefore never acknowledges anything itself.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

mod console;
mod driver;
mod file;
mod retry_queue;

pub use console::ConsoleSink;
pub use driver::{run_sink, DriverConfig, SinkState};
pub use espm_events::CloudEvent;
pub use file::FileSink;

/// One event on its way out, with the outbox position it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Outbox sequence number (monotonic per journal).
    pub seq: i64,
    /// The event itself (shared with the outbox row it was read from).
    pub event: std::sync::Arc<CloudEvent>,
    /// When the event entered the outbox; end-to-end latency and retry max-age count from here.
    pub enqueued_at: SystemTime,
    /// Delivery attempts already made by this sink for this event before this batch (0 first time).
    pub attempts: u32,
}

/// The outcomes of a [`Sink::submit`]ted batch, one per envelope in order, once known.
pub type Acks = Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'static>>;

/// What happened to one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The broker or endpoint acknowledged it.
    Delivered,
    /// A transient failure: the driver keeps the event and tries again later.
    Retry {
        /// Human-readable cause, for logs and metrics.
        reason: String,
        /// A server-requested delay (`Retry-After`), if any.
        retry_after: Option<Duration>,
        /// Attempts this `deliver` call made for the event: 0 when it was not sent at all (an
        /// earlier event stopped the batch), more than 1 when the sink retried in place. The
        /// driver adds them to the event's count, so budgets and dead letters tell the truth.
        attempts: u32,
    },
    /// Permanently undeliverable (retry budget spent, or a permanent rejection): the driver stores
    /// it as a dead letter and moves on.
    DeadLetter {
        /// Why, for `espm-bridge dlq list`.
        reason: String,
        /// Attempts this `deliver` call made for the event (0: refused without sending).
        attempts: u32,
    },
    /// The endpoint asked to be disabled (webhook 410 Gone). The event stays in the outbox and the
    /// sink stops until an operator re-enables it.
    Disabled {
        /// Why, for logs and `/readyz`.
        reason: String,
    },
}

/// How the driver handles an event the sink could not deliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Strict order (Kafka, NATS, ...): at [`Outcome::Retry`] the driver backs off and tries the
    /// same events again; nothing behind a failing event is delivered before it.
    #[default]
    InOrder,
    /// Each event on its own schedule (webhooks): an event that gets [`Outcome::Retry`] moves to
    /// the sink's retry queue in the journal, due after the outcome's `retry_after`, and the
    /// events behind it are delivered meanwhile. Order is therefore not kept across a retry. An
    /// [`Outcome::Disabled`] endpoint is disabled in the journal until an operator re-enables it
    /// (the driver keeps running and notices).
    PerEvent {
        /// Disable the endpoint once every attempt has failed for this long (`None`: never).
        disable_after: Option<Duration>,
    },
}

/// Errors a sink reports outside of per-event outcomes.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Invalid sink configuration (bad template, bad URL, missing secret...).
    #[error("sink {sink}: invalid configuration: {message}")]
    Config {
        /// Sink name.
        sink: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The broker or endpoint cannot be reached or refused us.
    #[error("sink {sink}: not connected: {message}")]
    Unavailable {
        /// Sink name.
        sink: String,
        /// The underlying cause.
        message: String,
    },
    /// Anything else (I/O of the file sink, ...).
    #[error("sink {sink}: {message}")]
    Other {
        /// Sink name.
        sink: String,
        /// The underlying cause.
        message: String,
    },
}

impl SinkError {
    /// `Ok` when `problems` (a sink configuration's `validate()`) is empty, else one
    /// [`SinkError::Config`] listing them all. Sink constructors start with this, so they reject
    /// exactly what `check-config` rejects.
    pub fn check(sink: &str, problems: Vec<espm_config::ConfigProblem>) -> Result<(), SinkError> {
        if problems.is_empty() {
            return Ok(());
        }
        Err(SinkError::Config {
            sink: sink.to_string(),
            message: problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// A destination for events. Implementations do I/O only; batching, cursors and retries of
/// failed events across batches belong to the driver.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The configured name; it keys the sink's cursor in the journal, so it must be stable.
    fn name(&self) -> &str;

    /// The sink type: `kafka`, `nats`, `webhook`, `console` or `file`.
    fn kind(&self) -> &'static str;

    /// Whether this sink wants the event at all (e.g. a webhook type filter). Events it does not
    /// want are acknowledged without being sent.
    fn accepts(&self, _event: &CloudEvent) -> bool {
        true
    }

    /// How the driver treats failed events; [`DeliveryMode::InOrder`] unless the sink opts in.
    fn delivery_mode(&self) -> DeliveryMode {
        DeliveryMode::InOrder
    }

    /// Connect, and create or verify topics and streams when configured. Called once before the
    /// first batch and again after an [`Outcome::Retry`] streak; must be idempotent.
    async fn start(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Send a batch, pipelined up to the sink's in-flight limit, and wait for every
    /// acknowledgement. Returns exactly one outcome per envelope, in the same order.
    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome>;

    /// How many batches the driver may have in flight at once ([`Sink::submit`]ted, not yet
    /// acknowledged; in [`DeliveryMode::PerEvent`], rounds [`Sink::deliver`]ed at once). 1, the
    /// default, means one batch at a time.
    fn pipeline_depth(&self) -> usize {
        1
    }

    /// Hand a batch to the broker in order and return its acknowledgements without waiting for
    /// them, so that the next batch goes out while this one's acks are on their way. When this
    /// returns, every record of the batch is ordered before those of any later call. The
    /// returned future yields exactly one outcome per envelope, in order, and must make
    /// progress without being polled (the driver awaits the oldest batch first). The default
    /// delivers the batch and returns its finished outcomes.
    async fn submit(&self, batch: Vec<Envelope>) -> Acks {
        let outcomes = self.deliver(&batch).await;
        Box::pin(std::future::ready(outcomes))
    }

    /// Whether the sink is connected and able to deliver, for `/readyz`.
    async fn health(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Flush buffered work before shutdown, waiting at most `grace`.
    async fn close(&self, _grace: Duration) {}
}
