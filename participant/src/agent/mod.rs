//! The participant agent: enrols once, then long-polls the coordinator for work and takes part in rounds.
//!
//! Per round, in the order the coordinator's stages ask for it:
//! 1. **AdvertiseKeys** — check the task's planned privacy events against the *local* ledger and budget of the
//!    dataset this agent serves (everything any study ever charged to it; declining the round with the reason if
//!    they would exceed it), download the model and verify its sha256 against the task, train with DP-SGD exactly
//!    as the planned events say, compute Δ = local − global (warning locally if quantisation will clamp some of
//!    it), start the sans-IO secure-aggregation client and send its public keys.
//!    Before any of that, the round's cohort is checked ([`peers`]): the identity keys of the other sites must be
//!    the pinned (or allow-listed) ones, and there must be at least `min_cohort` of them; otherwise it declines.
//! 2. **ShareKeys** — answer the key directory with the encrypted shares (signed in malicious rounds).
//! 3. **ShareVerification** (malicious rounds) — check the shares dealt to it against their commitments:
//!    acknowledge, or complain with proof (and leave the round).
//! 4. **MaskedInputCollection** — quantise Δ with weight 1, mask it (malicious rounds: only after t signed
//!    acknowledgements), charge the local ledger durably, and only then send the masked input.
//! 5. **ConsistencyCheck** (malicious rounds) — sign the survivor set U3 if it can accept it.
//! 6. **Unmasking** — reveal the shares the server needs (malicious rounds: only for a U3 that t survivors signed).
//!
//! One file per job: [`transport`] (HTTP client, retries with backoff, the outgoing message kept until delivered),
//! [`enrol`], [`round_plan`] (the training plan derived from the charged events, the model checks), and one file
//! per stage in `stages/`; this file holds the agent's state and its task loop.
//!
//! Robustness: a coordinator restart or a flaky network costs time, not the round ([`transport`]). The
//! secure-aggregation secrets live only in memory: an agent restarted mid-round sits that round out. SIGTERM/SIGINT
//! stop the agent between steps; durable writes (ledger, identity) are never interrupted.
//!
//! Logs never contain records, updates, keys or shares: only round numbers, stages, sizes, ε and durations.

pub mod config;
pub mod dataset;
pub mod debug;
mod enrol;
pub mod holdout;
pub mod ledger;
pub mod peers;
pub mod round_plan;
pub mod saturation;
mod stages;
pub mod state;
mod transport;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use confide_client::{ClientError, CoordinatorClient};
use confide_common::api::{RoundPurpose, RoundStage, RoundTask, TaskResponse};
use confide_common::dp::{DataPartition, PrivacyEvent};
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{IdentityKey, QuantizationParams, SecAggClient};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::data::{DataError, Dataset};
use config::AgentConfig;
use dataset::Statistics;
use enrol::enrol;
use ledger::{LedgerError, LocalLedger};
pub use round_plan::training_plan;
use state::{Identity, StateDir, StateError};
use transport::{Backoff, Outgoing, check_coordinator_url, http_client};

/// Pause before polling again while the current round has nothing for this agent to do.
const SIT_OUT_PAUSE: Duration = Duration::from_secs(1);

/// Why the agent stopped with an error.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Fatal(String),
}

/// This agent's part in one round. Dropping it forgets the secure-aggregation secrets.
struct Session {
    round_id: i64,
    round_number: i64,
    client: SecAggClient,
    quantisation: QuantizationParams,
    /// Δ = local − global (cleared once masked).
    update: Vec<f32>,
    planned: Vec<PrivacyEvent>,
    /// The part of the dataset the release used (what the ledger charge records).
    partition: DataPartition,
    /// Stages whose message the coordinator has.
    answered: HashSet<RoundStage>,
}

/// What handling a task asks the loop to do next.
enum Next {
    /// Poll again at once.
    Poll,
    /// Nothing to do in this round right now: pause before polling again.
    Pause,
    /// A request failed in a way worth retrying: back off.
    Retry(ClientError),
}

/// The running agent.
pub struct Agent {
    cfg: AgentConfig,
    state: StateDir,
    ledger: LocalLedger,
    client: CoordinatorClient,
    identity: Identity,
    /// The site's long-term signing identity (malicious-model rounds).
    identity_key: IdentityKey,
    data: Arc<Dataset>,
    statistics: Statistics,
    session: Option<Session>,
    pending: Option<Outgoing>,
    /// A round this agent does not (or no longer) take part in.
    sitting_out: Option<i64>,
    backoff: Backoff,
    shutdown: CancellationToken,
}

impl Agent {
    /// Opens the state directory, loads the data, and enrols unless an identity is stored. Returns `None` if
    /// shut down while enrolling.
    pub async fn start(
        cfg: AgentConfig,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>, AgentError> {
        let state = StateDir::open(&cfg.state_dir)?;
        let data = dataset::load(&cfg.data)?;
        tracing::info!(
            dataset = %cfg.data.dataset_id,
            records = data.records.len(),
            features = data.records.num_features(),
            "local data loaded"
        );
        if data.statistics == Statistics::Study {
            tracing::info!(
                "no statistics file given: each round scales the records by the study's public feature ranges"
            );
        }
        let ledger = dataset::open_ledger(&cfg, &data.fingerprint).await?;
        state::restrict_files(state.path())
            .map_err(|e| AgentError::Fatal(format!("state directory permissions: {e}")))?;
        let http = http_client(&cfg.tls)?;
        if let Some(url) = &cfg.coordinator_url {
            check_coordinator_url(url, &cfg.tls)?;
        }
        let backoff = Backoff::new(cfg.max_backoff);
        // An agent that enrolled before agents had identity keys gets one now, but it was never registered.
        let unregistered_key =
            state::read_identity_key(state.path())?.is_none() && state.identity()?.is_some();
        let identity_key = state.identity_key_or_create()?;
        let identity = match state.identity()? {
            Some(id) => {
                if cfg.enrolment_token.is_some() {
                    tracing::info!(
                        participant = id.participant_id,
                        "already enrolled; the enrolment token is not needed and was not used"
                    );
                }
                id
            }
            None => match enrol(
                &cfg,
                &state,
                identity_key.public(),
                http.clone(),
                &backoff,
                &shutdown,
            )
            .await?
            {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let url = match &cfg.coordinator_url {
            Some(url) => {
                if url.trim_end_matches('/') != identity.coordinator_url.trim_end_matches('/') {
                    tracing::warn!(
                        configured = %url,
                        enrolled_with = %identity.coordinator_url,
                        "the configured coordinator URL differs from the one this agent enrolled with; using the configured one"
                    );
                }
                url.clone()
            }
            None => identity.coordinator_url.clone(),
        };
        check_coordinator_url(&url, &cfg.tls)?;
        if unregistered_key {
            tracing::warn!(
                "this agent enrolled before it had an identity key; the new key was not registered, so it cannot take \
                 part in malicious-model rounds (enrol again from a fresh state directory)"
            );
        }
        tracing::info!(
            fingerprint = %identity_key.public().fingerprint(),
            "identity key (compare with the coordinator's participants list)"
        );
        let client = CoordinatorClient::with_http(&url, &identity.credential, http);
        let epsilon_spent = ledger.epsilon_with(&[], cfg.budget.delta).await?;
        tracing::info!(
            participant = identity.participant_id,
            study = identity.study_id,
            coordinator = %url,
            dataset = %cfg.data.dataset_id,
            epsilon_spent,
            epsilon_budget = cfg.budget.epsilon,
            delta = cfg.budget.delta,
            "agent ready (ε spent by this dataset in every study so far)"
        );
        if data.statistics == Statistics::OwnRecords {
            dataset::warn_non_private_statistics();
        }
        Ok(Some(Self {
            cfg,
            state,
            ledger,
            client,
            identity,
            identity_key,
            data: Arc::new(data.records),
            statistics: data.statistics,
            session: None,
            pending: None,
            sitting_out: None,
            backoff,
            shutdown,
        }))
    }

    /// The enrolled identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sleeps, or returns false at once if the agent is shutting down.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Runs until shut down (Ok) or a fatal error (e.g. the coordinator no longer knows the credential).
    pub async fn run(mut self) -> Result<(), AgentError> {
        let result = self.run_loop().await;
        self.ledger.close().await;
        if result.is_ok() {
            tracing::info!("agent stopped");
        }
        result
    }

    async fn run_loop(&mut self) -> Result<(), AgentError> {
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            if let Some(out) = self.pending.take() {
                match self.deliver(out).await? {
                    None => self.backoff.reset(),
                    Some((out, e)) => {
                        let wait = self.backoff.next();
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "upload failed; will re-send");
                        self.pending = Some(out);
                        if !self.sleep(wait).await {
                            return Ok(());
                        }
                    }
                }
                continue;
            }
            let wait = self.cfg.poll_wait.as_secs();
            let task = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                t = self.client.poll_task(wait) => t,
            };
            let next = match task {
                Ok(TaskResponse::Idle) => {
                    self.backoff.reset();
                    if let Some(s) = self.session.take() {
                        tracing::info!(round = s.round_number, "round over for this agent");
                    }
                    Next::Poll
                }
                Ok(TaskResponse::Round(task)) => {
                    self.backoff.reset();
                    self.handle(*task).await?
                }
                Err(e) => self.classify(e)?,
            };
            match next {
                Next::Poll => {}
                Next::Pause => {
                    if !self.sleep(SIT_OUT_PAUSE).await {
                        return Ok(());
                    }
                }
                Next::Retry(e) => {
                    let wait = self.backoff.next();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "coordinator unreachable or failing; backing off");
                    if !self.sleep(wait).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Leaves a round: forgets its secrets and sits out the rest of it.
    fn abandon(&mut self, round_id: i64) {
        if let Some(mut s) = self.session.take_if(|s| s.round_id == round_id) {
            s.client.abort();
        }
        self.sitting_out = Some(round_id);
    }

    /// Declines a round (before advertising keys), telling the coordinator why.
    fn decline(&mut self, task: &RoundTask, reason: String) -> Next {
        tracing::warn!(round = task.round_number, reason = %reason, "declining the round");
        self.abandon(task.round_id);
        self.pending = Some(Outgoing::Decline {
            round_id: task.round_id,
            reason,
        });
        Next::Poll
    }

    async fn handle(&mut self, task: RoundTask) -> Result<Next, AgentError> {
        if task.study_id != self.identity.study_id {
            return Err(AgentError::Fatal(format!(
                "the coordinator sent a task of study {}, this agent is enrolled in study {}",
                task.study_id, self.identity.study_id
            )));
        }
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.round_id != task.round_id)
        {
            self.session = None; // a new round: the old one's secrets go
        }
        if self.sitting_out == Some(task.round_id) {
            return Ok(Next::Pause);
        }
        if task.submitted {
            if let Some(s) = self.session.as_mut() {
                s.answered.insert(task.stage);
            }
            return Ok(Next::Poll); // the long-poll waits until there is something new
        }
        let Some(session) = self.session.as_ref() else {
            if task.stage == RoundStage::AdvertiseKeys {
                return match task.purpose {
                    RoundPurpose::Training => self.join(&task).await,
                    RoundPurpose::Statistics => self.join_statistics(&task).await,
                    RoundPurpose::Evaluation => self.join_evaluation(&task).await,
                };
            }
            tracing::warn!(
                round = task.round_number,
                stage = task.stage.as_str(),
                "this agent holds no keys for a round already under way (restarted mid-round?); sitting it out"
            );
            self.sitting_out = Some(task.round_id);
            return Ok(Next::Pause);
        };
        if session.answered.contains(&task.stage) {
            return Ok(Next::Pause);
        }
        match task.stage {
            RoundStage::AdvertiseKeys | RoundStage::Finished => Ok(Next::Pause),
            RoundStage::ShareKeys => self.share_keys(&task).await,
            RoundStage::ShareVerification => self.verify_shares(&task).await,
            RoundStage::MaskedInputCollection => self.masked_input(&task).await,
            RoundStage::ConsistencyCheck => self.consistency_check(&task).await,
            RoundStage::Unmasking => self.unmask(&task).await,
        }
    }

    /// The server's broadcast for the task's stage, parsed; or, as `Err`, what the loop does instead: back off after
    /// a transport error, leave the round after a malformed broadcast.
    async fn read_broadcast<T: ControlMessage>(
        &mut self,
        task: &RoundTask,
    ) -> Result<Result<T, Next>, AgentError> {
        let text = match self.client.broadcast(task.round_id, task.stage).await {
            Ok(t) => t,
            Err(e) => return self.classify(e).map(Err),
        };
        Ok(T::from_json(&text).map_err(|e| self.protocol_error(task, e)))
    }

    /// The records a round of `task` may use for `part` ([`holdout::round_part`] with this dataset's pin).
    fn records_for(
        &self,
        task: &RoundTask,
        part: DataPartition,
    ) -> Result<(Arc<Dataset>, DataPartition), String> {
        holdout::round_part(
            &self.data,
            task.evaluation.as_ref(),
            part,
            &holdout::pin_path(&self.cfg.ledger, &self.cfg.data.dataset_id),
        )
    }

    /// Queues this agent's message for the task's stage (kept until delivered) and polls on.
    fn send(&mut self, task: &RoundTask, body: Vec<u8>) -> Next {
        self.pending = Some(Outgoing::Message {
            round_id: task.round_id,
            stage: task.stage,
            body,
        });
        Next::Poll
    }

    /// A protocol error in a server broadcast: the round is left (its secrets forgotten).
    fn protocol_error(&mut self, task: &RoundTask, e: impl std::fmt::Display) -> Next {
        tracing::warn!(round = task.round_number, stage = task.stage.as_str(), error = %e, "leaving the round");
        self.abandon(task.round_id);
        Next::Pause
    }
}

fn os_rng() -> Result<ChaCha20Rng, AgentError> {
    ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
        .map_err(|e| AgentError::Fatal(format!("OS randomness unavailable: {e}")))
}
