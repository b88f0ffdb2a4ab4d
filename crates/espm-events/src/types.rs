//! The event types and their schema URIs.

/// A PM `UNSHARE` notification: access to a property or meter was removed.
pub const SHARE_REVOKED: &str = "gov.energystar.pm.share.revoked";
/// A PM `SHAREUPDATE` notification: an access level or the custom field values of a share changed.
pub const SHARE_UPDATED: &str = "gov.energystar.pm.share.updated";
/// A PM `DISCONNECT` notification: a customer connection ended.
pub const CONNECTION_TERMINATED: &str = "gov.energystar.pm.connection.terminated";
/// A PM `TRANSFERPROPERTY` notification: a property got a new owner.
pub const PROPERTY_TRANSFERRED: &str = "gov.energystar.pm.property.transferred";
/// A PM notification with a code we do not know (yet): passed through, never dropped.
pub const NOTIFICATION_RECEIVED: &str = "gov.energystar.pm.notification.received";
/// A pending connection request appeared.
pub const CONNECTION_REQUESTED: &str = "gov.energystar.pm.connection.requested";
/// A pending property share appeared.
pub const PROPERTY_SHARE_REQUESTED: &str = "gov.energystar.pm.property_share.requested";
/// A pending meter share appeared.
pub const METER_SHARE_REQUESTED: &str = "gov.energystar.pm.meter_share.requested";
/// A pending connection request left the pending list (accepted, rejected or withdrawn).
pub const CONNECTION_RESOLVED: &str = "gov.energystar.pm.connection.resolved";
/// A pending property share left the pending list.
pub const PROPERTY_SHARE_RESOLVED: &str = "gov.energystar.pm.property_share.resolved";
/// A pending meter share left the pending list.
pub const METER_SHARE_RESOLVED: &str = "gov.energystar.pm.meter_share.resolved";
/// Bridge-originated: a PM body failed to parse and was quarantined in the journal.
pub const BODY_QUARANTINED: &str = "gov.energystar.pm.bridge.body_quarantined";

/// Bridge-originated: a command asked of PM through the bridge (API, command topic, CLI,
/// policy) finished: PM did it, or it was already so.
pub const COMMAND_COMPLETED: &str = "gov.energystar.pm.command.completed";
/// Bridge-originated: a command failed: PM refused it, could not be reached, or the command was
/// malformed.
pub const COMMAND_FAILED: &str = "gov.energystar.pm.command.failed";
/// Bridge-originated: an auto-accept policy decided a pending request (a rule, the decision
/// webhook, or an answer PM implies from another), sent to PM as a command unless dry run.
pub const POLICY_DECIDED: &str = "gov.energystar.pm.policy.decided";

/// Every event type the bridge emits; schemas and the AsyncAPI document are generated from it.
pub const EVENT_TYPES: &[&str] = &[
    SHARE_REVOKED,
    SHARE_UPDATED,
    CONNECTION_TERMINATED,
    PROPERTY_TRANSFERRED,
    NOTIFICATION_RECEIVED,
    CONNECTION_REQUESTED,
    PROPERTY_SHARE_REQUESTED,
    METER_SHARE_REQUESTED,
    CONNECTION_RESOLVED,
    PROPERTY_SHARE_RESOLVED,
    METER_SHARE_RESOLVED,
    BODY_QUARANTINED,
    COMMAND_COMPLETED,
    COMMAND_FAILED,
    POLICY_DECIDED,
];

/// The PM notification codes with a type of their own, and that type.
pub const KNOWN_NOTIFICATION_CODES: &[(&str, &str)] = &[
    ("UNSHARE", SHARE_REVOKED),
    ("SHAREUPDATE", SHARE_UPDATED),
    ("DISCONNECT", CONNECTION_TERMINATED),
    ("TRANSFERPROPERTY", PROPERTY_TRANSFERRED),
];

/// Where the schemas are published: the `schemas/` folder of the repository's `main` branch, so
/// every id resolves to the checked-in file (`{SCHEMA_BASE}/x` is `schemas/x`). Published files
/// are versioned by name (`.v1.json`) and never change incompatibly under the same name.
pub const SCHEMA_BASE: &str =
    "https://raw.githubusercontent.com/espm-bridge/espm-bridge/main/schemas";

/// The `dataschema` URI of an event type: the `$id` of the schema its `data` adheres to,
/// `{SCHEMA_BASE}/data/{type}.v1.json`.
pub fn dataschema_uri(event_type: &str) -> String {
    // Concatenated, not `format!`ed: once per event of a burst.
    [SCHEMA_BASE, "/", DATA_DIR, event_type, SCHEMA_SUFFIX].concat()
}

/// Whether `uri` is [`dataschema_uri`] of `event_type`, without building it (the journal asks
/// for every event it stores).
pub fn is_dataschema_uri(uri: &str, event_type: &str) -> bool {
    uri.strip_prefix(SCHEMA_BASE)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_prefix(DATA_DIR))
        .and_then(|r| r.strip_suffix(SCHEMA_SUFFIX))
        == Some(event_type)
}

/// Where data schemas are, under `schemas/`.
const DATA_DIR: &str = "data/";
/// What every published schema's file name ends with (its version).
const SCHEMA_SUFFIX: &str = ".v1.json";

/// The `$id` of the schema of a whole event (the structured-mode JSON) of a type,
/// `{SCHEMA_BASE}/{type}.v1.json`.
pub fn envelope_schema_uri(event_type: &str) -> String {
    format!("{SCHEMA_BASE}/{}", schema_file_name(event_type))
}

/// The file (under `schemas/`) of an event type's envelope schema, e.g.
/// `gov.energystar.pm.share.revoked.v1.json`.
pub fn schema_file_name(event_type: &str) -> String {
    [event_type, SCHEMA_SUFFIX].concat()
}

/// The file (under `schemas/`) of an event type's data schema, e.g.
/// `data/gov.energystar.pm.share.revoked.v1.json`.
pub fn data_schema_file_name(event_type: &str) -> String {
    [DATA_DIR, event_type, SCHEMA_SUFFIX].concat()
}

/// The file under `schemas/` that a schema id names, if it is one of ours.
pub fn schema_file_of_uri(uri: &str) -> Option<&str> {
    uri.strip_prefix(SCHEMA_BASE)?
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty() && !rest.contains(".."))
}

/// The event type of a PM notification code. Unknown codes map to [`NOTIFICATION_RECEIVED`].
/// Surrounding whitespace and letter case are ignored (PM writes upper case).
pub fn notification_event_type(code: &str) -> &'static str {
    let code = code.trim();
    KNOWN_NOTIFICATION_CODES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map(|(_, t)| *t)
        .unwrap_or(NOTIFICATION_RECEIVED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `is_dataschema_uri` says yes to the type's own URI and no to any other type's.
        #[test]
        fn is_dataschema_uri_is_dataschema_uri(a in "[a-z.]{0,30}", b in "[a-z./]{0,30}") {
            prop_assert!(is_dataschema_uri(&dataschema_uri(&a), &a));
            prop_assert_eq!(is_dataschema_uri(&dataschema_uri(&a), &b), a == b);
            prop_assert!(!is_dataschema_uri(&envelope_schema_uri(&a), &a));
        }
    }
}
