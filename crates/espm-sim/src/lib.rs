//! A stateful in-memory Portfolio Manager simulator with fault injection and a ground-truth ledger.
