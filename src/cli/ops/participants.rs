//! `confide participants list|disable`: who is enrolled in a study, how many rounds each took part in (completed rounds
//! whose aggregate included it, i.e. rounds charged) and the ε spent of its budget (the coordinator's privacy
//! report, PLD over its whole ledger), and when it was last seen.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{OpsArgs, OpsResult, connect, duration, print_json, table, time};

#[derive(Subcommand, Debug)]
pub enum ParticipantsCommand {
    /// List a study's participants with their rounds and ε spent.
    List {
        /// The study's id.
        #[arg(long)]
        study: i64,
    },
    /// Disable a participant: it is no longer selected for rounds (its credential still works; its ledger stays).
    Disable {
        /// The study's id.
        #[arg(long)]
        study: i64,
        /// The participant's id (from `participants list`).
        participant: i64,
    },
}

#[derive(Args, Debug)]
pub struct ParticipantsArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(subcommand)]
    pub cmd: ParticipantsCommand,
}

/// One row of `participants list --json`.
#[derive(Debug, Serialize)]
struct Row {
    id: i64,
    name: String,
    enrolled_at_ms: i64,
    /// When it last made a request (the coordinator records it at most every 30 s).
    last_seen_ms: Option<i64>,
    disabled: bool,
    rounds_charged: i64,
    epsilon_spent: Option<f64>,
    epsilon_budget: Option<f64>,
}

/// `12 s ago`, or `never` (no request since enrolment).
fn last_seen(at: Option<i64>, now: i64) -> String {
    at.map_or("never".into(), |t| format!("{} ago", duration(now - t)))
}

pub async fn run(args: ParticipantsArgs) -> OpsResult<()> {
    let ops = connect(&args.ops)?;
    let study = match args.cmd {
        ParticipantsCommand::List { study } => study,
        ParticipantsCommand::Disable { study, participant } => {
            let p = ops
                .client
                .disable_participant(study, participant)
                .await
                .map_err(|e| {
                    ops.explain(e, &format!("participant {participant} of study {study}"))
                })?;
            if ops.json {
                return print_json(&p);
            }
            println!(
                "participant {} ({}) of study {study} is disabled: it is not selected for rounds from now on",
                p.id, p.name
            );
            return Ok(());
        }
    };
    let what = format!("study {study}");
    let participants = ops
        .client
        .list_participants(study)
        .await
        .map_err(|e| ops.explain(e, &what))?;
    let report = ops
        .client
        .privacy_report(study)
        .await
        .map_err(|e| ops.explain(e, &what))?;
    let rows: Vec<Row> = participants
        .into_iter()
        .map(|p| {
            let privacy = report
                .participants
                .iter()
                .find(|r| r.participant_id == p.id);
            Row {
                id: p.id,
                name: p.name,
                enrolled_at_ms: p.enrolled_at_ms,
                last_seen_ms: p.last_seen_ms,
                disabled: p.disabled,
                rounds_charged: privacy.map_or(0, |r| r.rounds_charged),
                epsilon_spent: privacy.map(|r| r.epsilon_spent),
                epsilon_budget: privacy.map(|r| r.epsilon_budget),
            }
        })
        .collect();
    if ops.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!(
            "no participants in study {study} yet: `confide token create --study {study} --label <hospital>` makes enrolment tokens"
        );
        return Ok(());
    }
    let mut t = table([
        "NAME",
        "ID",
        "ROUNDS",
        "ε SPENT / BUDGET",
        "LAST SEEN",
        "ENROLLED",
    ]);
    let now = confide_runtime::now_ms();
    for r in &rows {
        let eps = match (r.epsilon_spent, r.epsilon_budget) {
            (Some(s), Some(b)) => format!("{s:.4} / {b}"),
            _ => "-".into(),
        };
        t.add_row(vec![
            r.name.clone(),
            r.id.to_string(),
            r.rounds_charged.to_string(),
            eps,
            last_seen(r.last_seen_ms, now),
            if r.disabled {
                format!("{} (disabled)", time(r.enrolled_at_ms))
            } else {
                time(r.enrolled_at_ms)
            },
        ]);
    }
    println!("{t}");
    println!(
        "δ = {:e}; ε by the {:?} accountant",
        report.delta, report.accountant
    );
    Ok(())
}
