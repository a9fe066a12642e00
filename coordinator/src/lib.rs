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
pub mod transport;

use std::sync::Arc;

pub use confide_client as client;
pub use http::{AppState, HttpOptions, MetricsAccess};
pub use service::{Coordinator, Limits};
pub use store::Store;

/// Builds the shared state, reloads the metrics that describe stored state and resumes unfinished rounds.
pub async fn start(store: Store, limits: Limits) -> Result<Coordinator, std::io::Error> {
    Coordinator::start(store, limits)
        .await
        .map_err(std::io::Error::other)
}

/// How the API is served: TLS (with or without client certificates), connection limits, who may read `/metrics`.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// The rustls configuration, and whether participant routes need a verified client certificate.
    pub tls: Option<(Arc<rustls::ServerConfig>, bool)>,
    pub limits: transport::ConnLimits,
    pub http: HttpOptions,
}

/// Serves the API on `listener` (plain HTTP, default limits, `/metrics` open) until `shutdown` resolves; then
/// stops the round drivers (releasing their leases so another coordinator can take over at once) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Coordinator,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    serve_with(listener, state, ServeOptions::default(), shutdown).await
}

/// [`serve`] with TLS, limits and metrics access as given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Coordinator,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let app = http::router_with(state.clone(), &options.http);
    let stop = state.shutdown.clone();
    transport::serve_app(listener, app, options.tls, options.limits, async move {
        shutdown.await;
        stop.cancel();
    })
    .await?;
    state.shutdown.cancel();
    service::rounds::driver::wait_stopped(&state).await;
    Ok(())
}

/// Serves only `/metrics` (plain HTTP) on `listener` until the coordinator shuts down.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: Coordinator,
    access: MetricsAccess,
    limits: transport::ConnLimits,
) -> Result<(), std::io::Error> {
    let stop = state.shutdown.clone();
    let app = http::metrics_router(state, access);
    transport::serve_app(listener, app, None, limits, async move {
        stop.cancelled().await
    })
    .await
}
