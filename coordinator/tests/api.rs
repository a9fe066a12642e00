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
        let limits = Limits {
            json_body_bytes: 64 * 1024,
            max_poll: std::time::Duration::from_secs(2),
            ..Limits::default()
        };
        let state = confide_coordinator::start(db.store.clone(), limits)
            .await
            .unwrap();
        let op = db
            .store
            .create_operator_token("test-operator")
            .await
            .unwrap();
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
        "dp": {"sampling_rate": 0.1, "noise_multiplier": 1.1, "local_epochs": 1, "clip_norm": 1.0},
        "secagg": {"threshold": null, "graph": {"kind": "complete"}, "quantisation": {"clip_range": 1.0, "bits": 32}},
        "budget": {"epsilon": 5.0, "delta": 1e-5},
        "rounds": 3,
        "min_participants": 2,
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
    api.refused(
        StatusCode::NOT_FOUND,
        "no such route",
        api.call(Method::GET, "/v1/nothing", None, None),
    )
    .await;
}
both_backends!(service_endpoints_answer, service_endpoints);

async fn operator_auth(db: &TestDb) {
    let api = Api::new(db).await;
    let (_, cred) = {
        let study = create_study(&api, "s").await;
        enrol(&api, study, "alpha").await
    };
    let body = Some(study_request("x"));
    api.refused(
        StatusCode::UNAUTHORIZED,
        "missing",
        api.call(Method::POST, "/v1/studies", None, body.clone()),
    )
    .await;
    api.refused(
        StatusCode::UNAUTHORIZED,
        "unknown operator token",
        api.call(Method::POST, "/v1/studies", Some("bogus"), body.clone()),
    )
    .await;
    api.refused(
        StatusCode::UNAUTHORIZED,
        "unknown operator token",
        api.call(Method::POST, "/v1/studies", Some(&cred), body),
    )
    .await;
    api.refused(
        StatusCode::UNAUTHORIZED,
        "unknown operator token",
        api.call(Method::GET, "/v1/studies", Some(&cred), None),
    )
    .await;
    api.refused(
        StatusCode::UNAUTHORIZED,
        "unknown participant credential",
        api.call(Method::GET, "/v1/participant/task", Some(&api.op), None),
    )
    .await;
}
both_backends!(credentials_are_checked, operator_auth);

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
        "needs at least 2",
        api.op(Method::POST, &path, Some(json!({}))),
    )
    .await;
    let (p2, c2) = enrol(&api, study, "beta").await;
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
    assert_eq!(round["sets"][0]["participants"], json!([p1, p2]));
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
