//! What `confide-participant budget` shows: ε per dataset (what the budget is enforced on) and per study (for
//! information: a study's own share, which composes with the others into the dataset's ε).

use std::path::Path;

use serde::Serialize;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};

use super::schema::{self, Found, LEGACY_COORDINATOR};
use super::{
    LedgerError, PartitionColumn, connect_options, dataset_epsilon, dataset_events, decode_events,
};

/// A dataset's spend: the number its budget is enforced on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSpend {
    pub dataset_id: String,
    /// sha256 of the data file as last served (None if never registered).
    pub fingerprint: Option<String>,
    /// ε of every round charged to the dataset, by every study, at `delta` (None while no δ is recorded).
    pub epsilon_spent: Option<f64>,
    /// The budget last enforced by an agent serving this dataset.
    pub epsilon_budget: Option<f64>,
    pub delta: Option<f64>,
    pub epsilon_remaining: Option<f64>,
    pub rounds_charged: i64,
    pub studies: i64,
}

/// One study's share of a dataset's spend (informational: the budget is enforced on the dataset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudySpend {
    pub dataset_id: String,
    /// The coordinator the charging agent enrolled with (None for charges migrated from a version-1 ledger).
    pub coordinator_url: Option<String>,
    pub participant_id: Option<i64>,
    pub study_id: i64,
    /// ε of this study's rounds alone, at the dataset's δ.
    pub epsilon_spent: Option<f64>,
    pub rounds_charged: i64,
}

/// The whole ledger file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LedgerSummary {
    pub datasets: Vec<DatasetSpend>,
    pub studies: Vec<StudySpend>,
}

/// Reads the summary of the ledger at `path` without writing to it; `None` if there is no file.
pub async fn read_summary(path: &Path) -> Result<Option<LedgerSummary>, LedgerError> {
    if !path.exists() {
        return Ok(None);
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(path)?.read_only(true))
        .await?;
    let result = async {
        let mut conn = pool.acquire().await?;
        match schema::inspect(&mut conn).await? {
            Found::Empty => Ok(LedgerSummary::default()),
            Found::Legacy => Err(LedgerError::Legacy(path.display().to_string())),
            Found::Current => {
                drop(conn);
                summarise(&pool, PartitionColumn::Stored).await
            }
            // Read without migrating (read-only): its charges used every record.
            Found::WithoutPartitions => {
                drop(conn);
                summarise(&pool, PartitionColumn::AllRecords).await
            }
        }
    }
    .await;
    pool.close().await;
    result.map(Some)
}

pub(super) async fn summarise(
    pool: &SqlitePool,
    column: PartitionColumn,
) -> Result<LedgerSummary, LedgerError> {
    let rows = sqlx::query(
        "SELECT d.dataset_id, s.fingerprint, s.epsilon, s.delta
         FROM (SELECT dataset_id FROM datasets UNION SELECT dataset_id FROM charges) AS d
         LEFT JOIN datasets AS s ON s.dataset_id = d.dataset_id
         ORDER BY d.dataset_id",
    )
    .fetch_all(pool)
    .await?;
    let mut summary = LedgerSummary::default();
    for r in rows {
        let dataset: String = r.try_get("dataset_id")?;
        let fingerprint: Option<String> = r.try_get("fingerprint")?;
        let epsilon_budget: Option<f64> = r.try_get("epsilon")?;
        let delta: Option<f64> = r.try_get("delta")?;
        let events = dataset_events(pool, &dataset, column).await?;
        let counts = sqlx::query(
            "SELECT COUNT(*) AS rounds,
                    COUNT(DISTINCT coordinator_url || '/' || participant_id || '/' || study_id) AS studies
             FROM charges WHERE dataset_id = $1",
        )
        .bind(&dataset)
        .fetch_one(pool)
        .await?;
        let epsilon_spent = match delta {
            Some(d) => Some(dataset_epsilon(&events, d)?),
            None => None,
        };
        let epsilon_remaining = match (epsilon_budget, epsilon_spent) {
            (Some(b), Some(s)) => Some((b - s).max(0.0)),
            _ => None,
        };
        summary.datasets.push(DatasetSpend {
            dataset_id: dataset.clone(),
            fingerprint: fingerprint.filter(|f| !f.is_empty()),
            epsilon_spent,
            epsilon_budget,
            delta,
            epsilon_remaining,
            rounds_charged: counts.try_get("rounds")?,
            studies: counts.try_get("studies")?,
        });
        let studies = sqlx::query(
            "SELECT DISTINCT coordinator_url, participant_id, study_id FROM charges WHERE dataset_id = $1
             ORDER BY coordinator_url, study_id, participant_id",
        )
        .bind(&dataset)
        .fetch_all(pool)
        .await?;
        for s in studies {
            let coordinator_url: String = s.try_get("coordinator_url")?;
            let participant_id: i64 = s.try_get("participant_id")?;
            let study_id: i64 = s.try_get("study_id")?;
            let sql = format!(
                "SELECT events_json, {} AS data_partition FROM charges WHERE dataset_id = $1
                 AND coordinator_url = $2 AND participant_id = $3 AND study_id = $4
                 ORDER BY created_at, round_id",
                column.sql()
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&dataset)
                .bind(&coordinator_url)
                .bind(participant_id)
                .bind(study_id)
                .fetch_all(pool)
                .await?;
            let events = decode_events(&dataset, &rows)?;
            let legacy = coordinator_url == LEGACY_COORDINATOR;
            summary.studies.push(StudySpend {
                dataset_id: dataset.clone(),
                coordinator_url: (!legacy).then_some(coordinator_url),
                participant_id: (!legacy).then_some(participant_id),
                study_id,
                epsilon_spent: match delta {
                    Some(d) => Some(dataset_epsilon(&events, d)?),
                    None => None,
                },
                rounds_charged: rows.len() as i64,
            });
        }
    }
    Ok(summary)
}
