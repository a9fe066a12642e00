//! The one place that talks to the database: a [`Store`] with SQLite (embedded default) and PostgreSQL behind it.
//!
//! Queries are plain runtime SQL through sqlx's `Any` driver (no database needed at build time); the few statements
//! whose SQL differs between the two databases branch on [`Backend`]. Secrets (operator tokens, enrolment tokens,
//! participant credentials) are stored as sha256 hashes only. Every operation that must be atomic — enrolment,
//! round creation, stage boundaries, and above all "check budget, record spend, publish model" — runs in one
//! transaction; stage changes are conditional updates so two processes can never both apply one.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confide_common::dp::PrivacyEvent;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlSafeStr};

/// Which database a [`Store`] runs on.
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
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Milliseconds since the Unix epoch (all stored times use this).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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

/// The migrations of each database kind, in order (version, name, SQL). Applied ones are never edited: a schema
/// change is a new file.
fn migrations(backend: Backend) -> [(i64, &'static str, &'static str); 2] {
    match backend {
        Backend::Sqlite => [
            (
                1,
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "round_declines",
                include_str!("../../migrations/sqlite/0002_round_declines.sql"),
            ),
        ],
        Backend::Postgres => [
            (
                1,
                "init",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "round_declines",
                include_str!("../../migrations/postgres/0002_round_declines.sql"),
            ),
        ],
    }
}

fn migrator(backend: Backend) -> Migrator {
    Migrator::with_migrations(
        migrations(backend)
            .into_iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    pub id: i64,
    pub name: String,
    pub config_json: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantRow {
    pub id: i64,
    pub study_id: i64,
    pub name: String,
    pub enrolled_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoundRow {
    pub id: i64,
    pub study_id: i64,
    pub round_number: i64,
    pub stage: String,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub base_version: i64,
    pub plan_json: String,
    pub stage_started_at: i64,
    pub stage_deadline: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersionRow {
    pub study_id: i64,
    pub version: i64,
    pub round_id: Option<i64>,
    pub sha256: String,
    pub size_bytes: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub study_id: i64,
    pub participant_id: i64,
    pub round_id: i64,
    /// The privacy events charged for this round.
    pub events: Vec<PrivacyEvent>,
    pub epsilon_after: f64,
}

/// A round to create: who was selected, the plan (JSON) and the server's initial state.
#[derive(Debug, Clone)]
pub struct NewRound {
    pub study_id: i64,
    pub stage: String,
    pub base_version: i64,
    pub plan_json: String,
    pub selected: Vec<i64>,
    pub server_state: Option<Vec<u8>>,
    pub stage_deadline: i64,
    /// Rounds the study may run in total; creation is refused once reached.
    pub max_rounds: i64,
}

/// A stage boundary: the new stage, the server state after closing the old one, the new set of members and what
/// the server tells them. Applied only if the round is still in `from_stage` and unfinished.
#[derive(Debug, Clone)]
pub struct StageTransition {
    pub round_id: i64,
    pub from_stage: String,
    pub to_stage: String,
    pub server_state: Vec<u8>,
    pub stage_deadline: i64,
    /// Members of the set that completed `from_stage` (recorded under `from_stage`).
    pub completed: Vec<i64>,
    /// (recipient, body); recipient 0 means everyone.
    pub broadcasts: Vec<(i64, Vec<u8>)>,
}

/// The outcome of a completed round: the new model and, per aggregated participant, the events it is charged.
#[derive(Debug, Clone)]
pub struct Publication {
    pub round_id: i64,
    pub from_stage: String,
    pub weights: Vec<u8>,
    /// Server optimiser state after this round (FedAdam moments), kept with the model version.
    pub optimizer_state: Option<Vec<u8>>,
    /// Members of the final set (recorded under `from_stage`).
    pub completed: Vec<i64>,
    /// Exactly the participants whose input is in the aggregate.
    pub charges: Vec<Charge>,
    /// Every charged participant's ε after its charge must be at most this.
    pub epsilon_budget: f64,
}

/// What one participant is charged for a round. ε is computed before the publishing transaction (PLD composition
/// is far too slow to hold a database lock for); the transaction checks that the participant's ledger still has
/// exactly the `ledger_rows` rows it was computed from — ledger rows are only ever appended — so the budget check
/// and the spend it guards hold together at commit.
#[derive(Debug, Clone)]
pub struct Charge {
    pub participant: i64,
    /// The round's privacy events.
    pub events: Vec<PrivacyEvent>,
    /// ε over the participant's whole ledger including this charge.
    pub epsilon_after: f64,
    /// Rows of the participant's ledger in this study that `epsilon_after` was computed from.
    pub ledger_rows: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
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
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = FULL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                if let Some(schema) = schema
                    && (schema.is_empty()
                        || !schema
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_'))
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
        let store = Self { pool, backend };
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

    /// Drops a Postgres schema (test clean-up).
    pub async fn drop_schema(&self, schema: &str) -> StoreResult<()> {
        if self.backend == Backend::Postgres
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pool
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- operator tokens ----

    /// Creates an operator token; returns the secret, which is stored only hashed.
    pub async fn create_operator_token(&self, name: &str) -> StoreResult<String> {
        let token = new_secret();
        sqlx::query(
            "INSERT INTO operator_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(sha256_hex(token.as_bytes()))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            map_unique(
                e,
                &format!("an operator token named {name:?} already exists"),
            )
        })?;
        Ok(token)
    }

    /// The operator's name if the token is valid.
    pub async fn operator_for_token(&self, token: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT name FROM operator_tokens WHERE token_hash = $1")
            .bind(sha256_hex(token.as_bytes()))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    // ---- studies and model versions ----

    /// Creates a study and its version-0 model in one transaction.
    pub async fn create_study(
        &self,
        name: &str,
        config_json: &str,
        initial_weights: &[u8],
    ) -> StoreResult<StudyRow> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO studies (name, config_json, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(name)
        .bind(config_json)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("a study named {name:?} already exists")))?;
        let id: i64 = row.try_get("id")?;
        sqlx::query(
            "INSERT INTO model_versions (study_id, version, round_id, sha256, weights, created_at) VALUES ($1, 0, NULL, $2, $3, $4)",
        )
        .bind(id)
        .bind(sha256_hex(initial_weights))
        .bind(initial_weights)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StudyRow {
            id,
            name: name.to_string(),
            config_json: config_json.to_string(),
            created_at: now,
        })
    }

    fn study_from_row(r: &AnyRow) -> StoreResult<StudyRow> {
        Ok(StudyRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            config_json: r.try_get("config_json")?,
            created_at: r.try_get("created_at")?,
        })
    }

    pub async fn list_studies(&self) -> StoreResult<Vec<StudyRow>> {
        let rows = sqlx::query("SELECT id, name, config_json, created_at FROM studies ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::study_from_row).collect()
    }

    /// Ids of every study (cheap; for metrics of studies another process created).
    pub async fn study_ids(&self) -> StoreResult<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM studies ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn get_study(&self, id: i64) -> StoreResult<StudyRow> {
        let row =
            sqlx::query("SELECT id, name, config_json, created_at FROM studies WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound("study"))?;
        Self::study_from_row(&row)
    }

    fn model_from_row(r: &AnyRow) -> StoreResult<ModelVersionRow> {
        Ok(ModelVersionRow {
            study_id: r.try_get("study_id")?,
            version: r.try_get("version")?,
            round_id: r.try_get("round_id")?,
            sha256: r.try_get("sha256")?,
            size_bytes: r.try_get("size_bytes")?,
            created_at: r.try_get("created_at")?,
        })
    }

    pub async fn list_model_versions(&self, study_id: i64) -> StoreResult<Vec<ModelVersionRow>> {
        let rows = sqlx::query(
            "SELECT study_id, version, round_id, sha256, CAST(LENGTH(weights) AS BIGINT) AS size_bytes, created_at
             FROM model_versions WHERE study_id = $1 ORDER BY version",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::model_from_row).collect()
    }

    pub async fn latest_model_version(&self, study_id: i64) -> StoreResult<ModelVersionRow> {
        let row = sqlx::query(
            "SELECT study_id, version, round_id, sha256, CAST(LENGTH(weights) AS BIGINT) AS size_bytes, created_at
             FROM model_versions WHERE study_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(study_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("model version"))?;
        Self::model_from_row(&row)
    }

    /// The safetensors bytes and sha256 of one model version.
    pub async fn model_weights(
        &self,
        study_id: i64,
        version: i64,
    ) -> StoreResult<(Vec<u8>, String)> {
        let row = sqlx::query(
            "SELECT weights, sha256 FROM model_versions WHERE study_id = $1 AND version = $2",
        )
        .bind(study_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("model version"))?;
        Ok((row.try_get("weights")?, row.try_get("sha256")?))
    }

    /// The server optimiser state stored with a model version (None for FedAvg or version 0).
    pub async fn optimizer_state(
        &self,
        study_id: i64,
        version: i64,
    ) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT optimizer_state FROM model_versions WHERE study_id = $1 AND version = $2",
        )
        .bind(study_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("model version"))?;
        Ok(row.try_get("optimizer_state")?)
    }

    // ---- enrolment and participants ----

    /// Creates a one-time enrolment token for a study; returns the secret (stored hashed).
    pub async fn create_enrolment_token(
        &self,
        study_id: i64,
        label: &str,
        expires_at: i64,
    ) -> StoreResult<String> {
        self.get_study(study_id).await?;
        let token = new_secret();
        sqlx::query(
            "INSERT INTO enrolment_tokens (study_id, label, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(study_id)
        .bind(label)
        .bind(sha256_hex(token.as_bytes()))
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// Spends an enrolment token and creates the participant with a new credential, in one transaction.
    pub async fn enrol(&self, token: &str, name: &str) -> StoreResult<(ParticipantRow, String)> {
        let now = now_ms();
        let credential = new_secret();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE enrolment_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING id, study_id",
        )
        .bind(sha256_hex(token.as_bytes()))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Refused("enrolment token is unknown, expired or already used".into()))?;
        let token_id: i64 = row.try_get("id")?;
        let study_id: i64 = row.try_get("study_id")?;
        let row = sqlx::query(
            "INSERT INTO participants (study_id, name, credential_hash, enrolled_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(study_id)
        .bind(name)
        .bind(sha256_hex(credential.as_bytes()))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("a participant named {name:?} is already enrolled in this study")))?;
        let id: i64 = row.try_get("id")?;
        sqlx::query("UPDATE enrolment_tokens SET participant_id = $1 WHERE id = $2")
            .bind(id)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            ParticipantRow {
                id,
                study_id,
                name: name.to_string(),
                enrolled_at: now,
            },
            credential,
        ))
    }

    fn participant_from_row(r: &AnyRow) -> StoreResult<ParticipantRow> {
        Ok(ParticipantRow {
            id: r.try_get("id")?,
            study_id: r.try_get("study_id")?,
            name: r.try_get("name")?,
            enrolled_at: r.try_get("enrolled_at")?,
        })
    }

    pub async fn participant_for_credential(
        &self,
        credential: &str,
    ) -> StoreResult<Option<ParticipantRow>> {
        let row = sqlx::query(
            "SELECT id, study_id, name, enrolled_at FROM participants WHERE credential_hash = $1",
        )
        .bind(sha256_hex(credential.as_bytes()))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::participant_from_row).transpose()
    }

    pub async fn list_participants(&self, study_id: i64) -> StoreResult<Vec<ParticipantRow>> {
        let rows = sqlx::query("SELECT id, study_id, name, enrolled_at FROM participants WHERE study_id = $1 ORDER BY id")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::participant_from_row).collect()
    }

    // ---- rounds ----

    /// Every column but the server snapshot, which only a (re)starting driver reads ([`Store::server_snapshot`]).
    const ROUND_COLUMNS: &'static str = "id, study_id, round_number, stage, outcome, reason, base_version, plan_json, stage_started_at, stage_deadline, started_at, finished_at";

    fn round_from_row(r: &AnyRow) -> StoreResult<RoundRow> {
        Ok(RoundRow {
            id: r.try_get("id")?,
            study_id: r.try_get("study_id")?,
            round_number: r.try_get("round_number")?,
            stage: r.try_get("stage")?,
            outcome: r.try_get("outcome")?,
            reason: r.try_get("reason")?,
            base_version: r.try_get("base_version")?,
            plan_json: r.try_get("plan_json")?,
            stage_started_at: r.try_get("stage_started_at")?,
            stage_deadline: r.try_get("stage_deadline")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
        })
    }

    /// Creates a round with its selected members. Refused if the study has an unfinished round or has run all its
    /// rounds (completed ones count).
    pub async fn create_round(&self, new: &NewRound) -> StoreResult<RoundRow> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Take the study's write lock first so concurrent starts serialise.
        sqlx::query("UPDATE studies SET updated_at = $2 WHERE id = $1")
            .bind(new.study_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(round_number), 0) AS last,
                    CAST(COUNT(CASE WHEN outcome = 'completed' THEN 1 END) AS BIGINT) AS completed,
                    CAST(COUNT(CASE WHEN outcome IS NULL THEN 1 END) AS BIGINT) AS active
             FROM rounds WHERE study_id = $1",
        )
        .bind(new.study_id)
        .fetch_one(&mut *tx)
        .await?;
        let last: i64 = row.try_get("last")?;
        let completed: i64 = row.try_get("completed")?;
        let active: i64 = row.try_get("active")?;
        if active > 0 {
            return Err(StoreError::Conflict(
                "the study already has an active round".into(),
            ));
        }
        if completed >= new.max_rounds {
            return Err(StoreError::Refused(format!(
                "the study has completed all its {} rounds",
                new.max_rounds
            )));
        }
        let sql = format!(
            "INSERT INTO rounds (study_id, round_number, stage, base_version, plan_json, server_state, stage_started_at,
                                 stage_deadline, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7) RETURNING {}",
            Self::ROUND_COLUMNS
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(new.study_id)
            .bind(last + 1)
            .bind(new.stage.as_str())
            .bind(new.base_version)
            .bind(new.plan_json.as_str())
            .bind(new.server_state.clone())
            .bind(now)
            .bind(new.stage_deadline)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| map_unique(e, "the study already has an active round"))?;
        let round = Self::round_from_row(&row)?;
        for p in &new.selected {
            Self::insert_member(&mut tx, round.id, "selected", *p, now).await?;
        }
        tx.commit().await?;
        Ok(round)
    }

    async fn insert_member(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        stage: &str,
        participant: i64,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO round_members (round_id, participant_id, stage, joined_at) VALUES ($1, $2, $3, $4)")
            .bind(round_id)
            .bind(participant)
            .bind(stage)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn get_round(&self, id: i64) -> StoreResult<RoundRow> {
        let sql = format!("SELECT {} FROM rounds WHERE id = $1", Self::ROUND_COLUMNS);
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("round"))?;
        Self::round_from_row(&row)
    }

    /// The secure-aggregation server snapshot persisted at the round's last stage boundary (None once finished).
    pub async fn server_snapshot(&self, round_id: i64) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT server_state FROM rounds WHERE id = $1")
            .bind(round_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("round"))?;
        Ok(row.try_get("server_state")?)
    }

    pub async fn list_rounds(&self, study_id: i64) -> StoreResult<Vec<RoundRow>> {
        let sql = format!(
            "SELECT {} FROM rounds WHERE study_id = $1 ORDER BY round_number",
            Self::ROUND_COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(study_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::round_from_row).collect()
    }

    /// Unfinished rounds of all studies.
    pub async fn active_rounds(&self) -> StoreResult<Vec<RoundRow>> {
        let sql = format!(
            "SELECT {} FROM rounds WHERE outcome IS NULL ORDER BY id",
            Self::ROUND_COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::round_from_row).collect()
    }

    /// Finished rounds per (study, outcome), for metrics.
    pub async fn round_outcome_counts(&self) -> StoreResult<Vec<(i64, String, i64)>> {
        let rows = sqlx::query(
            "SELECT study_id, outcome, CAST(COUNT(*) AS BIGINT) AS n FROM rounds WHERE outcome IS NOT NULL GROUP BY study_id, outcome",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("study_id")?,
                    r.try_get("outcome")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    /// (stage, participant) pairs of a round, in stage then participant order.
    pub async fn round_members(&self, round_id: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT stage, participant_id FROM round_members WHERE round_id = $1 ORDER BY joined_at, stage, participant_id",
        )
        .bind(round_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("stage")?, r.try_get("participant_id")?)))
            .collect()
    }

    /// Takes or renews the driving lease of an unfinished round. True if `owner` now holds it.
    pub async fn acquire_round_lease(
        &self,
        round_id: i64,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE rounds SET lease_owner = $2, lease_expires_at = $3
             WHERE id = $1 AND outcome IS NULL AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < $4)",
        )
        .bind(round_id)
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Gives up a lease (graceful shutdown) so another process can take over at once.
    pub async fn release_round_lease(&self, round_id: i64, owner: &str) -> StoreResult<()> {
        sqlx::query("UPDATE rounds SET lease_owner = NULL, lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(round_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The stage of a round that has not finished; NotFound / Conflict otherwise.
    async fn unfinished_round_stage(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
    ) -> StoreResult<String> {
        let round = sqlx::query("SELECT stage, outcome FROM rounds WHERE id = $1")
            .bind(round_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound("round"))?;
        let outcome: Option<String> = round.try_get("outcome")?;
        if let Some(outcome) = outcome {
            return Err(StoreError::Conflict(format!(
                "round {round_id} is finished ({outcome})"
            )));
        }
        Ok(round.try_get("stage")?)
    }

    /// Whether `participant` is in the round's set `set`. On Postgres the member row is locked, so that a message
    /// and a decline of the same participant (which lock the same `selected` row) serialise; SQLite has a single
    /// writer anyway.
    async fn lock_round_member(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        set: &str,
        participant: i64,
    ) -> StoreResult<bool> {
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT 1 AS one FROM round_members WHERE round_id = $1 AND stage = $2 AND participant_id = $3 FOR UPDATE"
            }
            Backend::Sqlite => {
                "SELECT 1 AS one FROM round_members WHERE round_id = $1 AND stage = $2 AND participant_id = $3"
            }
        };
        let member = sqlx::query(sql)
            .bind(round_id)
            .bind(set)
            .bind(participant)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(member.is_some())
    }

    /// Stores a participant's message for the round's current stage. Refused if the round is finished or in another
    /// stage, or the participant is not in `eligible_set` of this round; a second message is a conflict.
    pub async fn record_message(
        &self,
        round_id: i64,
        stage: &str,
        eligible_set: &str,
        participant: i64,
        body: &[u8],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let current = Self::unfinished_round_stage(&mut tx, round_id).await?;
        if current != stage {
            return Err(StoreError::Conflict(format!(
                "round {round_id} is in stage {current}, not {stage}"
            )));
        }
        if !self
            .lock_round_member(&mut tx, round_id, eligible_set, participant)
            .await?
        {
            return Err(StoreError::Refused(format!(
                "participant {participant} is not in this stage's set of round {round_id}"
            )));
        }
        let declined = sqlx::query(
            "SELECT 1 AS one FROM round_declines WHERE round_id = $1 AND participant_id = $2",
        )
        .bind(round_id)
        .bind(participant)
        .fetch_optional(&mut *tx)
        .await?;
        if declined.is_some() {
            return Err(StoreError::Conflict(format!(
                "participant {participant} declined round {round_id}"
            )));
        }
        // Conditional on the stage still being current: a concurrent stage close makes this insert a no-op.
        let res = sqlx::query(
            "INSERT INTO round_messages (round_id, stage, participant_id, body, received_at)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM rounds WHERE id = $1 AND stage = $2 AND outcome IS NULL)",
        )
        .bind(round_id)
        .bind(stage)
        .bind(participant)
        .bind(body)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("participant {participant} already sent its {stage} message")))?;
        if res.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "round {round_id} left stage {stage}"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that a selected participant declines a round: allowed only while the round is in AdvertiseKeys and
    /// before this participant advertised keys, once. Refused (nothing written) otherwise.
    pub async fn decline_round(
        &self,
        round_id: i64,
        participant: i64,
        reason: &str,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let current = Self::unfinished_round_stage(&mut tx, round_id).await?;
        // Same lock as `record_message` takes for an AdvertiseKeys message.
        if !self
            .lock_round_member(&mut tx, round_id, "selected", participant)
            .await?
        {
            return Err(StoreError::Refused(format!(
                "participant {participant} was not selected for round {round_id}"
            )));
        }
        if current != "advertise_keys" {
            return Err(StoreError::Conflict(format!(
                "round {round_id} is in stage {current}: a round can only be declined during advertise_keys"
            )));
        }
        let advertised = sqlx::query(
            "SELECT 1 AS one FROM round_messages WHERE round_id = $1 AND stage = 'advertise_keys' AND participant_id = $2",
        )
        .bind(round_id)
        .bind(participant)
        .fetch_optional(&mut *tx)
        .await?;
        if advertised.is_some() {
            return Err(StoreError::Conflict(format!(
                "participant {participant} already advertised its keys in round {round_id}"
            )));
        }
        // Conditional on the stage still being AdvertiseKeys: a concurrent stage close makes this a no-op.
        let res = sqlx::query(
            "INSERT INTO round_declines (round_id, participant_id, reason, declined_at)
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM rounds WHERE id = $1 AND stage = 'advertise_keys' AND outcome IS NULL)",
        )
        .bind(round_id)
        .bind(participant)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("participant {participant} already declined round {round_id}")))?;
        if res.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "round {round_id} left stage advertise_keys"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Participants who declined a round and why: (participant, reason), in participant order.
    pub async fn round_declines(&self, round_id: i64) -> StoreResult<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT participant_id, reason FROM round_declines WHERE round_id = $1 ORDER BY participant_id",
        )
        .bind(round_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("participant_id")?, r.try_get("reason")?)))
            .collect()
    }

    /// Messages of a stage in arrival order: (participant, body).
    pub async fn stage_messages(
        &self,
        round_id: i64,
        stage: &str,
    ) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT participant_id, body FROM round_messages WHERE round_id = $1 AND stage = $2 ORDER BY received_at, participant_id",
        )
        .bind(round_id)
        .bind(stage)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("participant_id")?, r.try_get("body")?)))
            .collect()
    }

    /// Whether `participant` has sent its message for `stage`, read in one statement with the round's stage: None if
    /// the round is no longer in `stage` (its messages may then be deleted already).
    pub async fn sent_in_stage(
        &self,
        round_id: i64,
        stage: &str,
        participant: i64,
    ) -> StoreResult<Option<bool>> {
        let row = sqlx::query(
            "SELECT r.stage AS current,
                    CAST((SELECT COUNT(*) FROM round_messages m
                          WHERE m.round_id = r.id AND m.stage = $2 AND m.participant_id = $3) AS BIGINT) AS n
             FROM rounds r WHERE r.id = $1",
        )
        .bind(round_id)
        .bind(stage)
        .bind(participant)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("round"))?;
        let current: String = row.try_get("current")?;
        let n: i64 = row.try_get("n")?;
        Ok((current == stage).then_some(n > 0))
    }

    /// Senders of a stage's stored messages in arrival order (without the bodies, which can be large).
    pub async fn stage_message_senders(&self, round_id: i64, stage: &str) -> StoreResult<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT participant_id FROM round_messages WHERE round_id = $1 AND stage = $2 ORDER BY received_at, participant_id",
        )
        .bind(round_id)
        .bind(stage)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get("participant_id")?))
            .collect()
    }

    /// One participant's stored message for a stage (None if it sent none or the stage's messages are gone).
    pub async fn stage_message(
        &self,
        round_id: i64,
        stage: &str,
        participant: i64,
    ) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT body FROM round_messages WHERE round_id = $1 AND stage = $2 AND participant_id = $3",
        )
        .bind(round_id)
        .bind(stage)
        .bind(participant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("body")).transpose()?)
    }

    /// What the server told `recipient` (or everyone) at the start of `stage`.
    pub async fn broadcasts(
        &self,
        round_id: i64,
        stage: &str,
        recipient: i64,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT body FROM round_broadcasts WHERE round_id = $1 AND stage = $2 AND (recipient_id = 0 OR recipient_id = $3)
             ORDER BY recipient_id",
        )
        .bind(round_id)
        .bind(stage)
        .bind(recipient)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("body")?)).collect()
    }

    async fn finish_stage(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        from_stage: &str,
        completed: &[i64],
        now: i64,
    ) -> StoreResult<()> {
        for p in completed {
            Self::insert_member(tx, round_id, from_stage, *p, now).await?;
        }
        Ok(())
    }

    /// Applies a stage boundary atomically: the new stage and server snapshot, the set that completed the old stage,
    /// the new stage's broadcasts, and the deletion of the old stage's messages (the snapshot holds everything the
    /// server took from them; masked inputs survive only inside its running sum). Returns false (and changes
    /// nothing) if the round is no longer in `from_stage` or is finished.
    pub async fn advance_stage(&self, t: &StageTransition) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE rounds SET stage = $3, server_state = $4, stage_started_at = $5, stage_deadline = $6
             WHERE id = $1 AND stage = $2 AND outcome IS NULL",
        )
        .bind(t.round_id)
        .bind(t.from_stage.as_str())
        .bind(t.to_stage.as_str())
        .bind(t.server_state.as_slice())
        .bind(now)
        .bind(t.stage_deadline)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        Self::finish_stage(&mut tx, t.round_id, &t.from_stage, &t.completed, now).await?;
        sqlx::query("DELETE FROM round_messages WHERE round_id = $1 AND stage = $2")
            .bind(t.round_id)
            .bind(t.from_stage.as_str())
            .execute(&mut *tx)
            .await?;
        for (recipient, body) in &t.broadcasts {
            sqlx::query("INSERT INTO round_broadcasts (round_id, stage, recipient_id, body) VALUES ($1, $2, $3, $4)")
                .bind(t.round_id)
                .bind(t.to_stage.as_str())
                .bind(*recipient)
                .bind(body.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Aborts an unfinished round: nothing is published and nothing is charged. False if already finished.
    pub async fn abort_round(&self, round_id: i64, reason: &str) -> StoreResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE rounds SET outcome = 'aborted', reason = $2, finished_at = $3, stage = 'finished', server_state = NULL,
                               lease_owner = NULL
             WHERE id = $1 AND outcome IS NULL",
        )
        .bind(round_id)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
            .bind(round_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Completes a round in ONE transaction: checks every charge against the budget and against the ledger it was
    /// computed from (see [`Charge`]), records the charges, publishes the next model version and marks the round
    /// completed. Nothing is written if the round is no longer in `from_stage` (`Conflict`), a charge exceeds the
    /// budget (`Refused`) or a participant's ledger changed meanwhile (`Stale`: compute ε again and retry).
    pub async fn publish_round(&self, p: &Publication) -> StoreResult<i64> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Conditional update first: it takes the round's (and, on SQLite, the database's) write lock.
        let row = sqlx::query(
            "UPDATE rounds SET outcome = 'completed', stage = 'finished', finished_at = $3, server_state = NULL,
                               lease_owner = NULL
             WHERE id = $1 AND stage = $2 AND outcome IS NULL RETURNING study_id",
        )
        .bind(p.round_id)
        .bind(p.from_stage.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("round {} is not in stage {}", p.round_id, p.from_stage)))?;
        let study_id: i64 = row.try_get("study_id")?;
        // Serialise spends per study (Postgres row lock; SQLite already holds the write lock).
        let lock = match self.backend {
            Backend::Postgres => "SELECT id FROM studies WHERE id = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT id FROM studies WHERE id = $1",
        };
        sqlx::query(lock).bind(study_id).fetch_one(&mut *tx).await?;
        for c in &p.charges {
            let participant = c.participant;
            // NaN is refused too.
            if c.epsilon_after.is_nan() || c.epsilon_after > p.epsilon_budget {
                return Err(StoreError::Refused(format!(
                    "participant {participant} would reach ε = {:.4} > budget {}",
                    c.epsilon_after, p.epsilon_budget
                )));
            }
            let row = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM privacy_ledger WHERE study_id = $1 AND participant_id = $2",
            )
            .bind(study_id)
            .bind(participant)
            .fetch_one(&mut *tx)
            .await?;
            let rows: i64 = row.try_get("n")?;
            if rows != c.ledger_rows {
                return Err(StoreError::Stale(format!(
                    "the ledger of participant {participant} has {rows} entries, its ε was computed from {}",
                    c.ledger_rows
                )));
            }
            sqlx::query(
                "INSERT INTO privacy_ledger (study_id, participant_id, round_id, events_json, epsilon_after, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(study_id)
            .bind(participant)
            .bind(p.round_id)
            .bind(
                serde_json::to_string(&c.events)
                    .map_err(|e| StoreError::Corrupt(format!("privacy events: {e}")))?,
            )
            .bind(c.epsilon_after)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_unique(e, "participant already charged for this round"))?;
        }
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM model_versions WHERE study_id = $1",
        )
        .bind(study_id)
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = row.try_get::<i64, _>("v")? + 1;
        sqlx::query(
            "INSERT INTO model_versions (study_id, version, round_id, sha256, weights, optimizer_state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(study_id)
        .bind(version)
        .bind(p.round_id)
        .bind(sha256_hex(&p.weights))
        .bind(p.weights.as_slice())
        .bind(p.optimizer_state.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Self::finish_stage(&mut tx, p.round_id, &p.from_stage, &p.completed, now).await?;
        // The round is over: its messages (masked inputs included) must not linger.
        sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
            .bind(p.round_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The whole privacy ledger of a study, in charge order.
    pub async fn ledger(&self, study_id: i64) -> StoreResult<Vec<LedgerRow>> {
        let rows = sqlx::query(
            "SELECT study_id, participant_id, round_id, events_json, epsilon_after FROM privacy_ledger WHERE study_id = $1 ORDER BY id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let participant_id: i64 = r.try_get("participant_id")?;
                let round_id: i64 = r.try_get("round_id")?;
                let json: String = r.try_get("events_json")?;
                let events = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "the ledger entry of participant {participant_id} for round {round_id}: {e}"
                    ))
                })?;
                Ok(LedgerRow {
                    study_id: r.try_get("study_id")?,
                    participant_id,
                    round_id,
                    events,
                    epsilon_after: r.try_get("epsilon_after")?,
                })
            })
            .collect()
    }

    /// A digest of every stored row of every table (all columns but the round lease, which a running driver renews
    /// on its own), one `table:rows:sha256` entry per table, so tests can assert that a refused request changed
    /// nothing — and see which table changed if it did.
    pub async fn state_fingerprint(&self) -> StoreResult<String> {
        use Col::{Blob, Float, Int, Text};
        #[derive(Clone, Copy)]
        enum Col {
            Int(&'static str),
            Text(&'static str),
            Blob(&'static str),
            Float(&'static str),
        }
        const TABLES: [(&str, &[Col], &str); 11] = [
            (
                "operator_tokens",
                &[
                    Int("id"),
                    Text("name"),
                    Text("token_hash"),
                    Int("created_at"),
                ],
                "id",
            ),
            (
                "studies",
                &[
                    Int("id"),
                    Text("name"),
                    Text("config_json"),
                    Int("created_at"),
                    Int("updated_at"),
                ],
                "id",
            ),
            (
                "participants",
                &[
                    Int("id"),
                    Int("study_id"),
                    Text("name"),
                    Text("credential_hash"),
                    Int("enrolled_at"),
                ],
                "id",
            ),
            (
                "enrolment_tokens",
                &[
                    Int("id"),
                    Int("study_id"),
                    Text("label"),
                    Text("token_hash"),
                    Int("created_at"),
                    Int("expires_at"),
                    Int("used_at"),
                    Int("participant_id"),
                ],
                "id",
            ),
            (
                "rounds",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("round_number"),
                    Text("stage"),
                    Text("outcome"),
                    Text("reason"),
                    Int("base_version"),
                    Text("plan_json"),
                    Blob("server_state"),
                    Int("stage_started_at"),
                    Int("stage_deadline"),
                    Int("started_at"),
                    Int("finished_at"),
                ],
                "id",
            ),
            (
                "round_members",
                &[
                    Int("round_id"),
                    Int("participant_id"),
                    Text("stage"),
                    Int("joined_at"),
                ],
                "round_id, stage, participant_id",
            ),
            (
                "round_messages",
                &[
                    Int("round_id"),
                    Text("stage"),
                    Int("participant_id"),
                    Blob("body"),
                    Int("received_at"),
                ],
                "round_id, stage, participant_id",
            ),
            (
                "round_broadcasts",
                &[
                    Int("round_id"),
                    Text("stage"),
                    Int("recipient_id"),
                    Blob("body"),
                ],
                "round_id, stage, recipient_id",
            ),
            (
                "round_declines",
                &[
                    Int("round_id"),
                    Int("participant_id"),
                    Text("reason"),
                    Int("declined_at"),
                ],
                "round_id, participant_id",
            ),
            (
                "model_versions",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("version"),
                    Int("round_id"),
                    Text("sha256"),
                    Blob("weights"),
                    Blob("optimizer_state"),
                    Int("created_at"),
                ],
                "id",
            ),
            (
                "privacy_ledger",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("participant_id"),
                    Int("round_id"),
                    Text("events_json"),
                    Float("epsilon_after"),
                    Int("created_at"),
                ],
                "id",
            ),
        ];
        let mut out = Vec::new();
        for (table, cols, order) in TABLES {
            let names: Vec<&str> = cols
                .iter()
                .map(|c| match c {
                    Int(n) | Text(n) | Blob(n) | Float(n) => *n,
                })
                .collect();
            let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?;
            let mut hash = Sha256::new();
            for r in &rows {
                for col in cols {
                    // Tagged, length-prefixed values so that no two different rows hash alike.
                    let value: Option<Vec<u8>> = match *col {
                        Int(n) => r
                            .try_get::<Option<i64>, _>(n)?
                            .map(|v| v.to_le_bytes().to_vec()),
                        Text(n) => r.try_get::<Option<String>, _>(n)?.map(String::into_bytes),
                        Blob(n) => r.try_get::<Option<Vec<u8>>, _>(n)?,
                        Float(n) => r
                            .try_get::<Option<f64>, _>(n)?
                            .map(|v| v.to_le_bytes().to_vec()),
                    };
                    match value {
                        None => hash.update([0u8]),
                        Some(v) => {
                            hash.update([1u8]);
                            hash.update((v.len() as u64).to_le_bytes());
                            hash.update(&v);
                        }
                    }
                }
            }
            out.push(format!(
                "{table}:{}:{}",
                rows.len(),
                hex::encode(hash.finalize())
            ));
        }
        Ok(out.join(" | "))
    }
}
