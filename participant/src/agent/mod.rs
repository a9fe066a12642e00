//! The participant agent: enrols once, then long-polls the coordinator for work and takes part in rounds.
//!
//! Per round, in the order the coordinator's stages ask for it:
//! 1. **AdvertiseKeys** — check the task's planned privacy events against the *local* ledger and budget of the
//!    dataset this agent serves (everything any study ever charged to it; declining the round with the reason if
//!    they would exceed it), download the model and verify its sha256 against the task, train with DP-SGD exactly
//!    as the planned events say, compute Δ = local − global (warning locally if quantisation will clamp some of
//!    it), start the sans-IO secure-aggregation client and send its public keys.
//! 2. **ShareKeys** — answer the key directory with the encrypted shares.
//! 3. **MaskedInputCollection** — quantise Δ with weight 1, mask it, charge the local ledger durably, and only
//!    then send the masked input.
//! 4. **Unmasking** — reveal the shares the server needs.
//!
//! Robustness: every request that fails in transport (or with 429/5xx) is retried with exponential backoff and
//! jitter; a computed message whose upload failed is re-sent as is (a 409 "already sent" counts as done), so a
//! coordinator restart or a flaky network costs time, not the round. The secure-aggregation secrets live only in
//! memory: an agent restarted mid-round sits that round out. SIGTERM/SIGINT stop the agent between steps; durable
//! writes (ledger, identity) are never interrupted.
//!
//! Logs never contain records, updates, keys or shares: only round numbers, stages, sizes, ε and durations.

pub mod config;
pub mod dataset;
pub mod debug;
pub mod ledger;
pub mod round_plan;
pub mod saturation;
pub mod state;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confide_client::{ClientError, CoordinatorClient};
use confide_common::api::{RoundStage, RoundTask, TaskResponse};
use confide_common::dp::PrivacyEvent;
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{
    KeyDirectory, QuantizationParams, RoutedShares, SecAggClient, UnmaskingRequest,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::data::{DataError, Dataset};
use crate::train::train_round;
use config::AgentConfig;
use dataset::Statistics;
use ledger::{Budget, ChargeKey, ChargeOutcome, LedgerError, LocalLedger};
use round_plan::decode_model;
pub use round_plan::training_plan;
use state::{Identity, StateDir, StateError};
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

/// Exponential backoff with jitter: the n-th consecutive failure waits a uniform time in [d/2, d] with
/// d = min(cap, 250 ms · 2^n).
#[derive(Debug)]
struct Backoff {
    failures: u32,
    cap: Duration,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = Duration::from_millis(250)
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        d.mul_f64(0.5 + 0.5 * rand::random::<f64>())
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A message computed for the coordinator, kept until it is delivered (re-sent unchanged after transport errors).
enum Outgoing {
    Message {
        round_id: i64,
        stage: RoundStage,
        body: Vec<u8>,
    },
    Decline {
        round_id: i64,
        reason: String,
    },
}

impl Outgoing {
    fn round_id(&self) -> i64 {
        match self {
            Self::Message { round_id, .. } | Self::Decline { round_id, .. } => *round_id,
        }
    }
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
    data: Arc<Dataset>,
    statistics: Statistics,
    session: Option<Session>,
    pending: Option<Outgoing>,
    /// A round this agent does not (or no longer) take part in.
    sitting_out: Option<i64>,
    backoff: Backoff,
    shutdown: CancellationToken,
}

fn http_client() -> Result<reqwest::Client, AgentError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| AgentError::Fatal(format!("HTTP client: {e}")))
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
        let ledger = dataset::open_ledger(&cfg, &data.fingerprint).await?;
        state::restrict_files(state.path())
            .map_err(|e| AgentError::Fatal(format!("state directory permissions: {e}")))?;
        let http = http_client()?;
        let mut backoff = Backoff {
            failures: 0,
            cap: cfg.max_backoff,
        };
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
            None => match enrol(&cfg, &state, http.clone(), &mut backoff, &shutdown).await? {
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

    /// Transient errors are retried; a rejected credential is fatal; other refusals abandon the current step.
    fn classify(&mut self, e: ClientError) -> Result<Next, AgentError> {
        if e.status() == Some(401) {
            return Err(credential_rejected(&e));
        }
        if e.is_transient() {
            return Ok(Next::Retry(e));
        }
        tracing::warn!(error = %e, "request refused; sitting this step out");
        Ok(Next::Pause)
    }

    /// Sends an outgoing message. `Ok(None)` when delivered (or when the coordinator already has it / no longer
    /// wants it); `Ok(Some(..))` to retry after a transient failure.
    async fn deliver(
        &mut self,
        out: Outgoing,
    ) -> Result<Option<(Outgoing, ClientError)>, AgentError> {
        let result = match &out {
            Outgoing::Message {
                round_id,
                stage: RoundStage::MaskedInputCollection,
                body,
            } => self.client.post_masked_input(*round_id, body.clone()).await,
            Outgoing::Message {
                round_id,
                stage,
                body,
            } => {
                let json = String::from_utf8_lossy(body).into_owned();
                self.client
                    .post_control_message(*round_id, *stage, json)
                    .await
            }
            Outgoing::Decline { round_id, reason } => {
                self.client.decline_round(*round_id, reason).await
            }
        };
        let delivered = match result {
            Ok(()) => true,
            Err(e) if e.status() == Some(409) => {
                // Already stored (an earlier attempt got through) or the stage moved on: nothing to re-send.
                tracing::info!(round_id = out.round_id(), detail = %e, "coordinator already has this message or moved on");
                true
            }
            Err(e) if e.status() == Some(401) => return Err(credential_rejected(&e)),
            Err(e) if e.is_transient() => return Ok(Some((out, e))),
            Err(e) => {
                tracing::warn!(round_id = out.round_id(), error = %e, "message refused; leaving the round");
                self.abandon(out.round_id());
                return Ok(None);
            }
        };
        if delivered {
            match &out {
                Outgoing::Message {
                    round_id, stage, ..
                } => {
                    if let Some(s) = self.session.as_mut().filter(|s| s.round_id == *round_id) {
                        s.answered.insert(*stage);
                        tracing::info!(round = s.round_number, stage = stage.as_str(), "sent");
                    }
                    if *stage == RoundStage::ShareKeys {
                        debug::crash_point(debug::AFTER_SHARE_KEYS);
                    }
                }
                Outgoing::Decline { round_id, .. } => {
                    tracing::info!(round_id = *round_id, "declined the round");
                }
            }
        }
        Ok(None)
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
                return self.join(&task).await;
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
            RoundStage::MaskedInputCollection => self.masked_input(&task).await,
            RoundStage::Unmasking => self.unmask(&task).await,
        }
    }

    /// AdvertiseKeys: budget check, model download and check, local training, keys.
    async fn join(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        tracing::info!(
            round = task.round_number,
            round_id = task.round_id,
            "selected for a round"
        );
        let (plan, planned) = match training_plan(task) {
            Ok(p) => p,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let budget = self.cfg.budget;
        // Everything this dataset ever spent, in every study, plus this round.
        let epsilon_after = self.ledger.epsilon_with(&planned, budget.delta).await?;
        if epsilon_after > budget.epsilon {
            let reason = format!(
                "local privacy budget: this round would bring the site's ε to {epsilon_after:.4}, over its budget \
                 {} (δ = {})",
                budget.epsilon, budget.delta
            );
            return Ok(self.decline(task, reason));
        }
        tracing::info!(
            round = task.round_number,
            epsilon_after,
            epsilon_budget = budget.epsilon,
            "local budget allows the round"
        );
        if self.statistics == Statistics::OwnRecords {
            dataset::warn_non_private_statistics();
        }

        let download = match self
            .client
            .download_model(
                task.model_version,
                usize::try_from(self.cfg.max_model_bytes).unwrap_or(usize::MAX),
            )
            .await
        {
            Ok(d) => d,
            Err(ClientError::TooLarge { limit }) => {
                return Ok(self.decline(
                    task,
                    format!("the model is larger than this agent's limit of {limit} bytes"),
                ));
            }
            Err(e) => return self.classify(e),
        };
        let digest = hex::encode(Sha256::digest(&download.bytes));
        if !digest.eq_ignore_ascii_case(&task.model_sha256) {
            return Ok(self.decline(
                task,
                format!(
                    "the downloaded model's sha256 {digest} differs from the task's {}",
                    task.model_sha256
                ),
            ));
        }
        let (spec, global) = match decode_model(&download.bytes, task) {
            Ok(m) => m,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        if spec.input_dim() != self.data.num_features() {
            return Ok(self.decline(
                task,
                format!(
                    "the model expects {} features, this site's data has {}",
                    spec.input_dim(),
                    self.data.num_features()
                ),
            ));
        }

        let started = Instant::now();
        let data = Arc::clone(&self.data);
        let g = global.clone();
        let training = tokio::task::spawn_blocking(move || train_round(&spec, &g, &data, &plan));
        let trained = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(Next::Poll),
            r = training => r.map_err(|e| AgentError::Fatal(format!("training task failed: {e}")))?,
        };
        let local = match trained {
            Ok(u) => u,
            Err(e) => return Ok(self.decline(task, format!("local training failed: {e}"))),
        };
        if local.events != planned {
            // train_round runs exactly plan.steps steps; anything else would make the charge wrong.
            return Err(AgentError::Fatal(format!(
                "training spent {:?}, the round planned {:?}",
                local.events, planned
            )));
        }
        tracing::info!(
            round = task.round_number,
            steps = local.steps,
            seconds = started.elapsed().as_secs_f64(),
            "local DP-SGD done"
        );
        let update: Vec<f32> = local
            .parameters
            .iter()
            .zip(&global)
            .map(|(l, g)| l - g)
            .collect();
        saturation::warn_if_saturated(task.round_number, &task.quantisation, &update);

        let mut rng = os_rng()?;
        let (client, msg) = match SecAggClient::new(
            task.protocol.clone(),
            task.participant_index,
            &mut rng,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(round = task.round_number, error = %e, "unusable secure-aggregation parameters; sitting the round out");
                self.sitting_out = Some(task.round_id);
                return Ok(Next::Pause);
            }
        };
        self.session = Some(Session {
            round_id: task.round_id,
            round_number: task.round_number,
            client,
            quantisation: task.quantisation,
            update,
            planned,
            answered: HashSet::new(),
        });
        self.pending = Some(Outgoing::Message {
            round_id: task.round_id,
            stage: RoundStage::AdvertiseKeys,
            body: msg.to_json().into_bytes(),
        });
        Ok(Next::Poll)
    }

    async fn broadcast(&self, task: &RoundTask) -> Result<String, ClientError> {
        self.client.broadcast(task.round_id, task.stage).await
    }

    /// A protocol error in a server broadcast: the round is left (its secrets forgotten).
    fn protocol_error(&mut self, task: &RoundTask, e: impl std::fmt::Display) -> Next {
        tracing::warn!(round = task.round_number, stage = task.stage.as_str(), error = %e, "leaving the round");
        self.abandon(task.round_id);
        Next::Pause
    }

    async fn share_keys(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        let text = match self.broadcast(task).await {
            Ok(t) => t,
            Err(e) => return self.classify(e),
        };
        let dir = match KeyDirectory::from_json(&text) {
            Ok(d) => d,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let mut rng = os_rng()?;
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let msg = match session.client.handle_key_directory(&dir, &mut rng) {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        self.pending = Some(Outgoing::Message {
            round_id: task.round_id,
            stage: RoundStage::ShareKeys,
            body: msg.to_json().into_bytes(),
        });
        Ok(Next::Poll)
    }

    async fn masked_input(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        let text = match self.broadcast(task).await {
            Ok(t) => t,
            Err(e) => return self.classify(e),
        };
        let routed = match RoutedShares::from_json(&text) {
            Ok(r) => r,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let mut rng = os_rng()?;
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        // Weight 1 for everyone: the aggregate is the plain (uniform) FedAvg of the updates. A site's record count is
        // not protected by DP, so it is never sent, not even inside the masked sum.
        let input = match session.quantisation.quantize(&session.update, 1, &mut rng) {
            Ok(i) => i,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let masked = match session.client.handle_routed_shares(&routed, &input) {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        session.update.clear();
        let (round_id, round_number) = (session.round_id, session.round_number);
        let planned = session.planned.clone();
        // The spend is durable BEFORE the masked input leaves this machine (one transaction, once per round).
        let budget: Budget = self.cfg.budget;
        let key = ChargeKey::new(&self.identity, round_id, round_number);
        match self.ledger.charge(&key, &planned, budget).await? {
            ChargeOutcome::Charged { epsilon_after } => {
                tracing::info!(
                    round = round_number,
                    epsilon_after,
                    "privacy spend recorded in the local ledger"
                )
            }
            ChargeOutcome::AlreadyCharged { epsilon_after } => {
                tracing::info!(
                    round = round_number,
                    epsilon_after,
                    "round already charged in the local ledger"
                )
            }
            ChargeOutcome::OverBudget { epsilon_after } => {
                return Ok(self.protocol_error(
                    task,
                    format!("the local budget no longer allows this round (ε would be {epsilon_after:.4})"),
                ));
            }
        }
        debug::dump_input(self.state.path(), round_id, &input);
        self.pending = Some(Outgoing::Message {
            round_id,
            stage: RoundStage::MaskedInputCollection,
            body: masked.encode(),
        });
        Ok(Next::Poll)
    }

    async fn unmask(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        let text = match self.broadcast(task).await {
            Ok(t) => t,
            Err(e) => return self.classify(e),
        };
        let req = match UnmaskingRequest::from_json(&text) {
            Ok(r) => r,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let msg = match session.client.handle_unmasking_request(&req) {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        debug::crash_point(debug::BEFORE_UNMASKING_RESPONSE);
        self.pending = Some(Outgoing::Message {
            round_id: task.round_id,
            stage: RoundStage::Unmasking,
            body: msg.to_json().into_bytes(),
        });
        Ok(Next::Poll)
    }
}

fn credential_rejected(e: &ClientError) -> AgentError {
    AgentError::Fatal(format!(
        "the coordinator rejected this agent's credential ({e}); if the study was recreated, move the state \
         directory's identity.json away and enrol again with a new token"
    ))
}

fn os_rng() -> Result<ChaCha20Rng, AgentError> {
    ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
        .map_err(|e| AgentError::Fatal(format!("OS randomness unavailable: {e}")))
}

/// Enrols with the one-time token and stores the identity. `None` if shut down meanwhile.
async fn enrol(
    cfg: &AgentConfig,
    state: &StateDir,
    http: reqwest::Client,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, AgentError> {
    let token = cfg.enrolment_token.as_deref().ok_or_else(|| {
        AgentError::Fatal(format!(
            "{} holds no identity yet: enrol with --enrolment-token (or CONFIDE_ENROLMENT_TOKEN)",
            state.path().display()
        ))
    })?;
    let url = cfg.coordinator_url.as_deref().ok_or_else(|| {
        AgentError::Fatal("enrolment needs the coordinator URL (--coordinator-url)".into())
    })?;
    let name = cfg.name.as_deref().ok_or_else(|| {
        AgentError::Fatal(
            "enrolment needs a display name (--name, CONFIDE_PARTICIPANT_NAME or 'name' in the config file)".into(),
        )
    })?;
    let client = CoordinatorClient::with_http(url, "", http);
    loop {
        match client.enrol(token, name).await {
            Ok(r) => {
                let identity = Identity {
                    participant_id: r.participant_id,
                    study_id: r.study_id,
                    credential: r.credential,
                    coordinator_url: url.to_string(),
                    name: name.to_string(),
                    enrolled_at_ms: confide_runtime::now_ms(),
                };
                state.save_identity(&identity)?;
                tracing::info!(
                    participant = identity.participant_id,
                    study = identity.study_id,
                    "enrolled; identity stored in the state directory"
                );
                return Ok(Some(identity));
            }
            Err(e) if e.is_transient() => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "enrolment failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                return Err(AgentError::Fatal(format!(
                    "enrolment refused: {e} (ask the operator for a new token if this one was used or expired)"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let mut b = Backoff {
            failures: 0,
            cap: Duration::from_secs(2),
        };
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(125) && waits[0] <= Duration::from_millis(250));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(2)));
        assert!(waits[7] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next() <= Duration::from_millis(250));
    }
}
