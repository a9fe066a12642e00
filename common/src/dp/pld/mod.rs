//! Privacy-loss-distribution (PLD) accountant for the Poisson-subsampled Gaussian mechanism, following Google's
//! `dp_accounting` `PLDAccountant` (add-or-remove adjacency, connect-the-dots discretisation, FFT composition), with a
//! certified *lower* bound beside the usual pessimistic one.
//!
//! - Each mechanism's exact privacy curve ([`curve`]) is discretised twice on the grid h·ℤ ([`discretise`]): a
//!   pessimistic PLD whose curve lies above the truth everywhere (connect-the-dots) and an optimistic one whose curve
//!   lies below it everywhere (tangent lines). Composition preserves both orders, so the composed PLDs bound the true
//!   ε from above and below; the upper is what every budget enforces, the gap between them shows how tight it is.
//! - Both adjacencies are tracked — REMOVE (upper = q·N(−1,σ²) + (1−q)·N(0,σ²), lower = N(0,σ²)) and ADD (upper =
//!   N(0,σ²), lower = q·N(1,σ²) + (1−q)·N(0,σ²)) — and the worse ε (larger) is reported, for each bound.
//! - One ε path: the events are merged first (identical (q, σ) add their steps; all unsampled Gaussians — q = 1
//!   events and zCDP releases — become one Gaussian with μ² = Σ μᵢ², which is exact) and put in a canonical order, so
//!   the answer does not depend on how a ledger is ordered or split into events.
//! - Composition by FFT ([`compose`]); T-fold self-composition raises each frequency to the T-th power.
//! - When one mechanism's grid would exceed `max_grid_len` points, or the composed window `max_fft_len` (ε in the
//!   thousands), h is widened until it fits: both bounds stay valid, only further apart.
//! - When the bounds are more than `TARGET_GAP` apart, they are recomputed with the grid shifted and on finer grids
//!   (as far as the grid limits allow), keeping the tightest of each.
//! - Self-checks turn silent failure into errors: every discretisation must have finite, non-negative masses and
//!   total mass 1 (upper; also Σ p·e^{−l} ≤ 1) or the total it was built with (lower), within 1e-9; the composed
//!   finite mass must match the product of the parts' masses within τ + 1e-9 + 4·T·log₂(n)·ε_mach; NaN/∞ anywhere
//!   is refused; and upper ≥ lower must hold (within 1e-9 relative). A reading that cannot be made is an error,
//!   never ε = 0: ε = 0 is only returned when the certified upper curve itself has δ(0) ≤ δ.

mod compose;
mod curve;
mod discrete;
mod discretise;

use serde::{Deserialize, Serialize};

use self::curve::{Adjacency, SubsampledGaussianLoss};
use self::discretise::{Discretised, discretise, grid_len};
pub use discrete::DiscretePld;

use super::ledger::merge_events;
use super::rdp::{check_delta, check_epsilon};
use super::{DpError, PrivacyEvent};

/// The PLD accountant's settings.
#[derive(Debug, Clone)]
pub struct PldAccountant {
    /// Grid step h of privacy-loss values (default 1e-4, as `dp_accounting`).
    pub discretization: f64,
    /// Mass that composition may cut from the tails (to +∞ in the upper bound, dropped in the lower; default 1e-15,
    /// as `dp_accounting`).
    pub tail_mass_truncation: f64,
    /// The largest FFT length used before the grid is coarsened (default 2²³).
    pub max_fft_len: usize,
    /// The most grid points one mechanism's PLD may have before the grid is coarsened (default 2²⁰; only
    /// unsampled Gaussians with tiny σ/√T, i.e. ε in the thousands, come near it).
    pub max_grid_len: usize,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self {
            discretization: 1e-4,
            tail_mass_truncation: 1e-15,
            max_fft_len: 1 << 23,
            max_grid_len: 1 << 20,
        }
    }
}

/// Certified bounds on ε at a given δ: the true ε of the ledger lies in [lower, upper]. `upper` is what budgets
/// enforce; `lower` shows how much of it is discretisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonBounds {
    pub upper: f64,
    pub lower: f64,
}

impl EpsilonBounds {
    /// (upper − lower)/upper, or 0 when both are 0.
    pub fn relative_gap(&self) -> f64 {
        if self.upper > 0.0 {
            (self.upper - self.lower) / self.upper
        } else {
            0.0
        }
    }
}

/// Certified bounds on δ at a given ε: the true δ lies in [lower, upper].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeltaBounds {
    pub upper: f64,
    pub lower: f64,
}

/// The composed PLDs of one bound under both adjacencies (`add` is None when every event is an unsampled
/// Gaussian: then ADD equals REMOVE).
#[derive(Debug, Clone)]
pub struct PldPair {
    remove: DiscretePld,
    add: Option<DiscretePld>,
}

impl PldPair {
    /// The composed PLD for REMOVE adjacency.
    pub fn remove(&self) -> &DiscretePld {
        &self.remove
    }

    /// The composed PLD for ADD adjacency, if it differs from REMOVE.
    pub fn add(&self) -> Option<&DiscretePld> {
        self.add.as_ref()
    }

    /// ε at `delta`: the worse of the two adjacencies (NaN if a reading failed).
    fn epsilon_for_delta(&self, delta: f64) -> f64 {
        let r = self.remove.epsilon_for_delta(delta);
        match &self.add {
            Some(add) => worse(r, add.epsilon_for_delta(delta)),
            None => r,
        }
    }

    /// δ at `epsilon`: the worse of the two adjacencies.
    fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let r = self.remove.delta_for_epsilon(epsilon);
        match &self.add {
            Some(add) => r.max(add.delta_for_epsilon(epsilon)),
            None => r,
        }
    }

    fn infinity_mass(&self) -> f64 {
        let r = self.remove.infinity_mass;
        self.add.as_ref().map_or(r, |a| r.max(a.infinity_mass))
    }
}

/// The larger of two readings, NaN if either is NaN (a failed reading must not hide behind a good one).
fn worse(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The composed PLDs of a ledger: the pessimistic (upper) and optimistic (lower) bound, each under both adjacencies.
#[derive(Debug, Clone)]
pub struct ComposedPld {
    upper: PldPair,
    lower: PldPair,
}

/// Relative gap (upper − lower)/upper above which `epsilon_bounds`/`delta_bounds` recompute on a finer grid.
pub const TARGET_GAP: f64 = 1e-3;

/// At most this many passes (compositions) per question.
const MAX_PASSES: usize = 10;

/// Grid shifts tried at the default h, as fractions of h from the anchor (see `curve::anchor`): the optimistic
/// discretisation rounds mass that piles up within a grid step down to the grid point below it, so where the grid
/// points fall relative to that pile-up matters for the lower bound (not for the upper).
const SHIFTS: [f64; 4] = [0.0, 0.5, 0.25, 0.75];

/// (upper − lower)/upper, 0 when both are 0.
fn relative_gap(upper: f64, lower: f64) -> f64 {
    if upper > 0.0 {
        (upper - lower) / upper
    } else {
        0.0
    }
}

/// Relative and absolute float tolerance of the check upper ≥ lower.
const CROSSING_TOLERANCE: f64 = 1e-9;

impl ComposedPld {
    /// Certified bounds on ε at `delta`; an error when the upper bound is infinite (its mass at +∞ exceeds `delta`)
    /// or a self-check fails.
    pub fn epsilon_bounds(&self, delta: f64) -> Result<EpsilonBounds, DpError> {
        let upper = self.upper.epsilon_for_delta(delta);
        if upper == f64::INFINITY {
            return Err(DpError::DeltaBelowResolution {
                delta,
                floor: self.upper.infinity_mass(),
            });
        }
        let lower = self.lower.epsilon_for_delta(delta);
        for (value, what) in [(upper, "the upper ε"), (lower, "the lower ε")] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(DpError::PldNotFinite { what, value });
            }
        }
        if upper < lower - CROSSING_TOLERANCE * (1.0 + lower) {
            return Err(DpError::PldBoundsCrossed { upper, lower });
        }
        Ok(EpsilonBounds {
            upper,
            lower: lower.min(upper),
        })
    }

    /// Certified bounds on δ at `epsilon`.
    pub fn delta_bounds(&self, epsilon: f64) -> Result<DeltaBounds, DpError> {
        let upper = self.upper.delta_for_epsilon(epsilon);
        let lower = self.lower.delta_for_epsilon(epsilon);
        for (value, what) in [(upper, "the upper δ"), (lower, "the lower δ")] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(DpError::PldNotFinite { what, value });
            }
        }
        if upper < lower - CROSSING_TOLERANCE * (1e-12 + lower) {
            return Err(DpError::PldBoundsCrossed { upper, lower });
        }
        Ok(DeltaBounds {
            upper,
            lower: lower.min(upper),
        })
    }

    /// The upper (enforced) ε at `delta`, ∞ if the upper bound cannot reach `delta`.
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        self.upper.epsilon_for_delta(delta)
    }

    /// The upper δ at `epsilon`.
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        self.upper.delta_for_epsilon(epsilon)
    }

    /// The pessimistic PLDs.
    pub fn upper(&self) -> &PldPair {
        &self.upper
    }

    /// The optimistic PLDs.
    pub fn lower(&self) -> &PldPair {
        &self.lower
    }
}

/// One mechanism to compose `count` times, under both adjacencies (`add` None for an unsampled Gaussian).
struct Component {
    remove: SubsampledGaussianLoss,
    add: Option<SubsampledGaussianLoss>,
    count: u64,
}

/// The mechanisms of a ledger in canonical order: the merged unsampled Gaussian first, then the subsampled ones
/// sorted by (q, σ) (as `merge_events` leaves them).
fn components(events: &[PrivacyEvent]) -> Result<Vec<Component>, DpError> {
    let merged = merge_events(events)?;
    let mut components = Vec::new();
    let mut mu2 = 0.0;
    for e in &merged {
        if let Some(m) = e.gaussian_mu_squared() {
            mu2 += m;
        }
    }
    if mu2 > 0.0 {
        components.push(Component {
            remove: SubsampledGaussianLoss {
                sigma: 1.0 / mu2.sqrt(),
                q: 1.0,
                adjacency: Adjacency::Remove,
            },
            add: None,
            count: 1,
        });
    }
    for e in merged {
        if let PrivacyEvent::SubsampledGaussian {
            sampling_rate,
            noise_multiplier,
            steps,
        } = e
            && sampling_rate < 1.0
        {
            let loss = |adjacency| SubsampledGaussianLoss {
                sigma: noise_multiplier,
                q: sampling_rate,
                adjacency,
            };
            components.push(Component {
                remove: loss(Adjacency::Remove),
                add: Some(loss(Adjacency::Add)),
                count: steps,
            });
        }
    }
    Ok(components)
}

impl PldAccountant {
    /// The certified upper bound on ε at `delta` for the composition of `events` (0 for no events): what budgets
    /// enforce.
    pub fn epsilon(&self, events: &[PrivacyEvent], delta: f64) -> Result<f64, DpError> {
        Ok(self.epsilon_bounds(events, delta)?.upper)
    }

    /// Certified upper and lower bounds on ε at `delta` (both 0 for no events). When the bounds are further apart
    /// than `TARGET_GAP`, they are recomputed on finer grids (as far as `max_grid_len` and `max_fft_len` allow) and
    /// the tightest of each is kept — every pass's bounds are valid, so the minimum upper and maximum lower are too.
    pub fn epsilon_bounds(
        &self,
        events: &[PrivacyEvent],
        delta: f64,
    ) -> Result<EpsilonBounds, DpError> {
        check_delta(delta)?;
        if events.is_empty() {
            return Ok(EpsilonBounds {
                upper: 0.0,
                lower: 0.0,
            });
        }
        let (upper, lower) = self.refined(events, |c| {
            let b = c.epsilon_bounds(delta)?;
            Ok((b.upper, b.lower))
        })?;
        Ok(EpsilonBounds { upper, lower })
    }

    /// The certified upper bound on δ at `epsilon` for the composition of `events` (0 for no events).
    pub fn delta(&self, events: &[PrivacyEvent], epsilon: f64) -> Result<f64, DpError> {
        Ok(self.delta_bounds(events, epsilon)?.upper)
    }

    /// Certified upper and lower bounds on δ at `epsilon` (both 0 for no events), refined like `epsilon_bounds`.
    pub fn delta_bounds(
        &self,
        events: &[PrivacyEvent],
        epsilon: f64,
    ) -> Result<DeltaBounds, DpError> {
        check_epsilon(epsilon)?;
        if events.is_empty() {
            return Ok(DeltaBounds {
                upper: 0.0,
                lower: 0.0,
            });
        }
        let (upper, lower) = self.refined(events, |c| {
            let b = c.delta_bounds(epsilon)?;
            Ok((b.upper, b.lower))
        })?;
        Ok(DeltaBounds { upper, lower })
    }

    /// The discretised PLDs (both bounds, both adjacencies) of the composition of `events` (at least one event), on
    /// the default grid (widened where needed, never refined).
    pub fn compose(&self, events: &[PrivacyEvent]) -> Result<ComposedPld, DpError> {
        let components = components(events)?;
        self.compose_components(&components, None, 0.0)
    }

    /// Runs `read` (which returns (upper, lower)) on the composition at the default grid and, while the relative gap
    /// exceeds `TARGET_GAP`, on other ones: first the same h with the grid shifted (`SHIFTS`), then finer h with the
    /// best shift so far and its opposite, for at most `MAX_PASSES` passes. Returns the smallest upper and the
    /// largest lower seen — every pass's bounds are valid, so these are too.
    fn refined(
        &self,
        events: &[PrivacyEvent],
        read: impl Fn(&ComposedPld) -> Result<(f64, f64), DpError>,
    ) -> Result<(f64, f64), DpError> {
        let components = components(events)?;
        // Shifting only matters where a subsampled step's losses pile up next to ±ln(1−q).
        let shiftable = components.iter().any(|c| c.add.is_some());
        let (mut upper, mut lower) = (f64::INFINITY, 0.0f64);
        let mut grids = None;
        let mut best_shift = 0.0;
        let mut passes = 0;
        loop {
            let shifts = match (grids, shiftable) {
                (_, false) => vec![0.0],
                (None, true) => SHIFTS.to_vec(),
                (Some(_), true) => vec![best_shift, (best_shift + 0.5) % 1.0],
            };
            let mut last = None;
            for shift in shifts {
                let composed = self.compose_components(&components, grids, shift)?;
                passes += 1;
                let (u, l) = read(&composed)?;
                if l > lower {
                    best_shift = shift;
                }
                upper = upper.min(u);
                lower = lower.max(l);
                if relative_gap(upper, lower) <= TARGET_GAP || passes >= MAX_PASSES {
                    return Ok((upper, lower));
                }
                last = Some(composed);
            }
            let gap = relative_gap(upper, lower);
            match last.and_then(|c| self.finer_grids(&components, &c, gap)) {
                Some(next) => grids = Some(next),
                None => return Ok((upper, lower)),
            }
        }
    }

    /// Starting grids (REMOVE, ADD) for the next pass: the bounds' gap shrinks roughly like h², so h is scaled by
    /// 0.8·√(target/gap), clamped to [1/16, 1/2] and to what the single-step grids and the last FFT windows allow.
    /// None when that would not make h at least 30 % finer.
    fn finer_grids(
        &self,
        components: &[Component],
        composed: &ComposedPld,
        gap: f64,
    ) -> Option<(f64, f64)> {
        let mut factor = (0.8 * (TARGET_GAP / gap).sqrt()).clamp(1.0 / 16.0, 0.5);
        let max_grid = self.max_grid_len.min(self.max_fft_len).max(1 << 10) as f64;
        let max_fft = self.max_fft_len.max(1 << 10) as f64;
        let mut pairs = vec![(&composed.upper.remove, &composed.lower.remove, false)];
        if let (Some(up), Some(low)) = (&composed.upper.add, &composed.lower.add) {
            pairs.push((up, low, true));
        }
        let mut grids = [self.discretization; 2];
        for (k, (up, low, add)) in pairs.into_iter().enumerate() {
            let h = up.discretization;
            let widest = components
                .iter()
                .map(|c| {
                    let m = if add {
                        c.add.unwrap_or(c.remove)
                    } else {
                        c.remove
                    };
                    grid_len(&m, h)
                })
                .fold(0.0, f64::max);
            let window = up.len().max(low.len()) as f64;
            factor = factor
                .max(1.05 * widest / max_grid)
                .max(1.05 * window / max_fft);
            grids[k] = h;
        }
        (factor <= 0.7).then(|| (grids[0] * factor, grids[1] * factor))
    }

    /// One pass: both adjacencies composed from the given starting grids (default: `discretization`), each
    /// mechanism's grid shifted by `shift`·h from its anchor.
    fn compose_components(
        &self,
        components: &[Component],
        grids: Option<(f64, f64)>,
        shift: f64,
    ) -> Result<ComposedPld, DpError> {
        if !(self.discretization.is_finite() && self.discretization > 0.0) {
            return Err(DpError::InvalidDiscretization(self.discretization));
        }
        let (h_remove, h_add) = grids.unwrap_or((self.discretization, self.discretization));
        let remove: Vec<(SubsampledGaussianLoss, u64)> =
            components.iter().map(|c| (c.remove, c.count)).collect();
        let add: Option<Vec<(SubsampledGaussianLoss, u64)>> =
            components.iter().any(|c| c.add.is_some()).then(|| {
                components
                    .iter()
                    .map(|c| (c.add.unwrap_or(c.remove), c.count))
                    .collect()
            });
        let (remove, add) = rayon::join(
            || self.compose_one_adjacency(&remove, h_remove, shift),
            || {
                add.as_deref()
                    .map(|a| self.compose_one_adjacency(a, h_add, shift))
            },
        );
        let (remove_upper, remove_lower) = remove?;
        let (add_upper, add_lower) = match add.transpose()? {
            Some((u, l)) => (Some(u), Some(l)),
            None => (None, None),
        };
        Ok(ComposedPld {
            upper: PldPair {
                remove: remove_upper,
                add: add_upper,
            },
            lower: PldPair {
                remove: remove_lower,
                add: add_lower,
            },
        })
    }

    /// Discretises and composes the mechanisms of one adjacency, both bounds on one grid, starting from `h` and
    /// widening it until the single-step grids and both FFT windows fit.
    fn compose_one_adjacency(
        &self,
        parts: &[(SubsampledGaussianLoss, u64)],
        mut h: f64,
        shift: f64,
    ) -> Result<(DiscretePld, DiscretePld), DpError> {
        let widest = parts
            .iter()
            .map(|(m, _)| grid_len(m, h))
            .fold(0.0, f64::max);
        let max_grid = self.max_grid_len.min(self.max_fft_len).max(1 << 10) as f64;
        if widest > max_grid {
            h *= widest / max_grid * 1.01;
        }
        let tau = self.tail_mass_truncation;
        // Each coarsening grows h by ≥ 10 %; 8000 of them would take h past f64::MAX.
        for _ in 0..8000 {
            let pmfs: Vec<Discretised> = parts
                .iter()
                .map(|(m, _)| discretise(m, h, shift))
                .collect::<Result<_, _>>()?;
            if parts.len() == 1 && parts[0].1 == 1 {
                let [one] =
                    <[Discretised; 1]>::try_from(pmfs).map_err(|_| DpError::PldNotFinite {
                        what: "the list of mechanisms",
                        value: f64::NAN,
                    })?;
                return Ok((one.upper, one.lower));
            }
            let uppers: Vec<compose::Part<'_>> = pmfs
                .iter()
                .zip(parts)
                .map(|(d, (_, c))| (&d.upper, *c))
                .collect();
            let lowers: Vec<compose::Part<'_>> = pmfs
                .iter()
                .zip(parts)
                .map(|(d, (_, c))| (&d.lower, *c))
                .collect();
            let windows = rayon::join(
                || compose::window(&uppers, tau, self.max_fft_len),
                || compose::window(&lowers, tau, self.max_fft_len),
            );
            let (wu, wl) = match windows {
                (Ok(wu), Ok(wl)) => (wu, wl),
                (wu, wl) => {
                    // Too long: coarsen by the factor the longer window asks for (the window scales like 1/h).
                    let needed = [wu.err(), wl.err()]
                        .into_iter()
                        .flatten()
                        .fold(0.0, f64::max);
                    let max_len = self.max_fft_len.max(1 << 10) as f64;
                    let factor = 1.05 * needed / max_len;
                    h *= if factor.is_finite() {
                        factor.clamp(1.1, 1e6)
                    } else {
                        2.0
                    };
                    continue;
                }
            };
            let (upper, lower) = rayon::join(
                || compose::compose(&uppers, wu, tau, true, "the pessimistic composition"),
                || compose::compose(&lowers, wl, tau, false, "the optimistic composition"),
            );
            return Ok((upper?, lower?));
        }
        Err(DpError::PldNotFinite {
            what: "the discretisation interval after widening",
            value: h,
        })
    }
}

#[cfg(test)]
mod tests;
