//! A site's small DP releases (the statistics round's clamped sums, evaluation metrics) through opendp's zCDP
//! Gaussian mechanism: an exact discrete-Gaussian sampler with rational arithmetic, which resists the floating-point
//! attacks a naive sampler is open to. It costs tens of µs per value, so it serves vectors of a few dozen values;
//! gradient noise stays in `confide_common::dp::noise`. This is the only place the participant uses opendp.
//!
//! Fail closed: opendp's own privacy map must put the release at or below the ρ the ledger was charged for, or
//! nothing is released.

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error("opendp refused the release: {0}")]
    OpenDp(String),
    #[error(
        "opendp accounts this release at ρ = {actual}, more than the ρ = {planned} charged for it: nothing released"
    )]
    OverCharge { planned: f64, actual: f64 },
    #[error("the release's {0} must be a finite number > 0")]
    BadParameter(&'static str),
}

/// `values` plus independent Gaussian noise of standard deviation `noise_std` on every coordinate, through opendp,
/// after checking that opendp's privacy map at L2 `sensitivity` gives at most `charged_rho` (zCDP).
pub fn gaussian_release(
    values: &[f64],
    sensitivity: f64,
    noise_std: f64,
    charged_rho: f64,
) -> Result<Vec<f64>, ReleaseError> {
    for (v, what) in [
        (sensitivity, "sensitivity"),
        (noise_std, "noise standard deviation"),
        (charged_rho, "charged ρ"),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(ReleaseError::BadParameter(what));
        }
    }
    let opendp = |e: opendp::error::Error| ReleaseError::OpenDp(e.to_string());
    let mechanism = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        noise_std,
        None,
    )
    .map_err(opendp)?;
    let actual = mechanism.map(&sensitivity).map_err(opendp)?;
    // NaN fails this test too: only a ρ provably within the charge passes.
    if actual.is_nan() || actual > charged_rho {
        return Err(ReleaseError::OverCharge {
            planned: charged_rho,
            actual,
        });
    }
    mechanism.invoke(&values.to_vec()).map_err(opendp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_noisy_around_the_values_and_charged_what_opendp_accounts() {
        let (sensitivity, std) = (61f64.sqrt(), 20.0);
        let rho = (sensitivity / std).powi(2) / 2.0;
        let values: Vec<f64> = (0..2000).map(|i| f64::from(i % 7)).collect();
        let noisy = gaussian_release(&values, sensitivity, std, rho * (1.0 + 1e-9)).unwrap();
        let diffs: Vec<f64> = noisy.iter().zip(&values).map(|(n, v)| n - v).collect();
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / diffs.len() as f64;
        assert!(
            mean.abs() < 4.0 * std / (diffs.len() as f64).sqrt(),
            "{mean}"
        );
        assert!((var.sqrt() / std - 1.0).abs() < 0.1, "{}", var.sqrt());
        // Charged less than opendp accounts: refused, nothing released.
        let e = gaussian_release(&values, sensitivity, std, rho / 2.0).unwrap_err();
        assert!(matches!(e, ReleaseError::OverCharge { .. }), "{e}");
        assert!(gaussian_release(&values, sensitivity, 0.0, rho).is_err());
        assert!(gaussian_release(&values, f64::NAN, std, rho).is_err());
    }
}
