//! The agent's own privacy ledger: a SQLite file (by default in the state directory), independent of the
//! coordinator's.
//!
//! The budget belongs to the **dataset** the agent serves, not to a study or an enrolment: every round of every
//! study that used the dataset is charged to it, and a budget check is ε of everything ever charged to the dataset
//! plus the planned events. Re-enrolling, a recreated study or a new study never starts from zero. Several agents
//! serving one dataset (one per study) share one ledger file; `BEGIN IMMEDIATE` serialises their charges.
//!
//! A dataset is named by the operator (`dataset_id`) and recognised by its content: the sha256 of the data file.
//! The same bytes under a second dataset id are refused (that would split one dataset's budget in two); a known
//! dataset id with new bytes is accepted with a warning and keeps its past spend.
//!
//! Every round whose masked input leaves this machine is charged here first, in one transaction that re-checks the
//! budget over the dataset's whole ledger and records the spend, keyed by enrolment, study and round so a retry
//! never charges twice. ε is always recomputed from the stored events with the PLD accountant (pessimistic: it may
//! overestimate, never underestimate). The agent charges when it *sends*; the coordinator charges only rounds whose
//! aggregate is published, so this ledger may be above the coordinator's but never below it.

pub mod schema;
pub mod summary;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use confide_common::dp::{
    AccountantKind, DataPartition, DpError, PartitionedEvent, PrivacyEvent, partitioned_epsilon,
};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use thiserror::Error;

use super::state::Identity;
pub use summary::{DatasetSpend, LedgerSummary, StudySpend, read_summary};

/// Default file name of the ledger inside the state directory.
pub const LEDGER_FILE: &str = "ledger.sqlite";

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("privacy ledger database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("privacy ledger: stored events of dataset '{dataset}' are unreadable: {detail}")]
    Corrupt { dataset: String, detail: String },
    #[error("privacy accounting: {0}")]
    Dp(#[from] DpError),
    #[error(
        "privacy ledger schema version {0} was written by a newer confide-participant; upgrade this one to use it"
    )]
    NewerSchema(i64),
    #[error(
        "privacy ledger {0} predates dataset-level budgets: start the agent once with its dataset id (it assigns \
         these charges to that dataset), then read it again"
    )]
    Legacy(String),
    #[error(
        "the data file's content (sha256 {fingerprint}) is already registered in the privacy ledger as dataset \
         '{registered}', not '{configured}': one dataset under two ids would split its privacy budget in two. \
         Use dataset id '{registered}' for this data"
    )]
    FingerprintOfOtherDataset {
        fingerprint: String,
        registered: String,
        configured: String,
    },
}

/// The local budget of a dataset: ε may not exceed `epsilon` at `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    pub epsilon: f64,
    pub delta: f64,
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChargeOutcome {
    /// Recorded now; ε of the dataset after it.
    Charged { epsilon_after: f64 },
    /// This round was charged before (a retry); nothing new was written.
    AlreadyCharged { epsilon_after: f64 },
    /// Refused: the charge would bring the dataset's ε to `epsilon_after`, over the budget. Nothing was written.
    OverBudget { epsilon_after: f64 },
}

/// What registering the data's fingerprint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The dataset was new to this ledger.
    New,
    /// The dataset is known with exactly this content.
    Known,
    /// The dataset is known with other content (`previous`): the data changed. Its past spend stands.
    ContentChanged { previous: String },
}

/// Who charges a round: the enrolment (coordinator, participant, enrolment time), its study and the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeKey {
    pub coordinator_url: String,
    pub participant_id: i64,
    pub enrolled_at_ms: i64,
    pub study_id: i64,
    pub round_id: i64,
    pub round_number: i64,
}

impl ChargeKey {
    /// The key of a round charged by the enrolment `identity`.
    pub fn new(identity: &Identity, round_id: i64, round_number: i64) -> Self {
        Self {
            coordinator_url: identity.coordinator_url.clone(),
            participant_id: identity.participant_id,
            enrolled_at_ms: identity.enrolled_at_ms,
            study_id: identity.study_id,
            round_id,
            round_number,
        }
    }
}

/// The ledger of one dataset, in a (possibly shared) SQLite file.
#[derive(Debug, Clone)]
pub struct LocalLedger {
    pool: SqlitePool,
    dataset: String,
}

pub(crate) use confide_runtime::now_ms;

/// How a query reads the part of the dataset a charge used: the stored column, or `'all'` when a version-2 file
/// (which did not record it: its charges used every record) is read without migrating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartitionColumn {
    Stored,
    AllRecords,
}

impl PartitionColumn {
    fn sql(self) -> &'static str {
        match self {
            Self::Stored => "data_partition",
            Self::AllRecords => "'all'",
        }
    }
}

/// The events of stored charges (one JSON array and one part of the dataset per row).
fn decode_events(
    dataset: &str,
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<Vec<PartitionedEvent>, LedgerError> {
    let corrupt = |detail: String| LedgerError::Corrupt {
        dataset: dataset.to_string(),
        detail,
    };
    let mut events = Vec::new();
    for r in rows {
        let json: String = r.try_get("events_json")?;
        let part: String = r.try_get("data_partition")?;
        let partition = DataPartition::parse(&part)
            .ok_or_else(|| corrupt(format!("unknown data partition {part:?}")))?;
        let round: Vec<PrivacyEvent> =
            serde_json::from_str(&json).map_err(|e| corrupt(e.to_string()))?;
        events.extend(
            round
                .into_iter()
                .map(|event| PartitionedEvent { partition, event }),
        );
    }
    Ok(events)
}

/// Every event ever charged to `dataset`, with the part of the dataset it used, in charge order.
async fn dataset_events<'e, E>(
    executor: E,
    dataset: &str,
    column: PartitionColumn,
) -> Result<Vec<PartitionedEvent>, LedgerError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let sql = format!(
        "SELECT events_json, {} AS data_partition FROM charges WHERE dataset_id = $1
         ORDER BY created_at, study_id, round_id",
        column.sql()
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(dataset)
        .fetch_all(executor)
        .await?;
    decode_events(dataset, &rows)
}

/// ε at `delta` of a dataset's charges: the disjoint training and evaluation parts compose in parallel.
fn dataset_epsilon(events: &[PartitionedEvent], delta: f64) -> Result<f64, LedgerError> {
    Ok(partitioned_epsilon(events, delta, AccountantKind::Pld)?)
}

fn connect_options(path: &Path) -> Result<SqliteConnectOptions, LedgerError> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .busy_timeout(Duration::from_secs(10)))
}

impl LocalLedger {
    /// Opens (creating if needed, migrating a version-1 file) the ledger file `path` for `dataset`, with full
    /// fsync on commit.
    pub async fn open(path: &Path, dataset: &str) -> Result<Self, LedgerError> {
        let options = connect_options(path)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let migrated = schema::migrate(&mut tx, dataset).await?;
        tx.commit().await?;
        if migrated > 0 {
            tracing::warn!(
                dataset,
                rounds = migrated,
                "privacy ledger migrated to dataset-level budgets: its earlier charges now count against this dataset"
            );
        }
        Ok(Self {
            pool,
            dataset: dataset.to_string(),
        })
    }

    /// The dataset this ledger charges.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Registers the content fingerprint (sha256 of the data file) of this ledger's dataset and records the budget
    /// the agent enforces. Refuses content already registered under another dataset id.
    pub async fn register(
        &self,
        fingerprint: &str,
        budget: Budget,
    ) -> Result<Registration, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let owner = sqlx::query("SELECT dataset_id FROM fingerprints WHERE fingerprint = $1")
            .bind(fingerprint)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = owner {
            let registered: String = row.try_get("dataset_id")?;
            if registered != self.dataset {
                return Err(LedgerError::FingerprintOfOtherDataset {
                    fingerprint: fingerprint.to_string(),
                    registered,
                    configured: self.dataset.clone(),
                });
            }
        }
        let now = now_ms();
        let current = sqlx::query("SELECT fingerprint FROM datasets WHERE dataset_id = $1")
            .bind(&self.dataset)
            .fetch_optional(&mut *tx)
            .await?;
        let registration = match current {
            None => Registration::New,
            Some(row) => {
                let previous: String = row.try_get("fingerprint")?;
                // A migrated version-1 dataset has no fingerprint yet: this is its first.
                if previous == fingerprint || previous.is_empty() {
                    Registration::Known
                } else {
                    Registration::ContentChanged { previous }
                }
            }
        };
        sqlx::query(
            "INSERT INTO datasets (dataset_id, fingerprint, epsilon, delta, registered_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (dataset_id) DO UPDATE SET fingerprint = excluded.fingerprint, epsilon = excluded.epsilon,
                                                    delta = excluded.delta, updated_at = excluded.updated_at",
        )
        .bind(&self.dataset)
        .bind(fingerprint)
        .bind(budget.epsilon)
        .bind(budget.delta)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO fingerprints (fingerprint, dataset_id, first_seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(fingerprint)
        .bind(&self.dataset)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(registration)
    }

    /// Everything charged to the dataset so far, by every study, whichever part of the dataset it used.
    pub async fn events(&self) -> Result<Vec<PrivacyEvent>, LedgerError> {
        Ok(self
            .partitioned_events()
            .await?
            .into_iter()
            .map(|e| e.event)
            .collect())
    }

    /// Everything charged to the dataset so far, with the part of the dataset each release used.
    pub async fn partitioned_events(&self) -> Result<Vec<PartitionedEvent>, LedgerError> {
        dataset_events(&self.pool, &self.dataset, PartitionColumn::Stored).await
    }

    /// ε of the dataset at `delta` if `planned` (releases using every record) were charged on top of everything
    /// recorded.
    pub async fn epsilon_with(
        &self,
        planned: &[PrivacyEvent],
        delta: f64,
    ) -> Result<f64, LedgerError> {
        self.epsilon_with_in(DataPartition::All, planned, delta)
            .await
    }

    /// ε of the dataset at `delta` if `planned` releases using `partition` were charged on top of everything
    /// recorded (parallel composition of the training and evaluation parts).
    pub async fn epsilon_with_in(
        &self,
        partition: DataPartition,
        planned: &[PrivacyEvent],
        delta: f64,
    ) -> Result<f64, LedgerError> {
        let mut events = self.partitioned_events().await?;
        events.extend(
            planned
                .iter()
                .map(|&event| PartitionedEvent { partition, event }),
        );
        dataset_epsilon(&events, delta)
    }

    /// Charges `events` (releases using every record) for a round: [`Self::charge_in`] with
    /// [`DataPartition::All`].
    pub async fn charge(
        &self,
        key: &ChargeKey,
        events: &[PrivacyEvent],
        budget: Budget,
    ) -> Result<ChargeOutcome, LedgerError> {
        self.charge_in(key, DataPartition::All, events, budget)
            .await
    }

    /// Charges `events`, releases that used `partition` of the dataset, for a round, in ONE transaction holding
    /// the write lock: an earlier charge of the same key is returned as is; otherwise the budget is checked over
    /// the dataset's whole ledger plus these events (parallel composition of the training and evaluation parts)
    /// and the charge is written (and fsynced) only if it fits.
    pub async fn charge_in(
        &self,
        key: &ChargeKey,
        partition: DataPartition,
        events: &[PrivacyEvent],
        budget: Budget,
    ) -> Result<ChargeOutcome, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let earlier = sqlx::query(
            "SELECT epsilon_after FROM charges WHERE dataset_id = $1 AND coordinator_url = $2 AND participant_id = $3
             AND enrolled_at_ms = $4 AND study_id = $5 AND round_id = $6",
        )
        .bind(&self.dataset)
        .bind(&key.coordinator_url)
        .bind(key.participant_id)
        .bind(key.enrolled_at_ms)
        .bind(key.study_id)
        .bind(key.round_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = earlier {
            return Ok(ChargeOutcome::AlreadyCharged {
                epsilon_after: row.try_get("epsilon_after")?,
            });
        }
        let mut all = dataset_events(&mut *tx, &self.dataset, PartitionColumn::Stored).await?;
        all.extend(
            events
                .iter()
                .map(|&event| PartitionedEvent { partition, event }),
        );
        let epsilon_after = dataset_epsilon(&all, budget.delta)?;
        if epsilon_after > budget.epsilon {
            return Ok(ChargeOutcome::OverBudget { epsilon_after });
        }
        let json = serde_json::to_string(events).map_err(|e| LedgerError::Corrupt {
            dataset: self.dataset.clone(),
            detail: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO charges (dataset_id, coordinator_url, participant_id, enrolled_at_ms, study_id, round_id,
                                  round_number, events_json, epsilon_after, created_at, data_partition)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&self.dataset)
        .bind(&key.coordinator_url)
        .bind(key.participant_id)
        .bind(key.enrolled_at_ms)
        .bind(key.study_id)
        .bind(key.round_id)
        .bind(key.round_number)
        .bind(json)
        .bind(epsilon_after)
        .bind(now_ms())
        .bind(partition.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChargeOutcome::Charged { epsilon_after })
    }

    /// Spend per dataset and per study of the whole file.
    pub async fn summary(&self) -> Result<LedgerSummary, LedgerError> {
        summary::summarise(&self.pool, PartitionColumn::Stored).await
    }
}

/// Tightens the ledger file and its SQLite companions (`-wal`, `-shm`) to 0600: they describe what was released
/// about the records. (A ledger outside the state directory is not covered by the directory's own tightening.)
pub fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
