//! `confide-participant`: the agent that takes part in federated rounds (`run`), its local privacy ledger
//! (`budget`), scoring a saved model (`evaluate`), stand-alone private training (`train`) and speed benchmarks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use confide_common::model::{
    ModelSpec, decode_safetensors, encode_safetensors, spec_from_safetensors,
};
use confide_participant::agent::config::{AgentConfig, LogFormat, RunArgs};
use confide_participant::agent::ledger::{LEDGER_FILE, LocalLedger, StudySpend};
use confide_participant::agent::{Agent, state};
use confide_participant::bench::bench_dpsgd;
use confide_participant::data::{CsvOptions, Standardization, read_csv};
use confide_participant::dp::{AccountantKind, GaussianNoise, PrivacyLedger, calibrate};
use confide_participant::dpsgd::{DpSgdParams, OptimizerConfig};
use confide_participant::model::{Network, features_tensor, labels_tensor};
use confide_participant::train::{LocalTrainer, Mode};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "confide-participant",
    version,
    about = "Confide participant: differentially private training on local records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the participant agent: enrol once, then take part in the study's rounds until stopped (SIGTERM/SIGINT).
    /// Every option is a flag, an environment variable and (except the token) a key of the --config file.
    Run(RunArgs),
    /// Privacy spent and remaining per study, from the agent's local ledger.
    Budget(BudgetArgs),
    /// Accuracy and mean cross-entropy loss of a saved model (safetensors with its spec) on a CSV file.
    Evaluate(EvaluateArgs),
    /// Train a model on a CSV file with DP-SGD and report test accuracy and ε per epoch.
    Train(TrainArgs),
    /// Speed benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Standardisation statistics (mean, std per feature) of a CSV, as the JSON `--stats` reads. Compute them on
    /// public reference data: statistics of private records are not covered by any DP guarantee.
    Stats(StatsArgs),
}

/// The CSV columns every data command reads.
#[derive(Args)]
struct CsvArgs {
    /// CSV file with a header line.
    #[arg(long)]
    data: PathBuf,
    /// Name of the label column (integer classes 0..num_classes).
    #[arg(long)]
    label: String,
    /// Feature columns, comma-separated (default: every column but the label).
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
}

impl CsvArgs {
    fn options(&self, num_classes: usize) -> CsvOptions {
        CsvOptions {
            label: self.label.clone(),
            features: self.features.clone(),
            num_classes,
        }
    }
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    csv: CsvArgs,
    /// Write the JSON here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Plain SGD vs DP-SGD steps per second for a model, on synthetic data, in one run.
    Dpsgd(BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerKind {
    Sgd,
    Adam,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    csv: CsvArgs,
    /// Model spec JSON file (see examples/models).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    epochs: u64,
    /// Poisson sampling rate q: each record joins each batch independently with this probability.
    #[arg(long)]
    sampling_rate: f64,
    /// Per-example clip norm C.
    #[arg(long)]
    clip: f64,
    /// Noise multiplier σ (noise standard deviation σ·C).
    #[arg(long, conflicts_with = "target_epsilon", required_unless_present_any = ["target_epsilon", "non_private"])]
    noise_multiplier: Option<f64>,
    /// Choose σ so that the whole run spends this ε (PLD accountant) at --delta.
    #[arg(long)]
    target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Seed for the train/test split and the initial weights (noise and batch sampling are always
    /// seeded from the OS).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    optimizer: OptimizerKind,
    #[arg(long, default_value_t = 0.5)]
    learning_rate: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Fraction of the records held out for testing.
    #[arg(long, default_value_t = 0.2, conflicts_with = "test_data")]
    test_fraction: f64,
    /// A separate CSV (same columns) to test on; then every record of --data is used for training.
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// Standardisation statistics JSON ({feature_names, mean, std}); default: computed from the
    /// training split (those statistics are not covered by the DP guarantee).
    #[arg(long, conflicts_with = "no_standardize")]
    stats: Option<PathBuf>,
    /// Use the features as they are.
    #[arg(long)]
    no_standardize: bool,
    /// Write the trained parameters here (safetensors, spec in the metadata).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    json: bool,
    /// Train WITHOUT differential privacy (no clipping, no noise): a baseline to compare with.
    #[arg(long)]
    non_private: bool,
}

#[derive(Args)]
struct BudgetArgs {
    /// The agent's state directory.
    #[arg(long, env = "CONFIDE_STATE_DIR", required_unless_present = "config")]
    state_dir: Option<PathBuf>,
    /// Take the state directory from the agent's config file instead.
    #[arg(long, env = "CONFIDE_CONFIG")]
    config: Option<PathBuf>,
    /// Print a JSON array of {study_id, epsilon_spent, epsilon_budget, delta, epsilon_remaining, rounds_charged}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvaluateArgs {
    /// Model file (safetensors written by Confide: the model spec is in its metadata).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    csv: CsvArgs,
    /// Standardisation statistics JSON ({feature_names, mean, std}); use the ones the model was trained with.
    /// Default: statistics of the evaluated file itself.
    #[arg(long, conflicts_with = "no_standardize")]
    stats: Option<PathBuf>,
    /// Use the features as they are.
    #[arg(long)]
    no_standardize: bool,
    /// Print {"accuracy": .., "loss": .., "records": ..}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Model spec JSON file.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Measured steps of each kind.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EpochRow {
    epoch: u64,
    steps: u64,
    train_loss: f64,
    test_loss: f64,
    test_accuracy: f64,
    epsilon: Option<f64>,
}

#[derive(Serialize)]
struct TrainSummary {
    private: bool,
    test_accuracy: f64,
    test_loss: f64,
    epsilon: Option<f64>,
    delta: f64,
    noise_multiplier: Option<f64>,
    sampling_rate: f64,
    clip: f64,
    steps: u64,
    epochs: u64,
    train_records: usize,
    test_records: usize,
    num_parameters: usize,
    history: Vec<EpochRow>,
    out: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Budget(args) => budget(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Train(args) => train(args),
        Command::Bench(BenchCommand::Dpsgd(args)) => bench(args),
        Command::Stats(args) => stats(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn stats(args: StatsArgs) -> Result<()> {
    let data = read_csv(
        &args.csv.data,
        // Only the features matter here; any integer label is accepted.
        &args.csv.options(usize::MAX),
    )?;
    let json = serde_json::to_string_pretty(&Standardization::compute(&data))?;
    match &args.out {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
async fn watch_signals(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down after the current step");
    token.cancel();
}

fn run(args: RunArgs) -> Result<()> {
    let cfg = AgentConfig::resolve(&args)?;
    init_tracing(cfg.log_format);
    runtime()?.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        match Agent::start(cfg, shutdown).await? {
            Some(agent) => agent.run().await?,
            None => tracing::info!("stopped before enrolment completed"),
        }
        Ok(())
    })
}

fn budget(args: BudgetArgs) -> Result<()> {
    let dir = match (&args.state_dir, &args.config) {
        (Some(d), _) => d.clone(),
        (None, Some(config)) => {
            let text = std::fs::read_to_string(config)
                .with_context(|| format!("reading {}", config.display()))?;
            let file = confide_participant::agent::config::parse_file(
                &config.display().to_string(),
                &text,
            )?;
            match file.state_dir {
                Some(d) if d.is_relative() => config
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
                    .join(d),
                Some(d) => d,
                None => bail!("{}: no state_dir", config.display()),
            }
        }
        (None, None) => bail!("give --state-dir or --config"),
    };
    let spends: Vec<StudySpend> = runtime()?.block_on(async {
        match LocalLedger::open_existing(&dir.join(LEDGER_FILE)).await? {
            Some(ledger) => {
                let s = ledger.summary().await;
                ledger.close().await;
                s.map_err(anyhow::Error::from)
            }
            None => Ok(Vec::new()),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&spends)?);
        return Ok(());
    }
    if let Some(id) = state::read_identity(&dir)? {
        println!(
            "participant {} ({}) of study {} at {}",
            id.participant_id, id.name, id.study_id, id.coordinator_url
        );
    }
    if spends.is_empty() {
        println!(
            "no privacy spent yet (no ledger entries in {})",
            dir.display()
        );
        return Ok(());
    }
    println!(
        "{:>6} {:>7} {:>10} {:>10} {:>12} {:>9}",
        "study", "rounds", "ε spent", "ε budget", "ε remaining", "δ"
    );
    for s in &spends {
        println!(
            "{:>6} {:>7} {:>10.4} {:>10.4} {:>12.4} {:>9.1e}",
            s.study_id,
            s.rounds_charged,
            s.epsilon_spent,
            s.epsilon_budget,
            s.epsilon_remaining,
            s.delta
        );
    }
    println!("(ε by the PLD accountant; a round is charged when its masked input is sent)");
    Ok(())
}

#[derive(Serialize)]
struct Evaluation {
    accuracy: f64,
    loss: f64,
    records: usize,
}

fn evaluate(args: EvaluateArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let spec = spec_from_safetensors(&bytes)
        .with_context(|| format!("{}", args.model.display()))?
        .with_context(|| {
            format!(
                "{}: no model spec in the safetensors metadata (not written by Confide?)",
                args.model.display()
            )
        })?;
    let params =
        decode_safetensors(&spec, &bytes).with_context(|| format!("{}", args.model.display()))?;
    let mut data = read_csv(&args.csv.data, &args.csv.options(spec.num_classes()))?;
    if data.num_features() != spec.input_dim() {
        bail!(
            "{}: {} feature columns selected, the model {} expects {}",
            args.csv.data.display(),
            data.num_features(),
            args.model.display(),
            spec.input_dim()
        );
    }
    if !args.no_standardize {
        let stats = match &args.stats {
            Some(path) => Standardization::read(path)?,
            None => Standardization::compute(&data),
        };
        stats.check(&data)?;
        stats.apply(&mut data);
    }
    let net = Network::new(&spec, &params)?;
    let (accuracy, loss) = net.evaluate(
        &features_tensor(&data.features, data.num_features()),
        &labels_tensor(&data.labels),
    );
    let result = Evaluation {
        accuracy,
        loss,
        records: data.len(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "accuracy {:.4}, mean loss {:.4} on {} records",
            result.accuracy, result.loss, result.records
        );
    }
    Ok(())
}

fn read_spec(path: &Path) -> Result<ModelSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading model spec {}", path.display()))?;
    ModelSpec::from_json(&text).with_context(|| format!("model spec {}", path.display()))
}

fn train(args: TrainArgs) -> Result<()> {
    let spec = read_spec(&args.model)?;
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        bail!("--test-fraction must be in (0, 1)");
    }
    let csv_options = args.csv.options(spec.num_classes());
    let data = read_csv(&args.csv.data, &csv_options)?;
    if data.num_features() != spec.input_dim() {
        bail!(
            "{}: {} feature columns selected, the model {} expects {}",
            args.csv.data.display(),
            data.num_features(),
            args.model.display(),
            spec.input_dim()
        );
    }
    let (mut train_set, mut test_set) = match &args.test_data {
        Some(path) => {
            let test = read_csv(path, &csv_options)?;
            if test.feature_names != data.feature_names {
                bail!(
                    "{}: feature columns differ from those of {}",
                    path.display(),
                    args.csv.data.display()
                );
            }
            (data, test)
        }
        None => data.split(args.test_fraction, args.seed),
    };
    if !args.no_standardize {
        let stats = match &args.stats {
            Some(path) => Standardization::read(path)?,
            None => Standardization::compute(&train_set),
        };
        stats.check(&train_set)?;
        stats.apply(&mut train_set);
        stats.apply(&mut test_set);
    }

    let steps_per_epoch = (1.0 / args.sampling_rate).round().max(1.0) as u64;
    let total_steps = steps_per_epoch * args.epochs;
    let mode = if args.non_private {
        Mode::NonPrivate {
            sampling_rate: args.sampling_rate,
        }
    } else {
        let sigma = match (args.noise_multiplier, args.target_epsilon) {
            (Some(s), _) => s,
            (None, Some(eps)) => calibrate::noise_multiplier_for_target(
                eps,
                args.delta,
                args.sampling_rate,
                total_steps,
                AccountantKind::Pld,
            )
            .context("calibrating the noise multiplier")?,
            (None, None) => bail!("give --noise-multiplier or --target-epsilon"),
        };
        if sigma.is_nan() || sigma <= 0.0 {
            bail!(
                "--noise-multiplier must be > 0 for a private run (use --non-private for a baseline)"
            );
        }
        Mode::Private(DpSgdParams {
            sampling_rate: args.sampling_rate,
            clip_norm: args.clip,
            noise_multiplier: sigma,
        })
    };
    let optimizer = match args.optimizer {
        OptimizerKind::Sgd => OptimizerConfig::Sgd {
            learning_rate: args.learning_rate,
            momentum: args.momentum,
        },
        OptimizerKind::Adam => OptimizerConfig::adam(args.learning_rate),
    };
    let mut trainer = LocalTrainer::new(
        &spec,
        &spec.initial_parameters(args.seed),
        &train_set,
        mode,
        optimizer,
        GaussianNoise::from_os_entropy()?,
        None,
    )?;

    let mut history = Vec::new();
    let style =
        ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} steps, loss {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    for epoch in 1..=args.epochs {
        let bar = ProgressBar::new(steps_per_epoch).with_style(style.clone());
        bar.set_message(format!("{epoch}/{}", args.epochs));
        let mut loss_sum = 0.0;
        let mut records = 0usize;
        for _ in 0..steps_per_epoch {
            let s = trainer.step();
            loss_sum += s.mean_loss * s.batch_size as f64;
            records += s.batch_size;
            bar.set_prefix(format!("{:.4}", loss_sum / records.max(1) as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (test_accuracy, test_loss) = trainer.evaluate(&test_set);
        let epsilon = epsilon_of(&trainer, args.delta)?;
        history.push(EpochRow {
            epoch,
            steps: trainer.steps_done(),
            train_loss: loss_sum / records.max(1) as f64,
            test_loss,
            test_accuracy,
            epsilon,
        });
    }

    let params = trainer.parameters();
    if let Some(out) = &args.out {
        let bytes = encode_safetensors(&spec, &params)?;
        std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    let last = history
        .last()
        .map(|r| (r.test_accuracy, r.test_loss, r.epsilon));
    let (test_accuracy, test_loss, epsilon) = last.unwrap_or((0.0, 0.0, None));
    let summary = TrainSummary {
        private: !args.non_private,
        test_accuracy,
        test_loss,
        epsilon,
        delta: args.delta,
        noise_multiplier: match mode {
            Mode::Private(p) => Some(p.noise_multiplier),
            Mode::NonPrivate { .. } => None,
        },
        sampling_rate: args.sampling_rate,
        clip: args.clip,
        steps: trainer.steps_done(),
        epochs: args.epochs,
        train_records: train_set.len(),
        test_records: test_set.len(),
        num_parameters: spec.num_parameters(),
        history,
        out: args.out.as_ref().map(|p| p.display().to_string()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_table(&summary);
    }
    Ok(())
}

fn epsilon_of(trainer: &LocalTrainer, delta: f64) -> Result<Option<f64>> {
    let events = trainer.privacy_events();
    if events.is_empty() {
        return Ok(None);
    }
    let ledger = PrivacyLedger { events };
    Ok(Some(
        ledger
            .epsilon(delta, AccountantKind::Pld)
            .context("computing ε")?,
    ))
}

fn print_table(s: &TrainSummary) {
    println!(
        "{} training: {} train / {} test records, {} parameters, q = {}, C = {}, σ = {}",
        if s.private { "DP-SGD" } else { "NON-PRIVATE" },
        s.train_records,
        s.test_records,
        s.num_parameters,
        s.sampling_rate,
        s.clip,
        s.noise_multiplier
            .map_or("-".to_string(), |v| format!("{v:.4}"))
    );
    println!(
        "{:>5} {:>7} {:>11} {:>10} {:>13} {:>10}",
        "epoch", "steps", "train loss", "test loss", "test accuracy", "ε (PLD)"
    );
    for r in &s.history {
        println!(
            "{:>5} {:>7} {:>11.4} {:>10.4} {:>13.4} {:>10}",
            r.epoch,
            r.steps,
            r.train_loss,
            r.test_loss,
            r.test_accuracy,
            r.epsilon.map_or("-".to_string(), |e| format!("{e:.4}"))
        );
    }
    if s.private {
        println!("(ε at δ = {})", s.delta);
    } else {
        println!("no privacy guarantee: trained without clipping or noise");
    }
    if let Some(out) = &s.out {
        println!("model written to {out}");
    }
}

fn bench(args: BenchArgs) -> Result<()> {
    let spec = read_spec(&args.model)?;
    let report = bench_dpsgd(&spec, args.batch_size, args.steps, args.warmup)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} parameters, batch {}, {} steps, {} torch threads\nplain: {:.2} steps/s\nDP-SGD: {:.2} steps/s\nratio (DP time / plain time): {:.3}\nnoise: {:.2} ms per step",
            report.num_parameters,
            report.batch_size,
            report.steps,
            report.torch_threads,
            report.plain_steps_per_second,
            report.dp_steps_per_second,
            report.ratio,
            report.noise_ms_per_step
        );
    }
    Ok(())
}
