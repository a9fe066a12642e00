//! Privacy budgets on the coordinator's side, and the one place their rule is applied: ε of each participant's
//! ledger by the one accountant path (`PrivacyLedger::epsilon`, PLD, a certified upper bound: it may overestimate ε,
//! never underestimate it), and "ε after the spend ≤ budget" at study creation (one round alone), at selection (each
//! candidate) and at publication (each aggregated participant). The store only writes the charges — with the model,
//! in one transaction, and only if the ledgers are still those ε was computed from.
//!
//! PLD composition is CPU-heavy (an FFT per distinct mechanism, hundreds of milliseconds): [`epsilons`] runs it on
//! tokio's blocking pool so that it never stalls the async runtime, and computes each distinct ledger once
//! (participants who took part in the same rounds share one computation).

use std::collections::HashMap;

use confide_common::api::{
    BudgetParams, CreateStudyRequest, ExcludedParticipant, PrivacyPlanRequest, PrivacyPlanResponse,
};
use confide_common::dp::{
    AccountantKind, DataPartition, DpError, PartitionedEvent, PrivacyEvent, PrivacyLedger,
    noise_multiplier_for_rounds, partitioned_epsilon,
};
use confide_common::evaluation::EvaluationRelease;
use confide_common::plan;
use confide_common::statistics::ReleaseParams;

use super::Coordinator;
use crate::store::{Charge, LedgerRow, ParticipantRow, Publication, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The accountant cannot certify ε for these events (it refuses rather than under-report).
    #[error("{0}")]
    Unaccountable(String),
    /// Someone's ε would exceed the budget.
    #[error("{0}")]
    OverBudget(String),
    /// A planning request the accountant cannot answer; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publications computed again at most this often when a ledger changed between the ε computation and the charge.
const PUBLISH_ATTEMPTS: u32 = 3;

/// The budget rule: ε after the spend is at most the budget. A NaN ε (one nobody can vouch for) breaks it.
fn within_budget(epsilon: f64, budget: &BudgetParams) -> bool {
    epsilon <= budget.epsilon
}

/// A participant's ledger: its charged events in charge order, each with the part of its dataset it used.
pub type Ledger = Vec<PartitionedEvent>;

/// Each participant's ledger from a study's ledger rows.
fn ledgers_by_participant(rows: Vec<LedgerRow>) -> HashMap<i64, Ledger> {
    let mut out: HashMap<i64, Ledger> = HashMap::new();
    for row in rows {
        let partition = row.partition;
        out.entry(row.participant_id).or_default().extend(
            row.events
                .into_iter()
                .map(|event| PartitionedEvent { partition, event }),
        );
    }
    out
}

/// `events` as releases that used `partition`.
pub fn tagged(partition: DataPartition, events: &[PrivacyEvent]) -> Ledger {
    events
        .iter()
        .map(|&event| PartitionedEvent { partition, event })
        .collect()
}

/// Each of `participants`' ledgers in a study with `planned` appended (what it would be after this round charged
/// them), with the number of stored rows it was read from.
async fn ledgers_with(
    store: &Store,
    study_id: i64,
    participants: &[i64],
    planned: &[PartitionedEvent],
) -> Result<Vec<(Ledger, i64)>, StoreError> {
    let rows = store.ledger(study_id).await?;
    let counts: Vec<i64> = participants
        .iter()
        .map(|p| rows.iter().filter(|r| r.participant_id == *p).count() as i64)
        .collect();
    let mut ledgers = ledgers_by_participant(rows);
    Ok(participants
        .iter()
        .zip(counts)
        .map(|(p, rows)| {
            let mut ledger = ledgers.remove(p).unwrap_or_default();
            ledger.extend_from_slice(planned);
            (ledger, rows)
        })
        .collect())
}

/// ε at `delta` of each ledger, in order, computed on the blocking pool; identical ledgers are computed once, and
/// ledgers this process computed recently are not computed again (see [`EpsilonCache`]). The training and
/// evaluation parts of a dataset compose in parallel (`dp::partition`): ε is the larger of the two parts' ε, each
/// with the releases that used every record.
pub async fn epsilons(ledgers: Vec<Ledger>, delta: f64) -> Result<Vec<f64>, PrivacyError> {
    tokio::task::spawn_blocking(move || {
        ledgers
            .iter()
            .map(|ledger| EpsilonCache::get_or_compute(ledger, delta))
            .collect()
    })
    .await
    .map_err(|e| PrivacyError::Unaccountable(format!("the ε computation failed: {e}")))?
}

/// ε of recently seen ledgers, by their exact events and δ. A round asks for the same ε three times — selection
/// (history + planned round), publication (the same ledger) and the gauges after it — and every participant with the
/// same history asks for the same one: the PLD composition (tens of milliseconds in a release build) then runs once.
/// It is a memo of the one accountant path, keyed by the exact inputs, so it can never change a result.
struct EpsilonCache;

/// Entries kept before the memo starts over (each a ledger's events: small).
const EPSILON_CACHE_ENTRIES: usize = 512;

type EpsilonKey = (Ledger, u64);

static EPSILONS: std::sync::Mutex<Vec<(EpsilonKey, f64)>> = std::sync::Mutex::new(Vec::new());

impl EpsilonCache {
    fn get_or_compute(events: &[PartitionedEvent], delta: f64) -> Result<f64, PrivacyError> {
        let hit = |cache: &[(EpsilonKey, f64)]| {
            cache
                .iter()
                .rev()
                .find(|((e, d), _)| *d == delta.to_bits() && e.as_slice() == events)
                .map(|(_, eps)| *eps)
        };
        if let Some(eps) = EPSILONS.lock().ok().and_then(|c| hit(&c)) {
            return Ok(eps);
        }
        let eps = partitioned_epsilon(events, delta, AccountantKind::Pld)
            .map_err(|e| PrivacyError::Unaccountable(e.to_string()))?;
        if let Ok(mut cache) = EPSILONS.lock() {
            if cache.len() >= EPSILON_CACHE_ENTRIES {
                cache.clear();
            }
            cache.push(((events.to_vec(), delta.to_bits()), eps));
        }
        Ok(eps)
    }
}

/// One round of a study to be, on an empty ledger, must fit in its budget: otherwise no round could ever run.
pub async fn check_first_round(config: &CreateStudyRequest) -> Result<(), PrivacyError> {
    let mut events = tagged(
        training_partition(config),
        &plan::planned_events(&config.dp),
    );
    // A statistics round, if declared, comes first: the study must afford it and one training round.
    if let Some(p) = &config.preprocessing
        && let Some(round) = p.statistics_round
    {
        let release =
            ReleaseParams::for_target(p.feature_ranges.len(), round.epsilon, config.budget.delta)
                .map_err(|e| PrivacyError::Unaccountable(format!("statistics round: {e}")))?;
        events.extend(tagged(DataPartition::All, &[release.event()]));
    }
    let statistics = events.len() > 1;
    // And one evaluation (on the held-out part: in parallel with training).
    if let Some(evaluation) = &config.evaluation {
        let release = EvaluationRelease::for_config(evaluation, config.budget.delta)
            .map_err(|e| PrivacyError::Unaccountable(format!("evaluation: {e}")))?;
        events.extend(tagged(DataPartition::Evaluation, &[release.event()]));
    }
    let evaluation = config.evaluation.is_some();
    let first_round = epsilons(vec![events], config.budget.delta)
        .await?
        .first()
        .copied()
        .unwrap_or(f64::NAN);
    if !within_budget(first_round, &config.budget) {
        return Err(PrivacyError::OverBudget(format!(
            "{}{} would spend ε = {first_round:.4} at δ = {}, over the budget ε = {}: \
             raise dp.noise_multiplier, lower dp.sampling_rate or dp.local_epochs{}{}, or raise the budget",
            if statistics {
                "the statistics round and one training round of this study"
            } else {
                "one round of this study alone"
            },
            if evaluation {
                " (with one evaluation of its held-out records)"
            } else {
                ""
            },
            config.budget.delta,
            config.budget.epsilon,
            if statistics {
                ", lower preprocessing.statistics_round.epsilon"
            } else {
                ""
            },
            if evaluation {
                ", lower evaluation.epsilon"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// The part of each site's dataset a study's training rounds use: the training part when the study holds records
/// out for evaluation, else every record.
pub fn training_partition(config: &CreateStudyRequest) -> DataPartition {
    if config.evaluation.is_some() {
        DataPartition::Training
    } else {
        DataPartition::All
    }
}

/// Most DP-SGD steps per round a plan may ask for (a study's rules allow no more).
pub const MAX_PLAN_STEPS_PER_ROUND: u64 = 10_000_000;
/// Most rounds a plan may ask for (a study's rules allow no more).
pub const MAX_PLAN_ROUNDS: u32 = 100_000;

/// Checks a planning request field by field, each refusal naming the field and its allowed range.
fn check_plan(req: &PrivacyPlanRequest) -> Result<(), PrivacyError> {
    let invalid = |m: String| Err(PrivacyError::Invalid(m));
    if !(req.target_epsilon.is_finite() && req.target_epsilon > 0.0) {
        return invalid(format!(
            "target_epsilon must be a finite number > 0, got {}",
            req.target_epsilon
        ));
    }
    if !(req.delta > 0.0 && req.delta < 1.0) {
        return invalid(format!("delta must be in (0, 1), got {}", req.delta));
    }
    if !(req.sampling_rate > 0.0 && req.sampling_rate <= 1.0) {
        return invalid(format!(
            "sampling_rate must be in (0, 1], got {}",
            req.sampling_rate
        ));
    }
    if req.steps_per_round == 0 || req.steps_per_round > MAX_PLAN_STEPS_PER_ROUND {
        return invalid(format!(
            "steps_per_round must be in 1..={MAX_PLAN_STEPS_PER_ROUND}, got {}",
            req.steps_per_round
        ));
    }
    if req.rounds == 0 || req.rounds > MAX_PLAN_ROUNDS {
        return invalid(format!(
            "rounds must be in 1..={MAX_PLAN_ROUNDS}, got {}",
            req.rounds
        ));
    }
    Ok(())
}

/// The planner: the smallest σ (0.001 grid) whose `rounds` rounds of `steps_per_round` steps stay within the
/// target under the PLD accountant (`noise_multiplier_for_rounds`, which re-checks the per-round ledger as the
/// coordinator will keep it), with the certified upper and lower ε at that σ. On the blocking pool: a search is
/// tens of PLD compositions.
pub async fn plan(req: PrivacyPlanRequest) -> Result<PrivacyPlanResponse, PrivacyError> {
    check_plan(&req)?;
    tokio::task::spawn_blocking(move || {
        let sigma = noise_multiplier_for_rounds(
            req.target_epsilon,
            req.delta,
            req.sampling_rate,
            req.steps_per_round,
            req.rounds,
            AccountantKind::Pld,
        )
        .map_err(|e| match e {
            DpError::TargetUnreachable { .. } => PrivacyError::Invalid(format!(
                "target_epsilon = {} cannot be reached: {e}; raise it, or lower sampling_rate, steps or rounds",
                req.target_epsilon
            )),
            other => PrivacyError::Unaccountable(other.to_string()),
        })?;
        let event = PrivacyEvent::SubsampledGaussian {
            sampling_rate: req.sampling_rate,
            noise_multiplier: sigma,
            steps: req.steps_per_round,
        };
        let bounds = PrivacyLedger {
            events: vec![event; req.rounds as usize],
        }
        .epsilon_bounds(req.delta)
        .map_err(|e| PrivacyError::Unaccountable(e.to_string()))?;
        // Fail closed: the σ returned must be one whose certified ε is within the target.
        let within_target = bounds.upper <= req.target_epsilon;
        if !within_target {
            return Err(PrivacyError::Unaccountable(format!(
                "the calibrated σ = {sigma} gives ε ≤ {} over the target {}",
                bounds.upper, req.target_epsilon
            )));
        }
        Ok(PrivacyPlanResponse {
            noise_multiplier: sigma,
            epsilon: bounds.upper,
            epsilon_lower: bounds.lower,
            accountant: AccountantKind::Pld,
            request: req,
        })
    })
    .await
    .map_err(|e| PrivacyError::Unaccountable(format!("the calibration failed: {e}")))?
}

/// Splits a round's candidates into those whose ε after the round stays within the budget (selected, in order)
/// and those excluded, with why.
pub async fn select_within_budget(
    store: &Store,
    study_id: i64,
    candidates: Vec<i64>,
    planned: &[PartitionedEvent],
    budget: &BudgetParams,
) -> Result<(Vec<i64>, Vec<ExcludedParticipant>), PrivacyError> {
    let (ledgers, _): (Vec<Ledger>, Vec<i64>) = ledgers_with(store, study_id, &candidates, planned)
        .await?
        .into_iter()
        .unzip();
    let epsilons = epsilons(ledgers, budget.delta).await?;
    let (mut selected, mut excluded) = (Vec::new(), Vec::new());
    for (p, eps) in candidates.into_iter().zip(epsilons) {
        if within_budget(eps, budget) {
            selected.push(p);
        } else {
            excluded.push(ExcludedParticipant {
                participant_id: p,
                reason: format!(
                    "this round would bring its ε to {eps:.4}, over its budget {} (δ = {})",
                    budget.epsilon, budget.delta
                ),
            });
        }
    }
    Ok((selected, excluded))
}

/// Publishes a completed round's model and charges `planned` to each participant `in_aggregate`. ε is computed off
/// the runtime and outside the transaction (far too slow to hold a database lock for), the budget rule applied,
/// then the store writes charges and model in one transaction that first checks each ledger is still the one ε
/// was computed from; a change (only possible if something else charged the participant meanwhile) makes this
/// compute again. `OverBudget` or `Unaccountable`: nothing was written.
pub async fn publish_with_charges(
    store: &Store,
    mut publication: Publication,
    study_id: i64,
    in_aggregate: &[i64],
    planned: &[PartitionedEvent],
    budget: &BudgetParams,
) -> Result<i64, PrivacyError> {
    let partition = planned
        .first()
        .map(|e| e.partition)
        .unwrap_or(DataPartition::All);
    if planned.iter().any(|e| e.partition != partition) {
        return Err(PrivacyError::Unaccountable(
            "a round's planned events must all use one part of the dataset".into(),
        ));
    }
    let events: Vec<PrivacyEvent> = planned.iter().map(|e| e.event).collect();
    let mut attempt = 1;
    loop {
        let (ledgers, rows): (Vec<Ledger>, Vec<i64>) =
            ledgers_with(store, study_id, in_aggregate, planned)
                .await?
                .into_iter()
                .unzip();
        let epsilons = epsilons(ledgers, budget.delta).await?;
        publication.charges = Vec::with_capacity(in_aggregate.len());
        for ((participant, epsilon_after), ledger_rows) in
            in_aggregate.iter().zip(epsilons).zip(rows)
        {
            if !within_budget(epsilon_after, budget) {
                return Err(PrivacyError::OverBudget(format!(
                    "participant {participant} would reach ε = {epsilon_after:.4} > budget {}",
                    budget.epsilon
                )));
            }
            publication.charges.push(Charge {
                participant: *participant,
                events: events.clone(),
                epsilon_after,
                ledger_rows,
                partition,
            });
        }
        if let Some(e) = publication.evaluation.as_mut() {
            e.epsilon_spent = publication
                .charges
                .iter()
                .map(|c| c.epsilon_after)
                .fold(0.0, f64::max);
        }
        match store.publish_round(&publication).await {
            Err(StoreError::Stale(m)) if attempt < PUBLISH_ATTEMPTS => {
                tracing::info!(round = publication.round_id, reason = %m, "ledger changed during publication; computing ε again");
                attempt += 1;
            }
            other => return Ok(other?),
        }
    }
}

/// One participant's privacy position in a study.
pub struct PrivacyOf {
    pub participant: ParticipantRow,
    pub epsilon_spent: f64,
    pub epsilon_budget: f64,
    pub rounds_charged: usize,
}

/// ε spent (PLD over the whole ledger, computed off the async runtime) and budget of every participant of a study.
pub async fn privacy_of(
    store: &Store,
    study_id: i64,
    budget: &BudgetParams,
) -> Result<Vec<PrivacyOf>, PrivacyError> {
    let participants = store.list_participants(study_id).await?;
    let ids: Vec<i64> = participants.iter().map(|p| p.id).collect();
    let (ledgers, rows): (Vec<Ledger>, Vec<i64>) = ledgers_with(store, study_id, &ids, &[])
        .await?
        .into_iter()
        .unzip();
    let spent = epsilons(ledgers, budget.delta).await?;
    Ok(participants
        .into_iter()
        .zip(spent.into_iter().zip(rows))
        .map(|(participant, (epsilon_spent, rounds_charged))| PrivacyOf {
            participant,
            epsilon_spent,
            epsilon_budget: budget.epsilon,
            rounds_charged: rounds_charged as usize,
        })
        .collect())
}

/// Re-reads ε spent and budgets of a study's participants into the gauges (a failure is logged: gauges are a view).
pub async fn refresh_gauges(ctx: &Coordinator, study_id: i64, budget: &BudgetParams) {
    let report = match privacy_of(&ctx.store, study_id, budget).await {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(study = study_id, error = %e, "could not refresh privacy gauges");
            return;
        }
    };
    let sid = study_id.to_string();
    for p in report {
        let pid = p.participant.id.to_string();
        let labels = [sid.as_str(), pid.as_str()];
        ctx.metrics
            .epsilon_spent
            .with_label_values(&labels)
            .set(p.epsilon_spent);
        ctx.metrics
            .epsilon_budget
            .with_label_values(&labels)
            .set(p.epsilon_budget);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(q: f64, sigma: f64, steps: u64) -> PrivacyEvent {
        PrivacyEvent::SubsampledGaussian {
            sampling_rate: q,
            noise_multiplier: sigma,
            steps,
        }
    }

    fn ledger(events: &[PrivacyEvent]) -> Ledger {
        tagged(DataPartition::All, events)
    }

    #[tokio::test]
    async fn epsilons_are_in_order_and_zero_for_an_empty_ledger() {
        let one = ledger(&[round(0.1, 1.1, 10)]);
        let two = ledger(&[round(0.1, 1.1, 10), round(0.1, 1.1, 10)]);
        let eps = epsilons(
            vec![two.clone(), Ledger::new(), one.clone(), two.clone()],
            1e-5,
        )
        .await
        .unwrap();
        assert_eq!(eps[1], 0.0);
        assert!(eps[2] > 0.0 && eps[0] > eps[2], "{eps:?}");
        assert_eq!(eps[0], eps[3]);
        let sequential = PrivacyLedger {
            events: vec![round(0.1, 1.1, 10)],
        };
        assert_eq!(
            eps[2],
            sequential.epsilon(1e-5, AccountantKind::Pld).unwrap()
        );
    }

    #[tokio::test]
    async fn training_and_evaluation_charges_compose_in_parallel() {
        let train = round(0.1, 1.1, 10);
        let eval = PrivacyEvent::ZcdpGaussian { rho: 0.01 };
        let mut parts = tagged(DataPartition::Training, &[train, train]);
        parts.extend(tagged(DataPartition::Evaluation, &[eval, eval]));
        let mut one_part = ledger(&[train, train]);
        one_part.extend(ledger(&[eval, eval]));
        let eps = epsilons(vec![parts, one_part, ledger(&[train, train])], 1e-5)
            .await
            .unwrap();
        assert_eq!(
            eps[0], eps[2],
            "the training part decides; evaluation adds nothing"
        );
        assert!(
            eps[1] > eps[0],
            "sequential {} vs parallel {}",
            eps[1],
            eps[0]
        );
    }

    #[tokio::test]
    async fn remembered_epsilons_are_those_of_the_accountant_for_the_same_delta_only() {
        let l = ledger(&[round(0.07, 1.3, 12), round(0.07, 1.3, 12)]);
        let first = epsilons(vec![l.clone()], 1e-5).await.unwrap();
        let again = epsilons(vec![l.clone()], 1e-5).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(
            first[0],
            partitioned_epsilon(&l, 1e-5, AccountantKind::Pld).unwrap()
        );
        let other_delta = epsilons(vec![l.clone()], 1e-7).await.unwrap();
        assert_eq!(
            other_delta[0],
            partitioned_epsilon(&l, 1e-7, AccountantKind::Pld).unwrap()
        );
        assert!(other_delta[0] > first[0]);
    }

    #[test]
    fn rows_group_by_participant_in_charge_order() {
        let row = |participant_id, round_id, event| LedgerRow {
            study_id: 1,
            participant_id,
            round_id,
            events: vec![event],
            epsilon_after: 0.0,
            partition: DataPartition::Training,
        };
        let rows = vec![
            row(5, 1, round(0.1, 1.0, 3)),
            row(6, 1, round(0.1, 1.0, 4)),
            row(5, 2, round(0.2, 1.0, 3)),
        ];
        let by = ledgers_by_participant(rows);
        let training = |e| PartitionedEvent {
            partition: DataPartition::Training,
            event: e,
        };
        assert_eq!(
            by[&5],
            vec![training(round(0.1, 1.0, 3)), training(round(0.2, 1.0, 3))]
        );
        assert_eq!(by[&6], vec![training(round(0.1, 1.0, 4))]);
    }

    #[test]
    fn the_budget_rule_refuses_an_epsilon_nobody_can_vouch_for() {
        let budget = BudgetParams {
            epsilon: 1.0,
            delta: 1e-5,
        };
        assert!(within_budget(1.0, &budget));
        assert!(!within_budget(1.0 + 1e-12, &budget));
        assert!(!within_budget(f64::NAN, &budget));
        assert!(!within_budget(f64::INFINITY, &budget));
    }
}
