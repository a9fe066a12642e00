//! `confide-participant train`: stand-alone DP-SGD on one CSV file, reporting test accuracy and ε per epoch.
//!
//! Also the engine's verification harness: `--initial-model` starts from given weights and `--noise-multiplier 0`
//! runs clipping without noise, so one step can be compared number for number with another DP-SGD
//! implementation (e.g. Opacus with the same q, C, divisor and weights).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use confide_common::model::{
    ModelSpec, decode_safetensors, encode_safetensors, spec_from_safetensors,
};
use confide_participant::data::{Dataset, read_csv};
use confide_participant::dp::{AccountantKind, GaussianNoise, PrivacyLedger, calibrate};
use confide_participant::dpsgd::{DpSgdParams, OptimizerConfig};
use confide_participant::train::{LocalTrainer, Mode, PrivacySpent};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{CsvArgs, read_spec};

#[derive(Clone, Copy, ValueEnum)]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    csv: CsvArgs,
    /// Model spec JSON file (see examples/models).
    #[arg(long)]
    model: PathBuf,
    /// Start from these weights (safetensors; if it carries a model spec, it must equal --model's) instead of
    /// the initialisation of --seed.
    #[arg(long)]
    initial_model: Option<PathBuf>,
    #[arg(long)]
    epochs: u64,
    /// Poisson sampling rate q: each record joins each batch independently with this probability.
    #[arg(long)]
    sampling_rate: f64,
    /// Per-example clip norm C.
    #[arg(long)]
    clip: f64,
    /// Noise multiplier σ (noise standard deviation σ·C). 0 means clipping only, with NO privacy guarantee
    /// (ε = ∞): for comparing steps with another DP-SGD implementation.
    #[arg(long, conflicts_with = "target_epsilon", required_unless_present_any = ["target_epsilon", "non_private"])]
    noise_multiplier: Option<f64>,
    /// Choose σ so that the whole run spends this ε (PLD accountant) at --delta.
    #[arg(long)]
    target_epsilon: Option<f64>,
    /// The public divisor B of each step's noisy clipped sum [default: q × the training records, which is
    /// Opacus's behaviour and treats the record count N as public: fine for a stand-alone run on your own data;
    /// the federated agent instead divides by the study's declared expected batch size, since N would show in
    /// the noise of its updates].
    #[arg(long, conflicts_with = "non_private")]
    expected_batch_size: Option<f64>,
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

#[derive(Serialize)]
struct EpochRow {
    epoch: u64,
    steps: u64,
    train_loss: f64,
    test_loss: f64,
    test_accuracy: f64,
    /// None when the run has no guarantee (ε = ∞).
    epsilon: Option<f64>,
}

/// What a run guarantees, spelled out in the JSON so that a missing ε is never read as 0.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Privacy {
    /// (ε, δ)-DP by DP-SGD.
    DifferentialPrivacy,
    /// No guarantee: ε = ∞ (clipping only, or the non-private baseline).
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum RunMode {
    DpSgd,
    /// σ = 0: per-example clipping and the DP-SGD divisor, no noise.
    ClippingOnly,
    NonPrivate,
}

#[derive(Serialize)]
struct TrainSummary {
    private: bool,
    privacy: Privacy,
    mode: RunMode,
    test_accuracy: f64,
    test_loss: f64,
    epsilon: Option<f64>,
    delta: f64,
    noise_multiplier: Option<f64>,
    sampling_rate: f64,
    clip: f64,
    /// The divisor B of each step's clipped sum (None for the non-private baseline, which takes plain means).
    expected_batch_size: Option<f64>,
    steps: u64,
    epochs: u64,
    train_records: usize,
    test_records: usize,
    num_parameters: usize,
    initial_model: Option<String>,
    history: Vec<EpochRow>,
    out: Option<String>,
}

/// The starting weights: `--initial-model` (checked against the spec) or the spec's initialisation.
fn initial_weights(spec: &ModelSpec, initial_model: Option<&Path>, seed: u64) -> Result<Vec<f32>> {
    let Some(path) = initial_model else {
        return Ok(spec.initial_parameters(seed));
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(file_spec) =
        spec_from_safetensors(&bytes).with_context(|| format!("{}", path.display()))?
        && file_spec != *spec
    {
        bail!(
            "{}: the model in the file ({}) is not the one of --model ({})",
            path.display(),
            serde_json::to_string(&file_spec)?,
            serde_json::to_string(spec)?
        );
    }
    decode_safetensors(spec, &bytes).with_context(|| format!("{}", path.display()))
}

/// How the run trains, from the flags.
fn mode(args: &TrainArgs, total_steps: u64, train_set: &Dataset) -> Result<Mode> {
    if args.non_private {
        return Ok(Mode::NonPrivate {
            sampling_rate: args.sampling_rate,
        });
    }
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
    if !(sigma.is_finite() && sigma >= 0.0) {
        bail!("--noise-multiplier must be a finite number ≥ 0 (use --non-private for a baseline)");
    }
    if !(args.clip.is_finite() && args.clip > 0.0) {
        bail!("--clip must be a finite number > 0");
    }
    if sigma == 0.0 {
        eprintln!(
            "warning: --noise-multiplier 0: per-example clipping WITHOUT noise. This run has NO privacy guarantee \
             (ε = ∞); use it only to compare steps with another DP-SGD implementation"
        );
    }
    // Opacus's divisor q·N by default: stand-alone, the record count of your own file is not a secret.
    let expected_batch_size = args
        .expected_batch_size
        .unwrap_or(args.sampling_rate * train_set.len() as f64);
    Ok(Mode::Private(DpSgdParams {
        sampling_rate: args.sampling_rate,
        clip_norm: args.clip,
        noise_multiplier: sigma,
        expected_batch_size,
    }))
}

pub fn train(args: TrainArgs) -> Result<()> {
    let spec = read_spec(&args.model)?;
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        bail!("--test-fraction must be in (0, 1)");
    }
    let initial = initial_weights(&spec, args.initial_model.as_deref(), args.seed)?;
    let csv_options = args.csv.options(spec.num_classes());
    let data = args.csv.read_for(&spec, &args.model)?;
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
        super::standardize(args.stats.as_deref(), &mut [&mut train_set, &mut test_set])?;
    }

    let steps_per_epoch = (1.0 / args.sampling_rate).round().max(1.0) as u64;
    let total_steps = steps_per_epoch * args.epochs;
    let mode = mode(&args, total_steps, &train_set)?;
    let optimizer = match args.optimizer {
        OptimizerKind::Sgd => OptimizerConfig::Sgd {
            learning_rate: args.learning_rate,
            momentum: args.momentum,
        },
        OptimizerKind::Adam => OptimizerConfig::adam(args.learning_rate),
    };
    let mut trainer = LocalTrainer::new(
        &spec,
        &initial,
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
    let (run_mode, dp) = match mode {
        Mode::Private(p) if p.noise_multiplier > 0.0 => (RunMode::DpSgd, Some(p)),
        Mode::Private(p) => (RunMode::ClippingOnly, Some(p)),
        Mode::NonPrivate { .. } => (RunMode::NonPrivate, None),
    };
    let summary = TrainSummary {
        private: run_mode == RunMode::DpSgd,
        privacy: if run_mode == RunMode::DpSgd {
            Privacy::DifferentialPrivacy
        } else {
            Privacy::None
        },
        mode: run_mode,
        test_accuracy,
        test_loss,
        epsilon,
        delta: args.delta,
        noise_multiplier: dp.map(|p| p.noise_multiplier),
        sampling_rate: args.sampling_rate,
        clip: args.clip,
        expected_batch_size: dp.map(|p| p.expected_batch_size),
        steps: trainer.steps_done(),
        epochs: args.epochs,
        train_records: train_set.len(),
        test_records: test_set.len(),
        num_parameters: spec.num_parameters(),
        initial_model: args.initial_model.as_ref().map(|p| p.display().to_string()),
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

/// ε so far by the one accountant path; `None` when the run has no guarantee (ε = ∞).
fn epsilon_of(trainer: &LocalTrainer, delta: f64) -> Result<Option<f64>> {
    match trainer.privacy_spent() {
        PrivacySpent::NoGuarantee => Ok(None),
        PrivacySpent::Events(events) => Ok(Some(
            PrivacyLedger { events }
                .epsilon(delta, AccountantKind::Pld)
                .context("computing ε")?,
        )),
    }
}

fn print_table(s: &TrainSummary) {
    let kind = match s.mode {
        RunMode::DpSgd => "DP-SGD",
        RunMode::ClippingOnly => "CLIPPING-ONLY (no noise, NO privacy)",
        RunMode::NonPrivate => "NON-PRIVATE",
    };
    println!(
        "{kind} training: {} train / {} test records, {} parameters, q = {}, C = {}, σ = {}, B = {}",
        s.train_records,
        s.test_records,
        s.num_parameters,
        s.sampling_rate,
        s.clip,
        s.noise_multiplier
            .map_or("-".to_string(), |v| format!("{v:.4}")),
        s.expected_batch_size
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
            r.epsilon.map_or("∞".to_string(), |e| format!("{e:.4}"))
        );
    }
    match s.mode {
        RunMode::DpSgd => println!("(ε at δ = {})", s.delta),
        RunMode::ClippingOnly => println!("no privacy guarantee (ε = ∞): clipped, but no noise"),
        RunMode::NonPrivate => {
            println!("no privacy guarantee (ε = ∞): trained without clipping or noise")
        }
    }
    if let Some(out) = &s.out {
        println!("model written to {out}");
    }
}
