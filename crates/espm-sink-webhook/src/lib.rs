//! HTTP webhook sink: Standard Webhooks signing, retries, dead letters.
//!
//! Layout (Vector-style): [`signing`] and [`request_builder`] are pure; [`service`] performs and
//! classifies one POST; [`sink`] holds the [`WebhookSink`] with its retry loop and concurrency.

pub mod request_builder;
pub mod secrets;
pub mod service;
pub mod signing;
pub mod sink;

pub use secrets::signer_from_source;
pub use signing::{SecretFormatError, Signer, SigningKey};
pub use sink::{TypeFilter, WebhookSink};
