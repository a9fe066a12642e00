//! A real coordinator process SIGKILLed in the middle of a round, then restarted: the round resumes from the server
//! snapshot persisted at the last stage boundary plus the current stage's stored messages, completes, and publishes
//! exactly one model version and exactly one ledger entry per aggregated participant. Also: two coordinator
//! processes on one Postgres database never double-drive a round. Participants run the sans-IO secure-aggregation
//! client over HTTP (`confide-client`).

mod support;

use confide_common::api::{RoundOutcome, RoundStage};
use confide_common::model::{ModelSpec, decode_safetensors};
use confide_coordinator::client::CoordinatorClient;
use confide_coordinator::store::Backend;
use serde_json::{Value, json};
use support::sim::{Sim, enrol_sims, wait_until};
use support::{
    CoordinatorProcess, TestDb, create_operator_token, deadlines, set, start_round, study_request,
    typed,
};

fn request() -> Value {
    set(
        study_request("crash"),
        &[
            ("/secagg/quantisation/max_weight", json!(10)),
            ("/deadlines", deadlines(120)),
        ],
    )
}

/// Coordinator processes on one database, each logging to its own file.
struct Cluster {
    url: String,
    schema: Option<String>,
    dir: tempfile::TempDir,
    started: usize,
    op_token: String,
}

impl Cluster {
    fn new(db: &TestDb) -> Self {
        Self {
            url: db.url.clone(),
            schema: db.schema.clone(),
            dir: tempfile::tempdir().unwrap(),
            started: 0,
            op_token: create_operator_token(&db.url, db.schema.as_deref(), "op"),
        }
    }

    /// Starts a process: it, and clients of it (without credentials, and as the operator).
    fn start(&mut self) -> (CoordinatorProcess, CoordinatorClient, CoordinatorClient) {
        self.started += 1;
        let log = self
            .dir
            .path()
            .join(format!("coordinator-{}.log", self.started));
        let process = CoordinatorProcess::start(&self.url, self.schema.as_deref(), log);
        let base = process.client();
        let op = base.with_token(&self.op_token);
        (process, base, op)
    }
}

async fn wait_stage(op: &CoordinatorClient, rid: i64, stage: RoundStage) {
    wait_until(60, stage.as_str(), || async {
        op.get_round(rid).await.is_ok_and(|r| r.stage == stage)
    })
    .await;
}

/// Every participant in `who` answers `stage`.
async fn answer(base: &CoordinatorClient, sims: &mut [Sim], who: &[usize], stage: RoundStage) {
    for &i in who {
        let done = sims[i].step(base).await;
        assert_eq!(
            done,
            Some(stage),
            "participant {i} should have answered {}",
            stage.as_str()
        );
    }
}

/// Stored messages of a round per stage (advertise_keys, share_keys, masked_input_collection, unmasking).
async fn stored_messages(db: &TestDb, rid: i64) -> [usize; 4] {
    let mut out = [0; 4];
    for (i, stage) in [
        RoundStage::AdvertiseKeys,
        RoundStage::ShareKeys,
        RoundStage::MaskedInputCollection,
        RoundStage::Unmasking,
    ]
    .into_iter()
    .enumerate()
    {
        out[i] = db.store.stage_messages(rid, stage).await.unwrap().len();
    }
    out
}

async fn crash_and_resume(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut cluster = Cluster::new(&db);
    let (mut a, base, op) = cluster.start();
    let sid = op.create_study(&typed(&request())).await.unwrap().id;
    let update = |i: usize, j: usize| ((i * 8 + j) as f32).cos() * 0.3;
    let mut sims = enrol_sims(&op, &base, sid, 3, update, |_| 1).await;
    let spec = ModelSpec::from_json(&request()["model_spec"].to_string()).unwrap();

    // Round 1: killed during MaskedInputCollection, after two of three masked inputs were acknowledged.
    let rid = start_round(&op, sid).await;
    let q = sims[0].task(&base).await.unwrap().quantisation;
    answer(&base, &mut sims, &[0, 1, 2], RoundStage::AdvertiseKeys).await;
    wait_stage(&op, rid, RoundStage::ShareKeys).await;
    answer(&base, &mut sims, &[0, 1, 2], RoundStage::ShareKeys).await;
    wait_stage(&op, rid, RoundStage::MaskedInputCollection).await;
    answer(&base, &mut sims, &[0, 1], RoundStage::MaskedInputCollection).await;
    a.kill();
    // Only the current stage's messages are stored; earlier stages live on in the server snapshot.
    assert_eq!(stored_messages(&db, rid).await, [0, 0, 2, 0]);

    let (mut b, base, op) = cluster.start();
    let round = op.get_round(rid).await.unwrap();
    assert_eq!(round.stage, RoundStage::MaskedInputCollection);
    answer(&base, &mut sims, &[2], RoundStage::MaskedInputCollection).await;
    wait_stage(&op, rid, RoundStage::Unmasking).await;
    // Killed again during Unmasking, after one response.
    answer(&base, &mut sims, &[0], RoundStage::Unmasking).await;
    b.kill();
    // The masked inputs are gone: the sum the resumed round unmasks comes from the snapshot alone.
    assert_eq!(stored_messages(&db, rid).await, [0, 0, 0, 1]);
    let (mut c, base, op) = cluster.start();
    answer(&base, &mut sims, &[1, 2], RoundStage::Unmasking).await;
    wait_until(60, "round completion", || async {
        op.get_round(rid)
            .await
            .is_ok_and(|r| r.outcome == Some(RoundOutcome::Completed))
    })
    .await;

    let versions = op.list_model_versions(sid).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![0, 1],
        "exactly one new model version"
    );
    let (base_model, _) = db.store.model_weights(sid, 0).await.unwrap();
    let base_model = decode_safetensors(&spec, &base_model).unwrap();
    let v1 = op.download_model_version(sid, 1).await.unwrap();
    assert_eq!(
        confide_coordinator::store::sha256_hex(&v1.bytes),
        v1.sha256,
        "model version is whole"
    );
    let inputs: Vec<&Vec<u32>> = sims
        .iter()
        .map(|s| s.sent_input.as_ref().unwrap())
        .collect();
    assert_eq!(
        decode_safetensors(&spec, &v1.bytes).unwrap(),
        support::fedavg(&base_model, &q, &inputs, 1.0),
        "the resumed round aggregates all three inputs"
    );
    let ledger = db.store.ledger(sid).await.unwrap();
    assert_eq!(
        ledger.len(),
        3,
        "one ledger entry per aggregated participant, none lost or doubled"
    );
    assert!(ledger.iter().all(|l| l.round_id == rid));
    assert!(
        c.log_text().contains("driving round"),
        "the restarted process resumed the round"
    );

    // Round 2: killed in AdvertiseKeys with the operator then aborting it on the new process: nothing published,
    // nothing charged.
    let rid2 = start_round(&op, sid).await;
    answer(&base, &mut sims, &[0], RoundStage::AdvertiseKeys).await;
    c.kill();
    let (d, _, op) = cluster.start();
    let aborted = op.abort_round(rid2, "after crash").await.unwrap();
    assert_eq!(aborted.outcome, Some(RoundOutcome::Aborted));
    assert_eq!(db.store.list_model_versions(sid).await.unwrap().len(), 2);
    assert_eq!(db.store.ledger(sid).await.unwrap().len(), 3);
    drop(d);
    db.cleanup().await;
}

both_backends_with_processes!(sigkill_mid_round_resumes, crash_and_resume);

/// Two processes on one Postgres schema: participants talk to either; exactly one process drives the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_double_drive() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut cluster = Cluster::new(&db);
    let (a, base_a, op_a) = cluster.start();
    let (b, base_b, op_b) = cluster.start();
    let sid = op_a.create_study(&typed(&request())).await.unwrap().id;
    let mut sims = enrol_sims(&op_b, &base_a, sid, 3, |_, _| 0.1, |_| 1).await;
    let rid = start_round(&op_b, sid).await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        for (i, s) in sims.iter_mut().enumerate() {
            s.step(if i % 2 == 0 { &base_a } else { &base_b }).await;
        }
        let round = op_a.get_round(rid).await.unwrap();
        if round.outcome == Some(RoundOutcome::Completed) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for round completion: {round:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let needle = format!("round={rid}");
    let drivers = [&a, &b]
        .iter()
        .filter(|p| {
            p.log_text()
                .lines()
                .any(|l| l.contains("driving round") && l.contains(&needle))
        })
        .count();
    assert_eq!(drivers, 1, "exactly one process drove the round");
    assert_eq!(db.store.list_model_versions(sid).await.unwrap().len(), 2);
    assert_eq!(db.store.ledger(sid).await.unwrap().len(), 3);
    drop((a, b));
    db.cleanup().await;
}
