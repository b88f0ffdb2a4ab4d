//! Portfolio Manager XML documents as typed serde structs: lenient reading, schema-valid writing.
//!
//! Reading is lenient the way real PM traffic needs: children of `xs:all` in any order, unknown
//! elements ignored, optional elements missing (no `username` in old schemas), CDATA and entities.
//! Writing follows the official XSDs (schema version 26.0): `xs:sequence` children are declared
//! in schema order, and empty optional values are omitted rather than sent empty.
//!
//! Ids are `i64` (PM's `xs:long`; values above 2^31 occur). Timestamps are kept as PM sent them
//! (lossless) and can be interpreted with [`parse_pm_datetime`].
//!
//! ```
//! use espm_model::{parse, NotificationList};
//! let xml = br#"<notificationList><notification><notificationTypeCode>UNSHARE</notificationTypeCode>
//!   <notificationId>8833843022</notificationId><description>x</description></notification></notificationList>"#;
//! let list: NotificationList = parse(xml).unwrap();
//! assert_eq!(list.notifications[0].notification_id, 8_833_843_022);
//! ```

#![deny(missing_docs)]

mod customer;
mod document;
mod fast;
mod kind;
mod notification;
mod pending;
mod property;
mod request;
mod response;
mod salvage;
mod stream;
mod time;

pub use customer::{CustomFieldTarget, CustomFieldValues, Customer};
pub use document::{parse, root_element, to_xml, DocumentError, PmDocument};
pub use kind::PendingKind;
pub use notification::{Notification, NotificationList};
pub use pending::{
    AccessLevel, AccountInfo, Address, Audit, CustomField, CustomFieldList, GrossFloorArea, Link,
    Links, MeterInfo, PendingAccount, PendingList, PendingMeter, PendingProperty, PropertyInfo,
};
pub use property::Property;
pub use request::{
    Action, Contact, NewCustomer, Organization, SharingResponse, TerminateSharingResponse,
    NOTE_MAX_CHARS,
};
pub use response::{
    PmErrorDetail, Response, ResponseErrors, ResponseStatus, ResponseWarnings, Warning,
};
pub use salvage::{parse_notifications_salvaging, BadFragment, SalvagedList};
pub use stream::{ListItem, NotAList, NotificationStream, MAX_BAD_PART};
pub use time::{parse_pm_datetime, TimeError};
