//! Bodies we send: accept/reject, disconnect/unshare notes, new customers.

use serde::{Deserialize, Serialize};

use crate::pending::Address;

/// `Accept` or `Reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Accept the request.
    Accept,
    /// Reject the request.
    Reject,
}

/// `<sharingResponse>`: the answer to a pending connection or share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingResponse {
    /// Accept or reject.
    pub action: Action,
    /// Optional note, 1..1000 characters; empty is omitted (the XSD's minLength is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl crate::PmDocument for SharingResponse {
    const ROOT: &'static str = "sharingResponse";
}

/// PM's limit on the note of an answer, a disconnect or an unshare, in characters.
pub const NOTE_MAX_CHARS: usize = 1000;

impl SharingResponse {
    /// Build one, dropping an empty or blank note and cutting it to PM's 1000-character limit.
    pub fn new(action: Action, note: Option<&str>) -> Self {
        Self {
            action,
            note: clean_note(note),
        }
    }
}

/// `<terminateSharingResponse>`: the body of disconnect and unshare calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateSharingResponse {
    /// Optional note, 1..1000 characters; empty is omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl crate::PmDocument for TerminateSharingResponse {
    const ROOT: &'static str = "terminateSharingResponse";
}

impl TerminateSharingResponse {
    /// Build one, dropping an empty note and cutting it to 1000 characters.
    pub fn new(note: Option<&str>) -> Self {
        Self {
            note: clean_note(note),
        }
    }
}

fn clean_note(note: Option<&str>) -> Option<String> {
    let n = note?.trim();
    if n.is_empty() {
        None
    } else {
        Some(n.chars().take(NOTE_MAX_CHARS).collect())
    }
}

/// `<contact>` of a new customer account (`xs:all`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Address.
    pub address: Address,
    /// E-mail.
    pub email: String,
    /// Job title.
    pub job_title: String,
    /// Phone.
    pub phone: String,
}

/// `<organization name="...">` of a new customer account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// Organisation name: optional in the XSD; empty means none (and is not written).
    #[serde(rename = "@name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// PM's `primaryBusinessType` enumeration value, e.g. `Other`.
    pub primary_business: String,
    /// Free text when primaryBusiness is `Other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_business_description: Option<String>,
    /// ENERGY STAR partner flag.
    pub energy_star_partner: bool,
    /// Partner type enumeration value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_star_partner_type: Option<String>,
}

/// `<account>`: the body of `POST /customer`, which creates a customer and connects it to you.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewCustomer {
    /// Username for the new account.
    pub username: String,
    /// Its password. Not redacted here: callers must not log the struct.
    pub password: String,
    /// Web-services user flag.
    pub webservice_user: bool,
    /// Searchable flag.
    pub searchable: bool,
    /// Contact details.
    pub contact: Contact,
    /// Organisation.
    pub organization: Organization,
}

impl crate::PmDocument for NewCustomer {
    const ROOT: &'static str = "account";
}
