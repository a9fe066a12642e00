//! Operator tokens and enrolment tokens (stored hashed; the secret is returned once), and their revocation: a
//! revoked secret is refused by the lookup itself (a column of its row), so every process sharing the database
//! refuses it from the moment the revocation commits.

use super::{Store, StoreError, StoreResult, map_unique, new_secret, now_ms, sha256_hex};

/// An operator token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OperatorTokenRow {
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// An enrolment token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EnrolmentTokenRow {
    pub id: i64,
    pub study_id: i64,
    pub label: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub participant_id: Option<i64>,
    pub revoked_at: Option<i64>,
}

const ENROLMENT_TOKEN_COLUMNS: &str =
    "id, study_id, label, created_at, expires_at, used_at, participant_id, revoked_at";

impl Store {
    /// Creates an operator token; returns the secret, which is stored only hashed.
    pub async fn create_operator_token(&self, name: &str) -> StoreResult<String> {
        let token = new_secret();
        let hash = sha256_hex(token.as_bytes());
        let hash = hash.as_str();
        self.run_tx("create_operator_token", |tx| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO operator_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)",
                )
                .bind(name)
                .bind(hash)
                .bind(now_ms())
                .execute(&mut **tx)
                .await
                .map_err(|e| {
                    map_unique(e, &format!("an operator token named {name:?} already exists"))
                })?;
                Ok(())
            })
        })
        .await?;
        Ok(token)
    }

    /// The operator's name if the token is valid.
    pub async fn operator_for_token(&self, token: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM operator_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(sha256_hex(token.as_bytes()))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every operator token, oldest first.
    pub async fn list_operator_tokens(&self) -> StoreResult<Vec<OperatorTokenRow>> {
        Ok(
            sqlx::query_as("SELECT name, created_at, revoked_at FROM operator_tokens ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Revokes the operator token named `name` (again: no change, the first revocation time stays).
    pub async fn revoke_operator_token(&self, name: &str) -> StoreResult<()> {
        let now = now_ms();
        self.run_tx("revoke_operator_token", |tx| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE operator_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1",
                )
                .bind(name)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound("operator token"));
                }
                Ok(())
            })
        })
        .await
    }

    /// A study's enrolment tokens, oldest first.
    pub async fn list_enrolment_tokens(
        &self,
        study_id: i64,
    ) -> StoreResult<Vec<EnrolmentTokenRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENROLMENT_TOKEN_COLUMNS} FROM enrolment_tokens WHERE study_id = $1 ORDER BY id"
        )))
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes an unused enrolment token of `study_id`: enrolment with it is refused from now on. A token already
    /// spent is refused (revoke the participant it enrolled instead); revoking twice changes nothing.
    pub async fn revoke_enrolment_token(
        &self,
        study_id: i64,
        token_id: i64,
    ) -> StoreResult<EnrolmentTokenRow> {
        let now = now_ms();
        self.run_tx("revoke_enrolment_token", |tx| {
            Box::pin(async move {
                let row: EnrolmentTokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {ENROLMENT_TOKEN_COLUMNS} FROM enrolment_tokens WHERE id = $1 AND study_id = $2"
                )))
                .bind(token_id)
                .bind(study_id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or(StoreError::NotFound("enrolment token"))?;
                if row.revoked_at.is_some() {
                    return Ok(row);
                }
                // Conditional on still being unused, so a concurrent enrolment and this revocation cannot both win.
                let row: Option<EnrolmentTokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE enrolment_tokens SET revoked_at = $3 WHERE id = $1 AND study_id = $2 AND used_at IS NULL
                     RETURNING {ENROLMENT_TOKEN_COLUMNS}"
                )))
                .bind(token_id)
                .bind(study_id)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
                row.ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "enrolment token {token_id} was already used; revoke the participant it enrolled instead"
                    ))
                })
            })
        })
        .await
    }

    /// Creates a one-time enrolment token for a study; returns its id and the secret (stored hashed).
    pub async fn create_enrolment_token(
        &self,
        study_id: i64,
        label: &str,
        expires_at: i64,
    ) -> StoreResult<(i64, String)> {
        let token = new_secret();
        let hash = sha256_hex(token.as_bytes());
        let hash = hash.as_str();
        let id = self.run_tx("create_enrolment_token", |tx| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT id FROM studies WHERE id = $1")
                    .bind(study_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound("study"))?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO enrolment_tokens (study_id, label, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
                     RETURNING id",
                )
                .bind(study_id)
                .bind(label)
                .bind(hash)
                .bind(now_ms())
                .bind(expires_at)
                .fetch_one(&mut **tx)
                .await?;
                Ok(id)
            })
        })
        .await?;
        Ok((id, token))
    }
}
