//! The espm-bridge binary: configuration, wiring and the command line. No business logic lives here.
fn main() {}
