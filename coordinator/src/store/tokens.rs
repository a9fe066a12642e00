//! Operator tokens and enrolment tokens (stored hashed; the secret is returned once).

use super::{Store, StoreResult, map_unique, new_secret, now_ms, sha256_hex};

impl Store {
    /// Creates an operator token; returns the secret, which is stored only hashed.
    pub async fn create_operator_token(&self, name: &str) -> StoreResult<String> {
        let token = new_secret();
        sqlx::query(
            "INSERT INTO operator_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(sha256_hex(token.as_bytes()))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            map_unique(
                e,
                &format!("an operator token named {name:?} already exists"),
            )
        })?;
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
        self.get_study(study_id).await?;
        let token = new_secret();
        sqlx::query(
            "INSERT INTO enrolment_tokens (study_id, label, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(study_id)
        .bind(label)
        .bind(sha256_hex(token.as_bytes()))
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(token)
    }
}
