//! Quantisation of f32 updates into the ring Z_{2^bits} and back.
//!
//! Each coordinate is clipped to [−clip, clip], scaled to [−levels, levels] and rounded stochastically (up with
//! probability equal to the fractional part, so the rounding is unbiased), then stored in two's complement mod
//! 2^bits. The sum of `n` such values lies in [−n·levels, n·levels]; parameter sets where that range does not fit
//! in the signed range of the ring are rejected, so the aggregate can never silently wrap.
//!
//! One extra, last coordinate carries the participant's weight (e.g. its sample count), so the aggregate reveals
//! only the total weight, never one site's.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use super::error::{Result, SecAggError};

/// How updates are mapped into the ring. Build with [`QuantizationParams::new`] or
/// [`QuantizationParams::for_participants`]; both guarantee the sum of `participants` inputs cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantizationParams {
    /// Coordinates are clipped to [−clip, clip].
    pub clip: f32,
    /// Integer levels per side: `clip` maps to `levels`.
    pub levels: u32,
    /// Ring size exponent (≤ 32).
    pub bits: u32,
    /// Upper bound on the number of inputs summed.
    pub participants: u32,
    /// Largest weight one participant may put in the weight coordinate.
    pub max_weight: u32,
}

/// A dequantised aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct DequantizedSum {
    /// Sum of the (clipped, quantised) updates, per coordinate.
    pub values: Vec<f64>,
    /// Sum of the participants' weights.
    pub total_weight: u64,
}

impl QuantizationParams {
    /// Validates an explicit parameter set; rejects any whose sum of `participants` inputs could overflow.
    pub fn new(
        clip: f32,
        levels: u32,
        bits: u32,
        participants: u32,
        max_weight: u32,
    ) -> Result<Self> {
        let q = QuantizationParams {
            clip,
            levels,
            bits,
            participants,
            max_weight,
        };
        q.validate()?;
        Ok(q)
    }

    /// The finest quantisation (most levels) for which `participants` inputs cannot overflow Z_{2^bits}.
    pub fn for_participants(
        clip: f32,
        bits: u32,
        participants: u32,
        max_weight: u32,
    ) -> Result<Self> {
        if participants == 0 || !(2..=32).contains(&bits) {
            return Err(SecAggError::Quantization(format!(
                "need ≥ 1 participant and 2 ≤ bits ≤ 32 (bits = {bits})"
            )));
        }
        let half = (1u64 << (bits - 1)) - 1;
        let levels = (half / u64::from(participants)).min(u64::from(u32::MAX)) as u32;
        Self::new(clip, levels, bits, participants, max_weight)
    }

    /// Checks the overflow bound and the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(2..=32).contains(&self.bits) {
            return Err(SecAggError::Quantization(format!(
                "bits must be in 2..=32, got {}",
                self.bits
            )));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(SecAggError::Quantization(
                "clip must be finite and positive".into(),
            ));
        }
        if self.levels == 0 || self.participants == 0 {
            return Err(SecAggError::Quantization(
                "levels and participants must be positive".into(),
            ));
        }
        let half = (1u64 << (self.bits - 1)) - 1;
        let n = u64::from(self.participants);
        if n * u64::from(self.levels) > half {
            return Err(SecAggError::Quantization(format!(
                "{} inputs of up to ±{} levels can overflow Z_2^{} (need n·levels ≤ {half})",
                self.participants, self.levels, self.bits
            )));
        }
        // The weight coordinate is summed unsigned; keep it within the same signed half so it reads back exactly.
        if n * u64::from(self.max_weight) > half {
            return Err(SecAggError::Quantization(format!(
                "{} weights of up to {} can overflow Z_2^{}",
                self.participants, self.max_weight, self.bits
            )));
        }
        Ok(())
    }

    fn ring_mask(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// How many coordinates of `update` lie outside [−clip, clip] and would be clamped by [`Self::quantize`].
    /// Data-dependent: for the site's own log, never to be sent.
    pub fn clamped_count(&self, update: &[f32]) -> usize {
        update.iter().filter(|v| v.abs() > self.clip).count()
    }

    /// Quantises an update and appends the weight coordinate; the result has `update.len() + 1` ring elements.
    /// Non-finite coordinates are refused rather than silently clipped.
    pub fn quantize<R: CryptoRng + ?Sized>(
        &self,
        update: &[f32],
        weight: u32,
        rng: &mut R,
    ) -> Result<Vec<u32>> {
        if weight > self.max_weight {
            return Err(SecAggError::Quantization(format!(
                "weight {weight} exceeds max_weight {}",
                self.max_weight
            )));
        }
        if let Some(i) = update.iter().position(|v| !v.is_finite()) {
            return Err(SecAggError::Quantization(format!(
                "coordinate {i} is not finite"
            )));
        }
        let scale = f64::from(self.levels) / f64::from(self.clip);
        let mask = self.ring_mask();
        let clip = f64::from(self.clip);
        let mut out = Vec::with_capacity(update.len() + 1);
        for &v in update {
            let scaled = f64::from(v).clamp(-clip, clip) * scale;
            let floor = scaled.floor();
            let frac = scaled - floor;
            // Uniform in [0, 1) with 53 random bits.
            let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            let rounded = floor as i64 + i64::from(u < frac);
            let rounded = rounded.clamp(-i64::from(self.levels), i64::from(self.levels));
            out.push(((rounded as u64) & mask) as u32);
        }
        out.push(weight);
        Ok(out)
    }

    /// Turns an aggregate (update coordinates then the weight coordinate) back into real numbers.
    pub fn dequantize(&self, sum: &[u32]) -> Result<DequantizedSum> {
        let Some((&weight, values)) = sum.split_last() else {
            return Err(SecAggError::Quantization("empty aggregate".into()));
        };
        let bits = self.bits;
        let modulus = 1i128 << bits;
        let half = 1i128 << (bits - 1);
        let inv_scale = f64::from(self.clip) / f64::from(self.levels);
        let values = values
            .iter()
            .map(|&v| {
                let v = i128::from(v) & (modulus - 1);
                let signed = if v >= half { v - modulus } else { v };
                signed as f64 * inv_scale
            })
            .collect();
        Ok(DequantizedSum {
            values,
            total_weight: u64::from(weight),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn overflow_is_rejected() {
        // 100 participants × 2^25 levels > 2^31 − 1.
        assert!(QuantizationParams::new(1.0, 1 << 25, 32, 100, 1).is_err());
        assert!(QuantizationParams::new(1.0, 1 << 20, 32, 100, 1).is_ok());
        assert!(QuantizationParams::new(1.0, 1 << 20, 32, 100, u32::MAX).is_err());
        assert!(QuantizationParams::new(1.0, 10, 33, 2, 1).is_err());
        assert!(QuantizationParams::new(f32::NAN, 10, 32, 2, 1).is_err());
        let q = QuantizationParams::for_participants(1.0, 16, 100, 10).unwrap();
        assert_eq!(q.levels, 32767 / 100);
        assert!(QuantizationParams::new(1.0, q.levels + 1, 16, 100, 10).is_err());
    }

    #[test]
    fn clamped_coordinates_are_counted() {
        let q = QuantizationParams::for_participants(2.0, 32, 3, 1).unwrap();
        assert_eq!(q.clamped_count(&[0.0, 2.0, -2.0, 2.5, -3.0, 1.9]), 2);
        assert_eq!(q.clamped_count(&[]), 0);
    }

    #[test]
    fn extreme_sums_do_not_wrap() {
        let q = QuantizationParams::for_participants(2.0, 12, 7, 3).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for sign in [1.0f32, -1.0] {
            let mut sum = vec![0u32; 3];
            for _ in 0..7 {
                let x = q.quantize(&[sign * 5.0, sign * 2.0], 3, &mut rng).unwrap();
                for (s, v) in sum.iter_mut().zip(&x) {
                    *s = s.wrapping_add(*v) & ((1 << 12) - 1);
                }
            }
            let d = q.dequantize(&sum).unwrap();
            assert!(
                (d.values[0] - f64::from(sign) * 14.0).abs() < 1e-9,
                "{:?}",
                d.values
            );
            assert!((d.values[1] - f64::from(sign) * 14.0).abs() < 1e-9);
            assert_eq!(d.total_weight, 21);
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let q = QuantizationParams::new(1.0, 10, 32, 4, 1).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for &x in &[0.037f32, -0.51, 0.999, -0.0049] {
            let trials = 40_000;
            let mut sum = 0f64;
            for _ in 0..trials {
                let v = q.quantize(&[x], 1, &mut rng).unwrap();
                sum += q.dequantize(&v).unwrap().values[0];
            }
            let mean = sum / f64::from(trials);
            // Rounding error per draw is < 1 level = 0.1, so its std-dev is ≤ 0.05; 5σ of the mean ≈ 0.00125.
            assert!(
                (mean - f64::from(x)).abs() < 0.00125,
                "x = {x}, mean = {mean}"
            );
        }
    }

    #[test]
    fn non_finite_and_heavy_inputs_are_refused() {
        let q = QuantizationParams::new(1.0, 10, 32, 4, 5).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        assert!(q.quantize(&[f32::INFINITY], 1, &mut rng).is_err());
        assert!(q.quantize(&[0.0], 6, &mut rng).is_err());
    }
}
