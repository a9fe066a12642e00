//! A study's run (the coordinator starting its rounds on its own): the schedule and the run's state, in the
//! study's row. Every change is a conditional update, so that several coordinator processes sharing the database
//! agree: a run starts once, ends once, and only a process that saw it running may start its next round (the guard
//! in [`Store::create_round`]).

use confide_common::api::RunState;

use super::{Store, StoreError, StoreResult, now_ms};

/// A study's schedule and run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRunRow {
    pub study_id: i64,
    /// The `StudySchedule` JSON the run was started with (`None`: manual, never run).
    pub schedule_json: Option<String>,
    pub state: Option<RunState>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub reason: Option<String>,
    /// The study's last round number when the run started.
    pub after_round: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StoredRun {
    id: i64,
    schedule_json: Option<String>,
    run_state: Option<String>,
    run_started_at: Option<i64>,
    run_ended_at: Option<i64>,
    run_reason: Option<String>,
    run_after_round: Option<i64>,
}

impl TryFrom<StoredRun> for StudyRunRow {
    type Error = StoreError;

    fn try_from(r: StoredRun) -> StoreResult<Self> {
        let state = r
            .run_state
            .as_deref()
            .map(|s| {
                RunState::parse(s).ok_or_else(|| {
                    StoreError::Corrupt(format!("study {} has run state {s:?}", r.id))
                })
            })
            .transpose()?;
        Ok(Self {
            study_id: r.id,
            schedule_json: r.schedule_json,
            state,
            started_at: r.run_started_at,
            ended_at: r.run_ended_at,
            reason: r.run_reason,
            after_round: r.run_after_round,
        })
    }
}

const RUN_COLUMNS: &str =
    "id, schedule_json, run_state, run_started_at, run_ended_at, run_reason, run_after_round";

impl Store {
    pub async fn study_run(&self, study_id: i64) -> StoreResult<StudyRunRow> {
        let row: StoredRun = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM studies WHERE id = $1"
        )))
        .bind(study_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("study"))?;
        row.try_into()
    }

    /// Ids of the studies whose run is running.
    pub async fn running_studies(&self) -> StoreResult<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM studies WHERE run_state = $1 ORDER BY id")
                .bind(RunState::Running.as_str())
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Starts a study's run with `schedule_json`: its rounds are those numbered after the study's current last one.
    /// `Conflict` if it is already running.
    pub async fn start_study_run(
        &self,
        study_id: i64,
        schedule_json: &str,
    ) -> StoreResult<StudyRunRow> {
        let now = now_ms();
        self.run_tx("start_study_run", |tx| {
            Box::pin(async move {
                let last: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(round_number), 0) FROM rounds WHERE study_id = $1",
                )
                .bind(study_id)
                .fetch_one(&mut **tx)
                .await?;
                let row: Option<StoredRun> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE studies SET schedule_json = $2, run_state = $3, run_started_at = $4, run_ended_at = NULL,
                                        run_reason = NULL, run_after_round = $5, updated_at = $4
                     WHERE id = $1 AND (run_state IS NULL OR run_state <> $3)
                     RETURNING {RUN_COLUMNS}"
                )))
                .bind(study_id)
                .bind(schedule_json)
                .bind(RunState::Running.as_str())
                .bind(now)
                .bind(last)
                .fetch_optional(&mut **tx)
                .await?;
                match row {
                    Some(r) => r.try_into(),
                    None => {
                        let exists: Option<i64> =
                            sqlx::query_scalar("SELECT id FROM studies WHERE id = $1")
                                .bind(study_id)
                                .fetch_optional(&mut **tx)
                                .await?;
                        Err(match exists {
                            None => StoreError::NotFound("study"),
                            Some(_) => StoreError::Conflict(format!(
                                "study {study_id} is already running; stop it first to change its schedule"
                            )),
                        })
                    }
                }
            })
        })
        .await
    }

    /// Ends a running run in `state` (not `Running`) with why. False if it was not running (ended by someone
    /// else, or never started).
    pub async fn end_study_run(
        &self,
        study_id: i64,
        state: RunState,
        reason: &str,
    ) -> StoreResult<bool> {
        let now = now_ms();
        self.run_tx("end_study_run", |tx| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE studies SET run_state = $2, run_ended_at = $3, run_reason = $4, updated_at = $3
                     WHERE id = $1 AND run_state = $5",
                )
                .bind(study_id)
                .bind(state.as_str())
                .bind(now)
                .bind(reason)
                .bind(RunState::Running.as_str())
                .execute(&mut **tx)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    /// Sets what a running run waits for (`None`: nothing). No change unless it is running.
    pub async fn set_run_reason(&self, study_id: i64, reason: Option<&str>) -> StoreResult<()> {
        self.run_tx("set_run_reason", |tx| {
            Box::pin(async move {
                sqlx::query("UPDATE studies SET run_reason = $2 WHERE id = $1 AND run_state = $3")
                    .bind(study_id)
                    .bind(reason)
                    .bind(RunState::Running.as_str())
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
