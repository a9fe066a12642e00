//! [`Store::run_tx`]: every write of the store runs through it. One place commits, rolls back, retries what the
//! database asks to be retried, and counts and times each transaction by name.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use super::{Backend, Store, StoreError, StoreResult};

/// A transaction of the store's pool.
pub(super) type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// What a transaction body returns: a future borrowing the transaction.
pub(super) type TxFuture<'t, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 't>>;

/// Tries of one transaction before a serialisation failure or a busy database is given up on.
const ATTEMPTS: u32 = 5;

/// The `outcome` label values of `confide_db_transactions_total`.
pub const TX_OUTCOMES: [&str; 3] = ["committed", "rolled_back", "failed"];

/// Prometheus metrics of [`Store::run_tx`], by transaction name; registered by the metrics registry of whoever
/// serves them ([`Store::metric_collectors`]).
#[derive(Clone)]
pub(super) struct TxMetrics {
    /// `confide_db_transactions_total{name, outcome}`: committed, rolled back (the operation was refused, nothing
    /// written) or failed (a database error, after retries).
    transactions: IntCounterVec,
    /// `confide_db_transaction_retries_total{name}`: tries that hit a serialisation failure or a busy database.
    retries: IntCounterVec,
    /// `confide_db_transaction_duration_seconds{name}`: wall time including retries.
    duration: HistogramVec,
}

impl std::fmt::Debug for TxMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxMetrics")
    }
}

impl TxMetrics {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            transactions: IntCounterVec::new(
                Opts::new(
                    "confide_db_transactions_total",
                    "Database transactions by name and outcome (committed, rolled_back, failed)",
                ),
                &["name", "outcome"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "confide_db_transaction_retries_total",
                    "Database transaction tries repeated after a serialisation failure or a busy database",
                ),
                &["name"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "confide_db_transaction_duration_seconds",
                    "Wall time of a database transaction, retries included",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
                &["name"],
            )?,
        })
    }
}

/// Whether the database asks for the whole transaction to be tried again: on Postgres a serialisation failure
/// (40001) or a deadlock (40P01); on SQLite a busy or locked database (primary codes 5 and 6, e.g. a WAL read
/// snapshot that went stale before the write: SQLITE_BUSY_SNAPSHOT).
pub(super) fn is_retryable(backend: Backend, e: &StoreError) -> bool {
    let StoreError::Database(sqlx::Error::Database(db)) = e else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    match backend {
        Backend::Postgres => matches!(code.as_ref(), "40001" | "40P01"),
        Backend::Sqlite => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
    }
}

impl Store {
    /// Runs `body` in one transaction named `name`: committed if it returns `Ok`, rolled back if it returns an
    /// error (nothing it wrote stays). A serialisation failure or a busy database (see [`is_retryable`]), in the body
    /// or at commit, rolls back and runs the whole body again, up to 5 tries with a growing, jittered pause. Each
    /// run is counted and timed under `name`.
    pub(super) async fn run_tx<'a, T, F>(&self, name: &'static str, mut body: F) -> StoreResult<T>
    where
        F: for<'t> FnMut(&'t mut Tx<'a>) -> TxFuture<'t, T>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        let result = loop {
            let result = self.try_tx(&mut body).await;
            match result {
                Err(e) if attempt < ATTEMPTS && is_retryable(self.backend, &e) => {
                    self.tx_metrics.retries.with_label_values(&[name]).inc();
                    tracing::debug!(transaction = name, attempt, error = %e, "retrying a transaction");
                    let pause = 10u64 << attempt;
                    tokio::time::sleep(Duration::from_millis(
                        pause + rand::random::<u64>() % pause,
                    ))
                    .await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let outcome = match &result {
            Ok(_) => TX_OUTCOMES[0],
            Err(StoreError::Database(_)) => TX_OUTCOMES[2],
            Err(_) => TX_OUTCOMES[1],
        };
        self.tx_metrics
            .transactions
            .with_label_values(&[name, outcome])
            .inc();
        self.tx_metrics
            .duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// One try: begin, body, commit (a dropped transaction rolls back).
    async fn try_tx<'a, T, F>(&self, body: &mut F) -> StoreResult<T>
    where
        F: for<'t> FnMut(&'t mut Tx<'a>) -> TxFuture<'t, T>,
    {
        let mut tx: Tx<'a> = self.pool.begin().await?;
        let value = body(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// The collectors of the store's own metrics (transactions by name, the database size), for the registry that
    /// serves metrics.
    pub fn metric_collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.tx_metrics.transactions.clone()),
            Box::new(self.tx_metrics.retries.clone()),
            Box::new(self.tx_metrics.duration.clone()),
            Box::new(self.size_gauge.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A database error with a given code, as a driver would report it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }
    impl std::error::Error for Coded {}
    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "synthetic"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> StoreError {
        StoreError::Database(sqlx::Error::Database(Box::new(Coded(code))))
    }

    #[test]
    fn retries_only_what_the_database_asks_to_retry() {
        use Backend::{Postgres, Sqlite};
        for (backend, code, retry) in [
            (Postgres, "40001", true),
            (Postgres, "40P01", true),
            (Postgres, "23505", false), // unique violation
            (Postgres, "00005", false),
            (Sqlite, "5", true),     // SQLITE_BUSY
            (Sqlite, "517", true),   // SQLITE_BUSY_SNAPSHOT
            (Sqlite, "6", true),     // SQLITE_LOCKED
            (Sqlite, "2067", false), // SQLITE_CONSTRAINT_UNIQUE
            (Sqlite, "40001", false),
        ] {
            assert_eq!(
                is_retryable(backend, &coded(code)),
                retry,
                "{backend:?} {code}"
            );
        }
        assert!(!is_retryable(Sqlite, &StoreError::Conflict("x".into())));
    }

    #[tokio::test]
    async fn a_busy_database_is_retried_and_every_run_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("tx.db").display());
        let store = Store::connect(&url, None).await.unwrap();
        let tries = AtomicU32::new(0);
        // Busy twice, then the write succeeds: committed once, two retries, the row written once.
        let done = store
            .run_tx("test_busy", |tx| {
                let attempt = tries.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO operator_tokens (name, token_hash, created_at) VALUES ('t', 'h', 0)",
                    )
                    .execute(&mut **tx)
                    .await?;
                    if attempt < 2 {
                        return Err(coded("5"));
                    }
                    Ok(attempt)
                })
            })
            .await
            .unwrap();
        assert_eq!(done, 2);
        let rows: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM operator_tokens")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, 1, "the failed tries were rolled back");
        // A refusal is not retried and writes nothing.
        let refused: StoreResult<()> = store
            .run_tx("test_refused", |tx| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO operator_tokens (name, token_hash, created_at) VALUES ('u', 'i', 0)",
                    )
                    .execute(&mut **tx)
                    .await?;
                    Err(StoreError::Conflict("no".into()))
                })
            })
            .await;
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
        let m = &store.tx_metrics;
        assert_eq!(m.retries.with_label_values(&["test_busy"]).get(), 2);
        assert_eq!(
            m.transactions
                .with_label_values(&["test_busy", "committed"])
                .get(),
            1
        );
        assert_eq!(
            m.transactions
                .with_label_values(&["test_refused", "rolled_back"])
                .get(),
            1
        );
        assert_eq!(m.retries.with_label_values(&["test_refused"]).get(), 0);
        store.close().await;
    }
}
