//! Raw requests through the real router (tower `oneshot`, no socket), for tests of the exact HTTP contract —
//! statuses, error messages, headers, malformed bodies no typed client would send — each refusal checked to leave
//! every stored row as it was.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use confide_coordinator::{Coordinator, Limits};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::TestDb;

/// The study of the router tests: 4 features, initial weights from seed 7, DP-SGD q = 0.1, σ = 1.1, quantisation
/// range 1, ε budget 5, 3 rounds, 30 s stages.
pub fn study_request(name: &str) -> Value {
    super::set(
        super::study_request(name),
        &[
            ("/model_spec/input_dim", json!(4)),
            ("/initial_weights_seed", json!(7)),
            ("/dp/sampling_rate", json!(0.1)),
            ("/dp/noise_multiplier", json!(1.1)),
            ("/secagg/quantisation/clip_range", json!(1.0)),
            ("/budget/epsilon", json!(5.0)),
            ("/rounds", json!(3)),
            ("/deadlines", super::deadlines(30)),
        ],
    )
}

/// A coordinator state of its own (as another process would have) and an operator token.
pub struct Api {
    pub state: Coordinator,
    pub op: String,
}

/// An answer: status, body, headers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The error message of a refusal (empty if there is none).
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a request carries as credentials.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// A well-formed header of another scheme.
    Basic,
}

impl Api {
    /// Small limits (64 KiB JSON, 16 KiB models, 2 s long-polls) so that oversized bodies are cheap to send.
    pub async fn new(db: &TestDb) -> Self {
        Self::new_with_token(db, "test-operator").await
    }

    pub async fn new_with_token(db: &TestDb, token_name: &str) -> Self {
        let limits = Limits {
            json_body_bytes: 64 * 1024,
            model_bytes: 16 * 1024,
            max_poll: std::time::Duration::from_secs(2),
            ..Limits::default()
        };
        let state = confide_coordinator::start(db.store.clone(), limits)
            .await
            .expect("start coordinator");
        let op = db
            .store
            .create_operator_token(token_name)
            .await
            .expect("operator token");
        Self { state, op }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
            Auth::Basic => req = req.header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
        }
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let req = req.body(Body::from(body)).expect("a request");
        let resp = confide_coordinator::http::router(self.state.clone())
            .oneshot(req)
            .await
            .expect("the router answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a body")
            .to_vec();
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let auth = token.map_or(Auth::None, Auth::Bearer);
        self.send(method, path, auth, content_type, body).await
    }

    /// A JSON request (or one without a body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        match body {
            Some(b) => {
                let bytes = b.to_string().into_bytes();
                self.raw(method, path, token, "application/json", bytes)
                    .await
            }
            None => self.raw(method, path, token, "", Vec::new()).await,
        }
    }

    /// A JSON request as the operator.
    pub async fn op(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let token = self.op.clone();
        self.call(method, path, Some(&token), body).await
    }

    /// Creates a study (the request must be valid); its id.
    pub async fn create_study(&self, req: Value) -> i64 {
        let r = self.op(Method::POST, "/v1/studies", Some(req)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["id"].as_i64().expect("a study id")
    }

    /// Enrols a participant named `name` in `study`: (participant id, credential).
    pub async fn enrol(&self, study: i64, name: &str) -> (i64, String) {
        let path = format!("/v1/studies/{study}/enrolment-tokens");
        let r = self
            .op(Method::POST, &path, Some(json!({"label": name})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let token = r.json()["token"].clone();
        let body = json!({"token": token, "name": name});
        let r = self
            .call(Method::POST, "/v1/participant/enrol", None, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let e = r.json();
        let id = e["participant_id"].as_i64().expect("a participant id");
        (
            id,
            e["credential"].as_str().expect("a credential").to_string(),
        )
    }

    /// Asserts a request is refused with `status` and a message containing `needle`, and that nothing stored changed.
    pub async fn refused(
        &self,
        status: StatusCode,
        needle: &str,
        reply: impl std::future::Future<Output = Reply>,
    ) {
        let before = self.state.store.state_fingerprint().await.unwrap();
        let r = reply.await;
        assert_eq!(r.status, status, "body: {}", r.text());
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
