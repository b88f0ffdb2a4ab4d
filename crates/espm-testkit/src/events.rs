//! CloudEvent builders for sink and journal tests.
//!
//! ```
//! use espm_testkit::events::{event, EventBuilder};
//! let e = event("evt-1");
//! assert_eq!(e.source, "urn:espm:sim:acme");
//! let e = EventBuilder::new("evt-2")
//!     .ty("gov.energystar.pm.share.revoked")
//!     .subject("property/5000006")
//!     .notification(700101)
//!     .build();
//! assert_eq!(e.data["notificationId"], 700101);
//! ```

use espm_events::CloudEvent;
use serde_json::{json, Value};

/// The type of [`event`]'s events.
pub const TEST_TYPE: &str = "gov.energystar.pm.test";

/// An event with this id from account `acme` of environment `sim`, of type [`TEST_TYPE`],
/// without subject or time, whose `data` is `{"n": id}`.
pub fn event(id: &str) -> CloudEvent {
    EventBuilder::new(id).build()
}

/// [`event`] with this type.
pub fn event_of_type(id: &str, ty: &str) -> CloudEvent {
    EventBuilder::new(id).ty(ty).build()
}

/// Events with these ids (see [`event`]).
pub fn events(ids: &[&str]) -> Vec<CloudEvent> {
    ids.iter().map(|id| event(id)).collect()
}

/// A CloudEvent under construction; starts as [`event`] describes.
#[derive(Debug, Clone)]
pub struct EventBuilder(CloudEvent);

impl EventBuilder {
    /// Start from [`event`]'s defaults.
    pub fn new(id: &str) -> Self {
        Self(CloudEvent {
            specversion: "1.0".into(),
            id: id.into(),
            source: "urn:espm:sim:acme".into(),
            ty: TEST_TYPE.into(),
            subject: None,
            time: None,
            datacontenttype: "application/json".into(),
            dataschema: "https://espm-bridge.invalid/schemas/test.json".into(),
            espmenvironment: "sim".into(),
            espmaccount: "acme".into(),
            causationid: None,
            correlationid: None,
            data: json!({ "n": id }).into(),
        })
    }

    /// Event type.
    pub fn ty(mut self, ty: &str) -> Self {
        self.0.ty = ty.into();
        self
    }

    /// Environment and account: also sets `source` to `urn:espm:{environment}:{account}`.
    pub fn account(mut self, environment: &str, account: &str) -> Self {
        self.0.espmenvironment = environment.into();
        self.0.espmaccount = account.into();
        self.0.source = format!("urn:espm:{environment}:{account}");
        self
    }

    /// `source`, as is.
    pub fn source(mut self, source: &str) -> Self {
        self.0.source = source.into();
        self
    }

    /// `subject`.
    pub fn subject(mut self, subject: &str) -> Self {
        self.0.subject = Some(subject.into());
        self
    }

    /// `time` (RFC 3339).
    pub fn time(mut self, time: &str) -> Self {
        self.0.time = Some(time.into());
        self
    }

    /// `dataschema`.
    pub fn dataschema(mut self, uri: &str) -> Self {
        self.0.dataschema = uri.into();
        self
    }

    /// `data`, replacing what was there.
    pub fn data(mut self, data: Value) -> Self {
        self.0.data = data.into();
        self
    }

    /// `data` is `{"notificationId": id}`, as a notification's event carries it.
    pub fn notification(self, notification_id: i64) -> Self {
        self.data(json!({ "notificationId": notification_id }))
    }

    /// The event.
    pub fn build(self) -> CloudEvent {
        self.0
    }
}
