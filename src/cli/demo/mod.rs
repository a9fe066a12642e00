//! `confide demo`: the whole system on one machine. A coordinator on an embedded SQLite file and a loopback port,
//! N participant agents as separate processes talking real HTTP, the bundled dataset split non-IID across them with
//! a held-out test set, R secure-aggregation rounds of DP-SGD, and the non-private centralised baseline beside it.
//!
//! The demo plays the operator (it creates the study, hands out enrolment tokens, starts rounds) and an evaluator
//! holding the public test set. It never sees a hospital's update: it scores the published global models only.
//!
//! One file per job: [`presets`] (datasets, the study, σ calibration), [`data`] (CSV, the non-IID split),
//! [`processes`] (binaries, children, one-shot commands), [`report`] (progress, table, JSON); this file runs the
//! demo from start to end.

mod data;
mod presets;
pub(crate) mod processes;
mod report;

pub(crate) use processes::terminate;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use confide_client::CoordinatorClient;
use confide_common::api::{
    CreateEnrolmentTokenRequest, RoundOutcome, RoundPurpose, StartRoundRequest,
};
use confide_common::dp::PrivacyEvent;
use confide_common::evaluation::{EvaluationRelease, EvaluationSchedule};
use confide_common::statistics::ReleaseParams;

use confide_client::TlsOptions;
use data::{Table, data_dir, split_non_iid};
pub use presets::DemoDataset;
use presets::{
    DemoPreprocessing, StudyShape, calibrate_sigma, evaluation_config, partitioned_study_epsilon,
    preset, study_request,
};
use processes::{Children, Tools, check_children, default_bin_dir, find_binary, start_coordinator};
use report::{DemoSummary, FederatedSummary, Report, RoundResult, stage_message, stage_position};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of hospitals (participant agents); at least 3, the fewest inputs a round may publish.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(3..=32))]
    participants: u32,
    /// Federated rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=200))]
    rounds: u32,
    #[arg(long, value_enum, default_value_t = DemoDataset::BreastCancer)]
    dataset: DemoDataset,
    /// How the hospitals scale their features: `ranges` (the study's public feature ranges, no central data) or
    /// `central-statistics` (mean and std of the evaluator's held-out set handed to every agent: a trusted centre
    /// holding data, kept to compare with).
    #[arg(long, value_enum, default_value_t = DemoPreprocessing::Ranges)]
    preprocessing: DemoPreprocessing,
    /// Begin with a statistics round: every hospital releases its clamped feature sums through opendp's Gaussian
    /// mechanism at this ε (inside secure aggregation), and training standardises with the derived mean and std.
    /// Each hospital's budget grows by what the release costs (the σ of training is unchanged). Needs
    /// `--preprocessing ranges`.
    #[arg(long)]
    statistics_epsilon: Option<f64>,
    /// Federated evaluation: each hospital holds out `--holdout-fraction` of its records (never trained on) and,
    /// after each training round (`every-round`) or after the last (`at-end`), releases correct predictions, count
    /// and clamped loss on them through opendp inside secure aggregation. `none`: no hold-out, no evaluation.
    #[arg(long, value_enum, default_value_t = DemoEvaluation::EveryRound)]
    evaluation: DemoEvaluation,
    /// Fraction of each hospital's records held out for federated evaluation.
    #[arg(long, default_value_t = 0.2)]
    holdout_fraction: f64,
    /// ε of all evaluation releases together on the held-out part (default: the training target ε). The parts
    /// are disjoint, so this composes in parallel with training: a hospital's ε is the larger of the two.
    #[arg(long)]
    evaluation_epsilon: Option<f64>,
    /// Privacy budget ε of every hospital over the whole study (the noise is calibrated to it, PLD accountant).
    /// Default: 1 for breast-cancer, 3 for digits.
    #[arg(long)]
    target_epsilon: Option<f64>,
    /// δ of every hospital's (ε, δ) guarantee.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Dirichlet concentration of the label skew across hospitals (smaller = more non-IID).
    #[arg(long, default_value_t = 1.0)]
    dirichlet_alpha: f64,
    /// Seed of the data split and the initial weights (noise is always seeded by the OS).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the coordinator database, the hospitals' data slices, state and logs go (default: a fresh temporary
    /// directory, removed at the end unless --keep).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (logs, database, models) after the demo.
    #[arg(long)]
    keep: bool,
    /// Folder with `confide-coordinator` and `confide-participant` (default: beside this executable).
    #[arg(long, env = "CONFIDE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Folder with the bundled datasets (default: the source tree's `data/`, then `./data`).
    #[arg(long, env = "CONFIDE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Use this running coordinator instead of starting one (e.g. to feed a Prometheus/Grafana stack).
    #[arg(long, env = "COORDINATOR_URL", requires = "operator_token")]
    coordinator_url: Option<String>,
    /// Operator token for --coordinator-url (`confide-coordinator token create`).
    #[arg(long, env = "CONFIDE_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// PEM CA certificate to trust for --coordinator-url's HTTPS (given to the agents too).
    #[arg(long, env = "CONFIDE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Allow an http:// --coordinator-url that is not on loopback.
    #[arg(long)]
    allow_insecure_http: bool,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    json: bool,
}

/// When the demo's study evaluates its models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoEvaluation {
    EveryRound,
    AtEnd,
    None,
}

impl DemoEvaluation {
    fn schedule(self) -> Option<EvaluationSchedule> {
        match self {
            Self::EveryRound => Some(EvaluationSchedule::EveryRound),
            Self::AtEnd => Some(EvaluationSchedule::AtEnd),
            Self::None => None,
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = confide_runtime::tokio_runtime().context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

/// The work directory: `--work-dir`, or a fresh temporary one (removed at the end unless `--keep`). The guard it
/// returns keeps a temporary directory alive.
fn work_dir(args: &DemoArgs) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(d) = &args.work_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        return Ok((d.clone(), None));
    }
    let temp = tempfile::Builder::new()
        .prefix("confide-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    Ok(if args.keep {
        (temp.keep(), None)
    } else {
        (temp.path().to_path_buf(), Some(temp))
    })
}

async fn demo(args: DemoArgs) -> Result<()> {
    let p = preset(args.dataset);
    let target_epsilon = args.target_epsilon.unwrap_or(p.default_epsilon);
    ensure!(
        target_epsilon.is_finite() && target_epsilon > 0.0,
        "--target-epsilon must be > 0"
    );
    if let Some(e) = args.statistics_epsilon {
        ensure!(
            e.is_finite() && e > 0.0,
            "--statistics-epsilon must be > 0 (a release at ε ≤ 0 cannot be differentially private)"
        );
        ensure!(
            args.preprocessing == DemoPreprocessing::Ranges,
            "--statistics-epsilon needs --preprocessing ranges (the release clamps each feature to its range)"
        );
    }
    if args.evaluation != DemoEvaluation::None {
        ensure!(
            args.holdout_fraction > 0.0 && args.holdout_fraction < 1.0,
            "--holdout-fraction must be strictly between 0 and 1 (0 leaves no evaluation records, 1 no training \
             records)"
        );
        if let Some(e) = args.evaluation_epsilon {
            ensure!(e.is_finite() && e > 0.0, "--evaluation-epsilon must be > 0");
        }
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => default_bin_dir()?,
    };
    let tools = Tools {
        coordinator: find_binary(&bin_dir, "confide-coordinator")?,
        participant: find_binary(&bin_dir, "confide-participant")?,
    };
    let (work, _temp) = work_dir(&args)?;
    let kept = args.keep || args.work_dir.is_some();
    let report = Report { json: args.json };

    // ---- data: held-out test set, non-IID hospital slices, one input scale ----
    let data_path = data_dir(args.data_dir.clone())?.join(p.file);
    let table = Table::read(&data_path, p.label)?;
    let n = args.participants as usize;
    let (test_idx, slices) = split_non_iid(&table.labels, n, args.dirichlet_alpha, 0.2, args.seed)?;
    let test_csv = work.join("test.csv");
    table.write(&test_csv, &test_idx)?;
    let pooled: Vec<usize> = slices.iter().flatten().copied().collect();
    let pooled_csv = work.join("pooled-train.csv");
    table.write(&pooled_csv, &pooled)?;
    for (h, idx) in slices.iter().enumerate() {
        table.write(&work.join(format!("hospital-{}.csv", h + 1)), idx)?;
    }
    // A federated model needs one input scale. By default it is the study's public feature ranges: the agents get
    // them with every round task, and the evaluator scales its test set the same way (the file below). With
    // `central-statistics` it is the mean and std of the evaluator's held-out set, handed to every agent.
    let stats_path = work.join("standardization.json");
    let agent_stats = match args.preprocessing {
        DemoPreprocessing::Ranges => {
            let scaling = p.preprocessing.range_scaling();
            let json = serde_json::json!({
                "feature_names": scaling.feature_names,
                "mean": scaling.center,
                "std": scaling.scale,
            });
            std::fs::write(&stats_path, serde_json::to_vec_pretty(&json)?)
                .context("writing the range scaling")?;
            None
        }
        DemoPreprocessing::CentralStatistics => {
            tools.write_stats(&test_csv, p.label, &stats_path)?;
            Some(stats_path.as_path())
        }
    };
    let model_path = work.join("model.json");
    std::fs::write(&model_path, p.model_spec).context("writing the model spec")?;

    let steps_per_round = p.steps_per_round();
    let slice_len = slices.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let sigma = calibrate_sigma(
        target_epsilon,
        args.delta,
        p.sampling_rate,
        steps_per_round,
        args.rounds,
    )?;
    report.say(format!(
        "Confide demo: {} hospitals ({} records each, label skew Dirichlet({})), {} held-out test records, {} rounds",
        n,
        slices
            .iter()
            .map(|s| s.len().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        args.dirichlet_alpha,
        test_idx.len(),
        args.rounds
    ));
    report.say(format!(
        "DP-SGD per hospital: q = {}, {} steps per round, clip C = {}, σ = {sigma:.3} → ε ≤ {target_epsilon} at δ = {} \
         over the study (PLD); secure aggregation over all hospitals",
        p.sampling_rate, steps_per_round, p.clip_norm, args.delta
    ));
    report.say(format!(
        "preprocessing: {}",
        match args.preprocessing {
            DemoPreprocessing::Ranges =>
                "the study's public feature ranges, each mapped onto [-1, 1] (no central data)",
            DemoPreprocessing::CentralStatistics =>
                "mean and std of the evaluator's held-out set, given to every hospital",
        }
    ));
    report.say(format!("work directory: {}", work.display()));

    // ---- the centralised, non-private baseline (what the hospitals could reach by pooling their records) ----
    let baseline = tools.baseline_accuracy(
        &pooled_csv,
        &test_csv,
        &model_path,
        &p,
        &stats_path,
        args.seed,
    )?;

    // ---- coordinator ----
    let mut children = Children::new();
    let (url, operator_token, tls) = match (&args.coordinator_url, &args.operator_token) {
        (Some(url), Some(token)) => {
            let tls = TlsOptions {
                ca_cert: args.ca_cert.clone(),
                allow_insecure_http: args.allow_insecure_http,
                ..TlsOptions::default()
            };
            (url.trim_end_matches('/').to_string(), token.clone(), tls)
        }
        // Our own coordinator: HTTPS with a fresh CA, and participant routes need the CA's client certificate.
        _ => start_coordinator(&tools, &work, &mut children, true)?,
    };
    let op = CoordinatorClient::connect(&url, &operator_token, &tls)?;

    // ---- study ----
    let shape = StudyShape {
        name: format!(
            "demo-{}-{}",
            args.dataset.name(),
            confide_runtime::now_ms() / 1000
        ),
        seed: args.seed,
        noise_multiplier: sigma,
        // The hospitals train on what they do not hold out.
        expected_batch_size: (p.sampling_rate
            * slice_len as f64
            * match args.evaluation {
                DemoEvaluation::None => 1.0,
                _ => 1.0 - args.holdout_fraction,
            })
        .max(1.0),
        target_epsilon,
        delta: args.delta,
        rounds: args.rounds + u32::from(args.statistics_epsilon.is_some()),
        hospitals: args.participants,
        statistics_epsilon: args.statistics_epsilon,
        evaluation: None,
    };
    // The budget every hospital gets: the calibrated training rounds, plus the statistics release if any.
    let release = match args.statistics_epsilon {
        Some(e) => Some(
            ReleaseParams::for_target(p.preprocessing.feature_ranges.len(), e, args.delta)
                .context("the statistics release")?,
        ),
        None => None,
    };
    // Evaluation: E releases on the held-out part whose ε together is the evaluation ε (default: the training
    // target), composed in parallel with training.
    let evaluations = args
        .evaluation
        .schedule()
        .map(|s| s.evaluations(args.rounds))
        .unwrap_or(0);
    let evaluation = match args.evaluation.schedule() {
        Some(schedule) => Some(evaluation_config(
            args.evaluation_epsilon.unwrap_or(target_epsilon),
            args.delta,
            evaluations,
            args.holdout_fraction,
            schedule,
            args.seed,
        )?),
        None => None,
    };
    let evaluation_event = match &evaluation {
        Some(c) => Some(
            EvaluationRelease::for_config(c, args.delta)
                .context("the evaluation release")?
                .event(),
        ),
        None => None,
    };
    let budget_epsilon = if release.is_some() || evaluation.is_some() {
        partitioned_study_epsilon(
            PrivacyEvent::SubsampledGaussian {
                sampling_rate: p.sampling_rate,
                noise_multiplier: sigma,
                steps: steps_per_round,
            },
            args.rounds,
            release.map(|r| r.event()),
            evaluation_event.map(|e| (e, evaluations)),
            args.delta,
        )? + 1e-9
    } else {
        target_epsilon
    };
    let shape = StudyShape {
        target_epsilon: budget_epsilon,
        evaluation,
        ..shape
    };
    let study = op
        .create_study(&study_request(&p, &shape)?)
        .await
        .context("creating the study")?;

    // ---- hospitals ----
    for h in 1..=n {
        let name = format!("hospital-{h}");
        let token = op
            .create_enrolment_token(
                study.id,
                &CreateEnrolmentTokenRequest {
                    label: name.clone(),
                    expires_in_secs: Some(3600),
                },
            )
            .await
            .context("creating an enrolment token")?;
        let agent = processes::Agent {
            coordinator_url: &url,
            tls: &tls,
            // The hospital's records: its privacy budget belongs to them, whatever study they serve.
            dataset_id: format!("{name}-{}", args.dataset.name()),
            name: &name,
            label: p.label,
            stats: agent_stats,
            epsilon: budget_epsilon,
            delta: args.delta,
            enrolment_token: &token.token,
            // Every other hospital of the demo (the agent's default, 3, would refuse a demo of 3 hospitals).
            min_cohort: (args.participants - 1).clamp(2, 3),
        };
        let child = tools.spawn_agent(&agent, &work)?;
        children.push(name, child);
    }
    let enrol_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let enrolled = op.list_participants(study.id).await?.len();
        if enrolled >= n {
            break;
        }
        check_children(&mut children, &work)?;
        ensure!(
            Instant::now() < enrol_deadline,
            "only {enrolled} of {n} agents enrolled within 60 s (see the hospital-*.log files in {})",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // ---- rounds ----
    let mut results = Vec::new();
    let mut last_accuracy = None;
    let mut statistics = None;
    report.table_header();
    // Training rounds (and the statistics round), each evaluation round after the version it evaluates.
    for r in 1..=shape.rounds + evaluations {
        let started = Instant::now();
        let bar = report.round_bar(r);
        let round = op
            .start_round(study.id, &StartRoundRequest::default())
            .await
            .with_context(|| format!("starting round {r}"))?;
        let (finished, outcome) = loop {
            let info = op.get_round(round.id).await?;
            bar.set_position(stage_position(&info));
            bar.set_message(stage_message(&info));
            if let Some(outcome) = info.outcome {
                break (info, outcome);
            }
            check_children(&mut children, &work)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        bar.finish_and_clear();
        let privacy = op.privacy_report(study.id).await?;
        let mut row = RoundResult::new(r, &finished, outcome);
        row.epsilon_max = privacy
            .participants
            .iter()
            .map(|x| x.epsilon_spent)
            .fold(0.0, f64::max);
        if outcome == RoundOutcome::Completed && finished.purpose == RoundPurpose::Statistics {
            // The derived DP statistics: the agents standardise with them from now on, and so does the evaluator.
            let published = op
                .list_model_versions(study.id)
                .await?
                .into_iter()
                .filter(|v| v.round_id == Some(finished.id))
                .find_map(|v| v.statistics)
                .context("a completed statistics round published no statistics")?;
            let json = serde_json::json!({
                "feature_names": published.scaling.feature_names,
                "mean": published.scaling.center,
                "std": published.scaling.scale,
            });
            std::fs::write(&stats_path, serde_json::to_vec_pretty(&json)?)
                .context("writing the published statistics")?;
            statistics = Some(published);
        } else if outcome == RoundOutcome::Completed && finished.purpose == RoundPurpose::Evaluation
        {
            // The federated, DP accuracy of the evaluated version: beside the evaluator's on its training row.
            let metrics = op.study_metrics(study.id).await?;
            let m = metrics
                .evaluations
                .iter()
                .find(|m| m.round_id == finished.id)
                .context("a completed evaluation round stored no metrics")?;
            row.model_version = Some(m.model_version);
            row.federated_accuracy = Some(m.accuracy);
            row.federated_accuracy_std = Some(m.accuracy_std);
            row.federated_loss = Some(m.loss);
            row.evaluation_records = Some(m.evaluation_records);
            if let Some(trained) = results
                .iter_mut()
                .find(|t: &&mut RoundResult| t.model_version == Some(m.model_version))
            {
                trained.federated_accuracy = Some(m.accuracy);
                trained.federated_accuracy_std = Some(m.accuracy_std);
                row.test_accuracy = trained.test_accuracy;
            }
        } else if outcome == RoundOutcome::Completed {
            let versions = op.list_model_versions(study.id).await?;
            let latest = versions
                .iter()
                .filter(|v| v.round_id == Some(finished.id))
                .map(|v| v.version)
                .max()
                .context("a completed round published no model version")?;
            let download = op.download_model_version(study.id, latest).await?;
            let path = work.join(format!("model-v{latest}.safetensors"));
            std::fs::write(&path, &download.bytes)?;
            let acc = tools.evaluate(&path, &test_csv, p.label, &stats_path)?;
            last_accuracy = Some(acc);
            row.test_accuracy = Some(acc);
            row.model_version = Some(latest);
        }
        row.seconds = started.elapsed().as_secs_f64();
        report.round_line(&row);
        results.push(row);
    }
    children.stop_all();

    let completed = results
        .iter()
        .filter(|r| r.outcome == RoundOutcome::Completed && r.purpose != RoundPurpose::Evaluation)
        .count() as u32;
    // The last evaluated version's federated accuracy, against the evaluator's on the same version.
    let last_evaluated = results
        .iter()
        .rev()
        .find(|r| r.purpose == RoundPurpose::Evaluation && r.federated_accuracy.is_some());
    let federated = last_evaluated.map(|r| FederatedSummary {
        model_version: r.model_version.unwrap_or_default(),
        federated_accuracy: r.federated_accuracy.unwrap_or_default(),
        federated_accuracy_std: r.federated_accuracy_std.unwrap_or_default(),
        test_accuracy: r.test_accuracy,
        within_two_std_plus_0_05: r.test_accuracy.map(|t| {
            (r.federated_accuracy.unwrap_or_default() - t).abs()
                <= 2.0 * r.federated_accuracy_std.unwrap_or_default() + 0.05
        }),
    });
    let summary = DemoSummary {
        dataset: args.dataset.name(),
        preprocessing: args.preprocessing.name(),
        statistics,
        evaluation: shape.evaluation,
        federated,
        epsilon_budget: budget_epsilon,
        participants: args.participants,
        rounds_requested: args.rounds,
        rounds_completed: completed,
        test_accuracy: last_accuracy,
        baseline_accuracy: baseline,
        epsilon_max: results.iter().map(|r| r.epsilon_max).fold(0.0, f64::max),
        epsilon_target: target_epsilon,
        delta: args.delta,
        noise_multiplier: sigma,
        records_per_hospital: slices.iter().map(Vec::len).collect(),
        test_records: test_idx.len(),
        rounds: results,
        work_dir: kept.then(|| work.display().to_string()),
    };
    report.finish(&summary)?;
    if completed == 0 {
        bail!("no round completed (see the logs in {})", work.display());
    }
    Ok(())
}
