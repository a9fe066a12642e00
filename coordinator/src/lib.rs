//! Confide coordinator: HTTP API (axum), store (SQLite + Postgres), round orchestration, metrics.
//!
//! - [`store`]: the one place that talks to the database.
//! - [`http`]: routes, authentication, limits; [`error`]: the one place errors become HTTP answers.
//! - [`rounds`]: selection under budgets and the participant-facing view of a round; [`driver`]: the background
//!   task that moves a round's secure-aggregation server through its stages.
//! - [`client`]: typed HTTP client of the API (the `confide-client` crate, re-exported here): it lives in its own
//!   crate so the participant agent and the CLI can talk to the coordinator without linking the server.
//! - [`study`]: study validation; [`budget`]: ε of a ledger (PLD); [`metrics`]: Prometheus.

pub mod budget;
pub mod driver;
pub mod error;
pub mod http;
pub mod metrics;
pub mod optimizer;
pub mod rounds;
pub mod store;
pub mod study;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Notify;

pub use confide_client as client;
pub use http::{AppState, Limits};
pub use store::Store;

/// Builds the shared state, reloads the metrics that describe stored state and resumes unfinished rounds.
pub async fn start(store: Store, limits: Limits) -> Result<AppState, std::io::Error> {
    let metrics = metrics::Metrics::new().map_err(std::io::Error::other)?;
    metrics
        .register(store.metric_collectors())
        .map_err(std::io::Error::other)?;
    let node: [u8; 8] = rand::random();
    let state = AppState {
        store,
        metrics,
        changed: Arc::new(Notify::new()),
        limits,
        node_id: format!("{}-{}", std::process::id(), hex::encode(node)),
        drivers: Default::default(),
        shutdown: Default::default(),
    };
    if let Err(e) = rounds::reload_metrics(&state).await {
        tracing::warn!(error = %e, "could not reload metrics from the database");
    }
    driver::supervise(state.clone());
    Ok(state)
}

/// Serves the API on `listener` until `shutdown` resolves; then stops the round drivers (releasing their leases so
/// another coordinator can take over at once) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
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
    driver::wait_stopped(&state).await;
    Ok(())
}
