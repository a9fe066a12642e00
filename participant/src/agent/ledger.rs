//! The agent's own privacy ledger: a SQLite file in the state directory, independent of the coordinator's.
//!
//! Every round whose masked input leaves this machine is charged here first, in one transaction that re-checks the
//! budget over the whole ledger of the study and records the spend, keyed by (study, round) so a retry never charges
//! twice. ε is always recomputed from the stored events with the PLD accountant (pessimistic: it may overestimate,
//! never underestimate). The agent charges when it *sends*; the coordinator charges only rounds whose aggregate is
//! published, so this ledger may be above the coordinator's (e.g. after an aborted round) but never below it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use confide_common::dp::{AccountantKind, DpError, PrivacyEvent, PrivacyLedger};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use thiserror::Error;

/// File name of the ledger inside the state directory.
pub const LEDGER_FILE: &str = "ledger.sqlite";

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("privacy ledger database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("privacy ledger: stored events of study {study} are unreadable: {detail}")]
    Corrupt { study: i64, detail: String },
    #[error("privacy accounting: {0}")]
    Dp(#[from] DpError),
}

/// A study's local budget: ε may not exceed `epsilon` at `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    pub epsilon: f64,
    pub delta: f64,
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Charge {
    /// Recorded now; ε of the study after it.
    Charged { epsilon_after: f64 },
    /// This round was charged before (a retry); nothing new was written.
    AlreadyCharged { epsilon_after: f64 },
    /// Refused: the charge would bring ε to `epsilon_after`, over the budget. Nothing was written.
    OverBudget { epsilon_after: f64 },
}

/// One line of `confide-participant budget`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudySpend {
    pub study_id: i64,
    pub epsilon_spent: f64,
    pub epsilon_budget: f64,
    pub delta: f64,
    pub epsilon_remaining: f64,
    pub rounds_charged: i64,
}

/// The local ledger (one SQLite file).
#[derive(Debug, Clone)]
pub struct LocalLedger {
    pool: SqlitePool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS charges (
        study_id     INTEGER NOT NULL,
        round_id     INTEGER NOT NULL,
        round_number INTEGER NOT NULL,
        events_json  TEXT NOT NULL,
        epsilon_after REAL NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (study_id, round_id)
    )",
    // The budget the agent enforced for a study (updated at each check), so `budget` can report without the config.
    "CREATE TABLE IF NOT EXISTS budgets (
        study_id   INTEGER PRIMARY KEY,
        epsilon    REAL NOT NULL,
        delta      REAL NOT NULL,
        updated_at INTEGER NOT NULL
    )",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// ε at `delta` of `events` (PLD). Events of one DP-SGD configuration are merged into one with the summed steps
/// first: composing k identical subsampled-Gaussian runs is exactly one run of the summed length.
pub fn epsilon_of(events: &[PrivacyEvent], delta: f64) -> Result<f64, DpError> {
    let mut merged: Vec<PrivacyEvent> = Vec::new();
    for e in events {
        e.validate()?;
        let same = merged.iter_mut().find_map(|m| match (m, e) {
            (
                PrivacyEvent::SubsampledGaussian {
                    sampling_rate: q1,
                    noise_multiplier: s1,
                    steps,
                },
                PrivacyEvent::SubsampledGaussian {
                    sampling_rate: q2,
                    noise_multiplier: s2,
                    ..
                },
            ) if q1 == q2 && s1 == s2 => Some(steps),
            _ => None,
        });
        match (same, e) {
            (Some(steps), PrivacyEvent::SubsampledGaussian { steps: more, .. }) => *steps += more,
            _ => merged.push(*e),
        }
    }
    if merged.is_empty() {
        return Ok(0.0);
    }
    PrivacyLedger { events: merged }.epsilon(delta, AccountantKind::Pld)
}

impl LocalLedger {
    /// Opens (creating if needed) the ledger file `path`, with full fsync on commit.
    pub async fn open(path: &Path) -> Result<Self, LedgerError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        Ok(Self { pool })
    }

    /// Opens an existing ledger read-only (for `budget`); `None` if there is none.
    pub async fn open_existing(path: &Path) -> Result<Option<Self>, LedgerError> {
        if !path.exists() {
            return Ok(None);
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Some(Self { pool }))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn load_events<'e, E>(
        executor: E,
        study: i64,
    ) -> Result<(Vec<PrivacyEvent>, i64), LedgerError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        let rows = sqlx::query(
            "SELECT events_json FROM charges WHERE study_id = $1 ORDER BY created_at, round_id",
        )
        .bind(study)
        .fetch_all(executor)
        .await?;
        let mut events = Vec::new();
        for r in &rows {
            let json: String = r.try_get("events_json")?;
            let round: Vec<PrivacyEvent> =
                serde_json::from_str(&json).map_err(|e| LedgerError::Corrupt {
                    study,
                    detail: e.to_string(),
                })?;
            events.extend(round);
        }
        Ok((events, rows.len() as i64))
    }

    /// Everything charged to a study so far.
    pub async fn events(&self, study: i64) -> Result<Vec<PrivacyEvent>, LedgerError> {
        Ok(Self::load_events(&self.pool, study).await?.0)
    }

    /// Records the budget enforced for a study (shown by `budget`).
    pub async fn set_budget(&self, study: i64, budget: Budget) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO budgets (study_id, epsilon, delta, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (study_id) DO UPDATE SET epsilon = excluded.epsilon, delta = excluded.delta,
                                                  updated_at = excluded.updated_at",
        )
        .bind(study)
        .bind(budget.epsilon)
        .bind(budget.delta)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// ε of the study at `delta` if `planned` were charged on top of what is recorded.
    pub async fn epsilon_with(
        &self,
        study: i64,
        planned: &[PrivacyEvent],
        delta: f64,
    ) -> Result<f64, LedgerError> {
        let mut events = self.events(study).await?;
        events.extend_from_slice(planned);
        Ok(epsilon_of(&events, delta)?)
    }

    /// Charges `events` for a round, in ONE transaction holding the write lock: an earlier charge of the same round
    /// is returned as is; otherwise the budget is checked over the whole ledger plus these events and the charge is
    /// written (and fsynced) only if it fits.
    pub async fn charge(
        &self,
        study: i64,
        round_id: i64,
        round_number: i64,
        events: &[PrivacyEvent],
        budget: Budget,
    ) -> Result<Charge, LedgerError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let earlier =
            sqlx::query("SELECT epsilon_after FROM charges WHERE study_id = $1 AND round_id = $2")
                .bind(study)
                .bind(round_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = earlier {
            return Ok(Charge::AlreadyCharged {
                epsilon_after: row.try_get("epsilon_after")?,
            });
        }
        let (mut all, _) = Self::load_events(&mut *tx, study).await?;
        all.extend_from_slice(events);
        let epsilon_after = epsilon_of(&all, budget.delta)?;
        if epsilon_after > budget.epsilon {
            return Ok(Charge::OverBudget { epsilon_after });
        }
        let json = serde_json::to_string(events).map_err(|e| LedgerError::Corrupt {
            study,
            detail: e.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO charges (study_id, round_id, round_number, events_json, epsilon_after, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(study)
        .bind(round_id)
        .bind(round_number)
        .bind(json)
        .bind(epsilon_after)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Charge::Charged { epsilon_after })
    }

    /// Spent and remaining ε per study (every study with a recorded budget or charge), ε at the recorded δ.
    pub async fn summary(&self) -> Result<Vec<StudySpend>, LedgerError> {
        let rows = sqlx::query(
            "SELECT study_id FROM budgets UNION SELECT study_id FROM charges ORDER BY study_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let study: i64 = r.try_get("study_id")?;
            let budget = sqlx::query("SELECT epsilon, delta FROM budgets WHERE study_id = $1")
                .bind(study)
                .fetch_optional(&self.pool)
                .await?;
            let (epsilon_budget, delta) = match budget {
                Some(b) => (b.try_get("epsilon")?, b.try_get("delta")?),
                None => (f64::NAN, f64::NAN),
            };
            let (events, rounds_charged) = Self::load_events(&self.pool, study).await?;
            let epsilon_spent = if delta.is_nan() {
                f64::NAN
            } else {
                epsilon_of(&events, delta)?
            };
            out.push(StudySpend {
                study_id: study,
                epsilon_spent,
                epsilon_budget,
                delta,
                epsilon_remaining: (epsilon_budget - epsilon_spent).max(0.0),
                rounds_charged,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(steps: u64) -> PrivacyEvent {
        PrivacyEvent::SubsampledGaussian {
            sampling_rate: 0.1,
            noise_multiplier: 1.5,
            steps,
        }
    }

    #[test]
    fn merging_identical_runs_is_exact() {
        let merged = epsilon_of(&[event(10), event(10), event(5)], 1e-5).unwrap();
        let single = PrivacyLedger {
            events: vec![event(25)],
        }
        .epsilon(1e-5, AccountantKind::Pld)
        .unwrap();
        assert_eq!(merged, single);
        assert_eq!(epsilon_of(&[], 1e-5).unwrap(), 0.0);
    }

    #[tokio::test]
    async fn charges_once_per_round_and_refuses_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::open(&dir.path().join(LEDGER_FILE))
            .await
            .unwrap();
        let one = epsilon_of(&[event(10)], 1e-5).unwrap();
        let two = epsilon_of(&[event(20)], 1e-5).unwrap();
        let budget = Budget {
            epsilon: (one + two) / 2.0,
            delta: 1e-5,
        };
        ledger.set_budget(7, budget).await.unwrap();
        assert_eq!(
            ledger.charge(7, 1, 1, &[event(10)], budget).await.unwrap(),
            Charge::Charged { epsilon_after: one }
        );
        // A retry of the same round does not charge again.
        assert_eq!(
            ledger.charge(7, 1, 1, &[event(10)], budget).await.unwrap(),
            Charge::AlreadyCharged { epsilon_after: one }
        );
        assert_eq!(
            ledger.epsilon_with(7, &[event(10)], 1e-5).await.unwrap(),
            two
        );
        assert_eq!(
            ledger.charge(7, 2, 2, &[event(10)], budget).await.unwrap(),
            Charge::OverBudget { epsilon_after: two }
        );
        let summary = ledger.summary().await.unwrap();
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].rounds_charged, 1);
        assert_eq!(summary[0].epsilon_spent, one);
        assert!((summary[0].epsilon_remaining - (budget.epsilon - one)).abs() < 1e-12);
        ledger.close().await;
        // Reopened read-only, the same numbers.
        let ro = LocalLedger::open_existing(&dir.path().join(LEDGER_FILE))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ro.summary().await.unwrap(), summary);
    }
}
