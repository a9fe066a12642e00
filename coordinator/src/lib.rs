//! Confide coordinator: HTTP API (axum), store (SQLite + Postgres), round orchestration, metrics.
//!
//! Three layers, each using only the one below it:
//! - [`http`]: routes, authentication, extractors, handlers; `http::error` is the one place errors become answers.
//! - [`service`]: the domain — studies, rounds (and the background driver of each round), privacy budgets — with
//!   errors of its own and the state the handlers and the drivers share ([`service::Coordinator`]).
//! - [`store`]: the one place that talks to the database.
//!
//! Beside them: [`metrics`] (Prometheus) and [`client`], the typed HTTP client of the API (the `confide-client`
//! crate, re-exported here): it lives in its own crate so the participant agent and the CLI can talk to the
//! coordinator without linking the server. `tests/layers.rs` checks that the layers import only downwards.

pub mod http;
pub mod metrics;
pub mod service;
pub mod store;

use std::net::SocketAddr;

pub use confide_client as client;
pub use http::AppState;
pub use service::{Coordinator, Limits};
pub use store::Store;

/// Builds the shared state, reloads the metrics that describe stored state and resumes unfinished rounds.
pub async fn start(store: Store, limits: Limits) -> Result<Coordinator, std::io::Error> {
    Coordinator::start(store, limits)
        .await
        .map_err(std::io::Error::other)
}

/// Serves the API on `listener` until `shutdown` resolves; then stops the round drivers (releasing their leases so
/// another coordinator can take over at once) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Coordinator,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let app = http::router(state.clone());
    let stop = state.shutdown.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stop.cancel();
    })
    .await?;
    state.shutdown.cancel();
    service::rounds::driver::wait_stopped(&state).await;
    Ok(())
}
