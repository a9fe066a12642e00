//! `confide demo` with federated evaluation, end to end (a real coordinator and four real agents over HTTPS, debug
//! binaries): every training round's model is evaluated on the hospitals' held-out records through opendp inside
//! secure aggregation, and the last federated accuracy lies within 2 × its noise std + 0.05 of the central
//! evaluator's accuracy on the same model (issue #14's "done when"). Needs `confide-coordinator` and
//! `confide-participant` built beside `confide` (`cargo test --workspace` builds them; alone:
//! `cargo build -p confide-coordinator -p confide-participant` first).

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_reports_federated_accuracy_beside_the_central_one() {
    let confide = Path::new(env!("CARGO_BIN_EXE_confide"));
    let bin_dir = confide.parent().expect("target directory");
    for tool in ["confide-coordinator", "confide-participant"] {
        assert!(
            bin_dir.join(tool).is_file(),
            "{tool} is not built in {}: run `cargo build -p confide-coordinator -p confide-participant` (or the \
             whole workspace's tests) first",
            bin_dir.display()
        );
    }
    let out = Command::new(confide)
        .args([
            "demo",
            "--json",
            "--rounds",
            "2",
            "--evaluation",
            "every-round",
        ])
        .arg("--bin-dir")
        .arg(bin_dir)
        .env(
            "CONFIDE_DATA_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/data"),
        )
        .output()
        .expect("run confide demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let rounds = report["rounds"].as_array().expect("rounds");
    let purposes: Vec<&str> = rounds
        .iter()
        .map(|r| r["purpose"].as_str().unwrap_or("training"))
        .collect();
    assert_eq!(
        purposes,
        ["training", "evaluation", "training", "evaluation"],
        "{report}"
    );
    for r in rounds {
        assert_eq!(r["outcome"], "completed", "{r}");
        // Beside the central evaluator's accuracy, on every row: the same version's federated one and its noise.
        let central = r["test_accuracy"].as_f64().expect("test_accuracy");
        let federated = r["federated_accuracy"]
            .as_f64()
            .expect("federated_accuracy");
        let std = r["federated_accuracy_std"]
            .as_f64()
            .expect("federated_accuracy_std");
        assert!(
            (0.0..=1.0).contains(&central) && (0.0..=1.0).contains(&federated),
            "{r}"
        );
        assert!(std.is_finite() && std > 0.0, "{r}");
    }
    assert_eq!(rounds[1]["model_version"], rounds[0]["model_version"]);
    let last = &report["federated"];
    let (federated, std, central) = (
        last["federated_accuracy"].as_f64().expect("federated"),
        last["federated_accuracy_std"].as_f64().expect("std"),
        last["test_accuracy"].as_f64().expect("central"),
    );
    assert_eq!(
        last["model_version"], rounds[3]["model_version"],
        "{report}"
    );
    assert!(
        (federated - central).abs() <= 2.0 * std + 0.05,
        "federated {federated} ± {std} vs central {central}: {report}"
    );
    assert_eq!(last["within_two_std_plus_0_05"], true);
    // Evaluation composes in parallel with training: the hospitals' ε stays within the budget.
    let (spent, budget) = (
        report["epsilon_max"].as_f64().expect("epsilon_max"),
        report["epsilon_budget"].as_f64().expect("epsilon_budget"),
    );
    assert!(spent <= budget, "{spent} > {budget}");
    assert!(report["evaluation"]["holdout_fraction"].as_f64() == Some(0.2));
}
