//! Every endpoint of the API with the refusals particular to it, against SQLite and Postgres: the HTTP contract
//! (statuses, messages, headers) through the real router, every refused request checked to leave the stored state
//! unchanged. The generic bad inputs of every route are in `bad_input.rs`; rounds in `round_api.rs`.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestDb;
use support::router::{Api, study_request};

async fn service_endpoints(db: &TestDb) {
    let api = Api::new(db).await;
    let r = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    for path in [
        "/v1/studies",
        "/v1/participant/task",
        "/v1/participant/rounds/{round_id}/messages/{stage}",
        "/v1/studies/{study_id}/run",
        "/v1/studies/{study_id}/stop",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // Every response is described (OpenAPI requires it; scripts/ops/check-openapi.sh validates the whole document),
    // and the model has a real schema.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let d = response["description"].as_str().unwrap_or_default();
                assert!(
                    !d.trim().is_empty(),
                    "{method} {path} {status}: no description"
                );
            }
        }
    }
    assert_eq!(
        doc["components"]["schemas"]["CreateStudyRequest"]["properties"]["model_spec"]["$ref"],
        "#/components/schemas/ModelSpec"
    );
    let r = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("confide_http_requests_total"), "{text}");
    assert!(
        text.contains(
            "confide_db_transactions_total{name=\"create_operator_token\",outcome=\"committed\"} 1"
        ),
        "every write is counted by transaction name: {text}"
    );
    api.refused(
        StatusCode::NOT_FOUND,
        "no such route",
        api.call(Method::GET, "/v1/nothing", None, None),
    )
    .await;
}
both_backends!(service_endpoints_answer, service_endpoints);

async fn studies(db: &TestDb) {
    let api = Api::new(db).await;
    let id = api.create_study(study_request("breast-cancer")).await;
    let r = api
        .op(Method::GET, &format!("/v1/studies/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["config"]["name"], "breast-cancer");
    assert_eq!(r.json()["latest_model_version"], 0);
    let r = api.op(Method::GET, "/v1/studies", None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);

    let post = |body: Vec<u8>| {
        api.raw(
            Method::POST,
            "/v1/studies",
            Some(&api.op),
            "application/json",
            body,
        )
    };
    api.refused(StatusCode::BAD_REQUEST, "", post(b"{not json".to_vec()))
        .await;
    let mut unknown = study_request("u");
    unknown["colour"] = json!("blue");
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field",
        post(unknown.to_string().into_bytes()),
    )
    .await;
    let mut missing = study_request("m");
    missing.as_object_mut().unwrap().remove("dp");
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing field",
        post(missing.to_string().into_bytes()),
    )
    .await;
    for (path, value, needle) in [
        ("/dp/sampling_rate", json!(1.5), "sampling_rate"),
        ("/dp/noise_multiplier", json!(0.0), "noise_multiplier"),
        ("/budget/delta", json!(1.0), "delta"),
        ("/budget/epsilon", json!(-1.0), "epsilon"),
        ("/min_participants", json!(1), "min_participants"),
        ("/min_participants", json!(2), "min_participants"),
        ("/dp/expected_batch_size", json!(0.0), "expected_batch_size"),
        (
            "/dp/noise_multiplier",
            json!(3e-5),
            "one round of this study alone",
        ),
        ("/secagg/quantisation/clip_range", json!(-1.0), "clip_range"),
        (
            "/model_spec",
            json!({"kind": "logistic_regression", "input_dim": 10_000, "num_classes": 2}),
            "model-size limit",
        ),
        ("/rounds", json!(0), "rounds"),
        ("/secagg/threshold", json!(5), "threshold"),
        ("/secagg/quantisation/bits", json!(40), "bits"),
        (
            "/model_spec",
            json!({"kind": "logistic_regression", "input_dim": 0, "num_classes": 2}),
            "model_spec",
        ),
        ("/name", json!(""), "name"),
    ] {
        let mut bad = study_request("bad");
        *bad.pointer_mut(path).unwrap() = value;
        api.refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            needle,
            post(bad.to_string().into_bytes()),
        )
        .await;
    }
    api.refused(
        StatusCode::CONFLICT,
        "already exists",
        post(study_request("breast-cancer").to_string().into_bytes()),
    )
    .await;
    let mut huge = study_request("huge");
    huge["name"] = json!("x".repeat(100 * 1024));
    api.refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too large",
        post(huge.to_string().into_bytes()),
    )
    .await;
    api.refused(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content-type",
        api.raw(
            Method::POST,
            "/v1/studies",
            Some(&api.op),
            "text/plain",
            study_request("t").to_string().into_bytes(),
        ),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "study not found",
        api.op(Method::GET, "/v1/studies/999", None),
    )
    .await;
    api.refused(
        StatusCode::BAD_REQUEST,
        "",
        api.op(Method::GET, "/v1/studies/abc", None),
    )
    .await;
}
both_backends!(studies_are_created_and_validated, studies);

async fn enrolment(db: &TestDb) {
    let api = Api::new(db).await;
    let study = api.create_study(study_request("s")).await;
    let path = format!("/v1/studies/{study}/enrolment-tokens");
    api.refused(
        StatusCode::NOT_FOUND,
        "study not found",
        api.op(
            Method::POST,
            "/v1/studies/999/enrolment-tokens",
            Some(json!({"label": "a"})),
        ),
    )
    .await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "label",
        api.op(Method::POST, &path, Some(json!({"label": ""}))),
    )
    .await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field",
        api.op(Method::POST, &path, Some(json!({"label": "a", "x": 1}))),
    )
    .await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "expires_in_secs",
        api.op(
            Method::POST,
            &path,
            Some(json!({"label": "a", "expires_in_secs": 0})),
        ),
    )
    .await;
    let r = api
        .op(Method::POST, &path, Some(json!({"label": "hospital a"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.json()["token"].as_str().unwrap().to_string();

    let enrol = |body: Value| api.call(Method::POST, "/v1/participant/enrol", None, Some(body));
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown, expired or already used",
        enrol(json!({"token": "nope", "name": "a"})),
    )
    .await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "name",
        enrol(json!({"token": token, "name": ""})),
    )
    .await;
    api.refused(
        StatusCode::BAD_REQUEST,
        "",
        api.raw(
            Method::POST,
            "/v1/participant/enrol",
            None,
            "application/json",
            b"{\"token\":".to_vec(),
        ),
    )
    .await;
    let r = enrol(json!({"token": token, "name": "alpha"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let pid = r.json()["participant_id"].as_i64().unwrap();
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "already used",
        enrol(json!({"token": token, "name": "beta"})),
    )
    .await;

    let r = api
        .op(
            Method::GET,
            &format!("/v1/studies/{study}/participants"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()[0]["id"], pid);
    assert_eq!(r.json()[0]["name"], "alpha");
    api.refused(
        StatusCode::NOT_FOUND,
        "study not found",
        api.op(Method::GET, "/v1/studies/999/participants", None),
    )
    .await;
}
both_backends!(enrolment_tokens_are_one_time, enrolment);

async fn models_and_privacy(db: &TestDb) {
    let api = Api::new(db).await;
    let study = api.create_study(study_request("s")).await;
    let (_, cred) = api.enrol(study, "alpha").await;
    let r = api
        .op(Method::GET, &format!("/v1/studies/{study}/models"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let sha = r.json()[0]["sha256"].as_str().unwrap().to_string();
    let r = api
        .op(Method::GET, &format!("/v1/studies/{study}/models/0"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-confide-sha256"], sha.as_str());
    assert_eq!(confide_coordinator::store::sha256_hex(&r.body), sha);
    let spec =
        confide_common::model::ModelSpec::from_json(&study_request("s")["model_spec"].to_string())
            .unwrap();
    let weights = confide_common::model::decode_safetensors(&spec, &r.body).unwrap();
    assert_eq!(weights, spec.initial_parameters(7));
    let r2 = api
        .call(Method::GET, "/v1/participant/models/0", Some(&cred), None)
        .await;
    assert_eq!((r2.status, r2.body), (StatusCode::OK, r.body));
    api.refused(
        StatusCode::NOT_FOUND,
        "model version not found",
        api.op(Method::GET, &format!("/v1/studies/{study}/models/5"), None),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "model version not found",
        api.call(Method::GET, "/v1/participant/models/5", Some(&cred), None),
    )
    .await;
    api.refused(
        StatusCode::NOT_FOUND,
        "study not found",
        api.op(Method::GET, "/v1/studies/999/models", None),
    )
    .await;

    let r = api
        .op(Method::GET, &format!("/v1/studies/{study}/privacy"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["accountant"], "pld");
    assert_eq!(r.json()["participants"][0]["epsilon_spent"], 0.0);
    assert_eq!(r.json()["participants"][0]["epsilon_budget"], 5.0);
    api.refused(
        StatusCode::NOT_FOUND,
        "study not found",
        api.op(Method::GET, "/v1/studies/999/privacy", None),
    )
    .await;
}
both_backends!(models_and_privacy_report, models_and_privacy);
