//! Secrets: read from a file or an environment variable, never shown in `Debug`, `Display` or logs.

use std::fmt;
use std::path::PathBuf;

/// A secret value. `Debug` and `Display` print `***`; use [`Secret::expose`] at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself. Call only where it is sent, never where it could be logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A mounted file; one trailing newline is stripped.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// Why a secret could not be read. Messages name the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The variable is unset or not UTF-8.
    #[error("environment variable {0} is not set")]
    Env(String),
    /// No source is configured (the message names the keys to set, e.g. `password_file or
    /// password_env`). `validate()` reports this before start-up.
    #[error("no secret configured: set {0}")]
    NotConfigured(String),
}

impl SecretSource {
    /// Pick the configured source; `None` when neither is set. Both set is a configuration error
    /// (`validate()` rejects it); should both get here anyway, the file wins, everywhere.
    pub fn from_options(file: Option<&PathBuf>, env: Option<&String>) -> Option<Self> {
        match (file, env) {
            (Some(f), _) => Some(SecretSource::File(f.clone())),
            (None, Some(e)) => Some(SecretSource::Env(e.clone())),
            (None, None) => None,
        }
    }

    /// Read the secret now.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| {
                    Secret(
                        s.strip_suffix('\n')
                            .unwrap_or(&s)
                            .trim_end_matches('\r')
                            .to_string(),
                    )
                })
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
            SecretSource::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| SecretError::Env(name.clone())),
        }
    }
}

/// Read a set of named secrets: each name from a file (`files`) or an environment variable
/// (`envs`). Used for librdkafka properties and webhook headers. A name in both is a
/// configuration error (`validate()` rejects it); should one get here anyway, the file wins, as in
/// [`SecretSource::from_options`]. The error names the entry that could not be read.
pub fn read_secret_map(
    files: &std::collections::BTreeMap<String, PathBuf>,
    envs: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, Secret>, (String, SecretError)> {
    let mut out = std::collections::BTreeMap::new();
    for (name, path) in files {
        let s = SecretSource::File(path.clone())
            .read()
            .map_err(|e| (name.clone(), e))?;
        out.insert(name.clone(), s);
    }
    for (name, var) in envs.iter().filter(|(n, _)| !files.contains_key(*n)) {
        let s = SecretSource::Env(var.clone())
            .read()
            .map_err(|e| (name.clone(), e))?;
        out.insert(name.clone(), s);
    }
    Ok(out)
}

/// A URL as logs and `Debug` may show it: user info (`user:password@`) becomes `***@` and a
/// query (often a token) `?***`. Works on anything URL-like, parsed or not.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => tail.to_string(),
    };
    format!("{scheme}{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
