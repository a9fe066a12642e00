//! A simulated participant: what a hospital's agent does in a round, over the real HTTP API (`confide-client`) with
//! the real sans-IO secure-aggregation client — but with a random input instead of training (no torch), so that
//! hundreds fit in one process. Each counts its requests and bytes per stage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use confide_client::{ClientError, CoordinatorClient};
use confide_common::api::{RoundStage, RoundTask, TaskResponse};
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{
    KeyDirectory, QuantizationParams, RoutedShares, SecAggClient, UnmaskingRequest,
};
use indicatif::ProgressBar;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::sync::{Mutex, Notify, Semaphore, watch};

/// The four protocol stages, in order: index of a stage in per-stage arrays.
pub const STAGES: [RoundStage; 4] = [
    RoundStage::AdvertiseKeys,
    RoundStage::ShareKeys,
    RoundStage::MaskedInputCollection,
    RoundStage::Unmasking,
];

/// Index of `stage` in [`STAGES`] (the finished state counts with unmasking, the last thing before it).
pub fn stage_index(stage: RoundStage) -> usize {
    STAGES.iter().position(|s| *s == stage).unwrap_or(3)
}

/// Requests and bytes of one stage, summed over participants.
#[derive(Default)]
pub struct StageTraffic {
    pub requests: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// The inputs whose masked versions the coordinator acknowledged: who, and their exact sum mod 2^32.
#[derive(Default)]
pub struct Acknowledged {
    pub participants: Vec<i64>,
    pub sum: Vec<u32>,
}

/// Survivors upload together: each waits, after masking, until every survivor has masked (or the stage deadline is
/// near), as when sites finish their local work at about the same time.
pub struct UploadGate {
    remaining: AtomicU64,
    opened: Notify,
}

impl UploadGate {
    pub fn new(survivors: u64) -> Self {
        Self {
            remaining: AtomicU64::new(survivors),
            opened: Notify::new(),
        }
    }

    async fn arrive_and_wait(&self, deadline_ms: i64) {
        let opened = self.opened.notified();
        if self.remaining.fetch_sub(1, Ordering::SeqCst) <= 1 {
            self.opened.notify_waiters();
            return;
        }
        // Leave a second before the stage deadline for the upload itself.
        let left = deadline_ms - now_ms() - 1000;
        let _ = tokio::time::timeout(Duration::from_millis(left.max(0) as u64), opened).await;
    }
}

/// Resolves once `flag` is true (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|d| *d).await.map(|_| ());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the participants of one round share.
pub struct RoundShared {
    /// True once the benchmark has seen the round end: every participant stops.
    pub done: watch::Receiver<bool>,
    pub traffic: [StageTraffic; 4],
    /// Long-polls answered idle or with nothing due (another stage's task), and their requests.
    pub idle_requests: AtomicU64,
    /// The participants' CPU-heavy steps (ShareKeys, masking) run one at a time, each on all cores (rayon), as in
    /// the in-process benchmark.
    pub cpu: Semaphore,
    pub gate: Option<UploadGate>,
    pub acknowledged: Mutex<Acknowledged>,
    /// The round's quantisation, as the tasks tell it.
    pub quantisation: Mutex<Option<QuantizationParams>>,
    pub download_model: bool,
    /// Largest model download accepted.
    pub model_limit: usize,
    pub progress: ProgressBar,
}

impl RoundShared {
    fn count(&self, stage: RoundStage, up: usize, down: usize) {
        let t = &self.traffic[stage_index(stage)];
        t.requests.fetch_add(1, Ordering::Relaxed);
        t.bytes_up.fetch_add(up as u64, Ordering::Relaxed);
        t.bytes_down.fetch_add(down as u64, Ordering::Relaxed);
    }
}

/// One simulated hospital.
pub struct Participant {
    pub id: i64,
    client: CoordinatorClient,
    seed: u64,
    rng: ChaCha20Rng,
}

/// A participant's input for a round: a random update in [−1, 1] per parameter, quantised with weight 1 exactly
/// as an agent quantises its update (stochastic rounding from a seeded generator, so it can be drawn again).
pub fn input(seed: u64, round_id: i64, q: &QuantizationParams, params: usize) -> Result<Vec<u32>> {
    let mut rng =
        ChaCha20Rng::seed_from_u64(seed ^ (round_id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let update: Vec<f32> = (0..params)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Ok(q.quantize(&update, 1, &mut rng)?)
}

impl Participant {
    pub fn new(id: i64, client: CoordinatorClient, seed: u64) -> Self {
        Self {
            id,
            client,
            seed,
            rng: ChaCha20Rng::seed_from_u64(seed.rotate_left(17) ^ 0x5eed),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Takes part in the next round until it ends (or, if `drops_out`, until ShareKeys is done: the costliest
    /// dropout for the server, as in `bench secagg`). A stage that moved on before a message arrived (409) is not
    /// an error: the coordinator counts the participant as dropped.
    pub async fn run_round(&mut self, shared: Arc<RoundShared>, drops_out: bool) -> Result<()> {
        let mut done = shared.done.clone();
        let mut secagg: Option<(i64, SecAggClient)> = None;
        loop {
            let task = tokio::select! {
                _ = stopped(&mut done) => return Ok(()),
                task = self.client.poll_task(30) => task.context("polling for a task")?,
            };
            let TaskResponse::Round(task) = task else {
                shared.idle_requests.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if task.submitted {
                shared.idle_requests.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            shared.count(task.stage, 0, 0);
            match task.stage {
                RoundStage::AdvertiseKeys => {
                    self.download_model(&shared, &task).await?;
                    let (client, msg) = SecAggClient::new(
                        task.protocol.clone(),
                        task.participant_index,
                        &mut self.rng,
                    )?;
                    secagg = Some((task.round_id, client));
                    *shared.quantisation.lock().await = Some(task.quantisation);
                    self.post_control(&shared, &task, msg.to_json()).await?;
                }
                RoundStage::ShareKeys => {
                    let dir = KeyDirectory::from_json(&self.broadcast(&shared, &task).await?)?;
                    let (round, mut client) = take(&mut secagg, task.round_id)?;
                    let mut rng = ChaCha20Rng::from_rng(&mut self.rng);
                    let permit = shared.cpu.acquire().await?;
                    let (client, shares) = tokio::task::spawn_blocking(move || {
                        let shares = client.handle_key_directory(&dir, &mut rng);
                        (client, shares)
                    })
                    .await?;
                    drop(permit);
                    secagg = Some((round, client));
                    self.post_control(&shared, &task, shares?.to_json()).await?;
                }
                RoundStage::MaskedInputCollection => {
                    if drops_out {
                        return Ok(());
                    }
                    let routed = RoutedShares::from_json(&self.broadcast(&shared, &task).await?)?;
                    let (round, mut client) = take(&mut secagg, task.round_id)?;
                    let (seed, q, params) =
                        (self.seed, task.quantisation, task.num_parameters as usize);
                    let permit = shared.cpu.acquire().await?;
                    let (client, masked) = tokio::task::spawn_blocking(move || {
                        let masked = input(seed, round, &q, params).and_then(|x| {
                            let y = client.handle_routed_shares(&routed, &x)?;
                            Ok((x, y.encode()))
                        });
                        (client, masked)
                    })
                    .await?;
                    drop(permit);
                    secagg = Some((round, client));
                    let (x, bytes) = masked?;
                    if let Some(gate) = &shared.gate {
                        gate.arrive_and_wait(task.stage_deadline_ms).await;
                    }
                    let len = bytes.len();
                    let posted = self.client.post_masked_input(task.round_id, bytes).await;
                    shared.count(task.stage, len, 0);
                    if accepted(posted, task.stage)? {
                        let mut ack = shared.acknowledged.lock().await;
                        if ack.sum.is_empty() {
                            ack.sum = vec![0; x.len()];
                        }
                        for (s, v) in ack.sum.iter_mut().zip(&x) {
                            *s = s.wrapping_add(*v);
                        }
                        ack.participants.push(self.id);
                        shared.progress.inc(1);
                    }
                }
                RoundStage::ShareVerification | RoundStage::ConsistencyCheck => {
                    bail!(
                        "the benchmark's study is semi-honest, yet the coordinator asked for {:?}",
                        task.stage
                    );
                }
                RoundStage::Unmasking => {
                    let req = UnmaskingRequest::from_json(&self.broadcast(&shared, &task).await?)?;
                    let (_, mut client) = take(&mut secagg, task.round_id)?;
                    let response = client.handle_unmasking_request(&req)?;
                    self.post_control(&shared, &task, response.to_json())
                        .await?;
                    return Ok(());
                }
                RoundStage::Finished => return Ok(()),
            }
        }
    }

    /// The round's base model, as an agent fetches it before training; its sha256 must match the task's.
    async fn download_model(&self, shared: &RoundShared, task: &RoundTask) -> Result<()> {
        if !shared.download_model {
            return Ok(());
        }
        let model = self
            .client
            .download_model(task.model_version, shared.model_limit)
            .await
            .context("downloading the base model")?;
        shared.count(task.stage, 0, model.bytes.len());
        if model.sha256 != task.model_sha256 {
            bail!("the downloaded model's sha256 is not the task's");
        }
        Ok(())
    }

    async fn broadcast(&self, shared: &RoundShared, task: &RoundTask) -> Result<String> {
        let text = self
            .client
            .broadcast(task.round_id, task.stage)
            .await
            .with_context(|| format!("reading the {} broadcast", task.stage.as_str()))?;
        shared.count(task.stage, 0, text.len());
        Ok(text)
    }

    async fn post_control(
        &self,
        shared: &RoundShared,
        task: &RoundTask,
        json: String,
    ) -> Result<()> {
        let len = json.len();
        let posted = self
            .client
            .post_control_message(task.round_id, task.stage, json)
            .await;
        shared.count(task.stage, len, 0);
        if accepted(posted, task.stage)? {
            shared.progress.inc(1);
        }
        Ok(())
    }
}

/// Whether a posted message was accepted; a stage that moved on (409) is a dropout, not an error.
fn accepted(posted: Result<(), ClientError>, stage: RoundStage) -> Result<bool> {
    match posted {
        Ok(()) => Ok(true),
        Err(ClientError::Api { status: 409, .. }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("posting the {} message", stage.as_str())),
    }
}

/// The secure-aggregation client of `round`, taken out to be moved to a blocking thread.
fn take(secagg: &mut Option<(i64, SecAggClient)>, round: i64) -> Result<(i64, SecAggClient)> {
    match secagg.take() {
        Some((r, c)) if r == round => Ok((r, c)),
        _ => {
            bail!("a task of round {round} came before this participant advertised its keys in it")
        }
    }
}

/// A participant that is never selected: it long-polls for work the whole time, as an enrolled site between its
/// rounds does. Returns how many requests it made.
pub async fn idle_poller(client: CoordinatorClient, mut stop: watch::Receiver<bool>) -> u64 {
    let mut requests = 0;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return requests,
            polled = client.poll_task(30) => {
                requests += 1;
                if polled.is_err() {
                    // Do not hammer a coordinator that refuses: wait a little before the next poll.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
