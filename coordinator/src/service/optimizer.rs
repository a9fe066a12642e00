//! Server optimisers applied to the securely summed update.
//!
//! Participants quantise `w_u · Δ_u` (their update scaled by their weight, usually 1 or a sample count) and put
//! `w_u` in the extra weight coordinate, so the aggregate yields the weighted mean Δ̄ = Σ w_u Δ_u / Σ w_u without
//! revealing any one site's weight. FedAvg: `x ← x + η·Δ̄`. FedAdam (Reddi et al., ICLR 2021) treats Δ̄ as the
//! pseudo-gradient: `m ← β1 m + (1−β1) Δ̄`, `v ← β2 v + (1−β2) Δ̄²`, `x ← x + η m / (√v + ε)`; its moments are
//! kept with each model version.

use confide_common::api::ServerOptimizer;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptimizerError {
    #[error("the aggregate has total weight 0")]
    ZeroWeight,
    #[error("aggregate has {got} coordinates, the model has {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("stored optimiser state is corrupt")]
    CorruptState,
    #[error("the update is not finite")]
    NonFinite,
}

/// Applies one server step to `weights` in place; returns the new optimiser state (FedAdam moments) if any.
pub fn apply(
    optimizer: &ServerOptimizer,
    weights: &mut [f32],
    summed_update: &[f64],
    total_weight: u64,
    state: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, OptimizerError> {
    if summed_update.len() != weights.len() {
        return Err(OptimizerError::WrongLength {
            expected: weights.len(),
            got: summed_update.len(),
        });
    }
    if total_weight == 0 {
        return Err(OptimizerError::ZeroWeight);
    }
    let w = total_weight as f64;
    let mean = summed_update.iter().map(|s| s / w);
    match *optimizer {
        ServerOptimizer::FedAvg { learning_rate } => {
            let mut next: Vec<f32> = Vec::with_capacity(weights.len());
            for (x, d) in weights.iter().zip(mean) {
                next.push((f64::from(*x) + learning_rate * d) as f32);
            }
            if next.iter().any(|v| !v.is_finite()) {
                return Err(OptimizerError::NonFinite);
            }
            weights.copy_from_slice(&next);
            Ok(None)
        }
        ServerOptimizer::FedAdam {
            learning_rate,
            beta1,
            beta2,
            epsilon,
        } => {
            let n = weights.len();
            let (mut m, mut v) = match state {
                None => (vec![0f64; n], vec![0f64; n]),
                Some(bytes) => decode_moments(bytes, n)?,
            };
            let mut next: Vec<f32> = Vec::with_capacity(n);
            for (i, d) in mean.enumerate() {
                m[i] = beta1 * m[i] + (1.0 - beta1) * d;
                v[i] = beta2 * v[i] + (1.0 - beta2) * d * d;
                next.push(
                    (f64::from(weights[i]) + learning_rate * m[i] / (v[i].sqrt() + epsilon)) as f32,
                );
            }
            if next.iter().any(|v| !v.is_finite()) {
                return Err(OptimizerError::NonFinite);
            }
            weights.copy_from_slice(&next);
            Ok(Some(encode_moments(&m, &v)))
        }
    }
}

fn encode_moments(m: &[f64], v: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * m.len());
    for x in m.iter().chain(v) {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn decode_moments(bytes: &[u8], n: usize) -> Result<(Vec<f64>, Vec<f64>), OptimizerError> {
    if bytes.len() != 16 * n {
        return Err(OptimizerError::CorruptState);
    }
    let all: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let (m, v) = all.split_at(n);
    Ok((m.to_vec(), v.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_adds_the_weighted_mean_times_the_learning_rate() {
        let mut w = vec![1.0f32, -1.0];
        // two participants with weights 1 and 3: Σ w_u Δ_u = [4, 8], Σ w_u = 4 → Δ̄ = [1, 2]
        let state = apply(
            &ServerOptimizer::FedAvg { learning_rate: 0.5 },
            &mut w,
            &[4.0, 8.0],
            4,
            None,
        )
        .unwrap();
        assert_eq!(state, None);
        assert_eq!(w, vec![1.5, 0.0]);
        assert_eq!(
            apply(
                &ServerOptimizer::FedAvg { learning_rate: 1.0 },
                &mut w,
                &[1.0],
                1,
                None
            ),
            Err(OptimizerError::WrongLength {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            apply(
                &ServerOptimizer::FedAvg { learning_rate: 1.0 },
                &mut w,
                &[1.0, 1.0],
                0,
                None
            ),
            Err(OptimizerError::ZeroWeight)
        );
        assert_eq!(w, vec![1.5, 0.0], "failed steps leave the weights alone");
    }

    #[test]
    fn fedadam_keeps_its_moments_between_rounds() {
        let opt = ServerOptimizer::FedAdam {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            epsilon: 1e-3,
        };
        let mut w = vec![0.0f32; 2];
        let s1 = apply(&opt, &mut w, &[1.0, -2.0], 1, None).unwrap().unwrap();
        // m = [0.1, -0.2], v = [0.01, 0.04] → step = 0.1 · m / (√v + 1e-3)
        assert!((f64::from(w[0]) - 0.1 * 0.1 / (0.1 + 1e-3)).abs() < 1e-6);
        assert!((f64::from(w[1]) + 0.1 * 0.2 / (0.2 + 1e-3)).abs() < 1e-6);
        let before = w.clone();
        let s2 = apply(&opt, &mut w, &[1.0, -2.0], 1, Some(&s1))
            .unwrap()
            .unwrap();
        assert_ne!(s1, s2);
        assert!(w[0] > before[0] && w[1] < before[1]);
        assert_eq!(
            apply(&opt, &mut w, &[1.0, -2.0], 1, Some(&s1[..8])),
            Err(OptimizerError::CorruptState)
        );
    }
}
