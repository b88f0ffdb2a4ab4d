//! Semantic checks that types alone cannot express, each reported with its key path.

use std::collections::BTreeMap;
use std::time::Duration;

use espm_events::Template;

use crate::{
    AccountConfig, ArcadiaSinkConfig, BridgeConfig, ConfigProblem, Environment, FileSinkConfig,
    KafkaSinkConfig, NatsSinkConfig, Secret, SecretError, SecretSource, SinkConfig,
    WebhookSinkConfig,
};

/// Longest account or sink name: they end up in metric labels, subjects, topic names and file
/// names, so keep them short.
const MAX_NAME_LEN: usize = 63;

/// Read an account's PM password from its `password_file` or `password_env`.
pub fn resolve_password(account: &AccountConfig) -> Result<Secret, SecretError> {
    account
        .password_source()
        .ok_or_else(|| SecretError::NotConfigured("password_file or password_env".into()))?
        .read()
}

impl AccountConfig {
    /// Where the password comes from; `None` when neither is set (see [`SecretSource::from_options`]).
    pub fn password_source(&self) -> Option<SecretSource> {
        SecretSource::from_options(self.password_file.as_ref(), self.password_env.as_ref())
    }

    /// The configured `base_url`, or the PM default for `live` and `test`; `None` for `sim`
    /// without a `base_url` (which `validate` rejects).
    pub fn effective_base_url(&self) -> Option<String> {
        match (&self.base_url, self.environment) {
            (Some(u), _) => Some(u.clone()),
            (None, Environment::Live) => {
                Some("https://portfoliomanager.energystar.gov/ws".to_string())
            }
            (None, Environment::Test) => {
                Some("https://portfoliomanager.energystar.gov/wstest".to_string())
            }
            (None, Environment::Sim) => None,
        }
    }
}

impl BridgeConfig {
    /// Every semantic problem, each with its key path; empty means the configuration can run.
    /// Secrets are not read here (files may be mounted only in the target environment).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut v = Problems::default();
        if self.journal.path.as_os_str().is_empty() {
            v.push("journal.path", "must not be empty");
        }
        v.duration("journal.retention", self.journal.retention);
        check_listen(&mut v, "metrics.listen", &self.metrics.listen);
        if let Some(api) = &self.api {
            check_listen(&mut v, "api.listen", &api.listen);
            if api.listen == self.metrics.listen {
                v.push("api.listen", "must differ from metrics.listen");
            }
            if api.token_file.is_none() && api.token_env.is_none() {
                v.push(
                    "api",
                    "set token_file or token_env: the command API never runs without tokens",
                );
            }
            if api.token_file.is_some() && api.token_env.is_some() {
                v.push("api", "set only one of token_file and token_env");
            }
        }

        if self.accounts.is_empty() {
            v.push(
                "accounts",
                "no accounts configured: add at least one [[accounts]] table",
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let p = format!("accounts[{i}]");
            check_name(&mut v, &format!("{p}.name"), &a.name);
            if let Some(first) = seen.insert(&a.name, i) {
                v.push(
                    format!("{p}.name"),
                    format!(
                        "duplicate account name `{}` (also accounts[{first}])",
                        a.name
                    ),
                );
            }
            check_account(&mut v, &p, a);
        }
        check_one_poller_per_pm_account(&mut v, &self.accounts);

        if self.sinks.is_empty() {
            v.push(
                "sinks",
                "no sinks configured: events would only pile up in the journal; add a [[sinks]] table",
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let p = format!("sinks[{i}]");
            if let Some(first) = seen.insert(s.name(), i) {
                v.push(
                    format!("{p}.name"),
                    format!("duplicate sink name `{}` (also sinks[{first}])", s.name()),
                );
            }
            v.0.extend(s.validate(&p));
        }
        v.0.extend(crate::command_topics::validate_all(
            &self.command_topics,
            &self.accounts,
        ));
        v.0
    }
}

impl SinkConfig {
    /// Every problem of this sink's configuration, with key paths under `path` (`sinks[0]`).
    /// `check-config` (through [`BridgeConfig::validate`]) and each sink's constructor call
    /// this same function, so `run` never rejects what `check-config` accepted. Secrets are
    /// not read here.
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut v = Problems::default();
        check_name(&mut v, &format!("{path}.name"), self.name());
        match self {
            SinkConfig::Kafka(k) => check_kafka(&mut v, path, k),
            SinkConfig::Nats(n) => check_nats(&mut v, path, n),
            SinkConfig::Webhook(w) => check_webhook(&mut v, path, w),
            SinkConfig::File(f) => check_file(&mut v, path, f),
            SinkConfig::Arcadia(a) => check_arcadia(&mut v, path, a),
            SinkConfig::Console(_) => {}
        }
        v.0
    }
}

macro_rules! sink_validate {
    ($ty:ty, $variant:ident) => {
        impl $ty {
            /// Every problem of this sink configuration, with key paths under `path`; the same
            /// check `check-config` runs ([`SinkConfig::validate`]).
            pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
                SinkConfig::$variant(self.clone()).validate(path)
            }
        }
    };
}
sink_validate!(KafkaSinkConfig, Kafka);
sink_validate!(NatsSinkConfig, Nats);
sink_validate!(WebhookSinkConfig, Webhook);
sink_validate!(FileSinkConfig, File);
sink_validate!(ArcadiaSinkConfig, Arcadia);
sink_validate!(crate::ConsoleSinkConfig, Console);

#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(path, message));
    }
    pub(crate) fn duration(&mut self, path: impl Into<String>, d: Duration) {
        if d.is_zero() {
            self.push(path, "must be greater than zero");
        }
    }
    fn template(&mut self, path: impl Into<String>, t: &str) {
        let path = path.into();
        if t.trim().is_empty() {
            self.push(path, "must not be empty");
        } else if let Err(e) = Template::parse(t) {
            self.push(path, format!("invalid template `{t}`: {e}"));
        }
    }
    fn at_least_one(&mut self, path: impl Into<String>, n: usize) {
        if n < 1 {
            self.push(path, "must be at least 1");
        }
    }
    pub(crate) fn http_url(&mut self, path: impl Into<String>, s: &str) {
        let path = path.into();
        // Shown redacted: user info and a query may be credentials.
        let shown = crate::redact_url(s);
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            Ok(u) => self.push(
                path,
                format!(
                    "`{shown}` is not an http(s) URL (scheme `{}`{})",
                    u.scheme(),
                    if u.has_host() { "" } else { ", no host" }
                ),
            ),
            Err(e) => self.push(path, format!("`{shown}` is not a valid URL: {e}")),
        }
    }
    /// At most one of the given secret sources; `required` makes exactly one.
    pub(crate) fn one_source(&mut self, path: &str, keys: &[(&str, bool)], required: bool) {
        let set: Vec<&str> = keys.iter().filter(|k| k.1).map(|k| k.0).collect();
        let names = keys
            .iter()
            .map(|k| format!("`{}`", k.0))
            .collect::<Vec<_>>()
            .join(" or ");
        if set.len() > 1 {
            self.push(
                format!("{path}.{}", set[1]),
                format!("set only one of {names} (both {} given)", set.join(" and ")),
            );
        } else if set.is_empty() && required {
            self.push(path, format!("missing secret: set {names}"));
        }
    }
}

pub(crate) fn check_name(v: &mut Problems, path: &str, name: &str) {
    if name.is_empty() {
        v.push(path, "must not be empty");
    } else if name.len() > MAX_NAME_LEN {
        v.push(path, format!("longer than {MAX_NAME_LEN} characters"));
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        v.push(
            path,
            format!(
                "`{name}` may contain only a-z, 0-9, `_` and `-` (it is used in metric labels, subjects and topic names)"
            ),
        );
    }
}

fn check_listen(v: &mut Problems, key: &str, listen: &str) {
    let ok = listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        v.push(
            key,
            format!("`{listen}` is not a host:port listen address such as `0.0.0.0:9464`"),
        );
    }
}

/// PM forbids concurrent calls per account, and each `clear=true` read hands a notification to
/// one caller only: the same PM login (username on the same PM base URL) under two account
/// names would run two pollers that split its notifications between two journal namespaces.
fn check_one_poller_per_pm_account(v: &mut Problems, accounts: &[AccountConfig]) {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, a) in accounts.iter().enumerate() {
        let Some(base) = a.effective_base_url() else {
            continue;
        };
        let username = a.username.trim().to_ascii_lowercase();
        if username.is_empty() {
            continue;
        }
        let base = base.trim().trim_end_matches('/').to_ascii_lowercase();
        if let Some(first) = seen.insert((base.clone(), username), i) {
            v.push(
                format!("accounts[{i}].username"),
                format!(
                    "PM user `{}` at {base} is already configured as account `{}` (accounts[{first}]): \
                     two pollers on one PM account would split its notifications; configure it once",
                    a.username.trim(),
                    accounts[first].name
                ),
            );
        }
    }
}

fn check_account(v: &mut Problems, p: &str, a: &AccountConfig) {
    if a.username.trim().is_empty() {
        v.push(format!("{p}.username"), "must not be empty");
    }
    v.one_source(
        p,
        &[
            ("password_file", a.password_file.is_some()),
            ("password_env", a.password_env.is_some()),
        ],
        true,
    );
    if a.password_env.as_deref().is_some_and(str::is_empty) {
        v.push(format!("{p}.password_env"), "must name a variable");
    }
    match (&a.base_url, a.environment) {
        (Some(u), _) => v.http_url(format!("{p}.base_url"), u),
        (None, Environment::Sim) => v.push(
            format!("{p}.base_url"),
            "required for environment `sim` (the simulator's URL, e.g. http://127.0.0.1:18080/ws)",
        ),
        (None, _) => {}
    }
    v.duration(format!("{p}.poll_interval"), a.poll_interval);
    v.duration(format!("{p}.pending_interval"), a.pending_interval);
    v.duration(format!("{p}.request_timeout"), a.request_timeout);
    v.duration(format!("{p}.customer_cache_ttl"), a.customer_cache_ttl);
    v.duration(
        format!("{p}.customer_lookup_timeout"),
        a.customer_lookup_timeout,
    );
    if let Some(policy) = &a.policy {
        v.0.extend(policy.validate(&format!("{p}.policy")));
    }
}

fn check_kafka(v: &mut Problems, p: &str, k: &KafkaSinkConfig) {
    if k.brokers.split(',').all(|b| b.trim().is_empty()) {
        v.push(
            format!("{p}.brokers"),
            "must list at least one broker (host:port)",
        );
    } else if k.brokers.split(',').any(|b| b.trim().is_empty()) {
        v.push(format!("{p}.brokers"), "has an empty entry between commas");
    }
    v.template(format!("{p}.topic"), &k.topic);
    if !k.topic.contains('{') && !k.topic.contains('}') && !k.topic.trim().is_empty() {
        if let Err(reason) = crate::kafka_topic_name(&k.topic) {
            v.push(
                format!("{p}.topic"),
                format!("`{}` is not a valid Kafka topic name: {reason}", k.topic),
            );
        }
    }
    if k.create_topics && k.topic_partitions < 1 {
        v.push(format!("{p}.topic_partitions"), "must be at least 1");
    }
    v.template(format!("{p}.key"), &k.key);
    for key in k.secret_files.keys().chain(k.secret_envs.keys()) {
        if k.properties.contains_key(key) {
            v.push(
                format!("{p}.properties.{key}"),
                "also set from secret_files/secret_envs: keep the secret out of `properties`",
            );
        }
    }
    for key in k.properties.keys() {
        // Inline secrets would land in the chart's ConfigMap and in `check-config` output.
        let lower = key.to_ascii_lowercase();
        if lower.contains("password") || lower.contains("secret") || lower.ends_with(".key.pem") {
            v.push(
                format!("{p}.properties.{key}"),
                "looks like a secret: set it with secret_files or secret_envs, never inline",
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

fn check_nats(v: &mut Problems, p: &str, n: &NatsSinkConfig) {
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
    v.template(format!("{p}.subject"), &n.subject);
    v.at_least_one(format!("{p}.max_in_flight"), n.max_in_flight);
    if n.create_stream && n.stream.is_none() {
        v.push(format!("{p}.stream"), "required when create_stream = true");
    }
    if let Some(name) = &n.stream {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
        {
            v.push(
                format!("{p}.stream"),
                format!(
                    "stream name {name:?} is invalid: it must be non-empty and contain no \
                     whitespace, '.', '*', '>', '/' or '\\'"
                ),
            );
        }
    }
    if n.create_stream && n.jetstream {
        if let Err(e) = n.effective_stream_subjects() {
            v.push(format!("{p}.stream_subjects"), e);
        }
    }
    if (n.create_stream || n.stream.is_some()) && !n.jetstream {
        v.push(format!("{p}.jetstream"), "a stream needs jetstream = true");
    }
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

fn check_webhook(v: &mut Problems, p: &str, w: &WebhookSinkConfig) {
    for key in w.headers.keys() {
        // Inline credentials would land in the chart's ConfigMap and in `check-config` output.
        let lower = key.to_ascii_lowercase();
        if [
            "authorization",
            "token",
            "secret",
            "password",
            "api-key",
            "apikey",
            "x-api-key",
        ]
        .iter()
        .any(|s| lower.contains(s))
        {
            v.push(
                format!("{p}.headers.{key}"),
                "looks like a credential: set it with header_files or header_envs, never inline",
            );
        }
    }
    v.http_url(format!("{p}.url"), &w.url);
    v.one_source(
        p,
        &[
            ("secret_file", w.secret_file.is_some()),
            ("secret_env", w.secret_env.is_some()),
        ],
        true,
    );
    v.at_least_one(format!("{p}.max_in_flight"), w.max_in_flight);
    v.duration(format!("{p}.timeout"), w.timeout);
    for key in w.header_files.keys() {
        if w.header_envs.contains_key(key) {
            v.push(
                format!("{p}.header_envs.{key}"),
                "also set in header_files: pick one source",
            );
        }
    }
    for (i, t) in w.types.iter().enumerate() {
        // The sink trims patterns, so a blank one would match nothing useful.
        let t = t.trim();
        let star = t.find('*');
        if t.is_empty() || star.is_some_and(|s| s + 1 != t.len()) {
            v.push(
                format!("{p}.types[{i}]"),
                format!("`{t}`: use an exact type or a prefix ending in `*`"),
            );
        }
    }
    for key in w.retry.removed_keys() {
        v.push(
            format!("{p}.retry.{key}"),
            "was removed: webhook retries follow `retry.schedule`, a list of delays between \
             attempts (default [\"5s\", \"5m\", \"30m\", \"2h\", \"5h\", \"10h\", \"10h\"]); \
             replace max_attempts/initial_interval/max_interval with it",
        );
    }
    for (i, d) in w.retry.schedule.iter().enumerate() {
        if *d > Duration::from_secs(7 * 86400) {
            v.push(format!("{p}.retry.schedule[{i}]"), "must not exceed 7 days");
        }
    }
    v.duration(format!("{p}.retry.max_age"), w.retry.max_age);
}

fn check_retry(v: &mut Problems, p: &str, retry: &crate::RetryPolicy) {
    if retry.max_attempts < 1 {
        v.push(format!("{p}.retry.max_attempts"), "must be at least 1");
    }
    v.duration(format!("{p}.retry.max_age"), retry.max_age);
    v.duration(
        format!("{p}.retry.initial_interval"),
        retry.initial_interval,
    );
    v.duration(format!("{p}.retry.max_interval"), retry.max_interval);
    if retry.initial_interval > retry.max_interval {
        v.push(
            format!("{p}.retry.initial_interval"),
            "must not exceed retry.max_interval",
        );
    }
}

fn check_arcadia(v: &mut Problems, p: &str, a: &ArcadiaSinkConfig) {
    v.http_url(format!("{p}.base_url"), &a.base_url);
    if let Ok(u) = url::Url::parse(&a.base_url) {
        if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
            v.push(
                format!("{p}.base_url"),
                "must not carry credentials or a query: use app_id and app_key_file/app_key_env",
            );
        }
    }
    if a.app_id.trim().is_empty() {
        v.push(format!("{p}.app_id"), "must not be empty");
    }
    v.one_source(
        p,
        &[
            ("app_key_file", a.app_key_file.is_some()),
            ("app_key_env", a.app_key_env.is_some()),
        ],
        true,
    );
    if a.provider_account_id
        .matches(crate::PROPERTY_ID_PLACEHOLDER)
        .count()
        != 1
    {
        v.push(
            format!("{p}.provider_account_id"),
            format!(
                "`{}` must contain {} exactly once, e.g. `espm-{{propertyId}}`",
                a.provider_account_id,
                crate::PROPERTY_ID_PLACEHOLDER
            ),
        );
    }
    if a.customer_class.trim().is_empty() {
        v.push(format!("{p}.customer_class"), "must not be empty");
    }
    for (field, key) in &a.custom_fields {
        if field.trim().is_empty() || key.trim().is_empty() {
            v.push(
                format!("{p}.custom_fields"),
                format!(
                    "`{field}` = `{key}`: neither the PM field nor the Arcadia key may be empty"
                ),
            );
        }
    }
    if a.tariff_accuracy > 100 {
        v.push(format!("{p}.tariff_accuracy"), "must be within 0..=100");
    }
    v.duration(format!("{p}.timeout"), a.timeout);
    check_retry(v, p, &a.retry);
}

fn check_file(v: &mut Problems, p: &str, f: &FileSinkConfig) {
    if f.path.as_os_str().is_empty() {
        v.push(format!("{p}.path"), "must not be empty");
    }
}
