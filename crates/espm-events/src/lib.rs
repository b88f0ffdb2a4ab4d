//! The normalizer: Portfolio Manager documents to versioned CloudEvents 1.0, with JSON Schemas.
//!
//! This crate is pure: no I/O. [`CloudEvent`] is the contract every sink and the journal share.
//!
//! - [`notification_event`]: one PM `<notification>` -> one event (unknown codes pass through as
//!   `gov.energystar.pm.notification.received`).
//! - [`diff_pending`]: a complete pending list against the stored snapshot -> `...requested` and
//!   `...resolved` events plus the new snapshot (a request is resolved only after
//!   [`RESOLVE_AFTER_MISSED_WALKS`] complete walks missed it).
//! - [`customer_to_enrich`] / [`enrich_customer`]: share events carry their customer's username
//!   and organisation, looked up by the caller; a failed lookup flags the event instead.
//! - [`share_update_target`] / [`NotificationCorrelator::with_custom_fields`] (or `add_custom_fields`, per part): `share.updated`
//!   carries the custom field values the caller re-read from PM, or the same flag.
//! - [`quarantine_event`]: the bridge's error event for a PM body that failed to parse.
//! - [`normalize_document`]: a whole `notificationList` or `pendingList` body -> events.
//! - [`event_schemas`] / [`asyncapi_yaml`]: the published contract, generated from the types in
//!   [`data`] and [`EVENT_TYPES`] (checked in under `schemas/`).
//!
//! Ids are UUIDv5 over the origin and PM's own ids, so re-reading the same PM data after a
//! restart yields the same ids and consumers can deduplicate.
//!
//! ```
//! use espm_events::{normalize_document, Origin};
//! let xml = br#"<notificationList><notification><notificationTypeCode>UNSHARE</notificationTypeCode>
//!   <notificationId>8833843022</notificationId><description>x</description>
//!   <propertyId>5</propertyId></notification></notificationList>"#;
//! let events = normalize_document(&Origin::new("sim", "acme"), xml).unwrap();
//! assert_eq!(events[0].ty, "gov.energystar.pm.share.revoked");
//! assert_eq!(events[0].subject.as_deref(), Some("property/5"));
//! assert_eq!(events[0].data["notificationId"], 8833843022i64);
//! ```

#![deny(missing_docs)]

mod cloudevent;
pub mod data;
mod enrich;
mod normalize;
mod partition;
mod payload;
mod schema;
mod template;
mod types;

pub use cloudevent::CloudEvent;
pub use cloudevent::{percent_encode_header, AttributeHeaders, ATTRIBUTE_NAMES};
pub use data::{
    BodyQuarantinedData, CommandAction, CommandErrorData, CommandOutcome, CommandResultData,
    CustomerData, Enrichment, PolicyAnswer, PolicyDecidedBy, PolicyDecidedData, PolicyImpliedBy,
    PolicySource, PropertyData, Resolution,
};
pub use enrich::{
    customer_to_enrich, enrich_custom_fields, enrich_customer, enrich_property, property_to_enrich,
    LOOKED_UP_TYPES,
};
pub use espm_model::CustomFieldTarget;
pub use normalize::{
    command_event, connection_requested_data, diff_pending, event_time, meter_share_requested_data,
    normalize_document, normalize_pm_time, notification_data, notification_event,
    notification_events, pending_key, pending_requested_episode, pending_requested_event,
    pending_resolved_event, pending_snapshot_value, policy_event, property_data,
    property_share_requested_data, quarantine_event, requested_type, resolved_type,
    share_update_access_level, share_update_target, subject_for, CustomFieldsByTarget,
    NormalizeError, NotificationCorrelator, Origin, PendingDiff, PendingEntry, PendingKind,
    TrackedRequest, CORRELATED_DISCONNECTS, ID_NAMESPACE, RESOLVE_AFTER_MISSED_WALKS,
};
pub use partition::{partition_key, partition_key_doc, partition_key_fields};
pub use payload::Data;
pub use schema::{asyncapi_yaml, data_schema, data_schemas, event_schema, event_schemas};
pub use template::{Template, TemplateError};
pub use types::*;
