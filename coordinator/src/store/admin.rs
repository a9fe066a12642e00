//! The database as a whole: how much disk it takes (a gauge on `/metrics`, and what `confide bench federation`
//! reports per round), and dropping a Postgres schema (test and benchmark clean-up, `confide-coordinator
//! drop-schema`).

use prometheus::{IntGauge, Opts};
use sqlx::Executor;

use super::{Backend, Store, StoreError, StoreResult};

/// Whether `schema` is a plain Postgres identifier (letters, digits, `_`): the only names the store puts in SQL.
pub(super) fn valid_schema_name(schema: &str) -> bool {
    !schema.is_empty()
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `confide_db_size_bytes`: what the database occupies, refreshed whenever `/metrics` is scraped.
pub(super) fn size_gauge() -> Result<IntGauge, prometheus::Error> {
    IntGauge::with_opts(Opts::new(
        "confide_db_size_bytes",
        "Bytes the database occupies: SQLite main file and write-ahead log; Postgres tables, indexes and TOAST of \
         the coordinator's schema",
    ))
}

impl Store {
    /// Bytes the database occupies now. SQLite: pages of the main file plus the write-ahead log on disk (which
    /// holds recent commits until a checkpoint). Postgres: every table of the current schema with its indexes and
    /// TOAST (`pg_total_relation_size`), so dead rows not yet vacuumed count too.
    pub async fn database_bytes(&self) -> StoreResult<i64> {
        match self.backend {
            Backend::Sqlite => {
                let pages: i64 = sqlx::query_scalar(
                    "SELECT CAST(page_count AS BIGINT) FROM pragma_page_count()",
                )
                .fetch_one(&self.pool)
                .await?;
                let page_size: i64 =
                    sqlx::query_scalar("SELECT CAST(page_size AS BIGINT) FROM pragma_page_size()")
                        .fetch_one(&self.pool)
                        .await?;
                let wal = match &self.sqlite_path {
                    Some(path) => {
                        let mut wal = path.clone().into_os_string();
                        wal.push("-wal");
                        std::fs::metadata(wal).map(|m| m.len() as i64).unwrap_or(0)
                    }
                    None => 0,
                };
                Ok(pages * page_size + wal)
            }
            Backend::Postgres => Ok(sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
            )
            .fetch_one(&self.pool)
            .await?),
        }
    }

    /// Sets `confide_db_size_bytes` to [`Store::database_bytes`] (a failure is logged: the gauge is a view).
    pub async fn refresh_size_gauge(&self) {
        match self.database_bytes().await {
            Ok(bytes) => self.size_gauge.set(bytes),
            Err(e) => tracing::warn!(error = %e, "could not measure the database size"),
        }
    }

    /// Drops a Postgres schema with everything in it (`DROP SCHEMA … CASCADE`): the clean-up of a test or benchmark
    /// schema. Refused on SQLite and for a name that is not a plain identifier.
    pub async fn drop_schema(&self, schema: &str) -> StoreResult<()> {
        if self.backend != Backend::Postgres {
            return Err(StoreError::Refused(
                "schemas exist only on Postgres; delete the SQLite file instead".into(),
            ));
        }
        if !valid_schema_name(schema) {
            return Err(StoreError::Refused(format!(
                "invalid schema name {schema:?}"
            )));
        }
        self.pool
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .await?;
        Ok(())
    }
}
