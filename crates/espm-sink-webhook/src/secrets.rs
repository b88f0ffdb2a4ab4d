//! Reading the signing secrets of an endpoint: the webhook sink and the policy's decision
//! webhook both sign with a [`Signer`] built here, so both read and check secrets the same way.

use espm_config::{Secret, SecretSource};

use crate::signing::Signer;

/// Read the secrets of `source` and parse them into a [`Signer`]: a file holds one secret per
/// line (blank lines and `#` comments skipped); a variable holds them separated by spaces or
/// commas. The error says what is wrong and where (a secret's position, never its value).
pub fn signer_from_source(source: &SecretSource) -> Result<Signer, String> {
    let raw = source.read().map_err(|e| e.to_string())?;
    let secrets: Vec<Secret> = match source {
        SecretSource::File(_) => raw
            .expose()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Secret::new)
            .collect(),
        SecretSource::Env(_) => raw
            .expose()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect(),
    };
    if secrets.is_empty() {
        return Err(match source {
            SecretSource::File(p) => format!("secret file {} holds no secret", p.display()),
            SecretSource::Env(v) => format!("environment variable {v} holds no secret"),
        });
    }
    Signer::from_secrets(&secrets.iter().map(Secret::expose).collect::<Vec<_>>())
        .map_err(|(i, e)| format!("signing secret #{}: {e}", i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_secrets_signs_with_each_and_errors_never_echo_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("whsec");
        std::fs::write(
            &file,
            "# rotation\nwhsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n\nwhsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=\n",
        )
        .unwrap();
        let signer = signer_from_source(&SecretSource::File(file.clone())).unwrap();
        assert_eq!(signer.len(), 2);
        std::fs::write(
            &file,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nnot-a-secret\n",
        )
        .unwrap();
        let err = signer_from_source(&SecretSource::File(file.clone())).unwrap_err();
        assert!(err.contains("#2"), "{err}");
        assert!(!err.contains("not-a-secret"), "{err}");
        std::fs::write(&file, "# nothing\n").unwrap();
        let err = signer_from_source(&SecretSource::File(file)).unwrap_err();
        assert!(err.contains("holds no secret"), "{err}");
    }
}
