//! The operator's `confide` commands against a real coordinator (in this process, on a loopback port, SQLite or a
//! fresh Postgres schema), run as the real binary: tables, `--json`, exit codes and the error messages that tell
//! the operator what to do. The commands that write (study create, token create) run on both databases.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use confide_coordinator::Limits;
use confide_coordinator::client::CoordinatorClient;
use confide_coordinator::store::{Backend, Store};
use tokio_util::sync::CancellationToken;

/// A coordinator served by this test's runtime, and a home folder for the CLI (so no real profile is read).
struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Store,
    schema: Option<String>,
    url: String,
    token: String,
    stop: CancellationToken,
    home: tempfile::TempDir,
}

fn postgres_url() -> String {
    std::env::var("CONFIDE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Fixture {
    fn start(backend: Backend) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let home = tempfile::tempdir().expect("tempdir");
        let (store, schema) = rt.block_on(async {
            match backend {
                Backend::Sqlite => {
                    let url = format!("sqlite:{}", home.path().join("coordinator.db").display());
                    (Store::connect(&url, None).await.expect("sqlite"), None)
                }
                Backend::Postgres => {
                    let suffix: u64 = rand::random();
                    let schema = format!("confide_cli_{}_{suffix:x}", std::process::id());
                    let store = Store::connect(&postgres_url(), Some(&schema))
                        .await
                        .expect("postgres (is it running? CONFIDE_TEST_POSTGRES_URL)");
                    (store, Some(schema))
                }
            }
        });
        let stop = CancellationToken::new();
        let (url, token) = rt.block_on(async {
            let state = confide_coordinator::start(store.clone(), Limits::default())
                .await
                .expect("coordinator");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let stopped = stop.clone();
            tokio::spawn(confide_coordinator::serve(listener, state, async move {
                stopped.cancelled().await
            }));
            let token = store
                .create_operator_token("cli-test")
                .await
                .expect("token");
            (url, token)
        });
        Self {
            rt,
            store,
            schema,
            url,
            token,
            stop,
            home,
        }
    }

    /// `confide ARGS` with the connection in the environment.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(
            args,
            &[
                ("CONFIDE_COORDINATOR_URL", &self.url),
                ("CONFIDE_OPERATOR_TOKEN", &self.token),
            ],
        )
    }

    /// `confide ARGS` with only `env` set (and a home of its own).
    fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_confide"));
        cmd.args(args)
            .env_remove("CONFIDE_COORDINATOR_URL")
            .env_remove("CONFIDE_OPERATOR_TOKEN")
            .env_remove("CONFIDE_PROFILE")
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .current_dir(self.home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run confide")
    }

    fn client(&self) -> CoordinatorClient {
        CoordinatorClient::new(&self.url, &self.token)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.home.path().join(name)
    }

    fn finish(self) {
        self.stop.cancel();
        if let Some(schema) = &self.schema {
            self.rt
                .block_on(self.store.drop_schema(schema))
                .expect("drop schema");
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command succeeded; its stdout.
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", stderr(&o), stdout(&o));
    stdout(&o)
}

/// The command failed with `code` and a message containing every one of `parts`.
fn fails(o: Output, code: i32, parts: &[&str]) {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        stdout(&o)
    );
    for p in parts {
        assert!(err.contains(p), "{p:?} not in: {err}");
    }
}

fn json(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("one JSON document on stdout")
}

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
    assert_eq!(all.len(), 4);
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
