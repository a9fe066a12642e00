//! What only tests need (feature `test-util`, enabled for this crate's own tests, never in a release build): a
//! digest of every stored row, to assert that a refused request changed nothing.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreResult};

impl Store {
    /// A digest of every stored row of every table (all columns but the round lease, which a running driver renews
    /// on its own), one `table:rows:sha256` entry per table, so tests can assert that a refused request changed
    /// nothing — and see which table changed if it did.
    pub async fn state_fingerprint(&self) -> StoreResult<String> {
        use Col::{Blob, Float, Int, Text};
        #[derive(Clone, Copy)]
        enum Col {
            Int(&'static str),
            Text(&'static str),
            Blob(&'static str),
            Float(&'static str),
        }
        const TABLES: [(&str, &[Col], &str); 13] = [
            (
                "operator_tokens",
                &[
                    Int("id"),
                    Text("name"),
                    Text("token_hash"),
                    Int("created_at"),
                    Int("revoked_at"),
                ],
                "id",
            ),
            (
                "studies",
                &[
                    Int("id"),
                    Text("name"),
                    Text("config_json"),
                    Int("created_at"),
                    Int("updated_at"),
                ],
                "id",
            ),
            (
                "participants",
                &[
                    Int("id"),
                    Int("study_id"),
                    Text("name"),
                    Text("credential_hash"),
                    Int("enrolled_at"),
                    Int("revoked_at"),
                    Blob("identity_key"),
                    Int("disabled_at"),
                ],
                "id",
            ),
            (
                "enrolment_tokens",
                &[
                    Int("id"),
                    Int("study_id"),
                    Text("label"),
                    Text("token_hash"),
                    Int("created_at"),
                    Int("expires_at"),
                    Int("used_at"),
                    Int("participant_id"),
                    Int("revoked_at"),
                ],
                "id",
            ),
            (
                "rounds",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("round_number"),
                    Text("stage"),
                    Text("outcome"),
                    Text("reason"),
                    Int("base_version"),
                    Text("plan_json"),
                    Blob("server_state"),
                    Int("stage_started_at"),
                    Int("stage_deadline"),
                    Int("started_at"),
                    Int("finished_at"),
                    Text("purpose"),
                ],
                "id",
            ),
            (
                "round_members",
                &[
                    Int("round_id"),
                    Int("participant_id"),
                    Text("stage"),
                    Int("joined_at"),
                ],
                "round_id, stage, participant_id",
            ),
            (
                "round_messages",
                &[
                    Int("round_id"),
                    Text("stage"),
                    Int("participant_id"),
                    Blob("body"),
                    Int("received_at"),
                ],
                "round_id, stage, participant_id",
            ),
            (
                "round_broadcasts",
                &[
                    Int("round_id"),
                    Text("stage"),
                    Int("recipient_id"),
                    Blob("body"),
                ],
                "round_id, stage, recipient_id",
            ),
            (
                "round_declines",
                &[
                    Int("round_id"),
                    Int("participant_id"),
                    Text("reason"),
                    Int("declined_at"),
                ],
                "round_id, participant_id",
            ),
            (
                "round_exclusions",
                &[Int("round_id"), Int("participant_id"), Text("reason")],
                "round_id, participant_id",
            ),
            (
                "model_versions",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("version"),
                    Int("round_id"),
                    Text("sha256"),
                    Blob("weights"),
                    Blob("optimizer_state"),
                    Int("created_at"),
                ],
                "id",
            ),
            (
                "privacy_ledger",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("participant_id"),
                    Int("round_id"),
                    Text("events_json"),
                    Float("epsilon_after"),
                    Int("created_at"),
                    Text("data_partition"),
                ],
                "id",
            ),
            (
                "model_evaluations",
                &[
                    Int("id"),
                    Int("study_id"),
                    Int("round_id"),
                    Int("model_version"),
                    Int("training_rounds"),
                    Float("correct"),
                    Float("record_count"),
                    Float("loss_sum"),
                    Int("sites"),
                    Float("noise_std_per_site"),
                    Float("loss_max"),
                    Float("release_epsilon"),
                    Float("epsilon_spent"),
                    Int("created_at"),
                ],
                "id",
            ),
        ];
        let mut out = Vec::new();
        for (table, cols, order) in TABLES {
            let names: Vec<&str> = cols
                .iter()
                .map(|c| match c {
                    Int(n) | Text(n) | Blob(n) | Float(n) => *n,
                })
                .collect();
            let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?;
            let mut hash = Sha256::new();
            for r in &rows {
                for col in cols {
                    // Tagged, length-prefixed values so that no two different rows hash alike.
                    let value: Option<Vec<u8>> = match *col {
                        Int(n) => r
                            .try_get::<Option<i64>, _>(n)?
                            .map(|v| v.to_le_bytes().to_vec()),
                        Text(n) => r.try_get::<Option<String>, _>(n)?.map(String::into_bytes),
                        Blob(n) => r.try_get::<Option<Vec<u8>>, _>(n)?,
                        Float(n) => r
                            .try_get::<Option<f64>, _>(n)?
                            .map(|v| v.to_le_bytes().to_vec()),
                    };
                    match value {
                        None => hash.update([0u8]),
                        Some(v) => {
                            hash.update([1u8]);
                            hash.update((v.len() as u64).to_le_bytes());
                            hash.update(&v);
                        }
                    }
                }
            }
            out.push(format!(
                "{table}:{}:{}",
                rows.len(),
                hex::encode(hash.finalize())
            ));
        }
        Ok(out.join(" | "))
    }
}
