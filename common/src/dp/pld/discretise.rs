//! One mechanism's privacy curve → two discrete PLDs on the grid offset + h·ℤ: a pessimistic one whose curve lies
//! above the exact curve everywhere, and an optimistic one whose curve lies below it everywhere.
//!
//! Both are built as piecewise-linear functions of x = e^ε with kinks only at grid points x_i = e^{l_i}; such a
//! function f, convex and non-increasing with f(x) constant beyond the last kink, *is* the curve of the discrete PLD
//! with mass p_i = x_i·(slope right of x_i − slope left of x_i) at l_i and mass f(∞) at +∞ (since
//! f(x) = f(∞) + Σ p_i·(1 − x·e^{−l_i})₊). Masses are therefore second differences of knot values, written so that
//! no e^h or e^{l} is ever formed (h and l may be in the thousands on a widened grid), taken from the greatest convex
//! minorant of the knots so that they are ≥ 0 by construction (a kept vertex has right slope > left slope, computed
//! by the same expressions as its mass).
//!
//! **Pessimistic (upper)** — connect-the-dots (Doroshenko et al., PETS 2022): knots u_i = δ(l_i), raised by the
//! evaluation's error bound and made non-increasing by a running maximum from the right; f(0) = 1; flat beyond the
//! last knot at u_last (the noise tail beyond e^{−50} goes to +∞). Any piecewise-linear interpolation through a
//! subset of these points (including both ends) lies above the chords of the exact convex curve, hence above the
//! curve; the greatest convex minorant is such an interpolation. The result is a valid privacy curve: total mass 1,
//! Σ p·e^{−l} ≤ 1.
//!
//! **Optimistic (lower)** — tangent lines: on each interval [x_i, x_{i+1}] the tangent of the exact curve at the
//! interval's midpoint in ε lies below the curve everywhere (the curve is convex) and has the computable slope
//! −Q[L > ε]. Each knot gets v_i = min(the two adjacent lines at x_i) less their error bound, so on every interval the
//! linear interpolation of the knots lies below that interval's line, hence below the curve. Where the midpoint
//! tangent would turn negative inside its interval (far tails, coarse grids), the tangent at x_{i+1}, that tangent
//! shifted down to pass through (x_{i+1}, 0), or the zero line is used instead — all below the curve and ≥ 0 on the
//! interval; of the candidates the one highest in the middle of the interval is taken. The last knot is 0 and nothing
//! goes to +∞ (the noise tail is dropped); left of the first knot the curve follows the tangent there, so
//! f(0) = P[L > l_0] ≤ 1. The greatest convex minorant of the knots only lowers them. The result is convex,
//! non-increasing, ≥ 0 with masses ≥ 0 and total ≤ 1, and lies below the exact curve at every ε ∈ [−∞, ∞]. Its knots
//! are only O(h²) below the truth where the curve is smooth on the scale of h.
//!
//! It is *not* required to be the curve of a real pair of distributions (Σ p·e^{−l} may exceed 1 by the O(h²) the
//! first knot lies low; capping f(0) to prevent that would drop that much mass per step, which compounds over T
//! steps). Dominance survives composition without it: the composed curve is
//! δ_{A⊗B}(ε) = ∫ δ_B(ε − a) dA(a) + A(∞)·|B| (|B| = total mass = δ_B(−∞)), which is monotone in δ_B for any A with
//! non-negative masses and symmetric in A and B. So δ_{A'⊗B'} ≤ δ_{A⊗B'} ≤ δ_{A⊗B} whenever A', B' have
//! non-negative masses and curves below those of A, B at every ε ∈ [−∞, ∞] — and likewise ≥ for the upper bound.
//!
//! The knots' error bounds cover the floating-point evaluation of the curve; the masses' own rounding is bounded in
//! `discrete::relative_rounding`.

use rayon::prelude::*;

use super::curve::{Adjacency, CurvePoint, SubsampledGaussianLoss};
use super::discrete::{DiscretePld, relative_rounding};
use crate::dp::DpError;

/// Both discretisations of one mechanism on one grid.
#[derive(Debug, Clone)]
pub(super) struct Discretised {
    pub upper: DiscretePld,
    pub lower: DiscretePld,
}

/// What one grid point contributes: the upper knot value, the exact scaled slope there (for the fallback lines) and
/// the midpoint tangent of the interval to its right, evaluated (less its error bound) at both ends of the interval.
#[derive(Debug, Clone, Copy)]
struct Knot {
    upper: f64,
    point: CurvePoint,
    tangent_left: f64,
    tangent_right: f64,
}

/// Number of grid points the discretisation of `m` needs at interval h (as a float: it may be astronomically large).
pub(super) fn grid_len(m: &SubsampledGaussianLoss, h: f64) -> f64 {
    let (lo, hi) = m.epsilon_range();
    let anchor = m.anchor();
    ((hi - anchor) / h).ceil() - ((lo - anchor) / h).floor() + 1.0
}

/// Evaluates the curve once per grid point and interval midpoint and builds both discrete PLDs from it.
/// The grid is anchor + (k + shift)·h (mirrored for ADD, whose pile-up lies below its anchor).
pub(super) fn discretise(
    m: &SubsampledGaussianLoss,
    h: f64,
    shift: f64,
) -> Result<Discretised, DpError> {
    let (eps_lo, eps_hi) = m.epsilon_range();
    let offset = match m.adjacency {
        Adjacency::Remove => m.anchor() + shift * h,
        Adjacency::Add => m.anchor() - shift * h,
    };
    let (lower, upper) = (
        ((eps_lo - offset) / h).floor(),
        ((eps_hi - offset) / h).ceil(),
    );
    if !(lower.is_finite() && upper.is_finite() && upper >= lower) {
        return Err(DpError::PldNotFinite {
            what: "the range of privacy losses",
            value: if lower.is_finite() { upper } else { lower },
        });
    }
    let n = (upper - lower + 1.0) as usize;
    let lower = lower as i64;
    let half_em1_down = (-0.5 * h).exp_m1();
    let half_em1_up = (0.5 * h).exp_m1();
    let knots: Vec<Knot> = (0..n)
        .into_par_iter()
        .with_min_len(1 << 12)
        .map(|i| {
            let point = finite(m.point(offset + (lower + i as i64) as f64 * h))?;
            let upper = (point.delta.max(0.0) + point.delta_err).min(1.0);
            let (tangent_left, tangent_right) = if i + 1 < n {
                let mid = finite(m.point(offset + ((lower + i as i64) as f64 + 0.5) * h))?;
                tangent_ends(mid, half_em1_down, half_em1_up)
            } else {
                (f64::NAN, f64::NAN)
            };
            Ok(Knot {
                upper,
                point,
                tangent_left,
                tangent_right,
            })
        })
        .collect::<Result<_, DpError>>()?;
    let upper = pessimistic(&knots, offset, lower, h);
    upper.check_valid(1.0, "the pessimistic discretisation of one step")?;
    let (lower_pld, expected) = optimistic(&knots, offset, lower, h);
    lower_pld.check_valid(expected, "the optimistic discretisation of one step")?;
    Ok(Discretised {
        upper,
        lower: lower_pld,
    })
}

/// The curve point, or an error if any part of it is NaN or infinite.
fn finite(p: CurvePoint) -> Result<CurvePoint, DpError> {
    for value in [p.delta, p.delta_err, p.scaled_slope, p.scaled_slope_err] {
        if !value.is_finite() {
            return Err(DpError::PldNotFinite {
                what: "the exact privacy curve of one step",
                value,
            });
        }
    }
    Ok(p)
}

/// The tangent at an interval's midpoint ε_m = ε_i + h/2, at x_i and x_{i+1}, each less its error bound:
/// t(x) = δ_m + e^{ε_m}·Q_m·(1 − x/x_m), and x_i/x_m = e^{−h/2}, x_{i+1}/x_m = e^{h/2}.
fn tangent_ends(mid: CurvePoint, half_em1_down: f64, half_em1_up: f64) -> (f64, f64) {
    let ulp = f64::EPSILON;
    let left_rise = -mid.scaled_slope * half_em1_down;
    let left = mid.delta + left_rise
        - (mid.delta_err
            + mid.scaled_slope_err * -half_em1_down
            + 4.0 * ulp * (mid.delta.abs() + left_rise));
    let right = if mid.scaled_slope == 0.0 {
        mid.delta - mid.delta_err - 4.0 * ulp * mid.delta.abs()
    } else {
        let drop = mid.scaled_slope * half_em1_up;
        mid.delta
            - drop
            - (mid.delta_err
                + mid.scaled_slope_err * half_em1_up
                + 4.0 * ulp * (mid.delta.abs() + drop))
    };
    (left, right)
}

/// The connect-the-dots PLD of the raised knots (greatest convex minorant from (0, 1)).
fn pessimistic(knots: &[Knot], offset: f64, lower: i64, h: f64) -> DiscretePld {
    let mut values: Vec<f64> = knots.iter().map(|k| k.upper).collect();
    // δ is non-increasing: a running maximum from the right only raises knots.
    for i in (0..values.len().saturating_sub(1)).rev() {
        if values[i] < values[i + 1] {
            values[i] = values[i + 1];
        }
    }
    let (probs, mass_err) = convex_minorant_masses(1.0, &values, h);
    let mut pld = DiscretePld {
        discretization: h,
        offset,
        lower,
        probs,
        infinity_mass: values.last().copied().unwrap_or(0.0),
        pessimistic: true,
        relative_slack: 0.0,
        absolute_slack: 0.0,
    };
    // The true curve is ≤ c + e ≤ (1 + κ)·c, i.e. c ≥ truth·(1 − κ/(1 + κ)) ≥ truth·(1 − κ).
    pld.relative_slack = relative_rounding(&pld, &mass_err);
    pld
}

/// The tangent-line PLD (see the module docs); returns it and its total mass f(0).
fn optimistic(knots: &[Knot], offset: f64, lower: i64, h: f64) -> (DiscretePld, f64) {
    let n = knots.len();
    let ulp = f64::EPSILON;
    let one_minus_e = -(-h).exp_m1();
    // The line used on interval i, as its values at (x_i, x_{i+1}), both ≥ 0: of the candidates below the curve, the
    // one highest at the interval's middle (largest sum of end values).
    let line = |i: usize| -> (f64, f64) {
        let k = &knots[i];
        let next = knots[i + 1].point;
        let mut best = (0.0, 0.0);
        let mut consider = |left: f64, right: f64| {
            if right >= 0.0 && left >= 0.0 && left + right > best.0 + best.1 {
                best = (left, right);
            }
        };
        // The tangent at the midpoint (O(h²) below the curve at both ends on fine grids).
        consider(k.tangent_left, k.tangent_right);
        // The tangent at x_{i+1}: t(x_i) = δ_{i+1} + e^{l_{i+1}}·Q_{i+1}·(1 − e^{−h}). On coarse grids, where the curve
        // falls from δ_i to δ_{i+1} within one step, the midpoint tangent turns negative and this one rounds the
        // curve down by at most one step, as connect-the-dots rounds it up.
        let rise = next.scaled_slope * one_minus_e;
        let err = next.delta_err
            + next.scaled_slope_err * one_minus_e
            + 4.0 * ulp * (next.delta.abs() + rise);
        consider(next.delta + rise - err, next.delta - err);
        // The same tangent shifted down to pass through (x_{i+1}, 0).
        consider(
            rise - next.scaled_slope_err * one_minus_e - 4.0 * ulp * rise,
            0.0,
        );
        best
    };
    // Left of the first knot: the tangent at x_0 (at 0 it equals P[L > l_0] ≤ 1), or its shifted version, or 0.
    let first = knots[0].point;
    let err0 = first.delta_err
        + first.scaled_slope_err
        + 4.0 * ulp * (first.delta.abs() + first.scaled_slope);
    let (origin, at_first) = if first.delta - err0 >= 0.0 {
        (first.delta + first.scaled_slope - err0, first.delta - err0)
    } else if first.scaled_slope - err0 >= 0.0 {
        (first.scaled_slope - err0, 0.0)
    } else {
        (0.0, 0.0)
    };
    let mut values = vec![0.0; n];
    let mut previous_right = at_first;
    for (i, value) in values.iter_mut().enumerate() {
        if i + 1 == n {
            // Nothing beyond the last knot: the curve ends at 0 (the previous line is ≥ 0 there).
            *value = 0.0;
        } else {
            let (left, right) = line(i);
            *value = previous_right.min(left);
            previous_right = right;
        }
    }
    let (probs, mass_err) = convex_minorant_masses(origin, &values, h);
    let mut pld = DiscretePld {
        discretization: h,
        offset,
        lower,
        probs,
        infinity_mass: 0.0,
        pessimistic: false,
        relative_slack: 0.0,
        absolute_slack: 0.0,
    };
    // c ≤ truth + e ≤ truth + κ·c, i.e. c ≤ truth/(1 − κ) = truth·(1 + κ/(1 − κ)).
    let kappa = relative_rounding(&pld, &mass_err);
    pld.relative_slack = kappa / (1.0 - kappa);
    (pld, origin)
}

/// The masses of the greatest convex minorant of the points (0, `origin`), (x_i, w_i) with x_i = e^{(lower+i)h},
/// continued flat after the last point. Slopes are compared as x_b·slope (b the middle point), which only needs
/// expm1 of multiples of ±h: left of b, x_b·s(a, b) = (w_b − w_a)/(1 − e^{−(b−a)h}) (= w_b − origin from the origin);
/// right of b, x_b·s(b, c) = (w_c − w_b)/(e^{(c−b)h} − 1). A vertex's mass is the right minus the left value, computed
/// by the same expressions the hull test used, so it is > 0 exactly when the vertex was kept.
///
/// Also returns a bound on each mass's rounding error: 8 ulps of |right| + |left| (each is a difference over an expm1,
/// ≤ 3 ulps, then one subtraction; doubled to cover hull decisions that rounding may have tipped).
fn convex_minorant_masses(origin: f64, w: &[f64], h: f64) -> (Vec<f64>, Vec<f64>) {
    let n = w.len();
    let left = |a: Option<usize>, b: usize| -> f64 {
        match a {
            None => w[b] - origin,
            Some(a) => (w[b] - w[a]) / -(-((b - a) as f64 * h)).exp_m1(),
        }
    };
    let right = |b: usize, c: usize| -> f64 { (w[c] - w[b]) / ((c - b) as f64 * h).exp_m1() };
    let mut hull: Vec<usize> = Vec::with_capacity(n);
    for c in 0..n {
        while let Some(&b) = hull.last() {
            let a = hull.len().checked_sub(2).map(|k| hull[k]);
            if right(b, c) <= left(a, b) {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(c);
    }
    let mut probs = vec![0.0; n];
    let mut err = vec![0.0; n];
    for (k, &b) in hull.iter().enumerate() {
        let a = k.checked_sub(1).map(|j| hull[j]);
        let r = hull.get(k + 1).map_or(0.0, |&c| right(b, c));
        let l = left(a, b);
        probs[b] = r - l;
        err[b] = 8.0 * f64::EPSILON * (r.abs() + l.abs());
    }
    (probs, err)
}
