//! The three pending lists of PM's connection/share services: the one statement of the pending
//! kinds that the client, the events, the commands and the policy all use.

/// Which pending list (and answer endpoint) a request belongs to. Written `connection`,
/// `property_share` and `meter_share` in JSON, TOML and the journal.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// A connection request (its id is the customer's account id):
    /// `GET /connect/account/pending/list`.
    Connection,
    /// A property share (its id is the property id): `GET /share/property/pending/list`.
    PropertyShare,
    /// A meter share (its id is the meter id): `GET /share/meter/pending/list`.
    MeterShare,
}

impl PendingKind {
    /// All three kinds.
    pub const ALL: [PendingKind; 3] = [
        PendingKind::Connection,
        PendingKind::PropertyShare,
        PendingKind::MeterShare,
    ];

    /// `connection`, `property_share` or `meter_share`.
    pub fn as_str(self) -> &'static str {
        match self {
            PendingKind::Connection => "connection",
            PendingKind::PropertyShare => "property_share",
            PendingKind::MeterShare => "meter_share",
        }
    }

    /// Parse `connection`, `property_share` or `meter_share`.
    pub fn parse(s: &str) -> Option<PendingKind> {
        PendingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Path of the list's first page, relative to PM's base URI.
    pub fn list_path(self) -> &'static str {
        match self {
            PendingKind::Connection => "/connect/account/pending/list",
            PendingKind::PropertyShare => "/share/property/pending/list",
            PendingKind::MeterShare => "/share/meter/pending/list",
        }
    }

    /// The metrics/tracing endpoint label of the list.
    pub fn list_endpoint(self) -> &'static str {
        &self.list_path()[1..]
    }

    /// Prefix of the answer path: `{prefix}{id}/accept|reject`.
    pub fn answer_prefix(self) -> &'static str {
        match self {
            PendingKind::Connection => "/connect/account/",
            PendingKind::PropertyShare => "/share/property/",
            PendingKind::MeterShare => "/share/meter/",
        }
    }

    /// The metrics/tracing endpoint label of the answer.
    pub fn answer_endpoint(self) -> &'static str {
        match self {
            PendingKind::Connection => "connect/account/{id}",
            PendingKind::PropertyShare => "share/property/{id}",
            PendingKind::MeterShare => "share/meter/{id}",
        }
    }

    /// The field of a request's data that holds its id.
    pub fn id_field(self) -> &'static str {
        match self {
            PendingKind::Connection => "accountId",
            PendingKind::PropertyShare => "propertyId",
            PendingKind::MeterShare => "meterId",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_are_serde_names() {
        for k in PendingKind::ALL {
            assert_eq!(PendingKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert!(k.list_path().starts_with(k.answer_prefix()));
        }
        assert_eq!(PendingKind::parse("property"), None);
    }
}
