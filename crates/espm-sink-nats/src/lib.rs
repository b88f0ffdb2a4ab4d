//! NATS JetStream sink: deduplicated publishes, CloudEvents headers.
//!
//! Layout: [`request_builder`] maps an event to subject, headers and payload (pure, unit
//! tested); `service` holds connection and publish I/O; [`NatsSink`] implements
//! [`espm_sink::Sink`].
//!
//! Each message carries the whole structured CloudEvent as JSON
//! (`content-type: application/cloudevents+json`) plus `ce-*` headers for routing without
//! parsing. In JetStream mode `Nats-Msg-Id` is the event id, so a publish retried within the
//! stream's duplicate window is stored once and acknowledged with `duplicate: true`.

pub mod request_builder;
mod service;
mod sink;

pub use request_builder::{
    build_request, is_valid_publish_subject, render_subject, sanitize_subject, NatsRequest,
    CONTENT_TYPE,
};
pub use sink::{NatsSink, DEFAULT_STREAM_SUBJECTS};
