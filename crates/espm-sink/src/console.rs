//! The console sink: one structured-mode CloudEvent JSON line per event on stdout.

use std::io::Write;
use std::sync::{Arc, Mutex};

use espm_config::ConsoleSinkConfig;

use crate::{Envelope, Outcome, Sink};

type Writer = Arc<Mutex<Box<dyn Write + Send>>>;

/// Prints each event as one JSON line (structured CloudEvent) and flushes once per batch.
pub struct ConsoleSink {
    name: String,
    out: Writer,
}

impl std::fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSink")
            .field("name", &self.name)
            .finish()
    }
}

impl ConsoleSink {
    /// A console sink writing to stdout.
    pub fn new(cfg: &ConsoleSinkConfig) -> Self {
        Self::with_writer(cfg.name.clone(), Box::new(std::io::stdout()))
    }

    /// A console sink writing to any writer (tests, or stderr).
    pub fn with_writer(name: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.into(),
            out: Arc::new(Mutex::new(out)),
        }
    }
}

#[async_trait::async_trait]
impl Sink for ConsoleSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "console"
    }

    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for e in batch {
            buf.extend_from_slice(&e.event.to_json_bytes());
            buf.push(b'\n');
        }
        let out = self.out.clone();
        // stdout can block (a slow pipe), so keep it off the async workers.
        let res = tokio::task::spawn_blocking(move || {
            let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
            w.write_all(&buf)?;
            w.flush()
        })
        .await;
        let err = match res {
            Ok(Ok(())) => return vec![Outcome::Delivered; batch.len()],
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        vec![
            Outcome::Retry {
                reason: format!("console write: {err}"),
                retry_after: None,
                attempts: 1,
            };
            batch.len()
        ]
    }
}
