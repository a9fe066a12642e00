//! Participants: enrolment (spending a one-time token), credential lookup and revocation (a revoked credential is
//! refused by the lookup itself, in every process sharing the database).

use super::{Store, StoreError, StoreResult, map_unique, new_secret, now_ms, sha256_hex};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ParticipantRow {
    pub id: i64,
    pub study_id: i64,
    pub name: String,
    pub enrolled_at: i64,
    /// When the operator revoked this participant's credential; `None` while it is valid.
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Spends an enrolment token and creates the participant with a new credential, in one transaction.
    pub async fn enrol(&self, token: &str, name: &str) -> StoreResult<(ParticipantRow, String)> {
        let now = now_ms();
        let credential = new_secret();
        let (token_hash, credential_hash) = (
            sha256_hex(token.as_bytes()),
            sha256_hex(credential.as_bytes()),
        );
        let (token_hash, credential_hash) = (token_hash.as_str(), credential_hash.as_str());
        let (id, study_id) = self
            .run_tx("enrol", |tx| {
                Box::pin(async move {
                    let (token_id, study_id): (i64, i64) = sqlx::query_as(
                        "UPDATE enrolment_tokens SET used_at = $2
                         WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
                         RETURNING id, study_id",
                    )
                    .bind(token_hash)
                    .bind(now)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Refused("enrolment token is unknown, expired or already used (or was revoked)".into())
                    })?;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO participants (study_id, name, credential_hash, enrolled_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    )
                    .bind(study_id)
                    .bind(name)
                    .bind(credential_hash)
                    .bind(now)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| {
                        map_unique(e, &format!("a participant named {name:?} is already enrolled in this study"))
                    })?;
                    sqlx::query("UPDATE enrolment_tokens SET participant_id = $1 WHERE id = $2")
                        .bind(id)
                        .bind(token_id)
                        .execute(&mut **tx)
                        .await?;
                    Ok((id, study_id))
                })
            })
            .await?;
        Ok((
            ParticipantRow {
                id,
                study_id,
                name: name.to_string(),
                enrolled_at: now,
                revoked_at: None,
            },
            credential,
        ))
    }

    pub async fn participant_for_credential(
        &self,
        credential: &str,
    ) -> StoreResult<Option<ParticipantRow>> {
        Ok(sqlx::query_as(
            "SELECT id, study_id, name, enrolled_at, revoked_at FROM participants
             WHERE credential_hash = $1 AND revoked_at IS NULL",
        )
        .bind(sha256_hex(credential.as_bytes()))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_participants(&self, study_id: i64) -> StoreResult<Vec<ParticipantRow>> {
        Ok(sqlx::query_as(
            "SELECT id, study_id, name, enrolled_at, revoked_at FROM participants WHERE study_id = $1 ORDER BY id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a participant's credential: every request with it is refused (401) from now on, in every process.
    /// Its ledger and past rounds stay; revoking twice keeps the first time.
    pub async fn revoke_participant(
        &self,
        study_id: i64,
        participant_id: i64,
    ) -> StoreResult<ParticipantRow> {
        let now = now_ms();
        self.run_tx("revoke_participant", |tx| {
            Box::pin(async move {
                sqlx::query_as::<_, ParticipantRow>(
                    "UPDATE participants SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 AND study_id = $2
                     RETURNING id, study_id, name, enrolled_at, revoked_at",
                )
                .bind(participant_id)
                .bind(study_id)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or(StoreError::NotFound("participant"))
            })
        })
        .await
    }
}
