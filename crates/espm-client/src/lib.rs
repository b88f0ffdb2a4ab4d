//! Async client for the ENERGY STAR Portfolio Manager web services: auth, retries, pagination, typed errors.
