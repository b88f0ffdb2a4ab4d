//! Test support shared by espm-bridge's test suites (never published).
//!
//! - [`sim`]: start the PM simulator and drive it through a typed client for its control API
//!   (`/sim`: customers, connection and share requests, customer actions, bulk notifications,
//!   faults, the ledger, the world);
//! - [`events`]: CloudEvent builders for sink and journal tests;
//! - [`schemas`]: events checked against their published JSON Schemas;
//! - [`tansu`]: a throw-away Kafka-protocol broker;
//! - [`e2e`]: the `espm-bridge` binary as a child process, config snippets, polling helpers;
//! - [`journal_sql`]: statements run on a journal file from outside, for injecting faults.
//!
//! Helpers panic with a message that says what failed: they run in tests only.

#![deny(missing_docs)]

pub mod e2e;
pub mod events;
pub mod schemas;
pub mod sim;
pub mod tansu;

pub use sim::{start_sim, SimControl};

/// Run `sql` on the SQLite journal file at `path` through a connection of its own: tests inject
/// journal faults with triggers (`RAISE(ABORT, 'database or disk is full')`) and drop them again.
pub fn journal_sql(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
        .execute_batch(sql)
        .unwrap_or_else(|e| panic!("cannot run {sql:?}: {e}"));
}
