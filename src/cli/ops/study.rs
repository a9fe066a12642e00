//! `confide study create|list|show|template|run|stop`: studies from a TOML or JSON file with defaults for
//! everything but the name, the model and the budget; `run` and `stop` are in [`super::study_run`].

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use confide_common::api::{
    BudgetParams, CreateStudyRequest, DEFAULT_CORRUPT_FRACTION, DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_WEIGHT, DEFAULT_THREAT_MODEL, DpParams, GraphParams, LocalTraining,
    QuantisationConfig, RunStudyRequest, SecAggConfig, ServerOptimizer, StageDeadlines, StudyInfo,
};
use confide_common::preprocessing::Preprocessing;
use confide_common::secagg::ThreatModel;
use serde::Deserialize;

use super::{
    Ops, OpsArgs, OpsError, OpsResult, connect, fields, print_json, study_run, table, time,
};

#[derive(Subcommand, Debug)]
pub enum StudyCommand {
    /// Create a study from a TOML or JSON file (by extension); `confide study template` prints one to start from.
    Create {
        /// The study file (.toml or .json).
        #[arg(long)]
        file: PathBuf,
    },
    /// List the studies.
    List,
    /// Show one study: its configuration, progress and warnings.
    Show {
        /// The study's id.
        study: i64,
    },
    /// Print a commented study file that `confide study create` accepts as it is.
    Template,
    /// Let the coordinator run the study's remaining rounds back to back (the next starts when one ends), until
    /// every round completed or the budget allows no further round; with --wait, follow it (exit 8 if it failed).
    Run {
        /// The study's id.
        study: i64,
        /// Seconds to wait after a round ends before starting the next.
        #[arg(long, default_value_t = 0)]
        pause_secs: u64,
        /// How many times in a row an aborted round is started again before the run gives up.
        #[arg(long, default_value_t = DEFAULT_MAX_RETRIES)]
        max_retries: u32,
        /// Follow the run: a progress bar per round, then the run's rounds.
        #[arg(long)]
        wait: bool,
    },
    /// Stop the study's run: no further round is started (a round in progress finishes).
    Stop {
        /// The study's id.
        study: i64,
        /// Why (kept with the run).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct StudyArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(subcommand)]
    pub cmd: StudyCommand,
}

/// A commented study file: every key with its default, the three required ones filled in.
pub const TEMPLATE: &str = include_str!("study_template.toml");

/// A study file: what an operator writes. Everything but `name`, the model and `budget.epsilon` has a default;
/// it becomes the API's [`CreateStudyRequest`] (key names are the API's, so the coordinator's refusals, which name
/// the field, point into this file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    pub name: String,
    /// A model spec file (JSON, as in examples/models/), relative to the study file.
    #[serde(default)]
    pub model_file: Option<PathBuf>,
    /// Or the model spec inline.
    #[serde(default)]
    pub model_spec: Option<serde_json::Value>,
    #[serde(default)]
    pub initial_weights_seed: u64,
    pub budget: BudgetFile,
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    #[serde(default = "default_min_participants")]
    pub min_participants: u32,
    #[serde(default)]
    pub dp: DpFile,
    #[serde(default)]
    pub secagg: SecAggFile,
    #[serde(default)]
    pub deadlines: StageDeadlines,
    #[serde(default)]
    pub server_optimizer: ServerOptimizer,
    #[serde(default)]
    pub local_training: LocalTraining,
    /// `[schedule]`: `kind = "automatic"` (with `pause_secs`, `max_retries`) starts the study's run right after it
    /// is created, as `confide study run` would; `manual` (the default) leaves starting rounds to the operator.
    #[serde(default)]
    pub schedule: Option<ScheduleFile>,
    /// `[preprocessing]`: public per-feature ranges (`feature_ranges = [{ name, min, max }, …]`, in the model's
    /// input order) and an optional `statistics_round = { epsilon, max_records_per_site }`.
    #[serde(default)]
    pub preprocessing: Option<Preprocessing>,
}

/// A study file's `[schedule]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleFile {
    Manual,
    Automatic {
        #[serde(default)]
        pause_secs: u64,
        #[serde(default = "default_max_retries")]
        max_retries: u32,
    },
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    pub epsilon: f64,
    #[serde(default = "default_delta")]
    pub delta: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpFile {
    #[serde(default = "default_sampling_rate")]
    pub sampling_rate: f64,
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Instead of `noise_multiplier`: the ε all rounds may spend (the coordinator calibrates σ). With neither,
    /// the target is the budget's ε.
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    #[serde(default = "default_local_epochs")]
    pub local_epochs: u32,
    #[serde(default = "default_clip_norm")]
    pub clip_norm: f64,
    #[serde(default = "default_expected_batch_size")]
    pub expected_batch_size: f64,
}

impl Default for DpFile {
    fn default() -> Self {
        Self {
            sampling_rate: default_sampling_rate(),
            noise_multiplier: None,
            target_epsilon: None,
            local_epochs: default_local_epochs(),
            clip_norm: default_clip_norm(),
            expected_batch_size: default_expected_batch_size(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecAggFile {
    /// `malicious` (default) or `semi_honest`: the coordinator the rounds must withstand.
    #[serde(default = "default_threat_model")]
    pub threat_model: ThreatModel,
    /// Malicious rounds: the fraction of selected sites that may collude with the coordinator.
    #[serde(default = "default_corrupt_fraction")]
    pub corrupt_fraction: f64,
    #[serde(default)]
    pub threshold: Option<u32>,
    #[serde(default = "default_graph")]
    pub graph: GraphParams,
    #[serde(default)]
    pub quantisation: QuantisationFile,
}

impl Default for SecAggFile {
    fn default() -> Self {
        Self {
            threat_model: default_threat_model(),
            corrupt_fraction: default_corrupt_fraction(),
            threshold: None,
            graph: default_graph(),
            quantisation: QuantisationFile::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantisationFile {
    #[serde(default)]
    pub clip_range: Option<f64>,
    #[serde(default = "default_bits")]
    pub bits: u32,
    #[serde(default = "default_max_weight")]
    pub max_weight: u32,
}

impl Default for QuantisationFile {
    fn default() -> Self {
        Self {
            clip_range: None,
            bits: default_bits(),
            max_weight: default_max_weight(),
        }
    }
}

fn default_rounds() -> u32 {
    5
}
fn default_min_participants() -> u32 {
    3
}
fn default_delta() -> f64 {
    1e-5
}
fn default_sampling_rate() -> f64 {
    0.2
}
fn default_local_epochs() -> u32 {
    2
}
fn default_clip_norm() -> f64 {
    1.0
}
fn default_expected_batch_size() -> f64 {
    32.0
}
fn default_threat_model() -> ThreatModel {
    DEFAULT_THREAT_MODEL
}

fn default_corrupt_fraction() -> f64 {
    DEFAULT_CORRUPT_FRACTION
}

fn default_graph() -> GraphParams {
    GraphParams::Complete
}
fn default_bits() -> u32 {
    32
}
fn default_max_weight() -> u32 {
    DEFAULT_MAX_WEIGHT
}

impl StudyFile {
    /// Reads a study file, TOML or JSON by its extension.
    pub fn read(path: &Path) -> OpsResult<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| OpsError::local(format!("cannot read {}: {e}", path.display())))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "toml" => toml::from_str(&text).map_err(|e| {
                OpsError::local(format!("{} is not a valid study file: {e}", path.display()))
            }),
            "json" => serde_json::from_str(&text).map_err(|e| {
                OpsError::local(format!("{} is not a valid study file: {e}", path.display()))
            }),
            _ => Err(OpsError::local(format!(
                "{}: a study file must end in .toml or .json",
                path.display()
            ))),
        }
    }

    /// The API request; `dir` is the study file's folder (for `model_file`).
    pub fn into_request(self, dir: &Path) -> OpsResult<CreateStudyRequest> {
        let model_spec = match (self.model_file, self.model_spec) {
            (Some(file), None) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    OpsError::local(format!("cannot read model_file {}: {e}", path.display()))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    OpsError::local(format!("model_file {} is not JSON: {e}", path.display()))
                })?
            }
            (None, Some(spec)) => spec,
            _ => {
                return Err(OpsError::local(
                    "a study file needs exactly one of model_file (a model spec JSON file, e.g. \
                     examples/models/breast_cancer_logreg.json) and [model_spec]",
                ));
            }
        };
        // σ given, or a target ε to calibrate it for (by default the whole budget, spent over all rounds).
        let (noise_multiplier, target_epsilon) =
            match (self.dp.noise_multiplier, self.dp.target_epsilon) {
                (Some(sigma), target) => (sigma, target),
                (None, Some(target)) => (0.0, Some(target)),
                (None, None) => (0.0, Some(self.budget.epsilon)),
            };
        Ok(CreateStudyRequest {
            name: self.name,
            model_spec,
            initial_weights_seed: self.initial_weights_seed,
            initial_weights: None,
            dp: DpParams {
                sampling_rate: self.dp.sampling_rate,
                noise_multiplier,
                target_epsilon,
                local_epochs: self.dp.local_epochs,
                clip_norm: self.dp.clip_norm,
                expected_batch_size: self.dp.expected_batch_size,
            },
            secagg: SecAggConfig {
                threat_model: self.secagg.threat_model,
                corrupt_fraction: self.secagg.corrupt_fraction,
                threshold: self.secagg.threshold,
                graph: self.secagg.graph,
                quantisation: QuantisationConfig {
                    clip_range: self.secagg.quantisation.clip_range,
                    bits: self.secagg.quantisation.bits,
                    max_weight: self.secagg.quantisation.max_weight,
                },
            },
            budget: BudgetParams {
                epsilon: self.budget.epsilon,
                delta: self.budget.delta,
            },
            rounds: self.rounds,
            min_participants: self.min_participants,
            deadlines: self.deadlines,
            server_optimizer: self.server_optimizer,
            local_training: self.local_training,
            preprocessing: self.preprocessing,
            evaluation: None,
        })
    }
}

pub async fn run(args: StudyArgs) -> OpsResult<()> {
    if let StudyCommand::Template = args.cmd {
        print!("{TEMPLATE}");
        return Ok(());
    }
    if let StudyCommand::Create { file } = &args.cmd {
        // The file is checked before anything is sent (and before a connection is needed).
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut file = StudyFile::read(file)?;
        let schedule = file.schedule.take();
        let req = file.into_request(dir)?;
        let ops = connect(&args.ops)?;
        let mut info = ops
            .client
            .create_study(&req)
            .await
            .map_err(|e| ops.explain(e, "the study"))?;
        if let Some(ScheduleFile::Automatic {
            pause_secs,
            max_retries,
        }) = schedule
        {
            let run = RunStudyRequest {
                pause_secs,
                max_retries,
            };
            info = ops.client.run_study(info.id, &run).await.map_err(|e| {
                ops.explain(
                    e,
                    &format!("study {} (created; its run did not start)", info.id),
                )
            })?;
        }
        return show(&ops, &info, true);
    }
    let ops = connect(&args.ops)?;
    match args.cmd {
        StudyCommand::List => {
            let studies = ops
                .client
                .list_studies()
                .await
                .map_err(|e| ops.explain(e, "the study list"))?;
            if ops.json {
                return print_json(&studies);
            }
            if studies.is_empty() {
                println!(
                    "no studies yet: `confide study template > study.toml`, edit, then `confide study create --file study.toml`"
                );
                return Ok(());
            }
            let mut t = table([
                "ID",
                "NAME",
                "ROUNDS",
                "ACTIVE ROUND",
                "MODEL",
                "ε BUDGET",
                "δ",
                "σ",
                "CREATED",
            ]);
            for s in &studies {
                let c = &s.config;
                t.add_row(vec![
                    s.id.to_string(),
                    c.name.clone(),
                    format!("{}/{}", s.rounds_completed, c.rounds),
                    s.active_round.map_or("-".into(), |r| r.to_string()),
                    format!("v{}", s.latest_model_version),
                    format!("{}", c.budget.epsilon),
                    format!("{:e}", c.budget.delta),
                    format!("{}", c.dp.noise_multiplier),
                    time(s.created_at_ms),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        StudyCommand::Show { study } => {
            let info = ops
                .client
                .get_study(study)
                .await
                .map_err(|e| ops.explain(e, &format!("study {study}")))?;
            show(&ops, &info, false)
        }
        StudyCommand::Run {
            study,
            pause_secs,
            max_retries,
            wait,
        } => {
            let req = RunStudyRequest {
                pause_secs,
                max_retries,
            };
            study_run::run(&ops, study, &req, wait).await
        }
        StudyCommand::Stop { study, reason } => study_run::stop(&ops, study, reason).await,
        StudyCommand::Create { .. } | StudyCommand::Template => Ok(()),
    }
}

/// One study, as a field table (and its warnings on stderr-free stdout, after it).
fn show(ops: &Ops, s: &StudyInfo, created: bool) -> OpsResult<()> {
    if ops.json {
        return print_json(s);
    }
    let c = &s.config;
    let graph = match &c.secagg.graph {
        GraphParams::Complete => "complete".to_string(),
        GraphParams::Sparse {
            expected_dropout,
            corrupt_fraction,
        } => format!("sparse (dropout {expected_dropout}, corrupt {corrupt_fraction})"),
    };
    let optimizer = match &c.server_optimizer {
        ServerOptimizer::FedAvg { learning_rate } => format!("FedAvg, η = {learning_rate}"),
        ServerOptimizer::FedAdam { learning_rate, .. } => format!("FedAdam, η = {learning_rate}"),
    };
    let mut rows = vec![
        ("study", format!("{} ({})", s.id, c.name)),
        ("created", time(s.created_at_ms)),
        ("model", c.model_spec.to_string()),
        (
            "rounds",
            format!("{} of {} completed", s.rounds_completed, c.rounds),
        ),
        (
            "active round",
            s.active_round.map_or("none".into(), |r| r.to_string()),
        ),
        ("latest model", format!("v{}", s.latest_model_version)),
        (
            "budget",
            format!(
                "ε = {} at δ = {:e} per participant",
                c.budget.epsilon, c.budget.delta
            ),
        ),
        (
            "DP-SGD",
            format!(
                "q = {}, σ = {}{}, C = {}, {} local epoch(s), B = {}",
                c.dp.sampling_rate,
                c.dp.noise_multiplier,
                c.dp.target_epsilon.map_or(String::new(), |t| format!(
                    " (calibrated for ε ≤ {t} over {} rounds)",
                    c.rounds
                )),
                c.dp.clip_norm,
                c.dp.local_epochs,
                c.dp.expected_batch_size
            ),
        ),
        (
            "local training",
            format!(
                "{:?}, lr {}, momentum {}",
                c.local_training.optimizer,
                c.local_training.learning_rate,
                c.local_training.momentum
            ),
        ),
        ("server optimizer", optimizer),
        (
            "secure aggregation",
            format!(
                "{graph} graph, threshold {}, {} bits, clip range {}",
                c.secagg
                    .threshold
                    .map_or("derived".into(), |t| t.to_string()),
                c.secagg.quantisation.bits,
                c.secagg
                    .quantisation
                    .clip_range
                    .map_or("derived".into(), |r| format!("{r:.6}"))
            ),
        ),
        ("min participants", c.min_participants.to_string()),
    ];
    rows.extend(study_run::run_rows(s));
    if created {
        println!("created study {}", s.id);
    }
    println!("{}", fields(rows));
    for w in &s.warnings {
        println!("warning: {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_fills_every_default() {
        let file: StudyFile = toml::from_str(TEMPLATE).unwrap();
        let req = file.into_request(Path::new(".")).unwrap();
        assert_eq!(req.rounds, 5);
        assert_eq!(req.min_participants, 3);
        assert_eq!(req.secagg.graph, GraphParams::Complete);
        assert_eq!(req.secagg.quantisation.bits, 32);
        assert_eq!(req.deadlines, StageDeadlines::default());
        assert_eq!(req.dp.target_epsilon, Some(1.0));
    }

    #[test]
    fn a_minimal_file_needs_only_name_model_and_budget() {
        let file: StudyFile = toml::from_str(
            "name = \"s\"\nmodel_spec = { kind = \"logistic_regression\", input_dim = 3, num_classes = 2 }\n\
             [budget]\nepsilon = 1.0\n[dp]\nnoise_multiplier = 2.0\n",
        )
        .unwrap();
        let req = file.into_request(Path::new(".")).unwrap();
        assert_eq!(
            (req.dp.noise_multiplier, req.dp.target_epsilon),
            (2.0, None)
        );
        assert_eq!(req.budget.delta, 1e-5);
        assert_eq!(req.dp.sampling_rate, 0.2);
        // Without σ or a target, σ is calibrated to spend the budget over all rounds.
        let file: StudyFile =
            toml::from_str("name = \"s\"\nmodel_spec = {}\n[budget]\nepsilon = 1.5\n").unwrap();
        let req = file.into_request(Path::new(".")).unwrap();
        assert_eq!(
            (req.dp.noise_multiplier, req.dp.target_epsilon),
            (0.0, Some(1.5))
        );
        assert!(toml::from_str::<StudyFile>("name = \"s\"\n").is_err());
        assert!(
            toml::from_str::<StudyFile>("name = \"s\"\nrunds = 3\n[budget]\nepsilon = 1.0\n")
                .is_err()
        );
    }
}
