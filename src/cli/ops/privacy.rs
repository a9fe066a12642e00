//! `confide privacy report`: per participant of a study, the budget, ε spent (the coordinator's PLD over its whole
//! ledger), what remains, and how many more rounds it can take part in before its budget stops it.
//!
//! The projection uses the one ε path (`PrivacyLedger::epsilon`, PLD, as the coordinator's budget rule): a study's
//! rounds all charge the same planned events (`confide_common::plan::planned_events` of its DP parameters), so a
//! participant charged r rounds has the ledger of r such rounds, and k more rounds fit while the ledger of r + k
//! rounds stays within the budget. It is capped by the rounds the study has left.

use std::collections::HashMap;

use clap::Args;
use confide_common::api::StudyInfo;
use confide_common::dp::{AccountantKind, PrivacyLedger};
use confide_common::plan::planned_events;
use serde::Serialize;

use super::{OpsArgs, OpsError, OpsResult, connect, print_json, table};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    /// The study's id.
    #[arg(long)]
    study: i64,
}

/// One row of the report (`--json` prints these with the study's δ).
#[derive(Debug, Serialize)]
struct Row {
    participant_id: i64,
    name: String,
    epsilon_budget: f64,
    epsilon_spent: f64,
    epsilon_remaining: f64,
    rounds_charged: i64,
    /// More rounds this participant can take part in: within its budget and the study's remaining rounds.
    projected_rounds_left: u32,
    /// What limits `projected_rounds_left`: `budget` or `study` (its remaining rounds).
    limited_by: &'static str,
}

/// ε of `rounds` rounds of the study, memoised (participants charged alike share the computation).
struct Projection<'a> {
    study: &'a StudyInfo,
    known: HashMap<u64, f64>,
}

impl Projection<'_> {
    fn epsilon(&mut self, rounds: u64) -> OpsResult<f64> {
        if let Some(e) = self.known.get(&rounds) {
            return Ok(*e);
        }
        let c = &self.study.config;
        let per_round = planned_events(&c.dp);
        let events = (0..rounds)
            .flat_map(|_| per_round.iter().cloned())
            .collect();
        let eps = PrivacyLedger { events }
            .epsilon(c.budget.delta, AccountantKind::Pld)
            .map_err(|e| OpsError::local(format!("cannot account the study's rounds: {e}")))?;
        self.known.insert(rounds, eps);
        Ok(eps)
    }

    /// The most further rounds k ≤ `cap` with ε(charged + k rounds) ≤ budget (binary search: ε grows with rounds).
    fn rounds_left(&mut self, charged: u64, cap: u32) -> OpsResult<u32> {
        let budget = self.study.config.budget.epsilon;
        let (mut lo, mut hi) = (0u32, cap);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.epsilon(charged + u64::from(mid))? <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }
}

pub async fn run(args: ReportArgs) -> OpsResult<()> {
    let ops = connect(&args.ops)?;
    let what = format!("study {}", args.study);
    let study = ops
        .client
        .get_study(args.study)
        .await
        .map_err(|e| ops.explain(e, &what))?;
    let report = ops
        .client
        .privacy_report(args.study)
        .await
        .map_err(|e| ops.explain(e, &what))?;
    let study_left = u32::try_from(
        (i64::from(study.config.rounds)
            - study.rounds_completed
            - i64::from(study.active_round.is_some()))
        .max(0),
    )
    .unwrap_or(0);
    let mut projection = Projection {
        study: &study,
        known: HashMap::new(),
    };
    let mut rows = Vec::new();
    for p in &report.participants {
        let charged = u64::try_from(p.rounds_charged.max(0)).unwrap_or(0);
        let left = projection.rounds_left(charged, study_left)?;
        rows.push(Row {
            participant_id: p.participant_id,
            name: p.name.clone(),
            epsilon_budget: p.epsilon_budget,
            epsilon_spent: p.epsilon_spent,
            epsilon_remaining: (p.epsilon_budget - p.epsilon_spent).max(0.0),
            rounds_charged: p.rounds_charged,
            projected_rounds_left: left,
            limited_by: if left < study_left { "budget" } else { "study" },
        });
    }
    if ops.json {
        return print_json(&serde_json::json!({
            "study_id": report.study_id,
            "delta": report.delta,
            "accountant": report.accountant,
            "study_rounds_left": study_left,
            "participants": rows,
        }));
    }
    if rows.is_empty() {
        println!("no participants in study {} yet", args.study);
        return Ok(());
    }
    let mut t = table([
        "NAME",
        "ID",
        "BUDGET ε",
        "SPENT ε",
        "REMAINING ε",
        "ROUNDS CHARGED",
        "PROJECTED ROUNDS LEFT",
    ]);
    for r in &rows {
        let left = match r.limited_by {
            "budget" => format!("{} (budget)", r.projected_rounds_left),
            _ => format!("{} (all the study's)", r.projected_rounds_left),
        };
        t.add_row(vec![
            r.name.clone(),
            r.participant_id.to_string(),
            format!("{}", r.epsilon_budget),
            format!("{:.4}", r.epsilon_spent),
            format!("{:.4}", r.epsilon_remaining),
            r.rounds_charged.to_string(),
            left,
        ]);
    }
    println!("{t}");
    println!(
        "δ = {:e}; ε by the {:?} accountant (certified upper bound); {study_left} round(s) of the study left",
        report.delta, report.accountant
    );
    Ok(())
}
