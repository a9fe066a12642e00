//! `confide-participant budget`: privacy spent per dataset (what the agent's budget is enforced on) and per study
//! (informational), from the local ledger, without writing to it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use confide_participant::agent::config::{ledger_path, parse_file};
use confide_participant::agent::ledger::{LEDGER_FILE, LedgerSummary, read_summary};
use confide_participant::agent::state;

#[derive(Args)]
pub struct BudgetArgs {
    /// The agent's state directory (its ledger is <state dir>/ledger.sqlite unless --ledger).
    #[arg(long, env = "CONFIDE_STATE_DIR", required_unless_present_any = ["config", "ledger"])]
    state_dir: Option<PathBuf>,
    /// Take the ledger (and state directory) from the agent's config file instead.
    #[arg(long, env = "CONFIDE_CONFIG")]
    config: Option<PathBuf>,
    /// The ledger file itself (e.g. one shared by several agents).
    #[arg(long, env = "CONFIDE_LEDGER")]
    ledger: Option<PathBuf>,
    /// Print {"datasets": [{dataset_id, fingerprint, epsilon_spent, epsilon_budget, delta, epsilon_remaining,
    /// rounds_charged, studies}], "studies": [{dataset_id, coordinator_url, participant_id, study_id,
    /// epsilon_spent, rounds_charged}]}.
    #[arg(long)]
    json: bool,
}

/// The ledger to read and the state directory whose identity to show (if known).
fn locate(args: &BudgetArgs) -> Result<(PathBuf, Option<PathBuf>)> {
    if let Some(dir) = &args.state_dir {
        let ledger = args.ledger.clone().unwrap_or_else(|| dir.join(LEDGER_FILE));
        return Ok((ledger, Some(dir.clone())));
    }
    if let Some(config) = &args.config {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        let file = parse_file(&config.display().to_string(), &text)?;
        let base = config.parent().map(Path::to_path_buf);
        let state_dir = file.state_dir.clone().map(|d| match &base {
            Some(b) if d.is_relative() => b.join(d),
            _ => d,
        });
        let ledger = match &args.ledger {
            Some(l) => l.clone(),
            None => ledger_path(&file, base.as_deref()).with_context(|| {
                format!("{}: no state_dir or [budget] ledger", config.display())
            })?,
        };
        return Ok((ledger, state_dir));
    }
    match &args.ledger {
        Some(l) => Ok((l.clone(), None)),
        None => bail!("give --state-dir, --config or --ledger"),
    }
}

fn number(v: Option<f64>, width: usize) -> String {
    v.map_or(format!("{:>width$}", "-"), |v| format!("{v:>width$.4}"))
}

pub fn budget(args: BudgetArgs) -> Result<()> {
    let (ledger, state_dir) = locate(&args)?;
    let summary: LedgerSummary = super::runtime()?
        .block_on(read_summary(&ledger))?
        .unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    if let Some(dir) = &state_dir
        && let Some(id) = state::read_identity(dir)?
    {
        println!(
            "participant {} ({}) of study {} at {}",
            id.participant_id, id.name, id.study_id, id.coordinator_url
        );
    }
    if summary.datasets.is_empty() {
        println!(
            "no privacy spent yet (no ledger entries in {})",
            ledger.display()
        );
        return Ok(());
    }
    println!("Per dataset (the budget is enforced on these):");
    println!(
        "{:<24} {:>7} {:>7} {:>10} {:>10} {:>12} {:>9}  sha256",
        "dataset", "studies", "rounds", "ε spent", "ε budget", "ε remaining", "δ"
    );
    for d in &summary.datasets {
        println!(
            "{:<24} {:>7} {:>7} {} {} {} {:>9}  {}",
            d.dataset_id,
            d.studies,
            d.rounds_charged,
            number(d.epsilon_spent, 10),
            number(d.epsilon_budget, 10),
            number(d.epsilon_remaining, 12),
            d.delta.map_or("-".into(), |v| format!("{v:.1e}")),
            d.fingerprint
                .as_deref()
                .map_or("-".to_string(), |f| f.chars().take(12).collect())
        );
    }
    if !summary.studies.is_empty() {
        println!();
        println!(
            "Per study (informational: each study's own rounds; they compose into the dataset's ε):"
        );
        println!(
            "{:<24} {:>6} {:>11} {:>7} {:>10}  coordinator",
            "dataset", "study", "participant", "rounds", "ε"
        );
        for s in &summary.studies {
            println!(
                "{:<24} {:>6} {:>11} {:>7} {}  {}",
                s.dataset_id,
                s.study_id,
                s.participant_id.map_or("-".into(), |p| p.to_string()),
                s.rounds_charged,
                number(s.epsilon_spent, 10),
                s.coordinator_url
                    .as_deref()
                    .unwrap_or("(charged before dataset ledgers)")
            );
        }
    }
    println!("(ε by the PLD accountant; a round is charged when its masked input is sent)");
    Ok(())
}
