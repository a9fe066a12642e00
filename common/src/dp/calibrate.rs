//! Noise calibration: the smallest noise multiplier σ (on a 10⁻³ grid) whose ε stays within a target.

use super::DpError;
use super::ledger::{AccountantKind, PrivacyEvent, epsilon};
use super::rdp::check_delta;

/// σ is searched on the grid k/1000 (k ≥ 1) …
const GRID_PER_UNIT: f64 = 1000.0;
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
        Ok(epsilon(&[event(k as f64 / GRID_PER_UNIT)], delta, kind)? <= target_epsilon)
    };
    let max_k = (MAX_NOISE_MULTIPLIER * GRID_PER_UNIT) as u64;
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
        Some(k) => Ok(k as f64 / GRID_PER_UNIT),
        None => Err(unreachable(kind)),
    }
}

/// The smallest σ on the grid for a study of `rounds` rounds of `steps_per_round` steps each: the ledger the
/// coordinator and every agent keep holds one event per round, and the accountants merge identical mechanisms before
/// composing, so those R events have exactly the ε of one event of R·T steps ([`noise_multiplier_for_target`]). The
/// R-event ledger is evaluated once more and must fit, so a future change to merging fails here rather than letting a
/// study run above its target.
pub fn noise_multiplier_for_rounds(
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps_per_round: u64,
    rounds: u32,
    kind: AccountantKind,
) -> Result<f64, DpError> {
    if steps_per_round == 0 || rounds == 0 {
        return Err(DpError::ZeroSteps);
    }
    let total = steps_per_round
        .checked_mul(u64::from(rounds))
        .ok_or(DpError::TooManySteps {
            steps_per_round,
            rounds,
        })?;
    let sigma = noise_multiplier_for_target(target_epsilon, delta, sampling_rate, total, kind)?;
    let per_round = PrivacyEvent::SubsampledGaussian {
        sampling_rate,
        noise_multiplier: sigma,
        steps: steps_per_round,
    };
    let ledger = vec![per_round; rounds as usize];
    let achieved = epsilon(&ledger, delta, kind)?;
    if achieved > target_epsilon {
        return Err(DpError::CalibrationMismatch {
            noise_multiplier: sigma,
            rounds,
            achieved_epsilon: achieved,
            target_epsilon,
        });
    }
    Ok(sigma)
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
