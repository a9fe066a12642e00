//! The coordinator's domain, between the HTTP API and the store: studies, rounds and privacy, each with errors of
//! its own. Nothing in here knows HTTP (`http::error` is the one place these errors become answers), and the round
//! driver uses only this layer.
//!
//! - [`studies`]: the rules a study must satisfy, its creation, enrolment, model versions.
//! - [`rounds`]: starting a round (selection under budgets), its status, what participants may send and read, aborts;
//!   [`rounds::driver`]: the background task that moves a round's secure-aggregation server through its stages.
//! - [`privacy`]: ε of the ledgers (PLD), the budget rule at study creation, selection and publication, the report.
//! - [`schedule`]: studies that run themselves (the next round started when one ends).
//! - [`optimizer`]: the server optimisers applied to the aggregate.

pub mod optimizer;
pub mod privacy;
pub mod rounds;
pub mod schedule;
pub mod studies;
pub mod wakeups;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{ParticipantRow, PeerChange, Store};
use wakeups::{Topic, Wakeups};

/// How stale `ParticipantInfo.last_seen_ms` may be: a participant's last-seen time is written at most this often.
pub const LAST_SEEN_INTERVAL: Duration = Duration::from_secs(30);

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
    /// Masked inputs read and stored at once; further uploads wait (unread) for a slot. Bounds the memory that N
    /// simultaneous uploads of a large model take: this many bodies, not N.
    pub concurrent_uploads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body_bytes: 4 << 20,
            model_bytes: 256 << 20,
            max_poll: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(6),
            concurrent_uploads: 4,
        }
    }
}

/// What the HTTP handlers and the round drivers of one process share.
#[derive(Clone)]
pub struct Coordinator {
    pub store: Store,
    pub metrics: Metrics,
    /// Long-polls and round drivers wait here for the changes that concern them (this process's, and other
    /// processes' as the store relays them).
    pub wakeups: Arc<Wakeups>,
    pub limits: Limits,
    /// This process's identity for round leases.
    pub node_id: String,
    /// Rounds this process currently runs a driver for.
    pub drivers: Arc<Mutex<HashSet<i64>>>,
    /// Cancelled on graceful shutdown: drivers stop and release their leases, long-polls answer at once.
    pub shutdown: CancellationToken,
    /// Slots for masked inputs being read and stored ([`Limits::concurrent_uploads`]).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl Coordinator {
    /// Builds the shared state, reloads the metrics that describe stored state and resumes unfinished rounds.
    pub async fn start(store: Store, limits: Limits) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new()?;
        metrics.register(store.metric_collectors())?;
        let node: [u8; 8] = rand::random();
        let uploads = Arc::new(tokio::sync::Semaphore::new(
            limits.concurrent_uploads.max(1),
        ));
        let ctx = Self {
            store,
            metrics,
            wakeups: Default::default(),
            limits,
            node_id: format!("{}-{}", std::process::id(), hex::encode(node)),
            drivers: Default::default(),
            shutdown: Default::default(),
            uploads,
        };
        if let Err(e) = ctx.reload_metrics().await {
            tracing::warn!(error = %e, "could not reload metrics from the database");
        }
        rounds::driver::supervise(ctx.clone());
        schedule::supervise(ctx.clone());
        relay_peer_changes(ctx.clone());
        Ok(ctx)
    }

    /// Records that an authenticated participant made a request, for `ParticipantInfo.last_seen_ms`: at most one
    /// write per [`LAST_SEEN_INTERVAL`] per participant (the credential lookup already read the stored time, so
    /// this costs nothing in between, in any process), off the request's path.
    pub fn note_seen(&self, participant: &ParticipantRow) {
        let now = crate::store::now_ms();
        let interval = LAST_SEEN_INTERVAL.as_millis() as i64;
        if participant
            .last_seen_at
            .is_some_and(|seen| now.saturating_sub(seen) < interval)
        {
            return;
        }
        let (store, id) = (self.store.clone(), participant.id);
        tokio::spawn(async move {
            if let Err(e) = store.touch_participant(id, now).await {
                tracing::debug!(participant = id, error = %e, "could not record when the participant was seen");
            }
        });
    }

    /// Wakes the long-polls and drivers waiting for `topics`, here and in the other processes on this database.
    /// Call it after the change is committed.
    pub async fn changed(&self, topics: Vec<Topic>) {
        self.wakeups.wake(topics.iter().copied());
        if let Err(e) = self.store.announce(&self.node_id, &topics).await {
            tracing::warn!(error = %e, "could not announce a change to other coordinator processes");
        }
    }

    /// A round changed in a way its participants must see (it started, changed stage or ended): wakes its driver,
    /// the operators watching it and the task polls of its selected participants — nobody else.
    pub async fn round_changed(&self, round_id: i64, selected: &[i64]) {
        let mut topics = vec![Topic::Round(round_id)];
        topics.extend(selected.iter().map(|p| Topic::Participant(*p)));
        self.changed(topics).await;
    }

    /// A round ended (published or aborted): [`Self::round_changed`], and the study schedulers, which may start
    /// the next round.
    pub async fn round_ended(&self, round_id: i64, selected: &[i64]) {
        let mut topics = vec![Topic::Round(round_id), Topic::Schedule];
        topics.extend(selected.iter().map(|p| Topic::Participant(*p)));
        self.changed(topics).await;
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

/// Relays other processes' announcements to this process's waiters until shutdown; if the watch fails, wakes
/// everyone (they re-check) and watches again after a pause.
fn relay_peer_changes(ctx: Coordinator) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                Err(e) = relay(&ctx) => {
                    tracing::warn!(error = %e, "lost the watch on other coordinator processes; retrying");
                }
            }
            ctx.wakeups.wake_everyone();
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

async fn relay(ctx: &Coordinator) -> Result<std::convert::Infallible, crate::store::StoreError> {
    let mut watch = ctx.store.watch_peers(&ctx.node_id).await?;
    loop {
        match watch.next().await? {
            PeerChange::Topics(topics) => ctx.wakeups.wake(topics),
            PeerChange::Unknown => ctx.wakeups.wake_everyone(),
        }
    }
}
