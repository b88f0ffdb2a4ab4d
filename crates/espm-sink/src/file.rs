//! The file sink: structured-mode CloudEvent JSON lines appended to a file, one write and one
//! fsync per batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use espm_config::FileSinkConfig;

use crate::{Envelope, Outcome, Sink, SinkError};

/// Appends each event as one JSON line to a file; a batch is acknowledged only after `fsync`.
#[derive(Debug)]
pub struct FileSink {
    name: String,
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    // A crash (SIGKILL) in the middle of an earlier append can leave a torn last line; end it so
    // the next batch starts on a line of its own and readers can skip the fragment.
    let len = file.metadata()?.len();
    if len > 0 {
        use std::io::{Read, Seek, SeekFrom};
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
    }
    Ok(file)
}

/// Append `buf` and fsync; on failure cut the file back so no torn line stays behind.
fn append(slot: &mut Option<File>, path: &Path, buf: &[u8]) -> std::io::Result<()> {
    if slot.is_none() {
        *slot = Some(open(path)?);
    }
    let Some(file) = slot.as_mut() else {
        return Err(std::io::Error::other("file sink: no open file"));
    };
    let before = file.metadata()?.len();
    let res = file.write_all(buf).and_then(|()| file.sync_data());
    if res.is_err() {
        // Best effort: the batch is retried, so a partial append would only duplicate or tear.
        let _ = file.set_len(before);
        *slot = None;
    }
    res
}

impl FileSink {
    /// A file sink for the configured path. The file is opened (and its directory created) by
    /// [`Sink::start`] or the first batch.
    pub fn new(cfg: &FileSinkConfig) -> Self {
        Self {
            name: cfg.name.clone(),
            path: cfg.path.clone(),
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// The file events are appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> SinkError {
        SinkError::Other {
            sink: self.name.clone(),
            message: format!("{}: {e}", self.path.display()),
        }
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    async fn start(&self) -> Result<(), SinkError> {
        let slot = self.file.clone();
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(open(&path)?);
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(e)),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn deliver(&self, batch: &[Envelope]) -> Vec<Outcome> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        for e in batch {
            buf.extend_from_slice(&e.event.to_json_bytes());
            buf.push(b'\n');
        }
        let slot = self.file.clone();
        let path = self.path.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            append(&mut slot, &path, &buf)
        })
        .await;
        let err = match res {
            Ok(Ok(())) => return vec![Outcome::Delivered; batch.len()],
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        vec![
            Outcome::Retry {
                reason: format!("file {}: {err}", self.path.display()),
                retry_after: None,
                attempts: 1,
            };
            batch.len()
        ]
    }

    async fn health(&self) -> Result<(), SinkError> {
        self.start().await
    }

    async fn close(&self, _grace: Duration) {
        // Every batch was fsynced before it was acknowledged; just release the handle.
        // try_lock: never block an async worker behind a write in flight at shutdown.
        if let Ok(mut slot) = self.file.try_lock() {
            *slot = None;
        }
    }
}
