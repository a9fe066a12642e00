//! Rounds as the API sees them: selection under budgets, the round plan, which participant may say what in which
//! stage, task and broadcast lookup, and aborts. The background driver that moves the secure-aggregation server
//! through its stages lives in [`crate::driver`].

use std::collections::BTreeSet;

use confide_common::api::{
    ExcludedParticipant, RoundInfo, RoundStage, RoundTask, StageSet, StartRoundRequest,
    TaskResponse,
};
use confide_common::dp::{PrivacyEvent, PrivacyLedger};
use confide_common::plan;
use confide_common::secagg::messages::{ControlMessage, MASKED_INPUT_HEADER_LEN};
use confide_common::secagg::{
    self, AdvertiseKeys, MaskedInput, QuantizationParams, SecAggServer, SecurityRequirements,
    ShareKeys, UnmaskingResponse,
};
use serde::{Deserialize, Serialize};

use crate::budget;
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::{MemberSet, NewRound, ParticipantRow, RoundRow, StoreError, now_ms};
use crate::study::Study;

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
    pub num_parameters: usize,
}

impl RoundPlan {
    pub fn parse(round: &RoundRow) -> Result<Self, ApiError> {
        serde_json::from_str(&round.plan_json).map_err(ApiError::internal)
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
}

pub fn deadline_secs(study: &Study, stage: RoundStage) -> u64 {
    let d = &study.config.deadlines;
    match stage {
        RoundStage::AdvertiseKeys => d.advertise_keys_secs,
        RoundStage::ShareKeys => d.share_keys_secs,
        RoundStage::MaskedInputCollection => d.masked_input_secs,
        RoundStage::Unmasking | RoundStage::Finished => d.unmasking_secs,
    }
}

fn parse_stage(round: &RoundRow) -> Result<RoundStage, ApiError> {
    RoundStage::parse(&round.stage).ok_or_else(|| {
        ApiError::internal(format!("round {} has stage {:?}", round.id, round.stage))
    })
}

/// Selects participants (budget permitting), fixes the plan and the secure-aggregation parameters, creates the
/// round with the server's initial state and starts its driver.
pub async fn start_round(
    state: &AppState,
    study_id: i64,
    req: &StartRoundRequest,
) -> Result<RoundRow, ApiError> {
    let study = Study::from_row(&state.store.get_study(study_id).await?)?;
    let enrolled = state.store.list_participants(study_id).await?;
    let candidates: BTreeSet<i64> = match &req.participants {
        None => enrolled.iter().map(|p| p.id).collect(),
        Some(ids) => {
            for id in ids {
                if !enrolled.iter().any(|p| p.id == *id) {
                    return Err(ApiError::Unprocessable(format!(
                        "participant {id} is not enrolled in study {study_id}"
                    )));
                }
            }
            ids.iter().copied().collect()
        }
    };
    let planned = plan::planned_events(&study.config.dp);
    let mut ledgers = budget::ledgers_by_participant(state.store.ledger(study_id).await?);
    let candidates: Vec<i64> = candidates.into_iter().collect();
    let with_round: Vec<PrivacyLedger> = candidates
        .iter()
        .map(|p| {
            let mut ledger = ledgers.remove(p).unwrap_or_default();
            ledger.events.extend_from_slice(&planned);
            ledger
        })
        .collect();
    let epsilons = budget::epsilons(with_round, study.config.budget.delta)
        .await
        .map_err(ApiError::Internal)?;
    let (mut selected, mut excluded) = (Vec::new(), Vec::new());
    for (p, eps) in candidates.into_iter().zip(epsilons) {
        if eps > study.config.budget.epsilon {
            excluded.push(ExcludedParticipant {
                participant_id: p,
                reason: format!(
                    "this round would bring its ε to {eps:.4}, over its budget {} (δ = {})",
                    study.config.budget.epsilon, study.config.budget.delta
                ),
            });
        } else {
            selected.push(p);
        }
    }
    let min = study.config.min_participants as usize;
    if selected.len() < min {
        let reasons: Vec<String> = excluded
            .iter()
            .map(|e| format!("participant {}: {}", e.participant_id, e.reason))
            .collect();
        return Err(ApiError::Unprocessable(format!(
            "round refused: {} participant(s) can take part, the study needs at least {min}{}{}",
            selected.len(),
            if reasons.is_empty() {
                ""
            } else {
                "; excluded: "
            },
            reasons.join("; ")
        )));
    }
    let n = selected.len() as u32;
    let sa = &study.config.secagg;
    let (dropout_rate, corrupt_fraction, sparse) = match sa.graph {
        confide_common::api::GraphParams::Complete => (0.0, 0.0, false),
        confide_common::api::GraphParams::Sparse {
            expected_dropout,
            corrupt_fraction,
        } => (expected_dropout, corrupt_fraction, true),
    };
    let requirements = SecurityRequirements {
        participants: n,
        dropout_rate,
        corrupt_fraction,
        sparse,
    };
    let vector_len = u32::try_from(study.num_parameters + 1)
        .map_err(|_| ApiError::Unprocessable("model too large for secure aggregation".into()))?;
    let secagg_round: u64 = rand::random::<u64>() >> 11; // < 2^53, exact in every JSON reader
    let mut params = secagg::SecAggParams::derive(
        secagg_round,
        &requirements,
        vector_len,
        sa.quantisation.bits,
        rand::random(),
    )
    .map_err(|e| ApiError::Unprocessable(format!("secure-aggregation parameters: {e}")))?;
    if let Some(t) = sa.threshold {
        params.threshold = t;
        params
            .validate()
            .map_err(|e| ApiError::Unprocessable(format!("secagg.threshold {t}: {e}")))?;
    }
    if n < study.min_aggregate(params.threshold) {
        return Err(ApiError::Unprocessable(format!(
            "round refused: {n} participant(s) can take part, a round must aggregate at least {} inputs \
             (max of min_participants, the secure-aggregation threshold {} and 3)",
            study.min_aggregate(params.threshold),
            params.threshold
        )));
    }
    let quantisation = QuantizationParams::for_participants(
        study.clip_range() as f32,
        sa.quantisation.bits,
        n,
        sa.quantisation.max_weight,
    )
    .map_err(|e| ApiError::Unprocessable(format!("quantisation: {e}")))?;
    let server = SecAggServer::new(params.clone())
        .map_err(|e| ApiError::Unprocessable(format!("secure aggregation: {e}")))?;
    let plan = RoundPlan {
        selected: selected.clone(),
        excluded,
        planned_events: planned,
        secagg: params,
        quantisation,
        num_parameters: study.num_parameters,
    };
    let base = state.store.latest_model_version(study_id).await?;
    let new = NewRound {
        study_id,
        stage: RoundStage::AdvertiseKeys,
        base_version: base.version,
        plan_json: serde_json::to_string(&plan).map_err(ApiError::internal)?,
        selected,
        server_state: Some(server.encode()),
        stage_deadline: now_ms() + 1000 * deadline_secs(&study, RoundStage::AdvertiseKeys) as i64,
        max_rounds: i64::from(study.config.rounds),
    };
    let round = state.store.create_round(&new).await?;
    tracing::info!(
        round = round.id,
        study = study_id,
        participants = n,
        "round started"
    );
    state
        .metrics
        .round_participants
        .with_label_values(&[study_id.to_string().as_str(), "selected"])
        .set(f64::from(n));
    crate::driver::spawn(state.clone(), round.id);
    state.changed.notify_waiters();
    Ok(round)
}

/// Status of a round, with who is in each stage's set.
pub async fn round_info(state: &AppState, round: &RoundRow) -> Result<RoundInfo, ApiError> {
    let plan = RoundPlan::parse(round)?;
    let members = state.store.round_members(round.id).await?;
    let mut sets: Vec<StageSet> = Vec::new();
    for (set, participant) in members {
        match sets.iter_mut().find(|s| s.stage == set.as_str()) {
            Some(set) => set.participants.push(participant),
            None => sets.push(StageSet {
                stage: set.as_str().to_string(),
                participants: vec![participant],
            }),
        }
    }
    let mut excluded = plan.excluded;
    excluded.extend(state.store.round_declines(round.id).await?.into_iter().map(
        |(participant_id, reason)| ExcludedParticipant {
            participant_id,
            reason: format!("{DECLINED_PREFIX}{reason}"),
        },
    ));
    Ok(RoundInfo {
        id: round.id,
        study_id: round.study_id,
        round_number: round.round_number,
        stage: parse_stage(round)?,
        outcome: round.outcome.clone(),
        reason: round.reason.clone(),
        base_version: round.base_version,
        started_at_ms: round.started_at,
        finished_at_ms: round.finished_at,
        stage_deadline_ms: round.stage_deadline,
        sets,
        excluded,
    })
}

/// Aborts a round (nothing published, nothing charged). False if it had already finished.
pub async fn abort(state: &AppState, round: &RoundRow, reason: &str) -> Result<bool, ApiError> {
    let done = state.store.abort_round(round.id, reason).await?;
    if done {
        tracing::warn!(
            round = round.id,
            study = round.study_id,
            reason,
            "round aborted"
        );
        state
            .metrics
            .rounds_total
            .with_label_values(&[round.study_id.to_string().as_str(), "aborted"])
            .inc();
        state.changed.notify_waiters();
    }
    Ok(done)
}

/// The participant's current task: the active round of its study if it is in the set of the current stage.
pub async fn task_for(state: &AppState, p: &ParticipantRow) -> Result<TaskResponse, ApiError> {
    // Stages only move forward, so this retries at most once per stage.
    let (round, stage, plan, index, submitted) = loop {
        let rounds = state.store.list_rounds(p.study_id).await?;
        let Some(round) = rounds.into_iter().find(|r| r.outcome.is_none()) else {
            return Ok(TaskResponse::Idle);
        };
        let stage = parse_stage(&round)?;
        let plan = RoundPlan::parse(&round)?;
        let Some(index) = plan.index_of(p.id) else {
            return Ok(TaskResponse::Idle);
        };
        let members = state.store.round_members(round.id).await?;
        let eligible = members
            .iter()
            .any(|(s, m)| *s == MemberSet::eligible_in(stage) && *m == p.id);
        if !eligible {
            return Ok(TaskResponse::Idle);
        }
        if stage == RoundStage::AdvertiseKeys
            && state
                .store
                .round_declines(round.id)
                .await?
                .iter()
                .any(|(d, _)| *d == p.id)
        {
            return Ok(TaskResponse::Idle); // it declined this round
        }
        // Read together with the round's stage: a stage that closed meanwhile has had its messages deleted, and
        // must not be reported as not yet answered.
        match state.store.sent_in_stage(round.id, stage, p.id).await? {
            Some(submitted) => break (round, stage, plan, index, submitted),
            None => continue,
        }
    };
    let study = Study::from_row(&state.store.get_study(p.study_id).await?)?;
    let model = state.store.list_model_versions(p.study_id).await?;
    let base = model
        .into_iter()
        .find(|m| m.version == round.base_version)
        .ok_or_else(|| ApiError::internal("base model version missing"))?;
    Ok(TaskResponse::Round(Box::new(RoundTask {
        round_id: round.id,
        study_id: round.study_id,
        round_number: round.round_number,
        stage,
        submitted,
        stage_deadline_ms: round.stage_deadline,
        model_version: base.version,
        model_sha256: base.sha256,
        dp: study.config.dp,
        local_training: study.config.local_training,
        secagg: study.config.secagg,
        planned_events: plan.planned_events,
        num_parameters: plan.num_parameters as i64,
        participant_index: index,
        protocol: plan.secagg,
        quantisation: plan.quantisation,
    })))
}

/// Prefix of a declined participant's reason in [`RoundInfo::excluded`].
pub const DECLINED_PREFIX: &str = "declined: ";
/// Longest reason a participant may give for declining.
pub const MAX_DECLINE_REASON: usize = 1000;

/// The participants a stage still waits for an answer from: the members of its eligible set, less those who
/// declined the round (a decline is their answer to AdvertiseKeys).
pub async fn awaited(
    state: &AppState,
    round_id: i64,
    stage: RoundStage,
) -> Result<Vec<i64>, crate::store::StoreError> {
    let declined: BTreeSet<i64> = state
        .store
        .round_declines(round_id)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    Ok(state
        .store
        .round_members(round_id)
        .await?
        .into_iter()
        .filter(|(s, p)| *s == MemberSet::eligible_in(stage) && !declined.contains(p))
        .map(|(_, p)| p)
        .collect())
}

/// A selected participant declines a round before advertising its keys (e.g. its local budget would be exceeded).
/// Stored, shown in the round status, and counted as its AdvertiseKeys answer.
pub async fn decline(
    state: &AppState,
    round: &RoundRow,
    p: &ParticipantRow,
    reason: &str,
) -> Result<(), ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_DECLINE_REASON {
        return Err(ApiError::Unprocessable(format!(
            "reason must be 1..={MAX_DECLINE_REASON} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "reason must not contain control characters".into(),
        ));
    }
    let plan = RoundPlan::parse(round)?;
    if plan.index_of(p.id).is_none() {
        return Err(ApiError::Forbidden(format!(
            "participant {} was not selected for round {}",
            p.id, round.id
        )));
    }
    state
        .store
        .decline_round(round.id, p.id, reason)
        .await
        .map_err(|e| match e {
            StoreError::Refused(m) => ApiError::Forbidden(m),
            other => other.into(),
        })?;
    tracing::info!(
        round = round.id,
        participant = p.id,
        "participant declined the round"
    );
    state.changed.notify_waiters();
    Ok(())
}

/// Largest body accepted for a stage's message: exactly header + vector for a masked input; generous JSON for
/// control messages (key shares grow with the number of neighbours).
pub fn message_limit(
    state: &AppState,
    round: &RoundRow,
    stage: RoundStage,
) -> Result<usize, ApiError> {
    let plan = RoundPlan::parse(round)?;
    Ok(match stage {
        RoundStage::MaskedInputCollection => {
            MASKED_INPUT_HEADER_LEN + 4 * plan.secagg.vector_len as usize
        }
        _ => state
            .limits
            .json_body_bytes
            .max(4096 + 1024 * plan.selected.len()),
    })
}

fn malformed(stage: RoundStage, e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("invalid {} message: {e}", stage.as_str()))
}

/// Validates a participant's message at the boundary (it parses, names this round and this sender, has the right
/// length) and stores it for the round's driver. Nothing is stored if any check fails.
pub async fn accept_message(
    state: &AppState,
    round: &RoundRow,
    p: &ParticipantRow,
    stage: RoundStage,
    body: &[u8],
) -> Result<(), ApiError> {
    let plan = RoundPlan::parse(round)?;
    let index = plan.index_of(p.id).ok_or_else(|| {
        ApiError::Forbidden(format!(
            "participant {} was not selected for round {}",
            p.id, round.id
        ))
    })?;
    let expected_round = plan.secagg.round_id;
    let (round_id, sender) = match stage {
        RoundStage::MaskedInputCollection => {
            let m = MaskedInput::decode(body).map_err(|e| malformed(stage, e))?;
            if m.values.len() != plan.secagg.vector_len as usize {
                return Err(ApiError::BadRequest(format!(
                    "masked input has {} elements, this study's rounds expect {}",
                    m.values.len(),
                    plan.secagg.vector_len
                )));
            }
            let bound = if plan.secagg.bits == 32 {
                u64::MAX
            } else {
                1u64 << plan.secagg.bits
            };
            if let Some(i) = m.values.iter().position(|v| u64::from(*v) >= bound) {
                return Err(ApiError::BadRequest(format!(
                    "masked input element {i} is not in Z_2^{}",
                    plan.secagg.bits
                )));
            }
            (m.round_id, m.sender)
        }
        _ => {
            let text =
                std::str::from_utf8(body).map_err(|_| malformed(stage, "body is not UTF-8"))?;
            match stage {
                RoundStage::AdvertiseKeys => {
                    let m = AdvertiseKeys::from_json(text).map_err(|e| malformed(stage, e))?;
                    (m.round_id, m.sender)
                }
                RoundStage::ShareKeys => {
                    let m = ShareKeys::from_json(text).map_err(|e| malformed(stage, e))?;
                    (m.round_id, m.sender)
                }
                _ => {
                    let m = UnmaskingResponse::from_json(text).map_err(|e| malformed(stage, e))?;
                    (m.round_id, m.sender)
                }
            }
        }
    };
    if round_id != expected_round {
        return Err(ApiError::Conflict(format!(
            "message names secure-aggregation round {round_id}, round {} is {expected_round}",
            round.id
        )));
    }
    if sender != index {
        return Err(ApiError::Forbidden(format!(
            "message claims sender {sender}, this participant is {index}"
        )));
    }
    state
        .store
        .record_message(round.id, stage, MemberSet::eligible_in(stage), p.id, body)
        .await
        .map_err(|e| match e {
            StoreError::Refused(m) => ApiError::Forbidden(m),
            other => other.into(),
        })?;
    state.changed.notify_waiters();
    Ok(())
}

/// The server's broadcast for `stage` addressed to this participant (JSON). 409 until the stage has begun.
pub async fn broadcast_for(
    state: &AppState,
    round: &RoundRow,
    p: &ParticipantRow,
    stage: RoundStage,
) -> Result<Vec<u8>, ApiError> {
    let plan = RoundPlan::parse(round)?;
    if plan.index_of(p.id).is_none() {
        return Err(ApiError::Forbidden(format!(
            "participant {} was not selected for round {}",
            p.id, round.id
        )));
    }
    if stage == RoundStage::AdvertiseKeys {
        return Err(ApiError::NotFound(
            "advertise_keys has no broadcast (the round parameters are in the task)".into(),
        ));
    }
    let bodies = state.store.broadcasts(round.id, stage, p.id).await?;
    match bodies.into_iter().last() {
        Some(body) => Ok(body),
        None => Err(ApiError::Conflict(format!(
            "no {} broadcast for this participant in round {} (the stage has not begun, or it is not in its set)",
            stage.as_str(),
            round.id
        ))),
    }
}

/// Re-reads ε spent and budgets of a study's participants into the gauges.
pub async fn refresh_privacy_gauges(state: &AppState, study_id: i64) {
    if let Err(e) = try_refresh_privacy_gauges(state, study_id).await {
        tracing::warn!(study = study_id, error = %e, "could not refresh privacy gauges");
    }
}

async fn try_refresh_privacy_gauges(state: &AppState, study_id: i64) -> Result<(), ApiError> {
    let report = privacy_of(state, study_id).await?;
    let sid = study_id.to_string();
    for p in report {
        let pid = p.participant.id.to_string();
        state
            .metrics
            .epsilon_spent
            .with_label_values(&[sid.as_str(), pid.as_str()])
            .set(p.epsilon_spent);
        state
            .metrics
            .epsilon_budget
            .with_label_values(&[sid.as_str(), pid.as_str()])
            .set(p.epsilon_budget);
    }
    Ok(())
}

/// One participant's privacy position in a study.
pub struct PrivacyOf {
    pub participant: ParticipantRow,
    pub epsilon_spent: f64,
    pub epsilon_budget: f64,
    pub rounds_charged: usize,
}

/// ε spent (PLD over the whole ledger, computed off the async runtime) and budget of every participant of a study.
pub async fn privacy_of(state: &AppState, study_id: i64) -> Result<Vec<PrivacyOf>, ApiError> {
    let study = Study::from_row(&state.store.get_study(study_id).await?)?;
    let rows = state.store.ledger(study_id).await?;
    let participants = state.store.list_participants(study_id).await?;
    let rounds: Vec<usize> = participants
        .iter()
        .map(|p| rows.iter().filter(|r| r.participant_id == p.id).count())
        .collect();
    let mut ledgers = budget::ledgers_by_participant(rows);
    let ledgers: Vec<PrivacyLedger> = participants
        .iter()
        .map(|p| ledgers.remove(&p.id).unwrap_or_default())
        .collect();
    let spent = budget::epsilons(ledgers, study.config.budget.delta)
        .await
        .map_err(ApiError::Internal)?;
    Ok(participants
        .into_iter()
        .zip(spent.into_iter().zip(rounds))
        .map(|(participant, (epsilon_spent, rounds_charged))| PrivacyOf {
            participant,
            epsilon_spent,
            epsilon_budget: study.config.budget.epsilon,
            rounds_charged,
        })
        .collect())
}

/// Loads the gauges and counters that describe stored state (called at start-up).
pub async fn reload_metrics(state: &AppState) -> Result<(), ApiError> {
    for study in state.store.list_studies().await? {
        state.metrics.init_study(study.id);
        refresh_privacy_gauges(state, study.id).await;
    }
    for (study, outcome, n) in state.store.round_outcome_counts().await? {
        state
            .metrics
            .rounds_total
            .with_label_values(&[study.to_string().as_str(), outcome.as_str()])
            .inc_by(n as u64);
    }
    Ok(())
}
