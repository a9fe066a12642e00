//! What the participant agent needs from the coordinator beyond the protocol: declining a round (with its bad
//! inputs, each leaving the stored state unchanged) and the study's local-training settings, on SQLite and Postgres.

mod support;

use std::time::Duration;

use confide_common::secagg::SecAggClient;
use confide_common::secagg::messages::ControlMessage;
use confide_coordinator::Limits;
use rand::SeedableRng;
use serde_json::{Value, json};
use support::TestDb;
use support::sim::{Http, Sim, wait_until};

fn study(name: &str) -> Value {
    json!({
        "name": name,
        "model_spec": {"kind": "logistic_regression", "input_dim": 3, "num_classes": 2},
        "dp": {"sampling_rate": 0.1, "noise_multiplier": 1.0, "local_epochs": 1, "clip_norm": 1.0, "expected_batch_size": 8.0},
        "secagg": {"threshold": 3, "graph": {"kind": "complete"}, "quantisation": {"clip_range": 2.0, "bits": 32}},
        "budget": {"epsilon": 10.0, "delta": 1e-5},
        "rounds": 3,
        "min_participants": 3,
        "deadlines": {"advertise_keys_secs": 120, "share_keys_secs": 120, "masked_input_secs": 120, "unmasking_secs": 120}
    })
}

struct World {
    http: Http,
    op: String,
    stop: tokio_util::sync::CancellationToken,
}

async fn serve(db: &TestDb) -> World {
    let limits = Limits {
        max_poll: Duration::from_secs(1),
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
    tokio::spawn(confide_coordinator::serve(listener, state, async move {
        stopped.cancelled().await
    }));
    let op = db.store.create_operator_token("op").await.unwrap();
    World {
        http: Http::new(&format!("http://{addr}")),
        op,
        stop,
    }
}

async fn enrol(w: &World, study: i64, name: &str) -> Sim {
    let (_, tok) = w
        .http
        .post_json(
            &format!("/v1/studies/{study}/enrolment-tokens"),
            Some(&w.op),
            &json!({"label": name}),
        )
        .await;
    let (status, e) = w
        .http
        .post_json(
            "/v1/participant/enrol",
            None,
            &json!({"token": tok["token"], "name": name}),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    Sim::new(
        e["participant_id"].as_i64().unwrap(),
        e["credential"].as_str().unwrap().into(),
        vec![0.1; 8],
        1,
    )
}

/// POSTs a decline; asserts the status, a message containing `needle`, and (for a refusal) no stored change.
async fn decline(
    db: &TestDb,
    w: &World,
    cred: Option<&str>,
    round: i64,
    body: Value,
    status: u16,
    needle: &str,
) {
    let before = db.store.state_fingerprint().await.unwrap();
    let (got, reply) = w
        .http
        .post_json(
            &format!("/v1/participant/rounds/{round}/decline"),
            cred,
            &body,
        )
        .await;
    assert_eq!(got, status, "{reply}");
    if status != 202 {
        let msg = reply["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            msg.contains(&needle.to_lowercase()),
            "message {msg:?} lacks {needle:?}"
        );
        assert_eq!(
            before,
            db.store.state_fingerprint().await.unwrap(),
            "a refused decline changed stored rows"
        );
    }
}

async fn declines(db: &TestDb) {
    let w = serve(db).await;
    let (status, s) = w
        .http
        .post_json("/v1/studies", Some(&w.op), &study("a"))
        .await;
    assert_eq!(status, 201, "{s}");
    let sid = s["id"].as_i64().unwrap();
    let (_, other) = w
        .http
        .post_json("/v1/studies", Some(&w.op), &study("b"))
        .await;
    let other_sid = other["id"].as_i64().unwrap();
    let mut sims = Vec::new();
    for i in 0..5 {
        sims.push(enrol(&w, sid, &format!("h{i}")).await);
    }
    let outsider = enrol(&w, other_sid, "elsewhere").await;
    let selected: Vec<i64> = sims[..4].iter().map(|s| s.id).collect();
    let (status, round) = w
        .http
        .post_json(
            &format!("/v1/studies/{sid}/rounds"),
            Some(&w.op),
            &json!({"participants": selected}),
        )
        .await;
    assert_eq!(status, 201, "{round}");
    let rid = round["id"].as_i64().unwrap();
    let reason = json!({"reason": "local privacy budget: ε would be 1.2 > 1"});

    // Bad inputs: nothing stored changes.
    decline(db, &w, None, rid, reason.clone(), 401, "authorization").await;
    decline(db, &w, Some("nope"), rid, reason.clone(), 401, "unknown").await;
    let c0 = sims[0].cred.clone();
    decline(
        db,
        &w,
        Some(&c0),
        rid,
        json!({"reason": "  "}),
        422,
        "reason",
    )
    .await;
    let long = "x".repeat(1001);
    decline(db, &w, Some(&c0), rid, json!({"reason": long}), 422, "1000").await;
    decline(
        db,
        &w,
        Some(&c0),
        rid,
        json!({"reason": "a\nb"}),
        422,
        "control",
    )
    .await;
    decline(
        db,
        &w,
        Some(&c0),
        rid,
        json!({"reason": "x", "extra": 1}),
        422,
        "unknown field",
    )
    .await;
    decline(db, &w, Some(&c0), rid, json!({}), 422, "reason").await;
    decline(db, &w, Some(&c0), 999_999, reason.clone(), 404, "not found").await;
    decline(
        db,
        &w,
        Some(&outsider.cred),
        rid,
        reason.clone(),
        404,
        "not found",
    )
    .await;
    let c4 = sims[4].cred.clone();
    decline(db, &w, Some(&c4), rid, reason.clone(), 403, "not selected").await;
    // h1 advertises its keys; then it can no longer decline.
    assert!(sims[1].step(&w.http).await.is_some());
    let c1 = sims[1].cred.clone();
    decline(
        db,
        &w,
        Some(&c1),
        rid,
        reason.clone(),
        409,
        "already advertised",
    )
    .await;

    // h0 declines: stored, shown as excluded, no more task for it, no keys accepted from it.
    decline(db, &w, Some(&c0), rid, reason.clone(), 202, "").await;
    decline(
        db,
        &w,
        Some(&c0),
        rid,
        reason.clone(),
        409,
        "already declined",
    )
    .await;
    assert!(
        sims[0].task(&w.http).await.is_none(),
        "a declined round is no task"
    );
    let status = w.http.get_json(&format!("/v1/rounds/{rid}"), &w.op).await.1;
    let excluded = status["excluded"].as_array().unwrap();
    assert_eq!(excluded.len(), 1, "{status}");
    assert!(
        excluded.iter().any(|e| e["participant_id"] == sims[0].id
            && e["reason"] == "declined: local privacy budget: ε would be 1.2 > 1"),
        "{status}"
    );
    // Valid keys from h0 (secure-aggregation index 0) are refused after its decline.
    let task = sims[1].task(&w.http).await.expect("h1's task");
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(rand::random());
    let (_, keys) = SecAggClient::new(task.protocol.clone(), 0, &mut rng).unwrap();
    let before = db.store.state_fingerprint().await.unwrap();
    let (code, text) = w
        .http
        .post_raw(
            &format!("/v1/participant/rounds/{rid}/messages/advertise_keys"),
            &c0,
            "application/json",
            keys.to_json().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(code, 409, "keys after declining: {text}");
    assert!(text.contains("declined"), "{text}");
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());

    // h2 and h3 advertise: with h0's decline counted as its answer the stage closes now, not at its 120 s deadline.
    assert!(sims[2].step(&w.http).await.is_some());
    assert!(sims[3].step(&w.http).await.is_some());
    wait_until(15, "advertise_keys to close early", || async {
        w.http.get_json(&format!("/v1/rounds/{rid}"), &w.op).await.1["stage"] == "share_keys"
    })
    .await;
    let status = w.http.get_json(&format!("/v1/rounds/{rid}"), &w.op).await.1;
    let u1 = status["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "advertise_keys")
        .unwrap()["participants"]
        .clone();
    assert_eq!(u1, json!([sims[1].id, sims[2].id, sims[3].id]), "{status}");
    // Wrong stage now.
    let c2 = sims[2].cred.clone();
    decline(
        db,
        &w,
        Some(&c2),
        rid,
        reason.clone(),
        409,
        "advertise_keys",
    )
    .await;
    // Finished round.
    let (code, _) = w
        .http
        .post_json(
            &format!("/v1/rounds/{rid}/abort"),
            Some(&w.op),
            &json!({"reason": "test"}),
        )
        .await;
    assert_eq!(code, 200);
    decline(db, &w, Some(&c2), rid, reason.clone(), 409, "finished").await;
    // The decline stays on record after the round ended.
    assert_eq!(db.store.round_declines(rid).await.unwrap().len(), 1);
    w.stop.cancel();
}

async fn local_training(db: &TestDb) {
    let w = serve(db).await;
    for (lt, needle) in [
        (
            json!({"learning_rate": 0.0}),
            "local_training.learning_rate",
        ),
        (json!({"momentum": 1.0}), "local_training.momentum"),
        (json!({"momentum": -0.1}), "local_training.momentum"),
        (json!({"optimizer": "rmsprop"}), "rmsprop"),
        (json!({"nesterov": true}), "nesterov"),
    ] {
        let mut s = study("bad");
        s["local_training"] = lt;
        let before = db.store.state_fingerprint().await.unwrap();
        let (status, reply) = w.http.post_json("/v1/studies", Some(&w.op), &s).await;
        assert!(status == 422 || status == 400, "{status} {reply}");
        let msg = reply["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    // Default: SGD, learning rate 0.1, momentum 0.9; an explicit choice reaches the participants' tasks.
    let (_, s) = w
        .http
        .post_json("/v1/studies", Some(&w.op), &study("dflt"))
        .await;
    assert_eq!(
        s["config"]["local_training"],
        json!({"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9})
    );
    let mut adam = study("adam");
    adam["local_training"] = json!({"optimizer": "adam", "learning_rate": 0.01});
    let (status, s) = w.http.post_json("/v1/studies", Some(&w.op), &adam).await;
    assert_eq!(status, 201, "{s}");
    let sid = s["id"].as_i64().unwrap();
    let a = enrol(&w, sid, "a").await;
    let _b = enrol(&w, sid, "b").await;
    let _c = enrol(&w, sid, "c").await;
    let (status, _) = w
        .http
        .post_json(
            &format!("/v1/studies/{sid}/rounds"),
            Some(&w.op),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201);
    let task = a.task(&w.http).await.expect("a task");
    assert_eq!(
        task.local_training,
        confide_common::api::LocalTraining {
            optimizer: confide_common::api::LocalOptimizer::Adam,
            learning_rate: 0.01,
            momentum: 0.9,
        }
    );
    w.stop.cancel();
}

both_backends!(decline_round, declines);
both_backends!(study_local_training, local_training);
