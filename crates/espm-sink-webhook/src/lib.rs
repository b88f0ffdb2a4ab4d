//! HTTP webhook sink: Standard Webhooks signing, retries, dead letters.
