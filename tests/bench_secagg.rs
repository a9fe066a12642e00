//! `confide bench secagg` on a tiny round: both threat models run on the same inputs, every aggregate is exact,
//! and the overhead comes from the median of the repeated pairs.

use std::process::Command;

#[test]
fn both_threat_models_aggregate_exactly_and_the_overhead_uses_every_pair() {
    let out = Command::new(env!("CARGO_BIN_EXE_confide"))
        .args([
            "bench",
            "secagg",
            "--participants",
            "8",
            "--params",
            "1000",
            "--dropout",
            "0.25",
            "--repeat",
            "3",
            "--json",
        ])
        .output()
        .expect("run confide bench secagg");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    for side in ["semi_honest", "malicious"] {
        assert_eq!(report[side]["correct"], true, "{report}");
        assert_eq!(report[side]["dropped"], 2, "{report}");
    }
    assert_eq!(report["malicious"]["threat_model"], "malicious", "{report}");
    // The malicious round signs and verifies; the semi-honest one does not.
    assert!(report["malicious"]["signatures"].is_object(), "{report}");
    assert!(report["semi_honest"]["signatures"].is_null(), "{report}");
    let pairs = report["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 3, "{report}");
    for p in pairs {
        for k in ["semi_honest_server", "malicious_server"] {
            assert!(p[k]["cpu"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    for k in ["client_wall", "client_cpu", "server_wall", "server_cpu"] {
        assert!(report["malicious_overhead"][k].is_f64(), "{report}");
    }
    // --repeat is bounded.
    let out = Command::new(env!("CARGO_BIN_EXE_confide"))
        .args(["bench", "secagg", "--repeat", "0"])
        .output()
        .expect("run confide bench secagg");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--repeat"));
}
