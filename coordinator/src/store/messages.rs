//! A round's traffic: participants' messages per stage, the server's broadcasts, and declines.

use confide_common::api::{MemberSet, RoundStage};

use super::{Store, StoreError, StoreResult, map_unique, now_ms};

impl Store {
    /// Stores a participant's message for the round's current stage. Refused if the round is finished or in another
    /// stage, or the participant is not in the round's `eligible` set; a second message is a conflict.
    pub async fn record_message(
        &self,
        round_id: i64,
        stage: RoundStage,
        eligible: MemberSet,
        participant: i64,
        body: &[u8],
    ) -> StoreResult<()> {
        let stage_name = stage.as_str();
        self.run_tx("record_message", |tx| {
            Box::pin(async move {
                let current = Self::unfinished_round_stage(tx, round_id).await?;
                if current != stage {
                    return Err(StoreError::Conflict(format!(
                        "round {round_id} is in stage {}, not {stage_name}",
                        current.as_str()
                    )));
                }
                if !self
                    .lock_round_member(tx, round_id, eligible, participant)
                    .await?
                {
                    return Err(StoreError::Refused(format!(
                        "participant {participant} is not in this stage's set of round {round_id}"
                    )));
                }
                let declined = sqlx::query(
                    "SELECT 1 AS one FROM round_declines WHERE round_id = $1 AND participant_id = $2",
                )
                .bind(round_id)
                .bind(participant)
                .fetch_optional(&mut **tx)
                .await?;
                if declined.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "participant {participant} declined round {round_id}"
                    )));
                }
                // Conditional on the stage still being current: a concurrent stage close makes this insert a no-op.
                let res = sqlx::query(
                    "INSERT INTO round_messages (round_id, stage, participant_id, body, received_at)
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM rounds WHERE id = $1 AND stage = $2 AND outcome IS NULL)",
                )
                .bind(round_id)
                .bind(stage_name)
                .bind(participant)
                .bind(body)
                .bind(now_ms())
                .execute(&mut **tx)
                .await
                .map_err(|e| map_unique(e, &format!("participant {participant} already sent its {stage_name} message")))?;
                if res.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "round {round_id} left stage {stage_name}"
                    )));
                }
                Ok(())
            })
        })
        .await
    }

    /// Records that a selected participant declines a round: allowed only while the round is in AdvertiseKeys and
    /// before this participant advertised keys, once. Refused (nothing written) otherwise.
    pub async fn decline_round(
        &self,
        round_id: i64,
        participant: i64,
        reason: &str,
    ) -> StoreResult<()> {
        self.run_tx("decline_round", |tx| {
            Box::pin(async move {
                let current = Self::unfinished_round_stage(tx, round_id).await?;
                // Same lock as `record_message` takes for an AdvertiseKeys message.
                if !self
                    .lock_round_member(tx, round_id, MemberSet::Selected, participant)
                    .await?
                {
                    return Err(StoreError::Refused(format!(
                        "participant {participant} was not selected for round {round_id}"
                    )));
                }
                if current != RoundStage::AdvertiseKeys {
                    return Err(StoreError::Conflict(format!(
                        "round {round_id} is in stage {}: a round can only be declined during advertise_keys",
                        current.as_str()
                    )));
                }
                let advertised = sqlx::query(
                    "SELECT 1 AS one FROM round_messages WHERE round_id = $1 AND stage = $3 AND participant_id = $2",
                )
                .bind(round_id)
                .bind(participant)
                .bind(RoundStage::AdvertiseKeys.as_str())
                .fetch_optional(&mut **tx)
                .await?;
                if advertised.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "participant {participant} already advertised its keys in round {round_id}"
                    )));
                }
                // Conditional on the stage still being AdvertiseKeys: a concurrent stage close makes this a no-op.
                let res = sqlx::query(
                    "INSERT INTO round_declines (round_id, participant_id, reason, declined_at)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM rounds WHERE id = $1 AND stage = $5 AND outcome IS NULL)",
                )
                .bind(round_id)
                .bind(participant)
                .bind(reason)
                .bind(now_ms())
                .bind(RoundStage::AdvertiseKeys.as_str())
                .execute(&mut **tx)
                .await
                .map_err(|e| map_unique(e, &format!("participant {participant} already declined round {round_id}")))?;
                if res.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "round {round_id} left stage advertise_keys"
                    )));
                }
                Ok(())
            })
        })
        .await
    }

    /// Participants who declined a round and why: (participant, reason), in participant order.
    pub async fn round_declines(&self, round_id: i64) -> StoreResult<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT participant_id, reason FROM round_declines WHERE round_id = $1 ORDER BY participant_id",
        )
        .bind(round_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Messages of a stage in arrival order: (participant, body).
    pub async fn stage_messages(
        &self,
        round_id: i64,
        stage: RoundStage,
    ) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        Ok(sqlx::query_as(
            "SELECT participant_id, body FROM round_messages WHERE round_id = $1 AND stage = $2 ORDER BY received_at, participant_id",
        )
        .bind(round_id)
        .bind(stage.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether `participant` has sent its message for `stage`, read in one statement with the round's stage: None if
    /// the round is no longer in `stage` (its messages may then be deleted already).
    pub async fn sent_in_stage(
        &self,
        round_id: i64,
        stage: RoundStage,
        participant: i64,
    ) -> StoreResult<Option<bool>> {
        let (current, n): (String, i64) = sqlx::query_as(
            "SELECT r.stage AS current,
                    CAST((SELECT COUNT(*) FROM round_messages m
                          WHERE m.round_id = r.id AND m.stage = $2 AND m.participant_id = $3) AS BIGINT) AS n
             FROM rounds r WHERE r.id = $1",
        )
        .bind(round_id)
        .bind(stage.as_str())
        .bind(participant)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("round"))?;
        Ok((current == stage.as_str()).then_some(n > 0))
    }

    /// Senders of a stage's stored messages in arrival order (without the bodies, which can be large).
    pub async fn stage_message_senders(
        &self,
        round_id: i64,
        stage: RoundStage,
    ) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT participant_id FROM round_messages WHERE round_id = $1 AND stage = $2 ORDER BY received_at, participant_id",
        )
        .bind(round_id)
        .bind(stage.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// One participant's stored message for a stage (None if it sent none or the stage's messages are gone).
    pub async fn stage_message(
        &self,
        round_id: i64,
        stage: RoundStage,
        participant: i64,
    ) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT body FROM round_messages WHERE round_id = $1 AND stage = $2 AND participant_id = $3",
        )
        .bind(round_id)
        .bind(stage.as_str())
        .bind(participant)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// What the server told `recipient` (or everyone) at the start of `stage`.
    pub async fn broadcasts(
        &self,
        round_id: i64,
        stage: RoundStage,
        recipient: i64,
    ) -> StoreResult<Vec<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT body FROM round_broadcasts WHERE round_id = $1 AND stage = $2 AND (recipient_id = 0 OR recipient_id = $3)
             ORDER BY recipient_id",
        )
        .bind(round_id)
        .bind(stage.as_str())
        .bind(recipient)
        .fetch_all(&self.pool)
        .await?)
    }
}
