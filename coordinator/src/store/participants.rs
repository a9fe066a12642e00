//! Participants: enrolment (spending a one-time token, registering the identity key), credential lookup,
//! revocation (a revoked credential is refused by the lookup itself, in every process sharing the database) and the
//! operator disabling one (no longer selected; its credential still works).

use super::{Store, StoreError, StoreResult, map_unique, new_secret, now_ms, sha256_hex};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ParticipantRow {
    pub id: i64,
    pub study_id: i64,
    pub name: String,
    pub enrolled_at: i64,
    /// When the operator revoked this participant's credential; `None` while it is valid.
    pub revoked_at: Option<i64>,
    /// The Ed25519 identity public key registered at enrolment (32 bytes), if any.
    pub identity_key: Option<Vec<u8>>,
    /// When the operator disabled it (no longer selected for rounds).
    pub disabled_at: Option<i64>,
    /// When it last made an authenticated request, as last recorded ([`Store::touch_participant`]).
    pub last_seen_at: Option<i64>,
}

/// The columns of a [`ParticipantRow`].
const COLUMNS: &str =
    "id, study_id, name, enrolled_at, revoked_at, identity_key, disabled_at, last_seen_at";

impl Store {
    /// Spends an enrolment token and creates the participant with a new credential and its identity key (unique in
    /// the study), in one transaction.
    pub async fn enrol(
        &self,
        token: &str,
        name: &str,
        identity_key: Option<&[u8]>,
    ) -> StoreResult<(ParticipantRow, String)> {
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
                    if let Some(key) = identity_key {
                        let taken = sqlx::query("SELECT 1 AS one FROM participants WHERE study_id = $1 AND identity_key = $2")
                            .bind(study_id)
                            .bind(key)
                            .fetch_optional(&mut **tx)
                            .await?;
                        if taken.is_some() {
                            return Err(StoreError::Conflict(
                                "this identity key is already registered by another participant of the study; each \
                                 site needs its own (a fresh state directory makes one)"
                                    .into(),
                            ));
                        }
                    }
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO participants (study_id, name, credential_hash, enrolled_at, identity_key)
                         VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    )
                    .bind(study_id)
                    .bind(name)
                    .bind(credential_hash)
                    .bind(now)
                    .bind(identity_key)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| {
                        map_unique(e, &format!("a participant named {name:?} (or with this identity key) is already enrolled in this study"))
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
                identity_key: identity_key.map(<[u8]>::to_vec),
                disabled_at: None,
                last_seen_at: None,
            },
            credential,
        ))
    }

    pub async fn participant_for_credential(
        &self,
        credential: &str,
    ) -> StoreResult<Option<ParticipantRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM participants WHERE credential_hash = $1 AND revoked_at IS NULL"
        )))
        .bind(sha256_hex(credential.as_bytes()))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_participants(&self, study_id: i64) -> StoreResult<Vec<ParticipantRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM participants WHERE study_id = $1 ORDER BY id"
        )))
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that a participant was seen at `at` (never moves the time backwards). Callers throttle it: this is
    /// one write, not one per request.
    pub async fn touch_participant(&self, participant_id: i64, at: i64) -> StoreResult<()> {
        self.run_tx("touch_participant", |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE participants SET last_seen_at = $2
                     WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < $2)",
                )
                .bind(participant_id)
                .bind(at)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Revokes a participant's credential: every request with it is refused (401) from now on, in every process.
    /// Its ledger and past rounds stay; revoking twice keeps the first time.
    pub async fn revoke_participant(
        &self,
        study_id: i64,
        participant_id: i64,
    ) -> StoreResult<ParticipantRow> {
        self.set_participant_time("revoke_participant", "revoked_at", study_id, participant_id)
            .await
    }

    /// Disables a participant of a study: it is no longer selected for rounds (its ledger stays). Disabling twice
    /// keeps the first time. `NotFound` if the study has no such participant.
    pub async fn disable_participant(
        &self,
        study_id: i64,
        participant_id: i64,
    ) -> StoreResult<ParticipantRow> {
        self.set_participant_time(
            "disable_participant",
            "disabled_at",
            study_id,
            participant_id,
        )
        .await
    }

    /// Sets one of the participant's time columns (`revoked_at` or `disabled_at`, constants of this module) to now
    /// unless it is already set, and returns the row.
    async fn set_participant_time(
        &self,
        tx_name: &'static str,
        column: &'static str,
        study_id: i64,
        participant_id: i64,
    ) -> StoreResult<ParticipantRow> {
        let now = now_ms();
        self.run_tx(tx_name, |tx| {
            Box::pin(async move {
                sqlx::query_as::<_, ParticipantRow>(sqlx::AssertSqlSafe(format!(
                    "UPDATE participants SET {column} = COALESCE({column}, $3) WHERE id = $1 AND study_id = $2
                     RETURNING {COLUMNS}"
                )))
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
