//! `confide-participant`: the agent that takes part in federated rounds (`run`), its local privacy ledger
//! (`budget`), scoring a saved model (`evaluate`), stand-alone private training (`train`) and speed benchmarks.

mod cli;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cli::{CsvArgs, read_spec};
use confide_common::model::{decode_safetensors, spec_from_safetensors};
use confide_participant::agent::Agent;
use confide_participant::agent::config::{AgentConfig, RunArgs};
use confide_participant::agent::state;
use confide_participant::bench::bench_dpsgd;
use confide_participant::data::{Standardization, read_csv};
use confide_participant::model::{Network, features_tensor, labels_tensor};
use confide_runtime::{cancel_on_shutdown_signal, init_tracing};
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
    /// Privacy spent and remaining per dataset (enforced) and per study (informational), from the agent's ledger.
    Budget(cli::budget::BudgetArgs),
    /// Accuracy and mean cross-entropy loss of a saved model (safetensors with its spec) on a CSV file.
    Evaluate(EvaluateArgs),
    /// Train a model on a CSV file with DP-SGD and report test accuracy and ε per epoch.
    Train(cli::train::TrainArgs),
    /// Speed benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Standardisation statistics (mean, std per feature) of a CSV, as the JSON `--stats` reads. Compute them on
    /// public reference data: statistics of private records are not covered by any DP guarantee.
    Stats(StatsArgs),
    /// Print this site's identity-key fingerprint (created if the state directory has none yet), to compare with
    /// the coordinator's participants list and to give to peers for their `[security] accepted_peers`.
    Identity(IdentityArgs),
}

#[derive(Args)]
struct IdentityArgs {
    /// The agent's state directory.
    #[arg(long, env = "CONFIDE_STATE_DIR")]
    state_dir: PathBuf,
    /// Print {"fingerprint", "public_key" (base64)} as JSON.
    #[arg(long)]
    json: bool,
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

fn main() {
    let cli = Cli::parse();
    // Before any training thread starts: how freed memory is kept decides whether every step remaps its tensors.
    cli::memory::keep_freed_memory_for_reuse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Budget(args) => cli::budget::budget(args),
        Command::Evaluate(args) => evaluate(args),
        Command::Train(args) => cli::train::train(args),
        Command::Bench(BenchCommand::Dpsgd(args)) => bench(args),
        Command::Stats(args) => stats(args),
        Command::Identity(args) => identity(args),
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

fn identity(args: IdentityArgs) -> Result<()> {
    let key = match state::read_identity_key(&args.state_dir)? {
        Some(k) => k,
        // Through the state directory's lock, so that a running agent is not raced.
        None => state::StateDir::open(&args.state_dir)?.identity_key_or_create()?,
    };
    let public = key.public();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"fingerprint": public.fingerprint(), "public_key": public})
        );
    } else {
        println!("{}", public.fingerprint());
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let cfg = AgentConfig::resolve(&args)?;
    init_tracing(cfg.log_format);
    cli::runtime()?.block_on(async move {
        // Between steps: durable writes (ledger, identity) are never interrupted.
        let shutdown = cancel_on_shutdown_signal();
        match Agent::start(cfg, shutdown).await? {
            Some(agent) => agent.run().await?,
            None => tracing::info!("stopped before enrolment completed"),
        }
        Ok(())
    })
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
    let mut data = args.csv.read_for(&spec, &args.model)?;
    if !args.no_standardize {
        cli::standardize(args.stats.as_deref(), &mut [&mut data])?;
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
