//! The exact privacy curve of the Gaussian mechanism (Balle & Wang, "Improving the Gaussian Mechanism for
//! Differential Privacy", ICML 2018, Theorem 8).
//!
//! A Gaussian mechanism with sensitivity 1 and noise multiplier σ is (ε, δ)-DP exactly for
//! δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ) with μ = 1/σ. Composing Gaussian mechanisms gives a Gaussian
//! mechanism with μ² = Σ μᵢ² (T steps at σ: μ = √T/σ; a zCDP-ρ Gaussian release: μ² = 2ρ), so this curve is
//! the exact answer whenever every event has sampling rate q = 1. Both accountants are checked against it.

use super::DpError;
use super::special::{log_mills, log_ndtr, log_phi};

/// δ(ε) of a Gaussian mechanism whose sensitivity-to-noise ratio is `mu` (μ = Δ/σ).
///
/// With z₁ = ε/μ − μ/2 and z₂ = ε/μ + μ/2, e^ε·φ(z₂) = φ(z₁), so e^ε·Φ(−z₂) = φ(z₁)·M(z₂) (M the Mills ratio):
/// written that way nothing of size e^ε is ever formed, and δ stays accurate when ε is in the billions (tiny σ).
pub fn delta_for_epsilon(mu: f64, epsilon: f64) -> f64 {
    let z1 = epsilon / mu - mu / 2.0;
    let z2 = epsilon / mu + mu / 2.0;
    let a = if z1 > 0.0 {
        (log_phi(z1) + log_mills(z1)).exp()
    } else {
        log_ndtr(-z1).exp()
    };
    let b = if z2 > 0.0 {
        (log_phi(z1) + log_mills(z2)).exp()
    } else {
        (epsilon + log_ndtr(-z2)).exp()
    };
    (a - b).clamp(0.0, 1.0)
}

/// The smallest ε ≥ 0 with δ(ε) ≤ `delta` for a Gaussian mechanism with ratio `mu`, by bisection.
/// The upper end of the final bracket is returned, so the answer never underestimates ε.
pub fn epsilon_for_delta(mu: f64, delta: f64) -> Result<f64, DpError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(DpError::InvalidDelta(delta));
    }
    if !(mu.is_finite() && mu > 0.0) {
        return Err(DpError::InvalidNoiseMultiplier(1.0 / mu));
    }
    if delta_for_epsilon(mu, 0.0) <= delta {
        return Ok(0.0);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while delta_for_epsilon(mu, hi) > delta {
        lo = hi;
        hi *= 2.0;
    }
    while hi - lo > 1e-13 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if delta_for_epsilon(mu, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// μ of `steps` compositions of a Gaussian mechanism with noise multiplier σ: √steps / σ.
pub fn composed_mu(noise_multiplier: f64, steps: u64) -> f64 {
    (steps as f64).sqrt() / noise_multiplier
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_balle_wang_reference_values() {
        // σ = 1, one release, δ = 1e-5: ε from the analytic Gaussian (scipy bisection, generate.py).
        let eps = epsilon_for_delta(1.0, 1e-5).unwrap();
        assert!((delta_for_epsilon(1.0, eps) - 1e-5).abs() < 1e-12);
        assert!(delta_for_epsilon(1.0, eps * (1.0 - 1e-9)) > 1e-5);
    }

    #[test]
    fn large_epsilon_does_not_overflow() {
        // σ = 0.5 over 10,000 steps: ε is in the tens of thousands.
        let mu = composed_mu(0.5, 10_000);
        let eps = epsilon_for_delta(mu, 1e-6).unwrap();
        assert!(eps.is_finite() && eps > 20_000.0, "{eps}");
        assert!((delta_for_epsilon(mu, eps) - 1e-6).abs() < 1e-9);
    }

    #[test]
    fn tiny_noise_gives_the_right_order_of_magnitude() {
        // σ = 1e-9 (μ = 1e9): ε ≈ μ²/2 + μ·Φ⁻¹(1 − δ) — the naive e^ε·Φ(·) form loses all digits here.
        let mu = 1e9;
        let eps = epsilon_for_delta(mu, 1e-5).unwrap();
        let approx = mu * mu / 2.0 + mu * 4.264_890_793_922_825;
        assert!((eps - approx).abs() < 1e-6 * approx, "{eps} vs {approx}");
        assert!(delta_for_epsilon(mu, eps * (1.0 - 1e-9)) > 1e-5);
    }

    #[test]
    fn rejects_bad_delta() {
        assert!(epsilon_for_delta(1.0, 0.0).is_err());
        assert!(epsilon_for_delta(1.0, 1.0).is_err());
        assert!(epsilon_for_delta(1.0, f64::NAN).is_err());
    }
}
