//! Feature preprocessing without central data.
//!
//! A federated model needs one input scale at every site, and nobody holds the records centrally, so the scale
//! cannot come from "the data". It comes from public knowledge instead: the study declares, per feature, a range
//! that domain knowledge (or a dataset's published description) fixes in advance — "age in [0, 120]". With no
//! further release every agent maps each feature's declared range onto [-1, 1]: no privacy cost, nothing learned
//! from any site. Statistics released later with differential privacy (a statistics round) refine that scale;
//! they are post-processing of a DP release and are described by the same [`FeatureScaling`].
//!
//! Pure: no files, no clocks. The agent applies the scaling to its records; the coordinator validates what a study
//! declares.

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Longest feature name accepted in a study.
pub const MAX_FEATURE_NAME_LEN: usize = 200;

/// A feature's public range: what the study knows about it without looking at any site's records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FeatureRange {
    /// The feature's column name, as every site's data names it.
    pub name: String,
    /// Smallest plausible value (finite, < `max`).
    pub min: f64,
    /// Largest plausible value (finite, > `min`).
    pub max: f64,
}

/// How a study's agents scale their features (part of the study and of every round task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// One public range per model input, in the model's input order (the order of the sites' feature columns).
    pub feature_ranges: Vec<FeatureRange>,
    /// A statistics round before training: every site releases its clamped feature sums with DP inside secure
    /// aggregation, and agents standardise with the mean and std derived from the noisy totals. Absent: agents
    /// scale by the ranges alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics_round: Option<StatisticsRound>,
}

/// What a study's statistics round may spend and assume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatisticsRound {
    /// ε of each site's one release (at the study's δ), finite and > 0; charged to every site's dataset ledger.
    pub epsilon: f64,
    /// Most records a site may hold: it bounds the released sums, hence the secure-aggregation range. A site with
    /// more declines the round with the reason.
    pub max_records_per_site: u32,
}

/// Why a declared preprocessing is unusable.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PreprocessingError {
    #[error(
        "preprocessing.feature_ranges declares {found} feature(s), the model has {expected} inputs: declare one \
         public range per model input, in input order"
    )]
    WrongCount { expected: usize, found: usize },
    #[error(
        "preprocessing.feature_ranges[{index}]: name must be 1..={MAX_FEATURE_NAME_LEN} printable characters"
    )]
    BadName { index: usize },
    #[error("preprocessing.feature_ranges: feature '{0}' is declared more than once")]
    Duplicate(String),
    #[error(
        "preprocessing.feature_ranges: feature '{name}' has range [{min}, {max}]; a range needs finite bounds with \
         min < max"
    )]
    BadRange { name: String, min: f64, max: f64 },
    #[error(
        "preprocessing.statistics_round.epsilon must be a finite number > 0 (a release at ε ≤ 0 cannot be \
         differentially private), got {0}"
    )]
    BadEpsilon(f64),
    #[error(
        "preprocessing.statistics_round.max_records_per_site must be in 1..=100000000, got {0}"
    )]
    BadMaxRecords(u32),
    #[error(
        "the study's features are {declared:?}, this site's data has {found:?}: select the study's feature columns \
         in the study's order (--features)"
    )]
    FeatureMismatch {
        declared: Vec<String>,
        found: Vec<String>,
    },
}

impl Preprocessing {
    /// Checks the declaration against a model with `input_dim` inputs: one range per input, names printable and
    /// unique, bounds finite with min < max (and a width that is itself finite).
    /// Ranges only (no statistics round), from `(name, min, max)` in the model's input order.
    pub fn from_ranges<'a>(ranges: impl IntoIterator<Item = &'a (&'a str, f64, f64)>) -> Self {
        Self {
            feature_ranges: ranges
                .into_iter()
                .map(|&(name, min, max)| FeatureRange {
                    name: name.into(),
                    min,
                    max,
                })
                .collect(),
            statistics_round: None,
        }
    }

    pub fn validate(&self, input_dim: usize) -> Result<(), PreprocessingError> {
        let ranges = &self.feature_ranges;
        if ranges.len() != input_dim {
            return Err(PreprocessingError::WrongCount {
                expected: input_dim,
                found: ranges.len(),
            });
        }
        if let Some(round) = &self.statistics_round {
            if !(round.epsilon.is_finite() && round.epsilon > 0.0) {
                return Err(PreprocessingError::BadEpsilon(round.epsilon));
            }
            if !(1..=100_000_000).contains(&round.max_records_per_site) {
                return Err(PreprocessingError::BadMaxRecords(
                    round.max_records_per_site,
                ));
            }
        }
        for (index, r) in ranges.iter().enumerate() {
            if r.name.trim().is_empty()
                || r.name.chars().count() > MAX_FEATURE_NAME_LEN
                || r.name.chars().any(char::is_control)
            {
                return Err(PreprocessingError::BadName { index });
            }
            if ranges[..index].iter().any(|o| o.name == r.name) {
                return Err(PreprocessingError::Duplicate(r.name.clone()));
            }
            if !(r.min.is_finite()
                && r.max.is_finite()
                && r.min < r.max
                && (r.max - r.min).is_finite())
            {
                return Err(PreprocessingError::BadRange {
                    name: r.name.clone(),
                    min: r.min,
                    max: r.max,
                });
            }
        }
        Ok(())
    }

    /// The declared feature names, in order.
    pub fn feature_names(&self) -> Vec<String> {
        self.feature_ranges.iter().map(|r| r.name.clone()).collect()
    }

    /// The scaling every agent applies when nothing but the ranges is known: each range onto [-1, 1].
    pub fn range_scaling(&self) -> FeatureScaling {
        FeatureScaling {
            feature_names: self.feature_names(),
            center: self
                .feature_ranges
                .iter()
                .map(|r| r.min / 2.0 + r.max / 2.0)
                .collect(),
            scale: self
                .feature_ranges
                .iter()
                .map(|r| (r.max - r.min) / 2.0)
                .collect(),
        }
    }
}

/// An affine per-feature scaling x ↦ (x − center) / scale, fixed without looking at a site's records: from the
/// declared ranges, or from DP statistics (center = mean, scale = std).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FeatureScaling {
    /// The features, in the model's input order.
    pub feature_names: Vec<String>,
    /// What is subtracted from each feature.
    pub center: Vec<f64>,
    /// Finite and > 0 for every feature.
    pub scale: Vec<f64>,
}

impl FeatureScaling {
    /// Checks that this scaling is for exactly the features `found` (names and order), so that a site never
    /// scales one column with another's numbers.
    pub fn check_features(&self, found: &[String]) -> Result<(), PreprocessingError> {
        if self.feature_names != found {
            return Err(PreprocessingError::FeatureMismatch {
                declared: self.feature_names.clone(),
                found: found.to_vec(),
            });
        }
        Ok(())
    }

    /// Scales row-major records with `feature_names.len()` columns in place.
    pub fn apply(&self, features: &mut [f32]) {
        let d = self.feature_names.len();
        if d == 0 {
            return;
        }
        for row in features.chunks_exact_mut(d) {
            for ((x, c), s) in row.iter_mut().zip(&self.center).zip(&self.scale) {
                *x = ((f64::from(*x) - c) / s) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(ranges: &[(&str, f64, f64)]) -> Preprocessing {
        Preprocessing::from_ranges(ranges)
    }

    #[test]
    fn ranges_map_onto_minus_one_to_one() {
        let p = prep(&[("age", 0.0, 120.0), ("pixel", 0.0, 16.0)]);
        p.validate(2).unwrap();
        let s = p.range_scaling();
        let mut rows = vec![0.0, 16.0, 60.0, 8.0, 120.0, 0.0];
        s.apply(&mut rows);
        assert_eq!(rows, [-1.0, 1.0, 0.0, 0.0, 1.0, -1.0]);
        s.check_features(&["age".into(), "pixel".into()]).unwrap();
        let e = s
            .check_features(&["pixel".into(), "age".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--features"), "{e}");
    }

    #[test]
    fn unusable_declarations_are_refused_with_the_reason() {
        let e = |p: Preprocessing, d: usize| p.validate(d).unwrap_err().to_string();
        assert!(e(prep(&[("a", 0.0, 1.0)]), 2).contains("1 feature(s), the model has 2"));
        assert!(e(prep(&[]), 1).contains("0 feature(s)"));
        assert!(e(prep(&[("a", 0.0, 1.0), ("a", 0.0, 1.0)]), 2).contains("more than once"));
        assert!(e(prep(&[("a", 1.0, 1.0)]), 1).contains("min < max"));
        assert!(e(prep(&[("a", 2.0, 1.0)]), 1).contains("min < max"));
        assert!(e(prep(&[("a", f64::NAN, 1.0)]), 1).contains("finite"));
        assert!(e(prep(&[("a", -f64::MAX, f64::MAX)]), 1).contains("finite"));
        assert!(e(prep(&[(" ", 0.0, 1.0)]), 1).contains("printable"));
        assert!(e(prep(&[("a\nb", 0.0, 1.0)]), 1).contains("printable"));
        for (epsilon, max_records_per_site, needle) in [
            (0.0, 10, "ε ≤ 0"),
            (-1.0, 10, "ε ≤ 0"),
            (f64::INFINITY, 10, "finite"),
            (1.0, 0, "max_records_per_site"),
        ] {
            let mut p = prep(&[("a", 0.0, 1.0)]);
            p.statistics_round = Some(StatisticsRound {
                epsilon,
                max_records_per_site,
            });
            assert!(e(p, 1).contains(needle), "{needle}");
        }
    }
}
