//! The README's operator walkthrough, end to end, with only `confide` commands and a TOML study file: `confide login`,
//! `study create`, `token create --env-file`, three real `confide-participant run` agents (the hospitals' side, each
//! with its token from that file and its compose slice of the breast-cancer data), `participants list`,
//! `study run --wait` until every round completed, `privacy report`, `model download`; against a coordinator in this
//! process on SQLite and on Postgres.
//!
//! The agents are the workspace's `confide-participant` binary beside `confide` (built by `cargo test --workspace`;
//! alone: `cargo build -p confide-participant`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confide_coordinator::store::Backend;
use support::{Fixture, json, ok};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The agents, stopped (by their own pids) when dropped.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn agent_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_confide")).with_file_name("confide-participant");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build -p confide-participant (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

fn walkthrough(backend: Backend) {
    let f = Fixture::start(backend);
    // confide login: checked against the coordinator, saved as the profile every later command uses.
    let out = ok(f.cli_env(
        &[
            "login",
            "--coordinator-url",
            &f.url,
            "--operator-token",
            &f.token,
        ],
        &[],
    ));
    assert!(out.contains("saved"), "{out}");
    let cli = |args: &[&str]| f.cli_env(args, &[]);

    std::fs::copy(
        format!("{REPO}/examples/models/breast_cancer_logreg.json"),
        f.path("breast_cancer_logreg.json"),
    )
    .unwrap();
    std::fs::write(
        f.path("study.toml"),
        r#"name = "breast-cancer"
model_file = "breast_cancer_logreg.json"
rounds = 2

[budget]
epsilon = 1.0

[dp]
target_epsilon = 1.0
local_epochs = 1
expected_batch_size = 32.0
"#,
    )
    .unwrap();
    let out = ok(cli(&["study", "create", "--file", "study.toml"]));
    assert!(out.contains("created study 1"), "{out}");
    ok(cli(&[
        "token",
        "create",
        "--study",
        "1",
        "--label",
        "hospital",
        "--count",
        "3",
        "--env-file",
        ".env",
    ]));

    // The hospitals: each runs its agent with the token from .env.
    let env = std::fs::read_to_string(f.path(".env")).unwrap();
    let bin = agent_binary();
    let mut agents = Agents(Vec::new());
    for (i, (line, slice)) in env
        .lines()
        .zip(["hospital-a", "hospital-b", "hospital-c"])
        .enumerate()
    {
        let token = line.split_once('=').unwrap().1;
        let site = format!("{REPO}/deploy/participants/{slice}");
        let log = std::fs::File::create(f.path(&format!("agent-{i}.log"))).unwrap();
        let child = Command::new(&bin)
            .arg("run")
            .args(["--coordinator-url", &f.url])
            .arg("--state-dir")
            .arg(f.path(&format!("state-{i}")))
            .args(["--name", slice, "--label", "malignant"])
            .args(["--dataset-id", &format!("{slice}-records")])
            .args(["--data", &format!("{site}/data.csv")])
            .args(["--stats", &format!("{site}/standardization.json")])
            .args(["--epsilon", "10", "--delta", "1e-5"])
            .args(["--poll-wait-secs", "2", "--max-backoff-secs", "1"])
            // Three sites: each aggregates with the two others (the default asks for three).
            .args(["--min-cohort", "2"])
            .env("CONFIDE_ENROLMENT_TOKEN", token)
            .env("RUST_LOG", "info")
            .env_remove("CONFIDE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start an agent");
        agents.0.push(child);
    }
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = json(cli(&["participants", "list", "--study", "1", "--json"]));
        if rows.as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(Instant::now() < until, "the agents did not enrol: {rows}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = ok(cli(&["participants", "list", "--study", "1"]));
    assert!(
        out.contains("hospital-a") && out.contains("hospital-c"),
        "{out}"
    );

    // The coordinator runs both rounds; --wait follows them and succeeds once the run completed.
    let run = cli(&["study", "run", "1", "--wait"]);
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(f.path(&format!("agent-{i}.log"))).unwrap_or_default())
        .collect();
    let summary = ok_or_logs(run, &logs);
    assert!(summary.contains("2 of 2 rounds completed"), "{summary}");
    assert!(summary.contains("completed (started"), "{summary}");
    assert!(
        summary.contains("round 1 (#1): completed") && summary.contains("round 2 (#2): completed"),
        "{summary}"
    );

    let report = json(cli(&["privacy", "report", "--study", "1", "--json"]));
    for p in report["participants"].as_array().unwrap() {
        let spent = p["epsilon_spent"].as_f64().unwrap();
        assert!(spent > 0.0 && spent <= 1.0, "{report}");
    }
    let model = json(cli(&[
        "model",
        "download",
        "--study",
        "1",
        "--version",
        "latest",
        "-o",
        "model.safetensors",
        "--json",
    ]));
    assert_eq!(model["version"], 2, "{model}");
    assert!(f.path("model.safetensors").is_file());
    drop(agents);
    f.finish();
}

/// The command's stdout if it succeeded; otherwise fails with its output and the agents' logs.
fn ok_or_logs(o: std::process::Output, logs: &str) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}): {}\n{}\nagents:\n{logs}",
        o.status.code(),
        support::stderr(&o),
        support::stdout(&o)
    );
    support::stdout(&o)
}

#[test]
fn sqlite_walkthrough() {
    walkthrough(Backend::Sqlite);
}

#[test]
fn postgres_walkthrough() {
    walkthrough(Backend::Postgres);
}
