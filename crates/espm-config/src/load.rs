//! Loading: a TOML file, then environment overrides, then typed deserialization that reports
//! every problem with its key path.
//!
//! # Environment overrides
//!
//! Any key can be set or replaced from the environment, which is how container platforms inject
//! per-deployment values without editing the file:
//!
//! ```text
//! ESPM_BRIDGE__<SEGMENT>__<SEGMENT>...=<value>
//! ESPM_BRIDGE__JOURNAL__PATH=/data/journal.db
//! ESPM_BRIDGE__ACCOUNTS__0__POLL_INTERVAL=30s
//! ESPM_BRIDGE__SINKS__1__CREATE_STREAM=true
//! ```
//!
//! - After the `ESPM_BRIDGE__` prefix, segments are separated by a double underscore and
//!   lower-cased (`POLL_INTERVAL` is the key `poll_interval`).
//! - A segment made of digits indexes an array (0-based). An index equal to the array length
//!   appends a new table, so a whole account or sink can be added from the environment; a larger
//!   index is an error.
//! - Missing tables on the way are created.
//! - The value is parsed as a TOML value (`30`, `true`, `["a", "b"]`, `"quoted"`); if that fails it
//!   is taken as a plain string (`30s`, `/data/journal.db`). Quote a value to force a string that
//!   looks like a number: `ESPM_BRIDGE__ACCOUNTS__0__USERNAME='"12345"'`.
//! - Map keys that contain characters an environment variable name cannot hold (dots in Kafka
//!   `properties`, upper case) must be set in the file.
//! - Overrides are applied in a stable order (by path, indices numerically), after the file and
//!   before deserialization, so they are checked exactly like the file.
//!
//! Secrets never go through overrides: point `password_env`/`secret_env` at a variable instead.
//!
//! Integral floating-point numbers (`1.0`) are accepted where integers are expected: Helm's
//! `toToml` renders every YAML number as a float.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{
    AccountConfig, ArcadiaSinkConfig, BridgeConfig, ConsoleSinkConfig, FileSinkConfig,
    JournalConfig, KafkaSinkConfig, MetricsConfig, NatsSinkConfig, WebhookSinkConfig,
};

/// Prefix of environment overrides; see the module documentation.
pub const ENV_PREFIX: &str = "ESPM_BRIDGE__";

/// One problem in a configuration, located by its key path (e.g. `sinks[2].topic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path: dotted keys, array indices in brackets (`accounts[0].poll_interval`). For TOML
    /// syntax errors, the line and column instead.
    pub path: String,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is malformed or invalid; every problem found, each with its key path.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// The problems, empty for [`ConfigError::Read`].
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn display_problems(problems: &[ConfigProblem]) -> String {
    let mut s = format!(
        "{} configuration problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(&p.to_string());
    }
    s
}

/// Read a TOML file and apply `ESPM_BRIDGE__*` overrides from the process environment.
///
/// This checks syntax and types only; call [`BridgeConfig::validate`] (or use
/// [`load_and_validate`]) before running with the result.
pub fn load(path: &Path) -> Result<BridgeConfig, ConfigError> {
    load_with_env(path, process_env())
}

/// [`load`], then [`BridgeConfig::validate`]: every problem is returned in one
/// [`ConfigError::Invalid`].
pub fn load_and_validate(path: &Path) -> Result<BridgeConfig, ConfigError> {
    let cfg = load(path)?;
    let problems = cfg.validate();
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// [`load`] with an explicit environment (name, value pairs); names without the
/// [`ENV_PREFIX`] are ignored.
pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<BridgeConfig, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_toml_str_with_env(&text, env)
}

/// Parse a configuration from TOML text, without environment overrides.
pub fn from_toml_str(s: &str) -> Result<BridgeConfig, ConfigError> {
    from_toml_str_with_env(s, std::iter::empty::<(&str, &str)>())
}

/// Parse a configuration from TOML text and apply the given overrides.
pub fn from_toml_str_with_env<I, K, V>(s: &str, env: I) -> Result<BridgeConfig, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut root: toml::Table = toml::from_str(s).map_err(|e| {
        let path = match e.span() {
            Some(span) => line_col(s, span.start),
            None => "toml".to_string(),
        };
        ConfigError::Invalid(vec![ConfigProblem::new(path, e.message().trim())])
    })?;
    let problems = apply_env(&mut root, env);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let mut value = toml::Value::Table(root);
    integral_floats_to_ints(&mut value);
    deserialize(value).map_err(ConfigError::Invalid)
}

fn process_env() -> Vec<(String, String)> {
    // Non-UTF-8 variables cannot be overrides; skip them instead of panicking like env::vars().
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

fn line_col(s: &str, offset: usize) -> String {
    let before = &s[..offset.min(s.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Index(usize),
    Key(String),
}

fn render_path(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
        }
    }
    s
}

fn parse_env_value(raw: &str) -> toml::Value {
    // A one-key document keeps TOML's own value grammar; a raw value smuggling in more keys
    // (a newline) or not parsing at all is a plain string.
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        _ => toml::Value::String(raw.to_string()),
    }
}

fn apply_env<I, K, V>(root: &mut toml::Table, env: I) -> Vec<ConfigProblem>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut problems = Vec::new();
    let mut overrides: Vec<(Vec<Seg>, String, String)> = Vec::new();
    for (name, value) in env {
        let name = name.as_ref();
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let segs: Vec<Seg> = rest
            .split("__")
            .map(|p| match p.parse::<usize>() {
                Ok(i) if p.bytes().all(|b| b.is_ascii_digit()) => Seg::Index(i),
                _ => Seg::Key(p.to_ascii_lowercase()),
            })
            .collect();
        if segs
            .iter()
            .any(|s| matches!(s, Seg::Key(k) if k.is_empty()))
        {
            problems.push(ConfigProblem::new(
                name,
                "environment override has an empty path segment",
            ));
            continue;
        }
        if matches!(segs.first(), Some(Seg::Index(_))) {
            problems.push(ConfigProblem::new(
                render_path(&segs),
                format!("environment override {name}: the top level is a table, not an array"),
            ));
            continue;
        }
        overrides.push((segs, name.to_string(), value.as_ref().to_string()));
    }
    overrides.sort_by(|a, b| match a.0.cmp(&b.0) {
        Ordering::Equal => a.1.cmp(&b.1),
        o => o,
    });
    for (segs, name, raw) in overrides {
        if let Err(message) = set_path(root, &segs, parse_env_value(&raw)) {
            problems.push(ConfigProblem::new(
                render_path(&segs),
                format!("environment override {name}: {message}"),
            ));
        }
    }
    problems
}

fn set_path(root: &mut toml::Table, segs: &[Seg], value: toml::Value) -> Result<(), String> {
    let Some((Seg::Key(first), rest)) = segs.split_first() else {
        return Err("the top level is a table, not an array".into());
    };
    if rest.is_empty() {
        root.insert(first.clone(), value);
        return Ok(());
    }
    let child = root
        .entry(first.clone())
        .or_insert_with(|| empty_container(&rest[0]));
    set_in_value(child, rest, value)
}

fn empty_container(next: &Seg) -> toml::Value {
    match next {
        Seg::Index(_) => toml::Value::Array(Vec::new()),
        Seg::Key(_) => toml::Value::Table(toml::Table::new()),
    }
}

fn set_in_value(node: &mut toml::Value, segs: &[Seg], value: toml::Value) -> Result<(), String> {
    let Some((seg, rest)) = segs.split_first() else {
        *node = value;
        return Ok(());
    };
    match (seg, node) {
        (Seg::Key(k), toml::Value::Table(t)) => {
            if rest.is_empty() {
                t.insert(k.clone(), value);
                return Ok(());
            }
            let child = t
                .entry(k.clone())
                .or_insert_with(|| empty_container(&rest[0]));
            set_in_value(child, rest, value)
        }
        (Seg::Index(i), toml::Value::Array(a)) => {
            let len = a.len();
            match (*i).cmp(&len) {
                Ordering::Less => {}
                Ordering::Equal => a.push(match rest.first() {
                    Some(next) => empty_container(next),
                    None => value.clone(),
                }),
                Ordering::Greater => {
                    return Err(format!(
                    "index {i} is past the end (the array has {len} entries; use {len} to append)"
                ))
                }
            }
            let child = &mut a[*i]; // ok: i < a.len() after the match above
            if rest.is_empty() {
                *child = value;
                return Ok(());
            }
            set_in_value(child, rest, value)
        }
        (Seg::Key(k), other) => Err(format!(
            "cannot set key `{k}` inside a {}",
            other.type_str()
        )),
        (Seg::Index(i), other) => Err(format!("cannot index [{i}] into a {}", other.type_str())),
    }
}

/// Helm's `toToml` renders YAML numbers as floats; no config field is a float, so an integral
/// float is read as the integer it stands for (a float field would still accept it).
fn integral_floats_to_ints(v: &mut toml::Value) {
    match v {
        toml::Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            *v = toml::Value::Integer(*f as i64);
        }
        toml::Value::Array(a) => a.iter_mut().for_each(integral_floats_to_ints),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| integral_floats_to_ints(v)),
        _ => {}
    }
}

fn de_at<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, ConfigProblem> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (_, "." | "") => prefix.to_string(),
            (true, p) => p.to_string(),
            (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
            (false, p) => format!("{prefix}.{p}"),
        };
        ConfigProblem::new(path, e.inner().message().trim())
    })
}

/// The whole file is the authority; when it fails, each section is tried on its own so that one
/// mistake does not hide the next (serde stops at the first error), and sinks are deserialized by
/// their `type` so errors inside a sink keep their key path (an internally tagged enum buffers its
/// content and loses it).
fn deserialize(root: toml::Value) -> Result<BridgeConfig, Vec<ConfigProblem>> {
    let whole = match de_at::<BridgeConfig>(root.clone(), "") {
        Ok(cfg) => return Ok(cfg),
        Err(p) => p,
    };
    let mut problems = section_problems(&root);
    let top = section_of(&whole.path);
    let covered = problems.iter().any(|p| {
        p.path == top
            || p.path.starts_with(&format!("{top}."))
            || p.path.starts_with(&format!("{top}["))
    });
    if !covered {
        problems.push(whole);
    }
    Err(problems)
}

/// `accounts[1].name` -> `accounts[1]`; `journal.path` -> `journal`.
fn section_of(path: &str) -> String {
    let first_dot = path.find('.').unwrap_or(path.len());
    let head = &path[..first_dot];
    match head.find(']') {
        Some(end) => head[..=end].to_string(),
        None => head.to_string(),
    }
}

fn top_level_keys() -> Vec<String> {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<BridgeConfig>();
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn section_problems(root: &toml::Value) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    let Some(table) = root.as_table() else {
        return out;
    };
    let known = top_level_keys();
    for key in table.keys() {
        if !known.iter().any(|k| k == key) {
            out.push(ConfigProblem::new(
                key.clone(),
                format!(
                    "unknown key `{key}`, expected one of {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if let Some(v) = table.get("journal") {
        push_err(&mut out, de_at::<JournalConfig>(v.clone(), "journal"));
    }
    if let Some(v) = table.get("metrics") {
        push_err(&mut out, de_at::<MetricsConfig>(v.clone(), "metrics"));
    }
    if let Some(toml::Value::Array(accounts)) = table.get("accounts") {
        for (i, a) in accounts.iter().enumerate() {
            push_err(
                &mut out,
                de_at::<AccountConfig>(a.clone(), &format!("accounts[{i}]")),
            );
        }
    }
    if let Some(toml::Value::Array(sinks)) = table.get("sinks") {
        for (i, s) in sinks.iter().enumerate() {
            let prefix = format!("sinks[{i}]");
            let Some(t) = s.as_table() else {
                continue; // the whole-file error reports the wrong type
            };
            let mut t = t.clone();
            let ty = t.remove("type");
            let v = toml::Value::Table(t);
            let r = match ty.as_ref().and_then(|t| t.as_str()) {
                Some("kafka") => de_at::<KafkaSinkConfig>(v, &prefix).map(drop),
                Some("nats") => de_at::<NatsSinkConfig>(v, &prefix).map(drop),
                Some("webhook") => de_at::<WebhookSinkConfig>(v, &prefix).map(drop),
                Some("console") => de_at::<ConsoleSinkConfig>(v, &prefix).map(drop),
                Some("file") => de_at::<FileSinkConfig>(v, &prefix).map(drop),
                Some("arcadia") => de_at::<ArcadiaSinkConfig>(v, &prefix).map(drop),
                Some(other) => Err(ConfigProblem::new(
                    format!("{prefix}.type"),
                    format!(
                        "unknown sink type `{other}`, expected one of {}",
                        sink_types().join(", ")
                    ),
                )),
                None => Err(ConfigProblem::new(
                    format!("{prefix}.type"),
                    format!(
                        "missing sink `type`, expected one of {}",
                        sink_types().join(", ")
                    ),
                )),
            };
            push_err(&mut out, r);
        }
    }
    if let Some(toml::Value::Array(topics)) = table.get("command_topics") {
        for (i, s) in topics.iter().enumerate() {
            let prefix = format!("command_topics[{i}]");
            let Some(t) = s.as_table() else {
                continue; // the whole-file error reports the wrong type
            };
            let mut t = t.clone();
            let ty = t.remove("type");
            let v = toml::Value::Table(t);
            let r = match ty.as_ref().and_then(|t| t.as_str()) {
                Some("kafka") => de_at::<crate::KafkaCommandTopicConfig>(v, &prefix).map(drop),
                Some("nats") => de_at::<crate::NatsCommandTopicConfig>(v, &prefix).map(drop),
                other => Err(ConfigProblem::new(
                    format!("{prefix}.type"),
                    format!(
                        "{} command topic type, expected `kafka` or `nats`",
                        other.map_or("missing".to_string(), |o| format!("unknown `{o}`"))
                    ),
                )),
            };
            push_err(&mut out, r);
        }
    }
    out
}

fn sink_types() -> Vec<String> {
    ["kafka", "nats", "webhook", "console", "file", "arcadia"]
        .iter()
        .map(|t| format!("`{t}`"))
        .collect()
}

fn push_err<T>(out: &mut Vec<ConfigProblem>, r: Result<T, ConfigProblem>) {
    if let Err(p) = r {
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_of_paths() {
        assert_eq!(section_of("accounts[1].name"), "accounts[1]");
        assert_eq!(section_of("journal.path"), "journal");
        assert_eq!(section_of("sinks[2]"), "sinks[2]");
        assert_eq!(section_of("bogus"), "bogus");
    }

    #[test]
    fn env_values_parse_as_toml_then_string() {
        assert_eq!(parse_env_value("30"), toml::Value::Integer(30));
        assert_eq!(parse_env_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_env_value("30s"), toml::Value::String("30s".into()));
        assert_eq!(
            parse_env_value("\"12345\""),
            toml::Value::String("12345".into())
        );
        assert_eq!(
            parse_env_value("1\nx = 2"),
            toml::Value::String("1\nx = 2".into())
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = from_toml_str("[journal]\npath = \n").unwrap_err();
        let p = &err.problems()[0];
        assert!(p.path.starts_with("line 2, column"), "{p}");
    }
}
