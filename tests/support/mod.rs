//! Shared helpers for the end-to-end tests (child processes, brokers, ports).
