//! The exact privacy curve of one Poisson-subsampled Gaussian step (sensitivity 1), under REMOVE and ADD adjacency,
//! evaluated with a bound on its own floating-point error.
//!
//! For a pair (P, Q) with privacy loss L = ln(dP/dQ), in the variable x = e^ε the curve is
//! δ(x) = P[L > ln x] − x·Q[L > ln x]: convex, non-increasing, with slope dδ/dx = −Q[L > ln x]. Each evaluation
//! returns δ and the *scaled slope* e^ε·Q[L > ε] = −x·δ'(x) (≤ P[L > ε] ≤ 1, so it never overflows), which the
//! optimistic discretisation needs for its tangent lines.
//!
//! Large ε (tiny σ) would make e^ε·Φ(·) overflow or cancel; the REMOVE curve is therefore written with the identity
//! (e^ε − 1 + q)·φ(b) = q·φ(a) and the Mills ratio, so no factor e^ε is ever formed.

use crate::dp::special::{log_add, log_mills, log_ndtr, log_phi};

/// Φ⁻¹(½·e^{−50}) (scipy.stats.norm.ppf): noise tails beyond this are not discretised (the pessimistic bound moves
/// their mass to +∞, the optimistic one drops it), as `dp_accounting`'s `log_mass_truncation_bound = −50`.
const NOISE_TRUNCATION_Z: f64 = -9.745_474_864_965_935;

/// Relative error of one rounding.
const ULP: f64 = f64::EPSILON;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Adjacency {
    /// P = q·N(−1, σ²) + (1−q)·N(0, σ²), Q = N(0, σ²).
    Remove,
    /// P = N(0, σ²), Q = q·N(1, σ²) + (1−q)·N(0, σ²).
    Add,
}

/// Privacy loss of one Poisson-subsampled Gaussian step (sensitivity 1), non-increasing in the outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct SubsampledGaussianLoss {
    pub sigma: f64,
    pub q: f64,
    pub adjacency: Adjacency,
}

/// The curve at one ε: δ, e^ε·Q[L > ε], each with an absolute bound on its floating-point error.
#[derive(Debug, Clone, Copy)]
pub(super) struct CurvePoint {
    pub delta: f64,
    pub delta_err: f64,
    pub scaled_slope: f64,
    pub scaled_slope_err: f64,
}

/// A positive term computed as exp of a sum of logarithms; `mag` is Σ|summands|, which bounds the rounding
/// error of the sum (each summand is itself accurate to a few ulps of its size).
#[derive(Debug, Clone, Copy)]
struct LogTerm {
    ln: f64,
    mag: f64,
}

impl LogTerm {
    fn of(parts: &[f64]) -> Self {
        Self {
            ln: parts.iter().sum(),
            mag: parts.iter().map(|p| p.abs()).sum(),
        }
    }

    /// Adds `extra` to the magnitude: a cancellation inside one of the summands.
    fn widened(self, extra: f64) -> Self {
        Self {
            mag: self.mag + extra.abs(),
            ..self
        }
    }

    fn value(self) -> f64 {
        self.ln.exp()
    }

    /// Error bound of `value()`: 8 ulps of every summand of the logarithm, 2e-14 for the truncated asymptotic series
    /// of log Φ far in the tail, and the final exp.
    fn err(self) -> f64 {
        let value = self.value();
        if value == 0.0 {
            return 0.0;
        }
        value * (8.0 * ULP * self.mag + 2e-14 + 4.0 * ULP)
    }
}

/// ln(e^ε − 1 + q), stable for large ε.
fn ln_expm1_plus_q(epsilon: f64, q: f64) -> f64 {
    if epsilon > 0.0 {
        epsilon + (-(1.0 - q) * (-epsilon).exp()).ln_1p()
    } else {
        (epsilon.exp_m1() + q).ln()
    }
}

impl SubsampledGaussianLoss {
    pub fn privacy_loss(&self, x: f64) -> f64 {
        let s2 = 2.0 * self.sigma * self.sigma;
        match self.adjacency {
            Adjacency::Remove => {
                let g = (-2.0 * x - 1.0) / s2;
                if self.q == 1.0 {
                    g
                } else {
                    log_add((-self.q).ln_1p(), self.q.ln() + g)
                }
            }
            Adjacency::Add => {
                let g = (2.0 * x - 1.0) / s2;
                if self.q == 1.0 {
                    -g
                } else {
                    -log_add((-self.q).ln_1p(), self.q.ln() + g)
                }
            }
        }
    }

    /// A loss to put a grid point on: where the curve stops being exactly linear and the non-participating
    /// outcomes pile up — ln(1−q) (REMOVE, the smallest loss) or −ln(1−q) (ADD, the largest). For small q (or a
    /// coarse grid) most of the mass sits within far less than one grid step of it; with a grid point there the
    /// tangent-line (lower) discretisation stays tight instead of rounding that mass down by up to a step.
    pub fn anchor(&self) -> f64 {
        if self.q == 1.0 {
            return 0.0;
        }
        match self.adjacency {
            Adjacency::Remove => (-self.q).ln_1p(),
            Adjacency::Add => -(-self.q).ln_1p(),
        }
    }

    /// The range of losses to discretise: losses of the outcomes at the noise truncation points.
    pub fn epsilon_range(&self) -> (f64, f64) {
        let z = self.sigma * NOISE_TRUNCATION_Z;
        let (lower_x, upper_x) = match self.adjacency {
            Adjacency::Remove => (z - 1.0, -z),
            Adjacency::Add => (z, -z + 1.0),
        };
        (self.privacy_loss(upper_x), self.privacy_loss(lower_x))
    }

    /// The exact curve at `epsilon`.
    pub fn point(&self, epsilon: f64) -> CurvePoint {
        let (q, sigma) = (self.q, self.sigma);
        let ln_q = q.ln();
        let ln_1mq = (-q).ln_1p();
        match self.adjacency {
            Adjacency::Remove => {
                if q < 1.0 && epsilon <= ln_1mq {
                    // Every outcome has loss > ln(1−q) ≥ ε: P[L > ε] = Q[L > ε] = 1.
                    let delta = -epsilon.exp_m1();
                    let x = epsilon.exp();
                    return CurvePoint {
                        delta,
                        delta_err: 4.0 * ULP * delta,
                        scaled_slope: x,
                        scaled_slope_err: 4.0 * ULP * x,
                    };
                }
                // Losses ≥ ε are the outcomes ≤ x(ε), where q·e^{(−2x−1)/(2σ²)} = e^ε − 1 + q.
                // a = (x+1)/σ, b = x/σ, written so that neither loses digits when σ is tiny.
                let d = ln_expm1_plus_q(epsilon, q) - ln_q;
                let a = 0.5 / sigma - sigma * d;
                let b = -0.5 / sigma - sigma * d;
                // δ = q·Φ(a) − (e^ε − 1 + q)·Φ(b), and (e^ε − 1 + q)·φ(b) = q·φ(a).
                let t1 = LogTerm::of(&[ln_q, log_ndtr(a)]);
                let t2 = if b < 0.0 {
                    LogTerm::of(&[ln_q, log_phi(a), log_mills(-b)]).widened(mills_cancellation(-b))
                } else {
                    LogTerm::of(&[ln_q + d, log_ndtr(b)])
                };
                // e^ε·Q[L > ε] = e^ε·Φ(b) = t2 + (1−q)·Φ(b).
                let t3 = LogTerm::of(&[ln_1mq, log_ndtr(b)]);
                finish(t1, t2, t3)
            }
            Adjacency::Add => {
                if epsilon >= -ln_1mq {
                    // Every loss is < −ln(1−q) ≤ ε.
                    return CurvePoint {
                        delta: 0.0,
                        delta_err: 0.0,
                        scaled_slope: 0.0,
                        scaled_slope_err: 0.0,
                    };
                }
                // Losses ≥ ε are the outcomes ≤ x(ε), where q·e^{(2x−1)/(2σ²)} = e^{−ε} − 1 + q; b = x/σ, c = (x−1)/σ.
                let d = ln_expm1_plus_q(-epsilon, q) - ln_q;
                let b = sigma * d + 0.5 / sigma;
                let c = sigma * d - 0.5 / sigma;
                // δ = (1 − (1−q)·e^ε)·Φ(b) − q·e^ε·Φ(c).
                let t1 = LogTerm::of(&[(-(epsilon + ln_1mq).exp_m1()).ln(), log_ndtr(b)]);
                let t2 = LogTerm::of(&[ln_q, epsilon, log_ndtr(c)]);
                // e^ε·Q[L > ε] = q·e^ε·Φ(c) + (1−q)·e^ε·Φ(b) = t2 + t3.
                let t3 = LogTerm::of(&[ln_1mq, epsilon, log_ndtr(b)]);
                finish(t1, t2, t3)
            }
        }
    }
}

/// The size of the cancellation inside `log_mills` (z²/2 against log Φ(−z)), which its rounding error scales with.
fn mills_cancellation(z: f64) -> f64 {
    if z < 26.0 * std::f64::consts::SQRT_2 {
        z * z
    } else {
        0.0
    }
}

/// δ = t1 − t2 and the scaled slope t2 + t3, with error bounds.
fn finish(t1: LogTerm, t2: LogTerm, t3: LogTerm) -> CurvePoint {
    let (v1, v2, v3) = (t1.value(), t2.value(), t3.value());
    let delta = v1 - v2;
    let slope = v2 + v3;
    CurvePoint {
        delta,
        delta_err: t1.err() + t2.err() + ULP * (v1 + v2),
        scaled_slope: slope,
        scaled_slope_err: t2.err() + t3.err() + ULP * slope,
    }
}
