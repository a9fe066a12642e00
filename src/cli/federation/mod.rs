//! `confide bench federation`: rounds at scale over real HTTP. A real `confide-coordinator` process (or two on one
//! Postgres), N simulated participants in this process speaking the real API with the real secure-aggregation
//! client, R rounds of vector length M; every published model is checked bit for bit against FedAvg of the known
//! inputs, and each round is measured per stage (wall, coordinator CPU and RSS from `/proc`, bytes, requests,
//! database growth) and compared with the in-process `bench secagg` round for the same (N, M, dropout, graph).
//!
//! Bounded (at most [`MAX_PARTICIPANTS`] participants, [`MAX_INPUT_BYTES`] of masked inputs per round) and on
//! loopback only; everything it starts — processes, temporary files, a Postgres schema — is removed at the end.

mod coordinator;
mod participant;
mod report;
mod round;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::ValueEnum;
use confide_client::CoordinatorClient;
use confide_common::api::{
    BudgetParams, CreateEnrolmentTokenRequest, CreateStudyRequest, DpParams, GraphParams,
    LocalTraining, QuantisationConfig, RoundOutcome, SecAggConfig, ServerOptimizer, StageDeadlines,
};
use confide_common::model::ModelSpec;
use confide_common::secagg::ThreatModel;

use super::bench_secagg::{GraphChoice, SecaggArgs, bench_secagg};
use coordinator::{Coordinators, Database, Sampler};
use participant::Participant;
use report::{FederationReport, InProcess, Spread};

/// Most simulated participants one run may start (each holds a connection and, at worst, a masked input).
pub const MAX_PARTICIPANTS: u32 = 5_000;
/// Most bytes of masked inputs one round may hold in this process (N × 4·M).
pub const MAX_INPUT_BYTES: u64 = 4 << 30;
/// Server learning rate of the benchmark's study (FedAvg).
const LEARNING_RATE: f64 = 1.0;

/// When survivors upload their masked inputs.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Uploads {
    /// All at once, after every survivor has masked: sites that finish their local work at about the same time,
    /// the coordinator's worst case (N bodies arriving together).
    Together,
    /// Each as soon as it is masked (one at a time here, since masking runs one participant at a time).
    AsReady,
}

impl Uploads {
    fn as_str(self) -> &'static str {
        match self {
            Self::Together => "together",
            Self::AsReady => "as-ready",
        }
    }
}

#[derive(clap::Args)]
pub struct FederationArgs {
    /// Number of participants N taking part in each round.
    #[arg(long, default_value_t = 10)]
    participants: u32,
    /// Vector length M (ring elements per masked input: the model's parameters plus the weight coordinate; the
    /// model is a logistic regression whose size comes closest to M from below).
    #[arg(long, default_value_t = 1000)]
    params: u32,
    /// Rounds R, back to back.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Fraction of participants that drop out after ShareKeys in each round (the stage then waits for its
    /// deadline).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Neighbour graph (sparse: SecAgg+ with the degree derived from N, the dropout and a 5 % corrupt fraction).
    #[arg(long, value_enum, default_value_t = GraphChoice::Complete)]
    graph: GraphChoice,
    /// A postgres:// URL of a server on this machine (a fresh schema is created and dropped); default: an SQLite
    /// file in a temporary folder.
    #[arg(long)]
    database_url: Option<String>,
    /// Coordinator processes sharing the database (2 needs Postgres); participants alternate between them, the
    /// operator talks to the first.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Extra enrolled participants that are never selected and long-poll for work the whole time.
    #[arg(long, default_value_t = 0)]
    idle_polls: u32,
    /// When survivors upload their masked inputs.
    #[arg(long, value_enum, default_value_t = Uploads::Together)]
    uploads: Uploads,
    /// Deadline of MaskedInputCollection in seconds; default when participants drop out (the stage then waits for
    /// it): 2 × the in-process masking time of all survivors, plus their uploads at 20 MB/s, plus 5 s.
    #[arg(long)]
    masked_input_deadline: Option<u64>,
    /// Do not download the base model at the start of each round (agents do; it costs 4·M bytes per participant).
    #[arg(long)]
    no_model_download: bool,
    /// Folder holding `confide-coordinator` (default: beside this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the coordinators' logs and the SQLite database (the Postgres schema is dropped regardless).
    #[arg(long)]
    keep: bool,
    /// Print one JSON object on stdout (and nothing else there) instead of the table.
    #[arg(long)]
    json: bool,
}

/// A logistic regression whose flat parameters plus the weight coordinate come closest to `m` from below:
/// (input_dim, classes, vector length).
fn model_for(m: u32) -> Result<(usize, usize, u32)> {
    ensure!(m >= 7, "--params must be at least 7");
    let best = (2..=16usize)
        .map(|classes| {
            let input_dim = (m as usize - 1) / classes - 1;
            (input_dim, classes, (classes * (input_dim + 1) + 1) as u32)
        })
        .filter(|(d, _, _)| *d >= 1)
        .max_by_key(|(_, classes, len)| (*len, usize::MAX - classes));
    best.context("no model of that size")
}

fn validate(args: &FederationArgs) -> Result<()> {
    ensure!(
        (3..=MAX_PARTICIPANTS).contains(&args.participants),
        "--participants must be in 3..={MAX_PARTICIPANTS}"
    );
    ensure!(
        args.participants + args.idle_polls <= 2 * MAX_PARTICIPANTS,
        "--idle-polls: at most {} enrolled participants in all",
        2 * MAX_PARTICIPANTS
    );
    ensure!(
        u64::from(args.participants) * 4 * u64::from(args.params) <= MAX_INPUT_BYTES,
        "N × 4·M must stay within {} GiB",
        MAX_INPUT_BYTES >> 30
    );
    ensure!(
        args.params <= confide_common::secagg::MAX_VECTOR_LEN,
        "--params is too large"
    );
    ensure!(
        (0.0..0.5).contains(&args.dropout),
        "--dropout must be in [0, 0.5)"
    );
    ensure!(
        (1..=10_000).contains(&args.rounds),
        "--rounds must be in 1..=10000"
    );
    ensure!(
        (1..=2).contains(&args.processes),
        "--processes must be 1 or 2"
    );
    ensure!(
        args.processes == 1 || args.database_url.is_some(),
        "two coordinator processes need Postgres (--database-url postgres://…): SQLite is one process's database"
    );
    Ok(())
}

pub fn run(args: FederationArgs) -> Result<()> {
    validate(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = run_async(&args) => report,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_table();
    }
    let unfinished = report
        .rounds
        .iter()
        .filter(|r| r.outcome != Some(RoundOutcome::Completed))
        .count();
    ensure!(
        unfinished == 0,
        "{unfinished} round(s) did not complete (see `outcome`; with dropouts, a MaskedInputCollection deadline \
         that passes before the survivors' inputs are in aborts the round: raise --masked-input-deadline)"
    );
    ensure!(
        report.all_correct,
        "a published model differs from FedAvg of the aggregated inputs"
    );
    Ok(())
}

/// The study the benchmark runs: the demo's DP-SGD settings (q = 0.2, σ = 5.5, 2 local epochs), a budget no run
/// can exhaust, FedAvg at learning rate 1, and the given graph, sizes and deadlines.
fn study_request(
    args: &FederationArgs,
    (input_dim, classes): (usize, usize),
    deadlines: [u64; 4],
) -> Result<CreateStudyRequest> {
    let graph = match args.graph {
        GraphChoice::Complete => GraphParams::Complete,
        GraphChoice::Sparse => GraphParams::Sparse {
            expected_dropout: args.dropout,
            corrupt_fraction: 0.05,
        },
    };
    let model_spec = ModelSpec::LogisticRegression {
        input_dim,
        num_classes: classes,
    };
    let suffix: u32 = rand::random();
    Ok(CreateStudyRequest {
        name: format!("bench-federation-{suffix:08x}"),
        model_spec: serde_json::to_value(&model_spec)?,
        initial_weights_seed: 1,
        initial_weights: None,
        dp: DpParams {
            sampling_rate: 0.2,
            noise_multiplier: 5.5,
            target_epsilon: None,
            local_epochs: 2,
            clip_norm: 1.0,
            expected_batch_size: 22.8,
        },
        local_training: LocalTraining::default(),
        // Semi-honest: the simulated participants run the four-stage protocol (no identities).
        secagg: SecAggConfig {
            threat_model: ThreatModel::SemiHonest,
            corrupt_fraction: 0.0,
            threshold: None,
            graph,
            quantisation: QuantisationConfig {
                clip_range: Some(1.0),
                bits: 32,
                max_weight: 1,
            },
        },
        budget: BudgetParams {
            epsilon: 1.0e6,
            delta: 1e-5,
        },
        rounds: args.rounds,
        min_participants: 3,
        deadlines: StageDeadlines {
            advertise_keys_secs: deadlines[0],
            share_keys_secs: deadlines[1],
            masked_input_secs: deadlines[2],
            unmasking_secs: deadlines[3],
            ..StageDeadlines::default()
        },
        server_optimizer: ServerOptimizer::FedAvg {
            learning_rate: LEARNING_RATE,
        },
        preprocessing: None,
        evaluation: None,
    })
}

/// Stage deadlines: generous where everyone answers (the stage closes as soon as they have); for
/// MaskedInputCollection with dropouts, what the stage will wait for, derived from the in-process masking time.
fn deadlines(args: &FederationArgs, in_process: &InProcess, survivors: u32) -> [u64; 4] {
    let n = f64::from(args.participants);
    let masking = in_process.client_mask_seconds * f64::from(survivors);
    let generous = |work: f64| (60.0 + 10.0 * work).ceil().min(86_400.0) as u64;
    let masked_input = match args.masked_input_deadline {
        Some(secs) => secs.max(1),
        // Masking one after another here, then the uploads (at a pessimistic 20 MB/s over loopback), with room
        // for a loaded machine: a deadline that passes before the survivors' inputs are in aborts the round.
        None if args.dropout > 0.0 => {
            let upload = f64::from(survivors) * 4.0 * f64::from(args.params) / 20e6;
            (2.0 * masking + upload + 5.0).ceil() as u64
        }
        None => generous(masking),
    };
    [
        generous(n * 0.01),
        generous(n * in_process.client_share_keys_seconds),
        masked_input,
        generous(in_process.server_unmask_seconds),
    ]
}

/// `confide-coordinator` in `--bin-dir` or beside this executable.
fn coordinator_binary(args: &FederationArgs) -> Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let path = dir.join("confide-coordinator");
    ensure!(
        path.is_file(),
        "{} not found; build it (`cargo build --release -p confide-coordinator`) or point --bin-dir at it",
        path.display()
    );
    Ok(path)
}

async fn run_async(args: &FederationArgs) -> Result<FederationReport> {
    let binary = coordinator_binary(args)?;
    let (input_dim, classes, m) = model_for(args.params)?;
    let n = args.participants;
    let dropped = (args.dropout * f64::from(n)).floor() as u32;

    // The in-process round first, on a machine not yet busy with the coordinator.
    if !args.json {
        eprintln!("in-process round (bench secagg, N = {n}, M = {m}) …");
    }
    let secagg = SecaggArgs::quiet(n, m, args.dropout, args.graph);
    let baseline =
        tokio::task::spawn_blocking(move || bench_secagg(&secagg, ThreatModel::SemiHonest))
            .await??;
    ensure!(
        baseline.correct(),
        "the in-process round's aggregate was wrong"
    );
    let in_process = InProcess {
        total_seconds: baseline.total_seconds(),
        client_share_keys_seconds: baseline.client_share_keys_seconds(),
        client_mask_seconds: baseline.client_mask_seconds(),
        server_unmask_seconds: baseline.server_unmask_seconds(),
        threshold: baseline.threshold(),
        degree: baseline.degree(),
        correct: baseline.correct(),
    };
    let deadlines = deadlines(args, &in_process, n - dropped);

    let dir = tempfile::Builder::new()
        .prefix("confide-bench-federation-")
        .tempdir()?;
    let database = Database::fresh(args.database_url.as_deref(), dir.path())?;
    let keep = args.keep;
    let processes = args.processes;
    let coordinators = tokio::task::spawn_blocking(move || {
        Coordinators::start(&binary, database, processes, dir, keep)
    })
    .await??;
    let coordinators = Arc::new(coordinators);
    let bases: Vec<CoordinatorClient> = coordinators
        .processes
        .iter()
        .map(|p| CoordinatorClient::new(&p.url, ""))
        .collect();
    let op = bases[0].with_token(&coordinators.operator_token);

    let study = op
        .create_study(&study_request(args, (input_dim, classes), deadlines)?)
        .await
        .context("creating the study")?;
    let participants = enrol(&op, &bases, study.id, n, "site").await?;
    let idle = enrol(&op, &bases, study.id, args.idle_polls, "idle").await?;
    let (stop_idle, idle_stop) = tokio::sync::watch::channel(false);
    let idle_tasks: Vec<_> = idle
        .iter()
        .map(|p| tokio::spawn(participant::idle_poller(p.1.clone(), idle_stop.clone())))
        .collect();
    let participants: Vec<Participant> = participants
        .into_iter()
        .enumerate()
        .map(|(i, (id, client))| Participant::new(id, client, 0x5eed_0000 + i as u64))
        .collect();

    // Idle figures once the coordinators have settled with the idle pollers connected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss: Vec<f64> = coordinators
        .processes
        .iter()
        .map(|p| p.sample().map_or(0.0, |s| s.rss_bytes as f64 / 1e6))
        .collect();
    let sampler = Sampler::start(coordinators.pids());
    let setting = round::Setting {
        study_id: study.id,
        spec: study.config.model_spec.clone(),
        selected: (!idle.is_empty()).then(|| participants.iter().map(|p| p.id).collect()),
        dropouts: dropped as usize,
        gate: args.uploads == Uploads::Together,
        download_model: !args.no_model_download,
        learning_rate: LEARNING_RATE,
        in_process_seconds: in_process.total_seconds,
        idle_rss_mb: idle_rss.clone(),
        progress: !args.json,
    };
    let mut runner =
        round::Runner::new(setting, coordinators.clone(), op.clone(), participants).await?;
    let mut rounds = Vec::new();
    for r in 1..=args.rounds {
        rounds.push(runner.run(r, &sampler).await?);
    }
    drop(sampler);
    let _ = stop_idle.send(true);
    let mut idle_requests = 0;
    for t in idle_tasks {
        idle_requests += t.await.unwrap_or(0);
    }
    drop(runner);

    let walls: Vec<f64> = rounds.iter().map(|r| r.wall_seconds).collect();
    let ratios: Vec<f64> = rounds.iter().map(|r| r.ratio_to_in_process).collect();
    let report = FederationReport {
        participants: n,
        params: m,
        model: format!("logistic regression {input_dim} × {classes}"),
        dropout: args.dropout,
        graph: args.graph,
        threshold: in_process.threshold,
        degree: in_process.degree,
        database: coordinators.database.kind(),
        processes: args.processes,
        idle_polls: args.idle_polls,
        uploads: args.uploads.as_str(),
        model_download: !args.no_model_download,
        deadlines_secs: deadlines,
        in_process,
        coordinator_idle_rss_mb: idle_rss,
        all_correct: rounds.iter().all(|r| r.correct),
        total_round_seconds: walls.iter().sum(),
        round_wall_seconds: Spread::of(&walls),
        ratio_to_in_process: Spread::of(&ratios),
        max_peak_rss_above_idle_mb: rounds
            .iter()
            .flat_map(|r| r.coordinator_peak_rss_above_idle_mb.iter().copied())
            .fold(0.0, f64::max),
        idle_poller_requests: idle_requests,
        rounds,
    };
    // Stops the coordinators, drops the schema, removes the temporary folder.
    drop(coordinators);
    Ok(report)
}

/// Enrols `count` participants named `<prefix>-<i>` in `study` (ten at a time), participant i on coordinator
/// process i mod P: (participant id, a client of its process with its credential).
async fn enrol(
    op: &CoordinatorClient,
    bases: &[CoordinatorClient],
    study: i64,
    count: u32,
    prefix: &str,
) -> Result<Vec<(i64, CoordinatorClient)>> {
    let mut out = Vec::with_capacity(count as usize);
    let ids: Vec<u32> = (0..count).collect();
    for chunk in ids.chunks(10) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let (op, base) = (op.clone(), bases[i as usize % bases.len()].clone());
            let name = format!("{prefix}-{i}");
            tasks.push(tokio::spawn(async move {
                let token = op
                    .create_enrolment_token(
                        study,
                        &CreateEnrolmentTokenRequest {
                            label: name.clone(),
                            expires_in_secs: None,
                        },
                    )
                    .await?
                    .token;
                let e = base.enrol(&token, &name).await?;
                anyhow::Ok((e.participant_id, base.with_token(&e.credential)))
            }));
        }
        for t in tasks {
            out.push(t.await??);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_comes_closest_to_m_from_below() {
        assert_eq!(model_for(1_000_000).unwrap(), (333_332, 3, 1_000_000));
        assert_eq!(model_for(100_000).unwrap(), (33_332, 3, 100_000));
        assert_eq!(model_for(1000).unwrap(), (332, 3, 1000));
        // 1000 − 1 = 999 = 3³ · 37; 1002 − 1 = 1001 = 7 · 11 · 13.
        assert_eq!(model_for(1002).unwrap(), (142, 7, 1002));
        let (_, _, len) = model_for(1_000_003).unwrap();
        assert!(len <= 1_000_003 && len > 999_990, "{len}");
        assert!(model_for(3).is_err());
    }
}
