//! Command topics: commands for Portfolio Manager consumed as CloudEvents from Kafka topics (a
//! consumer group) and JetStream streams (a durable pull consumer), run through
//! [`espm_command::Commander`].
//!
//! The invariant: **a message is committed (Kafka offset) or acknowledged (JetStream) only
//! after its command's result is journalled** ([`Commander::submit`] or
//! [`Commander::reject_malformed`] returned `Ok`). So:
//! - a bridge stopped or killed before that re-reads the message, and the commander's
//!   idempotency by id (the CloudEvent `id`) makes sure PM is called once;
//! - a journal that cannot take the result stops the line: the message is retried with
//!   back-off, never skipped;
//! - a malformed message (not JSON, not a CloudEvent, an unknown type, missing or invalid
//!   fields) is answered with a `gov.energystar.pm.command.failed` event naming the problem and
//!   then committed: it never blocks the commands behind it.
//!
//! Which provider account: the `espmaccount` attribute, else `data.account`, else the entry's
//! `account`, else the only configured account. Who asks (`requester`): the event's `source`.
//!
//! Both structured mode (`application/cloudevents+json`) and binary mode (`ce_*` Kafka headers,
//! `ce-*` NATS headers, the body is `data`) are read, per the CloudEvents Kafka and NATS
//! protocol bindings.

#![deny(missing_docs)]

mod handle;
mod kafka;
mod nats;
pub mod parse;

use espm_command::Commander;
use espm_config::CommandTopicConfig;
use tokio_util::sync::CancellationToken;

pub use kafka::KafkaCommandConsumer;
pub use nats::NatsCommandConsumer;
pub use parse::{AnswerData, Binding, DisconnectData, Parsed, UnshareData};

/// The command event types: the one list the consumers, their docs and tests use.
pub mod types {
    /// Accept or reject a pending connection, property share or meter share request.
    pub const ANSWER: &str = "gov.energystar.pm.command.answer";
    /// Disconnect from a customer.
    pub const DISCONNECT: &str = "gov.energystar.pm.command.disconnect";
    /// Stop receiving a property's or a meter's share.
    pub const UNSHARE: &str = "gov.energystar.pm.command.unshare";
    /// Create a customer account connected to the provider.
    pub const CREATE_CUSTOMER: &str = "gov.energystar.pm.command.create_customer";
    /// Every command type.
    pub const ALL: [&str; 4] = [ANSWER, DISCONNECT, UNSHARE, CREATE_CUSTOMER];
}

/// The JSON Schema of the `data` of a command event type, for event catalogues (AsyncAPI);
/// `None` for a type that is not a command. The `create_customer` schema is the command API's
/// body (its optional `account` is not listed); `unshare` takes exactly one of its two ids.
pub fn data_schema(ty: &str) -> Option<serde_json::Value> {
    let schema = match ty {
        types::ANSWER => schemars::schema_for!(AnswerData),
        types::DISCONNECT => schemars::schema_for!(DisconnectData),
        types::UNSHARE => schemars::schema_for!(UnshareData),
        types::CREATE_CUSTOMER => schemars::schema_for!(espm_command::CreateCustomerBody),
        _ => return None,
    };
    Some(schema.to_value())
}

/// Why a command consumer cannot run. Broker outages are not errors: the consumers retry
/// with back-off until stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommandTopicError {
    /// The entry is invalid or one of its secrets cannot be read.
    #[error("command_topics {name}: {message}")]
    Config {
        /// The entry's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Run one `[[command_topics]]` entry until `stop` is cancelled. Returns `Ok` once stopped; an
/// error only for a configuration that cannot run (checked before any I/O).
pub async fn run(
    cfg: &CommandTopicConfig,
    commander: Commander,
    stop: CancellationToken,
) -> Result<(), CommandTopicError> {
    match cfg {
        CommandTopicConfig::Kafka(k) => KafkaCommandConsumer::new(k)?.run(commander, stop).await,
        CommandTopicConfig::Nats(n) => NatsCommandConsumer::new(n)?.run(commander, stop).await,
    }
}

/// Check an entry the way [`run`] does before any I/O: the configuration and its secrets.
pub fn check(cfg: &CommandTopicConfig) -> Result<(), CommandTopicError> {
    match cfg {
        CommandTopicConfig::Kafka(k) => KafkaCommandConsumer::new(k).map(drop),
        CommandTopicConfig::Nats(n) => NatsCommandConsumer::new(n).map(drop),
    }
}

fn config_error(name: &str, problems: Vec<espm_config::ConfigProblem>) -> CommandTopicError {
    CommandTopicError::Config {
        name: name.to_string(),
        message: problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    }
}
