//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov, Talwar & Zhang, "Rényi
//! Differential Privacy of the Sampled Gaussian Mechanism", 2019), following Google's `dp_accounting`
//! `RdpAccountant` term for term, all in log space so large orders and tiny q neither overflow nor underflow.
//!
//! RDP→(ε, δ) uses the improved conversion of Canonne, Kamath & Steinke 2020 (Prop. 12) / Asoodeh et al. 2020:
//! ε = min_α [ RDP(α) + log1p(−1/α) − log(δ·α)/(α − 1) ], the one `dp_accounting` uses.
//!
//! When every event is a plain Gaussian (q = 1, or a zCDP release), the composition is exactly a Gaussian
//! mechanism, and the accountant returns the exact analytic-Gaussian ε (never larger than the RDP bound).

use super::analytic_gaussian;
use super::ledger::merge_events;
use super::special::{log_add, log_binom, log_erfc};
use super::{DpError, PrivacyEvent};

/// `dp_accounting`'s `DEFAULT_RDP_ORDERS`: 1.1, 1.2, …, 10.9, then 11, …, 63, then 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// Maximum number of series terms for fractional orders (as in `dp_accounting`); a non-converged order is skipped.
const MAX_STEPS_LOG_A_FRAC: usize = 1000;

/// log A_α for integer α (MTZ 2019, Sec. 3.3): A_α = Σᵢ C(α,i) qⁱ (1−q)^{α−i} exp((i²−i)/(2σ²)).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let a = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let i = i as f64;
        let term =
            log_binom(a, i) + i * log_q + (a - i) * log_1mq + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    log_a
}

/// log A_α for fractional α: the two half-line integrals as binomial series (MTZ 2019, Sec. 3.3). As in
/// `dp_accounting` the magnitudes of the terms are summed, which can only overestimate A_α.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log_q = q.ln();
    let log_1mq = (-q).ln_1p();
    let s2 = std::f64::consts::SQRT_2 * sigma;
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_STEPS_LOG_A_FRAC {
        let i = i as f64;
        let log_coef = log_binom(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / s2);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / s2);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// RDP at order α of one step of the Poisson-subsampled Gaussian with sampling rate q and noise multiplier σ.
/// Returns +∞ when the series for a fractional order does not converge (that order is then useless, not wrong).
pub fn subsampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 && alpha <= u64::MAX as f64 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// ε at `delta` from an RDP curve, with the optimal order. Orders ≤ 1.01 are skipped (numerically unstable).
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 || best.1.is_nan() {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// δ at `epsilon` from an RDP curve, with the optimal order (CKS 2020 Prop. 12, and the KL bound √(1−e^{−r})).
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let mut log_delta = if r <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 || best.1.is_nan() {
            best = (log_delta, a);
        }
    }
    (best.0.exp().min(1.0), best.1)
}

/// The RDP accountant: sums RDP curves of all events over a fixed list of orders.
#[derive(Debug, Clone)]
pub struct RdpAccountant {
    orders: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self {
            orders: default_orders(),
        }
    }
}

impl RdpAccountant {
    /// An accountant over custom orders (each finite and > 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, DpError> {
        if let Some(&bad) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
            return Err(DpError::InvalidOrder(bad));
        }
        Ok(Self { orders })
    }

    /// The orders this accountant evaluates.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The composed RDP curve of `events`, one value per order (events merged and summed in canonical order).
    pub fn rdp(&self, events: &[PrivacyEvent]) -> Result<Vec<f64>, DpError> {
        let mut total = vec![0.0; self.orders.len()];
        for event in merge_events(events)? {
            match event {
                PrivacyEvent::SubsampledGaussian {
                    sampling_rate,
                    noise_multiplier,
                    steps,
                } => {
                    for (t, &a) in total.iter_mut().zip(&self.orders) {
                        *t += steps as f64
                            * subsampled_gaussian_rdp(sampling_rate, noise_multiplier, a);
                    }
                }
                PrivacyEvent::ZcdpGaussian { rho } => {
                    for (t, &a) in total.iter_mut().zip(&self.orders) {
                        *t += rho * a;
                    }
                }
            }
        }
        Ok(total)
    }

    /// ε at `delta` for the composition of `events` (0 for no events).
    pub fn epsilon(&self, events: &[PrivacyEvent], delta: f64) -> Result<f64, DpError> {
        check_delta(delta)?;
        let events = merge_events(events)?;
        let rdp = self.rdp(&events)?;
        if events.is_empty() {
            return Ok(0.0);
        }
        let (eps, _) = epsilon_from_rdp(&self.orders, &rdp, delta);
        match gaussian_only_mu(&events) {
            Some(mu) => Ok(eps.min(analytic_gaussian::epsilon_for_delta(mu, delta)?)),
            None => Ok(eps),
        }
    }

    /// δ at `epsilon` for the composition of `events` (0 for no events).
    pub fn delta(&self, events: &[PrivacyEvent], epsilon: f64) -> Result<f64, DpError> {
        check_epsilon(epsilon)?;
        let events = merge_events(events)?;
        let rdp = self.rdp(&events)?;
        if events.is_empty() {
            return Ok(0.0);
        }
        let (delta, _) = delta_from_rdp(&self.orders, &rdp, epsilon);
        match gaussian_only_mu(&events) {
            Some(mu) => Ok(delta.min(analytic_gaussian::delta_for_epsilon(mu, epsilon))),
            None => Ok(delta),
        }
    }
}

/// When every event is an unsampled Gaussian, the μ of the single equivalent Gaussian mechanism.
pub(crate) fn gaussian_only_mu(events: &[PrivacyEvent]) -> Option<f64> {
    let mut mu2 = 0.0;
    for event in events {
        mu2 += event.gaussian_mu_squared()?;
    }
    (mu2 > 0.0).then(|| mu2.sqrt())
}

pub(crate) fn check_delta(delta: f64) -> Result<(), DpError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(DpError::InvalidDelta(delta))
    }
}

pub(crate) fn check_epsilon(epsilon: f64) -> Result<(), DpError> {
    if epsilon.is_finite() && epsilon >= 0.0 {
        Ok(())
    } else {
        Err(DpError::InvalidEpsilon(epsilon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_match_dp_accounting() {
        let o = default_orders();
        assert_eq!(o.len(), 99 + 53 + 4);
        assert_eq!(o[0], 1.1);
        assert_eq!(*o.last().unwrap(), 1024.0);
    }

    #[test]
    fn integer_and_fractional_orders_agree_where_they_meet() {
        // The fractional series at α = 2 + tiny must be close to the integer formula at α = 2.
        let int = subsampled_gaussian_rdp(0.01, 1.0, 2.0);
        let frac = subsampled_gaussian_rdp(0.01, 1.0, 2.0 + 1e-9);
        assert!((int - frac).abs() < 1e-6 * int, "{int} vs {frac}");
    }

    #[test]
    fn large_orders_and_tiny_q_stay_finite() {
        for &a in &[1024.0, 512.5] {
            let r = subsampled_gaussian_rdp(1e-6, 0.5, a);
            assert!(r.is_finite() && r > 0.0, "α={a}: {r}");
        }
    }
}
