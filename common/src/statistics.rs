//! The statistics release: per-feature mean and standard deviation learned from every site's records with
//! differential privacy, so that no trusted centre needs data to standardise the model's inputs.
//!
//! Each site maps every feature onto [-1, 1] by the study's public range and clamps it there (z), then releases the
//! vector of 2·d + 1 sums (Σz per feature, Σz² per feature, the record count) with Gaussian noise. Adding or
//! removing one record changes each Σz by at most 1, each Σz² by at most 1 and the count by 1, so the vector's L2
//! sensitivity is √(2d + 1) whatever the records are. The noisy vectors are summed by secure aggregation, so the
//! coordinator sees only the noisy totals; mean and std follow by post-processing, which costs no privacy.
//!
//! Pure: the noise itself is drawn by the participant (opendp's exact Gaussian sampler); this module fixes the
//! numbers the release and its accounting rest on and turns the noisy totals into a scaling.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dp::{AccountantKind, DpError, PrivacyEvent, noise_multiplier_for_target};
use crate::preprocessing::{FeatureScaling, Preprocessing};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Smallest standard deviation derived for a feature, as a fraction of its declared half-range: a noisy variance
/// estimate near 0 would otherwise blow the feature up by orders of magnitude.
pub const MIN_RELATIVE_STD: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum StatisticsError {
    #[error(transparent)]
    Dp(#[from] DpError),
    #[error("the statistics vector has {found} values, {expected} expected (2·features + 1)")]
    WrongLength { expected: usize, found: usize },
    #[error("the statistics vector holds a value that is not finite")]
    NotFinite,
}

/// Length of the released vector for `features` features: Σz and Σz² per feature, then the count.
pub const fn vector_len(features: usize) -> usize {
    2 * features + 1
}

/// L2 sensitivity of the released vector under adding or removing one record (every z in [-1, 1]).
pub fn sensitivity(features: usize) -> f64 {
    (vector_len(features) as f64).sqrt()
}

/// The public parameters of one site's release: computable by anyone from the study's declaration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReleaseParams {
    pub features: usize,
    /// Noise multiplier σ: the noise standard deviation is σ · √(2d + 1) per coordinate.
    pub noise_multiplier: f64,
}

impl ReleaseParams {
    /// The smallest noise multiplier (on the calibration grid) for which one release is (ε, δ)-DP, by the exact
    /// Gaussian curve.
    pub fn for_target(features: usize, epsilon: f64, delta: f64) -> Result<Self, StatisticsError> {
        let noise_multiplier =
            noise_multiplier_for_target(epsilon, delta, 1.0, 1, AccountantKind::Pld)?;
        Ok(Self {
            features,
            noise_multiplier,
        })
    }

    /// Standard deviation of the noise on each coordinate of one site's vector.
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * sensitivity(self.features)
    }

    /// The ledger event of one release: a Gaussian mechanism with ρ = (Δ/σ_noise)²/2 = 1/(2σ²).
    pub fn event(&self) -> PrivacyEvent {
        PrivacyEvent::ZcdpGaussian {
            rho: 1.0 / (2.0 * self.noise_multiplier * self.noise_multiplier),
        }
    }
}

/// What a statistics round published: the derived scaling (post-processing of the noisy totals) and the public
/// parameters its noise can be judged by. Kept with every model version trained after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PublishedStatistics {
    /// The round that released them.
    pub round_id: i64,
    /// Mean (`center`) and std (`scale`) per feature.
    pub scaling: FeatureScaling,
    /// ε of each site's release at `delta`.
    pub epsilon: f64,
    /// δ of each site's release.
    pub delta: f64,
    /// Noise standard deviation on each coordinate of one site's vector (σ·√(2d + 1)).
    pub noise_std_per_site: f64,
    /// Sites whose release is in the totals.
    pub sites: u32,
    /// The noisy record count of all those sites together.
    pub noisy_record_count: f64,
}

/// The clamped sums a site releases: for each row of `features` (row-major, the scaling's features), z =
/// (x − center)/scale clamped to [-1, 1]; returns Σz per feature, Σz² per feature, then the number of rows.
pub fn clamped_sums(scaling: &FeatureScaling, features: &[f32]) -> Vec<f64> {
    let d = scaling.feature_names.len();
    let mut out = vec![0.0; vector_len(d)];
    if d == 0 {
        return out;
    }
    for row in features.chunks_exact(d) {
        for (j, ((x, c), s)) in row
            .iter()
            .zip(&scaling.center)
            .zip(&scaling.scale)
            .enumerate()
        {
            let z = ((f64::from(*x) - c) / s).clamp(-1.0, 1.0);
            out[j] += z;
            out[d + j] += z * z;
        }
        out[2 * d] += 1.0;
    }
    out
}

/// Mean and std per feature from the noisy totals of every site (post-processing of the DP release). The noisy
/// count is floored at 1; each mean is clamped to the declared range and each std to [MIN_RELATIVE_STD, 1] of the
/// half-range, so that any noise still gives a usable, bounded scaling.
pub fn derive(
    preprocessing: &Preprocessing,
    totals: &[f64],
) -> Result<FeatureScaling, StatisticsError> {
    let range = preprocessing.range_scaling();
    let d = range.feature_names.len();
    if totals.len() != vector_len(d) {
        return Err(StatisticsError::WrongLength {
            expected: vector_len(d),
            found: totals.len(),
        });
    }
    if totals.iter().any(|v| !v.is_finite()) {
        return Err(StatisticsError::NotFinite);
    }
    let count = totals[2 * d].max(1.0);
    let mut center = Vec::with_capacity(d);
    let mut scale = Vec::with_capacity(d);
    for j in 0..d {
        let mean_z = (totals[j] / count).clamp(-1.0, 1.0);
        let var_z = totals[d + j] / count - mean_z * mean_z;
        let std_z = var_z.max(0.0).sqrt().clamp(MIN_RELATIVE_STD, 1.0);
        center.push(range.center[j] + range.scale[j] * mean_z);
        scale.push(range.scale[j] * std_z);
    }
    Ok(FeatureScaling {
        feature_names: range.feature_names,
        center,
        scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::ledger::epsilon;
    use crate::preprocessing::FeatureRange;

    fn prep() -> Preprocessing {
        Preprocessing {
            feature_ranges: vec![
                FeatureRange {
                    name: "age".into(),
                    min: 0.0,
                    max: 100.0,
                },
                FeatureRange {
                    name: "dose".into(),
                    min: -1.0,
                    max: 1.0,
                },
            ],
            statistics_round: None,
        }
    }

    #[test]
    fn sums_are_clamped_so_one_record_moves_each_coordinate_by_at_most_one() {
        let scaling = prep().range_scaling();
        // An outlier far beyond its declared range counts like the range's end.
        let rows = [50.0, 0.5, 100.0, -1.0, 10_000.0, 7.0];
        let sums = clamped_sums(&scaling, &rows);
        assert_eq!(
            sums,
            [0.0 + 1.0 + 1.0, 0.5 - 1.0 + 1.0, 2.0, 0.25 + 1.0 + 1.0, 3.0]
        );
        let without_last = clamped_sums(&scaling, &rows[..4]);
        let change: f64 = sums
            .iter()
            .zip(&without_last)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        assert!(change <= sensitivity(2), "{change}");
        assert_eq!(sensitivity(2), 5f64.sqrt());
    }

    #[test]
    fn exact_totals_give_the_records_mean_and_std() {
        let p = prep();
        let rows = [20.0, 0.0, 40.0, 0.5, 60.0, -0.5, 80.0, 0.0];
        let totals = clamped_sums(&p.range_scaling(), &rows);
        let s = derive(&p, &totals).unwrap();
        assert!((s.center[0] - 50.0).abs() < 1e-9, "{s:?}");
        assert!((s.scale[0] - 500f64.sqrt()).abs() < 1e-9, "{s:?}");
        assert!((s.center[1]).abs() < 1e-12);
        assert!((s.scale[1] - 0.125f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn any_noise_gives_a_bounded_scaling_and_bad_vectors_are_refused() {
        let p = prep();
        let s = derive(&p, &[-900.0, 40.0, -5.0, -7.0, -3.0]).unwrap();
        assert_eq!(s.center, [0.0, 1.0], "means clamped into the ranges");
        assert_eq!(s.scale, [50.0 * MIN_RELATIVE_STD, MIN_RELATIVE_STD]);
        assert!(matches!(
            derive(&p, &[0.0; 4]),
            Err(StatisticsError::WrongLength { expected: 5, .. })
        ));
        assert_eq!(
            derive(&p, &[0.0, f64::NAN, 0.0, 0.0, 1.0]),
            Err(StatisticsError::NotFinite)
        );
    }

    #[test]
    fn the_release_spends_exactly_its_target() {
        for target in [0.1, 0.5, 1.0] {
            let r = ReleaseParams::for_target(30, target, 1e-5).unwrap();
            let spent = epsilon(&[r.event()], 1e-5, AccountantKind::Pld).unwrap();
            assert!(spent <= target, "{target}: {spent}");
            assert!(
                spent > target * 0.99,
                "{target}: {spent} (σ on a 0.001 grid)"
            );
            assert_eq!(r.noise_std(), r.noise_multiplier * 61f64.sqrt());
        }
        assert!(ReleaseParams::for_target(3, 0.0, 1e-5).is_err());
        assert!(ReleaseParams::for_target(3, -1.0, 1e-5).is_err());
    }
}
