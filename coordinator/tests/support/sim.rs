//! Simulated participants driving the sans-IO secure-aggregation client over real HTTP, through `confide-client`.
#![allow(dead_code)]

use confide_common::api::{RoundStage, RoundTask, TaskResponse};
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{
    ConsistencyCheckRequest, IdentityKey, KeyDirectory, MaskedInputRequest, RoutedShares,
    SecAggClient, SignedSurvivors, ThreatModel, UnmaskingRequest,
};
use confide_coordinator::client::{ClientError, CoordinatorClient};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A message computed for a stage, as it is posted.
#[derive(Clone)]
enum Message {
    Control(String),
    MaskedInput(Vec<u8>),
}

/// One participant: its credential, its update and weight, and its secure-aggregation client for the round.
pub struct Sim {
    pub id: i64,
    pub cred: String,
    pub update: Vec<f32>,
    pub weight: u32,
    /// The long-term identity registered at enrolment (signs in malicious-model rounds).
    pub identity: IdentityKey,
    /// Quantised input (w·Δ with the weight coordinate) actually sent in the last round.
    pub sent_input: Option<Vec<u32>>,
    client: Option<(i64, SecAggClient)>,
    rng: ChaCha20Rng,
    /// Cheats as a dealer: corrupts the ciphertext for its first neighbour (and signs the corrupted dealing).
    pub corrupt_dealing: bool,
    /// Cheats as a dealer: commits to a mask-key share off its polynomial (and signs the dealing).
    pub bad_commitments: bool,
    /// A computed message whose upload failed in transport; re-sent before anything else.
    pending: Option<(i64, RoundStage, Message)>,
}

impl Sim {
    pub fn new(id: i64, cred: String, update: Vec<f32>, weight: u32) -> Self {
        Self::with_identity(
            id,
            cred,
            update,
            weight,
            IdentityKey::generate(&mut ChaCha20Rng::from_seed(rand::random())),
        )
    }

    pub fn with_identity(
        id: i64,
        cred: String,
        update: Vec<f32>,
        weight: u32,
        identity: IdentityKey,
    ) -> Self {
        Self {
            id,
            cred,
            update,
            weight,
            identity,
            sent_input: None,
            client: None,
            corrupt_dealing: false,
            bad_commitments: false,
            rng: ChaCha20Rng::from_seed(rand::random()),
            pending: None,
        }
    }

    /// `coordinator` speaking as this participant.
    pub fn at(&self, coordinator: &CoordinatorClient) -> CoordinatorClient {
        coordinator.with_token(&self.cred)
    }

    pub async fn task(&self, coordinator: &CoordinatorClient) -> Option<RoundTask> {
        match self.at(coordinator).poll_task(0).await {
            Ok(TaskResponse::Idle) => None,
            Ok(TaskResponse::Round(t)) => Some(*t),
            Err(e) => panic!("task of participant {}: {e}", self.id),
        }
    }

    /// Answers the current stage if it is due; returns the stage answered.
    pub async fn step(&mut self, coordinator: &CoordinatorClient) -> Option<RoundStage> {
        self.step_before(coordinator, RoundStage::Finished).await
    }

    /// Answers the current stage if it is due and comes before `stop` (so that a test can hold everyone at a
    /// stage however fast the coordinator moves); returns the stage answered.
    pub async fn step_before(
        &mut self,
        coordinator: &CoordinatorClient,
        stop: RoundStage,
    ) -> Option<RoundStage> {
        let me = self.at(coordinator);
        if let Some((round, stage, message)) = self.pending.take() {
            return self.post(&me, round, stage, message).await;
        }
        let task = self.task(coordinator).await?;
        if task.submitted || task.stage as u8 >= stop as u8 {
            return None;
        }
        let message = self.answer(&me, &task).await?;
        self.post(&me, task.round_id, task.stage, message).await
    }

    /// This participant's message for the task's stage (None if the stage's broadcast is not readable yet).
    async fn answer(&mut self, me: &CoordinatorClient, task: &RoundTask) -> Option<Message> {
        let rid = task.round_id;
        let broadcast = || me.broadcast(rid, task.stage);
        let malicious = task.protocol.threat_model == ThreatModel::Malicious;
        Some(match task.stage {
            RoundStage::AdvertiseKeys => {
                let (client, msg) = if malicious {
                    SecAggClient::with_identity(
                        task.protocol.clone(),
                        task.participant_index,
                        self.identity.clone(),
                        &mut self.rng,
                    )
                } else {
                    SecAggClient::new(task.protocol.clone(), task.participant_index, &mut self.rng)
                }
                .expect("client");
                self.client = Some((rid, client));
                Message::Control(msg.to_json())
            }
            RoundStage::ShareKeys => {
                let dir = KeyDirectory::from_json(&broadcast().await.ok()?).ok()?;
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                let mut shares = client
                    .handle_key_directory(&dir, &mut self.rng)
                    .expect("share keys");
                if self.corrupt_dealing {
                    shares.encrypted_shares[0].ciphertext[0] ^= 1;
                }
                if self.bad_commitments
                    && let Some(c) = shares.commitments.as_mut()
                {
                    c.combined[0] = confide_common::secagg::group::commit(&7u64.into());
                }
                if self.corrupt_dealing || self.bad_commitments {
                    let statement = shares.statement(&task.protocol.digest());
                    shares.signature = Some(self.identity.sign(&statement));
                }
                Message::Control(shares.to_json())
            }
            RoundStage::ShareVerification => {
                let routed = RoutedShares::from_json(&broadcast().await.ok()?).ok()?;
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                let verdict = client
                    .verify_routed_shares(&routed, &mut self.rng)
                    .expect("verify shares");
                Message::Control(verdict.to_json())
            }
            RoundStage::MaskedInputCollection => {
                let text = broadcast().await.ok()?;
                let scaled: Vec<f32> = self.update.iter().map(|x| x * self.weight as f32).collect();
                let input = task
                    .quantisation
                    .quantize(&scaled, self.weight, &mut self.rng)
                    .expect("quantise");
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                let masked = if malicious {
                    let req = MaskedInputRequest::from_json(&text).ok()?;
                    client.handle_masked_input_request(&req, &input)
                } else {
                    let routed = RoutedShares::from_json(&text).ok()?;
                    client.handle_routed_shares(&routed, &input)
                }
                .expect("mask");
                self.sent_input = Some(input);
                Message::MaskedInput(masked.encode())
            }
            RoundStage::ConsistencyCheck => {
                let req = ConsistencyCheckRequest::from_json(&broadcast().await.ok()?).ok()?;
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                Message::Control(
                    client
                        .handle_consistency_check_request(&req)
                        .ok()?
                        .to_json(),
                )
            }
            RoundStage::Unmasking => {
                let text = broadcast().await.ok()?;
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                // An honest client answers once: a task read that raced the round's end (it still says
                // Unmasking) must not make it answer again.
                let response = if malicious {
                    let signed = SignedSurvivors::from_json(&text).ok()?;
                    client.handle_signed_survivors(&signed).ok()?
                } else {
                    let req = UnmaskingRequest::from_json(&text).ok()?;
                    client.handle_unmasking_request(&req).ok()?
                };
                Message::Control(response.to_json())
            }
            RoundStage::Finished => return None,
        })
    }

    /// Posts a message: the stage if accepted; None if the stage moved on (409) or the upload failed in transport
    /// (then it is kept and re-sent first).
    async fn post(
        &mut self,
        me: &CoordinatorClient,
        round: i64,
        stage: RoundStage,
        message: Message,
    ) -> Option<RoundStage> {
        let posted = match &message {
            Message::Control(json) => me.post_control_message(round, stage, json.clone()).await,
            Message::MaskedInput(bytes) => me.post_masked_input(round, bytes.clone()).await,
        };
        match posted {
            Ok(()) => Some(stage),
            Err(ClientError::Api { status: 409, .. }) => None,
            Err(ClientError::Transport(_) | ClientError::Connect { .. }) => {
                self.pending = Some((round, stage, message));
                None
            }
            Err(e) => panic!("posting {}: {e}", stage.as_str()),
        }
    }
}

/// Enrols `n` simulated participants in a study; participant i updates by a fixed pseudo-random vector of 8
/// coordinates, `update(i, j)`, with weight `weight(i)`.
pub async fn enrol_sims(
    op: &CoordinatorClient,
    base: &CoordinatorClient,
    study: i64,
    n: usize,
    update: impl Fn(usize, usize) -> f32,
    weight: impl Fn(usize) -> u32,
) -> Vec<Sim> {
    let mut sims = Vec::new();
    for i in 0..n {
        let identity = IdentityKey::generate(&mut ChaCha20Rng::from_seed(rand::random()));
        let (id, cred) =
            super::enrol_with_key(op, base, study, &format!("hospital-{i}"), Some(&identity)).await;
        let update: Vec<f32> = (0..8).map(|j| update(i, j)).collect();
        sims.push(Sim::with_identity(id, cred, update, weight(i), identity));
    }
    sims
}

/// Polls until `done` holds (or panics after `secs`).
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if done().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
