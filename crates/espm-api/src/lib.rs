//! The bridge's HTTP command API: the services that consume the bridge's events answer PM
//! through it.
//!
//! Every command goes through [`espm_command::Commander`] (journalled before the PM call,
//! idempotent by its `Idempotency-Key`, announced by a result event). Requests carry a bearer
//! token from the configured list ([`Tokens`]); errors are RFC 9457 problem documents whose
//! types are [`espm_command::ProblemKind`]. The OpenAPI 3.1 document ([`openapi`]) is generated
//! from the same Rust types the handlers use, checked in as `schemas/openapi.json` and served at
//! `/api/v1/openapi.json`.

mod auth;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use espm_command::Commander;
use tokio_util::sync::CancellationToken;

pub use auth::{TokenError, Tokens};
pub use openapi::{api_markdown, openapi, operation_ids};
pub use routes::{CustomerLinkView, CustomerList, CustomerView, PendingList};

/// The API's router (no listener): for the bridge and for tests.
pub fn router(commander: Commander, tokens: Tokens) -> axum::Router {
    routes::router(routes::ApiState {
        commander,
        tokens: Arc::new(tokens),
        openapi: Arc::new(openapi()),
    })
}

/// Serve the API on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    commander: Commander,
    tokens: Tokens,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "command API listening");
    axum::serve(listener, router(commander, tokens))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
