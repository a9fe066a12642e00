//! Studies that run themselves: `POST /v1/studies/{id}/run` stores an automatic schedule and a running run in the
//! study's row; [`supervise`], a task in every coordinator process, starts the study's next round whenever none is
//! active (after the schedule's pause), until every one of the study's `rounds` completed, the privacy budget
//! allows no further round, a round aborted more than `max_retries` times in a row, or the operator stops it.
//!
//! All the state is in the store, so a restarted coordinator carries on where it was. Several processes sharing a
//! database each run the task; the round is created only if the run is still running and the study's last round
//! is the one the process saw end ([`crate::store::NewRound::run_guard`], checked in the transaction that creates
//! it, under the study's row lock), so exactly one of them starts it and the others get a conflict they ignore.
//! Ending a run is a conditional update too: it ends once. The round driver needs no hook: this task is woken by
//! the same change notifications (a round published or aborted in this process) and polls once a second for
//! changes made by other processes.

use std::time::Duration;

use confide_common::api::{
    MAX_PAUSE_SECS, MAX_RETRIES, RoundOutcome, RoundPurpose, RunState, RunStudyRequest,
    StartRoundRequest, StopStudyRequest, StudyInfo, StudyRun, StudySchedule,
};

use super::Coordinator;
use super::rounds::{self, RoundError, RoundPlan};
use super::studies::{self, StudyError};
use super::wakeups::Topic;
use crate::store::{StoreError, StudyRunRow, now_ms};

/// How often every running study is looked at when nothing wakes the task.
const TICK: Duration = Duration::from_secs(1);
/// Least time between two passes (the change notification also fires on every participant message).
const MIN_PASS: Duration = Duration::from_millis(200);

/// The schedule and run of a study as the API shows them.
pub fn run_info(row: &StudyRunRow) -> Result<(StudySchedule, Option<StudyRun>), StudyError> {
    let schedule = match &row.schedule_json {
        None => StudySchedule::Manual,
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StudyError::internal(format!("stored schedule unreadable: {e}")))?,
    };
    let run = match (row.state, row.started_at) {
        (Some(state), Some(started_at_ms)) => Some(StudyRun {
            state,
            started_at_ms,
            ended_at_ms: row.ended_at,
            reason: row.reason.clone(),
            after_round: row.after_round.unwrap_or(0),
        }),
        _ => None,
    };
    Ok((schedule, run))
}

/// Starts the study's run: the coordinator starts its remaining rounds back to back. 409 if it is running, 422 if
/// every round already completed or the schedule's numbers are out of range.
pub async fn run(
    ctx: &Coordinator,
    study_id: i64,
    req: &RunStudyRequest,
) -> Result<StudyInfo, StudyError> {
    if req.pause_secs > MAX_PAUSE_SECS {
        return Err(StudyError::Invalid(format!(
            "pause_secs must be at most {MAX_PAUSE_SECS} (7 days), got {}",
            req.pause_secs
        )));
    }
    if req.max_retries > MAX_RETRIES {
        return Err(StudyError::Invalid(format!(
            "max_retries must be at most {MAX_RETRIES}, got {}",
            req.max_retries
        )));
    }
    let study = studies::load(ctx, study_id).await?;
    let completed = completed_rounds(ctx, study_id).await?;
    if completed >= i64::from(study.config.rounds) {
        return Err(StudyError::Invalid(format!(
            "study {study_id} has completed all its {} rounds; create a new study to train further",
            study.config.rounds
        )));
    }
    let schedule = StudySchedule::Automatic {
        pause_secs: req.pause_secs,
        max_retries: req.max_retries,
    };
    let json = serde_json::to_string(&schedule).map_err(StudyError::internal)?;
    ctx.store.start_study_run(study_id, &json).await?;
    tracing::info!(
        study = study_id,
        pause_secs = req.pause_secs,
        max_retries = req.max_retries,
        "study run started"
    );
    ctx.changed(vec![Topic::Schedule]).await;
    studies::get(ctx, study_id).await
}

/// Stops the study's run: no further round is started; a round in progress finishes (abort it to end it now).
/// 409 if it is not running.
pub async fn stop(
    ctx: &Coordinator,
    study_id: i64,
    req: &StopStudyRequest,
) -> Result<StudyInfo, StudyError> {
    let reason = match &req.reason {
        Some(r)
            if r.trim().is_empty()
                || r.chars().count() > 500
                || r.chars().any(char::is_control) =>
        {
            return Err(StudyError::Invalid(
                "reason must be 1..=500 characters without control characters".into(),
            ));
        }
        Some(r) => format!("stopped by the operator: {r}"),
        None => "stopped by the operator".to_string(),
    };
    ctx.store.get_study(study_id).await?;
    if !ctx
        .store
        .end_study_run(study_id, RunState::Stopped, &reason)
        .await?
    {
        return Err(StoreError::Conflict(format!(
            "study {study_id} is not running (start it with POST /v1/studies/{study_id}/run)"
        ))
        .into());
    }
    tracing::info!(study = study_id, "study run stopped by the operator");
    studies::get(ctx, study_id).await
}

async fn completed_rounds(ctx: &Coordinator, study_id: i64) -> Result<i64, StoreError> {
    Ok(completed_training(&ctx.store.list_rounds(study_id).await?) as i64)
}

/// The study's completed rounds that count against its `rounds`: evaluation rounds publish no model and do not.
fn completed_training(rounds: &[crate::store::RoundRow]) -> usize {
    rounds
        .iter()
        .filter(|r| r.outcome == Some(RoundOutcome::Completed))
        .filter(|r| RoundPlan::parse(r).map_or(true, |p| p.purpose != RoundPurpose::Evaluation))
        .count()
}

/// Looks at every running study once a second (and when woken by a change in this process) and starts its next
/// round when it is due; stops on shutdown.
pub fn supervise(ctx: Coordinator) {
    tokio::spawn(async move {
        let topic = ctx.wakeups.topic(Topic::Schedule);
        loop {
            let woken = topic.notified();
            match ctx.store.running_studies().await {
                Ok(ids) => {
                    for id in ids {
                        if let Err(e) = step(&ctx, id).await {
                            tracing::warn!(study = id, error = %e, "study run: will try again");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list running studies"),
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(MIN_PASS) => {}
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(TICK - MIN_PASS) => {}
            }
        }
    });
}

/// Ends the run with why (once, whichever process gets there first).
async fn end(
    ctx: &Coordinator,
    study_id: i64,
    state: RunState,
    reason: &str,
) -> Result<(), RoundError> {
    if ctx.store.end_study_run(study_id, state, reason).await? {
        tracing::info!(
            study = study_id,
            state = state.as_str(),
            reason,
            "study run ended"
        );
        ctx.changed(vec![Topic::Schedule]).await;
    }
    Ok(())
}

/// One look at a running study: start its next round if due, end the run if it is over.
async fn step(ctx: &Coordinator, study_id: i64) -> Result<(), RoundError> {
    let run = ctx.store.study_run(study_id).await?;
    if run.state != Some(RunState::Running) {
        return Ok(());
    }
    let (schedule, _) = run_info(&run)?;
    let StudySchedule::Automatic {
        pause_secs,
        max_retries,
    } = schedule
    else {
        return end(
            ctx,
            study_id,
            RunState::Failed,
            "the run has no automatic schedule",
        )
        .await;
    };
    let study = studies::load(ctx, study_id).await?;
    let rounds = ctx.store.list_rounds(study_id).await?;
    if rounds.iter().any(|r| r.outcome.is_none()) {
        return Ok(()); // its driver is on it
    }
    // With federated evaluation, a due evaluation round may still start after the last training round; when
    // nothing is left, starting is refused ("completed all its rounds") and the run ends as completed below.
    if completed_training(&rounds) >= study.config.rounds as usize
        && study.config.evaluation.is_none()
    {
        let why = format!("all {} rounds completed", study.config.rounds);
        return end(ctx, study_id, RunState::Completed, &why).await;
    }
    let after = run.after_round.unwrap_or(0);
    let aborted_in_a_row = rounds
        .iter()
        .rev()
        .take_while(|r| r.round_number > after && r.outcome == Some(RoundOutcome::Aborted))
        .count();
    if aborted_in_a_row > max_retries as usize {
        let last = rounds
            .last()
            .and_then(|r| r.reason.clone())
            .unwrap_or_default();
        let why = format!(
            "{aborted_in_a_row} round(s) aborted in a row (max_retries = {max_retries}); the last: {last}"
        );
        return end(ctx, study_id, RunState::Failed, &why).await;
    }
    let last = rounds.last();
    if let Some(ended) = last.and_then(|r| r.finished_at)
        && now_ms() < ended.saturating_add(1000 * pause_secs as i64)
    {
        return Ok(());
    }
    let guard = last.map_or(0, |r| r.round_number);
    match rounds::start_guarded(ctx, study_id, &StartRoundRequest::default(), Some(guard)).await {
        Ok(round) => {
            tracing::info!(
                study = study_id,
                round = round.id,
                number = round.round_number,
                "study run started a round"
            );
            if run.reason.is_some() {
                ctx.store.set_run_reason(study_id, None).await?;
            }
            Ok(())
        }
        // Another process started it (or the run was stopped meanwhile).
        Err(RoundError::Store(StoreError::Conflict(_))) => Ok(()),
        Err(RoundError::Store(StoreError::Refused(m))) => {
            end(ctx, study_id, RunState::Completed, &m).await
        }
        Err(RoundError::TooFew {
            message,
            budget_bound: true,
        }) => {
            let why = format!("the privacy budget allows no further round: {message}");
            end(ctx, study_id, RunState::OutOfBudget, &why).await
        }
        Err(RoundError::TooFew {
            message,
            budget_bound: false,
        }) => {
            // Too few enrolled (yet): wait for more, saying so.
            let why = format!("waiting for participants: {message}");
            if run.reason.as_deref() != Some(why.as_str()) {
                ctx.store.set_run_reason(study_id, Some(&why)).await?;
                ctx.changed(vec![Topic::Schedule]).await;
            }
            Ok(())
        }
        Err(RoundError::Invalid(m)) => {
            let why = format!("cannot start the next round: {m}");
            end(ctx, study_id, RunState::Failed, &why).await
        }
        Err(e) => Err(e),
    }
}
