//! Async client for the ENERGY STAR Portfolio Manager web services: auth, retries, pagination, typed errors.
//!
//! Usable on its own: build a [`ClientConfig`], make a [`PmClient`], call it. Raw reads
//! ([`PmClient::notifications_raw`], [`PmClient::pending_page_raw`]) hand back the exact 2xx bytes so
//! a caller can journal them before parsing; the typed calls parse with `espm-model`.
//!
//! Every call sends HTTP Basic auth; POST bodies are `application/xml`. Failures are one
//! [`ClientError`]; 429, 500, 502, 503, 504, timeouts and transport errors are retried per
//! [`RetryPolicy`] (counted in `espm_bridge_pm_retries_total{endpoint,reason}`), other 4xx never.
//!
//! PM's 403 "Access Denied" is [`ClientError::AccessDenied`], with the path and PM's error, and a
//! message that says why (in PM's test environment an unshare answers 403; reads after an
//! unshare or disconnect do too). [`ClientError::is_access_denied`] covers it and the 404 PM
//! sometimes gives instead; [`ClientError::is_not_shared`] stays the unshare's 400 "not shared".
//!
//! ```no_run
//! use espm_client::{Action, ClientConfig, PendingKind, PmClient, TEST_BASE_URL};
//! # async fn demo() -> Result<(), espm_client::ClientError> {
//! let client = PmClient::new(ClientConfig::new(TEST_BASE_URL, "provider", "secret"))?;
//! for page in client.pending_all(PendingKind::Connection).await? {
//!     for req in &page.accounts {
//!         match client.answer(PendingKind::Connection, req.account_id, Action::Accept, None).await {
//!             Err(e) if e.is_already_resolved() => {} // answered before: fine
//!             other => other?,
//!         }
//!     }
//! }
//! let peek = client.notifications(false).await?;
//! # let _ = peek; Ok(()) }
//! ```

#![deny(missing_docs)]

mod client;
mod config;
mod error;

pub use client::{
    BodyStream, CustomFieldTarget, CustomerLink, PendingKind, PmClient, RawBody, MAX_PAGES,
};
pub use config::{
    ClientConfig, Password, RetryPolicy, DEFAULT_USER_AGENT, LIVE_BASE_URL, TEST_BASE_URL,
};
pub use error::ClientError;
pub use espm_model::{
    Action, CustomField, Customer, NewCustomer, NotificationList, PendingList, PmErrorDetail,
    Property,
};
