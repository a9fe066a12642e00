//! Operator tokens and enrolment tokens (stored hashed; the secret is returned once).

use super::{Store, StoreError, StoreResult, map_unique, new_secret, now_ms, sha256_hex};

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
        Ok(
            sqlx::query_scalar("SELECT name FROM operator_tokens WHERE token_hash = $1")
                .bind(sha256_hex(token.as_bytes()))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Creates a one-time enrolment token for a study; returns the secret (stored hashed).
    pub async fn create_enrolment_token(
        &self,
        study_id: i64,
        label: &str,
        expires_at: i64,
    ) -> StoreResult<String> {
        let token = new_secret();
        let hash = sha256_hex(token.as_bytes());
        let hash = hash.as_str();
        self.run_tx("create_enrolment_token", |tx| {
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>("SELECT id FROM studies WHERE id = $1")
                    .bind(study_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or(StoreError::NotFound("study"))?;
                sqlx::query(
                    "INSERT INTO enrolment_tokens (study_id, label, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(study_id)
                .bind(label)
                .bind(hash)
                .bind(now_ms())
                .bind(expires_at)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(token)
    }
}
