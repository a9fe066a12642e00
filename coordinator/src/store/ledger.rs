//! The privacy ledger and the publication of a round's model together with its charges.

use confide_common::api::{RoundOutcome, RoundStage};
use confide_common::dp::{DataPartition, PrivacyEvent};

use super::evaluations::NewEvaluation;
use super::{Backend, Store, StoreError, StoreResult, map_unique, now_ms, sha256_hex};

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub study_id: i64,
    pub participant_id: i64,
    pub round_id: i64,
    /// The privacy events charged for this round.
    pub events: Vec<PrivacyEvent>,
    pub epsilon_after: f64,
    /// The part of the participant's dataset the round used (its charges compose in parallel with the other
    /// part's).
    pub partition: DataPartition,
}

/// A ledger row as stored, its events still JSON.
#[derive(sqlx::FromRow)]
struct LedgerRecord {
    study_id: i64,
    participant_id: i64,
    round_id: i64,
    events_json: String,
    epsilon_after: f64,
    data_partition: String,
}

impl TryFrom<LedgerRecord> for LedgerRow {
    type Error = StoreError;

    fn try_from(r: LedgerRecord) -> StoreResult<Self> {
        let events = serde_json::from_str(&r.events_json).map_err(|e| {
            StoreError::Corrupt(format!(
                "the ledger entry of participant {} for round {}: {e}",
                r.participant_id, r.round_id
            ))
        })?;
        let partition = DataPartition::parse(&r.data_partition).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the ledger entry of participant {} for round {} has data partition {:?}",
                r.participant_id, r.round_id, r.data_partition
            ))
        })?;
        Ok(Self {
            study_id: r.study_id,
            participant_id: r.participant_id,
            round_id: r.round_id,
            events,
            epsilon_after: r.epsilon_after,
            partition,
        })
    }
}

/// The outcome of a completed round: the new model and, per aggregated participant, the events it is charged.
#[derive(Debug, Clone)]
pub struct Publication {
    pub round_id: i64,
    pub from_stage: RoundStage,
    pub weights: Vec<u8>,
    /// Server optimiser state after this round (FedAdam moments), kept with the model version.
    pub optimizer_state: Option<Vec<u8>>,
    /// Members of the final set (recorded under `from_stage`).
    pub completed: Vec<i64>,
    /// Exactly the participants whose input is in the aggregate.
    pub charges: Vec<Charge>,
    /// Statistics published with this version (a statistics round); None: the previous version's are carried on.
    pub statistics_json: Option<String>,
    /// An evaluation round: its noisy metrics are stored instead of a new model version (`weights` and
    /// `optimizer_state` are then unused).
    pub evaluation: Option<NewEvaluation>,
}

/// What one participant is charged for a round. ε is computed, and held against the budget, before the publishing
/// transaction (PLD composition is far too slow to hold a database lock for); the transaction checks that the
/// participant's ledger still has exactly the `ledger_rows` rows it was computed from — ledger rows are only ever
/// appended — so the budget decision and the spend it allowed hold together at commit.
#[derive(Debug, Clone)]
pub struct Charge {
    pub participant: i64,
    /// The round's privacy events.
    pub events: Vec<PrivacyEvent>,
    /// ε over the participant's whole ledger including this charge.
    pub epsilon_after: f64,
    /// The part of the participant's dataset the round used.
    pub partition: DataPartition,
    /// Rows of the participant's ledger in this study that `epsilon_after` was computed from.
    pub ledger_rows: i64,
}

impl Store {
    /// Completes a round in ONE transaction: checks every charge against the ledger it was computed from (see
    /// [`Charge`]; whether it fits the budget was decided by the caller), records the charges, publishes the next
    /// model version (or, for an evaluation round, stores its metrics of the evaluated version, which it returns)
    /// and marks the round completed. Nothing is written if the round is no longer in `from_stage`
    /// (`Conflict`) or a participant's ledger changed meanwhile (`Stale`: compute ε again and retry).
    pub async fn publish_round(&self, p: &Publication) -> StoreResult<i64> {
        let now = now_ms();
        self.run_tx("publish_round", |tx| {
            Box::pin(async move {
                // Conditional update first: it takes the round's (and, on SQLite, the database's) write lock.
                let study_id: i64 = sqlx::query_scalar(
                    "UPDATE rounds SET outcome = $5, stage = $4, finished_at = $3, server_state = NULL,
                                       lease_owner = NULL
                     WHERE id = $1 AND stage = $2 AND outcome IS NULL RETURNING study_id",
                )
                .bind(p.round_id)
                .bind(p.from_stage.as_str())
                .bind(now)
                .bind(RoundStage::Finished.as_str())
                .bind(RoundOutcome::Completed.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::Conflict(format!("round {} is not in stage {}", p.round_id, p.from_stage.as_str())))?;
                // Serialise spends per study (Postgres row lock; SQLite already holds the write lock).
                let lock = match self.backend {
                    Backend::Postgres => "SELECT id FROM studies WHERE id = $1 FOR UPDATE",
                    Backend::Sqlite => "SELECT id FROM studies WHERE id = $1",
                };
                sqlx::query(lock).bind(study_id).fetch_one(&mut **tx).await?;
                for c in &p.charges {
                    let participant = c.participant;
                    let rows: i64 = sqlx::query_scalar(
                        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM privacy_ledger WHERE study_id = $1 AND participant_id = $2",
                    )
                    .bind(study_id)
                    .bind(participant)
                    .fetch_one(&mut **tx)
                    .await?;
                    if rows != c.ledger_rows {
                        return Err(StoreError::Stale(format!(
                            "the ledger of participant {participant} has {rows} entries, its ε was computed from {}",
                            c.ledger_rows
                        )));
                    }
                    sqlx::query(
                        "INSERT INTO privacy_ledger (study_id, participant_id, round_id, events_json, epsilon_after, created_at,
                                                     data_partition)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
                    .bind(c.partition.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| map_unique(e, "participant already charged for this round"))?;
                }
                if let Some(e) = &p.evaluation {
                    Self::insert_evaluation(tx, study_id, p.round_id, e, now).await?;
                    Self::finish_stage(tx, p.round_id, p.from_stage, &p.completed, now).await?;
                    sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
                        .bind(p.round_id)
                        .execute(&mut **tx)
                        .await?;
                    return Ok(e.model_version);
                }
                let latest: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM model_versions WHERE study_id = $1",
                )
                .bind(study_id)
                .fetch_one(&mut **tx)
                .await?;
                let version = latest + 1;
                let statistics_json = match &p.statistics_json {
                    Some(json) => Some(json.clone()),
                    None => sqlx::query_scalar(
                        "SELECT statistics_json FROM model_versions WHERE study_id = $1 AND version = $2",
                    )
                    .bind(study_id)
                    .bind(latest)
                    .fetch_optional(&mut **tx)
                    .await?
                    .flatten(),
                };
                sqlx::query(
                    "INSERT INTO model_versions (study_id, version, round_id, sha256, weights, optimizer_state, created_at,
                                                 statistics_json)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(study_id)
                .bind(version)
                .bind(p.round_id)
                .bind(sha256_hex(&p.weights))
                .bind(p.weights.as_slice())
                .bind(p.optimizer_state.clone())
                .bind(now)
                .bind(statistics_json)
                .execute(&mut **tx)
                .await?;
                Self::finish_stage(tx, p.round_id, p.from_stage, &p.completed, now).await?;
                // The round is over: its messages (masked inputs included) must not linger.
                sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
                    .bind(p.round_id)
                    .execute(&mut **tx)
                    .await?;
                Ok(version)
            })
        })
        .await
    }

    /// The whole privacy ledger of a study, in charge order.
    pub async fn ledger(&self, study_id: i64) -> StoreResult<Vec<LedgerRow>> {
        let records: Vec<LedgerRecord> = sqlx::query_as(
            "SELECT study_id, participant_id, round_id, events_json, epsilon_after, data_partition FROM privacy_ledger
             WHERE study_id = $1 ORDER BY id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?;
        records.into_iter().map(LedgerRow::try_from).collect()
    }
}
