//! The round endpoints through the real router, against SQLite and Postgres: starting (and its refusals), status,
//! the participant's task, protocol messages and broadcasts with their refusals, aborts (nothing published,
//! nothing charged). Every refused request is checked to leave the stored state unchanged.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::TestDb;
use support::router::{Api, study_request};

async fn rounds(db: &TestDb) {
    let api = Api::new(db).await;
    let study = api.create_study(study_request("s")).await;
    let other = api.create_study(study_request("other")).await;
    let path = format!("/v1/studies/{study}/rounds");
    let (p1, c1) = api.enrol(study, "alpha").await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "needs at least 3",
        api.op(Method::POST, &path, Some(json!({}))),
    )
    .await;
    let (p2, c2) = api.enrol(study, "beta").await;
    let (p3, _) = api.enrol(study, "delta").await;
    let (_, c_other) = api.enrol(other, "gamma").await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not enrolled",
        api.op(
            Method::POST,
            &path,
            Some(json!({"participants": [p1, 999]})),
        ),
    )
    .await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field",
        api.op(Method::POST, &path, Some(json!({"who": []}))),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "study not found",
        api.op(Method::POST, "/v1/studies/999/rounds", Some(json!({}))),
    )
    .await;

    // Idle before any round.
    let r = api
        .call(Method::GET, "/v1/participant/task", Some(&c1), None)
        .await;
    assert_eq!(r.json()["kind"], "idle");
    api.refused(
        StatusCode::BAD_REQUEST,
        "",
        api.call(Method::GET, "/v1/participant/task?wait=1", Some(&c1), None),
    )
    .await;

    let r = api.op(Method::POST, &path, Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let round = r.json();
    let rid = round["id"].as_i64().unwrap();
    assert_eq!(round["stage"], "advertise_keys");
    assert_eq!(round["sets"][0]["stage"], "selected");
    assert_eq!(round["sets"][0]["participants"], json!([p1, p2, p3]));
    api.refused(
        StatusCode::CONFLICT,
        "already has an active round",
        api.op(Method::POST, &path, Some(json!({}))),
    )
    .await;

    let r = api
        .op(Method::GET, &format!("/v1/rounds/{rid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.op(Method::GET, &path, None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    api.refused(
        StatusCode::NOT_FOUND,
        "round not found",
        api.op(Method::GET, "/v1/rounds/999", None),
    )
    .await;

    // The task tells each participant its index and the round's parameters.
    let r = api
        .call(
            Method::GET,
            "/v1/participant/task?wait_secs=1",
            Some(&c2),
            None,
        )
        .await;
    let task = r.json();
    assert_eq!(task["kind"], "round");
    assert_eq!(task["participant_index"], 1);
    assert_eq!(task["submitted"], false);
    let sa_round = task["protocol"]["round_id"].as_u64().unwrap();
    let r = api
        .call(Method::GET, "/v1/participant/task", Some(&c_other), None)
        .await;
    assert_eq!(
        r.json()["kind"],
        "idle",
        "another study's participant has nothing to do"
    );

    // Bad protocol messages.
    let msg_path = format!("/v1/participant/rounds/{rid}/messages/advertise_keys");
    let keys = |sender: u32, round: u64| {
        json!({"version": 2, "round_id": round, "sender": sender,
               "cipher_public_key": base64_of(&[9u8; 32]), "mask_public_key": base64_of(&[10u8; 32])})
        .to_string()
        .into_bytes()
    };
    let post = |cred: String, path: String, ct: &'static str, body: Vec<u8>| {
        let api = &api;
        async move { api.raw(Method::POST, &path, Some(&cred), ct, body).await }
    };
    api.refused(
        StatusCode::FORBIDDEN,
        "claims sender",
        post(
            c1.clone(),
            msg_path.clone(),
            "application/json",
            keys(1, sa_round),
        ),
    )
    .await;
    api.refused(
        StatusCode::CONFLICT,
        "names secure-aggregation round",
        post(
            c1.clone(),
            msg_path.clone(),
            "application/json",
            keys(0, sa_round + 1),
        ),
    )
    .await;
    api.refused(
        StatusCode::BAD_REQUEST,
        "invalid advertise_keys message",
        post(
            c1.clone(),
            msg_path.clone(),
            "application/json",
            b"{\"x\":1}".to_vec(),
        ),
    )
    .await;
    api.refused(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
        post(
            c1.clone(),
            msg_path.clone(),
            "application/octet-stream",
            keys(0, sa_round),
        ),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "round not found",
        post(
            c_other.clone(),
            msg_path.clone(),
            "application/json",
            keys(0, sa_round),
        ),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "unknown stage",
        post(
            c1.clone(),
            format!("/v1/participant/rounds/{rid}/messages/gossip"),
            "application/json",
            keys(0, sa_round),
        ),
    )
    .await;
    api.refused(StatusCode::CONFLICT, "is in stage advertise_keys", post(c1.clone(), format!("/v1/participant/rounds/{rid}/messages/unmasking"), "application/json",
        json!({"version": 2, "round_id": sa_round, "sender": 0, "self_mask_shares": [], "mask_key_shares": []}).to_string().into_bytes())).await;
    api.refused(
        StatusCode::UNAUTHORIZED,
        "unknown participant credential",
        post(
            "bogus".into(),
            msg_path.clone(),
            "application/json",
            keys(0, sa_round),
        ),
    )
    .await;
    let huge = vec![b' '; 2 << 20];
    api.refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than",
        post(c1.clone(), msg_path.clone(), "application/json", huge),
    )
    .await;
    // Masked inputs: wrong stage (and wrong length / oversized are refused before storage).
    let masked = confide_common::secagg::MaskedInput {
        round_id: sa_round,
        sender: 0,
        values: vec![0; 3],
    }
    .encode();
    api.refused(
        StatusCode::BAD_REQUEST,
        "masked input has 3 elements",
        post(
            c1.clone(),
            format!("/v1/participant/rounds/{rid}/messages/masked_input_collection"),
            "application/octet-stream",
            masked,
        ),
    )
    .await;

    let r = post(
        c1.clone(),
        msg_path.clone(),
        "application/json",
        keys(0, sa_round),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    api.refused(
        StatusCode::CONFLICT,
        "already sent",
        post(
            c1.clone(),
            msg_path.clone(),
            "application/json",
            keys(0, sa_round),
        ),
    )
    .await;
    let r = api
        .call(Method::GET, "/v1/participant/task", Some(&c1), None)
        .await;
    assert_eq!(r.json()["submitted"], true);
    api.refused(
        StatusCode::CONFLICT,
        "no share_keys broadcast",
        api.call(
            Method::GET,
            &format!("/v1/participant/rounds/{rid}/broadcast/share_keys"),
            Some(&c1),
            None,
        ),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "round not found",
        api.call(
            Method::GET,
            &format!("/v1/participant/rounds/{rid}/broadcast/share_keys"),
            Some(&c_other),
            None,
        ),
    )
    .await;

    // Abort: nothing published, nothing charged.
    let abort_path = format!("/v1/rounds/{rid}/abort");
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "reason",
        api.op(Method::POST, &abort_path, Some(json!({"reason": ""}))),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "round not found",
        api.op(
            Method::POST,
            "/v1/rounds/999/abort",
            Some(json!({"reason": "x"})),
        ),
    )
    .await;
    let r = api
        .op(
            Method::POST,
            &abort_path,
            Some(json!({"reason": "testing"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["outcome"], "aborted");
    assert!(r.json()["reason"].as_str().unwrap().contains("testing"));
    api.refused(
        StatusCode::CONFLICT,
        "already finished",
        api.op(Method::POST, &abort_path, Some(json!({"reason": "again"}))),
    )
    .await;
    api.refused(
        StatusCode::CONFLICT,
        "is finished",
        post(
            c2.clone(),
            msg_path.clone(),
            "application/json",
            keys(1, sa_round),
        ),
    )
    .await;
    assert_eq!(db.store.list_model_versions(study).await.unwrap().len(), 1);
    assert!(db.store.ledger(study).await.unwrap().is_empty());
    let r = api
        .call(Method::GET, "/v1/participant/task", Some(&c1), None)
        .await;
    assert_eq!(r.json()["kind"], "idle");
    let metrics =
        String::from_utf8(api.call(Method::GET, "/metrics", None, None).await.body).unwrap();
    assert!(
        metrics.contains(&format!(
            "confide_rounds_total{{outcome=\"aborted\",study=\"{study}\"}} 1"
        )),
        "{metrics}"
    );
    api.state.shutdown.cancel();
}
both_backends!(rounds_start_abort_and_messages, rounds);

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
