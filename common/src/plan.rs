//! What a study's round asks of every participant, derived from public study parameters only: the DP-SGD steps
//! and the privacy events a round charges, and the largest update coordinate those parameters allow (the default
//! quantisation range). The coordinator, the agent and the CLI all derive these here, so they cannot disagree.

use crate::api::{DpParams, LocalOptimizer, LocalTraining};
use crate::dp::PrivacyEvent;

/// DP-SGD steps of one round: ⌈local_epochs / q⌉ Poisson-sampled batches.
pub fn planned_steps(dp: &DpParams) -> u64 {
    (f64::from(dp.local_epochs) / dp.sampling_rate).ceil() as u64
}

/// The events one round charges a participant whose input is aggregated: its local DP-SGD run.
pub fn planned_events(dp: &DpParams) -> Vec<PrivacyEvent> {
    vec![PrivacyEvent::SubsampledGaussian {
        sampling_rate: dp.sampling_rate,
        noise_multiplier: dp.noise_multiplier,
        steps: planned_steps(dp),
    }]
}

/// Standard deviations of noise beyond which a coordinate counts as an outlier for [`update_bound`]: a Gaussian
/// exceeds 5σ with probability 5.7e-7.
const NOISE_SIGMAS: f64 = 5.0;

/// Adam (torch's default β₁ = 0.9, β₂ = 0.999) moves a coordinate by at most lr·(1−β₁)/√(1−β₂) ≈ 3.17·lr per step
/// once its moment estimates have warmed up (and by at most lr in the first step).
const ADAM_STEP_BOUND: f64 = 0.1 / 0.031_622_776_601_683_79;

/// The largest |Δⱼ| one round of local DP-SGD is expected to produce in any coordinate, from public parameters:
/// the default quantisation range, and the yardstick a given range is checked against.
///
/// SGD with momentum μ (torch's rule, buffer from zero): Δ = −lr·Σₜ aₜ·gₜ with aₜ = (1 − μ^{S−t+1})/(1 − μ), where
/// gₜ = (Σᵢ clipped gradientsᵢ + N(0, σ²C²))/B. A coordinate of the clipped sum is at most b·C for a batch of b
/// records; a site whose batches are about the study's expected size B contributes at most C per step. So
/// |Δⱼ| ≤ lr·(C·‖a‖₁ + 5·σC/B·‖a‖₂): the signal at its worst, plus 5 standard deviations of the accumulated noise.
/// Adam: at most [`ADAM_STEP_BOUND`]·lr per step, S steps.
pub fn update_bound(dp: &DpParams, local: &LocalTraining) -> f64 {
    let steps = planned_steps(dp);
    match local.optimizer {
        LocalOptimizer::Adam => ADAM_STEP_BOUND * local.learning_rate * steps as f64,
        LocalOptimizer::Sgd => {
            let mu = local.momentum;
            // aₜ for t = S..1, i.e. Σ_{k<j} μᵏ for j = 1..=S.
            let (mut l1, mut l2_squared, mut a, mut power) = (0.0, 0.0, 0.0, 1.0);
            for _ in 0..steps.min(1_000_000) {
                a += power;
                power *= mu;
                l1 += a;
                l2_squared += a * a;
            }
            if steps > 1_000_000 {
                // Beyond a million steps every aₜ has converged to 1/(1 − μ) (μ < 1).
                let rest = (steps - 1_000_000) as f64;
                let limit = 1.0 / (1.0 - mu);
                l1 += rest * limit;
                l2_squared += rest * limit * limit;
            }
            let c = dp.clip_norm;
            local.learning_rate
                * (c * l1
                    + NOISE_SIGMAS * dp.noise_multiplier * c / dp.expected_batch_size
                        * l2_squared.sqrt())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp() -> DpParams {
        DpParams {
            sampling_rate: 0.2,
            noise_multiplier: 5.5,
            local_epochs: 2,
            clip_norm: 1.0,
            expected_batch_size: 23.0,
            target_epsilon: None,
        }
    }

    #[test]
    fn steps_and_events_follow_the_study() {
        assert_eq!(planned_steps(&dp()), 10);
        assert_eq!(
            planned_events(&dp()),
            vec![PrivacyEvent::SubsampledGaussian {
                sampling_rate: 0.2,
                noise_multiplier: 5.5,
                steps: 10
            }]
        );
    }

    #[test]
    fn sgd_bound_matches_the_momentum_weights() {
        let local = LocalTraining {
            optimizer: LocalOptimizer::Sgd,
            learning_rate: 0.1,
            momentum: 0.0,
        };
        // Without momentum every aₜ = 1: ‖a‖₁ = S, ‖a‖₂ = √S.
        let want = 0.1 * (10.0 + 5.0 * 5.5 / 23.0 * 10f64.sqrt());
        assert!((update_bound(&dp(), &local) - want).abs() < 1e-12);
        // Momentum only makes the steps add up further.
        let with_momentum = LocalTraining {
            momentum: 0.9,
            ..local
        };
        assert!(update_bound(&dp(), &with_momentum) > 4.0 * want);
        let adam = LocalTraining {
            optimizer: LocalOptimizer::Adam,
            learning_rate: 0.01,
            momentum: 0.9,
        };
        assert!((update_bound(&dp(), &adam) - 0.01 * 10.0 * ADAM_STEP_BOUND).abs() < 1e-12);
    }
}
