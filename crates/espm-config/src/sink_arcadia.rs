//! Arcadia (Genability) account-mirror sink configuration. Owned by the Arcadia sink: extend here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::RetryPolicy;

/// Mirror PM property shares into Arcadia Switch accounts: an accepted share upserts the account
/// (address, floor area, customer class, mapped custom fields such as the tariff); an unshare or
/// a disconnect sets it `INACTIVE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArcadiaSinkConfig {
    /// Sink name; keys its cursor.
    pub name: String,
    /// Arcadia's REST base, up to and including `/rest/v1`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The application id (HTTP Basic user).
    pub app_id: String,
    /// File holding the application key (HTTP Basic password). Wins over `app_key_env`; one of
    /// the two is required. Never put the key in `base_url`.
    #[serde(default)]
    pub app_key_file: Option<PathBuf>,
    /// Environment variable holding the application key.
    #[serde(default)]
    pub app_key_env: Option<String>,
    /// Our id for a property's account (`providerAccountId`); `{propertyId}` is replaced by the
    /// PM property id. Changing it orphans the accounts already mirrored.
    #[serde(default = "default_provider_account_id")]
    pub provider_account_id: String,
    /// The `customerClass` property of every mirrored account (`1` residential, `2` general).
    #[serde(default = "default_customer_class")]
    pub customer_class: String,
    /// PM custom field name -> Arcadia property key, e.g. `{ "Master Tariff Id" =
    /// "masterTariffId" }`. Fields the share does not carry are left alone.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    /// The `accuracy` sent with a `masterTariffId` (0..100; 100 = the customer told us).
    #[serde(default = "default_tariff_accuracy")]
    pub tariff_accuracy: u32,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "crate::DurationString")]
    pub timeout: Duration,
    /// Retry policy for throttling (429), server errors and timeouts.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_base_url() -> String {
    "https://api.genability.com/rest/v1".into()
}
fn default_provider_account_id() -> String {
    "espm-{propertyId}".into()
}
fn default_customer_class() -> String {
    "2".into()
}
fn default_tariff_accuracy() -> u32 {
    100
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

/// The placeholder of [`ArcadiaSinkConfig::provider_account_id`].
pub const PROPERTY_ID_PLACEHOLDER: &str = "{propertyId}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cfg: ArcadiaSinkConfig =
            toml::from_str("name = \"arcadia\"\napp_id = \"id\"\napp_key_env = \"K\"\n").unwrap();
        assert_eq!(cfg.base_url, "https://api.genability.com/rest/v1");
        assert_eq!(cfg.provider_account_id, "espm-{propertyId}");
        assert_eq!(cfg.customer_class, "2");
        assert_eq!(cfg.tariff_accuracy, 100);
        assert!(toml::from_str::<ArcadiaSinkConfig>(
            "name = \"a\"\napp_id = \"i\"\nap_key_env = \"K\"\n"
        )
        .is_err());
    }
}
