//! A real coordinator process SIGKILLed in the middle of a round, then restarted: the round resumes from the server
//! snapshot persisted at the last stage boundary plus the current stage's stored messages, completes, and publishes exactly one model version and
//! exactly one ledger entry per aggregated participant. Also: two coordinator processes on one Postgres database
//! never double-drive a round. Participants run the sans-IO secure-aggregation client over HTTP (reqwest).

mod support;

use confide_common::api::RoundStage;
use confide_common::model::{ModelSpec, decode_safetensors};
use confide_coordinator::store::Backend;
use serde_json::{Value, json};
use support::sim::{Http, Sim, wait_until};
use support::{CoordinatorProcess, TestDb, create_operator_token};

fn study_request() -> Value {
    json!({
        "name": "crash",
        "model_spec": {"kind": "logistic_regression", "input_dim": 3, "num_classes": 2},
        "dp": {"sampling_rate": 0.05, "noise_multiplier": 1.2, "local_epochs": 1, "clip_norm": 1.0, "expected_batch_size": 8.0},
        "secagg": {"graph": {"kind": "complete"}, "quantisation": {"clip_range": 2.0, "bits": 32, "max_weight": 10}},
        "budget": {"epsilon": 10.0, "delta": 1e-5},
        "rounds": 5,
        "min_participants": 3,
        "deadlines": {"advertise_keys_secs": 120, "share_keys_secs": 120, "masked_input_secs": 120, "unmasking_secs": 120},
        "server_optimizer": {"kind": "fed_avg", "learning_rate": 1.0}
    })
}

struct Cluster {
    url: String,
    schema: Option<String>,
    dir: tempfile::TempDir,
    started: usize,
}

impl Cluster {
    fn start(&mut self) -> CoordinatorProcess {
        self.started += 1;
        let log = self
            .dir
            .path()
            .join(format!("coordinator-{}.log", self.started));
        CoordinatorProcess::start(&self.url, self.schema.as_deref(), log)
    }
}

async fn stage_of(http: &Http, op: &str, rid: i64) -> Value {
    let (_, v) = http.get_json(&format!("/v1/rounds/{rid}"), op).await;
    v
}

async fn wait_stage(http: &Http, op: &str, rid: i64, stage: &str) {
    wait_until(60, stage, || async {
        stage_of(http, op, rid).await["stage"] == stage
    })
    .await;
}

/// Every participant that has not answered `stage` yet answers it (only those in `who`).
async fn answer(http: &Http, sims: &mut [Sim], who: &[usize], stage: RoundStage) {
    for &i in who {
        let done = sims[i].step(http).await;
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
    let mut cluster = Cluster {
        url: db.url.clone(),
        schema: db.schema.clone(),
        dir: tempfile::tempdir().unwrap(),
        started: 0,
    };
    let op = create_operator_token(&db.url, db.schema.as_deref(), "op");
    let mut a = cluster.start();
    let http = Http::new(&a.base_url);
    let (status, study) = http
        .post_json("/v1/studies", Some(&op), &study_request())
        .await;
    assert_eq!(status, 201, "{study}");
    let sid = study["id"].as_i64().unwrap();
    let mut sims = Vec::new();
    for i in 0..3 {
        let (_, tok) = http
            .post_json(
                &format!("/v1/studies/{sid}/enrolment-tokens"),
                Some(&op),
                &json!({"label": "x"}),
            )
            .await;
        let (_, e) = http
            .post_json(
                "/v1/participant/enrol",
                None,
                &json!({"token": tok["token"], "name": format!("h{i}")}),
            )
            .await;
        let update: Vec<f32> = (0..8).map(|j| ((i * 8 + j) as f32).cos() * 0.3).collect();
        sims.push(Sim::new(
            e["participant_id"].as_i64().unwrap(),
            e["credential"].as_str().unwrap().into(),
            update,
            1,
        ));
    }
    let spec = ModelSpec::from_json(&study_request()["model_spec"].to_string()).unwrap();

    // Round 1: killed during MaskedInputCollection, after two of three masked inputs were acknowledged.
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid = round["id"].as_i64().unwrap();
    let q = sims[0].task(&http).await.unwrap().quantisation;
    answer(&http, &mut sims, &[0, 1, 2], RoundStage::AdvertiseKeys).await;
    wait_stage(&http, &op, rid, "share_keys").await;
    answer(&http, &mut sims, &[0, 1, 2], RoundStage::ShareKeys).await;
    wait_stage(&http, &op, rid, "masked_input_collection").await;
    answer(&http, &mut sims, &[0, 1], RoundStage::MaskedInputCollection).await;
    a.kill();
    // Only the current stage's messages are stored; earlier stages live on in the server snapshot.
    assert_eq!(stored_messages(&db, rid).await, [0, 0, 2, 0]);

    let b = cluster.start();
    let http = Http::new(&b.base_url);
    assert_eq!(
        stage_of(&http, &op, rid).await["stage"],
        "masked_input_collection"
    );
    answer(&http, &mut sims, &[2], RoundStage::MaskedInputCollection).await;
    wait_stage(&http, &op, rid, "unmasking").await;
    // Killed again during Unmasking, after one response.
    answer(&http, &mut sims, &[0], RoundStage::Unmasking).await;
    let mut b = b;
    b.kill();
    // The masked inputs are gone: the sum the resumed round unmasks comes from the snapshot alone.
    assert_eq!(stored_messages(&db, rid).await, [0, 0, 0, 1]);
    let c = cluster.start();
    let http = Http::new(&c.base_url);
    answer(&http, &mut sims, &[1, 2], RoundStage::Unmasking).await;
    wait_until(60, "round completion", || async {
        stage_of(&http, &op, rid).await["outcome"] == "completed"
    })
    .await;

    let versions = db.store.list_model_versions(sid).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![0, 1],
        "exactly one new model version"
    );
    let (base, _) = db.store.model_weights(sid, 0).await.unwrap();
    let base = decode_safetensors(&spec, &base).unwrap();
    let (v1, sha) = db.store.model_weights(sid, 1).await.unwrap();
    assert_eq!(
        confide_coordinator::store::sha256_hex(&v1),
        sha,
        "model version is whole"
    );
    let inputs: Vec<&Vec<u32>> = sims
        .iter()
        .map(|s| s.sent_input.as_ref().unwrap())
        .collect();
    let mut sum = vec![0u32; inputs[0].len()];
    for input in &inputs {
        for (s, v) in sum.iter_mut().zip(input.iter()) {
            *s = s.wrapping_add(*v);
        }
    }
    let d = q.dequantize(&sum).unwrap();
    let expected: Vec<f32> = base
        .iter()
        .zip(&d.values)
        .map(|(x, v)| (f64::from(*x) + v / d.total_weight as f64) as f32)
        .collect();
    assert_eq!(
        decode_safetensors(&spec, &v1).unwrap(),
        expected,
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
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid2 = round["id"].as_i64().unwrap();
    answer(&http, &mut sims, &[0], RoundStage::AdvertiseKeys).await;
    let mut c = c;
    c.kill();
    let d = cluster.start();
    let http = Http::new(&d.base_url);
    let (status, r) = http
        .post_json(
            &format!("/v1/rounds/{rid2}/abort"),
            Some(&op),
            &json!({"reason": "after crash"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(db.store.list_model_versions(sid).await.unwrap().len(), 2);
    assert_eq!(db.store.ledger(sid).await.unwrap().len(), 3);
    drop(d);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_round_resumes_sqlite() {
    crash_and_resume(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_round_resumes_postgres() {
    crash_and_resume(Backend::Postgres).await;
}

/// Two processes on one Postgres schema: participants talk to either; exactly one process drives the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_double_drive() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut cluster = Cluster {
        url: db.url.clone(),
        schema: db.schema.clone(),
        dir: tempfile::tempdir().unwrap(),
        started: 0,
    };
    let op = create_operator_token(&db.url, db.schema.as_deref(), "op");
    let a = cluster.start();
    let b = cluster.start();
    let ha = Http::new(&a.base_url);
    let hb = Http::new(&b.base_url);
    let (status, study) = ha
        .post_json("/v1/studies", Some(&op), &study_request())
        .await;
    assert_eq!(status, 201);
    let sid = study["id"].as_i64().unwrap();
    let mut sims = Vec::new();
    for i in 0..3 {
        let (_, tok) = hb
            .post_json(
                &format!("/v1/studies/{sid}/enrolment-tokens"),
                Some(&op),
                &json!({"label": "x"}),
            )
            .await;
        let (_, e) = ha
            .post_json(
                "/v1/participant/enrol",
                None,
                &json!({"token": tok["token"], "name": format!("h{i}")}),
            )
            .await;
        sims.push(Sim::new(
            e["participant_id"].as_i64().unwrap(),
            e["credential"].as_str().unwrap().into(),
            vec![0.1; 8],
            1,
        ));
    }
    let (status, round) = hb
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201);
    let rid = round["id"].as_i64().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        for (i, s) in sims.iter_mut().enumerate() {
            s.step(if i % 2 == 0 { &ha } else { &hb }).await;
        }
        if stage_of(&ha, &op, rid).await["outcome"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {}",
            "round completion"
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
