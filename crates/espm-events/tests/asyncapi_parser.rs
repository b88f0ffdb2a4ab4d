//! `schemas/asyncapi.yaml` checked by the official AsyncAPI parser (`@asyncapi/parser` under
//! Node.js, installed by `tests/setup.sh` into `tests/contract/node_modules`): any diagnostic of
//! error severity, or a `$ref` to a schema file that does not resolve, fails this test.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn validate(file: &std::path::Path) -> (bool, String) {
    let contract = repo().join("tests/contract");
    assert!(
        contract.join("node_modules/@asyncapi/parser").is_dir(),
        "@asyncapi/parser is not installed: run `bash tests/setup.sh`"
    );
    let out = Command::new("node")
        .arg(contract.join("asyncapi-validate.mjs"))
        .arg(file)
        .arg(espm_events::SCHEMA_BASE)
        .current_dir(&contract)
        .output()
        .expect("run node (Node.js 20 is installed by tests/setup.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_published_asyncapi_document_passes_the_official_parser() {
    let (ok, out) = validate(&repo().join("schemas/asyncapi.yaml"));
    assert!(ok, "{out}");
    assert!(out.contains("valid AsyncAPI 3.0.0"), "{out}");
}

/// The checker can fail: a document whose payload references a missing schema file, or whose
/// header schema is not a schema, is rejected.
#[test]
fn the_parser_check_rejects_a_broken_document() {
    // A copy of the schema folder, so that only the mutation differs from the real thing.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("schemas"), dir.path());
    let good = std::fs::read_to_string(repo().join("schemas/asyncapi.yaml")).unwrap();
    for (what, broken) in [
        (
            "missing schema file",
            good.replacen(
                "$ref: ./data/gov.energystar.pm.share.revoked.v1.json",
                "$ref: ./data/no-such-file.json",
                1,
            ),
        ),
        (
            "headers not a schema",
            good.replacen("headers:\n", "headers: 42\n  x-broken:\n", 1),
        ),
    ] {
        assert_ne!(broken, good, "{what}: mutation did not apply");
        let file = dir.path().join("asyncapi.yaml");
        std::fs::write(&file, &broken).unwrap();
        let (ok, out) = validate(&file);
        assert!(!ok, "{what}: accepted:\n{out}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}
