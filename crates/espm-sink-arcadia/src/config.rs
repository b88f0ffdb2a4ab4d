//! From the configuration (`espm_config::ArcadiaSinkConfig`, the single source of the TOML) to
//! what the sink runs with: the app key read from its file or variable, the client and the mapping.

use espm_arcadia::{AppKey, ArcadiaClient, ClientConfig};
use espm_config::{ArcadiaSinkConfig, SecretSource};
use espm_sink::SinkError;

use crate::request_builder::Mapping;

fn config_error(sink: &str, message: impl Into<String>) -> SinkError {
    SinkError::Config {
        sink: sink.to_string(),
        message: message.into(),
    }
}

/// Read the application key from `app_key_file` or `app_key_env` (the message names the source,
/// never the value).
pub fn read_app_key(cfg: &ArcadiaSinkConfig) -> Result<AppKey, SinkError> {
    let source = SecretSource::from_options(cfg.app_key_file.as_ref(), cfg.app_key_env.as_ref())
        .ok_or_else(|| {
            config_error(&cfg.name, "no app key: set `app_key_file` or `app_key_env`")
        })?;
    let key = source
        .read()
        .map_err(|e| config_error(&cfg.name, e.to_string()))?;
    let key = key.expose().trim();
    if key.is_empty() {
        return Err(config_error(&cfg.name, "the app key is empty"));
    }
    Ok(AppKey::new(key))
}

/// The Arcadia client of this sink.
pub fn client(cfg: &ArcadiaSinkConfig, app_key: AppKey) -> Result<ArcadiaClient, SinkError> {
    if cfg.app_id.trim().is_empty() {
        return Err(config_error(&cfg.name, "`app_id` must not be empty"));
    }
    ArcadiaClient::new(ClientConfig {
        base_url: cfg.base_url.clone(),
        app_id: cfg.app_id.trim().to_string(),
        app_key,
        timeout: cfg.timeout,
    })
    .map_err(|e| config_error(&cfg.name, e.to_string()))
}

/// The event-to-calls mapping of this sink.
pub fn mapping(cfg: &ArcadiaSinkConfig) -> Result<Mapping, SinkError> {
    Mapping::new(
        &cfg.provider_account_id,
        &cfg.customer_class,
        cfg.custom_fields.clone(),
        cfg.tariff_accuracy.min(100),
    )
    .map_err(|m| config_error(&cfg.name, m))
}
