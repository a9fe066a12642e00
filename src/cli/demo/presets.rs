//! What each bundled dataset needs (file, label, model, DP-SGD hyper-parameters), the study the demo creates from
//! it, and the noise calibration.

use anyhow::{Context, Result};
use clap::ValueEnum;
use confide_common::api::{
    BudgetParams, CreateStudyRequest, DEFAULT_CORRUPT_FRACTION, DEFAULT_MAX_WEIGHT,
    DEFAULT_THREAT_MODEL, DpParams, GraphParams, LocalOptimizer, LocalTraining, QuantisationConfig,
    SecAggConfig, ServerOptimizer, StageDeadlines,
};
use confide_common::dp::{
    AccountantKind, DataPartition, PartitionedEvent, PrivacyEvent, PrivacyLedger, calibrate,
    partitioned_epsilon,
};
use confide_common::evaluation::{EvaluationConfig, EvaluationSchedule};
use confide_common::preprocessing::{FeatureRange, Preprocessing, StatisticsRound};

/// How the demo's agents and evaluator scale the features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoPreprocessing {
    /// The study's public feature ranges, each mapped onto [-1, 1]: no central data, no privacy cost.
    Ranges,
    /// Mean and std of the evaluator's held-out test set, given to every agent as `--stats` (a trusted centre
    /// holding data: the demo's former behaviour, kept to compare with).
    CentralStatistics,
}

impl DemoPreprocessing {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ranges => "ranges",
            Self::CentralStatistics => "central_statistics",
        }
    }
}

/// Public ranges of the breast-cancer features, from the dataset's published description (the per-feature
/// minimum and maximum listed in the UCI documentation of Breast Cancer Wisconsin (Diagnostic), as reproduced in
/// scikit-learn's `load_breast_cancer` description). Published facts about the dataset, fixed before any site
/// reads a record; never computed from the data at run time.
const BREAST_CANCER_RANGES: [(&str, f64, f64); 30] = [
    ("mean_radius", 6.981, 28.11),
    ("mean_texture", 9.71, 39.28),
    ("mean_perimeter", 43.79, 188.5),
    ("mean_area", 143.5, 2501.0),
    ("mean_smoothness", 0.053, 0.163),
    ("mean_compactness", 0.019, 0.345),
    ("mean_concavity", 0.0, 0.427),
    ("mean_concave_points", 0.0, 0.201),
    ("mean_symmetry", 0.106, 0.304),
    ("mean_fractal_dimension", 0.05, 0.097),
    ("se_radius", 0.112, 2.873),
    ("se_texture", 0.36, 4.885),
    ("se_perimeter", 0.757, 21.98),
    ("se_area", 6.802, 542.2),
    ("se_smoothness", 0.002, 0.031),
    ("se_compactness", 0.002, 0.135),
    ("se_concavity", 0.0, 0.396),
    ("se_concave_points", 0.0, 0.053),
    ("se_symmetry", 0.008, 0.079),
    ("se_fractal_dimension", 0.001, 0.03),
    ("worst_radius", 7.93, 36.04),
    ("worst_texture", 12.02, 49.54),
    ("worst_perimeter", 50.41, 251.2),
    ("worst_area", 185.2, 4254.0),
    ("worst_smoothness", 0.071, 0.223),
    ("worst_compactness", 0.027, 1.058),
    ("worst_concavity", 0.0, 1.252),
    ("worst_concave_points", 0.0, 0.291),
    ("worst_symmetry", 0.156, 0.664),
    ("worst_fractal_dimension", 0.055, 0.208),
];

/// The digits' 64 pixels are counts of set bits in 4×4 blocks of a 32×32 bitmap: 0..=16 by construction (UCI
/// description of Optical Recognition of Handwritten Digits).
fn digits_ranges() -> Vec<FeatureRange> {
    (0..64)
        .map(|i| FeatureRange {
            name: format!("pixel_{i}"),
            min: 0.0,
            max: 16.0,
        })
        .collect()
}

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
    /// The study's public feature ranges (domain knowledge or the dataset's published description).
    pub preprocessing: Preprocessing,
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
            preprocessing: Preprocessing::from_ranges(&BREAST_CANCER_RANGES),
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
            preprocessing: Preprocessing {
                feature_ranges: digits_ranges(),
                statistics_round: None,
            },
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
    /// ε of the statistics round's release, if the study begins with one (it is then the first of `rounds`).
    pub statistics_epsilon: Option<f64>,
    /// The study's federated evaluation, if any.
    pub evaluation: Option<EvaluationConfig>,
}

/// Fewest held-out records a demo hospital evaluates with.
pub const EVALUATION_MIN_RECORDS: u32 = 10;
/// Each record's loss is clamped to [0, this] in an evaluation release: ln 2 ≈ 0.69 is a coin flip between two
/// classes, and a smaller clamp means less noise (the sensitivity is √(2 + L²)).
pub const EVALUATION_LOSS_MAX: f64 = 1.0;

/// The demo's evaluation: `evaluations` releases per hospital whose ε on the held-out part together is at most
/// `part_epsilon` (each release gets an equal share of the zCDP ρ), or `None` for none.
pub fn evaluation_config(
    part_epsilon: f64,
    delta: f64,
    evaluations: u32,
    holdout_fraction: f64,
    schedule: EvaluationSchedule,
    seed: u64,
) -> Result<EvaluationConfig> {
    // The ρ of one Gaussian release at the part's ε, split evenly: E releases of ρ/E compose to ρ exactly (zCDP).
    let sigma =
        calibrate::noise_multiplier_for_target(part_epsilon, delta, 1.0, 1, AccountantKind::Pld)?;
    let rho = 1.0 / (2.0 * sigma * sigma) / f64::from(evaluations.max(1));
    let per_release = PrivacyLedger {
        events: vec![PrivacyEvent::ZcdpGaussian { rho }],
    }
    .epsilon(delta, AccountantKind::Pld)?;
    let config = EvaluationConfig {
        holdout_fraction,
        epsilon: per_release,
        schedule,
        min_records: EVALUATION_MIN_RECORDS,
        loss_max: EVALUATION_LOSS_MAX,
        max_records_per_site: MAX_RECORDS_PER_SITE,
        seed,
    };
    Ok(config)
}

/// ε at δ of a whole study's ledger as every hospital records it, with its parts: the training rounds on the
/// training part (every record without evaluation), the statistics release on every record, each evaluation on
/// the held-out part — composed in parallel (the larger part's ε).
pub fn partitioned_study_epsilon(
    training: PrivacyEvent,
    rounds: u32,
    statistics: Option<PrivacyEvent>,
    evaluation: Option<(PrivacyEvent, u32)>,
    delta: f64,
) -> Result<f64> {
    let train_part = if evaluation.is_some() {
        DataPartition::Training
    } else {
        DataPartition::All
    };
    let mut events: Vec<PartitionedEvent> = (0..rounds)
        .map(|_| PartitionedEvent {
            partition: train_part,
            event: training,
        })
        .collect();
    events.extend(statistics.map(|event| PartitionedEvent {
        partition: DataPartition::All,
        event,
    }));
    if let Some((event, n)) = evaluation {
        events.extend((0..n).map(|_| PartitionedEvent {
            partition: DataPartition::Evaluation,
            event,
        }));
    }
    Ok(partitioned_epsilon(&events, delta, AccountantKind::Pld)?)
}

/// Most records a demo hospital may hold in a statistics round (a public bound on the released sums).
pub const MAX_RECORDS_PER_SITE: u32 = 10_000;

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
        preprocessing: Some(Preprocessing {
            statistics_round: shape.statistics_epsilon.map(|epsilon| StatisticsRound {
                epsilon,
                max_records_per_site: MAX_RECORDS_PER_SITE,
            }),
            ..p.preprocessing.clone()
        }),
        evaluation: shape.evaluation,
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

    /// The typed request is the JSON the demo sent before (built with `json!`) plus the public feature ranges, so
    /// the coordinator sees the same study.
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
            statistics_epsilon: None,
            evaluation: None,
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
            "preprocessing": {"feature_ranges": serde_json::to_value(&p.preprocessing.feature_ranges).unwrap()},
        }))
        .unwrap();
        assert_eq!(typed, serde_json::to_value(before).unwrap());
        assert_eq!(p.steps_per_round(), 10);
    }

    /// E evaluation releases together spend at most the evaluation ε on the held-out part, and a hospital's budget
    /// is the larger part's ε (parallel composition), not the sum.
    #[test]
    fn the_evaluations_share_the_parts_epsilon_and_compose_in_parallel() {
        let config =
            evaluation_config(1.0, 1e-5, 5, 0.2, EvaluationSchedule::EveryRound, 0).unwrap();
        config.validate(5).unwrap();
        let release =
            confide_common::evaluation::EvaluationRelease::for_config(&config, 1e-5).unwrap();
        let part = PrivacyLedger {
            events: vec![release.event(); 5],
        }
        .epsilon(1e-5, AccountantKind::Pld)
        .unwrap();
        assert!(part <= 1.0 && part > 0.98, "{part}");
        let training = PrivacyEvent::SubsampledGaussian {
            sampling_rate: 0.2,
            noise_multiplier: 5.504,
            steps: 10,
        };
        let both =
            partitioned_study_epsilon(training, 5, None, Some((release.event(), 5)), 1e-5).unwrap();
        let train_only = partitioned_study_epsilon(training, 5, None, None, 1e-5).unwrap();
        assert_eq!(both, train_only.max(part));
        let sequential = PrivacyLedger {
            events: [vec![training; 5], vec![release.event(); 5]].concat(),
        }
        .epsilon(1e-5, AccountantKind::Pld)
        .unwrap();
        assert!(both < sequential, "{both} vs {sequential}");
    }

    /// The presets' ranges are valid for their models and name the bundled files' columns in order.
    #[test]
    fn the_presets_declare_one_range_per_column_of_their_file() {
        for dataset in [DemoDataset::BreastCancer, DemoDataset::Digits] {
            let p = preset(dataset);
            let spec =
                confide_common::model::ModelSpec::from_json(p.model_spec).expect("model spec");
            p.preprocessing.validate(spec.input_dim()).unwrap();
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("data")
                .join(p.file);
            let header = std::fs::read_to_string(path).unwrap();
            let columns: Vec<&str> = header
                .lines()
                .next()
                .unwrap()
                .split(',')
                .filter(|c| *c != p.label)
                .collect();
            assert_eq!(p.preprocessing.feature_names(), columns, "{}", p.file);
        }
    }
}
