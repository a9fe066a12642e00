//! One benchmark round: the participants long-poll, the operator starts the round and follows its stages with a
//! long-poll of the round's status, the coordinators are measured meanwhile, and the published model is checked
//! against FedAvg of exactly the inputs the coordinator aggregated.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use confide_client::CoordinatorClient;
use confide_common::api::{MemberSet, RoundInfo, RoundOutcome, RoundStage, StartRoundRequest};
use confide_common::model::{ModelSpec, decode_safetensors};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use tokio::sync::{Mutex, Semaphore, watch};

use super::coordinator::{Coordinators, ProcSample, Sampler};
use super::participant::{self, Participant, RoundShared, STAGES, UploadGate};
use super::report::{RoundReport, StageReport};

/// What stays the same from round to round.
pub struct Setting {
    pub study_id: i64,
    pub spec: serde_json::Value,
    /// The participants to select (None: everyone enrolled, when there are no idle pollers).
    pub selected: Option<Vec<i64>>,
    pub dropouts: usize,
    pub gate: bool,
    pub download_model: bool,
    pub learning_rate: f64,
    pub in_process_seconds: f64,
    pub idle_rss_mb: Vec<f64>,
    pub progress: bool,
}

/// Runs rounds one after the other, keeping the latest published model as the next round's base.
pub struct Runner {
    setting: Setting,
    coordinators: Arc<Coordinators>,
    op: CoordinatorClient,
    participants: Vec<Participant>,
    spec: ModelSpec,
    /// The latest published model's parameters (the next round's base).
    model: Vec<f32>,
}

/// The database's size now: the SQLite files, or what a coordinator reports on `/metrics` for Postgres.
async fn db_bytes(coordinators: &Coordinators, op: &CoordinatorClient) -> Option<i64> {
    if let Some(bytes) = coordinators.database.sqlite_bytes() {
        return Some(bytes as i64);
    }
    let text = op.metrics().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("confide_db_size_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// CPU seconds of a series at `at`, interpolated between the samples around it.
fn cpu_at(series: &[ProcSample], at: Instant) -> Option<f64> {
    let after = series.iter().position(|s| s.at >= at);
    match after {
        Some(0) => series.first().map(|s| s.cpu_seconds),
        Some(i) => {
            let (a, b) = (&series[i - 1], &series[i]);
            let span = b.at.duration_since(a.at).as_secs_f64();
            let f = if span > 0.0 {
                at.duration_since(a.at).as_secs_f64() / span
            } else {
                1.0
            };
            Some(a.cpu_seconds + f * (b.cpu_seconds - a.cpu_seconds))
        }
        None => series.last().map(|s| s.cpu_seconds),
    }
}

fn progress_bar(len: u64, round: u32, shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("round {prefix:>4} {msg:<24} [{bar:40}] {pos}/{len} messages")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(round.to_string());
    pb
}

impl Runner {
    pub async fn new(
        setting: Setting,
        coordinators: Arc<Coordinators>,
        op: CoordinatorClient,
        participants: Vec<Participant>,
    ) -> Result<Self> {
        let spec = ModelSpec::from_json(&setting.spec.to_string())?;
        let base = op
            .download_model_version(setting.study_id, 0)
            .await
            .context("downloading the initial model")?;
        let model = decode_safetensors(&spec, &base.bytes)?;
        Ok(Self {
            setting,
            coordinators,
            op,
            participants,
            spec,
            model,
        })
    }

    /// Runs round `number` and measures it.
    pub async fn run(&mut self, number: u32, sampler: &Sampler) -> Result<RoundReport> {
        let n = self.participants.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand::rng());
        let dropping: HashSet<usize> = order[..self.setting.dropouts].iter().copied().collect();
        let survivors = n - dropping.len();
        let (finish, done) = watch::channel(false);
        let progress = progress_bar(
            (2 * n + 2 * survivors) as u64,
            number,
            self.setting.progress,
        );
        let shared = Arc::new(RoundShared {
            done,
            traffic: Default::default(),
            idle_requests: Default::default(),
            cpu: Semaphore::new(1),
            gate: self.setting.gate.then(|| UploadGate::new(survivors as u64)),
            acknowledged: Mutex::default(),
            quantisation: Mutex::default(),
            download_model: self.setting.download_model,
            model_limit: 4 * self.spec.num_parameters() + (1 << 20),
            progress: progress.clone(),
        });

        let procs = &self.coordinators.processes;
        for p in procs {
            p.reset_peak_rss();
        }
        sampler.take();
        let db_start = db_bytes(&self.coordinators, &self.op).await;
        let cpu_start: Vec<Option<ProcSample>> = procs.iter().map(|p| p.sample()).collect();
        // The participants are long-polling before the round starts, as enrolled agents are.
        let mut tasks = Vec::with_capacity(n);
        for (i, mut p) in std::mem::take(&mut self.participants)
            .into_iter()
            .enumerate()
        {
            let (shared, drops) = (shared.clone(), dropping.contains(&i));
            tasks.push(tokio::spawn(async move {
                let result = p.run_round(shared, drops).await;
                (p, result)
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;

        let started = Instant::now();
        let req = StartRoundRequest {
            participants: self.setting.selected.clone(),
        };
        let mut status = self
            .op
            .start_round(self.setting.study_id, &req)
            .await
            .context("starting a round")?;
        let round_id = status.id;
        let mut requests_op = 1u64;
        let mut boundaries: Vec<(RoundStage, Instant, Option<i64>)> =
            vec![(status.stage, started, db_start)];
        progress.set_message(status.stage.as_str());
        while status.outcome.is_none() {
            let asked = Instant::now();
            let next = self
                .op
                .wait_round(round_id, Some(status.stage), 60)
                .await
                .context("following the round")?;
            requests_op += 1;
            if next.outcome.is_none() && next.stage == status.stage {
                // A coordinator without long-polls of the round status answers at once: poll gently.
                if asked.elapsed() < Duration::from_millis(5) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
            let at = Instant::now();
            let db = if self.coordinators.database.sqlite_bytes().is_some() {
                db_bytes(&self.coordinators, &self.op).await
            } else {
                None
            };
            boundaries.push((next.stage, at, db));
            progress.set_message(next.stage.as_str());
            status = next;
        }
        let ended = Instant::now();
        let wall = ended.duration_since(started).as_secs_f64();
        let cpu_end: Vec<Option<ProcSample>> = procs.iter().map(|p| p.sample()).collect();
        let _ = finish.send(true);
        progress.finish_and_clear();
        for t in tasks {
            let (p, result) = t.await?;
            self.participants.push(p);
            result.with_context(|| format!("a participant in round {number}"))?;
        }
        let series = sampler.take();
        let db_end = db_bytes(&self.coordinators, &self.op).await;
        requests_op += u64::from(self.coordinators.database.sqlite_bytes().is_none());

        let outcome = status.outcome;
        let aggregated = status.members(MemberSet::SentMaskedInput).to_vec();
        let correct = if outcome == Some(RoundOutcome::Completed) {
            self.check(&status, &shared, &aggregated).await?
        } else {
            false
        };

        let peaks: Vec<f64> = cpu_end
            .iter()
            .map(|s| s.map_or(0.0, |s| s.peak_rss_bytes as f64 / 1e6))
            .collect();
        let cpu: f64 = cpu_start
            .iter()
            .zip(&cpu_end)
            .filter_map(|(a, b)| Some(b.as_ref()?.cpu_seconds - a.as_ref()?.cpu_seconds))
            .sum();
        let stages = stage_reports(&boundaries, ended, db_end, &series, &shared);
        let bytes_up: u64 = stages.iter().map(|s| s.bytes_uploaded).sum();
        let participant_requests: u64 = stages.iter().map(|s| s.requests).sum();
        let db_peak = boundaries
            .iter()
            .filter_map(|b| b.2)
            .chain(db_end)
            .max()
            .zip(db_start)
            .map(|(peak, start)| peak - start);
        Ok(RoundReport {
            round: number,
            round_id,
            outcome,
            correct,
            aggregated: aggregated.len(),
            dropped: dropping.len(),
            wall_seconds: wall,
            ratio_to_in_process: wall / self.setting.in_process_seconds,
            coordinator_cpu_seconds: cpu,
            coordinator_peak_rss_above_idle_mb: peaks
                .iter()
                .zip(&self.setting.idle_rss_mb)
                .map(|(p, idle)| p - idle)
                .collect(),
            coordinator_peak_rss_mb: peaks,
            db_growth_bytes: db_end.zip(db_start).map(|(e, s)| e - s),
            db_peak_growth_bytes: db_peak,
            requests: participant_requests + requests_op,
            idle_requests: shared.idle_requests.load(Ordering::Relaxed),
            bytes_uploaded: bytes_up,
            upload_mb_per_s: bytes_up as f64 / 1e6 / wall,
            stages,
        })
    }

    /// Whether the round's published model is exactly FedAvg of the inputs of the participants the coordinator
    /// says it aggregated (the base plus η times the dequantised sum over the summed weights, in the
    /// coordinator's arithmetic).
    async fn check(
        &mut self,
        status: &RoundInfo,
        shared: &RoundShared,
        aggregated: &[i64],
    ) -> Result<bool> {
        let q = shared
            .quantisation
            .lock()
            .await
            .context("no participant saw the round's quantisation")?;
        let ack = std::mem::take(&mut *shared.acknowledged.lock().await);
        let mut acked = ack.participants.clone();
        acked.sort_unstable();
        let mut want = aggregated.to_vec();
        want.sort_unstable();
        let sum = if acked == want {
            ack.sum
        } else {
            // A message acknowledged as its stage closed is left out of the aggregate: draw the inputs again.
            let params = self.spec.num_parameters();
            let mut sum = vec![0u32; params + 1];
            for p in self.participants.iter().filter(|p| want.contains(&p.id)) {
                let x = participant::input(p.seed(), status.id, &q, params)?;
                for (s, v) in sum.iter_mut().zip(&x) {
                    *s = s.wrapping_add(*v);
                }
            }
            sum
        };
        ensure!(!sum.is_empty(), "no input was aggregated");
        let d = q.dequantize(&sum)?;
        let w = d.total_weight as f64;
        let lr = self.setting.learning_rate;
        let expected: Vec<f32> = self
            .model
            .iter()
            .zip(&d.values)
            .map(|(x, v)| (f64::from(*x) + lr * (v / w)) as f32)
            .collect();
        let versions = self.op.list_model_versions(status.study_id).await?;
        let Some(version) = versions.iter().find(|v| v.round_id == Some(status.id)) else {
            bail!("round {} completed without a model version", status.id);
        };
        let published = self
            .op
            .download_model_version(status.study_id, version.version)
            .await?;
        let published = decode_safetensors(&self.spec, &published.bytes)?;
        let exact = published.len() == expected.len()
            && published
                .iter()
                .zip(&expected)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        self.model = published;
        Ok(exact)
    }
}

/// Members of one of a round's sets.
/// Per-stage figures from the stage boundaries the operator saw, the coordinators' samples and the participants'
/// traffic.
fn stage_reports(
    boundaries: &[(RoundStage, Instant, Option<i64>)],
    ended: Instant,
    db_end: Option<i64>,
    series: &[Vec<ProcSample>],
    shared: &RoundShared,
) -> Vec<StageReport> {
    let mut out = Vec::new();
    for (i, (stage, start, db_start)) in boundaries.iter().enumerate() {
        let Some(index) = STAGES.iter().position(|s| s == stage) else {
            continue;
        };
        let (end, db_at_end) = boundaries
            .get(i + 1)
            .map_or((ended, db_end), |b| (b.1, b.2.or(db_end)));
        let wall = end.duration_since(*start).as_secs_f64();
        let cpu: f64 = series
            .iter()
            .filter_map(|s| Some(cpu_at(s, end)? - cpu_at(s, *start)?))
            .sum();
        let rss = series
            .iter()
            .flat_map(|s| s.iter().filter(|x| x.at >= *start && x.at <= end))
            .map(|x| x.rss_bytes)
            .max()
            .unwrap_or(0);
        let t = &shared.traffic[index];
        let up = t.bytes_up.load(Ordering::Relaxed);
        out.push(StageReport {
            stage: stage.as_str(),
            wall_seconds: wall,
            coordinator_cpu_seconds: cpu,
            coordinator_peak_rss_mb: rss as f64 / 1e6,
            bytes_uploaded: up,
            bytes_downloaded: t.bytes_down.load(Ordering::Relaxed),
            upload_mb_per_s: if wall > 0.0 {
                up as f64 / 1e6 / wall
            } else {
                0.0
            },
            requests: t.requests.load(Ordering::Relaxed),
            db_growth_bytes: db_at_end.zip(*db_start).map(|(e, s)| e - s),
        });
    }
    out
}
