//! The end of a round whose secure aggregation completed: the aggregate is dequantised and applied by the server
//! optimiser to the base model, which is then published with the privacy charges of exactly the participants in
//! the aggregate ([`privacy::publish_with_charges`]) — or the round is aborted with the reason, publishing and
//! charging nothing.

use confide_common::api::{RoundOutcome, RoundPurpose, RoundStage};
use confide_common::model::{decode_safetensors, encode_safetensors};

use super::{RoundError, RoundPlan};
use crate::service::privacy::{self, PrivacyError};
use crate::service::studies::Study;
use crate::service::{Coordinator, optimizer};
use crate::store::{Publication, RoundRow, StoreError};

/// A round whose secure aggregation completed, to be published.
pub(super) struct Completed<'a> {
    pub round: &'a RoundRow,
    pub study: &'a Study,
    pub plan: &'a RoundPlan,
    /// The stage that just closed: the round is published only if it is still in it.
    pub stage: RoundStage,
    /// Who completed that stage.
    pub completed: Vec<i64>,
    /// Exactly the participants whose masked input is in the aggregate (U3): they, and only they, are charged.
    pub in_aggregate: Vec<i64>,
    /// The aggregate, mod 2^bits.
    pub sum: &'a [u32],
}

/// The new model's safetensors and server optimiser state, or why there is none.
async fn next_model(
    ctx: &Coordinator,
    c: &Completed<'_>,
) -> Result<Result<(Vec<u8>, Option<Vec<u8>>), String>, RoundError> {
    let (round, study) = (c.round, c.study);
    let dequantised = match c.plan.quantisation.dequantize(c.sum) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("dequantisation failed: {e}"))),
    };
    // Every input carries weight 1 in its last coordinate, so the weights sum to the number of inputs. Anything
    // else means some participant put another weight there — scaling its own update up to drown the others', or
    // down to stall the study — and the aggregate is refused rather than published with an unknowable mix.
    let inputs = c.in_aggregate.len() as u64;
    if dequantised.total_weight != inputs {
        return Ok(Err(format!(
            "the aggregate's weight coordinate is {}, but {inputs} inputs were aggregated (each must carry weight \
             1): some participant sent a bad weight; nothing published or charged",
            dequantised.total_weight
        )));
    }
    let (base, _) = ctx
        .store
        .model_weights(round.study_id, round.base_version)
        .await?;
    let mut weights = match decode_safetensors(&study.spec, &base) {
        Ok(w) => w,
        Err(e) => return Ok(Err(format!("base model unreadable: {e}"))),
    };
    let opt_state = ctx
        .store
        .optimizer_state(round.study_id, round.base_version)
        .await?;
    let new_state = match optimizer::apply(
        &study.config.server_optimizer,
        &mut weights,
        &dequantised.values,
        dequantised.total_weight,
        opt_state.as_deref(),
    ) {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("server optimiser: {e}"))),
    };
    Ok(encode_safetensors(&study.spec, &weights)
        .map(|bytes| (bytes, new_state))
        .map_err(|e| format!("encoding the new model: {e}")))
}

/// Publishes the round's new model and charges, or aborts it with the reason.
pub(super) async fn publish(ctx: &Coordinator, c: Completed<'_>) -> Result<(), RoundError> {
    let (round, study) = (c.round, c.study);
    let abort = |reason: String| async move { super::abort(ctx, round, &reason).await.map(|_| ()) };
    // The minimum-aggregate rule: fewer inputs would let the few who contributed read each other's updates.
    let needed = study.min_aggregate(c.plan.secagg.threshold) as usize;
    if c.in_aggregate.len() < needed {
        return abort(format!(
            "only {} input(s) reached the aggregate, a round publishes only with at least {needed} \
             (max of min_participants, the secure-aggregation threshold and 3); nothing published or charged",
            c.in_aggregate.len()
        ))
        .await;
    }
    let next = match c.plan.purpose {
        RoundPurpose::Training => next_model(ctx, &c)
            .await?
            .map(|(weights, state)| (weights, state, None, None)),
        RoundPurpose::Statistics => super::statistics::published(ctx, &c)
            .await?
            .map(|(weights, state, json)| (weights, state, Some(json), None)),
        // No new weights: the noisy metrics of the base version are stored instead.
        RoundPurpose::Evaluation => super::evaluation::measured(ctx, &c)
            .await?
            .map(|e| (Vec::new(), None, None, Some(e))),
    };
    let (weights, optimizer_state, statistics_json, evaluation) = match next {
        Ok(version) => version,
        Err(reason) => return abort(reason).await,
    };
    let publication = Publication {
        round_id: round.id,
        from_stage: c.stage,
        weights,
        optimizer_state,
        completed: c.completed,
        charges: Vec::new(),
        statistics_json,
        evaluation,
    };
    let published = privacy::publish_with_charges(
        &ctx.store,
        publication,
        round.study_id,
        &c.in_aggregate,
        &privacy::tagged(c.plan.partition, &c.plan.planned_events),
        &study.config.budget,
    )
    .await;
    match published {
        Ok(version) => {
            tracing::info!(
                round = round.id,
                study = round.study_id,
                version,
                participants = c.in_aggregate.len(),
                purpose = ?c.plan.purpose,
                "round completed"
            );
            ctx.metrics
                .rounds_finished(round.study_id, RoundOutcome::Completed, 1);
            privacy::refresh_gauges(ctx, round.study_id, &study.config.budget).await;
            if c.plan.purpose == RoundPurpose::Evaluation {
                refresh_model_gauges(ctx, round.study_id).await;
            }
            ctx.round_ended(round.id, &c.plan.selected).await;
            Ok(())
        }
        Err(PrivacyError::OverBudget(reason) | PrivacyError::Unaccountable(reason)) => {
            abort(format!("budget check at publication: {reason}")).await
        }
        // Finished meanwhile (e.g. aborted by an operator).
        Err(PrivacyError::Store(StoreError::Conflict(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets the study's model accuracy and loss gauges to its latest evaluation (a failure is logged: gauges are a
/// view).
pub(crate) async fn refresh_model_gauges(ctx: &Coordinator, study_id: i64) {
    match ctx.store.study_evaluations(study_id).await {
        Ok(rows) => {
            if let Some(latest) = rows.last() {
                let shown = super::evaluation::model_evaluation(latest);
                super::evaluation::set_gauges(ctx, study_id, &shown);
            }
        }
        Err(e) => {
            tracing::warn!(study = study_id, error = %e, "could not refresh the model gauges")
        }
    }
}
