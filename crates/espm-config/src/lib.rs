//! espm-bridge configuration types: the single source for the TOML, JSON Schema, Helm values schema and docs.
