//! What the demo shows: a progress bar per round, one table line per round, and the federated result beside the
//! baseline (or all of it as one JSON object with `--json`).

use std::io::Write;

use anyhow::Result;
use confide_common::api::{MemberSet, RoundInfo, RoundOutcome, RoundPurpose, RoundStage};
use confide_common::evaluation::EvaluationConfig;
use confide_common::statistics::PublishedStatistics;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// One line of the demo's report: how a round went.
#[derive(Serialize)]
pub struct RoundResult {
    pub round: u32,
    /// `training`, or `statistics` for the study's statistics round (which publishes no new weights).
    pub purpose: RoundPurpose,
    pub outcome: RoundOutcome,
    pub reason: Option<String>,
    pub test_accuracy: Option<f64>,
    /// The model version the round published (training) or evaluated (evaluation).
    pub model_version: Option<i64>,
    /// The federated, DP accuracy of that version on the hospitals' held-out records, and the std of its noise.
    pub federated_accuracy: Option<f64>,
    pub federated_accuracy_std: Option<f64>,
    /// Evaluation rounds: the mean clamped loss and the noisy number of held-out records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_records: Option<f64>,
    pub epsilon_max: f64,
    pub participants_selected: usize,
    pub participants_aggregated: usize,
    pub dropouts: usize,
    pub seconds: f64,
}

impl RoundResult {
    /// Sizes from the finished round's sets: an aborted round aggregated nobody, so all its selected dropped out.
    pub fn new(round: u32, finished: &RoundInfo, outcome: RoundOutcome) -> Self {
        let selected = finished.members(MemberSet::Selected).len();
        let aggregated = match outcome {
            RoundOutcome::Completed => finished.members(MemberSet::SentMaskedInput).len(),
            RoundOutcome::Aborted => 0,
        };
        Self {
            round,
            purpose: finished.purpose,
            outcome,
            reason: finished.reason.clone(),
            test_accuracy: None,
            model_version: None,
            federated_accuracy: None,
            federated_accuracy_std: None,
            federated_loss: None,
            evaluation_records: None,
            epsilon_max: 0.0,
            participants_selected: selected,
            participants_aggregated: aggregated,
            dropouts: selected.saturating_sub(aggregated),
            seconds: 0.0,
        }
    }
}

/// The `--json` object.
#[derive(Serialize)]
pub struct DemoSummary {
    pub dataset: &'static str,
    /// How agents and evaluator scaled the features: `ranges` (the study's public ranges) or
    /// `central_statistics` (the evaluator's held-out set, the former behaviour).
    pub preprocessing: &'static str,
    /// What the statistics round published (derived mean and std, the release's ε and noise), if one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<PublishedStatistics>,
    /// The study's federated evaluation settings (hold-out, per-release ε, schedule), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationConfig>,
    /// The last evaluated version: federated accuracy ± std beside the evaluator's test accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated: Option<FederatedSummary>,
    /// Every hospital's ε budget: the target for training, plus the statistics release if any.
    pub epsilon_budget: f64,
    pub participants: u32,
    pub rounds_requested: u32,
    pub rounds_completed: u32,
    pub test_accuracy: Option<f64>,
    pub baseline_accuracy: f64,
    pub epsilon_max: f64,
    pub epsilon_target: f64,
    pub delta: f64,
    pub noise_multiplier: f64,
    pub records_per_hospital: Vec<usize>,
    pub test_records: usize,
    pub rounds: Vec<RoundResult>,
    pub work_dir: Option<String>,
}

/// The last federated evaluation beside the central evaluator's accuracy of the same model version.
#[derive(Serialize)]
pub struct FederatedSummary {
    pub model_version: i64,
    pub federated_accuracy: f64,
    pub federated_accuracy_std: f64,
    pub test_accuracy: Option<f64>,
    /// |federated − central| ≤ 2·std + 0.05 (what the DP noise and the two test sets' difference allow).
    pub within_two_std_plus_0_05: Option<bool>,
}

/// Prints either the table (as the rounds go) and the closing lines, or nothing until the JSON object.
pub struct Report {
    pub json: bool,
}

impl Report {
    /// A line of the human-readable output (nothing with `--json`).
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.json {
            println!("{}", line.as_ref());
        }
    }

    pub fn table_header(&self) {
        self.say("");
        self.say(format!(
            "{:>5}  {:<10}  {:>13}  {:>9}  {:>10}  {:>8}  {:>7}",
            "round", "outcome", "test accuracy", "max ε", "aggregated", "dropouts", "time"
        ));
    }

    /// A bar that follows the round's secure-aggregation stages (hidden with `--json`).
    pub fn round_bar(&self, round: u32) -> ProgressBar {
        let bar = if self.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(6)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "round {prefix:>2} [{bar:24}] {pos}/{len} stages  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(round.to_string());
        bar
    }

    pub fn round_line(&self, row: &RoundResult) {
        self.say(format!(
            "{:>5}  {:<10}  {:>13}  {:>9.4}  {:>10}  {:>8}  {:>6.1}s",
            row.round,
            row.outcome.as_str(),
            row.test_accuracy
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "-".into()),
            row.epsilon_max,
            format!(
                "{}/{}",
                row.participants_aggregated, row.participants_selected
            ),
            row.dropouts,
            row.seconds
        ));
        if let Some(reason) = &row.reason {
            self.say(format!("       reason: {reason}"));
        }
        if row.purpose == RoundPurpose::Evaluation
            && let (Some(a), Some(s)) = (row.federated_accuracy, row.federated_accuracy_std)
        {
            self.say(format!(
                "       (evaluation of model v{}: federated accuracy {a:.3} ± {s:.3} on ≈ {:.0} held-out records, DP)",
                row.model_version.unwrap_or_default(),
                row.evaluation_records.unwrap_or_default()
            ));
        }
        if row.purpose == RoundPurpose::Statistics {
            self.say(
                "       (statistics round: feature mean and std released with DP, no new weights)",
            );
        }
    }

    /// The closing lines, or the whole summary as one JSON object.
    pub fn finish(&self, summary: &DemoSummary) -> Result<()> {
        if self.json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, summary)?;
            writeln!(out)?;
            return Ok(());
        }
        println!();
        println!(
            "federated, DP (ε ≤ {:.3} per hospital, δ = {}): test accuracy {}",
            summary.epsilon_max,
            summary.delta,
            summary
                .test_accuracy
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "- (no round completed)".into())
        );
        if let Some(f) = &summary.federated {
            println!(
                "federated evaluation of model v{} (hospitals' held-out records, DP): accuracy {:.3} ± {:.3}",
                f.model_version, f.federated_accuracy, f.federated_accuracy_std
            );
        }
        println!(
            "centralised, non-private baseline (all records pooled, no guarantee): test accuracy {:.3}",
            summary.baseline_accuracy
        );
        if let Some(dir) = &summary.work_dir {
            println!("logs, database and models kept in {dir}");
        }
        Ok(())
    }
}

/// Stages done, for the progress bar.
pub fn stage_position(info: &RoundInfo) -> u64 {
    match info.stage {
        RoundStage::AdvertiseKeys => 0,
        RoundStage::ShareKeys => 1,
        RoundStage::ShareVerification => 2,
        RoundStage::MaskedInputCollection => 3,
        RoundStage::ConsistencyCheck => 4,
        RoundStage::Unmasking => 5,
        RoundStage::Finished => 6,
    }
}

/// What the hospitals are doing, for the progress bar.
pub fn stage_message(info: &RoundInfo) -> String {
    let doing = match info.stage {
        RoundStage::AdvertiseKeys => "hospitals train locally (DP-SGD) and advertise keys",
        RoundStage::ShareKeys => "hospitals share Shamir shares of their mask seeds",
        RoundStage::ShareVerification => "hospitals check the shares dealt to them",
        RoundStage::MaskedInputCollection => "hospitals upload masked updates",
        RoundStage::ConsistencyCheck => "survivors sign who survived",
        RoundStage::Unmasking => "survivors help remove the masks",
        RoundStage::Finished => "finished",
    };
    format!(
        "{doing} ({} selected)",
        info.members(MemberSet::Selected).len()
    )
}
