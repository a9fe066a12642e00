//! Property tests of the accountants and calibration: ε grows with T and q, falls with σ, and calibration
//! round-trips. RDP cases are cheap and many; PLD cases are fewer and kept small for CI.

use confide_common::dp::{
    AccountantKind, DpError, PrivacyEvent, PrivacyLedger, ledger, noise_multiplier_for_rounds,
    noise_multiplier_for_target,
};
use proptest::prelude::*;

fn eps(q: f64, sigma: f64, steps: u64, delta: f64, kind: AccountantKind) -> f64 {
    let event = PrivacyEvent::SubsampledGaussian {
        sampling_rate: q,
        noise_multiplier: sigma,
        steps,
    };
    ledger::epsilon(&[event], delta, kind).expect("ε")
}

/// Monotonicity is checked up to this relative slack (rounding of different discretised PLDs).
const SLACK: f64 = 1e-9;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    // Typical DP-SGD range. For q near 1 with σ ≲ 0.6 the RDP accountant (here and in dp_accounting, value for
    // value) is not monotone in q: its fractional-order series stop converging and those orders are skipped.
    fn rdp_epsilon_is_monotone(q in 0.001f64..0.3, sigma in 0.7f64..5.0, steps in 1u64..5_000,
                               q_f in 1.05f64..2.0, s_f in 1.05f64..2.0, t_f in 2u64..5) {
        let delta = 1e-5;
        let kind = AccountantKind::Rdp;
        let base = eps(q, sigma, steps, delta, kind);
        prop_assert!(eps(q, sigma, steps * t_f, delta, kind) >= base * (1.0 - SLACK));
        prop_assert!(eps(q * q_f, sigma, steps, delta, kind) >= base * (1.0 - SLACK));
        prop_assert!(eps(q, sigma * s_f, steps, delta, kind) <= base * (1.0 + SLACK));
    }

    #[test]
    fn rdp_calibration_round_trips(target in 0.3f64..20.0, q in 0.001f64..0.5, steps in 1u64..3_000) {
        let delta = 1e-5;
        let kind = AccountantKind::Rdp;
        let sigma = noise_multiplier_for_target(target, delta, q, steps, kind).expect("plan");
        prop_assert!(eps(q, sigma, steps, delta, kind) <= target);
        if sigma > 0.001 + 1e-12 {
            prop_assert!(eps(q, sigma - 0.001, steps, delta, kind) > target);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn pld_epsilon_is_monotone(q in 0.005f64..0.2, sigma in 0.8f64..3.0, steps in 1u64..200) {
        let delta = 1e-5;
        let kind = AccountantKind::Pld;
        let base = eps(q, sigma, steps, delta, kind);
        prop_assert!(eps(q, sigma, steps * 3, delta, kind) >= base * (1.0 - SLACK));
        prop_assert!(eps((q * 1.5).min(1.0), sigma, steps, delta, kind) >= base * (1.0 - SLACK));
        prop_assert!(eps(q, sigma * 1.3, steps, delta, kind) <= base * (1.0 + SLACK));
    }
}

#[test]
fn pld_calibration_round_trips() {
    // Deterministic cases (each PLD calibration runs ~10 PLD evaluations; a random search would be slow in CI).
    let delta = 1e-5;
    let kind = AccountantKind::Pld;
    for (target, q, steps) in [(1.5, 0.01, 100), (4.0, 0.02, 20)] {
        let sigma = noise_multiplier_for_target(target, delta, q, steps, kind).expect("plan");
        assert!(
            eps(q, sigma, steps, delta, kind) <= target,
            "q={q} T={steps}: σ={sigma}"
        );
        assert!(
            eps(q, sigma - 0.001, steps, delta, kind) > target,
            "q={q} T={steps}: σ={sigma} is not the smallest"
        );
        // The PLD needs no more noise than RDP for the same target.
        let rdp_sigma = noise_multiplier_for_target(target, delta, q, steps, AccountantKind::Rdp)
            .expect("plan");
        assert!(sigma <= rdp_sigma, "PLD σ {sigma} > RDP σ {rdp_sigma}");
    }
}

/// A study's calibration (R rounds of T steps, one ledger event per round) is the one-event calibration of R·T
/// steps, and the per-round ledger it implies fits the target under both accountants.
#[test]
fn per_round_calibration_is_the_calibration_of_all_steps() {
    let delta = 1e-5;
    for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
        let (target, q, steps, rounds) = (1.0, 0.2, 10, 5);
        let sigma =
            noise_multiplier_for_rounds(target, delta, q, steps, rounds, kind).expect("plan");
        let whole = noise_multiplier_for_target(target, delta, q, steps * u64::from(rounds), kind)
            .expect("plan");
        assert_eq!(sigma.to_bits(), whole.to_bits(), "{kind:?}");
        let mut per_round = PrivacyLedger::new();
        for _ in 0..rounds {
            per_round
                .record(PrivacyEvent::SubsampledGaussian {
                    sampling_rate: q,
                    noise_multiplier: sigma,
                    steps,
                })
                .expect("valid");
        }
        assert!(
            per_round.epsilon(delta, kind).expect("ε") <= target,
            "{kind:?}"
        );
    }
    let refuse = |steps, rounds| {
        noise_multiplier_for_rounds(1.0, delta, 0.1, steps, rounds, AccountantKind::Rdp)
    };
    assert!(matches!(refuse(0, 3), Err(DpError::ZeroSteps)));
    assert!(matches!(refuse(3, 0), Err(DpError::ZeroSteps)));
    assert!(matches!(
        refuse(u64::MAX / 2, 3),
        Err(DpError::TooManySteps { rounds: 3, .. })
    ));
}

#[test]
fn empty_ledger_has_zero_epsilon_and_delta() {
    let ledger = PrivacyLedger::new();
    for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
        assert_eq!(ledger.epsilon(1e-5, kind).unwrap(), 0.0);
        assert_eq!(ledger.delta(1.0, kind).unwrap(), 0.0);
    }
}

#[test]
fn heterogeneous_ledger_composes_and_costs_more_than_each_part() {
    let sgd = PrivacyEvent::SubsampledGaussian {
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
        steps: 1_000,
    };
    let release = PrivacyEvent::ZcdpGaussian { rho: 0.05 };
    let other = PrivacyEvent::SubsampledGaussian {
        sampling_rate: 0.02,
        noise_multiplier: 2.0,
        steps: 500,
    };
    let mut ledger = PrivacyLedger::new();
    for e in [sgd, release, other] {
        ledger.record(e).unwrap();
    }
    for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
        let all = ledger.epsilon(1e-5, kind).unwrap();
        for e in [sgd, release, other] {
            let alone = ledger::epsilon(&[e], 1e-5, kind).unwrap();
            assert!(all > alone, "{kind}: {all} ≤ {alone} for {e:?}");
        }
        // δ(ε) and ε(δ) are consistent: δ at the reported ε is at most the δ asked for.
        let delta = ledger.delta(all, kind).unwrap();
        assert!(delta <= 1e-5 * (1.0 + 1e-6), "{kind}: δ({all}) = {delta}");
    }
    let pld = ledger.epsilon(1e-5, AccountantKind::Pld).unwrap();
    let rdp = ledger.epsilon(1e-5, AccountantKind::Rdp).unwrap();
    assert!(pld <= rdp, "PLD {pld} should be tighter than RDP {rdp}");
}

#[test]
fn zcdp_release_is_the_gaussian_with_sigma_one_over_sqrt_two_rho() {
    // ρ = 1/(2σ²) for Δ = 1: the zCDP event and the unsampled Gaussian event are the same mechanism.
    let sigma: f64 = 1.1;
    let rho = 1.0 / (2.0 * sigma * sigma);
    for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
        let a = ledger::epsilon(&[PrivacyEvent::ZcdpGaussian { rho }], 1e-5, kind).unwrap();
        let b = eps(1.0, sigma, 1, 1e-5, kind);
        assert!((a - b).abs() <= 1e-9 * b, "{kind}: {a} vs {b}");
    }
}

#[test]
fn large_epsilon_and_many_steps_do_not_fail() {
    // ε in the hundreds / thousands: both accountants answer with a finite number.
    for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
        let e = eps(0.5, 0.5, 100, 1e-6, kind);
        assert!(e.is_finite() && e > 100.0, "{kind}: {e}");
        let g = eps(1.0, 0.3, 10_000, 1e-6, kind);
        assert!(g.is_finite() && g > 1_000.0, "{kind}: {g}");
    }
}

#[test]
fn invalid_parameters_are_rejected_with_a_reason() {
    let bad = |q: f64, sigma: f64, steps: u64| PrivacyEvent::SubsampledGaussian {
        sampling_rate: q,
        noise_multiplier: sigma,
        steps,
    };
    let cases = [
        (bad(0.0, 1.0, 1), "sampling rate"),
        (bad(1.5, 1.0, 1), "sampling rate"),
        (bad(f64::NAN, 1.0, 1), "sampling rate"),
        (bad(0.1, 0.0, 1), "noise multiplier"),
        (bad(0.1, f64::INFINITY, 1), "noise multiplier"),
        (bad(0.1, 1.0, 0), "steps"),
        (PrivacyEvent::ZcdpGaussian { rho: -1.0 }, "ρ"),
    ];
    for kind in [AccountantKind::Pld, AccountantKind::Rdp] {
        for (event, word) in &cases {
            let err = ledger::epsilon(&[*event], 1e-5, kind).unwrap_err();
            assert!(err.to_string().contains(word), "{err}");
        }
        let ok = bad(0.1, 1.0, 1);
        for delta in [0.0, 1.0, -1e-5, f64::NAN] {
            assert!(matches!(
                ledger::epsilon(&[ok], delta, kind),
                Err(DpError::InvalidDelta(_))
            ));
        }
    }
    let mut ledger = PrivacyLedger::new();
    assert!(ledger.record(bad(2.0, 1.0, 1)).is_err());
    assert!(
        ledger.events.is_empty(),
        "a rejected event must not be recorded"
    );
    assert!(noise_multiplier_for_target(0.0, 1e-5, 0.1, 10, AccountantKind::Rdp).is_err());
    assert!(noise_multiplier_for_target(f64::NAN, 1e-5, 0.1, 10, AccountantKind::Rdp).is_err());
}

#[test]
fn ledger_round_trips_through_tagged_json() {
    let mut ledger = PrivacyLedger::new();
    ledger
        .record(PrivacyEvent::SubsampledGaussian {
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            steps: 100,
        })
        .unwrap();
    ledger
        .record(PrivacyEvent::ZcdpGaussian { rho: 0.1 })
        .unwrap();
    let json = serde_json::to_string(&ledger).unwrap();
    assert!(json.contains(r#""kind":"subsampled_gaussian""#), "{json}");
    assert!(json.contains(r#""kind":"zcdp_gaussian""#), "{json}");
    let back: PrivacyLedger = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ledger);
    assert_eq!(
        "rdp".parse::<AccountantKind>().unwrap(),
        AccountantKind::Rdp
    );
    assert_eq!(
        serde_json::to_string(&AccountantKind::Pld).unwrap(),
        r#""pld""#
    );
    assert!("moments".parse::<AccountantKind>().is_err());
}
