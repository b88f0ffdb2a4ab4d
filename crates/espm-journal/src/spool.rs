//! The spool: where a drained PM body goes when the journal cannot take it.
//!
//! After `clear=true`, PM keeps no copy. If the journal refuses the body (disk full, locked past
//! the busy timeout), the poller writes it here at once: a plain file, fsynced, renamed into
//! place, its directory fsynced. Spooled bodies are ingested into the journal, in arrival order,
//! as soon as it takes writes again, at the latest at the next start.
//!
//! A file is one JSON header line (where the body came from, its length) and the raw bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::{JournalError, RawId, Scope, UnwritableKind};

/// Spool directories, tried in order: next to the journal first, then the configured fallback.
#[derive(Debug, Clone)]
pub struct Spool {
    dirs: Vec<PathBuf>,
}

/// One spooled body (header only; [`Spool::ingest`] reads the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    /// The file.
    pub path: PathBuf,
    /// The account it was drained for.
    pub scope: Scope,
    /// The endpoint, as the journal records it.
    pub endpoint: String,
    /// Body length in bytes.
    pub len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    v: u32,
    environment: String,
    account: String,
    endpoint: String,
    http_status: u16,
    received_at_ms: i64,
    /// Absent in a body streamed into the spool: its length is the file's, since only a
    /// complete file is renamed into place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    len: Option<u64>,
    /// A partial copy of this body in the journal, deleted when this one is ingested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    supersedes: Option<i64>,
}

const SUFFIX: &str = "spool";

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// The spool of the journal at `journal_path` (`<journal>.spool/`), with an optional
    /// fallback directory on another volume.
    pub fn for_journal(journal_path: &Path, fallback: Option<PathBuf>) -> Spool {
        let mut name = journal_path.as_os_str().to_os_string();
        name.push(".spool");
        let mut dirs = vec![PathBuf::from(name)];
        dirs.extend(fallback);
        Spool { dirs }
    }

    /// The directories, in the order they are tried.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Write a body durably to the first directory that takes it. `Ok` means it is on disk.
    pub fn write(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        body: &[u8],
    ) -> Result<PathBuf, JournalError> {
        let mut w = self.start(scope, endpoint, http_status, Some(body.len() as u64), None)?;
        w.write(body)?;
        w.finish()
    }

    /// Start spooling a body that arrives in parts (a drain the journal stopped taking midway);
    /// `supersedes` is the partial copy already in the journal. Nothing counts as spooled until
    /// [`SpoolWriter::finish`].
    pub fn begin(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        supersedes: Option<RawId>,
    ) -> Result<SpoolWriter, JournalError> {
        self.start(scope, endpoint, http_status, None, supersedes)
    }

    fn start(
        &self,
        scope: &Scope,
        endpoint: &str,
        http_status: u16,
        len: Option<u64>,
        supersedes: Option<RawId>,
    ) -> Result<SpoolWriter, JournalError> {
        let received_at_ms = crate::now_ms();
        let header = Header {
            v: if len.is_some() { 1 } else { 2 },
            environment: scope.environment.clone(),
            account: scope.account.clone(),
            endpoint: endpoint.to_string(),
            http_status,
            received_at_ms,
            len,
            supersedes: supersedes.map(|r| r.0),
        };
        let mut line = serde_json::to_vec(&header)
            .map_err(|e| JournalError::Corrupt(format!("spool header: {e}")))?;
        line.push(b'\n');
        let name = format!(
            "{received_at_ms:013}-{}-{:06}.{SUFFIX}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut w = SpoolWriter {
            dirs: self.dirs.clone(),
            next_dir: 0,
            name,
            header: line,
            file: None,
            holding: None,
            written: 0,
            dir: PathBuf::new(),
        };
        w.open_next().map_err(JournalError::from_io)?;
        Ok(w)
    }

    /// Spooled bodies (of `scope`, or all), oldest first. Unreadable files are logged and
    /// skipped, never deleted.
    pub fn pending(&self, scope: Option<&Scope>) -> Vec<SpoolEntry> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(rd) = fs::read_dir(dir) else { continue };
            let mut names: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == SUFFIX))
                .collect();
            names.sort();
            for path in names {
                match read_header(&path) {
                    Ok((h, offset)) => {
                        let len = h.len.unwrap_or_else(|| {
                            fs::metadata(&path)
                                .map(|m| m.len().saturating_sub(offset))
                                .unwrap_or(0)
                        });
                        let s = Scope::new(h.environment, h.account);
                        if scope.is_none_or(|want| *want == s) {
                            out.push(SpoolEntry {
                                path,
                                scope: s,
                                endpoint: h.endpoint,
                                len,
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "unreadable spool file left in place")
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
        out
    }

    /// Move spooled bodies (of `scope`, or all) into the journal as received bodies, oldest
    /// first, deleting each file only after its journal commit. Returns how many were ingested.
    /// A crash between the two ingests a body twice, which the journal's deduplication absorbs.
    pub fn ingest(
        &self,
        journal: &crate::Journal,
        scope: Option<&Scope>,
    ) -> Result<usize, JournalError> {
        let mut n = 0;
        for entry in self.pending(scope) {
            // Streamed from the file into journal chunks: a spooled body may exceed memory.
            let (h, mut body) = open_body(&entry.path).map_err(JournalError::from_io)?;
            journal.record_raw_from(
                &entry.scope,
                &h.endpoint,
                h.http_status,
                &mut body,
                h.received_at_ms,
                h.supersedes.map(RawId),
            )?;
            fs::remove_file(&entry.path).map_err(JournalError::from_io)?;
            if let Some(dir) = entry.path.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            tracing::warn!(path = %entry.path.display(), account = %entry.scope.account, bytes = entry.len, "ingested a spooled PM body into the journal");
            n += 1;
        }
        Ok(n)
    }
}

fn read_header(path: &Path) -> std::io::Result<(Header, u64)> {
    let mut f = File::open(path)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < 64 * 1024 {
        if f.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            let h: Header = serde_json::from_slice(&head).map_err(std::io::Error::other)?;
            return Ok((h, head.len() as u64 + 1));
        }
        head.push(byte[0]);
    }
    Err(std::io::Error::other("spool file has no header line"))
}

/// The header and a reader positioned at the body, its length checked against the header's.
fn open_body(path: &Path) -> std::io::Result<(Header, std::io::BufReader<File>)> {
    use std::io::{Seek, SeekFrom};
    let (h, offset) = read_header(path)?;
    let mut f = File::open(path)?;
    let body_len = f.metadata()?.len().saturating_sub(offset);
    if let Some(len) = h.len.filter(|l| *l != body_len) {
        return Err(std::io::Error::other(format!(
            "spool file {} holds {body_len} bytes, its header says {len}",
            path.display(),
        )));
    }
    f.seek(SeekFrom::Start(offset))?;
    Ok((h, std::io::BufReader::with_capacity(64 * 1024, f)))
}

/// A body being spooled as it arrives (see [`Spool::begin`]). When a directory stops taking
/// writes midway, what it took is copied to the next one and writing goes on there.
pub struct SpoolWriter {
    dirs: Vec<PathBuf>,
    next_dir: usize,
    name: String,
    header: Vec<u8>,
    file: Option<File>,
    /// The temporary file that holds what was written so far.
    holding: Option<PathBuf>,
    /// Bytes of it that count (header included): a write that failed midway left more.
    written: u64,
    dir: PathBuf,
}

impl SpoolWriter {
    fn tmp(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", self.name))
    }

    /// Open the next directory's temporary file, carrying over what [`Self::holding`] holds.
    fn open_next(&mut self) -> std::io::Result<()> {
        let mut last = None;
        self.file = None;
        while self.next_dir < self.dirs.len() {
            self.dir = self.dirs[self.next_dir].clone();
            self.next_dir += 1;
            let tmp = self.tmp();
            let opened = (|| {
                fs::create_dir_all(&self.dir)?;
                let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                match &self.holding {
                    Some(old) => {
                        let copied =
                            std::io::copy(&mut File::open(old)?.take(self.written), &mut f)?;
                        if copied != self.written {
                            return Err(std::io::Error::other("spooled part shorter than written"));
                        }
                    }
                    None => {
                        f.write_all(&self.header)?;
                        self.written = self.header.len() as u64;
                    }
                }
                Ok::<File, std::io::Error>(f)
            })();
            match opened {
                Ok(f) => {
                    self.file = Some(f);
                    if let Some(old) = self.holding.replace(tmp) {
                        let _ = fs::remove_file(old);
                    }
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot spool a drained PM body here");
                    let _ = fs::remove_file(&tmp);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no spool directory configured")))
    }

    /// Append bytes; moves to the next directory when this one fails. An error means no
    /// directory takes it ([`SpoolWriter::take_bytes`] gets back what was written).
    pub fn write(&mut self, data: &[u8]) -> Result<(), JournalError> {
        loop {
            let Some(f) = self.file.as_mut() else {
                return Err(JournalError::from_io(std::io::Error::other(
                    "no spool directory takes the body",
                )));
            };
            match f.write_all(data) {
                Ok(()) => {
                    self.written += data.len() as u64;
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "spool directory stopped taking the body: moving to the next");
                    self.open_next().map_err(JournalError::from_io)?;
                }
            }
        }
    }

    /// Make the body durable: fsync, rename into place, fsync the directory. `Ok` means it is
    /// on disk and will be ingested; an error means no directory takes it
    /// ([`SpoolWriter::take_bytes`] gets back what was written).
    pub fn finish(&mut self) -> Result<PathBuf, JournalError> {
        loop {
            let Some(f) = self.file.take() else {
                return Err(JournalError::from_io(std::io::Error::other(
                    "no spool directory takes the body",
                )));
            };
            let done = (|| {
                f.set_len(self.written)?;
                f.sync_all()?;
                drop(f);
                let path = self.dir.join(&self.name);
                fs::rename(self.tmp(), &path)?;
                File::open(&self.dir)?.sync_all()?;
                Ok::<PathBuf, std::io::Error>(path)
            })();
            match done {
                Ok(p) => {
                    self.holding = None;
                    return Ok(p);
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot make a spooled body durable here: moving to the next");
                    self.open_next().map_err(JournalError::from_io)?;
                }
            }
        }
    }

    /// The body bytes written so far, read back, and the temporary file removed: the last
    /// resort when no directory takes the body.
    pub fn take_bytes(mut self) -> Result<Vec<u8>, JournalError> {
        self.file = None;
        let Some(path) = self.holding.take() else {
            return Ok(Vec::new());
        };
        let mut all = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(self.written).read_to_end(&mut all))
            .map_err(JournalError::from_io)?;
        let _ = fs::remove_file(&path);
        let body = match all.iter().position(|b| *b == b'\n') {
            Some(i) => all[i + 1..].to_vec(),
            None => Vec::new(),
        };
        Ok(body)
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // Unfinished: nothing was promised, leave no half file to be ingested.
        if let Some(path) = self.holding.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Free bytes for unprivileged writers on the filesystem holding `path` (or its nearest
/// existing ancestor).
/// Whether the filesystem holding `path` (or its nearest existing ancestor) is mounted read-only.
pub(crate) fn read_only_filesystem(path: &Path) -> bool {
    let mut p = path;
    loop {
        match rustix::fs::statvfs(p) {
            Ok(st) => return st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY),
            Err(_) => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => return false,
            },
        }
    }
}

pub(crate) fn free_bytes(path: &Path) -> Result<u64, JournalError> {
    let mut p = path;
    loop {
        match rustix::fs::statvfs(p) {
            Ok(st) => return Ok(st.f_bavail.saturating_mul(st.f_frsize)),
            Err(e) if e == rustix::io::Errno::NOENT => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ if p != Path::new(".") => p = Path::new("."),
                _ => {
                    return Err(JournalError::Unwritable {
                        kind: UnwritableKind::CannotOpen,
                        message: format!("statvfs {}: {e}", path.display()),
                    })
                }
            },
            Err(e) => {
                return Err(JournalError::Unwritable {
                    kind: UnwritableKind::Io,
                    message: format!("statvfs {}: {e}", p.display()),
                })
            }
        }
    }
}
