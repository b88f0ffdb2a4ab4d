//! Shared helpers for the end-to-end tests: the test kit (`espm-testkit`), plus the one thing
//! only this package knows, where cargo built the binary under test.
#![allow(dead_code, unused_imports)]

pub use espm_testkit::e2e::*;
pub use espm_testkit::sim::{start_sim, SimControl};

/// The binary under test (built by cargo for this package's integration tests).
pub fn bridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_espm-bridge")
}
