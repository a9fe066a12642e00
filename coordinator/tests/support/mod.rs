//! What the coordinator tests share: test databases (a temporary SQLite file, or a fresh schema in the test
//! Postgres, `CONFIDE_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test, dropped again by
//! `cleanup`), an in-process coordinator served on a loopback port and spoken to with `confide-client`
//! ([`Served`]), a study request to vary ([`study_request`]); [`sim`]: simulated participants; [`process`]: real
//! coordinator processes; [`router`]: raw requests through the router, for the exact HTTP contract.
#![allow(dead_code)]

pub mod process;
pub mod router;
pub mod sim;

use confide_common::api::{CreateEnrolmentTokenRequest, CreateStudyRequest, StartRoundRequest};
use confide_coordinator::client::CoordinatorClient;
use confide_coordinator::store::{Backend, Store};
use confide_coordinator::{Coordinator, Limits};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[allow(unused_imports)] // not every test binary starts processes
pub use process::{CoordinatorProcess, create_operator_token};

pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_url() -> String {
    std::env::var("CONFIDE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("coordinator.db").display());
                let store = Store::connect(&url, None).await.expect("open sqlite store");
                Self {
                    store,
                    url,
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let url = postgres_url();
                let schema = format!("confide_test_{}_{}", std::process::id(), hex_suffix());
                let store = Store::connect(&url, Some(&schema)).await.expect(
                    "open postgres store (is Postgres running? set CONFIDE_TEST_POSTGRES_URL)",
                );
                Self {
                    store,
                    url,
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    /// A second Store on the same database (its own connection pool, as another process would have). Its
    /// `cleanup` only closes it; the schema belongs to `self`.
    pub async fn another_connection(&self) -> Self {
        let store = Store::connect(&self.url, self.schema.as_deref())
            .await
            .expect("second connection");
        Self {
            store,
            url: self.url.clone(),
            schema: None,
            _dir: None,
        }
    }

    pub async fn cleanup(self) {
        if let Some(schema) = &self.schema {
            self.store
                .drop_schema(schema)
                .await
                .expect("drop test schema");
        }
        self.store.close().await;
    }
}

/// Overwrites a round's stored server snapshot behind the Store's back (to test what a corrupt one does).
pub async fn overwrite_server_snapshot(db: &TestDb, round_id: i64, bytes: &[u8]) {
    use sqlx::Connection;
    let url = match &db.schema {
        None => format!("sqlite://{}", db.url.trim_start_matches("sqlite:")),
        Some(_) => db.url.clone(),
    };
    let mut c = sqlx::AnyConnection::connect(&url)
        .await
        .expect("open the database");
    if let Some(schema) = &db.schema {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
            .execute(&mut c)
            .await
            .expect("search_path");
    }
    let done = sqlx::query("UPDATE rounds SET server_state = $1 WHERE id = $2")
        .bind(bytes)
        .bind(round_id)
        .execute(&mut c)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 1);
}

/// Every stage of a study taking `secs` at most.
pub fn deadlines(secs: u64) -> Value {
    json!({"advertise_keys_secs": secs, "share_keys_secs": secs, "share_verification_secs": secs,
           "masked_input_secs": secs, "consistency_check_secs": secs, "unmasking_secs": secs})
}

fn hex_suffix() -> String {
    let b: [u8; 6] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs an async test body once against SQLite and once against Postgres.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let db =
                    $crate::support::TestDb::new(confide_coordinator::store::Backend::Sqlite).await;
                ($body)(&db).await;
                db.cleanup().await;
            }
            #[tokio::test]
            async fn postgres() {
                let db =
                    $crate::support::TestDb::new(confide_coordinator::store::Backend::Postgres)
                        .await;
                ($body)(&db).await;
                db.cleanup().await;
            }
        }
    };
}

/// Runs an async test of real processes (it takes the backend) once against SQLite and once against Postgres, on a
/// multi-threaded runtime.
#[macro_export]
macro_rules! both_backends_with_processes {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)(confide_coordinator::store::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)(confide_coordinator::store::Backend::Postgres).await;
            }
        }
    };
}

/// An in-process coordinator serving HTTP on a loopback port, with clients for it.
pub struct Served {
    pub state: Coordinator,
    /// The coordinator without credentials (enrolment; give it one with `with_token`).
    pub base: CoordinatorClient,
    /// The coordinator as an operator.
    pub op: CoordinatorClient,
    /// The operator's bearer token (for raw requests).
    pub op_token: String,
    /// The operator token's name.
    pub op_name: String,
    pub url: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Served {
    /// Starts a coordinator on `db` and creates an operator token for it.
    pub async fn start(db: &TestDb, limits: Limits) -> Self {
        let state = confide_coordinator::start(db.store.clone(), limits)
            .await
            .expect("start coordinator");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(confide_coordinator::serve(
            listener,
            state.clone(),
            async move { stopped.cancelled().await },
        ));
        let name = format!("operator-{}", hex_suffix());
        let token = db
            .store
            .create_operator_token(&name)
            .await
            .expect("operator token");
        let base = CoordinatorClient::new(&url, "");
        Self {
            op: base.with_token(&token),
            op_token: token,
            op_name: name,
            base,
            state,
            url,
            stop,
            server,
        }
    }

    /// Stops serving; the round drivers stop and release their leases.
    pub async fn stop(self) {
        self.stop.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }

    /// Creates a study from a request built with [`study_request`]; its id.
    pub async fn create_study(&self, req: &Value) -> i64 {
        self.op
            .create_study(&typed(req))
            .await
            .unwrap_or_else(|e| panic!("creating a study: {e}"))
            .id
    }

    /// Enrols a participant named `name` in `study`: (participant id, credential).
    pub async fn enrol(&self, study: i64, name: &str) -> (i64, String) {
        enrol(&self.op, &self.base, study, name).await
    }
}

/// Enrols a participant through `op` (the token) and `base` (the enrolment): (participant id, credential).
pub async fn enrol(
    op: &CoordinatorClient,
    base: &CoordinatorClient,
    study: i64,
    name: &str,
) -> (i64, String) {
    enrol_with_key(op, base, study, name, None).await
}

/// [`enrol`], registering `identity`'s public key.
pub async fn enrol_with_key(
    op: &CoordinatorClient,
    base: &CoordinatorClient,
    study: i64,
    name: &str,
    identity: Option<&confide_common::secagg::IdentityKey>,
) -> (i64, String) {
    let token = op
        .create_enrolment_token(
            study,
            &CreateEnrolmentTokenRequest {
                label: name.into(),
                expires_in_secs: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("enrolment token: {e}"))
        .token;
    let e = base
        .enrol_with_identity(&token, name, identity.map(|k| k.public()))
        .await
        .unwrap_or_else(|e| panic!("enrolling {name}: {e}"));
    (e.participant_id, e.credential)
}

/// Starts a study's next round with everyone enrolled; its id.
pub async fn start_round(op: &CoordinatorClient, study: i64) -> i64 {
    op.start_round(study, &StartRoundRequest::default())
        .await
        .unwrap_or_else(|e| panic!("starting a round: {e}"))
        .id
}

/// A request as the client sends it (a test request must be a valid one).
pub fn typed(req: &Value) -> CreateStudyRequest {
    serde_json::from_value(req.clone()).unwrap_or_else(|e| panic!("study request {req}: {e}"))
}

/// A valid study request (logistic regression on 3 features, DP-SGD q = 0.05, σ = 1.2, semi-honest secure
/// aggregation on a complete graph, 32-bit ring, ε budget 10, 5 rounds of at least 3 participants, FedAvg at
/// learning rate 1), to vary with [`set`] (e.g. `("/secagg/threat_model", json!("malicious"))`).
pub fn study_request(name: &str) -> Value {
    json!({
        "name": name,
        "model_spec": {"kind": "logistic_regression", "input_dim": 3, "num_classes": 2},
        "dp": {"sampling_rate": 0.05, "noise_multiplier": 1.2, "local_epochs": 1, "clip_norm": 1.0,
               "expected_batch_size": 8.0},
        "secagg": {"threat_model": "semi_honest", "threshold": null, "graph": {"kind": "complete"},
                   "quantisation": {"clip_range": 2.0, "bits": 32}},
        "budget": {"epsilon": 10.0, "delta": 1e-5},
        "rounds": 5,
        "min_participants": 3,
        "deadlines": deadlines(60),
        "server_optimizer": {"kind": "fed_avg", "learning_rate": 1.0}
    })
}

/// `req` with the values at JSON pointers replaced (each pointer must exist, or its parent object).
pub fn set(mut req: Value, changes: &[(&str, Value)]) -> Value {
    for (pointer, value) in changes {
        match req.pointer_mut(pointer) {
            Some(slot) => *slot = value.clone(),
            None => {
                let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
                req.pointer_mut(parent)
                    .and_then(Value::as_object_mut)
                    .unwrap_or_else(|| panic!("no object at {parent}"))
                    .insert(key.to_string(), value.clone());
            }
        }
    }
    req
}

/// The model FedAvg must publish: base + η · (Σ inputs dequantised) / Σ weights, with the coordinator's arithmetic
/// (inputs summed mod 2^bits).
pub fn fedavg(
    base: &[f32],
    q: &confide_common::secagg::QuantizationParams,
    inputs: &[&Vec<u32>],
    learning_rate: f64,
) -> Vec<f32> {
    let mask = if q.bits == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << q.bits) - 1
    };
    let mut sum = vec![0u32; inputs[0].len()];
    for input in inputs {
        for (s, v) in sum.iter_mut().zip(input.iter()) {
            *s = ((u64::from(*s) + u64::from(*v)) & mask) as u32;
        }
    }
    let d = q.dequantize(&sum).expect("the aggregate dequantises");
    base.iter()
        .zip(&d.values)
        .map(|(x, v)| (f64::from(*x) + learning_rate * v / d.total_weight as f64) as f32)
        .collect()
}

/// A training round to store directly (store tests): AdvertiseKeys, a placeholder plan and snapshot, a far deadline,
/// at most 2 rounds for the study.
pub fn new_round(study_id: i64, selected: Vec<i64>) -> confide_coordinator::store::NewRound {
    confide_coordinator::store::NewRound {
        study_id,
        stage: confide_common::api::RoundStage::AdvertiseKeys,
        base_version: 0,
        plan_json: "{}".into(),
        selected,
        server_state: Some(vec![1, 2, 3]),
        stage_deadline: i64::MAX / 2,
        max_rounds: 2,
        run_guard: None,
        purpose: confide_common::api::RoundPurpose::Training,
    }
}
