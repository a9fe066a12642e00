//! Rounds: creation with the selected members, lookups, leases, stage boundaries and aborts.

use std::time::Duration;

use confide_common::api::{MemberSet, RoundOutcome, RoundPurpose, RoundStage, RunState};

use super::{Backend, Store, StoreError, StoreResult, map_unique, now_ms};

/// A stage name as stored in `rounds.stage`, read back (an unknown one is data this version cannot read).
pub(super) fn parse_stage(round_id: i64, stage: &str) -> StoreResult<RoundStage> {
    RoundStage::parse(stage)
        .ok_or_else(|| StoreError::Corrupt(format!("round {round_id} has stage {stage:?}")))
}

/// A round as stored (every column but the server snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRow {
    pub id: i64,
    pub study_id: i64,
    pub round_number: i64,
    pub stage: RoundStage,
    /// Set once the round has finished.
    pub outcome: Option<RoundOutcome>,
    pub reason: Option<String>,
    pub base_version: i64,
    pub plan_json: String,
    pub stage_started_at: i64,
    pub stage_deadline: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// [`RoundRow`] as the database returns it: stage and outcome by name, checked by `TryFrom` (an unknown name is
/// data this version cannot read).
#[derive(sqlx::FromRow)]
pub(super) struct StoredRound {
    id: i64,
    study_id: i64,
    round_number: i64,
    stage: String,
    outcome: Option<String>,
    reason: Option<String>,
    base_version: i64,
    plan_json: String,
    stage_started_at: i64,
    stage_deadline: i64,
    started_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<StoredRound> for RoundRow {
    type Error = StoreError;

    fn try_from(r: StoredRound) -> StoreResult<Self> {
        Ok(Self {
            stage: parse_stage(r.id, &r.stage)?,
            outcome: r
                .outcome
                .as_deref()
                .map(|o| parse_outcome(r.id, o))
                .transpose()?,
            id: r.id,
            study_id: r.study_id,
            round_number: r.round_number,
            reason: r.reason,
            base_version: r.base_version,
            plan_json: r.plan_json,
            stage_started_at: r.stage_started_at,
            stage_deadline: r.stage_deadline,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

/// A round outcome as stored in `rounds.outcome`, read back.
fn parse_outcome(round_id: i64, outcome: &str) -> StoreResult<RoundOutcome> {
    RoundOutcome::parse(outcome)
        .ok_or_else(|| StoreError::Corrupt(format!("round {round_id} has outcome {outcome:?}")))
}

fn rows(stored: Vec<StoredRound>) -> StoreResult<Vec<RoundRow>> {
    stored.into_iter().map(RoundRow::try_from).collect()
}

/// A round to create: who was selected, the plan (JSON) and the server's initial state.
#[derive(Debug, Clone)]
pub struct NewRound {
    pub study_id: i64,
    pub stage: RoundStage,
    pub base_version: i64,
    pub plan_json: String,
    pub selected: Vec<i64>,
    pub server_state: Option<Vec<u8>>,
    pub stage_deadline: i64,
    /// Rounds the study may run in total; creation is refused once reached. Evaluation rounds neither count nor
    /// are refused by it (each evaluates one published model version: the service starts at most one per version).
    pub max_rounds: i64,
    /// A study's run starting its next round: created only if the run is still running and the study's last
    /// round is still the one numbered this (`Conflict` otherwise), so that of several coordinator processes that
    /// saw the same round end, one starts the next.
    pub run_guard: Option<i64>,
    /// What the round computes (`rounds.purpose`).
    pub purpose: RoundPurpose,
}

/// A stage boundary: the new stage, the server state after closing the old one, the new set of members and what
/// the server tells them. Applied only if the round is still in `from_stage` and unfinished.
#[derive(Debug, Clone)]
pub struct StageBoundary {
    pub round_id: i64,
    pub from_stage: RoundStage,
    pub to_stage: RoundStage,
    pub server_state: Vec<u8>,
    pub stage_deadline: i64,
    /// Members of the set that completed `from_stage` ([`MemberSet::completed`]).
    pub completed: Vec<i64>,
    /// (recipient, body); recipient 0 means everyone.
    pub broadcasts: Vec<(i64, Vec<u8>)>,
    /// Participants the closed stage dropped for what they did (e.g. commitments that fail the degree test, a
    /// false complaint), with why: listed in the round's exclusions, in the same transaction.
    pub exclusions: Vec<(i64, String)>,
}

impl Store {
    /// Every column but the server snapshot, which only a (re)starting driver reads ([`Store::server_snapshot`]).
    const ROUND_COLUMNS: &'static str = "id, study_id, round_number, stage, outcome, reason, base_version, plan_json, stage_started_at, stage_deadline, started_at, finished_at";

    /// Creates a round with its selected members. Refused if the study has an unfinished round or has run all its
    /// rounds (completed ones count).
    pub async fn create_round(&self, new: &NewRound) -> StoreResult<RoundRow> {
        let now = now_ms();
        self.run_tx("create_round", |tx| {
            Box::pin(async move {
                // Take the study's write lock first so concurrent starts serialise.
                sqlx::query("UPDATE studies SET updated_at = $2 WHERE id = $1")
                    .bind(new.study_id)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                let (last, completed, active): (i64, i64, i64) = sqlx::query_as(
                    "SELECT COALESCE(MAX(round_number), 0) AS last,
                            CAST(COUNT(CASE WHEN outcome = $2 AND purpose <> $3 THEN 1 END) AS BIGINT) AS completed,
                            CAST(COUNT(CASE WHEN outcome IS NULL THEN 1 END) AS BIGINT) AS active
                     FROM rounds WHERE study_id = $1",
                )
                .bind(new.study_id)
                .bind(RoundOutcome::Completed.as_str())
                .bind(RoundPurpose::Evaluation.as_str())
                .fetch_one(&mut **tx)
                .await?;
                if active > 0 {
                    return Err(StoreError::Conflict(
                        "the study already has an active round".into(),
                    ));
                }
                if let Some(expected) = new.run_guard {
                    let state: Option<String> =
                        sqlx::query_scalar("SELECT run_state FROM studies WHERE id = $1")
                            .bind(new.study_id)
                            .fetch_one(&mut **tx)
                            .await?;
                    if last != expected || state.as_deref() != Some(RunState::Running.as_str()) {
                        return Err(StoreError::Conflict(format!(
                            "the study's run moved on (last round {last}, expected {expected})"
                        )));
                    }
                }
                if new.purpose != RoundPurpose::Evaluation && completed >= new.max_rounds {
                    return Err(StoreError::Refused(format!(
                        "the study has completed all its {} rounds",
                        new.max_rounds
                    )));
                }
                let sql = format!(
                    "INSERT INTO rounds (study_id, round_number, stage, base_version, plan_json, server_state, stage_started_at,
                                         stage_deadline, started_at, purpose)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $9) RETURNING {}",
                    Self::ROUND_COLUMNS
                );
                let round: StoredRound = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(new.study_id)
                    .bind(last + 1)
                    .bind(new.stage.as_str())
                    .bind(new.base_version)
                    .bind(new.plan_json.as_str())
                    .bind(new.server_state.clone())
                    .bind(now)
                    .bind(new.stage_deadline)
                    .bind(new.purpose.as_str())
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| map_unique(e, "the study already has an active round"))?;
                let round = RoundRow::try_from(round)?;
                for p in &new.selected {
                    Self::insert_member(tx, round.id, MemberSet::Selected, *p, now).await?;
                }
                Ok(round)
            })
        })
        .await
    }

    pub(super) async fn insert_member(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        set: MemberSet,
        participant: i64,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO round_members (round_id, participant_id, stage, joined_at) VALUES ($1, $2, $3, $4)")
            .bind(round_id)
            .bind(participant)
            .bind(set.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn get_round(&self, id: i64) -> StoreResult<RoundRow> {
        let sql = format!("SELECT {} FROM rounds WHERE id = $1", Self::ROUND_COLUMNS);
        sqlx::query_as::<_, StoredRound>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("round"))?
            .try_into()
    }

    /// The secure-aggregation server snapshot persisted at the round's last stage boundary (None once finished).
    pub async fn server_snapshot(&self, round_id: i64) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT server_state FROM rounds WHERE id = $1")
            .bind(round_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("round"))
    }

    pub async fn list_rounds(&self, study_id: i64) -> StoreResult<Vec<RoundRow>> {
        let sql = format!(
            "SELECT {} FROM rounds WHERE study_id = $1 ORDER BY round_number",
            Self::ROUND_COLUMNS
        );
        rows(
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(study_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Unfinished rounds of all studies.
    pub async fn active_rounds(&self) -> StoreResult<Vec<RoundRow>> {
        let sql = format!(
            "SELECT {} FROM rounds WHERE outcome IS NULL ORDER BY id",
            Self::ROUND_COLUMNS
        );
        rows(
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Finished rounds per (study, outcome), for metrics.
    pub async fn round_outcome_counts(&self) -> StoreResult<Vec<(i64, RoundOutcome, i64)>> {
        let counts: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT study_id, outcome, CAST(COUNT(*) AS BIGINT) AS n FROM rounds WHERE outcome IS NOT NULL GROUP BY study_id, outcome",
        )
        .fetch_all(&self.pool)
        .await?;
        counts
            .into_iter()
            .map(|(study, outcome, n)| match RoundOutcome::parse(&outcome) {
                Some(outcome) => Ok((study, outcome, n)),
                None => Err(StoreError::Corrupt(format!(
                    "study {study} has rounds with outcome {outcome:?}"
                ))),
            })
            .collect()
    }

    /// (set, participant) pairs of a round, in the order the sets were formed, then by participant.
    pub async fn round_members(&self, round_id: i64) -> StoreResult<Vec<(MemberSet, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stage, participant_id FROM round_members WHERE round_id = $1 ORDER BY joined_at, stage, participant_id",
        )
        .bind(round_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(set, participant)| match MemberSet::parse(&set) {
                Some(set) => Ok((set, participant)),
                None => Err(StoreError::Corrupt(format!(
                    "round {round_id} has a member set {set:?}"
                ))),
            })
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
        self.run_tx("acquire_round_lease", |tx| {
            Box::pin(async move {
                let res = sqlx::query(
                    "UPDATE rounds SET lease_owner = $2, lease_expires_at = $3
                     WHERE id = $1 AND outcome IS NULL AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < $4)",
                )
                .bind(round_id)
                .bind(owner)
                .bind(now + ttl.as_millis() as i64)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(res.rows_affected() == 1)
            })
        })
        .await
    }

    /// Gives up a lease (graceful shutdown) so another process can take over at once.
    pub async fn release_round_lease(&self, round_id: i64, owner: &str) -> StoreResult<()> {
        self.run_tx("release_round_lease", |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE rounds SET lease_owner = NULL, lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2",
                )
                .bind(round_id)
                .bind(owner)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// The stage of a round that has not finished; NotFound / Conflict otherwise.
    pub(super) async fn unfinished_round_stage(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
    ) -> StoreResult<RoundStage> {
        let (stage, outcome): (String, Option<String>) =
            sqlx::query_as("SELECT stage, outcome FROM rounds WHERE id = $1")
                .bind(round_id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or(StoreError::NotFound("round"))?;
        if let Some(outcome) = outcome {
            return Err(StoreError::Conflict(format!(
                "round {round_id} is finished ({outcome})"
            )));
        }
        parse_stage(round_id, &stage)
    }

    /// Whether `participant` is in the round's `set`. On Postgres the member row is locked, so that a message
    /// and a decline of the same participant (which lock the same `selected` row) serialise; SQLite has a single
    /// writer anyway.
    pub(super) async fn lock_round_member(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        set: MemberSet,
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
            .bind(set.as_str())
            .bind(participant)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(member.is_some())
    }

    pub(super) async fn finish_stage(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        from_stage: RoundStage,
        completed: &[i64],
        now: i64,
    ) -> StoreResult<()> {
        let set = MemberSet::completed(from_stage);
        for p in completed {
            Self::insert_member(tx, round_id, set, *p, now).await?;
        }
        Ok(())
    }

    /// Applies a stage boundary atomically: the new stage and server snapshot, the set that completed the old stage,
    /// the new stage's broadcasts, and the deletion of the old stage's messages (the snapshot holds everything the
    /// server took from them; masked inputs survive only inside its running sum). Returns false (and changes
    /// nothing) if the round is no longer in `from_stage` or is finished.
    pub async fn advance_stage(&self, t: &StageBoundary) -> StoreResult<bool> {
        let now = now_ms();
        self.run_tx("advance_stage", |tx| {
            Box::pin(async move {
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
                .execute(&mut **tx)
                .await?;
                if res.rows_affected() != 1 {
                    return Ok(false);
                }
                Self::finish_stage(tx, t.round_id, t.from_stage, &t.completed, now).await?;
                sqlx::query("DELETE FROM round_messages WHERE round_id = $1 AND stage = $2")
                    .bind(t.round_id)
                    .bind(t.from_stage.as_str())
                    .execute(&mut **tx)
                    .await?;
                for (recipient, body) in &t.broadcasts {
                    sqlx::query("INSERT INTO round_broadcasts (round_id, stage, recipient_id, body) VALUES ($1, $2, $3, $4)")
                        .bind(t.round_id)
                        .bind(t.to_stage.as_str())
                        .bind(*recipient)
                        .bind(body.as_slice())
                        .execute(&mut **tx)
                        .await?;
                }
                Self::insert_exclusions(tx, t.round_id, &t.exclusions).await?;
                Ok(true)
            })
        })
        .await
    }

    /// Aborts an unfinished round: nothing is published and nothing is charged. False if already finished.
    pub async fn abort_round(&self, round_id: i64, reason: &str) -> StoreResult<bool> {
        self.abort_round_excluding(round_id, reason, &[]).await
    }

    /// [`Store::abort_round`], also recording participants the round excludes for what they did in it (e.g. a
    /// dealer proved to have dealt bad shares), with the reason, in the same transaction.
    pub async fn abort_round_excluding(
        &self,
        round_id: i64,
        reason: &str,
        exclusions: &[(i64, String)],
    ) -> StoreResult<bool> {
        let now = now_ms();
        self.run_tx("abort_round", |tx| {
            Box::pin(async move {
                let res = sqlx::query(
                    "UPDATE rounds SET outcome = $5, reason = $2, finished_at = $3, stage = $4, server_state = NULL,
                                       lease_owner = NULL
                     WHERE id = $1 AND outcome IS NULL",
                )
                .bind(round_id)
                .bind(reason)
                .bind(now)
                .bind(RoundStage::Finished.as_str())
                .bind(RoundOutcome::Aborted.as_str())
                .execute(&mut **tx)
                .await?;
                if res.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM round_messages WHERE round_id = $1")
                    .bind(round_id)
                    .execute(&mut **tx)
                    .await?;
                Self::insert_exclusions(tx, round_id, exclusions).await?;
                Ok(true)
            })
        })
        .await
    }

    /// Records exclusions of a round (a participant already listed keeps its first reason).
    async fn insert_exclusions(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        round_id: i64,
        exclusions: &[(i64, String)],
    ) -> StoreResult<()> {
        for (participant, why) in exclusions {
            sqlx::query(
                "INSERT INTO round_exclusions (round_id, participant_id, reason) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(round_id)
            .bind(participant)
            .bind(why)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Participants a round excluded for what they did in it, and why: (participant, reason), in participant order.
    pub async fn round_exclusions(&self, round_id: i64) -> StoreResult<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT participant_id, reason FROM round_exclusions WHERE round_id = $1 ORDER BY participant_id",
        )
        .bind(round_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
