//! A discrete privacy-loss distribution and the reading of δ(ε) and ε(δ) from it.

use crate::dp::DpError;

/// Tolerance of the self-checks on a single discretisation: total mass and Q-mass Σ p·e^{−l}. The masses are
/// second differences of a curve known to ~1e-14, so honest round-off stays orders of magnitude below this.
pub(super) const DISCRETISATION_TOLERANCE: f64 = 1e-9;

/// A discrete privacy-loss distribution: mass `probs[i]` at loss offset + (lower + i)·h, plus mass at +∞, and what its own
/// rounding allows the bound it stands for to differ from the curve of its masses.
///
/// The curve of the masses is c(ε) = P[L = ∞] + Σ_{l > ε} p(l)·(1 − e^{ε−l}). A pessimistic PLD certifies that the
/// true curve is ≤ c(ε)/(1 − r); an optimistic one that it is ≥ (c(ε) − a)/(1 + r), where r = `relative_slack`
/// bounds the masses' rounding and a = `absolute_slack` the FFT's wrap-around of truncated tails (which the
/// pessimistic composition moves to +∞ instead).
#[derive(Debug, Clone)]
pub struct DiscretePld {
    pub(super) discretization: f64,
    pub(super) offset: f64,
    pub(super) lower: i64,
    pub(super) probs: Vec<f64>,
    pub(super) infinity_mass: f64,
    pub(super) pessimistic: bool,
    pub(super) relative_slack: f64,
    pub(super) absolute_slack: f64,
}

impl DiscretePld {
    pub(super) fn loss(&self, i: usize) -> f64 {
        self.offset + (self.lower + i as i64) as f64 * self.discretization
    }

    /// The curve of the masses themselves, c(ε).
    fn curve_delta(&self, epsilon: f64) -> f64 {
        let mut delta = self.infinity_mass;
        for (i, &p) in self.probs.iter().enumerate().rev() {
            let loss = self.loss(i);
            if loss <= epsilon {
                break;
            }
            delta += p * -(epsilon - loss).exp_m1();
        }
        delta
    }

    /// The bound on δ(ε) this PLD certifies (above for a pessimistic PLD, below for an optimistic one).
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let c = self.curve_delta(epsilon);
        let bound = if self.pessimistic {
            c / (1.0 - self.relative_slack)
        } else {
            (c - self.absolute_slack) / (1.0 + self.relative_slack)
        };
        bound.clamp(0.0, 1.0)
    }

    /// The smallest ε ≥ 0 whose certified δ(ε) is ≤ `delta`: ∞ when the mass at +∞ alone exceeds it; 0 only when the
    /// curve itself shows δ(0) ≤ `delta`; NaN if the curve is inconsistent (the caller turns that into an error).
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        let target = if self.pessimistic {
            delta * (1.0 - self.relative_slack)
        } else {
            delta * (1.0 + self.relative_slack) + self.absolute_slack
        };
        self.curve_epsilon(target)
    }

    /// The smallest ε ≥ 0 with c(ε) ≤ `target`.
    ///
    /// On [l_{k−1}, l_k] the curve is P[∞] + S_k − e^ε·W_k with S_k, W_k the sums of p and p·e^{−l} over l ≥ l_k; the
    /// scan goes down from the largest loss and keeps W relative to the current loss r (as Σ p·e^{r−l}), so losses
    /// far beyond 745 do not underflow (`dp_accounting` falls back to the tail mass there and overstates ε by ~1).
    fn curve_epsilon(&self, target: f64) -> f64 {
        if self.infinity_mass > target {
            return f64::INFINITY;
        }
        if self.curve_delta(0.0) <= target {
            return 0.0;
        }
        let mut mass = self.infinity_mass;
        let mut scaled = 0.0;
        let mut r = f64::NAN;
        for i in (0..self.probs.len()).rev() {
            let p = self.probs[i];
            if p > 0.0 {
                let loss = self.loss(i);
                scaled = if r.is_nan() {
                    p
                } else {
                    scaled * (loss - r).exp() + p
                };
                r = loss;
                mass += p;
            }
            // The crossing lies in [floor, l_i] when the formula over the masses ≥ l_i reaches `target` there.
            let floor = if i == 0 {
                0.0
            } else {
                self.loss(i - 1).max(0.0)
            };
            if mass > target && scaled > 0.0 {
                let eps = r + ((mass - target) / scaled).ln();
                if eps >= floor {
                    return eps;
                }
                if floor == 0.0 {
                    // c(0) > target, so the crossing is > 0; a candidate ≤ 0 here is rounding of ε ≈ 0.
                    return eps.max(0.0);
                }
            } else if floor == 0.0 {
                return f64::NAN;
            }
        }
        f64::NAN
    }

    /// Total finite mass (compensated sum: composition raises it to the T-th power).
    pub fn finite_mass(&self) -> f64 {
        accurate_sum(self.probs.iter().copied())
    }

    /// Probability of infinite loss.
    pub fn infinity_mass(&self) -> f64 {
        self.infinity_mass
    }

    /// Grid interval h actually used.
    pub fn discretization(&self) -> f64 {
        self.discretization
    }

    /// Number of grid points stored.
    pub fn len(&self) -> usize {
        self.probs.len()
    }

    /// Whether no finite loss has mass.
    pub fn is_empty(&self) -> bool {
        self.probs.is_empty()
    }

    /// Self-check of a discretisation: finite, non-negative masses; total mass (finite + ∞) equal to `expected` and
    /// ≤ 1; for a pessimistic PLD also Q-mass Σ p·e^{−l} ≤ 1 (the PLD of a real pair of distributions) — all within
    /// `DISCRETISATION_TOLERANCE`. (An optimistic PLD only needs non-negative masses and a curve below the truth
    /// everywhere, see `discretise`; its Q-mass may exceed 1 by the tangent construction's O(h²) at the first knot.)
    pub(super) fn check_valid(&self, expected: f64, what: &'static str) -> Result<(), DpError> {
        if let Some(bad) = self
            .probs
            .iter()
            .copied()
            .find(|p| !(p.is_finite() && *p >= 0.0))
        {
            return Err(DpError::PldNotFinite { what, value: bad });
        }
        if !(self.infinity_mass.is_finite() && (0.0..=1.0).contains(&self.infinity_mass)) {
            return Err(DpError::PldNotFinite {
                what,
                value: self.infinity_mass,
            });
        }
        let total = self.finite_mass() + self.infinity_mass;
        if !(self.relative_slack.is_finite() && (0.0..1e-6).contains(&self.relative_slack)) {
            return Err(DpError::PldNotFinite {
                what: "the rounding bound of a discretisation",
                value: self.relative_slack,
            });
        }
        if !((total - expected).abs() <= DISCRETISATION_TOLERANCE
            && total <= 1.0 + DISCRETISATION_TOLERANCE)
        {
            return Err(DpError::PldMassMismatch {
                what,
                expected,
                got: total,
                tolerance: DISCRETISATION_TOLERANCE,
            });
        }
        if !self.pessimistic {
            return Ok(());
        }
        let q_mass: f64 = self
            .probs
            .iter()
            .enumerate()
            .filter(|(_, p)| **p > 0.0)
            .map(|(i, p)| (p.ln() - self.loss(i)).exp())
            .sum();
        let valid = q_mass <= 1.0 + DISCRETISATION_TOLERANCE;
        if !valid {
            return Err(DpError::PldInvalidCurve {
                what,
                q_mass,
                tolerance: DISCRETISATION_TOLERANCE,
            });
        }
        Ok(())
    }
}

/// Neumaier's compensated sum: error ~ε_mach·Σ|x| instead of ~n·ε_mach·Σ|x|.
pub(super) fn accurate_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        compensation += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + compensation
}

/// A bound r on the relative error the masses' rounding causes in the curve: each mass p_b = R_b − L_b is within
/// `mass_err[b]` of the exact difference of its (exact) neighbouring slopes, so the curve moves by at most
/// e(x) = Σ_b mass_err[b]·(1 − x/x_b)₊; e and the curve c are both linear in x between grid points and constant
/// beyond the last, so max e/c over the grid points and x = 0 bounds e/c everywhere. Both are accumulated from the
/// right with Σ·e^{l_k − l_b} kept relative to the current point.
pub(super) fn relative_rounding(pmf: &DiscretePld, mass_err: &[f64]) -> f64 {
    let decay = (-pmf.discretization).exp();
    let (mut c_sum, mut c_scaled) = (pmf.infinity_mass, 0.0);
    let (mut e_sum, mut e_scaled) = (0.0, 0.0);
    let mut worst: f64 = 0.0;
    let n = pmf.probs.len();
    for k in (0..n).rev() {
        if k + 1 < n {
            c_sum += pmf.probs[k + 1];
            e_sum += mass_err[k + 1];
            c_scaled = (c_scaled + pmf.probs[k + 1]) * decay;
            e_scaled = (e_scaled + mass_err[k + 1]) * decay;
        }
        let c = c_sum - c_scaled;
        let e = e_sum - e_scaled;
        if e > 0.0 {
            worst = worst.max(if c > 0.0 { e / c } else { f64::INFINITY });
        }
    }
    // At x = 0 the curve is the total mass.
    if let (Some(&p0), Some(&e0)) = (pmf.probs.first(), mass_err.first()) {
        let (c, e) = (c_sum + p0, e_sum + e0);
        if e > 0.0 {
            worst = worst.max(if c > 0.0 { e / c } else { f64::INFINITY });
        }
    }
    worst
}
