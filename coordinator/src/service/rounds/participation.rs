//! What a participant may do in a round, checked at the boundary so that a refused request stores nothing: read
//! its task, post its message for the current stage (it parses, names this round and this sender, has the right
//! length), read the server's broadcast, decline the round before advertising keys.

use std::collections::BTreeSet;

use confide_common::api::{MemberSet, RoundStage, RoundTask, TaskResponse};
use confide_common::secagg::messages::{ControlMessage, MASKED_INPUT_HEADER_LEN};
use confide_common::secagg::{
    AdvertiseKeys, ConsistencySignature, MaskedInput, ShareKeys, ShareVerification, ThreatModel,
    UnmaskingResponse,
};

use super::{RoundError, RoundPlan};
use crate::service::Coordinator;
use crate::service::studies;
use crate::service::wakeups::Topic;
use crate::store::{ParticipantRow, RoundRow, StoreError};

/// Prefix of a declined participant's reason in `RoundInfo::excluded`.
pub const DECLINED_PREFIX: &str = "declined: ";
/// Longest reason a participant may give for declining.
pub const MAX_DECLINE_REASON: usize = 1000;

/// The store refuses a message or a decline from someone outside the stage's set: for this participant, that is a
/// rule of the round it may not break (rather than a request that cannot be processed).
fn not_allowed(e: StoreError) -> RoundError {
    match e {
        StoreError::Refused(m) => RoundError::NotAllowed(m),
        other => other.into(),
    }
}

/// A round of this participant's study (any other round is, for it, not found).
pub async fn round_of(
    ctx: &Coordinator,
    round_id: i64,
    p: &ParticipantRow,
) -> Result<RoundRow, RoundError> {
    let round = ctx.store.get_round(round_id).await?;
    if round.study_id != p.study_id {
        return Err(RoundError::NotFound("round not found".into()));
    }
    Ok(round)
}

/// The participant's current task: the active round of its study if it is in the set of the current stage.
pub async fn task_for(ctx: &Coordinator, p: &ParticipantRow) -> Result<TaskResponse, RoundError> {
    // Stages only move forward, so this retries at most once per stage.
    let (round, stage, plan, index, submitted) = loop {
        let rounds = ctx.store.list_rounds(p.study_id).await?;
        let Some(round) = rounds.into_iter().find(|r| r.outcome.is_none()) else {
            return Ok(TaskResponse::Idle);
        };
        let stage = round.stage;
        let plan = RoundPlan::parse(&round)?;
        let Some(index) = plan.index_of(p.id) else {
            return Ok(TaskResponse::Idle);
        };
        let eligible = ctx
            .store
            .round_members(round.id)
            .await?
            .iter()
            .any(|(set, m)| {
                *set == MemberSet::eligible_in(stage, plan.secagg.threat_model) && *m == p.id
            });
        if !eligible {
            return Ok(TaskResponse::Idle);
        }
        if stage == RoundStage::AdvertiseKeys
            && ctx
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
        match ctx.store.sent_in_stage(round.id, stage, p.id).await? {
            Some(submitted) => break (round, stage, plan, index, submitted),
            None => continue,
        }
    };
    let study = studies::load(ctx, p.study_id).await?;
    let base = ctx
        .store
        .list_model_versions(p.study_id)
        .await?
        .into_iter()
        .find(|m| m.version == round.base_version)
        .ok_or_else(|| RoundError::internal("base model version missing"))?;
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
        participant_ids: plan.selected,
        protocol: plan.secagg,
        quantisation: plan.quantisation,
        preprocessing: study.config.preprocessing,
        evaluation: study.config.evaluation,
        purpose: plan.purpose,
        statistics: studies::parse_statistics(base.statistics_json.as_deref())?,
    })))
}

/// The participants a stage still waits for an answer from: the members of its eligible set, less those who
/// declined the round (a decline is their answer to AdvertiseKeys).
pub async fn awaited(
    ctx: &Coordinator,
    round_id: i64,
    stage: RoundStage,
    threat_model: ThreatModel,
) -> Result<Vec<i64>, StoreError> {
    let declined: BTreeSet<i64> = ctx
        .store
        .round_declines(round_id)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    Ok(ctx
        .store
        .round_members(round_id)
        .await?
        .into_iter()
        .filter(|(set, p)| {
            *set == MemberSet::eligible_in(stage, threat_model) && !declined.contains(p)
        })
        .map(|(_, p)| p)
        .collect())
}

/// A selected participant declines a round before advertising its keys (e.g. its local budget would be exceeded).
/// Stored, shown in the round status, and counted as its AdvertiseKeys answer.
pub async fn decline(
    ctx: &Coordinator,
    round: &RoundRow,
    p: &ParticipantRow,
    reason: &str,
) -> Result<(), RoundError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_DECLINE_REASON {
        return Err(RoundError::Invalid(format!(
            "reason must be 1..={MAX_DECLINE_REASON} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(RoundError::Invalid(
            "reason must not contain control characters".into(),
        ));
    }
    RoundPlan::parse(round)?.index_of_selected(p.id, round.id)?;
    ctx.store
        .decline_round(round.id, p.id, reason)
        .await
        .map_err(not_allowed)?;
    tracing::info!(
        round = round.id,
        participant = p.id,
        "participant declined the round"
    );
    ctx.changed(vec![Topic::Round(round.id)]).await;
    Ok(())
}

/// Largest body accepted for a stage's message: exactly header + vector for a masked input; generous JSON for
/// control messages (key shares grow with the number of neighbours).
pub fn message_limit(
    ctx: &Coordinator,
    round: &RoundRow,
    stage: RoundStage,
) -> Result<usize, RoundError> {
    let plan = RoundPlan::parse(round)?;
    Ok(match stage {
        RoundStage::MaskedInputCollection => {
            MASKED_INPUT_HEADER_LEN + 4 * plan.secagg.vector_len as usize
        }
        _ => ctx
            .limits
            .json_body_bytes
            .max(4096 + 1024 * plan.selected.len()),
    })
}

/// The name of a threat model in messages (as in a study's `secagg.threat_model`).
pub fn threat_model_name(t: ThreatModel) -> &'static str {
    match t {
        ThreatModel::SemiHonest => "semi_honest",
        ThreatModel::Malicious => "malicious",
    }
}

fn malformed(stage: RoundStage, e: impl std::fmt::Display) -> RoundError {
    RoundError::Malformed(format!("invalid {} message: {e}", stage.as_str()))
}

/// The (secure-aggregation round, sender) a message names, once it parses and (a masked input) fits the round.
fn parse_message(
    plan: &RoundPlan,
    stage: RoundStage,
    body: &[u8],
) -> Result<(u64, u32), RoundError> {
    if stage == RoundStage::MaskedInputCollection {
        let m = MaskedInput::decode(body).map_err(|e| malformed(stage, e))?;
        let (len, bits) = (plan.secagg.vector_len, plan.secagg.bits);
        if m.values.len() != len as usize {
            return Err(RoundError::Malformed(format!(
                "masked input has {} elements, this study's rounds expect {len}",
                m.values.len()
            )));
        }
        // The same rule as the secure-aggregation server's (which has no public check to call): every element in
        // Z_2^bits.
        if bits < 32
            && let Some(i) = m.values.iter().position(|v| v >> bits != 0)
        {
            return Err(RoundError::Malformed(format!(
                "masked input element {i} is not in Z_2^{bits}"
            )));
        }
        return Ok((m.round_id, m.sender));
    }
    let text = std::str::from_utf8(body).map_err(|_| malformed(stage, "body is not UTF-8"))?;
    if !stage.in_model(plan.secagg.threat_model) {
        return Err(RoundError::NotFound(format!(
            "a {} round has no stage {}",
            threat_model_name(plan.secagg.threat_model),
            stage.as_str()
        )));
    }
    let parsed = match stage {
        RoundStage::AdvertiseKeys => AdvertiseKeys::from_json(text).map(|m| (m.round_id, m.sender)),
        RoundStage::ShareKeys => ShareKeys::from_json(text).map(|m| (m.round_id, m.sender)),
        RoundStage::ShareVerification => {
            ShareVerification::from_json(text).map(|m| (m.round_id, m.sender))
        }
        RoundStage::ConsistencyCheck => {
            ConsistencySignature::from_json(text).map(|m| (m.round_id, m.sender))
        }
        RoundStage::Unmasking | RoundStage::MaskedInputCollection | RoundStage::Finished => {
            UnmaskingResponse::from_json(text).map(|m| (m.round_id, m.sender))
        }
    };
    parsed.map_err(|e| malformed(stage, e))
}

/// Validates a participant's message at the boundary (it parses, names this round and this sender, has the right
/// length) and stores it for the round's driver. Nothing is stored if any check fails.
pub async fn accept_message(
    ctx: &Coordinator,
    round: &RoundRow,
    p: &ParticipantRow,
    stage: RoundStage,
    body: &[u8],
) -> Result<(), RoundError> {
    let plan = RoundPlan::parse(round)?;
    let index = plan.index_of_selected(p.id, round.id)?;
    let expected_round = plan.secagg.round_id;
    let (round_id, sender) = parse_message(&plan, stage, body)?;
    if round_id != expected_round {
        return Err(RoundError::Conflict(format!(
            "message names secure-aggregation round {round_id}, round {} is {expected_round}",
            round.id
        )));
    }
    if sender != index {
        return Err(RoundError::NotAllowed(format!(
            "message claims sender {sender}, this participant is {index}"
        )));
    }
    ctx.store
        .record_message(
            round.id,
            stage,
            MemberSet::eligible_in(stage, plan.secagg.threat_model),
            p.id,
            body,
        )
        .await
        .map_err(not_allowed)?;
    ctx.changed(vec![Topic::Round(round.id)]).await;
    Ok(())
}

/// The server's broadcast for `stage` addressed to this participant (JSON); a conflict until the stage has begun.
pub async fn broadcast_for(
    ctx: &Coordinator,
    round: &RoundRow,
    p: &ParticipantRow,
    stage: RoundStage,
) -> Result<Vec<u8>, RoundError> {
    RoundPlan::parse(round)?.index_of_selected(p.id, round.id)?;
    if stage == RoundStage::AdvertiseKeys {
        return Err(RoundError::NotFound(
            "advertise_keys has no broadcast (the round parameters are in the task)".into(),
        ));
    }
    let bodies = ctx.store.broadcasts(round.id, stage, p.id).await?;
    bodies.into_iter().last().ok_or_else(|| {
        RoundError::Conflict(format!(
            "no {} broadcast for this participant in round {} (the stage has not begun, or it is not in its set)",
            stage.as_str(),
            round.id
        ))
    })
}
