//! Shared helpers for the end-to-end tests: the test kit (`espm-testkit`), plus the one thing
//! only this package knows, where cargo built the binary under test.
#![allow(dead_code, unused_imports)]

pub use espm_testkit::e2e::*;
pub use espm_testkit::sim::{start_sim, SimControl};

/// The binary under test (built by cargo for this package's integration tests).
pub fn bridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_espm-bridge")
}

/// The messages on JetStream `stream` so far (at most `max`), read by a fresh pull consumer
/// that waits up to `expires` for more, as a downstream service would read them. None when the
/// stream does not exist (yet).
pub async fn jetstream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
    max: usize,
    expires: std::time::Duration,
) -> Vec<async_nats::jetstream::Message> {
    use futures::StreamExt;
    let Ok(st) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let cons = st
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("a pull consumer on the stream");
    let mut msgs = cons
        .fetch()
        .max_messages(max)
        .expires(expires)
        .messages()
        .await
        .expect("a fetch from the consumer");
    let mut out = Vec::new();
    while let Some(Ok(m)) = msgs.next().await {
        out.push(m);
    }
    out
}
