//! Kafka sink: idempotent producer, CloudEvents Kafka binding.
//!
//! Layout follows Vector's sinks: [`request_builder`] maps an event to a record (pure),
//! `service` owns the producer I/O, and [`KafkaSink`] implements [`espm_sink::Sink`].
//! The configuration is [`espm_config::KafkaSinkConfig`].

#![deny(missing_docs)]

pub mod request_builder;
mod service;
mod sink;

pub use request_builder::{BuildError, KafkaRequest, RequestBuilder};
pub use sink::KafkaSink;
