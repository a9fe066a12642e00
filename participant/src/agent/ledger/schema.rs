//! The ledger file's tables, and the migration of ledgers written before budgets belonged to datasets.
//!
//! Version 3 (`PRAGMA user_version = 3`): charges are keyed by the dataset they spent and by the enrolment, study
//! and round that spent it, and say which part of the dataset they used (`data_partition`: all records, the
//! training part or the held-out evaluation part, so that disjoint parts compose in parallel); datasets remember
//! every content fingerprint they were served with and the budget last enforced. Version 2 had no
//! `data_partition`: its charges are given `all` (every record), which is what they used. Version 1 (no `user_version`, a `charges` table keyed by study and round) is migrated on the first
//! read-write open: its rows are assigned to the dataset the agent is configured with — pessimistic, since spend
//! is never dropped, only attributed.

use sqlx::{Row, SqliteConnection};

use super::{LedgerError, now_ms};

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: i64 = 3;
/// Sets [`SCHEMA_VERSION`] (a literal: SQLite takes no parameter here).
const SET_SCHEMA_VERSION: &str = "PRAGMA user_version = 3";
/// The schema before charges recorded the part of the dataset they used.
const VERSION_WITHOUT_PARTITIONS: i64 = 2;
/// Adds the part of the dataset to a version-2 `charges` table: its charges used every record.
const ADD_PARTITION: &str =
    "ALTER TABLE charges ADD COLUMN data_partition TEXT NOT NULL DEFAULT 'all'";

/// `coordinator_url` of charges migrated from a version-1 ledger (which did not record who charged them).
pub const LEGACY_COORDINATOR: &str = "";

const TABLES: &[&str] = &[
    // One row per dataset this ledger has served: its current content fingerprint and the budget last enforced.
    "CREATE TABLE IF NOT EXISTS datasets (
        dataset_id    TEXT PRIMARY KEY,
        fingerprint   TEXT NOT NULL,
        epsilon       REAL,
        delta         REAL,
        registered_at INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    )",
    // Every fingerprint ever served, so the same bytes can never be served under a second dataset id.
    "CREATE TABLE IF NOT EXISTS fingerprints (
        fingerprint   TEXT PRIMARY KEY,
        dataset_id    TEXT NOT NULL,
        first_seen_at INTEGER NOT NULL
    )",
    // A round's spend, keyed so that a retry never charges twice and a recreated study or coordinator (whose ids
    // start again from 1) never looks like a retry: the enrolment (coordinator URL, participant, enrolment time)
    // is part of the key.
    "CREATE TABLE IF NOT EXISTS charges (
        dataset_id      TEXT NOT NULL,
        coordinator_url TEXT NOT NULL,
        participant_id  INTEGER NOT NULL,
        enrolled_at_ms  INTEGER NOT NULL,
        study_id        INTEGER NOT NULL,
        round_id        INTEGER NOT NULL,
        round_number    INTEGER NOT NULL,
        events_json     TEXT NOT NULL,
        data_partition  TEXT NOT NULL DEFAULT 'all',
        epsilon_after   REAL NOT NULL,
        created_at      INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, coordinator_url, participant_id, enrolled_at_ms, study_id, round_id)
    )",
];

/// What a read-only open found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No tables yet.
    Empty,
    /// A version-1 ledger (charges keyed by study only).
    Legacy,
    /// A version-2 ledger: current but for the part of the dataset each charge used (all of it).
    WithoutPartitions,
    Current,
}

async fn user_version(conn: &mut SqliteConnection) -> Result<i64, LedgerError> {
    Ok(sqlx::query("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?)
}

async fn has_table(conn: &mut SqliteConnection, table: &str) -> Result<bool, LedgerError> {
    Ok(
        sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(table)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Which schema the file holds (for read-only use).
pub async fn inspect(conn: &mut SqliteConnection) -> Result<Found, LedgerError> {
    match user_version(conn).await? {
        SCHEMA_VERSION => Ok(Found::Current),
        VERSION_WITHOUT_PARTITIONS => Ok(Found::WithoutPartitions),
        0 if has_table(conn, "charges").await? => Ok(Found::Legacy),
        0 => Ok(Found::Empty),
        v => Err(LedgerError::NewerSchema(v)),
    }
}

/// Brings the file to the current schema inside the caller's write transaction (`BEGIN IMMEDIATE`, so agents
/// opening one shared ledger at once migrate it once). Version-1 charges go to `dataset`; returns how many.
pub async fn migrate(conn: &mut SqliteConnection, dataset: &str) -> Result<u64, LedgerError> {
    let found = inspect(conn).await?;
    if found == Found::Current {
        return Ok(0);
    }
    if found == Found::WithoutPartitions {
        sqlx::query(ADD_PARTITION).execute(&mut *conn).await?;
        sqlx::query(SET_SCHEMA_VERSION).execute(&mut *conn).await?;
        return Ok(0);
    }
    if found == Found::Legacy {
        sqlx::query("ALTER TABLE charges RENAME TO charges_v1")
            .execute(&mut *conn)
            .await?;
    }
    for stmt in TABLES {
        sqlx::query(*stmt).execute(&mut *conn).await?;
    }
    let mut migrated = 0;
    if found == Found::Legacy {
        migrated = sqlx::query(
            "INSERT INTO charges (dataset_id, coordinator_url, participant_id, enrolled_at_ms, study_id, round_id,
                                  round_number, events_json, epsilon_after, created_at)
             SELECT $1, $2, 0, 0, study_id, round_id, round_number, events_json, epsilon_after, created_at
             FROM charges_v1",
        )
        .bind(dataset)
        .bind(LEGACY_COORDINATOR)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        sqlx::query("DROP TABLE charges_v1")
            .execute(&mut *conn)
            .await?;
        // Version 1 recorded a budget per study; the dataset's budget is recorded again at the agent's start.
        sqlx::query("DROP TABLE IF EXISTS budgets")
            .execute(&mut *conn)
            .await?;
        let now = now_ms();
        // The dataset exists from now on even before its fingerprint is registered (the caller does that next).
        sqlx::query(
            "INSERT INTO datasets (dataset_id, fingerprint, registered_at, updated_at) VALUES ($1, '', $2, $2)
             ON CONFLICT (dataset_id) DO NOTHING",
        )
        .bind(dataset)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(SET_SCHEMA_VERSION).execute(&mut *conn).await?;
    debug_assert_eq!(user_version(conn).await?, SCHEMA_VERSION);
    Ok(migrated)
}
