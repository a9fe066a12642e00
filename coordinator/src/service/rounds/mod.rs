//! Rounds: starting one (selection under budgets, the round plan and secure-aggregation parameters), its status,
//! aborts. What a participant may send and read in each stage is in [`participation`]; the background task that
//! moves a round's secure-aggregation server through its stages is [`driver`], and the end of a completed round
//! (new model, charges) is [`publication`].

pub mod driver;
pub mod evaluation;
pub mod participation;
pub(crate) mod publication;
pub mod statistics;

pub use participation::{DECLINED_PREFIX, MAX_DECLINE_REASON};

use std::collections::BTreeSet;

use confide_common::api::{
    ExcludedParticipant, GraphParams, MemberSet, RoundInfo, RoundOutcome, RoundPurpose, RoundStage,
    StageSet, StartRoundRequest,
};
use confide_common::dp::{DataPartition, PrivacyEvent};
use confide_common::plan;
use confide_common::secagg::{
    self, QuantizationParams, SecAggServer, SecurityRequirements, ThreatModel,
};
use serde::{Deserialize, Serialize};

use super::Coordinator;
use super::privacy::{self, PrivacyError};
use super::studies::{self, Study, StudyError};
use super::wakeups::{SAFETY_NET, Topic};
use crate::store::{NewRound, RoundRow, StoreError, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The request breaks a rule of rounds; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// Too few participants can take part. `budget_bound`: enough would, were it not for their privacy budgets (so
    /// no later round of the study can have them either; an automatic run ends), rather than too few enrolled.
    #[error("{message}")]
    TooFew { message: String, budget_bound: bool },
    /// A protocol message that does not parse or does not fit the round.
    #[error("{0}")]
    Malformed(String),
    /// This participant may not do this in this round (not selected, not in the stage's set, another's id).
    #[error("{0}")]
    NotAllowed(String),
    /// The round is not in a state that allows it (finished, another stage, another secure-aggregation round).
    #[error("{0}")]
    Conflict(String),
    /// No such round, stage or broadcast for this participant.
    #[error("{0}")]
    NotFound(String),
    /// Stored data this version cannot read, or an encoding that should not fail did.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Study(#[from] StudyError),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RoundError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Everything fixed when a round starts, stored with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundPlan {
    /// Selected participants; a participant's secure-aggregation id is its index here.
    pub selected: Vec<i64>,
    pub excluded: Vec<ExcludedParticipant>,
    /// Privacy events charged to each participant whose input ends up in the aggregate.
    pub planned_events: Vec<PrivacyEvent>,
    pub secagg: secagg::SecAggParams,
    pub quantisation: QuantizationParams,
    /// Length of the vector each participant sends, before the weight coordinate: the model's parameters for a
    /// training round, 2·features + 1 sums for a statistics round.
    pub num_parameters: usize,
    /// What the round computes (plans stored before statistics rounds existed are training rounds).
    #[serde(default)]
    pub purpose: RoundPurpose,
    /// The part of each site's dataset the planned events use (plans stored before partitions existed used every
    /// record).
    #[serde(default = "all_records")]
    pub partition: DataPartition,
}

fn all_records() -> DataPartition {
    DataPartition::All
}

impl RoundPlan {
    pub fn parse(round: &RoundRow) -> Result<Self, RoundError> {
        serde_json::from_str(&round.plan_json).map_err(RoundError::internal)
    }

    /// The secure-aggregation id of a participant, if selected.
    pub fn index_of(&self, participant: i64) -> Option<u32> {
        self.selected
            .iter()
            .position(|p| *p == participant)
            .map(|i| i as u32)
    }

    pub fn participant_at(&self, index: u32) -> Option<i64> {
        self.selected.get(index as usize).copied()
    }

    /// The secure-aggregation id of a participant, or why it has none.
    pub fn index_of_selected(&self, participant: i64, round_id: i64) -> Result<u32, RoundError> {
        self.index_of(participant).ok_or_else(|| {
            RoundError::NotAllowed(format!(
                "participant {participant} was not selected for round {round_id}"
            ))
        })
    }
}

/// How long `stage` may take in this study.
pub fn deadline_secs(study: &Study, stage: RoundStage) -> u64 {
    let d = &study.config.deadlines;
    match stage {
        RoundStage::AdvertiseKeys => d.advertise_keys_secs,
        RoundStage::ShareKeys => d.share_keys_secs,
        RoundStage::ShareVerification => d.share_verification_secs,
        RoundStage::MaskedInputCollection => d.masked_input_secs,
        RoundStage::ConsistencyCheck => d.consistency_check_secs,
        RoundStage::Unmasking | RoundStage::Finished => d.unmasking_secs,
    }
}

/// The participants a start request names (all enrolled if none), each enrolled in the study, less those that
/// cannot take part whatever their budget: disabled by the operator, or (malicious model) without a registered
/// identity key. Returns (candidates, exclusions with the reason).
async fn candidates(
    ctx: &Coordinator,
    study: &Study,
    req: &StartRoundRequest,
) -> Result<(Vec<i64>, Vec<ExcludedParticipant>), RoundError> {
    let study_id = study.id;
    let enrolled = ctx.store.list_participants(study_id).await?;
    let named: BTreeSet<i64> = match &req.participants {
        // Revoked participants are never selected.
        None => enrolled
            .iter()
            .filter(|p| p.revoked_at.is_none())
            .map(|p| p.id)
            .collect(),
        Some(ids) => {
            for id in ids {
                match enrolled.iter().find(|p| p.id == *id) {
                    None => {
                        return Err(RoundError::Invalid(format!(
                            "participant {id} is not enrolled in study {study_id}"
                        )));
                    }
                    Some(p) if p.revoked_at.is_some() => {
                        return Err(RoundError::Invalid(format!(
                            "participant {id}'s credential was revoked; it cannot take part in rounds"
                        )));
                    }
                    Some(_) => {}
                }
            }
            ids.iter().copied().collect()
        }
    };
    let malicious = study.config.secagg.threat_model == ThreatModel::Malicious;
    let (mut candidates, mut excluded) = (Vec::new(), Vec::new());
    for p in enrolled.iter().filter(|p| named.contains(&p.id)) {
        let reason = if p.disabled_at.is_some() {
            Some("disabled by the operator")
        } else if malicious
            && p.identity_key
                .as_deref()
                .and_then(studies::identity_key)
                .is_none()
        {
            Some(
                "no identity key registered (malicious-model rounds need one; re-enrol with a current agent)",
            )
        } else {
            None
        };
        match reason {
            Some(r) => excluded.push(ExcludedParticipant {
                participant_id: p.id,
                reason: r.into(),
            }),
            None => candidates.push(p.id),
        }
    }
    Ok((candidates, excluded))
}

/// Malicious model: the selected participants' registered identity keys, by secure-aggregation id; empty for
/// semi-honest rounds.
async fn roster(
    ctx: &Coordinator,
    study: &Study,
    selected: &[i64],
) -> Result<secagg::Roster, RoundError> {
    if study.config.secagg.threat_model != ThreatModel::Malicious {
        return Ok(secagg::Roster::default());
    }
    let enrolled = ctx.store.list_participants(study.id).await?;
    let keys = selected
        .iter()
        .map(|id| {
            enrolled
                .iter()
                .find(|p| p.id == *id)
                .and_then(|p| p.identity_key.as_deref())
                .and_then(studies::identity_key)
                .ok_or_else(|| {
                    RoundError::internal(format!("participant {id} has no identity key"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    secagg::Roster::new(keys).map_err(|e| RoundError::Invalid(format!("identity keys: {e}")))
}

/// The secure-aggregation parameters for `n` participants under the study's threat model (graph, dropout,
/// corruption), with the study's threshold if it fixes one.
fn secagg_params(
    study: &Study,
    n: u32,
    values: usize,
    roster: secagg::Roster,
) -> Result<secagg::SecAggParams, RoundError> {
    let sa = &study.config.secagg;
    let malicious = sa.threat_model == ThreatModel::Malicious;
    let (dropout_rate, corrupt_fraction, sparse) = match sa.graph {
        GraphParams::Complete if malicious => (0.0, sa.corrupt_fraction, false),
        GraphParams::Complete => (0.0, 0.0, false),
        GraphParams::Sparse {
            expected_dropout,
            corrupt_fraction,
        } => (expected_dropout, corrupt_fraction, true),
    };
    let requirements = SecurityRequirements {
        participants: n,
        dropout_rate,
        corrupt_fraction,
        sparse,
        threat_model: sa.threat_model,
    };
    let vector_len = u32::try_from(values + 1)
        .map_err(|_| RoundError::Invalid("model too large for secure aggregation".into()))?;
    let secagg_round: u64 = rand::random::<u64>() >> 11; // < 2^53, exact in every JSON reader
    let mut params = secagg::SecAggParams::derive(
        secagg_round,
        &requirements,
        vector_len,
        sa.quantisation.bits,
        rand::random(),
        roster,
    )
    .map_err(|e| RoundError::Invalid(format!("secure-aggregation parameters: {e}")))?;
    if let Some(t) = sa.threshold {
        params.threshold = t;
        params
            .validate()
            .map_err(|e| RoundError::Invalid(format!("secagg.threshold {t}: {e}")))?;
    }
    Ok(params)
}

/// Starts a study's next round: selects the candidates within budget, fixes the plan and the secure-aggregation
/// parameters, creates the round with the server's initial state and starts its driver.
pub async fn start(
    ctx: &Coordinator,
    study_id: i64,
    req: &StartRoundRequest,
) -> Result<RoundInfo, RoundError> {
    start_guarded(ctx, study_id, req, None).await
}

/// [`start`], for a study's run: the round is created only while the run is running and the study's last round
/// is still numbered `run_guard` (see [`NewRound::run_guard`]).
pub async fn start_guarded(
    ctx: &Coordinator,
    study_id: i64,
    req: &StartRoundRequest,
    run_guard: Option<i64>,
) -> Result<RoundInfo, RoundError> {
    let study = studies::load(ctx, study_id).await?;
    let (candidates, unable) = candidates(ctx, &study, req).await?;
    let base = ctx.store.latest_model_version(study_id).await?;
    let kind = statistics::next_round(&study, &base, plan::planned_events(&study.config.dp))?;
    let kind = evaluation::next_round(ctx, &study, &base, kind).await?;
    let planned = kind.planned_events.clone();
    let (selected, mut excluded) = privacy::select_within_budget(
        &ctx.store,
        study_id,
        candidates,
        &privacy::tagged(kind.partition, &planned),
        &study.config.budget,
    )
    .await?;
    let over_budget = excluded.len();
    excluded.extend(unable);
    excluded.sort_by_key(|e| e.participant_id);
    let min = study.config.min_participants as usize;
    if selected.len() < min {
        let reasons: Vec<String> = excluded
            .iter()
            .map(|e| format!("participant {}: {}", e.participant_id, e.reason))
            .collect();
        return Err(RoundError::TooFew {
            message: format!(
                "round refused: {} participant(s) can take part, the study needs at least {min}{}{}",
                selected.len(),
                if reasons.is_empty() {
                    ""
                } else {
                    "; excluded: "
                },
                reasons.join("; ")
            ),
            budget_bound: selected.len() + over_budget >= min,
        });
    }
    let n = selected.len() as u32;
    let roster = roster(ctx, &study, &selected).await?;
    let params = secagg_params(&study, n, kind.values, roster)?;
    let needed = study.min_aggregate(params.threshold);
    if n < needed {
        return Err(RoundError::TooFew {
            message: format!(
                "round refused: {n} participant(s) can take part, a round must aggregate at least {needed} inputs \
                 (max of min_participants, the secure-aggregation threshold {} and 3)",
                params.threshold
            ),
            budget_bound: selected_total(n, over_budget) >= needed,
        });
    }
    let sa = &study.config.secagg;
    let quantisation = QuantizationParams::for_participants(
        kind.clip_range as f32,
        sa.quantisation.bits,
        n,
        sa.quantisation.max_weight,
    )
    .map_err(|e| RoundError::Invalid(format!("quantisation: {e}")))?;
    let server = SecAggServer::new(params.clone())
        .map_err(|e| RoundError::Invalid(format!("secure aggregation: {e}")))?;
    let plan = RoundPlan {
        selected: selected.clone(),
        excluded,
        planned_events: planned,
        secagg: params,
        quantisation,
        num_parameters: kind.values,
        purpose: kind.purpose,
        partition: kind.partition,
    };
    let new = NewRound {
        study_id,
        stage: RoundStage::AdvertiseKeys,
        base_version: base.version,
        plan_json: serde_json::to_string(&plan).map_err(RoundError::internal)?,
        selected,
        server_state: Some(server.encode()),
        stage_deadline: now_ms() + 1000 * deadline_secs(&study, RoundStage::AdvertiseKeys) as i64,
        max_rounds: i64::from(study.config.rounds),
        run_guard,
        purpose: kind.purpose,
    };
    let round = ctx.store.create_round(&new).await?;
    tracing::info!(
        round = round.id,
        study = study_id,
        participants = n,
        purpose = ?kind.purpose,
        "round started"
    );
    ctx.metrics
        .round_participants
        .with_label_values(&[study_id.to_string().as_str(), MemberSet::Selected.as_str()])
        .set(f64::from(n));
    driver::spawn(ctx.clone(), round.id);
    ctx.round_changed(round.id, &plan.selected).await;
    info(ctx, &round).await
}

/// Participants selected plus those only their budget kept out.
fn selected_total(selected: u32, over_budget: usize) -> u32 {
    selected.saturating_add(u32::try_from(over_budget).unwrap_or(u32::MAX))
}

/// Status of a round, with who is in each stage's set.
pub async fn info(ctx: &Coordinator, round: &RoundRow) -> Result<RoundInfo, RoundError> {
    let plan = RoundPlan::parse(round)?;
    let mut sets: Vec<StageSet> = Vec::new();
    for (set, participant) in ctx.store.round_members(round.id).await? {
        match sets.iter_mut().find(|s| s.stage == set) {
            Some(s) => s.participants.push(participant),
            None => sets.push(StageSet {
                stage: set,
                participants: vec![participant],
            }),
        }
    }
    let mut excluded = plan.excluded;
    excluded.extend(ctx.store.round_exclusions(round.id).await?.into_iter().map(
        |(participant_id, reason)| ExcludedParticipant {
            participant_id,
            reason,
        },
    ));
    excluded.extend(ctx.store.round_declines(round.id).await?.into_iter().map(
        |(participant_id, reason)| ExcludedParticipant {
            participant_id,
            reason: format!("{DECLINED_PREFIX}{reason}"),
        },
    ));
    // Who has answered the current stage: the senders of its stored messages (kept until the stage closes).
    let answered = match (round.outcome, round.stage) {
        (None, stage) if stage != RoundStage::Finished => {
            ctx.store.stage_message_senders(round.id, stage).await?
        }
        _ => Vec::new(),
    };
    Ok(RoundInfo {
        id: round.id,
        study_id: round.study_id,
        round_number: round.round_number,
        stage: round.stage,
        outcome: round.outcome,
        reason: round.reason.clone(),
        base_version: round.base_version,
        started_at_ms: round.started_at,
        finished_at_ms: round.finished_at,
        stage_deadline_ms: round.stage_deadline,
        sets,
        answered,
        excluded,
        purpose: plan.purpose,
    })
}

pub async fn get(ctx: &Coordinator, round_id: i64) -> Result<RoundInfo, RoundError> {
    info(ctx, &ctx.store.get_round(round_id).await?).await
}

/// A round's status once it has left stage `known` (or finished, which is all a `None` waits for), or after
/// `wait`, whichever comes first; at once on shutdown.
pub async fn wait_for_change(
    ctx: &Coordinator,
    round_id: i64,
    known: Option<RoundStage>,
    wait: std::time::Duration,
) -> Result<RoundInfo, RoundError> {
    let until = tokio::time::Instant::now() + wait;
    let topic = ctx.wakeups.topic(Topic::Round(round_id));
    loop {
        let changed = topic.notified();
        let round = ctx.store.get_round(round_id).await?;
        let moved = round.outcome.is_some() || known.is_some_and(|k| round.stage != k);
        let now = tokio::time::Instant::now();
        if moved || now >= until || ctx.shutdown.is_cancelled() {
            return info(ctx, &round).await;
        }
        // Woken by this round's changes in any coordinator process (see service::wakeups).
        tokio::select! {
            _ = tokio::time::timeout((until - now).min(SAFETY_NET), changed) => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    }
}

/// A study's rounds in order.
pub async fn list(ctx: &Coordinator, study_id: i64) -> Result<Vec<RoundInfo>, RoundError> {
    ctx.store.get_study(study_id).await?;
    let mut out = Vec::new();
    for r in ctx.store.list_rounds(study_id).await? {
        out.push(info(ctx, &r).await?);
    }
    Ok(out)
}

/// Aborts a round (nothing published, nothing charged). False if it had already finished.
pub async fn abort(ctx: &Coordinator, round: &RoundRow, reason: &str) -> Result<bool, RoundError> {
    abort_excluding(ctx, round, reason, &[]).await
}

/// Aborts a round as [`abort`] does, listing participants it excludes for what they did in it (with why) in the
/// round's exclusions, in the same transaction.
pub async fn abort_excluding(
    ctx: &Coordinator,
    round: &RoundRow,
    reason: &str,
    exclusions: &[(i64, String)],
) -> Result<bool, RoundError> {
    let done = ctx
        .store
        .abort_round_excluding(round.id, reason, exclusions)
        .await?;
    if done {
        tracing::warn!(
            round = round.id,
            study = round.study_id,
            reason,
            "round aborted"
        );
        ctx.metrics
            .rounds_finished(round.study_id, RoundOutcome::Aborted, 1);
        let selected = RoundPlan::parse(round)
            .map(|p| p.selected)
            .unwrap_or_default();
        ctx.round_ended(round.id, &selected).await;
    }
    Ok(done)
}

/// An operator aborts an unfinished round, saying why (1..=500 characters).
pub async fn abort_by_operator(
    ctx: &Coordinator,
    round_id: i64,
    reason: &str,
) -> Result<RoundInfo, RoundError> {
    if reason.trim().is_empty() || reason.len() > 500 {
        return Err(RoundError::Invalid(
            "reason must be 1..=500 characters".into(),
        ));
    }
    let round = ctx.store.get_round(round_id).await?;
    if !abort(ctx, &round, &format!("aborted by operator: {reason}")).await? {
        return Err(RoundError::Conflict(format!(
            "round {round_id} is already finished"
        )));
    }
    get(ctx, round_id).await
}
