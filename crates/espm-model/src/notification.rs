//! `GET /notification/list`.

use serde::{Deserialize, Serialize};

/// `<notificationList>`: what one notification read returned. Not paginated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationList {
    /// The notifications, in PM's order.
    #[serde(rename = "notification", default)]
    pub notifications: Vec<Notification>,
}

impl crate::PmDocument for NotificationList {
    const ROOT: &'static str = "notificationList";
}

/// One `<notification>`. Field order is the XSD's `xs:sequence` order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `UNSHARE`, `SHAREUPDATE`, `DISCONNECT`, `TRANSFERPROPERTY`, or a code PM adds later.
    pub notification_type_code: String,
    /// PM's id of the notification.
    pub notification_id: i64,
    /// Human-readable text.
    #[serde(default)]
    pub description: String,
    /// The customer account concerned (for TRANSFERPROPERTY, the new owner's); who acted is
    /// `notificationCreatedBy`/`notificationCreatedByAccountId` (for SHAREUPDATE, the editor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<i64>,
    /// That account's username; absent in older schema versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The property concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_id: Option<i64>,
    /// The meter concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<i64>,
    /// When PM created it, as PM wrote it (see [`crate::parse_pm_datetime`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_created_date: Option<String>,
    /// Username of who caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_created_by: Option<String>,
    /// Account id of who caused it (a string in the XSD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_created_by_account_id: Option<String>,
}
