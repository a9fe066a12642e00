//! Whole rounds over real HTTP against an in-process coordinator: simulated participants run the sans-IO
//! secure-aggregation client; the published model must equal FedAvg of exactly the aggregated inputs, and exactly
//! those participants are charged.

mod support;

use std::time::Duration;

use confide_common::dp::{AccountantKind, PrivacyLedger};
use confide_common::model::{ModelSpec, decode_safetensors};
use confide_common::secagg::QuantizationParams;
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::TestDb;
use support::sim::{Http, Sim};

pub fn study_request(name: &str, masked_input_secs: u64) -> Value {
    json!({
        "name": name,
        "model_spec": {"kind": "logistic_regression", "input_dim": 3, "num_classes": 2},
        "initial_weights_seed": 11,
        "dp": {"sampling_rate": 0.05, "noise_multiplier": 1.2, "local_epochs": 1, "clip_norm": 1.0, "expected_batch_size": 8.0},
        "secagg": {"graph": {"kind": "complete"}, "quantisation": {"clip_range": 2.0, "bits": 32, "max_weight": 1000}},
        "budget": {"epsilon": 10.0, "delta": 1e-5},
        "rounds": 5,
        "min_participants": 3,
        "deadlines": {"advertise_keys_secs": 60, "share_keys_secs": 60, "masked_input_secs": masked_input_secs, "unmasking_secs": 60},
        "server_optimizer": {"kind": "fed_avg", "learning_rate": 0.5}
    })
}

/// The model FedAvg must publish: base + η · (Σ inputs dequantised) / Σ weights, with the coordinator's arithmetic.
pub fn expected_model(
    base: &[f32],
    q: &QuantizationParams,
    inputs: &[&Vec<u32>],
    lr: f64,
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
    let d = q.dequantize(&sum).unwrap();
    base.iter()
        .zip(&d.values)
        .map(|(x, v)| (f64::from(*x) + lr * v / d.total_weight as f64) as f32)
        .collect()
}

pub async fn setup(
    http: &Http,
    op: &str,
    name: &str,
    masked_secs: u64,
    n: usize,
) -> (i64, Vec<Sim>) {
    let (status, study) = http
        .post_json("/v1/studies", Some(op), &study_request(name, masked_secs))
        .await;
    assert_eq!(status, 201, "{study}");
    let sid = study["id"].as_i64().unwrap();
    (sid, enrol_sims(http, op, sid, n).await)
}

/// Enrols `n` simulated participants in a study.
pub async fn enrol_sims(http: &Http, op: &str, sid: i64, n: usize) -> Vec<Sim> {
    let mut sims = Vec::new();
    for i in 0..n {
        let (_, tok) = http
            .post_json(
                &format!("/v1/studies/{sid}/enrolment-tokens"),
                Some(op),
                &json!({"label": format!("h{i}")}),
            )
            .await;
        let (status, e) = http
            .post_json(
                "/v1/participant/enrol",
                None,
                &json!({"token": tok["token"], "name": format!("hospital-{i}")}),
            )
            .await;
        assert_eq!(status, 201, "{e}");
        let update: Vec<f32> = (0..8)
            .map(|j| ((i * 8 + j) as f32 * 0.37).sin() * 0.5)
            .collect();
        sims.push(Sim::new(
            e["participant_id"].as_i64().unwrap(),
            e["credential"].as_str().unwrap().into(),
            update,
            1 + i as u32,
        ));
    }
    sims
}

pub async fn round_status(http: &Http, op: &str, rid: i64) -> Value {
    http.get_json(&format!("/v1/rounds/{rid}"), op).await.1
}

async fn full_rounds(db: &TestDb) {
    let limits = Limits {
        lease_ttl: Duration::from_secs(2),
        ..Limits::default()
    };
    let state = confide_coordinator::start(db.store.clone(), limits)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(confide_coordinator::serve(
        listener,
        state.clone(),
        async move { stopped.cancelled().await },
    ));
    let http = Http::new(&format!("http://{addr}"));
    let op = db.store.create_operator_token("op").await.unwrap();
    let (sid, mut sims) = setup(&http, &op, "e2e", 3, 4).await;
    let spec = ModelSpec::from_json(&study_request("x", 1)["model_spec"].to_string()).unwrap();

    // Round 1: everyone takes part.
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid = round["id"].as_i64().unwrap();
    let task = sims[0].task(&http).await.unwrap();
    let q = task.quantisation;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for s in sims.iter_mut() {
            s.step(&http).await;
        }
        if round_status(&http, &op, rid).await["outcome"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {}",
            "round 1 to complete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = round_status(&http, &op, rid).await;
    for set in [
        "selected",
        "advertise_keys",
        "share_keys",
        "masked_input_collection",
        "unmasking",
    ] {
        let s = status["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == set)
            .unwrap_or_else(|| panic!("{status}"));
        assert_eq!(
            s["participants"].as_array().unwrap().len(),
            4,
            "{set}: {status}"
        );
    }
    let (base, _) = db.store.model_weights(sid, 0).await.unwrap();
    let base = decode_safetensors(&spec, &base).unwrap();
    let inputs: Vec<&Vec<u32>> = sims
        .iter()
        .map(|s| s.sent_input.as_ref().unwrap())
        .collect();
    let expected = expected_model(&base, &q, &inputs, 0.5);
    let (v1, _) = db.store.model_weights(sid, 1).await.unwrap();
    assert_eq!(
        decode_safetensors(&spec, &v1).unwrap(),
        expected,
        "published model is FedAvg of the inputs"
    );
    // and it is close to the plain weighted mean of the real updates (quantisation error only)
    let total: f32 = sims.iter().map(|s| s.weight as f32).sum();
    for (j, x) in expected.iter().enumerate() {
        let mean: f32 = sims
            .iter()
            .map(|s| s.weight as f32 * s.update[j])
            .sum::<f32>()
            / total;
        assert!((x - (base[j] + 0.5 * mean)).abs() < 1e-4, "coordinate {j}");
    }
    let ledger = db.store.ledger(sid).await.unwrap();
    assert_eq!(
        ledger.iter().map(|l| l.participant_id).collect::<Vec<_>>(),
        sims.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    let (_, report) = http
        .get_json(&format!("/v1/studies/{sid}/privacy"), &op)
        .await;
    let eps = report["participants"][0]["epsilon_spent"].as_f64().unwrap();
    assert!(eps > 0.0 && eps < 10.0, "{report}");

    // Round 2: the last participant drops after ShareKeys; the round completes with the three survivors, who alone
    // are charged.
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid2 = round["id"].as_i64().unwrap();
    for s in sims.iter_mut() {
        s.sent_input = None;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for (i, s) in sims.iter_mut().enumerate() {
            let task = s.task(&http).await;
            let dropped = i == 3
                && task.as_ref().is_some_and(|t| {
                    t.stage != confide_common::api::RoundStage::AdvertiseKeys
                        && t.stage != confide_common::api::RoundStage::ShareKeys
                });
            if !dropped {
                s.step(&http).await;
            }
        }
        if round_status(&http, &op, rid2).await["outcome"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {}",
            "round 2 to complete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(sims[3].sent_input.is_none());
    let (v1, _) = db.store.model_weights(sid, 1).await.unwrap();
    let v1 = decode_safetensors(&spec, &v1).unwrap();
    let inputs: Vec<&Vec<u32>> = sims[..3]
        .iter()
        .map(|s| s.sent_input.as_ref().unwrap())
        .collect();
    let (v2, _) = db.store.model_weights(sid, 2).await.unwrap();
    assert_eq!(
        decode_safetensors(&spec, &v2).unwrap(),
        expected_model(&v1, &q, &inputs, 0.5)
    );
    let ledger = db.store.ledger(sid).await.unwrap();
    let charged: Vec<i64> = ledger
        .iter()
        .filter(|l| l.round_id == rid2)
        .map(|l| l.participant_id)
        .collect();
    assert_eq!(charged, vec![sims[0].id, sims[1].id, sims[2].id]);
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(&format!("confide_participant_dropouts_total{{stage=\"masked_input_collection\",study=\"{sid}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!(
        "confide_rounds_total{{outcome=\"completed\",study=\"{sid}\"}} 2"
    )));
    assert!(metrics.contains("confide_privacy_epsilon_spent{"));
    assert!(metrics.contains("confide_round_stage_duration_seconds_bucket"));

    stop.cancel();
    server.await.unwrap().unwrap();
}
both_backends!(
    rounds_publish_fedavg_and_charge_exactly_the_aggregated,
    full_rounds
);

/// Runs the simulated participants until the round finishes; `drop_after_share_keys` stop answering once their
/// task is past ShareKeys. Returns the round's status.
async fn run_round(
    http: &Http,
    op: &str,
    sims: &mut [Sim],
    rid: i64,
    drop_after_share_keys: &[usize],
) -> Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for (i, s) in sims.iter_mut().enumerate() {
            let task = s.task(http).await;
            let dropped = drop_after_share_keys.contains(&i)
                && task.as_ref().is_some_and(|t| {
                    t.stage != confide_common::api::RoundStage::AdvertiseKeys
                        && t.stage != confide_common::api::RoundStage::ShareKeys
                });
            if !dropped {
                s.step(http).await;
            }
        }
        let status = round_status(http, op, rid).await;
        if !status["outcome"].is_null() {
            return status;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for round {rid}: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn budgets(db: &TestDb) {
    let state = confide_coordinator::start(db.store.clone(), Limits::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(confide_coordinator::serve(
        listener,
        state.clone(),
        async move { stopped.cancelled().await },
    ));
    let http = Http::new(&format!("http://{addr}"));
    let op = db.store.create_operator_token("op").await.unwrap();

    // A budget below one round's cost: the study itself is refused, with the reason, and nothing is stored.
    let before = db.store.state_fingerprint().await.unwrap();
    let mut req = study_request("tight", 5);
    req["budget"]["epsilon"] = json!(0.01);
    let (status, err) = http.post_json("/v1/studies", Some(&op), &req).await;
    assert_eq!(status, 422, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains("one round of this study alone"), "{msg}");
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());

    // A noise multiplier so small that the old accountant reported ε = 0 (grid overflow): refused as well.
    let mut req = study_request("tiny-sigma", 5);
    req["dp"]["noise_multiplier"] = json!(3e-5);
    req["dp"]["sampling_rate"] = json!(1.0);
    let (status, err) = http.post_json("/v1/studies", Some(&op), &req).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());

    // A budget for one round and a half: round 1 runs, round 2 is refused at selection with the reasons.
    let one_round = PrivacyLedger {
        events: confide_common::plan::planned_events(
            &serde_json::from_value(study_request("x", 5)["dp"].clone()).unwrap(),
        ),
    }
    .epsilon(1e-5, AccountantKind::Pld)
    .unwrap();
    let mut req = study_request("one-round", 5);
    req["budget"]["epsilon"] = json!(one_round * 1.5);
    let (status, study) = http.post_json("/v1/studies", Some(&op), &req).await;
    assert_eq!(status, 201, "{study}");
    let sid = study["id"].as_i64().unwrap();
    let mut sims = enrol_sims(&http, &op, sid, 3).await;
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let done = run_round(&http, &op, &mut sims, round["id"].as_i64().unwrap(), &[]).await;
    assert_eq!(done["outcome"], "completed", "{done}");
    let before = db.store.state_fingerprint().await.unwrap();
    let (status, err) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 422, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("round refused") && msg.contains("over its budget"),
        "{msg}"
    );
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    stop.cancel();
    server.await.unwrap().unwrap();
}
both_backends!(over_budget_participants_are_not_selected, budgets);

/// The minimum-aggregate rule: a study with min_participants 3 whose third participant drops after ShareKeys
/// aborts the round before unmasking — nothing published, nobody charged, the reason shown.
async fn min_aggregate(db: &TestDb) {
    let state = confide_coordinator::start(db.store.clone(), Limits::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(confide_coordinator::serve(
        listener,
        state.clone(),
        async move { stopped.cancelled().await },
    ));
    let http = Http::new(&format!("http://{addr}"));
    let op = db.store.create_operator_token("op").await.unwrap();
    // min_participants 2 is refused outright.
    let mut req = study_request("pair", 1);
    req["min_participants"] = json!(2);
    let (status, err) = http.post_json("/v1/studies", Some(&op), &req).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("min_participants"));

    let (sid, mut sims) = setup(&http, &op, "three", 1, 3).await;
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid = round["id"].as_i64().unwrap();
    let done = run_round(&http, &op, &mut sims, rid, &[2]).await;
    assert_eq!(done["outcome"], "aborted", "{done}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.contains("only 2 participant(s) completed masked_input_collection"),
        "{reason}"
    );
    // The coordinator never asked for unmasking shares: it did not learn the sum of the two inputs.
    assert!(
        !done["sets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "unmasking"),
        "{done}"
    );
    assert!(db.store.ledger(sid).await.unwrap().is_empty());
    assert!(db.store.model_weights(sid, 1).await.is_err());
    stop.cancel();
    server.await.unwrap().unwrap();
}
both_backends!(
    a_round_of_fewer_than_three_inputs_publishes_nothing,
    min_aggregate
);

/// A server snapshot that does not decode when a driver resumes the round: the round is aborted with the reason,
/// nothing is published, nobody is charged, and its messages are gone.
async fn corrupt_snapshot(db: &TestDb) {
    let limits = Limits {
        lease_ttl: Duration::from_secs(2),
        ..Limits::default()
    };
    let state = confide_coordinator::start(db.store.clone(), limits.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(confide_coordinator::serve(
        listener,
        state.clone(),
        async move { stopped.cancelled().await },
    ));
    let http = Http::new(&format!("http://{addr}"));
    let op = db.store.create_operator_token("op").await.unwrap();
    let (sid, mut sims) = setup(&http, &op, "corrupt", 60, 3).await;
    let (status, round) = http
        .post_json(&format!("/v1/studies/{sid}/rounds"), Some(&op), &json!({}))
        .await;
    assert_eq!(status, 201, "{round}");
    let rid = round["id"].as_i64().unwrap();
    // Everyone advertises and shares keys; one masked input arrives.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while db.store.get_round(rid).await.unwrap().stage != "masked_input_collection" {
        for s in sims.iter_mut() {
            s.step_before(
                &http,
                confide_common::api::RoundStage::MaskedInputCollection,
            )
            .await;
        }
        assert!(
            std::time::Instant::now() < until,
            "round did not reach masked_input_collection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sims[0].step(&http).await,
        Some(confide_common::api::RoundStage::MaskedInputCollection)
    );
    assert_eq!(
        db.store
            .stage_messages(rid, confide_common::api::RoundStage::MaskedInputCollection)
            .await
            .unwrap()
            .len(),
        1
    );
    // The process stops (releasing the lease); the snapshot is damaged; a new process resumes the round.
    stop.cancel();
    server.await.unwrap().unwrap();
    let snapshot = db.store.server_snapshot(rid).await.unwrap().unwrap();
    support::overwrite_server_snapshot(db, rid, &snapshot[..snapshot.len() / 2]).await;
    let state = confide_coordinator::start(db.store.clone(), limits)
        .await
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let round = loop {
        let r = db.store.get_round(rid).await.unwrap();
        if r.outcome.is_some() {
            break r;
        }
        assert!(std::time::Instant::now() < until, "round was not aborted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(round.outcome.as_deref(), Some("aborted"));
    let reason = round.reason.unwrap_or_default();
    assert!(
        reason.contains("cannot resume the round") && reason.contains("snapshot is unreadable"),
        "{reason}"
    );
    assert_eq!(
        db.store.list_model_versions(sid).await.unwrap().len(),
        1,
        "nothing published"
    );
    assert!(
        db.store.ledger(sid).await.unwrap().is_empty(),
        "nobody charged"
    );
    assert!(
        db.store
            .stage_messages(rid, confide_common::api::RoundStage::MaskedInputCollection)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.store.server_snapshot(rid).await.unwrap(), None);
    let metrics = state.metrics.render().unwrap();
    assert!(
        metrics.contains(&format!(
            "confide_rounds_total{{outcome=\"aborted\",study=\"{sid}\"}} 1"
        )),
        "{metrics}"
    );
    state.shutdown.cancel();
}
both_backends!(
    a_corrupt_snapshot_aborts_the_round_cleanly,
    corrupt_snapshot
);
