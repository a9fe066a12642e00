//! The coordinator's domain, between the HTTP API and the store: studies, rounds and privacy, each with errors of
//! its own. Nothing in here knows HTTP (`http::error` is the one place these errors become answers), and the round
//! driver uses only this layer.
//!
//! - [`studies`]: the rules a study must satisfy, its creation, enrolment, model versions.
//! - [`rounds`]: starting a round (selection under budgets), its status, what participants may send and read, aborts;
//!   [`rounds::driver`]: the background task that moves a round's secure-aggregation server through its stages.
//! - [`privacy`]: ε of the ledgers (PLD), the budget rule at study creation, selection and publication, the report.
//! - [`optimizer`]: the server optimisers applied to the aggregate.

pub mod optimizer;
pub mod privacy;
pub mod rounds;
pub mod studies;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;

/// Limits on what clients may send, and how long a round lease lasts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON body (operator requests, control messages).
    pub json_body_bytes: usize,
    /// Largest model (f32 safetensors bytes) a study may declare or upload as initial weights.
    pub model_bytes: usize,
    /// Longest long-poll a participant may ask for.
    pub max_poll: Duration,
    /// How long a round lease lasts without renewal; a crashed process's rounds are taken over after this.
    pub lease_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body_bytes: 4 << 20,
            model_bytes: 256 << 20,
            max_poll: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(6),
        }
    }
}

/// What the HTTP handlers and the round drivers of one process share.
#[derive(Clone)]
pub struct Coordinator {
    pub store: Store,
    pub metrics: Metrics,
    /// Woken on every change a long-poll or a round driver may be waiting for (in this process; other processes
    /// are noticed by polling the database).
    pub changed: Arc<Notify>,
    pub limits: Limits,
    /// This process's identity for round leases.
    pub node_id: String,
    /// Rounds this process currently runs a driver for.
    pub drivers: Arc<Mutex<HashSet<i64>>>,
    /// Cancelled on graceful shutdown: drivers stop and release their leases, long-polls answer at once.
    pub shutdown: CancellationToken,
}

impl Coordinator {
    /// Builds the shared state, reloads the metrics that describe stored state and resumes unfinished rounds.
    pub async fn start(store: Store, limits: Limits) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new()?;
        metrics.register(store.metric_collectors())?;
        let node: [u8; 8] = rand::random();
        let ctx = Self {
            store,
            metrics,
            changed: Arc::new(Notify::new()),
            limits,
            node_id: format!("{}-{}", std::process::id(), hex::encode(node)),
            drivers: Default::default(),
            shutdown: Default::default(),
        };
        if let Err(e) = ctx.reload_metrics().await {
            tracing::warn!(error = %e, "could not reload metrics from the database");
        }
        rounds::driver::supervise(ctx.clone());
        Ok(ctx)
    }

    /// Wakes this process's long-polls and drivers after a change they may be waiting for.
    pub fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Loads the gauges and counters that describe stored state (ε per participant, rounds per outcome, the latest
    /// evaluation of each study's model).
    async fn reload_metrics(&self) -> Result<(), studies::StudyError> {
        for row in self.store.list_studies().await? {
            self.metrics.init_study(row.id);
            match studies::Study::from_row(&row) {
                Ok(study) => privacy::refresh_gauges(self, row.id, &study.config.budget).await,
                Err(e) => {
                    tracing::warn!(study = row.id, error = %e, "could not refresh privacy gauges")
                }
            }
            rounds::publication::refresh_model_gauges(self, row.id).await;
        }
        for (study, outcome, n) in self.store.round_outcome_counts().await? {
            self.metrics
                .rounds_finished(study, outcome, u64::try_from(n).unwrap_or(0));
        }
        Ok(())
    }
}
