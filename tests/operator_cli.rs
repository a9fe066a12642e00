//! The operator's `confide` commands against a real coordinator (in this process, on a loopback port, SQLite or a
//! fresh Postgres schema), run as the real binary: tables, `--json`, exit codes and the error messages that tell
//! the operator what to do. The commands that write (study create, token create) run on both databases.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use confide_coordinator::client::CoordinatorClient;
use confide_coordinator::store::Backend;
use support::{Fixture, fails, json, ok};

/// The template, as printed, is a study file `study create` accepts; tokens are written to a compose `.env`.
fn study_and_tokens(backend: Backend) {
    let f = Fixture::start(backend);
    let template = ok(f.cli(&["study", "template"]));
    std::fs::write(f.path("study.toml"), &template).unwrap();
    let out = ok(f.cli(&["study", "create", "--file", "study.toml"]));
    assert!(out.contains("created study 1"), "{out}");
    assert!(out.contains("breast-cancer"), "{out}");
    assert!(out.contains("0 of 5 completed"), "{out}");
    // The template gives a target ε: the coordinator calibrated σ for it.
    assert!(
        out.contains("(calibrated for ε ≤ 1 over 5 rounds)"),
        "{out}"
    );

    // The same study from JSON, shown as the API's StudyInfo.
    std::fs::write(
        f.path("s2.json"),
        r#"{"name": "json-study", "model_file": "model.json", "budget": {"epsilon": 2.0},
            "dp": {"noise_multiplier": 4.0}}"#,
    )
    .unwrap();
    std::fs::write(
        f.path("model.json"),
        r#"{"kind": "logistic_regression", "input_dim": 3, "num_classes": 2}"#,
    )
    .unwrap();
    let created = json(f.cli(&["study", "create", "--file", "s2.json", "--json"]));
    assert_eq!(created["id"], 2);
    assert_eq!(created["config"]["budget"]["delta"], 1e-5);
    assert_eq!(created["config"]["dp"]["sampling_rate"], 0.2);
    let shown = json(f.cli(&["study", "show", "2", "--json"]));
    assert_eq!(shown["config"]["name"], "json-study");
    let list = ok(f.cli(&["study", "list"]));
    assert!(
        list.contains("breast-cancer") && list.contains("json-study"),
        "{list}"
    );
    assert!(list.contains("0/5"), "{list}");

    let out = ok(f.cli(&[
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
    assert!(out.contains("HOSPITAL_1_ENROLMENT_TOKEN"), "{out}");
    let env = std::fs::read_to_string(f.path(".env")).unwrap();
    assert_eq!(env.lines().count(), 3, "{env}");
    assert_eq!(
        std::fs::metadata(f.path(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Every token written enrols a participant.
    let base = CoordinatorClient::new(&f.url, "");
    for (i, line) in env.lines().enumerate() {
        let (key, token) = line.split_once('=').unwrap();
        assert_eq!(key, format!("HOSPITAL_{}_ENROLMENT_TOKEN", i + 1));
        f.rt.block_on(base.enrol(token, &format!("site-{}", i + 1)))
            .expect("the token enrols");
    }
    let tokens = json(f.cli(&["token", "create", "--study", "1", "--label", "x", "--json"]));
    assert_eq!(tokens[0]["label"], "x");
    assert_eq!(tokens[0]["study_id"], 1);

    let out = ok(f.cli(&["participants", "list", "--study", "1"]));
    for name in ["site-1", "site-2", "site-3"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("0.0000 / 1"), "{out}");
    let rows = json(f.cli(&["participants", "list", "--study", "1", "--json"]));
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[0]["rounds_charged"], 0);
    f.finish();
}

#[test]
fn sqlite_study_create_and_token_create() {
    study_and_tokens(Backend::Sqlite);
}

#[test]
fn postgres_study_create_and_token_create() {
    study_and_tokens(Backend::Postgres);
}

#[test]
fn errors_say_what_to_do_and_exit_with_their_code() {
    let f = Fixture::start(Backend::Sqlite);
    // No connection at all: usage.
    fails(f.cli_env(&["study", "list"], &[]), 2, &["confide login"]);
    // Wrong token.
    fails(
        f.cli_env(
            &["study", "list"],
            &[
                ("CONFIDE_COORDINATOR_URL", &f.url),
                ("CONFIDE_OPERATOR_TOKEN", "wrong"),
            ],
        ),
        4,
        &[
            "refused the operator token",
            "confide-coordinator token create",
        ],
    );
    // Nothing listening there.
    fails(
        f.cli_env(
            &["study", "list"],
            &[
                ("CONFIDE_COORDINATOR_URL", "http://127.0.0.1:9"),
                ("CONFIDE_OPERATOR_TOKEN", "t"),
            ],
        ),
        3,
        &["cannot reach the coordinator", "is the coordinator running"],
    );
    // A URL with a path: the coordinator has no such route.
    let wrong = format!("{}/api", f.url);
    fails(
        f.cli_env(
            &["study", "list"],
            &[
                ("CONFIDE_COORDINATOR_URL", &wrong),
                ("CONFIDE_OPERATOR_TOKEN", &f.token),
            ],
        ),
        3,
        &["base URL"],
    );
    fails(
        f.cli_env(
            &["study", "list"],
            &[
                ("CONFIDE_COORDINATOR_URL", "localhost:8080"),
                ("CONFIDE_OPERATOR_TOKEN", "t"),
            ],
        ),
        2,
        &["http://"],
    );
    // Not found.
    fails(f.cli(&["study", "show", "99"]), 5, &["study 99 not found"]);
    fails(f.cli(&["round", "show", "7"]), 5, &["round 7 not found"]);
    // A study file that does not parse: nothing is sent.
    std::fs::write(
        f.path("bad.toml"),
        "name = \"x\"\nrunds = 3\n[budget]\nepsilon = 1.0\n",
    )
    .unwrap();
    fails(
        f.cli(&["study", "create", "--file", "bad.toml"]),
        1,
        &["bad.toml", "runds"],
    );
    fails(
        f.cli(&["study", "create", "--file", "missing.toml"]),
        1,
        &["cannot read"],
    );
    // Refused by the coordinator (422), naming the field; nothing stored.
    std::fs::write(
        f.path("tiny.toml"),
        "name = \"x\"\nmodel_spec = { kind = \"logistic_regression\", input_dim = 3, num_classes = 2 }\n\
         [budget]\nepsilon = 1.0\n[dp]\nnoise_multiplier = 0.01\n",
    )
    .unwrap();
    fails(
        f.cli(&["study", "create", "--file", "tiny.toml"]),
        6,
        &["422", "dp.noise_multiplier", "budget"],
    );
    std::fs::write(
        f.path("neg.toml"),
        "name = \"x\"\nmodel_spec = { kind = \"logistic_regression\", input_dim = 3, num_classes = 2 }\n\
         [budget]\nepsilon = 1.0\n[dp]\nnoise_multiplier = 2.0\nclip_norm = -1.0\n",
    )
    .unwrap();
    fails(
        f.cli(&["study", "create", "--file", "neg.toml"]),
        6,
        &["dp.clip_norm"],
    );
    std::fs::write(
        f.path("over.toml"),
        "name = \"x\"\nmodel_spec = { kind = \"logistic_regression\", input_dim = 3, num_classes = 2 }\n\
         [budget]\nepsilon = 1.0\n[dp]\ntarget_epsilon = 2.0\n",
    )
    .unwrap();
    fails(
        f.cli(&["study", "create", "--file", "over.toml"]),
        6,
        &["dp.target_epsilon = 2 is above budget.epsilon"],
    );
    let studies = json(f.cli(&["study", "list", "--json"]));
    assert_eq!(studies, serde_json::json!([]));
    // Bad arguments are clap's usage errors.
    fails(f.cli(&["token", "create", "--study", "1"]), 2, &["--label"]);
    f.finish();
}

#[test]
fn login_saves_a_private_profile_the_other_commands_use() {
    let f = Fixture::start(Backend::Sqlite);
    fails(
        f.cli_env(
            &[
                "login",
                "--coordinator-url",
                &f.url,
                "--operator-token",
                "wrong",
            ],
            &[],
        ),
        4,
        &["refused the operator token"],
    );
    let profile = f.path("config/confide/profile.toml");
    assert!(!profile.exists(), "a refused login saves nothing");
    let out = ok(f.cli_env(
        &["login", "--coordinator-url", &f.url],
        &[("CONFIDE_OPERATOR_TOKEN", &f.token)],
    ));
    assert!(out.contains("logged in"), "{out}");
    assert_eq!(
        std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        json(f.cli_env(&["study", "list", "--json"], &[])),
        serde_json::json!([])
    );
    // Flags override the profile.
    fails(
        f.cli_env(&["study", "list", "--operator-token", "other"], &[]),
        4,
        &["refused"],
    );
    f.finish();
}

/// Rounds, the privacy report and model downloads, with three enrolled participants that never answer (the round
/// is aborted by the operator while `round watch` follows it).
#[test]
fn rounds_privacy_report_and_models() {
    let f = Fixture::start(Backend::Sqlite);
    let template = ok(f.cli(&["study", "template"]));
    std::fs::write(f.path("study.toml"), template).unwrap();
    ok(f.cli(&["study", "create", "--file", "study.toml"]));
    let base = CoordinatorClient::new(&f.url, "");
    let op = f.client();
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        // Malicious-model rounds (the template's default) select only sites with a registered identity key.
        let key = confide_common::secagg::IdentityKey::from_seed(&[i as u8 + 1; 32]).public();
        f.rt.block_on(async {
            let t = op
                .create_enrolment_token(
                    1,
                    &confide_common::api::CreateEnrolmentTokenRequest {
                        label: name.into(),
                        expires_in_secs: None,
                    },
                )
                .await
                .unwrap();
            base.enrol_with_identity(&t.token, name, Some(key))
                .await
                .unwrap();
        });
    }
    fails(
        f.cli(&["round", "start", "--study", "5"]),
        5,
        &["study 5 not found"],
    );
    let started = json(f.cli(&["round", "start", "--study", "1", "--json"]));
    let round = started["id"].as_i64().unwrap().to_string();
    assert_eq!(started["stage"], "advertise_keys");
    let shown = ok(f.cli(&["round", "show", &round]));
    assert!(
        shown.contains("advertise_keys") && shown.contains("running"),
        "{shown}"
    );
    assert!(
        shown.contains("selected") && shown.contains("1, 2, 3"),
        "{shown}"
    );
    // A second round cannot start while one runs.
    fails(f.cli(&["round", "start", "--study", "1"]), 6, &["409"]);

    // Watch in the background, abort, and the watcher ends with the outcome and exit code 8.
    let watcher = Command::new(env!("CARGO_BIN_EXE_confide"))
        .args(["round", "watch", &round, "--json"])
        .env("CONFIDE_COORDINATOR_URL", &f.url)
        .env("CONFIDE_OPERATOR_TOKEN", &f.token)
        .env("HOME", f.home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let aborted = ok(f.cli(&["round", "abort", &round, "--reason", "testing the CLI"]));
    assert!(
        aborted.contains("aborted") && aborted.contains("testing the CLI"),
        "{aborted}"
    );
    let watched = watcher.wait_with_output().expect("watch ends");
    fails(watched.clone(), 8, &["aborted", "testing the CLI"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&watched.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.first().unwrap()["outcome"], serde_json::Value::Null);
    assert_eq!(lines.last().unwrap()["outcome"], "aborted");
    // Watching a finished round ends at once with its outcome.
    fails(f.cli(&["round", "watch", &round]), 8, &["aborted"]);
    fails(f.cli(&["round", "abort", &round]), 6, &["409"]);

    let list = ok(f.cli(&["round", "list", "--study", "1"]));
    assert!(
        list.contains("aborted") && list.contains("testing the CLI"),
        "{list}"
    );

    // Nothing charged: every participant can take part in all 5 rounds still.
    let report = json(f.cli(&["privacy", "report", "--study", "1", "--json"]));
    assert_eq!(report["study_rounds_left"], 5);
    for p in report["participants"].as_array().unwrap() {
        assert_eq!(p["epsilon_spent"], 0.0);
        assert_eq!(p["projected_rounds_left"], 5);
        assert_eq!(p["limited_by"], "study");
    }
    let table = ok(f.cli(&["privacy", "report", "--study", "1"]));
    assert!(
        table.contains("PROJECTED ROUNDS LEFT") && table.contains("5 (all the study's)"),
        "{table}"
    );

    // The initial model, checked against its sha256.
    let out = json(f.cli(&[
        "model",
        "download",
        "--study",
        "1",
        "-o",
        "m.safetensors",
        "--json",
    ]));
    assert_eq!(out["version"], 0);
    let bytes = std::fs::read(f.path("m.safetensors")).unwrap();
    assert_eq!(out["bytes"], bytes.len());
    fails(
        f.cli(&[
            "model",
            "download",
            "--study",
            "1",
            "--version",
            "3",
            "-o",
            "x",
        ]),
        5,
        &["no model version 3"],
    );
    assert!(!Path::new(&f.path("x")).exists());
    f.finish();
}
