//! What can be asked of PM, as JSON types: the bodies of the command API and the `data` of
//! command CloudEvents. Schemas (OpenAPI, AsyncAPI) are generated from these types.

use std::fmt;

use espm_events::data::CommandAction;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::CommandError;

/// PM's limit on a note, in characters.
pub use espm_model::NOTE_MAX_CHARS;

/// A command id (an `Idempotency-Key`) is 1 to this many visible ASCII characters.
pub const ID_MAX_LEN: usize = 128;

/// Which pending list a request is on: the model's one statement of the kinds.
pub use espm_model::PendingKind;

/// Accept or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Accept the request.
    Accept,
    /// Reject the request.
    Reject,
}

impl Decision {
    /// `accepted` or `rejected`: what the `resolved` event will say.
    pub fn resolution(self) -> &'static str {
        match self {
            Decision::Accept => "accepted",
            Decision::Reject => "rejected",
        }
    }
}

/// A password: never shown by `Debug`, never written to the journal or an event.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wrap a password.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The password itself, for the PM call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The body of `answerRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnswerBody {
    /// Accept or reject.
    pub decision: Decision,
    /// Optional note for the customer, at most 1,000 characters (PM's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The body of `disconnectCustomer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisconnectBody {
    /// Whether the customer's property and meter shares stay after the disconnect. Required:
    /// PM's own default (false) removes them, which callers rarely expect.
    pub keep_shares: bool,
    /// Optional note for the customer, at most 1,000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The body of `unshareProperty` and `unshareMeter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnshareBody {
    /// Optional note for the customer, at most 1,000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A postal address (PM's `addressType`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressBody {
    /// Street line 1.
    pub address1: String,
    /// Street line 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    /// City.
    pub city: String,
    /// US state or Canadian province code (e.g. `VA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Free-text state or region outside the US and Canada.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_state: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country code (e.g. `US`).
    pub country: String,
}

/// The contact of a new customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContactBody {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Postal address.
    pub address: AddressBody,
    /// E-mail.
    pub email: String,
    /// Job title.
    pub job_title: String,
    /// Phone.
    pub phone: String,
}

/// The organisation of a new customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationBody {
    /// Organisation name.
    pub name: String,
    /// PM's primary business type, e.g. `Other`.
    pub primary_business: String,
    /// Free text when `primaryBusiness` is `Other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_business_description: Option<String>,
    /// Whether it is an ENERGY STAR partner.
    pub energy_star_partner: bool,
    /// Its partner type, e.g. `Service and Product Providers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_star_partner_type: Option<String>,
}

/// The body of `createCustomer`: PM's `POST /customer` (the seed's "Create Customer"), which
/// creates a customer account and connects it to you.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCustomerBody {
    /// Username of the new account.
    pub username: String,
    /// Its password. Sent to PM only: never logged, journalled or put in an event.
    #[serde(skip_serializing)]
    #[schemars(extend("writeOnly" = true))]
    pub password: Password,
    /// Whether the account may use web services.
    pub webservice_user: bool,
    /// Whether other PM users can find the account.
    pub searchable: bool,
    /// Contact details.
    pub contact: ContactBody,
    /// Organisation.
    pub organization: OrganizationBody,
}

impl CreateCustomerBody {
    /// PM's `<account>` document.
    pub fn to_pm(&self) -> espm_model::NewCustomer {
        let a = &self.contact.address;
        espm_model::NewCustomer {
            username: self.username.clone(),
            password: self.password.expose().to_string(),
            webservice_user: self.webservice_user,
            searchable: self.searchable,
            contact: espm_model::Contact {
                first_name: self.contact.first_name.clone(),
                last_name: self.contact.last_name.clone(),
                address: espm_model::Address {
                    address1: a.address1.clone(),
                    address2: a.address2.clone(),
                    city: a.city.clone(),
                    state: a.state.clone(),
                    other_state: a.other_state.clone(),
                    postal_code: a.postal_code.clone(),
                    country: Some(a.country.clone()),
                    ..Default::default()
                },
                email: self.contact.email.clone(),
                job_title: self.contact.job_title.clone(),
                phone: self.contact.phone.clone(),
            },
            organization: espm_model::Organization {
                name: self.organization.name.clone(),
                primary_business: self.organization.primary_business.clone(),
                other_business_description: self.organization.other_business_description.clone(),
                energy_star_partner: self.organization.energy_star_partner,
                energy_star_partner_type: self.organization.energy_star_partner_type.clone(),
            },
        }
    }
}

/// One command: what to ask of PM. Its JSON form (without the password) is what the journal and
/// the result event keep as `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Command {
    /// Accept or reject a pending request.
    #[serde(rename_all = "camelCase")]
    Answer {
        /// The pending list.
        kind: PendingKind,
        /// The request's id on it.
        request_id: i64,
        /// Accept or reject.
        decision: Decision,
        /// Note for the customer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Disconnect from a customer.
    #[serde(rename_all = "camelCase")]
    Disconnect {
        /// The customer's account id.
        customer_id: i64,
        /// Whether shares stay.
        keep_shares: bool,
        /// Note for the customer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Stop receiving a property's share.
    #[serde(rename_all = "camelCase")]
    UnshareProperty {
        /// The property.
        property_id: i64,
        /// Note for the customer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Stop receiving a meter's share.
    #[serde(rename_all = "camelCase")]
    UnshareMeter {
        /// The meter.
        meter_id: i64,
        /// Note for the customer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Create a customer account.
    CreateCustomer(Box<CreateCustomerBody>),
}

impl Command {
    /// What it asks of PM.
    pub fn action(&self) -> CommandAction {
        match self {
            Command::Answer { .. } => CommandAction::Answer,
            Command::Disconnect { .. } => CommandAction::Disconnect,
            Command::UnshareProperty { .. } => CommandAction::UnshareProperty,
            Command::UnshareMeter { .. } => CommandAction::UnshareMeter,
            Command::CreateCustomer(_) => CommandAction::CreateCustomer,
        }
    }

    /// The customer account it concerns, when it names one.
    pub fn account_id(&self) -> Option<i64> {
        match self {
            Command::Answer {
                kind: PendingKind::Connection,
                request_id,
                ..
            } => Some(*request_id),
            Command::Disconnect { customer_id, .. } => Some(*customer_id),
            _ => None,
        }
    }

    /// The CloudEvents `subject` of its result event.
    pub fn subject(&self) -> Option<String> {
        match self {
            Command::Answer {
                kind, request_id, ..
            } => Some(match kind {
                PendingKind::Connection => format!("account/{request_id}"),
                PendingKind::PropertyShare => format!("property/{request_id}"),
                PendingKind::MeterShare => format!("meter/{request_id}"),
            }),
            Command::Disconnect { customer_id, .. } => Some(format!("account/{customer_id}")),
            Command::UnshareProperty { property_id, .. } => Some(format!("property/{property_id}")),
            Command::UnshareMeter { meter_id, .. } => Some(format!("meter/{meter_id}")),
            Command::CreateCustomer(_) => None,
        }
    }

    /// Its JSON form without the password.
    pub fn target(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Read back what [`Command::target`] wrote (a customer's password comes back empty).
    pub fn from_target(target: &serde_json::Value) -> Option<Command> {
        let mut t = target.clone();
        if t.get("action").and_then(serde_json::Value::as_str) == Some("create_customer") {
            t["password"] = serde_json::Value::from("");
        }
        serde_json::from_value(t).ok()
    }

    /// A digest of the whole command, the password included (hashed), so one id reused for a
    /// different command is recognised.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.target().to_string().as_bytes());
        if let Command::CreateCustomer(c) = self {
            h.update(b"\0password\0");
            h.update(c.password.expose().as_bytes());
        }
        hex(&h.finalize())
    }

    /// Check what PM would refuse anyway, before anything is journalled or sent.
    pub fn validate(&self) -> Result<(), CommandError> {
        let positive = |name: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(CommandError::Invalid(format!(
                    "{name} must be a positive PM id, not {v}"
                )))
            }
        };
        match self {
            Command::Answer {
                request_id, note, ..
            } => {
                positive("requestId", *request_id)?;
                check_note(note.as_deref())
            }
            Command::Disconnect {
                customer_id, note, ..
            } => {
                positive("customerId", *customer_id)?;
                check_note(note.as_deref())
            }
            Command::UnshareProperty { property_id, note } => {
                positive("propertyId", *property_id)?;
                check_note(note.as_deref())
            }
            Command::UnshareMeter { meter_id, note } => {
                positive("meterId", *meter_id)?;
                check_note(note.as_deref())
            }
            Command::CreateCustomer(c) => {
                for (name, v) in [
                    ("username", &c.username),
                    ("contact.firstName", &c.contact.first_name),
                    ("contact.lastName", &c.contact.last_name),
                    ("contact.email", &c.contact.email),
                    ("contact.address.address1", &c.contact.address.address1),
                    ("contact.address.city", &c.contact.address.city),
                    ("contact.address.country", &c.contact.address.country),
                    ("organization.name", &c.organization.name),
                    (
                        "organization.primaryBusiness",
                        &c.organization.primary_business,
                    ),
                ] {
                    if v.trim().is_empty() {
                        return Err(CommandError::Invalid(format!("{name} must not be empty")));
                    }
                }
                if c.password.expose().is_empty() {
                    return Err(CommandError::Invalid("password must not be empty".into()));
                }
                Ok(())
            }
        }
    }
}

fn check_note(note: Option<&str>) -> Result<(), CommandError> {
    match note {
        Some(n) if n.chars().count() > NOTE_MAX_CHARS => Err(CommandError::Invalid(format!(
            "note has {} characters; PM accepts at most {NOTE_MAX_CHARS}",
            n.chars().count()
        ))),
        _ => Ok(()),
    }
}

/// Check a caller's command id (`Idempotency-Key`): 1 to [`ID_MAX_LEN`] visible ASCII characters.
pub fn check_id(id: &str) -> Result<(), CommandError> {
    if id.is_empty() || id.len() > ID_MAX_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CommandError::Invalid(format!(
            "a command id (Idempotency-Key) is 1 to {ID_MAX_LEN} visible ASCII characters"
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_never_holds_the_password_but_the_fingerprint_depends_on_it() {
        let body = |pw: &str| CreateCustomerBody {
            username: "acme".into(),
            password: Password::new(pw),
            webservice_user: true,
            searchable: false,
            contact: ContactBody::default(),
            organization: OrganizationBody::default(),
        };
        let a = Command::CreateCustomer(Box::new(body("Secret-1!")));
        let b = Command::CreateCustomer(Box::new(body("Secret-2!")));
        assert!(!a.target().to_string().contains("Secret"));
        assert!(!format!("{a:?}").contains("Secret"));
        assert_eq!(a.target(), b.target());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.target()["action"], "create_customer");
        match Command::from_target(&a.target()) {
            Some(Command::CreateCustomer(c)) => assert_eq!(c.password.expose(), ""),
            other => panic!("a create_customer target must read back: {other:?}"),
        }
    }

    #[test]
    fn a_note_over_pm_limit_is_refused_before_any_call() {
        let c = |n: usize| Command::Answer {
            kind: PendingKind::Connection,
            request_id: 5,
            decision: Decision::Accept,
            note: Some("é".repeat(n)),
        };
        assert!(c(NOTE_MAX_CHARS).validate().is_ok());
        assert!(matches!(
            c(NOTE_MAX_CHARS + 1).validate(),
            Err(CommandError::Invalid(_))
        ));
    }

    #[test]
    fn a_target_reads_back_as_the_same_command() {
        let c = Command::Disconnect {
            customer_id: 42,
            keep_shares: true,
            note: Some("bye".into()),
        };
        let back: Command = serde_json::from_value(c.target()).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.target()["customerId"], 42);
        assert!(check_id("abc-123").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id(&"x".repeat(ID_MAX_LEN + 1)).is_err());
    }
}
