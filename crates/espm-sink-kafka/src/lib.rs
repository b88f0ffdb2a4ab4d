//! Kafka sink: idempotent producer, CloudEvents Kafka binding.
