use super::compose::fast_len;
use super::curve::{Adjacency, SubsampledGaussianLoss};
use super::discretise::discretise;
use super::*;
use crate::dp::analytic_gaussian;

fn loss(q: f64, sigma: f64, adjacency: Adjacency) -> SubsampledGaussianLoss {
    SubsampledGaussianLoss {
        sigma,
        q,
        adjacency,
    }
}

#[test]
fn fast_len_is_smooth_and_large_enough() {
    for n in [1, 7, 100, 1000, 65_537, 300_001] {
        let m = fast_len(n);
        assert!(m >= n);
        let mut r = m;
        for p in [2, 3, 5] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        assert_eq!(r, 1, "{m}");
    }
}

#[test]
fn the_two_discretisations_sandwich_the_exact_curve() {
    // On and between grid points, below the grid and beyond it, for coarse and fine grids.
    for (q, sigma) in [(0.01, 1.0), (0.2, 0.7), (1.0, 1.0), (1e-4, 3.0)] {
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            if q == 1.0 && adjacency == Adjacency::Add {
                continue;
            }
            let m = loss(q, sigma, adjacency);
            for h in [1e-3, 0.05, 0.7] {
                let d = discretise(&m, h, 0.0).expect("discretise");
                let (lo, hi) = m.epsilon_range();
                let steps = 400;
                for k in 0..=steps {
                    let eps = lo - 1.0 + (hi - lo + 2.0) * k as f64 / steps as f64;
                    let exact = m.point(eps).delta;
                    let up = d.upper.curve_for_test(eps);
                    let low = d.lower.curve_for_test(eps);
                    assert!(
                        up >= exact - 1e-15,
                        "upper q={q} σ={sigma} {adjacency:?} h={h} ε={eps}: {up} < {exact}"
                    );
                    assert!(
                        low <= exact + 1e-15,
                        "lower q={q} σ={sigma} {adjacency:?} h={h} ε={eps}: {low} > {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn fine_grid_bounds_are_tight_for_one_step() {
    let m = loss(0.01, 1.0, Adjacency::Remove);
    let d = discretise(&m, 1e-4, 0.0).expect("discretise");
    for eps in [0.0, 0.01, 0.1, 0.5, 1.0, 2.0] {
        let exact = m.point(eps).delta;
        let (up, low) = (d.upper.curve_for_test(eps), d.lower.curve_for_test(eps));
        assert!(
            up - low <= 2e-5 * exact + 1e-12,
            "ε={eps}: {low} .. {exact} .. {up}"
        );
    }
}

#[test]
fn single_gaussian_is_bracketed_by_the_bounds() {
    let acc = PldAccountant::default();
    let event = [PrivacyEvent::SubsampledGaussian {
        sampling_rate: 1.0,
        noise_multiplier: 1.0,
        steps: 1,
    }];
    let b = acc.epsilon_bounds(&event, 1e-5).expect("bounds");
    let exact = analytic_gaussian::epsilon_for_delta(1.0, 1e-5).unwrap();
    assert!(
        b.upper >= exact * (1.0 - 1e-12) && b.upper <= exact * 1.001,
        "{b:?} vs {exact}"
    );
    assert!(
        b.lower <= exact * (1.0 + 1e-12) && b.lower >= exact * 0.999,
        "{b:?} vs {exact}"
    );
}

#[test]
fn widened_grids_do_not_overflow() {
    // h far beyond 709.8, where e^h overflows: the masses must stay finite and the bounds ordered.
    for (q, sigma, h) in [(1.0, 1e-5, 1e4), (0.1, 1e-5, 5e3), (1.0, 3e-5, 2e3)] {
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            if q == 1.0 && adjacency == Adjacency::Add {
                continue;
            }
            let d = discretise(&loss(q, sigma, adjacency), h, 0.0).expect("discretise");
            assert!(d.upper.probs.iter().all(|p| p.is_finite() && *p >= 0.0));
            assert!(d.upper.finite_mass() > 0.5, "{}", d.upper.finite_mass());
            let (up, low) = (
                d.upper.epsilon_for_delta(1e-5),
                d.lower.epsilon_for_delta(1e-5),
            );
            assert!(up.is_finite() && low <= up, "{low} .. {up}");
            if adjacency == Adjacency::Remove {
                // ε ≈ 1/(2σ²): within a few grid steps.
                let rough = 0.5 / (sigma * sigma);
                assert!(low > rough - 3.0 * h && up < rough * 1.01, "{low} .. {up}");
            }
        }
    }
}

#[test]
fn a_curve_without_mass_above_zero_reads_as_zero_only_when_it_says_so() {
    let pld = DiscretePld {
        discretization: 0.5,
        offset: 0.0,
        lower: -2,
        probs: vec![0.25, 0.25, 0.25, 0.25, 0.0],
        infinity_mass: 0.0,
        pessimistic: true,
        relative_slack: 0.0,
        absolute_slack: 0.0,
    };
    // Losses −1, −0.5, 0, 0.5: δ(0) = 0.25·(1 − e^{−0.5}) ≈ 0.098.
    assert_eq!(pld.epsilon_for_delta(0.2), 0.0);
    let eps = pld.epsilon_for_delta(0.05);
    assert!(eps > 0.0 && eps < 0.5, "{eps}");
    assert!((pld.delta_for_epsilon(eps) - 0.05).abs() < 1e-15);
    // Mass at +∞ above δ: no finite ε.
    let inf = DiscretePld {
        infinity_mass: 0.1,
        ..pld
    };
    assert_eq!(inf.epsilon_for_delta(0.05), f64::INFINITY);
}

impl DiscretePld {
    fn curve_for_test(&self, epsilon: f64) -> f64 {
        self.delta_for_epsilon(epsilon)
    }
}

#[test]
fn composing_by_fft_keeps_both_bounds_around_the_exact_gaussian() {
    // The accountant merges Gaussians analytically; here the same Gaussian is composed T times through the FFT path
    // to check that composition keeps the order of both bounds (the exact answer is known: μ = √T/σ).
    use super::compose::{compose, window};
    let tau = 1e-15;
    for (sigma, steps, h) in [(2.0, 50u64, 1e-3), (8.0, 400, 1e-3), (1.0, 3, 0.02)] {
        let d = discretise(&loss(1.0, sigma, Adjacency::Remove), h, 0.0).expect("discretise");
        let up_parts = [(&d.upper, steps)];
        let low_parts = [(&d.lower, steps)];
        let wu = window(&up_parts, tau, 1 << 22).expect("window");
        let wl = window(&low_parts, tau, 1 << 22).expect("window");
        let up = compose(&up_parts, wu, tau, true, "test").expect("compose");
        let low = compose(&low_parts, wl, tau, false, "test").expect("compose");
        let mu = analytic_gaussian::composed_mu(sigma, steps);
        for delta in [1e-3, 1e-5, 1e-8] {
            let exact = analytic_gaussian::epsilon_for_delta(mu, delta).unwrap();
            let (u, l) = (up.epsilon_for_delta(delta), low.epsilon_for_delta(delta));
            assert!(
                l <= exact && exact <= u,
                "σ={sigma} T={steps} δ={delta}: {l} .. {exact} .. {u}"
            );
            assert!(
                u - l <= 0.01 * exact,
                "σ={sigma} T={steps} δ={delta}: {l} .. {u}"
            );
        }
    }
}

#[test]
fn self_checks_refuse_broken_distributions() {
    let good = DiscretePld {
        discretization: 0.1,
        offset: 0.0,
        lower: 0,
        probs: vec![0.5, 0.5],
        infinity_mass: 0.0,
        pessimistic: true,
        relative_slack: 0.0,
        absolute_slack: 0.0,
    };
    assert!(good.check_valid(1.0, "test").is_ok());
    let nan = DiscretePld {
        probs: vec![0.5, f64::NAN],
        ..good.clone()
    };
    let err = nan.check_valid(1.0, "the test PLD").unwrap_err();
    assert!(matches!(err, DpError::PldNotFinite { .. }), "{err}");
    assert!(err.to_string().contains("the test PLD"), "{err}");
    let light = DiscretePld {
        probs: vec![0.5, 0.4],
        ..good.clone()
    };
    let err = light.check_valid(1.0, "the test PLD").unwrap_err();
    assert!(matches!(err, DpError::PldMassMismatch { .. }), "{err}");
    assert!(err.to_string().contains("fewer steps"), "{err}");
    // Mass at negative loss with too much weight under Q: Σ p·e^{−l} = 0.5·e^{1} + 0.5 > 1.
    let invalid = DiscretePld {
        lower: -10,
        ..good.clone()
    };
    let err = invalid.check_valid(1.0, "the test PLD").unwrap_err();
    assert!(matches!(err, DpError::PldInvalidCurve { .. }), "{err}");
    // A reading that cannot be made is NaN (turned into an error by the accountant), never 0.
    let inconsistent = DiscretePld {
        probs: vec![0.5, f64::NAN],
        ..good
    };
    assert!(inconsistent.epsilon_for_delta(1e-5).is_nan());
}
