//! Studies and their model versions (safetensors weights, sha256, server optimiser state).

use super::{Store, StoreError, StoreResult, map_unique, now_ms, sha256_hex};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StudyRow {
    pub id: i64,
    pub name: String,
    pub config_json: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ModelVersionRow {
    pub study_id: i64,
    pub version: i64,
    pub round_id: Option<i64>,
    pub sha256: String,
    pub size_bytes: i64,
    pub created_at: i64,
    /// The `PublishedStatistics` JSON the version's inputs are standardised with, if any.
    pub statistics_json: Option<String>,
}

/// The columns of [`ModelVersionRow`] (the weights themselves are read only by [`Store::model_weights`]).
const MODEL_VERSION_COLUMNS: &str = "study_id, version, round_id, sha256, CAST(LENGTH(weights) AS BIGINT) AS size_bytes, created_at, statistics_json";

impl Store {
    /// Creates a study and its version-0 model in one transaction.
    pub async fn create_study(
        &self,
        name: &str,
        config_json: &str,
        initial_weights: &[u8],
    ) -> StoreResult<StudyRow> {
        let now = now_ms();
        let sha256 = sha256_hex(initial_weights);
        let sha256 = sha256.as_str();
        let id = self
            .run_tx("create_study", |tx| {
                Box::pin(async move {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO studies (name, config_json, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id",
                    )
                    .bind(name)
                    .bind(config_json)
                    .bind(now)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(|e| map_unique(e, &format!("a study named {name:?} already exists")))?;
                    sqlx::query(
                        "INSERT INTO model_versions (study_id, version, round_id, sha256, weights, created_at) VALUES ($1, 0, NULL, $2, $3, $4)",
                    )
                    .bind(id)
                    .bind(sha256)
                    .bind(initial_weights)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    Ok(id)
                })
            })
            .await?;
        Ok(StudyRow {
            id,
            name: name.to_string(),
            config_json: config_json.to_string(),
            created_at: now,
        })
    }

    pub async fn list_studies(&self) -> StoreResult<Vec<StudyRow>> {
        Ok(
            sqlx::query_as("SELECT id, name, config_json, created_at FROM studies ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Ids of every study (cheap; for metrics of studies another process created).
    pub async fn study_ids(&self) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM studies ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn get_study(&self, id: i64) -> StoreResult<StudyRow> {
        sqlx::query_as("SELECT id, name, config_json, created_at FROM studies WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("study"))
    }

    pub async fn list_model_versions(&self, study_id: i64) -> StoreResult<Vec<ModelVersionRow>> {
        let sql = format!(
            "SELECT {MODEL_VERSION_COLUMNS} FROM model_versions WHERE study_id = $1 ORDER BY version"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(study_id)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn latest_model_version(&self, study_id: i64) -> StoreResult<ModelVersionRow> {
        let sql = format!(
            "SELECT {MODEL_VERSION_COLUMNS} FROM model_versions WHERE study_id = $1 ORDER BY version DESC LIMIT 1"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(study_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("model version"))
    }

    /// The safetensors bytes and sha256 of one model version.
    pub async fn model_weights(
        &self,
        study_id: i64,
        version: i64,
    ) -> StoreResult<(Vec<u8>, String)> {
        sqlx::query_as(
            "SELECT weights, sha256 FROM model_versions WHERE study_id = $1 AND version = $2",
        )
        .bind(study_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("model version"))
    }

    /// The server optimiser state stored with a model version (None for FedAvg or version 0).
    pub async fn optimizer_state(
        &self,
        study_id: i64,
        version: i64,
    ) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT optimizer_state FROM model_versions WHERE study_id = $1 AND version = $2",
        )
        .bind(study_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("model version"))
    }
}
