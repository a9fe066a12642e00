//! Participants: enrolment (spending a one-time token) and credential lookup.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, map_unique, new_secret, now_ms, sha256_hex};

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantRow {
    pub id: i64,
    pub study_id: i64,
    pub name: String,
    pub enrolled_at: i64,
}

impl Store {
    /// Spends an enrolment token and creates the participant with a new credential, in one transaction.
    pub async fn enrol(&self, token: &str, name: &str) -> StoreResult<(ParticipantRow, String)> {
        let now = now_ms();
        let credential = new_secret();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE enrolment_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING id, study_id",
        )
        .bind(sha256_hex(token.as_bytes()))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Refused("enrolment token is unknown, expired or already used".into()))?;
        let token_id: i64 = row.try_get("id")?;
        let study_id: i64 = row.try_get("study_id")?;
        let row = sqlx::query(
            "INSERT INTO participants (study_id, name, credential_hash, enrolled_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(study_id)
        .bind(name)
        .bind(sha256_hex(credential.as_bytes()))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_unique(e, &format!("a participant named {name:?} is already enrolled in this study")))?;
        let id: i64 = row.try_get("id")?;
        sqlx::query("UPDATE enrolment_tokens SET participant_id = $1 WHERE id = $2")
            .bind(id)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            ParticipantRow {
                id,
                study_id,
                name: name.to_string(),
                enrolled_at: now,
            },
            credential,
        ))
    }

    fn participant_from_row(r: &AnyRow) -> StoreResult<ParticipantRow> {
        Ok(ParticipantRow {
            id: r.try_get("id")?,
            study_id: r.try_get("study_id")?,
            name: r.try_get("name")?,
            enrolled_at: r.try_get("enrolled_at")?,
        })
    }

    pub async fn participant_for_credential(
        &self,
        credential: &str,
    ) -> StoreResult<Option<ParticipantRow>> {
        let row = sqlx::query(
            "SELECT id, study_id, name, enrolled_at FROM participants WHERE credential_hash = $1",
        )
        .bind(sha256_hex(credential.as_bytes()))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::participant_from_row).transpose()
    }

    pub async fn list_participants(&self, study_id: i64) -> StoreResult<Vec<ParticipantRow>> {
        let rows = sqlx::query("SELECT id, study_id, name, enrolled_at FROM participants WHERE study_id = $1 ORDER BY id")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::participant_from_row).collect()
    }
}
