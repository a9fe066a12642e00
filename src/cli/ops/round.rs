//! `confide round start|list|show|watch|abort`. `watch` follows a round live through its stages with the
//! coordinator's long-poll (`GET /v1/rounds/{id}?wait_secs=N&stage=S`, answered as soon as the round leaves the
//! stage), redrawing the deadline countdown every second, and ends with the outcome: exit 0 when the model was
//! published, 8 when the round aborted.

use std::time::Duration;

use clap::{Args, Subcommand};
use confide_common::api::{MemberSet, RoundInfo, RoundOutcome, RoundStage, StartRoundRequest};
use indicatif::{ProgressBar, ProgressStyle};

use super::{
    Ops, OpsArgs, OpsError, OpsResult, connect, duration, fields, print_json, table, time,
};

#[derive(Subcommand, Debug)]
pub enum RoundCommand {
    /// Start a study's next round with every enrolled participant that has budget left (or those given).
    Start {
        /// The study's id.
        #[arg(long)]
        study: i64,
        /// Only these participants (ids; repeat the flag), instead of everyone enrolled.
        #[arg(long = "participant")]
        participants: Vec<i64>,
        /// Then follow the round like `round watch`.
        #[arg(long)]
        watch: bool,
    },
    /// List a study's rounds.
    List {
        /// The study's id.
        #[arg(long)]
        study: i64,
    },
    /// Show one round: stage, deadline, who is in each set, who was excluded and why, the outcome.
    Show {
        /// The round's id.
        round: i64,
    },
    /// Follow a round live until it ends (exit 0 if it completed, 8 if it aborted); with --json, one line per
    /// change.
    Watch {
        /// The round's id.
        round: i64,
    },
    /// Abort a running round: nothing is published and nothing charged.
    Abort {
        /// The round's id.
        round: i64,
        /// Why (kept with the round).
        #[arg(long, default_value = "aborted by the operator")]
        reason: String,
    },
}

#[derive(Args, Debug)]
pub struct RoundArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(subcommand)]
    pub cmd: RoundCommand,
}

/// The protocol's stages in order; a stage not listed here (added later) shows as the last position.
const STAGES: [RoundStage; 4] = [
    RoundStage::AdvertiseKeys,
    RoundStage::ShareKeys,
    RoundStage::MaskedInputCollection,
    RoundStage::Unmasking,
];

/// How long one long-poll waits for the round to leave its stage: short, because who has answered the stage
/// changes within it and the long-poll answers early only when the stage changes.
const WAIT_SECS: u64 = 2;

pub async fn run(args: RoundArgs) -> OpsResult<()> {
    let ops = connect(&args.ops)?;
    match args.cmd {
        RoundCommand::Start {
            study,
            participants,
            watch: follow,
        } => {
            let req = StartRoundRequest {
                participants: (!participants.is_empty()).then_some(participants),
            };
            let info = ops
                .client
                .start_round(study, &req)
                .await
                .map_err(|e| ops.explain(e, &format!("study {study}")))?;
            if follow {
                return watch(&ops, info).await;
            }
            show(&ops, &info)
        }
        RoundCommand::List { study } => {
            let rounds = ops
                .client
                .list_rounds(study)
                .await
                .map_err(|e| ops.explain(e, &format!("study {study}")))?;
            if ops.json {
                return print_json(&rounds);
            }
            if rounds.is_empty() {
                println!("no rounds in study {study} yet: `confide round start --study {study}`");
                return Ok(());
            }
            let mut t = table([
                "ID",
                "#",
                "STAGE",
                "OUTCOME",
                "SELECTED",
                "AGGREGATED",
                "STARTED",
                "TOOK",
                "REASON",
            ]);
            for r in &rounds {
                t.add_row(vec![
                    r.id.to_string(),
                    r.round_number.to_string(),
                    r.stage.as_str().to_string(),
                    outcome(r),
                    r.members(MemberSet::Selected).len().to_string(),
                    r.members(MemberSet::SentMaskedInput).len().to_string(),
                    time(r.started_at_ms),
                    r.finished_at_ms
                        .map_or("-".into(), |f| duration(f - r.started_at_ms)),
                    r.reason.clone().unwrap_or_default(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        RoundCommand::Show { round } => {
            let info = get(&ops, round).await?;
            show(&ops, &info)
        }
        RoundCommand::Watch { round } => {
            let info = get(&ops, round).await?;
            watch(&ops, info).await
        }
        RoundCommand::Abort { round, reason } => {
            let info = ops
                .client
                .abort_round(round, &reason)
                .await
                .map_err(|e| ops.explain(e, &format!("round {round}")))?;
            show(&ops, &info)
        }
    }
}

async fn get(ops: &Ops, round: i64) -> OpsResult<RoundInfo> {
    ops.client
        .get_round(round)
        .await
        .map_err(|e| ops.explain(e, &format!("round {round}")))
}

fn outcome(r: &RoundInfo) -> String {
    r.outcome.map_or("running".into(), |o| o.as_str().into())
}

/// `selected 4 · advertise_keys 4 · share_keys 3` (the sets recorded so far).
fn sets_line(r: &RoundInfo) -> String {
    r.sets
        .iter()
        .map(|s| format!("{} {}", s.stage.as_str(), s.participants.len()))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn show(ops: &Ops, r: &RoundInfo) -> OpsResult<()> {
    if ops.json {
        return print_json(r);
    }
    let mut rows = vec![
        (
            "round",
            format!("{} (study {}, round {})", r.id, r.study_id, r.round_number),
        ),
        ("stage", r.stage.as_str().to_string()),
        ("outcome", outcome(r)),
        ("started", time(r.started_at_ms)),
        ("base model", format!("v{}", r.base_version)),
    ];
    match r.finished_at_ms {
        Some(f) => rows.push(("took", duration(f - r.started_at_ms))),
        None => rows.push((
            "stage deadline",
            format!(
                "{} (in {})",
                time(r.stage_deadline_ms),
                duration(r.stage_deadline_ms - confide_runtime::now_ms())
            ),
        )),
    }
    if r.outcome.is_none() {
        rows.push(("answered this stage", answered_line(r)));
    }
    if let Some(reason) = &r.reason {
        rows.push(("reason", reason.clone()));
    }
    println!("{}", fields(rows));
    let mut t = table(["SET", "MEMBERS", "PARTICIPANTS"]);
    for s in &r.sets {
        t.add_row(vec![
            s.stage.as_str().to_string(),
            s.participants.len().to_string(),
            s.participants
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    println!("{t}");
    for e in &r.excluded {
        println!("excluded participant {}: {}", e.participant_id, e.reason);
    }
    Ok(())
}

/// The progress bar's message: stage, who has answered it, members per set, deadline countdown.
fn progress_message(r: &RoundInfo) -> String {
    let left = r.stage_deadline_ms - confide_runtime::now_ms();
    format!(
        "{}  answered: {}  ({})  deadline in {}",
        r.stage.as_str(),
        answered_line(r),
        sets_line(r),
        duration(left)
    )
}

/// `3, 5` (the participants that answered the current stage), or `nobody yet`.
fn answered_line(r: &RoundInfo) -> String {
    if r.answered.is_empty() {
        return "nobody yet".into();
    }
    r.answered
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn stage_position(stage: RoundStage) -> u64 {
    STAGES
        .iter()
        .position(|s| *s == stage)
        .unwrap_or(STAGES.len()) as u64
}

/// Follows the round until it ends; the outcome decides the exit code.
async fn watch(ops: &Ops, info: RoundInfo) -> OpsResult<()> {
    let info = follow(ops, info, false).await?;
    if !ops.json {
        show(ops, &info)?;
    }
    match info.outcome {
        Some(RoundOutcome::Completed) => Ok(()),
        _ => Err(OpsError::RoundAborted(format!(
            "round {} aborted: {}",
            info.id,
            info.reason.as_deref().unwrap_or("no reason given")
        ))),
    }
}

/// Follows the round with a progress bar (hidden with --json, which prints one `RoundInfo` line per change unless
/// `quiet`) until it ends; returns its final status.
pub(super) async fn follow(ops: &Ops, mut info: RoundInfo, quiet: bool) -> OpsResult<RoundInfo> {
    let lines = ops.json && !quiet;
    let bar = if ops.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(STAGES.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} round {prefix} [{bar:20}] {pos}/{len} stages  {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(info.id.to_string());
    if lines {
        print_json(&info)?;
    }
    while info.outcome.is_none() {
        bar.set_position(stage_position(info.stage));
        bar.set_message(progress_message(&info));
        let poll = ops.client.wait_round(info.id, Some(info.stage), WAIT_SECS);
        tokio::pin!(poll);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let next = loop {
            tokio::select! {
                r = &mut poll => break r,
                _ = tick.tick() => {
                    bar.set_message(progress_message(&info));
                    bar.tick();
                }
            }
        };
        let next = next.map_err(|e| ops.explain(e, &format!("round {}", info.id)))?;
        if lines
            && (next.stage != info.stage
                || next.sets != info.sets
                || next.answered != info.answered
                || next.outcome.is_some())
        {
            print_json(&next)?;
        }
        info = next;
    }
    bar.finish_and_clear();
    Ok(info)
}
