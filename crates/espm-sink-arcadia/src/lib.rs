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
//! | `property.transferred` | `customerOrgId`/`customerOrgName` = the new owner (404: done); a removal of our access follows as `share.revoked` |
//! | `connection.terminated` | `INACTIVE` for every mirrored account whose `customerOrgId` is the customer |
//! | `share.updated` with `propertyInfo` | refresh name, address, `buildingArea` of a mirrored account (never creates one) |
//! | `share.updated` without details (PM's SHAREUPDATE), meter-only events | nothing (logged at debug) |
//!
//! 400, 401 and 403 are permanent (dead letter with Arcadia's message); a 404 is permanent too
//! except where it means "never mirrored" (inactivate, transfer, refresh); 429 honours
//! `Retry-After`; 5xx, timeouts and connection failures retry per the policy.

#![deny(missing_docs)]

pub mod config;
pub mod request_builder;
pub mod service;
pub mod sink;

pub use request_builder::{Call, Mapping, Plan};
pub use service::{ArcadiaService, CallError};
pub use sink::ArcadiaSink;
