//! Portfolio Manager XML documents as typed serde structs: lenient reading, schema-valid writing.
