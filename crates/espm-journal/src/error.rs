//! Journal errors, with the one distinction a poller needs: can the journal be written right now?

use std::io;

use rusqlite::ErrorCode;

/// Why a journal could not be written. The poller refuses `clear=true` while any of these holds,
/// because a drained notification that cannot be journalled would be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwritableKind {
    /// The file, its directory or the filesystem is read-only, or the journal was opened read-only.
    ReadOnly,
    /// The disk (or quota) is full.
    DiskFull,
    /// Another connection or process holds the write lock longer than the busy timeout.
    Locked,
    /// The file cannot be created or opened, or permission was denied.
    CannotOpen,
    /// A low-level I/O error while writing.
    Io,
}

impl std::fmt::Display for UnwritableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnwritableKind::ReadOnly => "read-only",
            UnwritableKind::DiskFull => "disk full",
            UnwritableKind::Locked => "locked",
            UnwritableKind::CannotOpen => "cannot open",
            UnwritableKind::Io => "i/o error",
        })
    }
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal cannot be written (see [`UnwritableKind`]); nothing was committed.
    #[error("journal is not writable ({kind}): {message}")]
    Unwritable {
        /// What kind of write failure.
        kind: UnwritableKind,
        /// The underlying error text.
        message: String,
    },
    /// Any other SQLite error.
    #[error("journal sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem error outside SQLite (creating the parent directory).
    #[error("journal i/o error: {0}")]
    Io(#[from] io::Error),
    /// A stored row could not be decoded (e.g. event JSON that no longer parses).
    #[error("journal row is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by a newer espm-bridge whose schema this build does not know.
    #[error("journal schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// Highest version this build understands.
        supported: i64,
    },
    /// A journal call on the blocking pool panicked or was cancelled (see [`crate::Journal::call`]).
    #[error("journal task failed: {0}")]
    Task(String),
    /// Another process holds the journal's writer lock (see [`crate::JournalLock`]).
    #[error("journal {} is in use by {holder}; one espm-bridge per journal", path.display())]
    InUse {
        /// The journal file.
        path: std::path::PathBuf,
        /// Who holds it, as the holder wrote it into the lock file.
        holder: String,
    },
    /// A row addressed by id (raw body, dead letter) does not exist.
    #[error("{what} {id} not found in the journal")]
    NotFound {
        /// `raw body` or `dead letter`.
        what: &'static str,
        /// The id that was asked for.
        id: i64,
    },
}

impl JournalError {
    /// True when the failure means the journal cannot durably accept writes right now (read-only,
    /// disk full, locked, cannot open, I/O). Callers must then refuse to clear PM notifications.
    pub fn is_unwritable(&self) -> bool {
        matches!(self, JournalError::Unwritable { .. })
    }

    /// The kind of write failure, if this is one.
    pub fn unwritable_kind(&self) -> Option<UnwritableKind> {
        match self {
            JournalError::Unwritable { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Classify a SQLite error: write failures become [`JournalError::Unwritable`].
    pub(crate) fn from_sqlite(e: rusqlite::Error) -> Self {
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ErrorCode::ReadOnly => Some(UnwritableKind::ReadOnly),
                ErrorCode::DiskFull => Some(UnwritableKind::DiskFull),
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some(UnwritableKind::Locked),
                ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
                    Some(UnwritableKind::CannotOpen)
                }
                ErrorCode::SystemIoFailure => Some(UnwritableKind::Io),
                _ => None,
            },
            _ => None,
        };
        match kind {
            Some(kind) => JournalError::Unwritable {
                kind,
                message: e.to_string(),
            },
            None => JournalError::Sqlite(e),
        }
    }

    /// Classify a filesystem error: permission, read-only filesystem and full disk are write failures.
    pub(crate) fn from_io(e: io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::PermissionDenied => Some(UnwritableKind::CannotOpen),
            io::ErrorKind::ReadOnlyFilesystem => Some(UnwritableKind::ReadOnly),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Some(UnwritableKind::DiskFull)
            }
            _ => None,
        };
        match kind {
            Some(kind) => JournalError::Unwritable {
                kind,
                message: e.to_string(),
            },
            None => JournalError::Io(e),
        }
    }
}

/// Shorthand used inside the crate: every rusqlite error goes through the classifier.
pub(crate) trait SqlResultExt<T> {
    /// Convert, classifying write failures.
    fn j(self) -> Result<T, JournalError>;
}

impl<T> SqlResultExt<T> for Result<T, rusqlite::Error> {
    fn j(self) -> Result<T, JournalError> {
        self.map_err(JournalError::from_sqlite)
    }
}
