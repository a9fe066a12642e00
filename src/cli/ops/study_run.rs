//! `confide study run|stop`: a study that runs itself. `run` asks the coordinator to start the study's rounds back
//! to back (`POST /v1/studies/{id}/run`); with `--wait` it follows them, one progress bar per round (the long-poll
//! of `round watch`), says what the run waits for between rounds, and prints the run's rounds at the end. Exit 0
//! when the run completed, ran out of budget or was stopped; 8 when it failed (rounds aborted more than
//! `max_retries` times in a row, or the next round could not be started).

use std::time::Duration;

use confide_common::api::{
    MemberSet, RoundInfo, RunState, RunStudyRequest, StopStudyRequest, StudyInfo, StudyRun,
    StudySchedule,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::round::follow;
use super::{Ops, OpsError, OpsResult, duration, fields, print_json, table, time};

/// How often a waiting `study run --wait` looks at the study between rounds.
const POLL: Duration = Duration::from_secs(1);

/// What `study run --wait --json` prints at the end: the study (with its run) and the run's rounds.
#[derive(Serialize)]
struct RunSummary {
    study: StudyInfo,
    rounds: Vec<RoundInfo>,
}

fn schedule_line(s: &StudySchedule) -> String {
    match s {
        StudySchedule::Manual => "manual (rounds started with `confide round start`)".into(),
        StudySchedule::Automatic {
            pause_secs,
            max_retries,
        } => format!(
            "automatic: {pause_secs} s between rounds, an aborted round retried up to {max_retries} time(s)"
        ),
    }
}

/// The run's rows of a study's field table.
pub fn run_rows(s: &StudyInfo) -> Vec<(&'static str, String)> {
    let mut rows = vec![("schedule", schedule_line(&s.schedule))];
    if let Some(run) = &s.run {
        let ended = run
            .ended_at_ms
            .map_or(String::new(), |t| format!(", ended {}", time(t)));
        rows.push((
            "run",
            format!(
                "{} (started {}{ended})",
                run.state.as_str(),
                time(run.started_at_ms)
            ),
        ));
        if let Some(reason) = &run.reason {
            rows.push(("run reason", reason.clone()));
        }
    }
    rows
}

/// Starts the study's run; with `wait`, follows it to its end (a run already going is followed as it is).
pub async fn run(ops: &Ops, study: i64, req: &RunStudyRequest, wait: bool) -> OpsResult<()> {
    let info = match ops.client.run_study(study, req).await {
        Ok(info) => info,
        // Already running (e.g. started by its study file's [schedule]): --wait follows it.
        Err(e) if wait && e.status() == Some(409) => {
            let info = get_study(ops, study).await?;
            if !info
                .run
                .as_ref()
                .is_some_and(|r| r.state == RunState::Running)
            {
                return Err(ops.explain(e, &format!("study {study}")));
            }
            if !ops.json {
                println!("study {study} is already running: following it");
            }
            info
        }
        Err(e) => return Err(ops.explain(e, &format!("study {study}"))),
    };
    if !wait {
        if ops.json {
            return print_json(&info);
        }
        println!(
            "study {study} runs on its own: {}; follow it with `confide study run --wait` or `confide study show {study}`",
            schedule_line(&info.schedule)
        );
        return Ok(());
    }
    follow_run(ops, info).await
}

/// Stops the study's run (a round in progress finishes).
pub async fn stop(ops: &Ops, study: i64, reason: Option<String>) -> OpsResult<()> {
    let info = ops
        .client
        .stop_study(study, &StopStudyRequest { reason })
        .await
        .map_err(|e| ops.explain(e, &format!("study {study}")))?;
    if ops.json {
        return print_json(&info);
    }
    println!("{}", fields(run_rows(&info)));
    if let Some(r) = info.active_round {
        println!(
            "round {r} is still running and will finish; `confide round abort {r}` ends it now"
        );
    }
    Ok(())
}

/// Follows a running study: each round with a progress bar, the wait between rounds with a spinner, then the
/// summary.
async fn follow_run(ops: &Ops, mut info: StudyInfo) -> OpsResult<()> {
    let study = info.id;
    let after = info.run.as_ref().map_or(0, |r| r.after_round);
    let mut followed: Vec<i64> = Vec::new();
    loop {
        // Rounds of the run that began and ended between two looks (a small model's round takes well under a
        // second) are reported too, in order.
        for done in finished_rounds(ops, study, after).await? {
            if !followed.contains(&done.id) {
                followed.push(done.id);
                report_round(ops, &done);
            }
        }
        if let Some(round) = info.active_round.filter(|r| !followed.contains(r)) {
            let r = ops
                .client
                .get_round(round)
                .await
                .map_err(|e| ops.explain(e, &format!("round {round}")))?;
            let done = follow(ops, r, true).await?;
            followed.push(round);
            report_round(ops, &done);
        } else {
            let run = info.run.as_ref();
            if info.active_round.is_none() && run.is_none_or(|r| r.state != RunState::Running) {
                break;
            }
            wait_between_rounds(ops, &mut info).await?;
            continue;
        }
        info = get_study(ops, study).await?;
    }
    summary(ops, info).await
}

/// The run's finished rounds (numbered after `after`), in order.
async fn finished_rounds(ops: &Ops, study: i64, after: i64) -> OpsResult<Vec<RoundInfo>> {
    Ok(ops
        .client
        .list_rounds(study)
        .await
        .map_err(|e| ops.explain(e, &format!("study {study}")))?
        .into_iter()
        .filter(|r| r.round_number > after && r.outcome.is_some())
        .collect())
}

/// One line per finished round (people only; `--json` prints the summary).
fn report_round(ops: &Ops, done: &RoundInfo) {
    if !ops.json {
        println!(
            "round {} (#{}): {}{}",
            done.id,
            done.round_number,
            done.outcome.map_or("running", |o| o.as_str()),
            done.reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {r}"))
        );
    }
}

async fn get_study(ops: &Ops, study: i64) -> OpsResult<StudyInfo> {
    ops.client
        .get_study(study)
        .await
        .map_err(|e| ops.explain(e, &format!("study {study}")))
}

/// Shows what the run waits for until a round starts or the run ends.
async fn wait_between_rounds(ops: &Ops, info: &mut StudyInfo) -> OpsResult<()> {
    let bar = if ops.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} study {prefix}: {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(info.id.to_string());
    loop {
        let waiting = info.run.as_ref().and_then(|r| r.reason.clone());
        bar.set_message(waiting.unwrap_or_else(|| "starting the next round".into()));
        bar.tick();
        tokio::time::sleep(POLL).await;
        *info = get_study(ops, info.id).await?;
        let running = info
            .run
            .as_ref()
            .is_some_and(|r| r.state == RunState::Running);
        if info.active_round.is_some() || !running {
            bar.finish_and_clear();
            return Ok(());
        }
    }
}

/// The run's rounds and how it ended; the exit code follows the run's state.
async fn summary(ops: &Ops, study: StudyInfo) -> OpsResult<()> {
    let after = study.run.as_ref().map_or(0, |r| r.after_round);
    let rounds: Vec<RoundInfo> = ops
        .client
        .list_rounds(study.id)
        .await
        .map_err(|e| ops.explain(e, &format!("study {}", study.id)))?
        .into_iter()
        .filter(|r| r.round_number > after)
        .collect();
    let run = study.run.clone();
    if ops.json {
        print_json(&RunSummary { study, rounds })?;
    } else {
        let mut t = table([
            "ROUND",
            "#",
            "OUTCOME",
            "SELECTED",
            "AGGREGATED",
            "TOOK",
            "REASON",
        ]);
        for r in &rounds {
            t.add_row(vec![
                r.id.to_string(),
                r.round_number.to_string(),
                r.outcome.map_or("running", |o| o.as_str()).to_string(),
                r.members(MemberSet::Selected).len().to_string(),
                r.members(MemberSet::SentMaskedInput).len().to_string(),
                r.finished_at_ms
                    .map_or("-".into(), |f| duration(f - r.started_at_ms)),
                r.reason.clone().unwrap_or_default(),
            ]);
        }
        println!("{t}");
        println!(
            "study {}: {} of {} rounds completed, model v{}",
            study.id, study.rounds_completed, study.config.rounds, study.latest_model_version
        );
        println!("{}", fields(run_rows(&study)));
    }
    match run {
        Some(StudyRun {
            state: RunState::Failed,
            reason,
            ..
        }) => Err(OpsError::RoundAborted(format!(
            "the run failed: {}",
            reason.as_deref().unwrap_or("no reason given")
        ))),
        _ => Ok(()),
    }
}
