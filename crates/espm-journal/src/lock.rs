//! One writer per journal: `espm-bridge run` holds an exclusive lock on `<journal>.lock` for its
//! whole life. PM forbids concurrent calls per account, and two bridges on one journal would
//! split `clear=true` bodies and race each other's cursors.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::JournalError;

/// The held lock; dropping it (or the process dying, even by SIGKILL) releases it.
#[derive(Debug)]
pub struct JournalLock {
    path: PathBuf,
    _file: File,
}

/// The lock file of the journal at `journal`: `<journal>.lock` beside it.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into())
}

impl JournalLock {
    /// Take the exclusive lock for the journal at `journal`, without waiting. When another
    /// process holds it, fails with [`JournalError::InUse`] naming the holder (pid, host and
    /// start time it wrote into the lock file). The lock is advisory (`flock`): it is released
    /// by the kernel when the holder exits, so a crash never leaves a stale lock behind.
    pub fn acquire(journal: &Path) -> Result<JournalLock, JournalError> {
        let path = lock_path(journal);
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(JournalError::from_io)?;
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(JournalError::from_io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(JournalError::InUse {
                    path: journal.to_path_buf(),
                    holder: if holder.is_empty() {
                        "another process (it wrote no details)".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(e) => return Err(JournalError::Io(std::io::Error::from(e))),
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let who = format!(
            "pid {} on {} (espm-bridge {}, started at unix time {started})\n",
            std::process::id(),
            hostname(),
            env!("CARGO_PKG_VERSION"),
        );
        // Best effort: the lock itself is what counts; the text only names the holder.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(who.as_bytes()))
            .and_then(|()| file.flush());
        Ok(JournalLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
