//! Bearer tokens: one per line (several for rotation), compared in constant time.

use std::fmt;

use sha2::{Digest, Sha256};

/// The accepted tokens. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct Tokens {
    /// (caller name, SHA-256 of the token).
    entries: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .field("tokens", &"***")
            .finish()
    }
}

/// Why a token list is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token at all: the API would let nobody in, or everybody.
    #[error("the API token list holds no token")]
    Empty,
    /// A token shorter than 16 characters.
    #[error("API token on line {line} is shorter than 16 characters")]
    TooShort {
        /// 1-based line.
        line: usize,
    },
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Tokens {
    /// Parse a token list: one token per line; blank lines and `#` comments are skipped. A line
    /// `NAME=TOKEN` names its caller (the requester journalled with each command); a bare token
    /// is named `token-N` after its line.
    pub fn parse(text: &str) -> Result<Tokens, TokenError> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once('=') {
                Some((name, token)) if !name.trim().is_empty() && !name.contains(' ') => {
                    (name.trim().to_string(), token.trim())
                }
                _ => (format!("token-{}", n + 1), line),
            };
            if token.chars().count() < 16 {
                return Err(TokenError::TooShort { line: n + 1 });
            }
            entries.push((name, digest(token)));
        }
        if entries.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Tokens { entries })
    }

    /// The caller's name if `presented` is one of the tokens. Every entry is compared, and each
    /// comparison touches every byte of the digests, so timing says nothing about the tokens.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let d = digest(presented);
        let mut found = None;
        for (name, want) in &self.entries {
            let diff = want
                .iter()
                .zip(d.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_names_and_refusals() {
        let t = Tokens::parse(
            "# rotate weekly\nbilling=aaaaaaaaaaaaaaaaaaaa\n\nbbbbbbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(t.check("aaaaaaaaaaaaaaaaaaaa"), Some("billing"));
        assert_eq!(t.check("bbbbbbbbbbbbbbbbbbbb"), Some("token-4"));
        assert_eq!(t.check("aaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(t.check(""), None);
        assert!(!format!("{t:?}").contains("aaaa"));
        assert!(matches!(Tokens::parse("# none\n"), Err(TokenError::Empty)));
        assert!(matches!(
            Tokens::parse("short"),
            Err(TokenError::TooShort { line: 1 })
        ));
    }
}
