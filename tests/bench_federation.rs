//! `confide bench federation` end to end on a tiny federation: a real coordinator process on SQLite and on a fresh
//! Postgres schema, simulated participants over HTTP, every published model checked against the known inputs.

use std::process::Command;

fn bench(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_confide"))
        .args([
            "bench",
            "federation",
            "--participants",
            "3",
            "--params",
            "100",
            "--rounds",
            "2",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run confide bench federation");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn assert_every_round_exact(report: &serde_json::Value) {
    assert_eq!(report["all_correct"], true, "{report}");
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{report}");
    for r in rounds {
        assert_eq!(r["outcome"], "completed", "{r}");
        assert_eq!(r["correct"], true, "{r}");
        assert_eq!(r["aggregated"], 3, "{r}");
        assert!(r["wall_seconds"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn sqlite_rounds_publish_the_exact_aggregate() {
    let report = bench(&[]);
    assert_eq!(report["database"], "sqlite", "{report}");
    assert_every_round_exact(&report);
}

#[test]
fn postgres_rounds_publish_the_exact_aggregate() {
    let url = std::env::var("CONFIDE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let report = bench(&["--database-url", &url]);
    assert_eq!(report["database"], "postgres", "{report}");
    assert_every_round_exact(&report);
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let out = Command::new(env!("CARGO_BIN_EXE_confide"))
        .args(["bench", "federation", "--participants", "2", "--json"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--participants"));
}
