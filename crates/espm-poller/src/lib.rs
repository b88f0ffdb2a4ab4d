//! The drain loop: notifications behind a durable checkpoint, and pending-list diffs.
