//! What the participant agent needs from the coordinator beyond the protocol: declining a round (with its bad
//! inputs, each leaving the stored state unchanged) and the study's local-training settings, on SQLite and Postgres.

mod support;

use std::time::Duration;

use confide_common::api::{MemberSet, RoundStage, StartRoundRequest};
use confide_common::secagg::SecAggClient;
use confide_common::secagg::messages::ControlMessage;
use confide_coordinator::Limits;
use confide_coordinator::client::ClientError;
use rand::SeedableRng;
use serde_json::{Value, json};
use support::sim::{Sim, wait_until};
use support::{Served, TestDb, set, study_request, typed};

fn study(name: &str) -> Value {
    set(
        study_request(name),
        &[
            ("/dp/sampling_rate", json!(0.1)),
            ("/dp/noise_multiplier", json!(1.0)),
            ("/secagg/threshold", json!(3)),
            ("/rounds", json!(3)),
            ("/deadlines", support::deadlines(120)),
        ],
    )
}

async fn serve(db: &TestDb) -> Served {
    let limits = Limits {
        max_poll: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(2),
        ..Limits::default()
    };
    Served::start(db, limits).await
}

async fn enrol(served: &Served, study: i64, name: &str) -> Sim {
    let (id, cred) = served.enrol(study, name).await;
    Sim::new(id, cred, vec![0.1; 8], 1)
}

/// POSTs a decline body as it is (the bad ones are not what a typed client sends); asserts the status, a message
/// containing `needle`, and (for a refusal) no stored change.
async fn decline(
    db: &TestDb,
    served: &Served,
    cred: Option<&str>,
    round: i64,
    body: Value,
    status: u16,
    needle: &str,
) {
    let before = db.store.state_fingerprint().await.unwrap();
    let mut req = reqwest::Client::new()
        .post(format!(
            "{}/v1/participant/rounds/{round}/decline",
            served.url
        ))
        .json(&body);
    if let Some(c) = cred {
        req = req.bearer_auth(c);
    }
    let reply = req.send().await.expect("POST decline");
    assert_eq!(reply.status().as_u16(), status);
    if status != 202 {
        let reply: Value = reply.json().await.unwrap_or(Value::Null);
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
    let sid = w.create_study(&study("a")).await;
    let other_sid = w.create_study(&study("b")).await;
    let mut sims = Vec::new();
    for i in 0..5 {
        sims.push(enrol(&w, sid, &format!("h{i}")).await);
    }
    let outsider = enrol(&w, other_sid, "elsewhere").await;
    let selected: Vec<i64> = sims[..4].iter().map(|s| s.id).collect();
    let start = StartRoundRequest {
        participants: Some(selected),
    };
    let rid = w.op.start_round(sid, &start).await.unwrap().id;
    let reason = json!({"reason": "local privacy budget: ε would be 1.2 > 1"});

    // Bad inputs: nothing stored changes.
    let c0 = sims[0].cred.clone();
    let long = "x".repeat(1001);
    for (cred, round, body, status, needle) in [
        (None, rid, reason.clone(), 401, "authorization"),
        (Some("nope"), rid, reason.clone(), 401, "unknown"),
        (
            Some(c0.as_str()),
            rid,
            json!({"reason": "  "}),
            422,
            "reason",
        ),
        (Some(&c0), rid, json!({"reason": long}), 422, "1000"),
        (Some(&c0), rid, json!({"reason": "a\nb"}), 422, "control"),
        (
            Some(&c0),
            rid,
            json!({"reason": "x", "extra": 1}),
            422,
            "unknown field",
        ),
        (Some(&c0), rid, json!({}), 422, "reason"),
        (Some(&c0), 999_999, reason.clone(), 404, "not found"),
        (Some(&outsider.cred), rid, reason.clone(), 404, "not found"),
        (
            Some(&sims[4].cred),
            rid,
            reason.clone(),
            403,
            "not selected",
        ),
    ] {
        decline(db, &w, cred, round, body, status, needle).await;
    }
    // h1 advertises its keys; then it can no longer decline.
    assert!(sims[1].step(&w.base).await.is_some());
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
        sims[0].task(&w.base).await.is_none(),
        "a declined round is no task"
    );
    let status = w.op.get_round(rid).await.unwrap();
    assert_eq!(status.excluded.len(), 1, "{status:?}");
    assert!(
        status
            .excluded
            .iter()
            .any(|e| e.participant_id == sims[0].id
                && e.reason == "declined: local privacy budget: ε would be 1.2 > 1"),
        "{status:?}"
    );
    // Valid keys from h0 (secure-aggregation index 0) are refused after its decline.
    let task = sims[1].task(&w.base).await.expect("h1's task");
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(rand::random());
    let (_, keys) = SecAggClient::new(task.protocol.clone(), 0, &mut rng).unwrap();
    let before = db.store.state_fingerprint().await.unwrap();
    let refused = sims[0]
        .at(&w.base)
        .post_control_message(rid, RoundStage::AdvertiseKeys, keys.to_json())
        .await;
    match refused {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 409, "keys after declining: {message}");
            assert!(message.contains("declined"), "{message}");
        }
        other => panic!("keys after declining: {other:?}"),
    }
    assert_eq!(before, db.store.state_fingerprint().await.unwrap());

    // h2 and h3 advertise: with h0's decline counted as its answer the stage closes now, not at its 120 s deadline.
    assert!(sims[2].step(&w.base).await.is_some());
    assert!(sims[3].step(&w.base).await.is_some());
    wait_until(15, "advertise_keys to close early", || async {
        w.op.get_round(rid)
            .await
            .is_ok_and(|r| r.stage == RoundStage::ShareKeys)
    })
    .await;
    let status = w.op.get_round(rid).await.unwrap();
    let u1 = &status
        .sets
        .iter()
        .find(|s| s.stage == MemberSet::AdvertisedKeys)
        .unwrap()
        .participants;
    assert_eq!(u1, &[sims[1].id, sims[2].id, sims[3].id], "{status:?}");
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
    w.op.abort_round(rid, "test").await.unwrap();
    decline(db, &w, Some(&c2), rid, reason.clone(), 409, "finished").await;
    // The decline stays on record after the round ended.
    assert_eq!(db.store.round_declines(rid).await.unwrap().len(), 1);
    w.stop().await;
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
        // Sent as it is: an unknown optimiser or field is not something the typed client can send.
        let s = set(study("bad"), &[("/local_training", lt)]);
        let before = db.store.state_fingerprint().await.unwrap();
        let reply = reqwest::Client::new()
            .post(format!("{}/v1/studies", w.url))
            .bearer_auth(&w.op_token)
            .json(&s)
            .send()
            .await
            .expect("POST a study");
        let status = reply.status().as_u16();
        let reply: Value = reply.json().await.unwrap_or(Value::Null);
        assert!(status == 422 || status == 400, "{status} {reply}");
        let msg = reply["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    // Default: SGD, learning rate 0.1, momentum 0.9; an explicit choice reaches the participants' tasks.
    let dflt = w.op.create_study(&typed(&study("dflt"))).await.unwrap();
    assert_eq!(
        serde_json::to_value(dflt.config.local_training).unwrap(),
        json!({"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9})
    );
    let adam = set(
        study("adam"),
        &[(
            "/local_training",
            json!({"optimizer": "adam", "learning_rate": 0.01}),
        )],
    );
    let sid = w.create_study(&adam).await;
    let a = enrol(&w, sid, "a").await;
    let _b = enrol(&w, sid, "b").await;
    let _c = enrol(&w, sid, "c").await;
    w.op.start_round(sid, &StartRoundRequest::default())
        .await
        .unwrap();
    let task = a.task(&w.base).await.expect("a task");
    assert_eq!(
        task.local_training,
        confide_common::api::LocalTraining {
            optimizer: confide_common::api::LocalOptimizer::Adam,
            learning_rate: 0.01,
            momentum: 0.9,
        }
    );
    w.stop().await;
}

both_backends!(decline_round, declines);
both_backends!(study_local_training, local_training);
