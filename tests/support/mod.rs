//! What the `confide` CLI tests share: a coordinator served in the test's runtime (SQLite or a fresh Postgres
//! schema), the real binary run with the connection in its environment and a home folder of its own, and helpers for
//! its output and exit codes.
#![allow(dead_code)]

use std::process::{Command, Output};

use confide_coordinator::Limits;
use confide_coordinator::client::CoordinatorClient;
use confide_coordinator::store::{Backend, Store};
use tokio_util::sync::CancellationToken;

/// A coordinator served by this test's runtime, and a home folder for the CLI (so no real profile is read).
pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub store: Store,
    pub schema: Option<String>,
    pub url: String,
    pub token: String,
    pub stop: CancellationToken,
    pub home: tempfile::TempDir,
}

pub fn postgres_url() -> String {
    std::env::var("CONFIDE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Fixture {
    pub fn start(backend: Backend) -> Self {
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
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(
            args,
            &[
                ("CONFIDE_COORDINATOR_URL", &self.url),
                ("CONFIDE_OPERATOR_TOKEN", &self.token),
            ],
        )
    }

    /// `confide ARGS` with only `env` set (and a home of its own).
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
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

    pub fn client(&self) -> CoordinatorClient {
        CoordinatorClient::new(&self.url, &self.token)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.home.path().join(name)
    }

    pub fn finish(self) {
        self.stop.cancel();
        if let Some(schema) = &self.schema {
            self.rt
                .block_on(self.store.drop_schema(schema))
                .expect("drop schema");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command succeeded; its stdout.
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", stderr(&o), stdout(&o));
    stdout(&o)
}

/// The command failed with `code` and a message containing every one of `parts`.
pub fn fails(o: Output, code: i32, parts: &[&str]) {
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

pub fn json(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("one JSON document on stdout")
}
