//! The one place that talks to the database: a [`Store`] with SQLite (embedded default) and PostgreSQL behind it.
//!
//! Queries are plain runtime SQL through sqlx's `Any` driver (no database needed at build time); the few statements
//! whose SQL differs between the two databases branch on [`Backend`]. Secrets (operator tokens, enrolment tokens,
//! participant credentials) are stored as sha256 hashes only. Every write runs in one transaction through
//! [`Store::run_tx`] (commit, rollback, retry of serialisation failures and a busy database, metrics by name); what
//! must be atomic — enrolment, round creation, stage boundaries, and above all "record the spend, publish the
//! model" — is one such transaction, and stage changes are conditional updates so two processes can never both
//! apply one.
//!
//! One file per group of tables: [`tokens`] (operator and enrolment tokens), [`participants`], [`studies`] (studies
//! and model versions), [`rounds`] (rounds, members, leases, stage boundaries), [`messages`] (messages, broadcasts,
//! declines), [`ledger`] (the privacy ledger and publication), [`evaluations`] (the noisy metrics of evaluation
//! rounds); [`tx`] runs transactions; [`admin`] measures and drops
//! the database as a whole.

mod admin;
mod evaluations;
mod ledger;
mod messages;
mod participants;
mod rounds;
mod runs;
mod studies;
#[cfg(feature = "test-util")]
mod test_util;
mod tokens;
mod tx;
mod wake;

pub use evaluations::{EvaluationRow, NewEvaluation};
pub use ledger::{Charge, LedgerRow, Publication};
pub use participants::ParticipantRow;
pub use rounds::{NewRound, RoundRow, StageBoundary};
pub use runs::StudyRunRow;
pub use studies::{ModelVersionRow, StudyRow};
pub use tokens::{EnrolmentTokenRow, OperatorTokenRow};
pub use wake::{PeerChange, PeerWatch, WakeTopic};

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    /// Data a decision was computed from changed before the decision could be written; compute again.
    #[error("{0}")]
    Stale(String),
    #[error("unsupported database URL {0:?} (use sqlite:PATH or postgres://...)")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not decode (e.g. a ledger entry written by an incompatible version).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Milliseconds since the Unix epoch: all stored times use this clock.
pub use confide_runtime::now_ms;

/// Hex sha256 of a secret or a blob.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A fresh 256-bit secret from the OS-seeded CSPRNG, URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The migrations of each database kind (`migrations/sqlite`, `migrations/postgres`), embedded at build time.
/// Applied ones are never edited: a schema change is a new file.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    }
}

/// Every SQLite connection: write-ahead log, durable commits, foreign keys enforced, and up to 10 s of waiting
/// for another process's write lock before SQLITE_BUSY (which `run_tx` then retries).
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 10000",
];

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    tx_metrics: tx::TxMetrics,
    /// The SQLite database file (None on Postgres and for an in-memory database).
    sqlite_path: Option<PathBuf>,
    /// `confide_db_size_bytes` ([`Store::refresh_size_gauge`]).
    size_gauge: prometheus::IntGauge,
    /// Postgres: the URL and schema, for the connection that listens to other processes' announcements.
    url: Option<String>,
    schema: Option<String>,
}

fn map_unique(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        _ => StoreError::Database(e),
    }
}

impl Store {
    /// Opens (and for SQLite creates) the database and applies pending migrations.
    /// `schema` (Postgres only) puts every table in that schema, creating it if needed.
    pub async fn connect(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let mut sqlite_path = None;
        let given_url = url.to_string();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or_default();
            if !file.is_empty() && file != ":memory:" {
                sqlite_path = Some(PathBuf::from(file));
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = if path.contains("mode=") {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = match backend {
            // One connection: SQLite has a single writer anyway, and this rules out lock-upgrade deadlocks.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                if let Some(schema) = schema
                    && !admin::valid_schema_name(schema)
                {
                    return Err(StoreError::Refused(format!(
                        "invalid schema name {schema:?}"
                    )));
                }
                let schema = schema.map(str::to_string);
                if let Some(schema) = &schema {
                    let pool = AnyPoolOptions::new()
                        .max_connections(1)
                        .connect_with(options.clone())
                        .await?;
                    pool.execute(sqlx::AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS {schema}"
                    )))
                    .await?;
                    pool.close().await;
                }
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |conn, _| {
                        let schema = schema.clone();
                        Box::pin(async move {
                            if let Some(schema) = schema {
                                sqlx::query(sqlx::AssertSqlSafe(format!(
                                    "SET search_path TO {schema}"
                                )))
                                .execute(&mut *conn)
                                .await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
        };
        let postgres = backend == Backend::Postgres;
        let store = Self {
            pool,
            backend,
            tx_metrics: tx::TxMetrics::new()?,
            sqlite_path,
            size_gauge: admin::size_gauge()?,
            url: postgres.then_some(given_url),
            schema: schema.filter(|_| postgres).map(str::to_string),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self) -> StoreResult<()> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
