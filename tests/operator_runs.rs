//! The `confide` commands of studies that run themselves (`study run|stop`, a study file's `[schedule]`), enrolment
//! tokens (`token list|revoke`) and last-seen times, as the real binary against a coordinator in this process, on
//! SQLite and Postgres.

mod support;

use confide_coordinator::client::CoordinatorClient;
use confide_coordinator::store::Backend;
use support::{Fixture, fails, json, ok, stdout};

/// A semi-honest study of 3 rounds with one-second stages (participants that never answer make every round abort
/// at its first deadline), with an optional `[schedule]`.
fn short_study(name: &str, schedule: &str) -> String {
    format!(
        r#"name = "{name}"
model_file = "model.json"
rounds = 3

[budget]
epsilon = 2.0

[dp]
noise_multiplier = 4.0

[secagg]
threat_model = "semi_honest"

[deadlines]
advertise_keys_secs = 1
share_keys_secs = 1
masked_input_secs = 1
unmasking_secs = 1
{schedule}"#
    )
}

/// `study run|stop` (from the study file's `[schedule]` and from the command), `study run --wait` following rounds
/// to the run's end, `token list|revoke`, and `participants list` showing when each was last seen.
fn study_runs_and_tokens(backend: Backend) {
    let f = Fixture::start(backend);
    std::fs::write(
        f.path("model.json"),
        r#"{"kind": "logistic_regression", "input_dim": 3, "num_classes": 2}"#,
    )
    .unwrap();
    // A study file with an automatic schedule starts running when created (and waits for participants).
    let auto = short_study(
        "auto",
        "\n[schedule]\nkind = \"automatic\"\nmax_retries = 1\n",
    );
    std::fs::write(f.path("auto.toml"), auto).unwrap();
    let out = ok(f.cli(&["study", "create", "--file", "auto.toml"]));
    assert!(
        out.contains("automatic: 0 s between rounds, an aborted round retried up to 1 time(s)"),
        "{out}"
    );
    assert!(out.contains("running (started"), "{out}");
    let shown = json(f.cli(&["study", "show", "1", "--json"]));
    assert_eq!(shown["schedule"]["kind"], "automatic");
    assert_eq!(shown["run"]["state"], "running");
    fails(
        f.cli(&["study", "run", "1"]),
        6,
        &["409", "already running"],
    );
    let stopped = ok(f.cli(&["study", "stop", "1", "--reason", "not yet"]));
    assert!(
        stopped.contains("stopped") && stopped.contains("stopped by the operator: not yet"),
        "{stopped}"
    );
    fails(f.cli(&["study", "stop", "1"]), 6, &["409", "not running"]);

    // A manual study, run from the command line and followed to its end: every round aborts, the run retries
    // once and fails (exit 8), the summary lists both rounds.
    std::fs::write(f.path("manual.toml"), short_study("manual", "")).unwrap();
    let created = json(f.cli(&["study", "create", "--file", "manual.toml", "--json"]));
    assert_eq!(created["schedule"]["kind"], "manual");
    assert!(created.get("run").is_none(), "{created}");
    let tokens = json(f.cli(&[
        "token", "create", "--study", "2", "--label", "site", "--count", "3", "--json",
    ]));
    let base = CoordinatorClient::new(&f.url, "");
    let mut credentials = Vec::new();
    for (i, t) in tokens.as_array().unwrap().iter().enumerate() {
        let e =
            f.rt.block_on(base.enrol(t["token"].as_str().unwrap(), &format!("site-{}", i + 1)))
                .expect("enrol");
        credentials.push(e.credential);
    }
    let out = ok(f.cli(&["participants", "list", "--study", "2"]));
    assert!(out.contains("LAST SEEN") && out.contains("never"), "{out}");
    // One participant asks for work: it is seen.
    f.rt.block_on(base.with_token(&credentials[0]).poll_task(0))
        .expect("poll");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let rows = json(f.cli(&["participants", "list", "--study", "2", "--json"]));
    assert!(rows[0]["last_seen_ms"].as_i64().is_some(), "{rows}");
    assert!(rows[1]["last_seen_ms"].is_null(), "{rows}");
    let out = ok(f.cli(&["participants", "list", "--study", "2"]));
    assert!(out.contains(" ago"), "{out}");

    // A disabled participant is listed as such and not selected: one of three leaves too few, the run waits.
    let disabled = ok(f.cli(&["participants", "disable", "--study", "2", "3"]));
    assert!(
        disabled.contains("participant 3 (site-3) of study 2 is disabled"),
        "{disabled}"
    );
    let out = ok(f.cli(&["participants", "list", "--study", "2"]));
    assert!(out.contains("(disabled)"), "{out}");
    fails(
        f.cli(&["participants", "disable", "--study", "2", "99"]),
        5,
        &["not found"],
    );
    let refused = f.cli(&["round", "start", "--study", "2"]);
    fails(refused, 6, &["participant 3: disabled by the operator"]);
    let more = json(f.cli(&[
        "token", "create", "--study", "2", "--label", "site-4", "--json",
    ]));
    f.rt.block_on(base.enrol(more[0]["token"].as_str().unwrap(), "site-4"))
        .expect("enrol a fourth");

    let run = f.cli(&["study", "run", "2", "--max-retries", "1", "--wait"]);
    let summary = stdout(&run);
    fails(run, 8, &["the run failed: 2 round(s) aborted in a row"]);
    assert!(
        summary.contains("round 1 (#1): aborted") && summary.contains("round 2 (#2): aborted"),
        "{summary}"
    );
    assert!(summary.contains("0 of 3 rounds completed"), "{summary}");
    assert!(summary.contains("failed (started"), "{summary}");
    let rounds = json(f.cli(&["round", "list", "--study", "2", "--json"]));
    assert_eq!(rounds.as_array().unwrap().len(), 2, "{rounds}");

    // Tokens: listed without secrets, an unused one revoked, a used one refused.
    let extra = json(f.cli(&[
        "token", "create", "--study", "2", "--label", "spare", "--json",
    ]));
    let secret = extra[0]["token"].as_str().unwrap().to_string();
    let listed = ok(f.cli(&["token", "list", "--study", "2"]));
    assert!(!listed.contains(&secret), "{listed}");
    assert!(
        listed.contains("used by participant")
            && listed.contains("spare")
            && listed.contains("unused"),
        "{listed}"
    );
    let all = json(f.cli(&["token", "list", "--study", "2", "--json"]));
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 5);
    let spare = all.iter().find(|t| t["label"] == "spare").unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let used = all[0]["id"].as_i64().unwrap().to_string();
    let revoked = ok(f.cli(&["token", "revoke", "--study", "2", &spare]));
    assert!(revoked.contains("revoked"), "{revoked}");
    assert!(f.rt.block_on(base.enrol(&secret, "late")).is_err());
    fails(
        f.cli(&["token", "revoke", "--study", "2", &used]),
        6,
        &["409"],
    );
    fails(
        f.cli(&["token", "revoke", "--study", "2", "999"]),
        5,
        &["not found"],
    );
    let none = ok(f.cli(&["token", "list", "--study", "1"]));
    assert!(none.contains("no enrolment tokens in study 1"), "{none}");

    // The compose stack's bundled study (scripts/compose-init.sh creates it): σ calibrated, running at once and
    // waiting for the hospitals.
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/study.toml");
    let created = json(f.cli(&["study", "create", "--file", bundled, "--json"]));
    assert_eq!(created["config"]["name"], "compose-breast-cancer");
    assert_eq!(created["config"]["dp"]["target_epsilon"], 1.0);
    assert!(
        created["config"]["dp"]["noise_multiplier"]
            .as_f64()
            .unwrap()
            > 1.0
    );
    assert_eq!(created["schedule"]["kind"], "automatic");
    assert_eq!(created["run"]["state"], "running");
    f.finish();
}

#[test]
fn sqlite_study_run_stop_and_tokens() {
    study_runs_and_tokens(Backend::Sqlite);
}

#[test]
fn postgres_study_run_stop_and_tokens() {
    study_runs_and_tokens(Backend::Postgres);
}
