//! Command topics: commands for PM consumed as CloudEvents from Kafka topics or a JetStream
//! stream (`[[command_topics]]`). Owned by `espm-command-topics`: extend here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{check_name, Problems};
use crate::{AccountConfig, ConfigProblem, DurationString};

/// One source of commands, selected by `type`.
// Read once at start-up: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CommandTopicConfig {
    /// Kafka topics read by a consumer group; offsets are committed only after a command's
    /// result is journalled.
    Kafka(KafkaCommandTopicConfig),
    /// A JetStream durable pull consumer; a message is acknowledged only after its command's
    /// result is journalled.
    Nats(NatsCommandTopicConfig),
}

impl CommandTopicConfig {
    /// The configured name (metric label and log field).
    pub fn name(&self) -> &str {
        match self {
            CommandTopicConfig::Kafka(c) => &c.name,
            CommandTopicConfig::Nats(c) => &c.name,
        }
    }

    /// The provider account for commands that name none.
    pub fn account(&self) -> Option<&str> {
        match self {
            CommandTopicConfig::Kafka(c) => c.account.as_deref(),
            CommandTopicConfig::Nats(c) => c.account.as_deref(),
        }
    }

    /// Every problem of this entry, with key paths under `path` (`command_topics[0]`). The
    /// consumers' constructors run the same check. Secrets are not read here.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut v = Problems::default();
        check_name(&mut v, &format!("{path}.name"), self.name());
        if self
            .account()
            .is_some_and(|a| a.trim().is_empty() || a.trim() != a)
        {
            v.push(format!("{path}.account"), "must name a configured account");
        }
        match self {
            CommandTopicConfig::Kafka(k) => check_kafka(&mut v, path, k),
            CommandTopicConfig::Nats(n) => check_nats(&mut v, path, n),
        }
        v.0
    }
}

/// Checks across entries and against the accounts: unique names, known accounts.
pub(crate) fn validate_all(
    topics: &[CommandTopicConfig],
    accounts: &[AccountConfig],
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in topics.iter().enumerate() {
        let p = format!("command_topics[{i}]");
        if let Some(first) = seen.insert(t.name(), i) {
            out.push(ConfigProblem::new(
                format!("{p}.name"),
                format!(
                    "duplicate command topic name `{}` (also command_topics[{first}])",
                    t.name()
                ),
            ));
        }
        if let Some(a) = t.account() {
            if !accounts.iter().any(|x| x.name == a) {
                out.push(ConfigProblem::new(
                    format!("{p}.account"),
                    format!("no account named `{a}` is configured"),
                ));
            }
        }
        out.extend(t.validate(&p));
    }
    out
}

/// Consume commands from Kafka topics in a consumer group (`enable.auto.commit=false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaCommandTopicConfig {
    /// Short stable name; appears in metric labels and logs.
    pub name: String,
    /// `bootstrap.servers`, comma-separated.
    pub brokers: String,
    /// Topics to read commands from.
    #[serde(default = "default_kafka_topics")]
    pub topics: Vec<String>,
    /// Consumer group. Empty uses `espm-bridge-{name}`. Keep it stable: the group's committed
    /// offsets are where reading resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Provider account for commands that name none (neither the `espmaccount` attribute nor
    /// `data.account`). Empty: the only configured account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Create missing topics with the admin client at start-up. An existing topic is left as
    /// it is.
    #[serde(default)]
    pub create_topics: bool,
    /// Partition count of topics created by `create_topics`.
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of topics created by `create_topics`; `-1` uses the broker's
    /// `default.replication.factor`.
    #[serde(default = "default_topic_replication_factor")]
    pub topic_replication_factor: i32,
    /// librdkafka consumer properties passed through as-is (TLS, SASL, `auto.offset.reset`,
    /// ...). They win over the defaults (`auto.offset.reset=earliest`), except
    /// `enable.auto.commit=false` and `enable.auto.offset.store=false`, which are always forced,
    /// and `bootstrap.servers` and `group.id`, which come from `brokers` and `group_id`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files (e.g. `sasl.password`).
    #[serde(default)]
    pub secret_files: BTreeMap<String, PathBuf>,
    /// librdkafka properties whose values are read from environment variables.
    #[serde(default)]
    pub secret_envs: BTreeMap<String, String>,
}

impl KafkaCommandTopicConfig {
    /// `group_id`, or `espm-bridge-{name}`.
    pub fn effective_group_id(&self) -> String {
        match &self.group_id {
            Some(g) if !g.trim().is_empty() => g.clone(),
            _ => format!("espm-bridge-{}", self.name),
        }
    }

    /// Every problem of this entry ([`CommandTopicConfig::validate`]).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        CommandTopicConfig::Kafka(self.clone()).validate(path)
    }
}

fn default_kafka_topics() -> Vec<String> {
    vec!["espm.commands".to_string()]
}
fn default_topic_partitions() -> i32 {
    3
}
fn default_topic_replication_factor() -> i32 {
    -1
}

/// Consume commands from a JetStream stream through a durable pull consumer (explicit acks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsCommandTopicConfig {
    /// Short stable name; appears in metric labels and logs.
    pub name: String,
    /// Server URL(s), comma-separated, e.g. `nats://nats:4222`.
    pub url: String,
    /// The JetStream stream holding the commands.
    pub stream: String,
    /// Subject filter(s) of the consumer: the commands it reads.
    #[serde(default = "default_nats_subjects")]
    pub subjects: Vec<String>,
    /// Durable consumer name. Empty uses `espm-bridge-{name}`. Keep it stable: the consumer's
    /// acknowledgements are where reading resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// Provider account for commands that name none (neither the `espmaccount` attribute nor
    /// `data.account`). Empty: the only configured account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Create the stream if missing, capturing `stream_subjects`.
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a stream created by `create_stream`. Empty uses `subjects`.
    #[serde(default)]
    pub stream_subjects: Vec<String>,
    /// How long the server waits for a message's acknowledgement before it delivers it again.
    /// While a command runs, the bridge reports progress, so a slow PM call is not re-delivered.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub ack_wait: Duration,
    /// Username for user/password auth.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding a token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding a token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding an nkey seed.
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    /// Path of a `.creds` file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// CA certificate for TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// How long a connection attempt may take; failed attempts are retried with back-off.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub connect_timeout: Duration,
    /// How long a JetStream API request (stream and consumer look-ups, acknowledgements) may
    /// take.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub request_timeout: Duration,
}

impl NatsCommandTopicConfig {
    /// `durable`, or `espm-bridge-{name}`.
    pub fn effective_durable(&self) -> String {
        match &self.durable {
            Some(d) if !d.trim().is_empty() => d.clone(),
            _ => format!("espm-bridge-{}", self.name),
        }
    }

    /// `stream_subjects`, or `subjects`.
    pub fn effective_stream_subjects(&self) -> Vec<String> {
        if self.stream_subjects.is_empty() {
            self.subjects.clone()
        } else {
            self.stream_subjects.clone()
        }
    }

    /// Every problem of this entry ([`CommandTopicConfig::validate`]).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        CommandTopicConfig::Nats(self.clone()).validate(path)
    }
}

fn default_nats_subjects() -> Vec<String> {
    vec!["espm.commands.>".to_string()]
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

fn check_kafka(v: &mut Problems, p: &str, k: &KafkaCommandTopicConfig) {
    if k.brokers.split(',').all(|b| b.trim().is_empty()) {
        v.push(
            format!("{p}.brokers"),
            "must list at least one broker (host:port)",
        );
    } else if k.brokers.split(',').any(|b| b.trim().is_empty()) {
        v.push(format!("{p}.brokers"), "has an empty entry between commas");
    }
    if k.topics.is_empty() {
        v.push(format!("{p}.topics"), "must list at least one topic");
    }
    for (i, t) in k.topics.iter().enumerate() {
        if let Err(reason) = crate::kafka_topic_name(t) {
            v.push(
                format!("{p}.topics[{i}]"),
                format!("`{t}` is not a valid Kafka topic name: {reason}"),
            );
        }
    }
    if k.create_topics && k.topic_partitions < 1 {
        v.push(format!("{p}.topic_partitions"), "must be at least 1");
    }
    for key in k.secret_files.keys().chain(k.secret_envs.keys()) {
        if k.properties.contains_key(key) {
            v.push(
                format!("{p}.properties.{key}"),
                "also set from secret_files/secret_envs: keep the secret out of `properties`",
            );
        }
    }
    for key in k.properties.keys() {
        let lower = key.to_ascii_lowercase();
        if lower.contains("password") || lower.contains("secret") || lower.ends_with(".key.pem") {
            v.push(
                format!("{p}.properties.{key}"),
                "looks like a secret: set it with secret_files or secret_envs, never inline",
            );
        }
        if matches!(
            lower.as_str(),
            "enable.auto.commit" | "enable.auto.offset.store"
        ) {
            v.push(
                format!("{p}.properties.{key}"),
                "is always false: offsets are committed only after a command's result is journalled",
            );
        }
    }
    for key in k.secret_files.keys() {
        if k.secret_envs.contains_key(key) {
            v.push(
                format!("{p}.secret_envs.{key}"),
                "also set in secret_files: pick one source",
            );
        }
    }
}

/// A JetStream stream or consumer name: non-empty, no whitespace, `.`, `*`, `>`, `/` or `\`.
fn bad_js_name(name: &str) -> bool {
    name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

fn check_subject_filter(v: &mut Problems, path: String, s: &str) {
    let toks: Vec<&str> = s.split('.').collect();
    let bad = toks.iter().enumerate().any(|(i, t)| {
        t.is_empty()
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
            || (t.contains('*') && *t != "*")
            || (t.contains('>') && (*t != ">" || i + 1 != toks.len()))
    });
    if bad {
        v.push(
            path,
            format!("`{s}` is not a NATS subject filter (tokens separated by `.`, `*` and a final `>` as wildcards)"),
        );
    }
}

fn check_nats(v: &mut Problems, p: &str, n: &NatsCommandTopicConfig) {
    if n.url.split(',').all(|u| u.trim().is_empty()) {
        v.push(
            format!("{p}.url"),
            "must name at least one server, e.g. nats://nats:4222",
        );
    }
    for server in n.url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Err(e) = crate::sink_nats::check_server_url(server) {
            v.push(format!("{p}.url"), e);
        }
    }
    if bad_js_name(&n.stream) {
        v.push(
            format!("{p}.stream"),
            format!(
                "stream name {:?} is invalid: it must be non-empty and contain no whitespace, \
                 '.', '*', '>', '/' or '\\'",
                n.stream
            ),
        );
    }
    if bad_js_name(&n.effective_durable()) {
        v.push(
            format!("{p}.durable"),
            "a consumer name must be non-empty and contain no whitespace, '.', '*', '>', '/' or '\\'",
        );
    }
    if n.subjects.is_empty() {
        v.push(format!("{p}.subjects"), "must list at least one subject");
    }
    for (i, s) in n.subjects.iter().enumerate() {
        check_subject_filter(v, format!("{p}.subjects[{i}]"), s);
    }
    for (i, s) in n.stream_subjects.iter().enumerate() {
        check_subject_filter(v, format!("{p}.stream_subjects[{i}]"), s);
    }
    v.duration(format!("{p}.ack_wait"), n.ack_wait);
    v.duration(format!("{p}.connect_timeout"), n.connect_timeout);
    v.duration(format!("{p}.request_timeout"), n.request_timeout);
    let has_password = n.password_file.is_some() || n.password_env.is_some();
    v.one_source(
        p,
        &[
            ("password_file", n.password_file.is_some()),
            ("password_env", n.password_env.is_some()),
        ],
        false,
    );
    v.one_source(
        p,
        &[
            ("token_file", n.token_file.is_some()),
            ("token_env", n.token_env.is_some()),
        ],
        false,
    );
    if has_password && n.username.is_none() {
        v.push(
            format!("{p}.username"),
            "required with password_file/password_env",
        );
    }
    if n.username.is_some() && !has_password {
        v.push(
            format!("{p}.username"),
            "needs password_file or password_env",
        );
    }
    if n.nkey_file.is_some() && n.credentials_file.is_some() {
        v.push(
            format!("{p}.credentials_file"),
            "set only one of nkey_file and credentials_file (a .creds file holds its own nkey)",
        );
    }
    if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
        v.push(
            format!("{p}.tls_key_file"),
            "tls_cert_file and tls_key_file go together",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CommandTopicConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn problems_keep_their_key_path() {
        let base = "[[accounts]]\nname = \"main\"\nenvironment = \"test\"\nusername = \"u\"\npassword_env = \"P\"\n[[sinks]]\ntype = \"console\"\nname = \"c\"\n";
        let err = crate::from_toml_str(&format!(
            "{base}[[command_topics]]\ntype = \"nats\"\nname = \"n\"\nurl = \"nats://x\"\nstream = \"S\"\nack_wait = 5\n"
        ))
        .unwrap_err();
        assert!(
            err.problems()
                .iter()
                .any(|p| p.path == "command_topics[0].ack_wait"),
            "{err}"
        );
        let cfg = crate::from_toml_str(&format!(
            "{base}[[command_topics]]\ntype = \"kafka\"\nname = \"k\"\nbrokers = \"b:9092\"\naccount = \"other\"\n"
        ))
        .unwrap();
        let problems = cfg.validate();
        assert!(
            problems
                .iter()
                .any(|p| p.path == "command_topics[0].account" && p.message.contains("other")),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_and_checks() {
        let k = parse("type = \"kafka\"\nname = \"cmds\"\nbrokers = \"k:9092\"");
        let CommandTopicConfig::Kafka(kc) = &k else {
            panic!("kafka")
        };
        assert_eq!(kc.topics, vec!["espm.commands".to_string()]);
        assert_eq!(kc.effective_group_id(), "espm-bridge-cmds");
        assert!(k.validate("command_topics[0]").is_empty());

        let n =
            parse("type = \"nats\"\nname = \"bus\"\nurl = \"nats://n:4222\"\nstream = \"CMDS\"");
        let CommandTopicConfig::Nats(nc) = &n else {
            panic!("nats")
        };
        assert_eq!(nc.effective_durable(), "espm-bridge-bus");
        assert_eq!(nc.effective_stream_subjects(), vec!["espm.commands.>"]);
        assert_eq!(nc.ack_wait, Duration::from_secs(60));
        assert!(n.validate("command_topics[1]").is_empty());

        let bad = parse(
            "type = \"nats\"\nname = \"Bus\"\nurl = \"http://n\"\nstream = \"a.b\"\nsubjects = [\"a.>.b\"]",
        );
        let paths: Vec<String> = bad.validate("c").into_iter().map(|p| p.path).collect();
        for want in ["c.name", "c.url", "c.stream", "c.subjects[0]"] {
            assert!(paths.iter().any(|p| p == want), "{want} in {paths:?}");
        }
        let bad = parse(
            "type = \"kafka\"\nname = \"k\"\nbrokers = \"\"\ntopics = [\"bad topic\"]\nproperties = { \"enable.auto.commit\" = \"true\" }",
        );
        assert_eq!(bad.validate("c").len(), 3, "{:?}", bad.validate("c"));
        assert!(toml::from_str::<CommandTopicConfig>(
            "type = \"kafka\"\nname = \"k\"\nbrokers = \"b\"\ntopic = \"typo\""
        )
        .is_err());
    }
}
