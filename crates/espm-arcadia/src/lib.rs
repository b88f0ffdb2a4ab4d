//! Arcadia (formerly Genability) Switch account API: the JSON shapes and an async client.
//!
//! Usable on its own: the bridge's Arcadia sink and its simulator both build on these types, so
//! what the simulator answers and what the client reads cannot drift apart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), espm_arcadia::ArcadiaError> {
//! use espm_arcadia::{AccountRef, AppKey, ArcadiaClient, ClientConfig, SetProperty};
//! let client = ArcadiaClient::new(ClientConfig {
//!     base_url: espm_arcadia::DEFAULT_BASE_URL.into(),
//!     app_id: "my-app-id".into(),
//!     app_key: AppKey::new(std::env::var("ARCADIA_APP_KEY").unwrap_or_default()),
//!     timeout: std::time::Duration::from_secs(15),
//! })?;
//! let pid = AccountRef::Provider("api-eg-008".into());
//! let set = client.set_property(&pid, &SetProperty::new("buildingArea", "2000")).await?;
//! assert_eq!(set.data_value.as_deref(), Some("2000"));
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod client;
pub mod model;

pub use client::{
    parse_retry_after, AccountQuery, AccountRef, AppKey, ArcadiaClient, ArcadiaError, ClientConfig,
    DEFAULT_BASE_URL,
};
pub use model::{
    status, Account, AccountTariff, Address, ApiError, Envelope, ErrorDetail, PropertyData,
    SetProperty,
};
