//! NATS JetStream sink: deduplicated publishes, CloudEvents headers.
