//! Every endpoint, including its bad inputs, against SQLite and Postgres. Requests go through the real router
//! (tower `oneshot`); every rejected request is checked to leave the stored state unchanged.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use confide_coordinator::{AppState, Limits};
use serde_json::{Value, json};
use support::TestDb;
use tower::ServiceExt;

struct Api {
    state: AppState,
    op: String,
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    headers: axum::http::HeaderMap,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Api {
    async fn new(db: &TestDb) -> Self {
        Self::new_with_token(db, "test-operator").await
    }

    /// A coordinator state of its own (as another process would have) with a new operator token.
    async fn new_with_token(db: &TestDb, token_name: &str) -> Self {
        let limits = Limits {
            json_body_bytes: 64 * 1024,
            model_bytes: 16 * 1024,
            max_poll: std::time::Duration::from_secs(2),
            ..Limits::default()
        };
        let state = confide_coordinator::start(db.store.clone(), limits)
            .await
            .unwrap();
        let op = db.store.create_operator_token(token_name).await.unwrap();
        Self { state, op }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let resp = confide_coordinator::http::router(self.state.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            body,
            headers,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        match body {
            Some(b) => {
                self.raw(
                    method,
                    path,
                    token,
                    "application/json",
                    b.to_string().into_bytes(),
                )
                .await
            }
            None => self.raw(method, path, token, "", Vec::new()).await,
        }
    }

    async fn op(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let token = self.op.clone();
        self.call(method, path, Some(&token), body).await
    }

    /// Asserts a request is refused with `status` and a message containing `needle`, and that nothing stored changed.
    async fn refused(
        &self,
        status: StatusCode,
        needle: &str,
        reply: impl std::future::Future<Output = Reply>,
    ) {
        let before = self.state.store.state_fingerprint().await.unwrap();
        let r = reply.await;
        assert_eq!(
            r.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&r.body)
        );
        let msg = r.error();
        assert!(!msg.is_empty(), "4xx without a message");
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "message {msg:?} lacks {needle:?}"
        );
        assert_eq!(
            before,
            self.state.store.state_fingerprint().await.unwrap(),
            "a refused request changed stored rows"
        );
    }
}

pub fn study_request(name: &str) -> Value {
    json!({
        "name": name,
        "model_spec": {"kind": "logistic_regression", "input_dim": 4, "num_classes": 2},
        "initial_weights_seed": 7,
        "dp": {"sampling_rate": 0.1, "noise_multiplier": 1.1, "local_epochs": 1, "clip_norm": 1.0, "expected_batch_size": 8.0},
        "secagg": {"threshold": null, "graph": {"kind": "complete"}, "quantisation": {"clip_range": 1.0, "bits": 32}},
        "budget": {"epsilon": 5.0, "delta": 1e-5},
        "rounds": 3,
        "min_participants": 3,
        "deadlines": {"advertise_keys_secs": 30, "share_keys_secs": 30, "masked_input_secs": 30, "unmasking_secs": 30}
    })
}

async fn create_study(api: &Api, name: &str) -> i64 {
    let r = api
        .op(Method::POST, "/v1/studies", Some(study_request(name)))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["id"].as_i64().unwrap()
}

async fn enrol(api: &Api, study: i64, name: &str) -> (i64, String) {
    let r = api
        .op(
            Method::POST,
            &format!("/v1/studies/{study}/enrolment-tokens"),
            Some(json!({"label": name})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let r = api
        .call(
            Method::POST,
            "/v1/participant/enrol",
            None,
            Some(json!({"token": token, "name": name})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    (
        r.json()["participant_id"].as_i64().unwrap(),
        r.json()["credential"].as_str().unwrap().to_string(),
    )
}

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
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
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
    let id = create_study(&api, "breast-cancer").await;
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
    let study = create_study(&api, "s").await;
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
    let study = create_study(&api, "s").await;
    let (_, cred) = enrol(&api, study, "alpha").await;
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

async fn rounds(db: &TestDb) {
    let api = Api::new(db).await;
    let study = create_study(&api, "s").await;
    let other = create_study(&api, "other").await;
    let path = format!("/v1/studies/{study}/rounds");
    let (p1, c1) = enrol(&api, study, "alpha").await;
    api.refused(
        StatusCode::UNPROCESSABLE_ENTITY,
        "needs at least 3",
        api.op(Method::POST, &path, Some(json!({}))),
    )
    .await;
    let (p2, c2) = enrol(&api, study, "beta").await;
    let (p3, _) = enrol(&api, study, "delta").await;
    let (_, c_other) = enrol(&api, other, "gamma").await;
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
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
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
        json!({"version": 1, "round_id": round, "sender": sender,
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
        json!({"version": 1, "round_id": sa_round, "sender": 0, "self_mask_shares": [], "mask_key_shares": []}).to_string().into_bytes())).await;
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
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
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
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
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

// ---- the bad-input matrix: every route against every kind of bad input ----

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Operator,
    /// Selected for the active round; has sent its advertise_keys message.
    P1,
    /// Selected for the active round; has sent nothing.
    P2,
    /// Enrolled in the study after the active round started (not selected).
    Late,
    /// Enrolled in another study.
    Outsider,
    /// A well-formed bearer token nobody was given.
    Bogus,
    /// `Authorization: Basic ...`.
    Basic,
}

struct Case {
    what: String,
    method: Method,
    path: String,
    who: Who,
    content_type: &'static str,
    body: Vec<u8>,
    status: StatusCode,
    needle: &'static str,
}

/// (method, path with "{id}" where an id goes, a valid body, (the hole, the valid id, what an unknown id is called)).
type OperatorRoute = (
    Method,
    String,
    Option<Value>,
    Option<(&'static str, String, &'static str)>,
);
/// (what, path, sender, content type, body, expected status, expected words).
type MessageCase = (
    &'static str,
    String,
    Who,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

#[allow(clippy::too_many_arguments)]
fn case(
    what: impl Into<String>,
    method: &Method,
    path: impl Into<String>,
    who: Who,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
    needle: &'static str,
) -> Case {
    Case {
        what: what.into(),
        method: method.clone(),
        path: path.into(),
        who,
        content_type,
        body,
        status: StatusCode::from_u16(status).unwrap(),
        needle,
    }
}

fn json_bytes(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// A study with an aborted round and an active one (advertise_keys; alpha has answered), a late enrolee, another
/// study with its own participant — then every route with every kind of bad input it can receive. Each must be a
/// 4xx whose message names what was wrong, and leave every stored row as it was.
async fn bad_input_matrix(db: &TestDb) {
    let api = Api::new(db).await;
    let s = create_study(&api, "main").await;
    let other = create_study(&api, "other").await;
    let (_, c1) = enrol(&api, s, "alpha").await;
    let (p2, c2) = enrol(&api, s, "beta").await;
    enrol(&api, s, "delta").await;
    let (_, c_out) = enrol(&api, other, "gamma").await;
    let rounds_path = format!("/v1/studies/{s}/rounds");
    let old = api
        .op(Method::POST, &rounds_path, Some(json!({})))
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let r = api
        .op(
            Method::POST,
            &format!("/v1/rounds/{old}/abort"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.op(Method::POST, &rounds_path, Some(json!({}))).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let rid = r.json()["id"].as_i64().unwrap();
    let (_, c_late) = enrol(&api, s, "late").await;
    let plan = |round: i64| {
        let store = db.store.clone();
        async move {
            let row = store.get_round(round).await.unwrap();
            confide_coordinator::service::rounds::RoundPlan::parse(&row).unwrap()
        }
    };
    let (sa, old_sa) = (plan(rid).await.secagg, plan(old).await.secagg);
    let vector_len = sa.vector_len as usize;
    let keys = |round: u64, sender: u32| {
        json!({"version": 1, "round_id": round, "sender": sender,
               "cipher_public_key": base64_of(&[9u8; 32]), "mask_public_key": base64_of(&[10u8; 32])})
    };
    let before = db.store.state_fingerprint().await.unwrap();
    let r = api
        .raw(
            Method::POST,
            &format!("/v1/participant/rounds/{rid}/messages/advertise_keys"),
            Some(&c1),
            "application/json",
            json_bytes(keys(sa.round_id, 0)),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_ne!(
        before,
        db.store.state_fingerprint().await.unwrap(),
        "the fingerprint sees an accepted message"
    );

    let (get, post) = (Method::GET, Method::POST);
    let json_ct = "application/json";
    let bin_ct = "application/octet-stream";
    let oversized = vec![b' '; 64 * 1024 + 1];
    // The create-study body may also carry initial weights: its limit is the JSON limit plus the model-size limit
    // (16 KiB in base64).
    let oversized_study = vec![b' '; 64 * 1024 + 16 * 1024 * 4 / 3 + 1];
    let masked = |round: u64, sender: u32, len: usize| {
        confide_common::secagg::MaskedInput {
            round_id: round,
            sender,
            values: vec![1; len],
        }
        .encode()
    };
    let msg = |stage: &str| format!("/v1/participant/rounds/{rid}/messages/{stage}");
    let unmasking = json!({"version": 1, "round_id": sa.round_id, "sender": 0, "self_mask_shares": [], "mask_key_shares": []});
    let mut cases: Vec<Case> = Vec::new();

    // Operator routes: (method, path, a valid body, the path with "{id}" standing for the ids that can be wrong,
    // the id that is valid, what an unknown id is called).
    let operator_routes: Vec<OperatorRoute> = vec![
        (
            post.clone(),
            "/v1/studies".into(),
            Some(study_request("new")),
            None,
        ),
        (get.clone(), "/v1/studies".into(), None, None),
        (
            get.clone(),
            "/v1/studies/{id}".into(),
            None,
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            post.clone(),
            "/v1/studies/{id}/enrolment-tokens".into(),
            Some(json!({"label": "x"})),
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            get.clone(),
            "/v1/studies/{id}/participants".into(),
            None,
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            post.clone(),
            "/v1/studies/{id}/rounds".into(),
            Some(json!({})),
            Some(("{id}", other.to_string(), "study not found")),
        ),
        (
            get.clone(),
            "/v1/studies/{id}/rounds".into(),
            None,
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            get.clone(),
            "/v1/studies/{id}/models".into(),
            None,
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            get.clone(),
            format!("/v1/studies/{s}/models/{{id}}"),
            None,
            Some(("{id}", "0".into(), "model version not found")),
        ),
        (
            get.clone(),
            "/v1/studies/{id}/models/0".into(),
            None,
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            get.clone(),
            "/v1/studies/{id}/privacy".into(),
            None,
            Some(("{id}", s.to_string(), "study not found")),
        ),
        (
            get.clone(),
            "/v1/rounds/{id}".into(),
            None,
            Some(("{id}", rid.to_string(), "round not found")),
        ),
        (
            post.clone(),
            "/v1/rounds/{id}/abort".into(),
            Some(json!({"reason": "x"})),
            Some(("{id}", rid.to_string(), "round not found")),
        ),
    ];
    for (method, template, body, id) in &operator_routes {
        let valid = match id {
            Some((hole, value, _)) => template.replace(hole, value),
            None => template.clone(),
        };
        let (ct, bytes) = match body {
            Some(b) => (json_ct, json_bytes(b.clone())),
            None => ("", Vec::new()),
        };
        let route = format!("{method} {template}");
        for (who, status, needle) in [
            (Who::Nobody, 401, "missing Authorization"),
            (Who::Bogus, 401, "unknown operator token"),
            (Who::Basic, 401, "must be 'Bearer <token>'"),
            (
                Who::P1,
                403,
                "needs an operator token; a participant credential was given",
            ),
        ] {
            cases.push(case(
                format!("{route} as {who:?}"),
                method,
                &valid,
                who,
                ct,
                bytes.clone(),
                status,
                needle,
            ));
        }
        if let Some((hole, _, unknown)) = id {
            for (bad, status, needle) in [
                ("abc", 400, "cannot parse"),
                ("99999999999999999999", 400, "cannot parse"),
                ("1.5", 400, "cannot parse"),
                ("987654", 404, *unknown),
                ("-1", 404, *unknown),
            ] {
                let path = template.replace(hole, bad);
                cases.push(case(
                    format!("{route} id {bad}"),
                    method,
                    path,
                    Who::Operator,
                    ct,
                    bytes.clone(),
                    status,
                    needle,
                ));
            }
        }
        if body.is_some() {
            for (what, ct, bytes, status, needle) in [
                (
                    "malformed JSON",
                    json_ct,
                    b"{oops".to_vec(),
                    400,
                    "failed to parse",
                ),
                ("empty body", json_ct, Vec::new(), 400, "failed to parse"),
                (
                    "a JSON array",
                    json_ct,
                    b"[]".to_vec(),
                    422,
                    "must be a JSON object",
                ),
                (
                    "a JSON string",
                    json_ct,
                    b"\"x\"".to_vec(),
                    422,
                    "must be a JSON object",
                ),
                (
                    "text/plain",
                    "text/plain",
                    bytes.clone(),
                    415,
                    "content-type",
                ),
                ("no content type", "", bytes.clone(), 415, "content-type"),
                (
                    "oversized body",
                    json_ct,
                    if template == "/v1/studies" {
                        oversized_study.clone()
                    } else {
                        oversized.clone()
                    },
                    413,
                    "too large",
                ),
            ] {
                cases.push(case(
                    format!("{route} with {what}"),
                    method,
                    &valid,
                    Who::Operator,
                    ct,
                    bytes,
                    status,
                    needle,
                ));
            }
            let mut unknown = body.clone().unwrap();
            unknown["colour"] = json!("blue");
            cases.push(case(
                format!("{route} with an unknown field"),
                method,
                &valid,
                Who::Operator,
                json_ct,
                json_bytes(unknown),
                422,
                "unknown field `colour`",
            ));
        }
    }
    // Operator routes: duplicates and request-specific refusals.
    let ops: [(&Method, String, Value, u16, &str); 9] = [
        (
            &post,
            "/v1/studies".into(),
            study_request("main"),
            409,
            "a study named \"main\" already exists",
        ),
        (
            &post,
            format!("/v1/studies/{s}/rounds"),
            json!({}),
            409,
            "already has an active round",
        ),
        (
            &post,
            format!("/v1/studies/{other}/rounds"),
            json!({}),
            422,
            "needs at least 3",
        ),
        (
            &post,
            format!("/v1/studies/{other}/rounds"),
            json!({"participants": [p2]}),
            422,
            format!("participant {p2} is not enrolled").leak(),
        ),
        (
            &post,
            format!("/v1/studies/{s}/rounds"),
            json!({"participants": "all"}),
            422,
            "invalid type",
        ),
        (
            &post,
            format!("/v1/rounds/{old}/abort"),
            json!({"reason": "again"}),
            409,
            "already finished",
        ),
        (
            &post,
            format!("/v1/rounds/{rid}/abort"),
            json!({"reason": ""}),
            422,
            "reason must be",
        ),
        (
            &post,
            format!("/v1/studies/{s}/enrolment-tokens"),
            json!({"label": "x", "expires_in_secs": 0}),
            422,
            "expires_in_secs",
        ),
        (
            &post,
            format!("/v1/studies/{s}/enrolment-tokens"),
            json!({"label": "a\nb"}),
            422,
            "label must be",
        ),
    ];
    for (method, path, body, status, needle) in ops {
        cases.push(case(
            format!("{method} {path} {body}"),
            method,
            &path,
            Who::Operator,
            json_ct,
            json_bytes(body),
            status,
            needle,
        ));
    }

    // Enrolment (the one-time token is the credential, in the body).
    let token = api
        .op(
            Method::POST,
            &format!("/v1/studies/{s}/enrolment-tokens"),
            Some(json!({"label": "t"})),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let enrol_path = "/v1/participant/enrol";
    for (what, ct, body, status, needle) in [
        (
            "malformed JSON",
            json_ct,
            b"{\"token\":".to_vec(),
            400,
            "failed to parse",
        ),
        (
            "unknown field",
            json_ct,
            json_bytes(json!({"token": token, "name": "n", "x": 1})),
            422,
            "unknown field `x`",
        ),
        (
            "missing field",
            json_ct,
            json_bytes(json!({"token": token})),
            422,
            "missing field `name`",
        ),
        (
            "unknown token",
            json_ct,
            json_bytes(json!({"token": "nope", "name": "n"})),
            422,
            "unknown, expired or already used",
        ),
        (
            "a participant credential as token",
            json_ct,
            json_bytes(json!({"token": c1, "name": "n"})),
            422,
            "unknown, expired or already used",
        ),
        (
            "taken name",
            json_ct,
            json_bytes(json!({"token": token, "name": "alpha"})),
            409,
            "already enrolled",
        ),
        (
            "empty name",
            json_ct,
            json_bytes(json!({"token": token, "name": " "})),
            422,
            "name must be",
        ),
        (
            "text/plain",
            "text/plain",
            json_bytes(json!({"token": token, "name": "n"})),
            415,
            "content-type",
        ),
        (
            "oversized body",
            json_ct,
            oversized.clone(),
            413,
            "too large",
        ),
    ] {
        cases.push(case(
            format!("enrol with {what}"),
            &post,
            enrol_path,
            Who::Nobody,
            ct,
            body,
            status,
            needle,
        ));
    }

    // Participant routes: credentials.
    let participant_routes: Vec<(Method, String, &'static str, Vec<u8>)> = vec![
        (get.clone(), "/v1/participant/task".into(), "", Vec::new()),
        (
            get.clone(),
            "/v1/participant/models/0".into(),
            "",
            Vec::new(),
        ),
        (
            post.clone(),
            msg("advertise_keys"),
            json_ct,
            json_bytes(keys(sa.round_id, 1)),
        ),
        (
            get.clone(),
            format!("/v1/participant/rounds/{rid}/broadcast/share_keys"),
            "",
            Vec::new(),
        ),
    ];
    for (method, path, ct, body) in &participant_routes {
        for (who, status, needle) in [
            (Who::Nobody, 401, "missing Authorization"),
            (Who::Bogus, 401, "unknown participant credential"),
            (Who::Basic, 401, "must be 'Bearer <token>'"),
            (
                Who::Operator,
                403,
                "needs a participant credential; an operator token was given",
            ),
        ] {
            cases.push(case(
                format!("{method} {path} as {who:?}"),
                method,
                path,
                who,
                ct,
                body.clone(),
                status,
                needle,
            ));
        }
    }
    // Participant routes: query and path parameters.
    for (query, needle) in [
        ("wait=1", "unknown field `wait`"),
        ("wait_secs=abc", "invalid digit"),
        ("wait_secs=-1", "invalid digit"),
        ("wait_secs=99999999999999999999", "too large"),
        ("wait_secs=1&wait_secs=2", "duplicate field"),
    ] {
        cases.push(case(
            format!("task?{query}"),
            &get,
            format!("/v1/participant/task?{query}"),
            Who::P1,
            "",
            Vec::new(),
            400,
            needle,
        ));
    }
    for (path, status, needle) in [
        (
            "/v1/participant/models/abc".to_string(),
            400,
            "cannot parse",
        ),
        (
            "/v1/participant/models/7".into(),
            404,
            "model version not found",
        ),
        (
            "/v1/participant/rounds/abc/broadcast/share_keys".to_string(),
            400,
            "cannot parse",
        ),
        (
            "/v1/participant/rounds/987654/broadcast/share_keys".to_string(),
            404,
            "round not found",
        ),
        (
            format!("/v1/participant/rounds/{rid}/broadcast/gossip"),
            404,
            "unknown stage \"gossip\"",
        ),
        (
            format!("/v1/participant/rounds/{rid}/broadcast/finished"),
            404,
            "unknown stage \"finished\"",
        ),
        (
            format!("/v1/participant/rounds/{rid}/broadcast/advertise_keys"),
            404,
            "advertise_keys has no broadcast",
        ),
        (
            format!("/v1/participant/rounds/{rid}/broadcast/share_keys"),
            409,
            "no share_keys broadcast",
        ),
    ] {
        cases.push(case(
            format!("GET {path}"),
            &get,
            path,
            Who::P1,
            "",
            Vec::new(),
            status,
            needle,
        ));
    }
    cases.push(case(
        "broadcast of another study's round",
        &get,
        format!("/v1/participant/rounds/{rid}/broadcast/share_keys"),
        Who::Outsider,
        "",
        Vec::new(),
        404,
        "round not found",
    ));
    cases.push(case(
        "broadcast for a participant not selected",
        &get,
        format!("/v1/participant/rounds/{rid}/broadcast/share_keys"),
        Who::Late,
        "",
        Vec::new(),
        403,
        "was not selected",
    ));

    // Protocol messages.
    let msgs: Vec<MessageCase> = vec![
        (
            "malformed JSON",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            b"{oops".to_vec(),
            400,
            "invalid advertise_keys message",
        ),
        (
            "not UTF-8",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            vec![0xff, 0xfe],
            400,
            "not UTF-8",
        ),
        (
            "unknown field",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes({
                let mut k = keys(sa.round_id, 1);
                k["colour"] = json!("blue");
                k
            }),
            400,
            "unknown field `colour`",
        ),
        (
            "missing field",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes(json!({"version": 1, "round_id": sa.round_id, "sender": 1})),
            400,
            "missing field",
        ),
        (
            "bad base64 key",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes({
                let mut k = keys(sa.round_id, 1);
                k["mask_public_key"] = json!("***");
                k
            }),
            400,
            "invalid advertise_keys message",
        ),
        (
            "wire version 2",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes({
                let mut k = keys(sa.round_id, 1);
                k["version"] = json!(2);
                k
            }),
            400,
            "unsupported message version 2",
        ),
        (
            "another participant's sender id",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes(keys(sa.round_id, 0)),
            403,
            "claims sender 0, this participant is 1",
        ),
        (
            "a sender id out of range",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes(keys(sa.round_id, 7)),
            403,
            "claims sender 7",
        ),
        (
            "another round's secagg id",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes(keys(old_sa.round_id, 1)),
            409,
            "names secure-aggregation round",
        ),
        (
            "a duplicate",
            msg("advertise_keys"),
            Who::P1,
            json_ct,
            json_bytes(keys(sa.round_id, 0)),
            409,
            "already sent its advertise_keys message",
        ),
        (
            "the wrong stage",
            msg("unmasking"),
            Who::P1,
            json_ct,
            json_bytes(unmasking.clone()),
            409,
            "is in stage advertise_keys, not unmasking",
        ),
        (
            "a masked input in the wrong stage",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            masked(sa.round_id, 1, vector_len),
            409,
            "is in stage advertise_keys",
        ),
        (
            "a finished round",
            format!("/v1/participant/rounds/{old}/messages/advertise_keys"),
            Who::P2,
            json_ct,
            json_bytes(keys(old_sa.round_id, 1)),
            409,
            format!("round {old} is finished").leak(),
        ),
        (
            "a round of another study",
            msg("advertise_keys"),
            Who::Outsider,
            json_ct,
            json_bytes(keys(sa.round_id, 0)),
            404,
            "round not found",
        ),
        (
            "a participant not selected",
            msg("advertise_keys"),
            Who::Late,
            json_ct,
            json_bytes(keys(sa.round_id, 2)),
            403,
            "was not selected",
        ),
        (
            "an unknown round",
            "/v1/participant/rounds/987654/messages/advertise_keys".into(),
            Who::P2,
            json_ct,
            json_bytes(keys(sa.round_id, 1)),
            404,
            "round not found",
        ),
        (
            "a non-numeric round",
            "/v1/participant/rounds/abc/messages/advertise_keys".into(),
            Who::P2,
            json_ct,
            json_bytes(keys(sa.round_id, 1)),
            400,
            "cannot parse",
        ),
        (
            "an unknown stage",
            msg("gossip"),
            Who::P2,
            json_ct,
            json_bytes(keys(sa.round_id, 1)),
            404,
            "unknown stage \"gossip\"",
        ),
        (
            "JSON sent as binary",
            msg("advertise_keys"),
            Who::P2,
            bin_ct,
            json_bytes(keys(sa.round_id, 1)),
            415,
            "must be sent as application/json",
        ),
        (
            "a masked input sent as JSON",
            msg("masked_input_collection"),
            Who::P2,
            json_ct,
            masked(sa.round_id, 1, vector_len),
            415,
            "must be sent as application/octet-stream",
        ),
        (
            "an oversized JSON message",
            msg("advertise_keys"),
            Who::P2,
            json_ct,
            oversized.clone(),
            413,
            "larger than",
        ),
        (
            "a short masked input",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            masked(sa.round_id, 1, vector_len - 1),
            400,
            "masked input has",
        ),
        (
            "an oversized masked input",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            masked(sa.round_id, 1, vector_len + 1),
            413,
            "larger than",
        ),
        (
            "a masked input whose header lies",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            {
                let mut m = masked(sa.round_id, 1, vector_len);
                m.truncate(m.len() - 4);
                m
            },
            400,
            "invalid masked_input_collection message",
        ),
        (
            "a masked input without header",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            vec![0; 10],
            400,
            "invalid masked_input_collection message",
        ),
        (
            "a masked input of another round",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            masked(old_sa.round_id, 1, vector_len),
            409,
            "names secure-aggregation round",
        ),
        (
            "a masked input from another sender",
            msg("masked_input_collection"),
            Who::P2,
            bin_ct,
            masked(sa.round_id, 0, vector_len),
            403,
            "claims sender 0",
        ),
    ];
    for (what, path, who, ct, body, status, needle) in msgs {
        cases.push(case(
            format!("message: {what}"),
            &post,
            path,
            who,
            ct,
            body,
            status,
            needle,
        ));
    }
    // Routes and methods that do not exist.
    cases.push(case(
        "unknown route",
        &get,
        "/v1/nothing",
        Who::Operator,
        "",
        Vec::new(),
        404,
        "no such route",
    ));
    cases.push(case(
        "wrong method",
        &get,
        enrol_path,
        Who::Nobody,
        "",
        Vec::new(),
        405,
        "GET is not allowed on /v1/participant/enrol",
    ));
    cases.push(case(
        "wrong method on an operator route",
        &Method::DELETE,
        format!("/v1/studies/{s}"),
        Who::Operator,
        "",
        Vec::new(),
        405,
        "DELETE is not allowed",
    ));
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        cases.push(case(
            format!("POST {path}"),
            &post,
            path,
            Who::Nobody,
            json_ct,
            b"{}".to_vec(),
            405,
            "POST is not allowed",
        ));
    }

    let credential = |who: Who| -> Option<String> {
        match who {
            Who::Nobody | Who::Basic => None,
            Who::Operator => Some(api.op.clone()),
            Who::P1 => Some(c1.clone()),
            Who::P2 => Some(c2.clone()),
            Who::Late => Some(c_late.clone()),
            Who::Outsider => Some(c_out.clone()),
            Who::Bogus => Some("bogus-token".into()),
        }
    };
    let total = cases.len();
    let mut failures = Vec::new();
    for c in cases {
        let before = db.store.state_fingerprint().await.unwrap();
        let mut req = Request::builder().method(c.method.clone()).uri(&c.path);
        match (c.who, credential(c.who)) {
            (Who::Basic, _) => req = req.header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
            (_, Some(t)) => req = req.header("authorization", format!("Bearer {t}")),
            _ => {}
        }
        if !c.content_type.is_empty() {
            req = req.header("content-type", c.content_type);
        }
        let resp = confide_coordinator::http::router(api.state.clone())
            .oneshot(req.body(Body::from(c.body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        let after = db.store.state_fingerprint().await.unwrap();
        if status != c.status
            || message.is_empty()
            || !message.to_lowercase().contains(&c.needle.to_lowercase())
            || before != after
        {
            failures.push(format!(
                "{}: {} {} → {status} {:?} (expected {} with {:?}){}",
                c.what,
                c.method,
                c.path,
                String::from_utf8_lossy(&body),
                c.status,
                c.needle,
                if before != after {
                    format!("; STORED ROWS CHANGED:\n  {before}\n  {after}")
                } else {
                    String::new()
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total > 150, "{total} cases");
    api.state.shutdown.cancel();
}
both_backends!(
    every_route_refuses_bad_input_and_changes_nothing,
    bad_input_matrix
);

/// Round and dropout counters exist at 0 for every study from its creation, after a restart, and in a process that
/// did not create the study — so that dashboards show 0 rather than no data.
async fn zero_counters(db: &TestDb) {
    let expected = |study: i64| -> Vec<String> {
        let mut lines: Vec<String> = ["completed", "aborted"]
            .iter()
            .map(|o| format!("confide_rounds_total{{outcome=\"{o}\",study=\"{study}\"}} 0"))
            .collect();
        for stage in [
            "advertise_keys",
            "share_keys",
            "masked_input_collection",
            "unmasking",
        ] {
            lines.push(format!(
                "confide_participant_dropouts_total{{stage=\"{stage}\",study=\"{study}\"}} 0"
            ));
        }
        lines
    };
    let missing = |text: &str, study: i64| -> Vec<String> {
        expected(study)
            .into_iter()
            .filter(|l| !text.lines().any(|t| t == l))
            .collect()
    };
    let api = Api::new(db).await;
    let s = create_study(&api, "counted").await;
    let r = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        missing(&text, s).is_empty(),
        "{:?}\n{text}",
        missing(&text, s)
    );
    api.state.shutdown.cancel();

    // A restarted process reloads them from the database.
    let restarted = confide_coordinator::start(db.store.clone(), Limits::default())
        .await
        .unwrap();
    let text = restarted.metrics.render().unwrap();
    assert!(
        missing(&text, s).is_empty(),
        "{:?}\n{text}",
        missing(&text, s)
    );

    // A study created through another process shows up within the supervisor's period (1 s).
    let other = Api::new_with_token(db, "second-operator").await;
    let s2 = create_study(&other, "elsewhere").await;
    other.state.shutdown.cancel();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = restarted.metrics.render().unwrap();
        if missing(&text, s2).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "{:?}\n{text}",
            missing(&text, s2)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    restarted.shutdown.cancel();
}
both_backends!(round_and_dropout_counters_start_at_zero, zero_counters);
