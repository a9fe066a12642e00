//! Composition of discrete PLDs on a common grid by FFT, with a Chernoff-bounded output window and self-checks.
//!
//! T-fold self-composition raises each frequency to the T-th power (in polar form, the exact equivalent of
//! repeated squaring). The window is where the composed mass can be, up to `tail_mass_truncation` τ (τ/2 per side,
//! Chernoff); mass outside it wraps around the FFT into the window. The pessimistic composition therefore moves τ
//! to +∞ (covering both the missing tail and whatever wrapped around), the optimistic one drops it and carries τ as
//! absolute slack (the most the wrap-around can have added to its curve).
//!
//! Round-off: true composed masses are ≥ 0, so negative outputs of the inverse FFT are pure round-off. They are
//! clamped to 0; their total is taken as the round-off allowance (an estimate, not a proof: the FFT's error is not
//! bounded rigorously) and added to +∞ (pessimistic) or to the slack (optimistic). In the pessimistic bound the
//! finite mass lost against the product of the parts' masses also goes to +∞.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

use super::discrete::{DiscretePld, accurate_sum};
use crate::dp::DpError;

/// Tolerance of the total-mass self-check after composition: τ + 1e-9 + 4·T·log₂(n)·ε_mach. The window's sum is
/// the FFT's zero frequency raised to the T-th power, whose relative error grows like T·log₂(n)·ε_mach.
fn composition_tolerance(tau: f64, steps: f64, n: usize) -> f64 {
    tau + 1e-9 + 4.0 * steps * (n as f64).log2().max(1.0) * f64::EPSILON
}

/// The output window of a composition, in grid steps relative to the sum of the parts' lowest losses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    lo: i64,
    len: usize,
}

/// One PMF and how many times it is composed.
pub(super) type Part<'a> = (&'a DiscretePld, u64);

/// The non-zero masses of a PMF as (relative index, ln p), for Chernoff bounds on its composition.
struct LogMasses(Vec<(f64, f64)>);

impl LogMasses {
    fn new(pmf: &DiscretePld) -> Self {
        Self(
            pmf.probs
                .iter()
                .enumerate()
                .filter(|(_, p)| **p > 0.0)
                .map(|(i, p)| (i as f64, p.ln()))
                .collect(),
        )
    }

    /// log Σ p·e^{λ·i} over relative grid indices i (λ per grid step).
    fn log_mgf(&self, lambda: f64) -> f64 {
        let max = self
            .0
            .iter()
            .map(|(i, lp)| i * lambda + lp)
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return max;
        }
        let sum: f64 = self
            .0
            .iter()
            .map(|(i, lp)| (i * lambda + lp - max).exp())
            .sum();
        max + sum.ln()
    }
}

/// The Chernoff window of the composition of `parts`, or Err(its length) when it is longer than `max_len` (the
/// caller then coarsens the grid). Mass (not probability: the parts may have mass < 1) outside it is at most τ/2 per side:
/// P[S ≥ u] ≤ exp(Σ c·log M(λ) − λu) for λ > 0, and symmetrically below.
pub(super) fn window(parts: &[Part<'_>], tau: f64, max_len: usize) -> Result<Window, f64> {
    let longest = parts.iter().map(|(p, _)| p.len()).max().unwrap_or(1);
    let full_upper: f64 = parts
        .iter()
        .map(|(p, c)| (p.len() as f64 - 1.0) * *c as f64)
        .sum();
    let masses: Vec<(LogMasses, f64)> = parts
        .iter()
        .map(|(p, c)| (LogMasses::new(p), *c as f64))
        .collect();
    let log_two_over_tau = (2.0 / tau).ln();
    let bound = |lambda: f64| -> f64 {
        let total: f64 = masses.iter().map(|(m, c)| c * m.log_mgf(lambda)).sum();
        let b = (total + log_two_over_tau) / lambda;
        if b.is_finite() {
            b
        } else if lambda > 0.0 {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        }
    };
    let mut hi = full_upper;
    let mut lo = 0.0f64;
    // λ is searched on a coarse geometric grid, then refined around the best point.
    for sign in [1.0, -1.0] {
        let better = |a: f64, b: f64| if sign > 0.0 { a < b } else { a > b };
        let mut best = (f64::NAN, sign * f64::INFINITY);
        for k in -14..=6 {
            let lambda = sign * 2f64.powi(k) / longest as f64;
            let b = bound(lambda);
            if better(b, best.1) {
                best = (lambda, b);
            }
        }
        if best.0.is_nan() {
            continue;
        }
        for factor in [0.6, 0.75, 0.87, 1.15, 1.33, 1.6] {
            let b = bound(best.0 * factor);
            if better(b, best.1) {
                best = (best.0 * factor, b);
            }
        }
        if sign > 0.0 {
            hi = hi.min(best.1.ceil());
        } else {
            lo = lo.max(best.1.floor());
        }
    }
    let len = hi - lo + 1.0;
    // A floor on the length keeps a misconfigured accountant from coarsening forever.
    if !(len >= 1.0 && len <= max_len.max(1 << 10) as f64) {
        return Err(len);
    }
    Ok(Window {
        lo: lo as i64,
        len: len as usize,
    })
}

/// Composes `parts` (same grid) into `window`. Pessimistic: truncated and round-off-lost mass goes to +∞.
/// Optimistic: it is dropped, and τ (plus the round-off allowance) becomes the result's absolute slack.
pub(super) fn compose(
    parts: &[Part<'_>],
    window: Window,
    tau: f64,
    pessimistic: bool,
    what: &'static str,
) -> Result<DiscretePld, DpError> {
    let h = parts[0].0.discretization;
    let steps = parts.iter().map(|(_, c)| *c as f64).sum::<f64>();
    let longest = parts.iter().map(|(p, _)| p.len()).max().unwrap_or(1);
    let n = fast_len(window.len.max(longest));

    let mut planner = FftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(n);
    let mut acc: Vec<Complex64> = Vec::new();
    for (k, (pmf, count)) in parts.iter().enumerate() {
        let mut buf = vec![Complex64::new(0.0, 0.0); n];
        for (z, &p) in buf.iter_mut().zip(&pmf.probs) {
            z.re = p;
        }
        forward.process(&mut buf);
        if *count != 1 {
            let c = *count as f64;
            buf.iter_mut().for_each(|z| *z = pow_polar(*z, c));
        }
        if k == 0 {
            acc = buf;
        } else {
            acc.iter_mut().zip(&buf).for_each(|(a, z)| *a *= *z);
        }
    }
    planner.plan_fft_inverse(n).process(&mut acc);
    let scale = 1.0 / n as f64;
    let raw: Vec<f64> = (0..window.len)
        .map(|j| acc[(window.lo + j as i64).rem_euclid(n as i64) as usize].re * scale)
        .collect();
    drop(acc);
    if let Some(bad) = raw.iter().copied().find(|p| !p.is_finite()) {
        return Err(DpError::PldNotFinite { what, value: bad });
    }

    // Self-check: the window holds the composed finite mass Π (Σp)^c, up to τ and round-off.
    let raw_sum = accurate_sum(raw.iter().copied());
    let log_expected: f64 = parts
        .iter()
        .map(|(p, c)| *c as f64 * p.finite_mass().ln())
        .sum();
    let expected = log_expected.exp();
    let tolerance = composition_tolerance(tau, steps, n);
    // Written so that NaN fails the check.
    let matches = (raw_sum - expected).abs() <= tolerance;
    if !matches {
        return Err(DpError::PldMassMismatch {
            what,
            expected,
            got: raw_sum,
            tolerance,
        });
    }
    let round_off = accurate_sum(raw.iter().filter(|p| **p < 0.0).map(|p| -p));
    let probs: Vec<f64> = raw.into_iter().map(|p| p.max(0.0)).collect();
    let kept = accurate_sum(probs.iter().copied());

    let mut lower: i128 = window.lo as i128;
    for (p, c) in parts {
        lower += p.lower as i128 * *c as i128;
    }
    let lower = i64::try_from(lower).map_err(|_| DpError::PldNotFinite {
        what: "the composed grid's lowest index",
        value: lower as f64,
    })?;
    // The composed grid is Σ c·offset + k·h; the rounding of that sum is absorbed by shifting it up (pessimistic:
    // higher losses only raise the curve) or down (optimistic: lower losses only lower it).
    let offset_sum: f64 = parts.iter().map(|(p, c)| *c as f64 * p.offset).sum();
    let offset_margin = 4.0
        * f64::EPSILON
        * parts
            .iter()
            .map(|(p, c)| *c as f64 * p.offset.abs())
            .sum::<f64>();
    let offset = if pessimistic {
        offset_sum + offset_margin
    } else {
        offset_sum - offset_margin
    };
    // Each part's relative slack composes multiplicatively (the composed curve is monotone and linear in each
    // part's curve).
    let log_slack: f64 = parts
        .iter()
        .map(|(p, c)| {
            let r = if pessimistic {
                -p.relative_slack
            } else {
                p.relative_slack
            };
            *c as f64 * r.ln_1p()
        })
        .sum();
    let (infinity_mass, relative_slack, absolute_slack) = if pessimistic {
        let log_finite: f64 = parts
            .iter()
            .map(|(p, c)| *c as f64 * (-p.infinity_mass).ln_1p())
            .sum();
        let lost = (expected - kept).max(0.0);
        let infinity = (-log_finite.exp_m1() + tau + lost + round_off).min(1.0);
        (infinity, -log_slack.exp_m1(), 0.0)
    } else {
        (0.0, log_slack.exp_m1(), tau + round_off)
    };
    Ok(DiscretePld {
        discretization: h,
        offset,
        lower,
        probs,
        infinity_mass,
        pessimistic,
        relative_slack,
        absolute_slack,
    })
}

/// z^c in polar form: |z|^c·e^{i·c·arg z}.
fn pow_polar(z: Complex64, c: f64) -> Complex64 {
    let r = z.norm();
    if r == 0.0 {
        return Complex64::new(0.0, 0.0);
    }
    Complex64::from_polar((c * r.ln()).exp(), c * z.arg())
}

/// The smallest 2^a·3^b·5^c ≥ n (sizes rustfft handles fastest).
pub(super) fn fast_len(n: usize) -> usize {
    let mut best = n.next_power_of_two();
    let mut p5 = 1usize;
    while p5 < best {
        let mut p35 = p5;
        while p35 < best {
            let mut m = p35;
            while m < n {
                m *= 2;
            }
            best = best.min(m);
            p35 *= 3;
        }
        p5 *= 5;
    }
    best
}
