//! The normalizer: Portfolio Manager documents to versioned CloudEvents 1.0, with JSON Schemas.
//!
//! This crate is pure: no I/O. [`CloudEvent`] is the contract every sink and the journal share.

mod cloudevent;
mod template;

pub use cloudevent::CloudEvent;
pub use template::{Template, TemplateError};
