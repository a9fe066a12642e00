//! `confide privacy ...` end to end: JSON on stdout, clear errors and a non-zero exit on bad input.

use std::process::{Command, Output};

use confide_common::dp::analytic_gaussian;

fn confide(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confide"))
        .args(args)
        .output()
        .expect("run confide")
}

fn json_stdout(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn epsilon_prints_json_with_pld_by_default() {
    let out = confide(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
    ]);
    let v = json_stdout(&out);
    assert_eq!(v["accountant"], "pld");
    assert_eq!(v["steps"], 1000);
    assert_eq!(v["sampling_rate"], 0.01);
    assert_eq!(v["noise_multiplier"], 1.1);
    assert_eq!(v["delta"], 1e-5);
    let eps = v["epsilon"].as_f64().expect("ε is a number");
    // Well-known DP-SGD setting: RDP gives ≈ 1.7 here (see docs/OPENDP.md); PLD is tighter but of that order.
    assert!(eps > 1.0 && eps < 1.8, "{eps}");
    // The certified lower bound sits just below the enforced upper one.
    let lower = v["epsilon_lower"].as_f64().expect("ε lower is a number");
    assert!(lower <= eps && lower >= eps * 0.995, "{lower} .. {eps}");
}

#[test]
fn rdp_accountant_is_selectable_and_looser() {
    let base = [
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
    ];
    let pld = json_stdout(&confide(&base))["epsilon"].as_f64().unwrap();
    let mut args = base.to_vec();
    args.extend(["--accountant", "rdp"]);
    let v = json_stdout(&confide(&args));
    assert_eq!(v["accountant"], "rdp");
    let rdp = v["epsilon"].as_f64().unwrap();
    assert!(rdp >= pld, "RDP {rdp} < PLD {pld}");
    assert!(v["epsilon_lower"].is_null(), "RDP has no lower bound: {v}");
}

#[test]
fn tiny_noise_gives_a_huge_epsilon_or_an_error_never_zero() {
    // These printed "epsilon":0.0 before (the exact Gaussian ε of the first is ≈ 5e9).
    for (q, sigma, steps) in [
        ("1", "1e-5", "1"),
        ("1", "3e-5", "1"),
        ("0.1", "1e-5", "10"),
    ] {
        let out = confide(&[
            "privacy",
            "epsilon",
            "--sampling-rate",
            q,
            "--noise-multiplier",
            sigma,
            "--steps",
            steps,
            "--delta",
            "1e-5",
        ]);
        if !out.status.success() {
            assert!(
                out.stdout.is_empty(),
                "{q} {sigma} {steps}: failed but printed"
            );
            assert!(
                !out.stderr.is_empty(),
                "{q} {sigma} {steps}: failed silently"
            );
            continue;
        }
        let v = json_stdout(&out);
        let eps = v["epsilon"].as_f64().expect("ε");
        let lower = v["epsilon_lower"].as_f64().expect("ε lower");
        let (sigma, steps): (f64, u64) = (sigma.parse().unwrap(), steps.parse().unwrap());
        let single = analytic_gaussian::epsilon_for_delta(1.0 / sigma, 1e-5).unwrap();
        if q == "1" {
            let exact = analytic_gaussian::epsilon_for_delta(
                analytic_gaussian::composed_mu(sigma, steps),
                1e-5,
            )
            .unwrap();
            assert!(
                eps >= exact && lower <= exact,
                "{lower} .. {eps} vs exact {exact}"
            );
        } else {
            // At least one participation's worth of loss: far above zero.
            assert!(lower > 0.5 * single && lower <= eps, "{lower} .. {eps}");
        }
    }
}

#[test]
fn bench_reports_the_gap_between_the_bounds() {
    let v = json_stdout(&confide(&["privacy", "bench", "--json", "--repeats", "1"]));
    let upper = v["pld_epsilon"].as_f64().expect("upper");
    let lower = v["pld_epsilon_lower"].as_f64().expect("lower");
    assert!(
        lower <= upper && v["pld_relative_gap"].as_f64().unwrap() < 5e-3,
        "{v}"
    );
    assert!(v["pld_epsilon_seconds_one_core"]["cpu"].as_f64().unwrap() > 0.0);
    let gaps = v["pld_gaps"].as_array().expect("gap rows");
    assert_eq!(gaps.len(), 3, "{v}");
    for row in gaps {
        let (u, l) = (
            row["upper"].as_f64().unwrap(),
            row["lower"].as_f64().unwrap(),
        );
        assert!(
            l <= u && row["relative_gap"].as_f64().unwrap() < 5e-3,
            "{row}"
        );
        if let Some(exact) = row["exact_gaussian"].as_f64() {
            assert!(l <= exact && exact <= u, "{row}");
        }
    }
    assert!(
        gaps.iter().any(|r| r["sampling_rate"] == 1.0),
        "a q = 1 row: {v}"
    );
}

#[test]
fn plan_returns_a_noise_multiplier_that_meets_the_target() {
    let out = confide(&[
        "privacy",
        "plan",
        "--target-epsilon",
        "2",
        "--delta",
        "1e-5",
        "--sampling-rate",
        "0.01",
        "--steps",
        "500",
    ]);
    let v = json_stdout(&out);
    let sigma = v["noise_multiplier"].as_f64().unwrap();
    let achieved = v["epsilon"].as_f64().unwrap();
    assert!(achieved <= 2.0, "{achieved}");
    assert!(sigma > 0.3 && sigma < 3.0, "{sigma}");
    assert!(
        ((sigma * 1000.0).round() - sigma * 1000.0).abs() < 1e-6,
        "σ on the 0.001 grid: {sigma}"
    );
    assert_eq!(v["accountant"], "pld");
}

#[test]
fn invalid_arguments_fail_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--sampling-rate",
                "0",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sampling rate",
        ),
        (
            &[
                "--sampling-rate",
                "1.5",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sampling rate",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "-1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "noise multiplier",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "0",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "noise multiplier",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "0",
                "--delta",
                "1e-5",
            ],
            "steps",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1",
            ],
            "δ",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "0",
            ],
            "δ",
        ),
        (
            &[
                "--sampling-rate",
                "NaN",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sampling rate",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "NaN",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "noise multiplier",
        ),
        (
            &[
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
                "--accountant",
                "moments",
            ],
            "accountant",
        ),
    ];
    for (args, word) in cases {
        let mut all = vec!["privacy", "epsilon"];
        all.extend_from_slice(args);
        let out = confide(&all);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(word),
            "{args:?}: stderr {stderr:?} should mention {word:?}"
        );
    }
    let out = confide(&[
        "privacy",
        "plan",
        "--target-epsilon",
        "-1",
        "--delta",
        "1e-5",
        "--sampling-rate",
        "0.01",
        "--steps",
        "10",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("target ε"));
}
