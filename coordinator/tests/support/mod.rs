//! Test databases: a temporary SQLite file, or a fresh schema in the test Postgres (`CONFIDE_TEST_POSTGRES_URL`,
//! default postgres://postgres@127.0.0.1:5432/test), dropped again by `cleanup`.
#![allow(dead_code)]

pub mod sim;

use confide_coordinator::store::{Backend, Store};

pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_url() -> String {
    std::env::var("CONFIDE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("coordinator.db").display());
                let store = Store::connect(&url, None).await.expect("open sqlite store");
                Self {
                    store,
                    url,
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let url = postgres_url();
                let schema = format!("confide_test_{}_{}", std::process::id(), hex_suffix());
                let store = Store::connect(&url, Some(&schema)).await.expect(
                    "open postgres store (is Postgres running? set CONFIDE_TEST_POSTGRES_URL)",
                );
                Self {
                    store,
                    url,
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    pub async fn cleanup(self) {
        if let Some(schema) = &self.schema {
            self.store
                .drop_schema(schema)
                .await
                .expect("drop test schema");
        }
        self.store.close().await;
    }
}

/// Overwrites a round's stored server snapshot behind the Store's back (to test what a corrupt one does).
pub async fn overwrite_server_snapshot(db: &TestDb, round_id: i64, bytes: &[u8]) {
    use sqlx::Connection;
    let sql = "UPDATE rounds SET server_state = $1 WHERE id = $2";
    match &db.schema {
        None => {
            let path = db.url.trim_start_matches("sqlite:");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                .await
                .expect("open sqlite");
            let done = sqlx::query(sql)
                .bind(bytes)
                .bind(round_id)
                .execute(&mut c)
                .await
                .expect("update");
            assert_eq!(done.rows_affected(), 1);
        }
        Some(schema) => {
            let mut c = sqlx::PgConnection::connect(&db.url)
                .await
                .expect("open postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                .execute(&mut c)
                .await
                .expect("search_path");
            let done = sqlx::query(sql)
                .bind(bytes)
                .bind(round_id)
                .execute(&mut c)
                .await
                .expect("update");
            assert_eq!(done.rows_affected(), 1);
        }
    }
}

fn hex_suffix() -> String {
    let b: [u8; 6] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs an async test body once against SQLite and once against Postgres.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let db =
                    $crate::support::TestDb::new(confide_coordinator::store::Backend::Sqlite).await;
                ($body)(&db).await;
                db.cleanup().await;
            }
            #[tokio::test]
            async fn postgres() {
                let db =
                    $crate::support::TestDb::new(confide_coordinator::store::Backend::Postgres)
                        .await;
                ($body)(&db).await;
                db.cleanup().await;
            }
        }
    };
}

/// A real `confide-coordinator serve` process (for crash and multi-process tests).
pub struct CoordinatorProcess {
    pub child: std::process::Child,
    pub base_url: String,
    pub log: std::path::PathBuf,
}

impl CoordinatorProcess {
    /// Starts `serve` on a free loopback port against `url` (and `schema`), logging to `log`.
    pub fn start(url: &str, schema: Option<&str>, log: std::path::PathBuf) -> Self {
        Self::start_with(url, schema, log, &[])
    }

    /// Like [`CoordinatorProcess::start`], with more arguments (e.g. `--log-json`).
    pub fn start_with(
        url: &str,
        schema: Option<&str>,
        log: std::path::PathBuf,
        extra: &[&str],
    ) -> Self {
        use std::io::BufRead;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_confide-coordinator"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr);
        if let Some(s) = schema {
            cmd.args(["--database-schema", s]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("spawn coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let base_url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self {
            child,
            base_url,
            log,
        }
    }

    /// SIGKILL: no graceful shutdown, no lease release.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; its exit status, or None if it did not exit.
    pub async fn terminate_within(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `confide-coordinator token create` against a database and returns the token.
pub fn create_operator_token(url: &str, schema: Option<&str>, name: &str) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_confide-coordinator"));
    cmd.args(["token", "create", "--name", name, "--database-url", url]);
    if let Some(s) = schema {
        cmd.args(["--database-schema", s]);
    }
    let out = cmd.output().expect("run token create");
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}
