//! Noise calibration: the smallest noise multiplier σ (on a 10⁻³ grid) whose ε stays within a target.

use super::DpError;
use super::ledger::{AccountantKind, PrivacyEvent, epsilon};
use super::rdp::check_delta;

/// σ is searched on the grid k·10⁻³ (k ≥ 1) …
const GRID: f64 = 1e-3;
/// … up to this multiplier; beyond it a target counts as unreachable.
const MAX_NOISE_MULTIPLIER: f64 = 10_000.0;

/// The smallest σ = k·0.001 such that `steps` steps of the Poisson-subsampled Gaussian with `sampling_rate` have
/// ε ≤ `target_epsilon` at `delta` under `kind`. The answer is rounded *up* to the grid, so ε(σ) ≤ target holds
/// and ε(σ − 0.001) > target (both evaluated by the same accountant).
///
/// Search: exponential bracketing, then bisection on the integer grid. For the PLD accountant the RDP answer
/// (cheap, and never below the PLD answer) seeds the bracket.
pub fn noise_multiplier_for_target(
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: u64,
    kind: AccountantKind,
) -> Result<f64, DpError> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(DpError::InvalidTargetEpsilon(target_epsilon));
    }
    check_delta(delta)?;
    let event = |noise_multiplier| PrivacyEvent::SubsampledGaussian {
        sampling_rate,
        noise_multiplier,
        steps,
    };
    event(1.0).validate()?;
    let fits = |k: u64, kind| -> Result<bool, DpError> {
        Ok(epsilon(&[event(k as f64 * GRID)], delta, kind)? <= target_epsilon)
    };
    let max_k = (MAX_NOISE_MULTIPLIER / GRID) as u64;
    let unreachable = |kind| -> DpError {
        DpError::TargetUnreachable {
            target_epsilon,
            delta,
            max_noise_multiplier: MAX_NOISE_MULTIPLIER,
            achieved_epsilon: epsilon(&[event(MAX_NOISE_MULTIPLIER)], delta, kind)
                .unwrap_or(f64::NAN),
        }
    };

    // A σ (grid index) that fits: from RDP for the PLD search, else by doubling from σ = 1.
    let seed = match kind {
        AccountantKind::Pld => match search(&|k| fits(k, AccountantKind::Rdp), 1000, max_k) {
            Ok(Some(k)) => k,
            _ => 1000,
        },
        AccountantKind::Rdp => 1000,
    };
    match search(&|k| fits(k, kind), seed, max_k)? {
        Some(k) => Ok(k as f64 * GRID),
        None => Err(unreachable(kind)),
    }
}

/// Smallest k in [1, max_k] with `fits(k)`, assuming `fits` is monotone, starting the bracket at `start`.
/// Maintains the invariant "k_lo does not fit (or is 0), k_hi fits", so the result is exact on the grid.
fn search(
    fits: &dyn Fn(u64) -> Result<bool, DpError>,
    start: u64,
    max_k: u64,
) -> Result<Option<u64>, DpError> {
    let start = start.clamp(1, max_k);
    let (mut k_lo, mut k_hi);
    if fits(start)? {
        k_hi = start;
        let mut step = (start / 16).max(1);
        loop {
            let probe = k_hi.saturating_sub(step);
            if probe == 0 {
                k_lo = 0;
                break;
            }
            if fits(probe)? {
                k_hi = probe;
                step *= 2;
            } else {
                k_lo = probe;
                break;
            }
        }
    } else {
        k_lo = start;
        let mut step = (start / 16).max(1);
        loop {
            if k_lo == max_k {
                return Ok(None);
            }
            let probe = (k_lo + step).min(max_k);
            if fits(probe)? {
                k_hi = probe;
                break;
            }
            k_lo = probe;
            step *= 2;
        }
    }
    while k_hi - k_lo > 1 {
        let mid = k_lo + (k_hi - k_lo) / 2;
        if fits(mid)? {
            k_hi = mid;
        } else {
            k_lo = mid;
        }
    }
    Ok(Some(k_hi))
}
