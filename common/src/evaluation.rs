//! Federated evaluation: how good a published model is, learned from every site's held-out records with
//! differential privacy, so that no trusted centre needs a test set.
//!
//! Each site splits its records once, by a keyed hash of each record's own values ([`holdout_part`]): the
//! evaluation part is never trained on. After a published model version (as the study's [`EvaluationSchedule`]
//! says) an evaluation round asks every site for three sums over its evaluation part — correct predictions, record
//! count, cross-entropy loss clamped to [0, L] — released with Gaussian noise inside secure aggregation. One record
//! moves them by at most (1, 1, L), so the L2 sensitivity is √(2 + L²). The coordinator sees only the noisy totals;
//! accuracy and loss follow by post-processing, with a noise standard deviation anyone can compute from the public
//! parameters.
//!
//! Because the two parts are disjoint and a record's part depends on that record alone, training and evaluation
//! releases compose in parallel (`crate::dp::partition`): evaluation spends the evaluation part's budget, not the
//! training part's.
//!
//! Pure: the noise itself is drawn by the participant (opendp's exact Gaussian sampler).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::dp::{
    AccountantKind, DataPartition, DpError, PrivacyEvent, noise_multiplier_for_target,
};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Values a site releases in an evaluation round: correct predictions, record count, clamped loss sum.
pub const VECTOR_LEN: usize = 3;

/// When a study evaluates its published models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvaluationSchedule {
    /// After every training round's model.
    #[default]
    EveryRound,
    /// After every k-th training round's model, and after the last one.
    EveryKRounds {
        /// Evaluate every k-th training round's model (1 ≤ k ≤ the study's rounds).
        k: u32,
    },
    /// Once, after the last training round's model.
    AtEnd,
}

impl EvaluationSchedule {
    /// Whether the model published by training round `trained` (1-based, of `training_rounds`) is evaluated.
    pub fn evaluates(&self, trained: u32, training_rounds: u32) -> bool {
        if trained == 0 {
            return false;
        }
        match *self {
            Self::EveryRound => true,
            Self::EveryKRounds { k } => {
                trained >= training_rounds || trained.is_multiple_of(k.max(1))
            }
            Self::AtEnd => trained >= training_rounds,
        }
    }

    /// How many evaluations a study of `training_rounds` rounds runs (each at most once per model version).
    pub fn evaluations(&self, training_rounds: u32) -> u32 {
        (1..=training_rounds)
            .filter(|t| self.evaluates(*t, training_rounds))
            .count() as u32
    }
}

fn default_min_records() -> u32 {
    DEFAULT_MIN_RECORDS
}
fn default_loss_max() -> f64 {
    DEFAULT_LOSS_MAX
}
fn default_max_records() -> u32 {
    DEFAULT_MAX_RECORDS_PER_SITE
}

/// Fewest evaluation records a site evaluates with by default: below it its noise would swamp its sums.
pub const DEFAULT_MIN_RECORDS: u32 = 10;
/// Default clamp of each record's cross-entropy loss (ln 2 ≈ 0.69 is a coin flip between two classes).
pub const DEFAULT_LOSS_MAX: f64 = 4.0;
/// Default bound on a site's evaluation records (it fixes the secure-aggregation range of the sums).
pub const DEFAULT_MAX_RECORDS_PER_SITE: u32 = 100_000;

/// A study's federated evaluation (`evaluation` in the study request, sent with every round task).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Fraction of each site's records held out for evaluation (never trained on), in (0, 1).
    pub holdout_fraction: f64,
    /// ε of each site's one evaluation release (at the study's δ), finite and > 0.
    pub epsilon: f64,
    /// When evaluation rounds run (default: after every training round).
    #[serde(default)]
    pub schedule: EvaluationSchedule,
    /// A site with fewer evaluation records declines the evaluation round, saying so (≥ 1, default 10).
    #[serde(default = "default_min_records")]
    pub min_records: u32,
    /// Each record's cross-entropy loss is clamped to [0, loss_max] (finite, > 0; default 4): it bounds what one
    /// record adds to the released loss sum.
    #[serde(default = "default_loss_max")]
    pub loss_max: f64,
    /// Most evaluation records a site may hold (default 100000): it bounds the released sums, hence the
    /// secure-aggregation range. A site with more declines.
    #[serde(default = "default_max_records")]
    pub max_records_per_site: u32,
    /// Public key of the hold-out hash (default 0): which records a site holds out follows from it and from each
    /// record's own values only.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum EvaluationError {
    #[error(
        "evaluation.holdout_fraction must be strictly between 0 and 1, got {0}: a fraction of 0 leaves no \
         evaluation records and a fraction of 1 leaves no training records"
    )]
    BadFraction(f64),
    #[error(
        "evaluation.epsilon must be a finite number > 0 (a release at ε ≤ 0 cannot be differentially private), \
         got {0}"
    )]
    BadEpsilon(f64),
    #[error("evaluation.loss_max must be a finite number > 0, got {0}")]
    BadLossMax(f64),
    #[error("evaluation.min_records must be ≥ 1")]
    BadMinRecords,
    #[error("evaluation.max_records_per_site must be in 1..=100000000, got {0}")]
    BadMaxRecords(u32),
    #[error(
        "evaluation: min_records = {min} is more than holdout_fraction × max_records_per_site = {most:.1}: no site \
         could ever evaluate; lower min_records or raise holdout_fraction"
    )]
    NeverEnoughRecords { min: u32, most: f64 },
    #[error("evaluation.schedule: k must be in 1..=rounds ({rounds}), got {k}")]
    BadK { k: u32, rounds: u32 },
    #[error(transparent)]
    Dp(#[from] DpError),
    #[error("the evaluation vector has {0} values, 3 expected (correct, count, loss sum)")]
    WrongLength(usize),
    #[error("the evaluation vector holds a value that is not finite")]
    NotFinite,
}

impl EvaluationConfig {
    /// Checks the declaration for a study of `rounds` training rounds.
    pub fn validate(&self, rounds: u32) -> Result<(), EvaluationError> {
        if !(self.holdout_fraction > 0.0 && self.holdout_fraction < 1.0) {
            return Err(EvaluationError::BadFraction(self.holdout_fraction));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(EvaluationError::BadEpsilon(self.epsilon));
        }
        if !(self.loss_max.is_finite() && self.loss_max > 0.0) {
            return Err(EvaluationError::BadLossMax(self.loss_max));
        }
        if self.min_records == 0 {
            return Err(EvaluationError::BadMinRecords);
        }
        if self.max_records_per_site == 0 || self.max_records_per_site > 100_000_000 {
            return Err(EvaluationError::BadMaxRecords(self.max_records_per_site));
        }
        let most = self.holdout_fraction * f64::from(self.max_records_per_site);
        if f64::from(self.min_records) > most {
            return Err(EvaluationError::NeverEnoughRecords {
                min: self.min_records,
                most,
            });
        }
        if let EvaluationSchedule::EveryKRounds { k } = self.schedule
            && (k == 0 || k > rounds.max(1))
        {
            return Err(EvaluationError::BadK { k, rounds });
        }
        Ok(())
    }
}

/// Which part a record belongs to: a keyed hash (sha256 of the public `seed`, the label and the feature values'
/// bits) of the record alone, compared with `fraction`. Adding or removing one record moves no other record
/// between parts, which parallel composition needs; identical records land in the same part.
pub fn holdout_part(seed: u64, features: &[f32], label: i64, fraction: f64) -> DataPartition {
    let mut h = Sha256::new();
    h.update(b"confide-holdout-v1");
    h.update(seed.to_le_bytes());
    h.update(label.to_le_bytes());
    h.update((features.len() as u64).to_le_bytes());
    for x in features {
        // -0.0 and 0.0 are one value: one record, one part.
        let x = if *x == 0.0 { 0.0f32 } else { *x };
        h.update(x.to_bits().to_le_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: an exact f64 in [0, 1).
    let u = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    if u < fraction {
        DataPartition::Evaluation
    } else {
        DataPartition::Training
    }
}

/// L2 sensitivity of a site's (correct, count, clamped loss sum) under adding or removing one record.
pub fn sensitivity(loss_max: f64) -> f64 {
    (2.0 + loss_max * loss_max).sqrt()
}

/// The public parameters of one site's evaluation release.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EvaluationRelease {
    pub loss_max: f64,
    /// Noise multiplier σ: the noise standard deviation is σ · √(2 + L²) per coordinate.
    pub noise_multiplier: f64,
}

impl EvaluationRelease {
    /// The smallest noise multiplier (0.001 grid) for which one release is (ε, δ)-DP by the exact Gaussian curve.
    pub fn for_config(config: &EvaluationConfig, delta: f64) -> Result<Self, EvaluationError> {
        if !(config.epsilon.is_finite() && config.epsilon > 0.0) {
            return Err(EvaluationError::BadEpsilon(config.epsilon));
        }
        let noise_multiplier =
            noise_multiplier_for_target(config.epsilon, delta, 1.0, 1, AccountantKind::Pld)?;
        Ok(Self {
            loss_max: config.loss_max,
            noise_multiplier,
        })
    }

    /// Standard deviation of the noise on each coordinate of one site's vector.
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * sensitivity(self.loss_max)
    }

    /// The ledger event of one release: a Gaussian mechanism with ρ = 1/(2σ²).
    pub fn event(&self) -> PrivacyEvent {
        PrivacyEvent::ZcdpGaussian {
            rho: 1.0 / (2.0 * self.noise_multiplier * self.noise_multiplier),
        }
    }
}

/// A site's sums from its per-record results: correct predictions, count, and each loss clamped to [0, L].
pub fn site_sums(correct: &[bool], losses: &[f64], loss_max: f64) -> [f64; VECTOR_LEN] {
    let right = correct.iter().filter(|c| **c).count() as f64;
    // NaN losses count as the worst loss: fail towards a bounded contribution.
    let loss: f64 = losses
        .iter()
        .map(|l| {
            if l.is_nan() {
                loss_max
            } else {
                l.clamp(0.0, loss_max)
            }
        })
        .sum();
    [right, correct.len() as f64, loss]
}

/// What an evaluation round measured: post-processing of the noisy totals, with the public noise level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EvaluationTotals {
    pub correct: f64,
    pub count: f64,
    pub loss_sum: f64,
    /// Sites whose release is in the totals.
    pub sites: u32,
    /// Noise standard deviation on each coordinate of one site's vector.
    pub noise_std_per_site: f64,
    pub loss_max: f64,
}

impl EvaluationTotals {
    /// The totals from an aggregated vector of `sites` releases.
    pub fn from_vector(
        totals: &[f64],
        sites: u32,
        release: &EvaluationRelease,
    ) -> Result<Self, EvaluationError> {
        let [correct, count, loss_sum] = totals else {
            return Err(EvaluationError::WrongLength(totals.len()));
        };
        if totals.iter().any(|v| !v.is_finite()) {
            return Err(EvaluationError::NotFinite);
        }
        Ok(Self {
            correct: *correct,
            count: *count,
            loss_sum: *loss_sum,
            sites,
            noise_std_per_site: release.noise_std(),
            loss_max: release.loss_max,
        })
    }

    /// Noise standard deviation on each coordinate of the totals (independent noise of every site).
    pub fn noise_std_total(&self) -> f64 {
        self.noise_std_per_site * f64::from(self.sites).sqrt()
    }

    /// The noisy count, floored at 1 (post-processing: any noise gives a usable ratio).
    fn denominator(&self) -> f64 {
        self.count.max(1.0)
    }

    /// Accuracy: noisy correct ÷ noisy count, clamped to [0, 1].
    pub fn accuracy(&self) -> f64 {
        (self.correct / self.denominator()).clamp(0.0, 1.0)
    }

    /// Mean clamped loss: noisy loss sum ÷ noisy count, clamped to [0, loss_max].
    pub fn loss(&self) -> f64 {
        (self.loss_sum / self.denominator()).clamp(0.0, self.loss_max)
    }

    /// Standard deviation of the accuracy's noise (first order in the noise of numerator and denominator, which
    /// are independent with std s each): s·√(1 + a²)/n.
    pub fn accuracy_std(&self) -> f64 {
        let a = self.accuracy();
        self.noise_std_total() * (1.0 + a * a).sqrt() / self.denominator()
    }

    /// Standard deviation of the mean loss's noise, as [`Self::accuracy_std`].
    pub fn loss_std(&self) -> f64 {
        let l = self.loss();
        self.noise_std_total() * (1.0 + l * l).sqrt() / self.denominator()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::ledger::epsilon;

    fn config() -> EvaluationConfig {
        EvaluationConfig {
            holdout_fraction: 0.2,
            epsilon: 1.0,
            schedule: EvaluationSchedule::EveryRound,
            min_records: 10,
            loss_max: 4.0,
            max_records_per_site: 1000,
            seed: 7,
        }
    }

    #[test]
    fn the_holdout_is_per_record_deterministic_and_near_the_fraction() {
        let rows: Vec<[f32; 3]> = (0..4000)
            .map(|i| [i as f32, (i % 13) as f32 * 0.5, -(i as f32) / 7.0])
            .collect();
        let parts: Vec<DataPartition> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| holdout_part(7, r, (i % 2) as i64, 0.2))
            .collect();
        let held = parts
            .iter()
            .filter(|p| **p == DataPartition::Evaluation)
            .count() as f64;
        assert!((held / 4000.0 - 0.2).abs() < 0.03, "{held}");
        // The same record, anywhere in any file, lands in the same part; another seed splits otherwise.
        for (i, r) in rows.iter().enumerate().take(50) {
            assert_eq!(holdout_part(7, r, (i % 2) as i64, 0.2), parts[i]);
        }
        let other: Vec<DataPartition> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| holdout_part(8, r, (i % 2) as i64, 0.2))
            .collect();
        assert_ne!(other, parts);
        assert_eq!(
            holdout_part(1, &[0.0, 1.0], 0, 0.5),
            holdout_part(1, &[-0.0, 1.0], 0, 0.5)
        );
    }

    #[test]
    fn bad_declarations_are_refused_with_the_field() {
        assert_eq!(config().validate(5), Ok(()));
        for f in [0.0, 1.0, -0.1, f64::NAN] {
            let e = EvaluationConfig {
                holdout_fraction: f,
                ..config()
            }
            .validate(5)
            .unwrap_err();
            assert!(e.to_string().contains("holdout_fraction"), "{e}");
        }
        for eps in [0.0, -1.0, f64::INFINITY] {
            let e = EvaluationConfig {
                epsilon: eps,
                ..config()
            }
            .validate(5)
            .unwrap_err();
            assert!(e.to_string().contains("ε ≤ 0"), "{e}");
        }
        let e = EvaluationConfig {
            min_records: 500,
            ..config()
        }
        .validate(5)
        .unwrap_err();
        assert!(
            matches!(e, EvaluationError::NeverEnoughRecords { min: 500, .. }),
            "{e}"
        );
        let e = EvaluationConfig {
            schedule: EvaluationSchedule::EveryKRounds { k: 6 },
            ..config()
        }
        .validate(5)
        .unwrap_err();
        assert_eq!(e, EvaluationError::BadK { k: 6, rounds: 5 });
    }

    #[test]
    fn schedules_pick_the_versions_to_evaluate() {
        let picked = |s: EvaluationSchedule| -> Vec<u32> {
            (0..=5).filter(|t| s.evaluates(*t, 5)).collect()
        };
        assert_eq!(picked(EvaluationSchedule::EveryRound), [1, 2, 3, 4, 5]);
        assert_eq!(picked(EvaluationSchedule::EveryKRounds { k: 2 }), [2, 4, 5]);
        assert_eq!(picked(EvaluationSchedule::AtEnd), [5]);
        assert_eq!(EvaluationSchedule::EveryKRounds { k: 2 }.evaluations(5), 3);
        let json = serde_json::to_string(&EvaluationSchedule::EveryKRounds { k: 3 }).unwrap();
        assert_eq!(json, r#"{"kind":"every_k_rounds","k":3}"#);
    }

    #[test]
    fn one_record_moves_the_sums_by_at_most_the_sensitivity_and_the_release_spends_its_target() {
        let with = site_sums(&[true, false, true], &[0.1, 50.0, f64::NAN], 4.0);
        assert_eq!(with, [2.0, 3.0, 0.1 + 4.0 + 4.0]);
        let without = site_sums(&[true, false], &[0.1, 50.0], 4.0);
        let change: f64 = with
            .iter()
            .zip(&without)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(change <= sensitivity(4.0) + 1e-12, "{change}");
        for target in [0.1, 1.0] {
            let r = EvaluationRelease::for_config(
                &EvaluationConfig {
                    epsilon: target,
                    ..config()
                },
                1e-5,
            )
            .unwrap();
            let spent = epsilon(&[r.event()], 1e-5, AccountantKind::Pld).unwrap();
            assert!(spent <= target && spent > 0.99 * target, "{spent}");
            assert_eq!(r.noise_std(), r.noise_multiplier * 18f64.sqrt());
        }
    }

    #[test]
    fn metrics_follow_from_the_totals_with_a_public_noise_level() {
        let r = EvaluationRelease {
            loss_max: 4.0,
            noise_multiplier: 2.0,
        };
        let t = EvaluationTotals::from_vector(&[90.0, 100.0, 30.0], 4, &r).unwrap();
        assert!((t.accuracy() - 0.9).abs() < 1e-12);
        assert!((t.loss() - 0.3).abs() < 1e-12);
        let s = 2.0 * 18f64.sqrt() * 2.0;
        assert!((t.accuracy_std() - s * (1.81f64).sqrt() / 100.0).abs() < 1e-12);
        // Noise that makes the ratio meaningless still gives bounded numbers.
        let t = EvaluationTotals::from_vector(&[50.0, -3.0, -9.0], 4, &r).unwrap();
        assert_eq!((t.accuracy(), t.loss()), (1.0, 0.0));
        assert!(EvaluationTotals::from_vector(&[1.0, 2.0], 4, &r).is_err());
        assert!(EvaluationTotals::from_vector(&[1.0, f64::NAN, 2.0], 4, &r).is_err());
    }
}
