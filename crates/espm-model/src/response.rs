//! `<response>`: PM's generic envelope for acknowledgements, ids, link lists and errors.

use serde::{Deserialize, Serialize};

use crate::pending::Links;

/// `Ok` or `Error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseStatus {
    /// Success.
    #[default]
    Ok,
    /// Failure; see `errors`.
    Error,
}

/// `<response status="...">`. Field order is the XSD's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Ok or Error.
    #[serde(rename = "@status")]
    pub status: ResponseStatus,
    /// A created object's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Links (e.g. the customer list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
    /// Errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ResponseErrors>,
    /// Warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<ResponseWarnings>,
}

impl crate::PmDocument for Response {
    const ROOT: &'static str = "response";
}

impl Response {
    /// `<response status="Ok"/>`.
    pub fn ok() -> Self {
        Self::default()
    }

    /// An error response with one error.
    pub fn error(number: &str, description: &str) -> Self {
        Self {
            status: ResponseStatus::Error,
            errors: Some(ResponseErrors {
                error: vec![PmErrorDetail {
                    error_number: Some(number.to_string()),
                    error_description: Some(description.to_string()),
                }],
            }),
            ..Self::default()
        }
    }

    /// The errors, if any.
    pub fn error_list(&self) -> &[PmErrorDetail] {
        self.errors
            .as_ref()
            .map(|e| e.error.as_slice())
            .unwrap_or(&[])
    }
}

/// `<errors>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseErrors {
    /// The errors.
    #[serde(default)]
    pub error: Vec<PmErrorDetail>,
}

/// `<error errorNumber=".." errorDescription=".."/>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmErrorDetail {
    /// `-100` (schema validation) or `-200` (application error), as PM wrote it.
    #[serde(
        rename = "@errorNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_number: Option<String>,
    /// PM's text (it may change; do not match on it except where documented).
    #[serde(
        rename = "@errorDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_description: Option<String>,
}

/// `<warnings>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseWarnings {
    /// The warnings.
    #[serde(default)]
    pub warning: Vec<Warning>,
}

/// `<warning warningNumber=".." warningDescription=".."/>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// Number.
    #[serde(
        rename = "@warningNumber",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub warning_number: Option<String>,
    /// Text.
    #[serde(
        rename = "@warningDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub warning_description: Option<String>,
}
