//! What each bundled dataset needs (file, label, model, DP-SGD hyper-parameters), the study the demo creates from
//! it, and the noise calibration.

use anyhow::{Context, Result};
use clap::ValueEnum;
use confide_common::api::{
    BudgetParams, CreateStudyRequest, DEFAULT_CORRUPT_FRACTION, DEFAULT_MAX_WEIGHT,
    DEFAULT_THREAT_MODEL, DpParams, GraphParams, LocalOptimizer, LocalTraining, QuantisationConfig,
    SecAggConfig, ServerOptimizer, StageDeadlines,
};
use confide_common::dp::{AccountantKind, calibrate};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoDataset {
    /// Wisconsin diagnostic breast cancer (569 records, 30 features, 2 classes), logistic regression.
    BreastCancer,
    /// UCI 8×8 handwritten digits (1,797 records, 64 pixels, 10 classes), a small MLP.
    Digits,
}

impl DemoDataset {
    /// The name in the study name, the agents' dataset ids and the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::BreastCancer => "breast-cancer",
            Self::Digits => "digits",
        }
    }
}

/// What one dataset needs: file, label, model and the DP-SGD hyper-parameters the study prescribes.
pub struct Preset {
    pub file: &'static str,
    pub label: &'static str,
    pub model_spec: &'static str,
    pub default_epsilon: f64,
    pub sampling_rate: f64,
    pub local_epochs: u32,
    pub clip_norm: f64,
    pub learning_rate: f64,
    pub momentum: f64,
    /// Epochs of the centralised non-private baseline.
    pub baseline_epochs: u64,
}

pub fn preset(dataset: DemoDataset) -> Preset {
    match dataset {
        DemoDataset::BreastCancer => Preset {
            file: "breast_cancer_wisconsin.csv",
            label: "malignant",
            model_spec: include_str!("../../../examples/models/breast_cancer_logreg.json"),
            default_epsilon: 1.0,
            sampling_rate: 0.2,
            local_epochs: 2,
            clip_norm: 1.0,
            learning_rate: 0.1,
            momentum: 0.9,
            baseline_epochs: 30,
        },
        DemoDataset::Digits => Preset {
            file: "digits_8x8.csv",
            label: "digit",
            model_spec: include_str!("../../../examples/models/digits_mlp.json"),
            default_epsilon: 3.0,
            sampling_rate: 0.1,
            local_epochs: 2,
            clip_norm: 1.0,
            learning_rate: 0.2,
            momentum: 0.9,
            baseline_epochs: 30,
        },
    }
}

impl Preset {
    /// DP-SGD steps of one round: the local epochs at the sampling rate (as the coordinator plans them).
    pub fn steps_per_round(&self) -> u64 {
        (f64::from(self.local_epochs) / self.sampling_rate).ceil() as u64
    }
}

/// The study's privacy and size: what the demo's command line and data decide.
pub struct StudyShape {
    pub name: String,
    pub seed: u64,
    pub noise_multiplier: f64,
    /// Public: the study plans for hospitals of about the demo's slice size (no site divides by its own N).
    pub expected_batch_size: f64,
    pub target_epsilon: f64,
    pub delta: f64,
    pub rounds: u32,
    pub hospitals: u32,
}

/// The study the demo creates: the preset's model and DP-SGD, complete-graph secure aggregation over 32-bit
/// quantised updates, FedAvg.
pub fn study_request(p: &Preset, shape: &StudyShape) -> Result<CreateStudyRequest> {
    Ok(CreateStudyRequest {
        name: shape.name.clone(),
        model_spec: serde_json::from_str(p.model_spec).context("the preset's model spec")?,
        initial_weights_seed: shape.seed,
        initial_weights: None,
        dp: DpParams {
            sampling_rate: p.sampling_rate,
            noise_multiplier: shape.noise_multiplier,
            local_epochs: p.local_epochs,
            clip_norm: p.clip_norm,
            expected_batch_size: shape.expected_batch_size,
            target_epsilon: None,
        },
        local_training: LocalTraining {
            optimizer: LocalOptimizer::Sgd,
            learning_rate: p.learning_rate,
            momentum: p.momentum,
        },
        secagg: SecAggConfig {
            threat_model: DEFAULT_THREAT_MODEL,
            corrupt_fraction: DEFAULT_CORRUPT_FRACTION,
            threshold: None,
            graph: GraphParams::Complete,
            // No clip_range: the coordinator derives it from the DP-SGD parameters, so updates are never clamped.
            quantisation: QuantisationConfig {
                clip_range: None,
                bits: 32,
                max_weight: DEFAULT_MAX_WEIGHT,
            },
        },
        budget: BudgetParams {
            epsilon: shape.target_epsilon,
            delta: shape.delta,
        },
        rounds: shape.rounds,
        min_participants: 3.max(shape.hospitals / 2),
        deadlines: StageDeadlines {
            advertise_keys_secs: 300,
            share_keys_secs: 60,
            share_verification_secs: 60,
            masked_input_secs: 120,
            consistency_check_secs: 60,
            unmasking_secs: 60,
        },
        server_optimizer: ServerOptimizer::FedAvg { learning_rate: 1.0 },
    })
}

/// The smallest σ whose whole-study ledger (one event per round, as the coordinator and agents record it) stays
/// within the target under the PLD accountant.
pub fn calibrate_sigma(
    target: f64,
    delta: f64,
    q: f64,
    steps_per_round: u64,
    rounds: u32,
) -> Result<f64> {
    calibrate::noise_multiplier_for_rounds(
        target,
        delta,
        q,
        steps_per_round,
        rounds,
        AccountantKind::Pld,
    )
    .context("calibrating the noise multiplier")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed request is the JSON the demo sent before (built with `json!`), so the coordinator sees the same
    /// study.
    #[test]
    fn the_study_request_is_the_one_the_demo_always_sent() {
        let p = preset(DemoDataset::BreastCancer);
        let shape = StudyShape {
            name: "demo-breast-cancer-1".into(),
            seed: 7,
            noise_multiplier: 5.5,
            expected_batch_size: 22.8,
            target_epsilon: 1.0,
            delta: 1e-5,
            rounds: 5,
            hospitals: 4,
        };
        let typed = serde_json::to_value(study_request(&p, &shape).unwrap()).unwrap();
        let before: CreateStudyRequest = serde_json::from_value(serde_json::json!({
            "name": "demo-breast-cancer-1",
            "model_spec": serde_json::from_str::<serde_json::Value>(p.model_spec).unwrap(),
            "initial_weights_seed": 7,
            "dp": {"sampling_rate": 0.2, "noise_multiplier": 5.5, "local_epochs": 2, "clip_norm": 1.0,
                   "expected_batch_size": 22.8},
            "local_training": {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9},
            "secagg": {"threshold": null, "graph": {"kind": "complete"}, "quantisation": {"bits": 32}},
            "budget": {"epsilon": 1.0, "delta": 1e-5},
            "rounds": 5,
            "min_participants": 3,
            "deadlines": {"advertise_keys_secs": 300, "share_keys_secs": 60, "masked_input_secs": 120,
                          "unmasking_secs": 60},
            "server_optimizer": {"kind": "fed_avg", "learning_rate": 1.0},
        }))
        .unwrap();
        assert_eq!(typed, serde_json::to_value(before).unwrap());
        assert_eq!(p.steps_per_round(), 10);
    }
}
