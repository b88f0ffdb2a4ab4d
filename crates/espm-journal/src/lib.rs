//! The durable SQLite journal: raw bodies, quarantine, notifications, outbox, cursors, dead letters.
