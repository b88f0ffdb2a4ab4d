//! Arcadia (Genability) account-mirror sink: PM property shares become Arcadia Switch accounts.
//!
//! Layout (Vector-style): [`config`] turns the configuration into a client and a mapping;
//! [`request_builder`] is pure (event → list of Arcadia calls); [`service`] performs and
//! classifies one call; [`sink`] holds the [`ArcadiaSink`] with its retry loop.
//!
//! | event | Arcadia |
//! |---|---|
//! | `property_share.resolved`, `accepted` | upsert `providerAccountId` (name, customer, itemised address, `CUSTOMER`, `ACTIVE`), then `buildingArea` (sq ft), `customerClass`, mapped custom fields |
//! | `share.revoked` of a property | `status` `INACTIVE` (404: never mirrored, done) |
//! | `connection.terminated` | `INACTIVE` for every mirrored account whose `customerOrgId` is the customer |
//! | `share.updated`, `property.transferred`, meter-only events | nothing |
//!
//! 400, 401 and 403 are permanent (dead letter with Arcadia's message); 429 honours
//! `Retry-After`; 5xx, timeouts and connection failures retry per the policy.

#![deny(missing_docs)]

pub mod config;
pub mod request_builder;
pub mod service;
pub mod sink;

pub use request_builder::{Call, Mapping, Plan};
pub use service::{ArcadiaService, CallError};
pub use sink::ArcadiaSink;
