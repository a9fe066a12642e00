//! What `confide bench federation` reports: per round and per stage, as JSON (`--json`) or as a table.

use confide_common::api::RoundOutcome;
use serde::Serialize;

use super::super::bench_secagg::GraphChoice;

/// One stage of one round, as the operator saw it (from its long-poll of the round's status).
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub wall_seconds: f64,
    /// CPU seconds of the coordinator processes (user + system, all threads), from `/proc` samples every 10 ms.
    pub coordinator_cpu_seconds: f64,
    /// Largest resident set of a coordinator process sampled during the stage.
    pub coordinator_peak_rss_mb: f64,
    /// Bytes the participants sent (message bodies) and received (model, broadcasts).
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
    /// Uploaded megabytes (10^6) per second of the stage's wall time.
    pub upload_mb_per_s: f64,
    /// Participant requests attributed to the stage (long-polls that returned its task, broadcasts, messages,
    /// model downloads).
    pub requests: u64,
    /// Database size at the end of the stage minus at its start (None if the coordinator does not report it).
    pub db_growth_bytes: Option<i64>,
}

/// One round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: u32,
    pub round_id: i64,
    /// `None` if the round had not finished when the benchmark stopped waiting.
    pub outcome: Option<RoundOutcome>,
    /// The published model equals FedAvg of exactly the aggregated inputs (recomputed here, bit for bit).
    pub correct: bool,
    /// Inputs in the aggregate (U3) and participants that dropped out.
    pub aggregated: usize,
    pub dropped: usize,
    /// From the start request to the operator seeing the round finished (its model published).
    pub wall_seconds: f64,
    /// `wall_seconds` ÷ the in-process `bench secagg` total for the same (N, M, dropout, graph).
    pub ratio_to_in_process: f64,
    pub coordinator_cpu_seconds: f64,
    /// Peak resident set of each coordinator process during the round (the kernel's high-water mark, reset at the
    /// round's start), and its excess over the process's idle resident set.
    pub coordinator_peak_rss_mb: Vec<f64>,
    pub coordinator_peak_rss_above_idle_mb: Vec<f64>,
    pub db_growth_bytes: Option<i64>,
    /// Largest database size seen at a stage boundary, minus the size at the round's start.
    pub db_peak_growth_bytes: Option<i64>,
    pub requests: u64,
    /// Long-polls answered without work due (timeouts, or a task already answered).
    pub idle_requests: u64,
    pub bytes_uploaded: u64,
    pub upload_mb_per_s: f64,
    pub stages: Vec<StageReport>,
}

/// The in-process round the HTTP rounds are compared with.
#[derive(Debug, Clone, Serialize)]
pub struct InProcess {
    pub total_seconds: f64,
    pub client_share_keys_seconds: f64,
    pub client_mask_seconds: f64,
    pub server_unmask_seconds: f64,
    pub threshold: u32,
    pub degree: u32,
    pub correct: bool,
}

/// Median, mean and extremes of a figure over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Self {
            median: v[v.len() / 2],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct FederationReport {
    pub participants: u32,
    /// Vector length M (parameters plus the weight coordinate) and the model giving it.
    pub params: u32,
    pub model: String,
    pub dropout: f64,
    pub graph: GraphChoice,
    /// Secure-aggregation threshold and neighbour count the coordinator derived.
    pub threshold: u32,
    pub degree: u32,
    pub database: &'static str,
    pub processes: usize,
    pub idle_polls: u32,
    pub uploads: &'static str,
    pub model_download: bool,
    /// The study's stage deadlines in seconds (advertise_keys, share_keys, masked_input_collection, unmasking).
    pub deadlines_secs: [u64; 4],
    pub in_process: InProcess,
    /// Resident set of each coordinator process before the first round.
    pub coordinator_idle_rss_mb: Vec<f64>,
    pub rounds: Vec<RoundReport>,
    pub all_correct: bool,
    /// Wall time of all rounds back to back (each from its start request to its end).
    pub total_round_seconds: f64,
    pub round_wall_seconds: Option<Spread>,
    pub ratio_to_in_process: Option<Spread>,
    pub max_peak_rss_above_idle_mb: f64,
    /// Requests the idle pollers made during the whole run.
    pub idle_poller_requests: u64,
}

fn mb(bytes: Option<i64>) -> String {
    bytes.map_or("–".into(), |b| format!("{:+.1}", b as f64 / 1e6))
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

impl FederationReport {
    /// The human-readable form: the setting, one line per round and per stage, and a summary.
    pub fn print_table(&self) {
        println!(
            "federation: N = {} ({} idle pollers), M = {} ({}), dropout {}, {:?} graph (degree {}, t = {}), {} × {} coordinator, uploads {}, model download {}",
            self.participants,
            self.idle_polls,
            self.params,
            self.model,
            self.dropout,
            self.graph,
            self.degree,
            self.threshold,
            self.database,
            self.processes,
            self.uploads,
            if self.model_download { "on" } else { "off" },
        );
        println!(
            "in-process protocol (bench secagg): {} (client ShareKeys {}, client mask {}, server unmask {}); deadlines {:?} s",
            secs(self.in_process.total_seconds),
            secs(self.in_process.client_share_keys_seconds),
            secs(self.in_process.client_mask_seconds),
            secs(self.in_process.server_unmask_seconds),
            self.deadlines_secs,
        );
        println!(
            "coordinator idle RSS: {:?} MB",
            self.coordinator_idle_rss_mb
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
        println!(
            "{:>5} {:>9} {:>12} {:>7} {:>9} {:>10} {:>12} {:>9} {:>8} {:>9}  check",
            "round",
            "outcome",
            "wall",
            "ratio",
            "coord CPU",
            "peak RSS",
            "above idle",
            "DB MB",
            "requests",
            "MB/s up"
        );
        for r in &self.rounds {
            let peak = r
                .coordinator_peak_rss_mb
                .iter()
                .copied()
                .fold(0.0, f64::max);
            let above = r
                .coordinator_peak_rss_above_idle_mb
                .iter()
                .copied()
                .fold(f64::MIN, f64::max);
            println!(
                "{:>5} {:>9} {:>12} {:>7.2} {:>8.2}s {:>7.1} MB {:>9.1} MB {:>9} {:>8} {:>9.1}  {}",
                r.round,
                r.outcome.map_or("unfinished", RoundOutcome::as_str),
                secs(r.wall_seconds),
                r.ratio_to_in_process,
                r.coordinator_cpu_seconds,
                peak,
                above,
                mb(r.db_growth_bytes),
                r.requests,
                r.upload_mb_per_s,
                if r.correct { "exact" } else { "WRONG" }
            );
            if self.rounds.len() <= 10 {
                for s in &r.stages {
                    println!(
                        "      {:<24} {:>12} {:>16.2}s {:>7.1} MB {:>9} {:>8} {:>9.1}",
                        s.stage,
                        secs(s.wall_seconds),
                        s.coordinator_cpu_seconds,
                        s.coordinator_peak_rss_mb,
                        mb(s.db_growth_bytes),
                        s.requests,
                        s.upload_mb_per_s
                    );
                }
            }
        }
        if let (Some(w), Some(ratio)) = (&self.round_wall_seconds, &self.ratio_to_in_process) {
            println!(
                "{} round(s) in {}: wall median {} (min {}, max {}), ratio median {:.2}; peak RSS above idle ≤ {:.1} MB; {}",
                self.rounds.len(),
                secs(self.total_round_seconds),
                secs(w.median),
                secs(w.min),
                secs(w.max),
                ratio.median,
                self.max_peak_rss_above_idle_mb,
                if self.all_correct {
                    "every published model exact"
                } else {
                    "SOME PUBLISHED MODELS WRONG"
                }
            );
        }
    }
}
