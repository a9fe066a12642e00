//! The bad-input matrix: every route against every kind of bad input it can receive, on SQLite and Postgres. Each
//! request must be a 4xx whose message names what was wrong, and leave every stored row as it was. Requests are
//! raw (through the real router) on purpose: most of them are nothing a typed client would send.
//!
//! The cases are tables, one per kind of input (credentials, ids, bodies, queries, paths, protocol messages), with
//! one builder per protocol message kind.

mod support;

use axum::http::{Method, StatusCode};
use confide_common::secagg::{MaskedInput, SecAggParams};
use serde_json::{Value, json};
use support::TestDb;
use support::router::{Api, Auth, study_request};

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
use Who::*;

/// A request body and its content type.
#[derive(Clone)]
enum Body {
    None,
    Json(Vec<u8>),
    Binary(Vec<u8>),
    /// Bytes under another (or no) content type.
    As(&'static str, Vec<u8>),
}

impl Body {
    fn json(v: Value) -> Self {
        Self::Json(Self::json_bytes(v))
    }

    fn json_bytes(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }
}

struct Case {
    what: String,
    method: Method,
    path: String,
    who: Who,
    body: Body,
    status: u16,
    needle: String,
}

fn case(
    what: impl Into<String>,
    method: &Method,
    path: impl Into<String>,
    who: Who,
    body: Body,
) -> Case {
    Case {
        what: what.into(),
        method: method.clone(),
        path: path.into(),
        who,
        body,
        status: 0,
        needle: String::new(),
    }
}

impl Case {
    fn expect(mut self, status: u16, needle: impl Into<String>) -> Self {
        self.status = status;
        self.needle = needle.into();
        self
    }
}

// ---- one builder per protocol message kind ----

fn advertise_keys(round: u64, sender: u32) -> Value {
    let key = |b: u8| base64_of(&[b; 32]);
    json!({"version": 2, "round_id": round, "sender": sender,
           "cipher_public_key": key(9), "mask_public_key": key(10)})
}

fn masked_input(round: u64, sender: u32, len: usize) -> Vec<u8> {
    MaskedInput {
        round_id: round,
        sender,
        values: vec![1; len],
    }
    .encode()
}

fn unmasking_response(round: u64, sender: u32) -> Value {
    json!({"version": 2, "round_id": round, "sender": sender, "self_mask_shares": [], "mask_key_shares": []})
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A study with an aborted round and an active one (advertise_keys; alpha has answered), a late enrolee, another
/// study with its own participant.
struct World {
    api: Api,
    study: i64,
    other: i64,
    /// The active round and its secure-aggregation parameters.
    rid: i64,
    sa: SecAggParams,
    /// The aborted round and its secure-aggregation parameters.
    old: i64,
    old_sa: SecAggParams,
    p2: i64,
    /// Credentials of P1, P2, Late and Outsider.
    creds: [String; 4],
    /// An unused enrolment token of the study.
    token: String,
}

impl World {
    async fn new(db: &TestDb) -> Self {
        let api = Api::new(db).await;
        let study = api.create_study(study_request("main")).await;
        let other = api.create_study(study_request("other")).await;
        let (_, c1) = api.enrol(study, "alpha").await;
        let (p2, c2) = api.enrol(study, "beta").await;
        api.enrol(study, "delta").await;
        let (_, c_out) = api.enrol(other, "gamma").await;
        let rounds = format!("/v1/studies/{study}/rounds");
        let old = api.op(Method::POST, &rounds, Some(json!({}))).await.json()["id"]
            .as_i64()
            .unwrap();
        let abort = format!("/v1/rounds/{old}/abort");
        let r = api
            .op(Method::POST, &abort, Some(json!({"reason": "test"})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = api.op(Method::POST, &rounds, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let rid = r.json()["id"].as_i64().unwrap();
        let (_, c_late) = api.enrol(study, "late").await;
        let plan = |round: i64| {
            let store = db.store.clone();
            async move {
                let row = store.get_round(round).await.unwrap();
                confide_coordinator::service::rounds::RoundPlan::parse(&row)
                    .unwrap()
                    .secagg
            }
        };
        let (sa, old_sa) = (plan(rid).await, plan(old).await);
        let tokens = format!("/v1/studies/{study}/enrolment-tokens");
        let token = api
            .op(Method::POST, &tokens, Some(json!({"label": "t"})))
            .await
            .json()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let before = db.store.state_fingerprint().await.unwrap();
        let keys = Body::json(advertise_keys(sa.round_id, 0));
        let r = send(
            &api,
            &Method::POST,
            &msg(rid, "advertise_keys"),
            Auth::Bearer(&c1),
            keys,
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
        assert_ne!(
            before,
            db.store.state_fingerprint().await.unwrap(),
            "the fingerprint sees an accepted message"
        );
        let creds = [c1, c2, c_late, c_out];
        Self {
            api,
            study,
            other,
            rid,
            sa,
            old,
            old_sa,
            p2,
            creds,
            token,
        }
    }

    fn auth(&self, who: Who) -> Auth<'_> {
        match who {
            Nobody => Auth::None,
            Basic => Auth::Basic,
            Bogus => Auth::Bearer("bogus-token"),
            Operator => Auth::Bearer(&self.api.op),
            P1 => Auth::Bearer(&self.creds[0]),
            P2 => Auth::Bearer(&self.creds[1]),
            Late => Auth::Bearer(&self.creds[2]),
            Outsider => Auth::Bearer(&self.creds[3]),
        }
    }
}

fn msg(round: i64, stage: &str) -> String {
    format!("/v1/participant/rounds/{round}/messages/{stage}")
}

async fn send(
    api: &Api,
    method: &Method,
    path: &str,
    auth: Auth<'_>,
    body: Body,
) -> support::router::Reply {
    let (ct, bytes) = match body {
        Body::None => ("", Vec::new()),
        Body::Json(b) => ("application/json", b),
        Body::Binary(b) => ("application/octet-stream", b),
        Body::As(ct, b) => (ct, b),
    };
    api.send(method.clone(), path, auth, ct, bytes).await
}

/// Larger than the 64 KiB JSON limit of [`Api`]; the create-study body may also carry initial weights, so its
/// limit is the JSON limit plus the model-size limit (16 KiB) in base64.
fn oversized(create_study: bool) -> Vec<u8> {
    let limit = if create_study {
        64 * 1024 + 16 * 1024 * 4 / 3
    } else {
        64 * 1024
    };
    vec![b' '; limit + 1]
}

// ---- the tables ----

/// An operator route: method, path with `{id}` where an id goes, a valid body, (the valid id, what an unknown id
/// is called).
type OperatorRoute = (
    Method,
    String,
    Option<Value>,
    Option<(String, &'static str)>,
);

/// Every operator route.
#[rustfmt::skip]
fn operator_routes(w: &World) -> Vec<OperatorRoute> {
    let (s, other, rid) = (w.study.to_string(), w.other.to_string(), w.rid.to_string());
    let study = |id: &str| Some((id.to_string(), "study not found"));
    vec![
        (Method::POST, "/v1/studies".into(), Some(study_request("new")), None),
        (Method::GET, "/v1/studies".into(), None, None),
        (Method::GET, "/v1/studies/{id}".into(), None, study(&s)),
        (Method::POST, "/v1/studies/{id}/enrolment-tokens".into(), Some(json!({"label": "x"})), study(&s)),
        (Method::GET, "/v1/studies/{id}/participants".into(), None, study(&s)),
        (Method::POST, "/v1/studies/{id}/rounds".into(), Some(json!({})), study(&other)),
        (Method::GET, "/v1/studies/{id}/rounds".into(), None, study(&s)),
        (Method::GET, "/v1/studies/{id}/models".into(), None, study(&s)),
        (Method::GET, format!("/v1/studies/{s}/models/{{id}}"), None, Some(("0".into(), "model version not found"))),
        (Method::GET, "/v1/studies/{id}/models/0".into(), None, study(&s)),
        (Method::GET, "/v1/studies/{id}/privacy".into(), None, study(&s)),
        (Method::GET, "/v1/rounds/{id}".into(), None, Some((rid.clone(), "round not found"))),
        (Method::POST, "/v1/rounds/{id}/abort".into(), Some(json!({"reason": "x"})), Some((rid, "round not found"))),
    ]
}

/// Each operator route with bad credentials, bad ids and bad bodies.
#[rustfmt::skip]
fn operator_route_cases(w: &World) -> Vec<Case> {
    let mut cases = Vec::new();
    for (method, template, body, id) in operator_routes(w) {
        let valid = match &id {
            Some((value, _)) => template.replace("{id}", value),
            None => template.clone(),
        };
        let valid_body = body.clone().map_or(Body::None, Body::json);
        let route = format!("{method} {template}");
        for (who, status, needle) in [
            (Nobody, 401, "missing Authorization"),
            (Bogus, 401, "unknown operator token"),
            (Basic, 401, "must be 'Bearer <token>'"),
            (P1, 403, "needs an operator token; a participant credential was given"),
        ] {
            cases.push(case(format!("{route} as {who:?}"), &method, &valid, who, valid_body.clone()).expect(status, needle));
        }
        if let Some((_, unknown)) = id {
            for (bad, status, needle) in [
                ("abc", 400, "cannot parse"),
                ("99999999999999999999", 400, "cannot parse"),
                ("1.5", 400, "cannot parse"),
                ("987654", 404, unknown),
                ("-1", 404, unknown),
            ] {
                let path = template.replace("{id}", bad);
                cases.push(case(format!("{route} id {bad}"), &method, path, Operator, valid_body.clone()).expect(status, needle));
            }
        }
        let Some(body) = body else { continue };
        let bytes = body.to_string().into_bytes();
        let mut unknown = body;
        unknown["colour"] = json!("blue");
        for (what, bad, status, needle) in [
            ("malformed JSON", Body::Json(b"{oops".to_vec()), 400, "failed to parse"),
            ("empty body", Body::Json(Vec::new()), 400, "failed to parse"),
            ("a JSON array", Body::Json(b"[]".to_vec()), 422, "must be a JSON object"),
            ("a JSON string", Body::Json(b"\"x\"".to_vec()), 422, "must be a JSON object"),
            ("text/plain", Body::As("text/plain", bytes.clone()), 415, "content-type"),
            ("no content type", Body::As("", bytes.clone()), 415, "content-type"),
            ("oversized body", Body::Json(oversized(template == "/v1/studies")), 413, "too large"),
            ("an unknown field", Body::json(unknown.clone()), 422, "unknown field `colour`"),
        ] {
            cases.push(case(format!("{route} with {what}"), &method, &valid, Operator, bad).expect(status, needle));
        }
    }
    cases
}

/// Operator requests refused for what they ask: duplicates, rules, finished rounds.
#[rustfmt::skip]
fn operator_request_cases(w: &World) -> Vec<Case> {
    let (s, other, old, rid, p2) = (w.study, w.other, w.old, w.rid, w.p2);
    let post = |path: String, body: Value| case(format!("POST {path} {body}"), &Method::POST, path, Operator, Body::json(body));
    vec![
        post("/v1/studies".into(), study_request("main")).expect(409, "a study named \"main\" already exists"),
        post(format!("/v1/studies/{s}/rounds"), json!({})).expect(409, "already has an active round"),
        post(format!("/v1/studies/{other}/rounds"), json!({})).expect(422, "needs at least 3"),
        post(format!("/v1/studies/{other}/rounds"), json!({"participants": [p2]})).expect(422, format!("participant {p2} is not enrolled")),
        post(format!("/v1/studies/{s}/rounds"), json!({"participants": "all"})).expect(422, "invalid type"),
        post(format!("/v1/rounds/{old}/abort"), json!({"reason": "again"})).expect(409, "already finished"),
        post(format!("/v1/rounds/{rid}/abort"), json!({"reason": ""})).expect(422, "reason must be"),
        post(format!("/v1/studies/{s}/enrolment-tokens"), json!({"label": "x", "expires_in_secs": 0})).expect(422, "expires_in_secs"),
        post(format!("/v1/studies/{s}/enrolment-tokens"), json!({"label": "a\nb"})).expect(422, "label must be"),
    ]
}

/// Enrolment: the one-time token is the credential, in the body.
#[rustfmt::skip]
fn enrol_cases(w: &World) -> Vec<Case> {
    let (token, c1) = (&w.token, &w.creds[0]);
    let enrol = |what: &str, body: Body| case(format!("enrol with {what}"), &Method::POST, "/v1/participant/enrol", Nobody, body);
    let valid = json!({"token": token, "name": "n"}).to_string().into_bytes();
    vec![
        enrol("malformed JSON", Body::Json(b"{\"token\":".to_vec())).expect(400, "failed to parse"),
        enrol("unknown field", Body::json(json!({"token": token, "name": "n", "x": 1}))).expect(422, "unknown field `x`"),
        enrol("missing field", Body::json(json!({"token": token}))).expect(422, "missing field `name`"),
        enrol("unknown token", Body::json(json!({"token": "nope", "name": "n"}))).expect(422, "unknown, expired or already used"),
        enrol("a participant credential as token", Body::json(json!({"token": c1, "name": "n"}))).expect(422, "unknown, expired or already used"),
        enrol("taken name", Body::json(json!({"token": token, "name": "alpha"}))).expect(409, "already enrolled"),
        enrol("empty name", Body::json(json!({"token": token, "name": " "}))).expect(422, "name must be"),
        enrol("text/plain", Body::As("text/plain", valid)).expect(415, "content-type"),
        enrol("oversized body", Body::Json(oversized(false))).expect(413, "too large"),
    ]
}

/// Participant routes: credentials, query and path parameters.
#[rustfmt::skip]
fn participant_route_cases(w: &World) -> Vec<Case> {
    let (rid, sa) = (w.rid, &w.sa);
    let (get, post) = (&Method::GET, &Method::POST);
    let mut cases = Vec::new();
    let share_keys = format!("/v1/participant/rounds/{rid}/broadcast/share_keys");
    for (method, path, body) in [
        (get, "/v1/participant/task".to_string(), Body::None),
        (get, "/v1/participant/models/0".into(), Body::None),
        (post, msg(rid, "advertise_keys"), Body::json(advertise_keys(sa.round_id, 1))),
        (get, share_keys.clone(), Body::None),
    ] {
        for (who, status, needle) in [
            (Nobody, 401, "missing Authorization"),
            (Bogus, 401, "unknown participant credential"),
            (Basic, 401, "must be 'Bearer <token>'"),
            (Operator, 403, "needs a participant credential; an operator token was given"),
        ] {
            cases.push(case(format!("{method} {path} as {who:?}"), method, &path, who, body.clone()).expect(status, needle));
        }
    }
    for (query, needle) in [
        ("wait=1", "unknown field `wait`"),
        ("wait_secs=abc", "invalid digit"),
        ("wait_secs=-1", "invalid digit"),
        ("wait_secs=99999999999999999999", "too large"),
        ("wait_secs=1&wait_secs=2", "duplicate field"),
    ] {
        cases.push(case(format!("task?{query}"), get, format!("/v1/participant/task?{query}"), P1, Body::None).expect(400, needle));
    }
    let broadcast = |stage: &str| format!("/v1/participant/rounds/{rid}/broadcast/{stage}");
    for (path, who, status, needle) in [
        ("/v1/participant/models/abc".to_string(), P1, 400, "cannot parse"),
        ("/v1/participant/models/7".into(), P1, 404, "model version not found"),
        ("/v1/participant/rounds/abc/broadcast/share_keys".into(), P1, 400, "cannot parse"),
        ("/v1/participant/rounds/987654/broadcast/share_keys".into(), P1, 404, "round not found"),
        (broadcast("gossip"), P1, 404, "unknown stage \"gossip\""),
        (broadcast("finished"), P1, 404, "unknown stage \"finished\""),
        (broadcast("advertise_keys"), P1, 404, "advertise_keys has no broadcast"),
        (share_keys.clone(), P1, 409, "no share_keys broadcast"),
        (share_keys.clone(), Outsider, 404, "round not found"),
        (share_keys.clone(), Late, 403, "was not selected"),
    ] {
        cases.push(case(format!("GET {path} as {who:?}"), get, path, who, Body::None).expect(status, needle));
    }
    cases
}

/// Protocol messages, built per kind, that do not parse, do not fit the round, or come from the wrong sender.
#[rustfmt::skip]
fn message_cases(w: &World) -> Vec<Case> {
    let (rid, old, round, old_round) = (w.rid, w.old, w.sa.round_id, w.old_sa.round_id);
    let len = w.sa.vector_len as usize;
    let keys = |k: fn(&mut Value)| { let mut v = advertise_keys(round, 1); k(&mut v); Body::json(v) };
    let header_lies = { let mut m = masked_input(round, 1, len); m.truncate(m.len() - 4); m };
    let m = |what: &str, path: String, who: Who, body: Body| case(format!("message: {what}"), &Method::POST, path, who, body);
    let (ak, mi) = (msg(rid, "advertise_keys"), msg(rid, "masked_input_collection"));
    vec![
        m("malformed JSON", ak.clone(), P2, Body::Json(b"{oops".to_vec())).expect(400, "invalid advertise_keys message"),
        m("not UTF-8", ak.clone(), P2, Body::Json(vec![0xff, 0xfe])).expect(400, "not UTF-8"),
        m("unknown field", ak.clone(), P2, keys(|k| k["colour"] = json!("blue"))).expect(400, "unknown field `colour`"),
        m("missing field", ak.clone(), P2, Body::json(json!({"version": 2, "round_id": round, "sender": 1}))).expect(400, "missing field"),
        m("bad base64 key", ak.clone(), P2, keys(|k| k["mask_public_key"] = json!("***"))).expect(400, "invalid advertise_keys message"),
        m("wire version 3", ak.clone(), P2, keys(|k| k["version"] = json!(3))).expect(400, "unsupported message version 3"),
        m("another participant's sender id", ak.clone(), P2, Body::json(advertise_keys(round, 0))).expect(403, "claims sender 0, this participant is 1"),
        m("a sender id out of range", ak.clone(), P2, Body::json(advertise_keys(round, 7))).expect(403, "claims sender 7"),
        m("another round's secagg id", ak.clone(), P2, Body::json(advertise_keys(old_round, 1))).expect(409, "names secure-aggregation round"),
        m("a duplicate", ak.clone(), P1, Body::json(advertise_keys(round, 0))).expect(409, "already sent its advertise_keys message"),
        m("the wrong stage", msg(rid, "unmasking"), P1, Body::json(unmasking_response(round, 0))).expect(409, "is in stage advertise_keys, not unmasking"),
        m("a masked input in the wrong stage", mi.clone(), P2, Body::Binary(masked_input(round, 1, len))).expect(409, "is in stage advertise_keys"),
        m("a finished round", msg(old, "advertise_keys"), P2, Body::json(advertise_keys(old_round, 1))).expect(409, format!("round {old} is finished")),
        m("a round of another study", ak.clone(), Outsider, Body::json(advertise_keys(round, 0))).expect(404, "round not found"),
        m("a participant not selected", ak.clone(), Late, Body::json(advertise_keys(round, 2))).expect(403, "was not selected"),
        m("an unknown round", msg(987654, "advertise_keys"), P2, Body::json(advertise_keys(round, 1))).expect(404, "round not found"),
        m("a non-numeric round", "/v1/participant/rounds/abc/messages/advertise_keys".into(), P2, Body::json(advertise_keys(round, 1))).expect(400, "cannot parse"),
        m("an unknown stage", msg(rid, "gossip"), P2, Body::json(advertise_keys(round, 1))).expect(404, "unknown stage \"gossip\""),
        m("JSON sent as binary", ak.clone(), P2, Body::Binary(Body::json_bytes(advertise_keys(round, 1)))).expect(415, "must be sent as application/json"),
        m("a masked input sent as JSON", mi.clone(), P2, Body::Json(masked_input(round, 1, len))).expect(415, "must be sent as application/octet-stream"),
        m("an oversized JSON message", ak.clone(), P2, Body::Json(oversized(false))).expect(413, "larger than"),
        m("a short masked input", mi.clone(), P2, Body::Binary(masked_input(round, 1, len - 1))).expect(400, "masked input has"),
        m("an oversized masked input", mi.clone(), P2, Body::Binary(masked_input(round, 1, len + 1))).expect(413, "larger than"),
        m("a masked input whose header lies", mi.clone(), P2, Body::Binary(header_lies)).expect(400, "invalid masked_input_collection message"),
        m("a masked input without header", mi.clone(), P2, Body::Binary(vec![0; 10])).expect(400, "invalid masked_input_collection message"),
        m("a masked input of another round", mi.clone(), P2, Body::Binary(masked_input(old_round, 1, len))).expect(409, "names secure-aggregation round"),
        m("a masked input from another sender", mi.clone(), P2, Body::Binary(masked_input(round, 0, len))).expect(403, "claims sender 0"),
    ]
}

/// Routes and methods that do not exist.
#[rustfmt::skip]
fn unknown_route_cases(w: &World) -> Vec<Case> {
    let (get, post) = (&Method::GET, &Method::POST);
    let mut cases = vec![
        case("unknown route", get, "/v1/nothing", Operator, Body::None).expect(404, "no such route"),
        case("wrong method", get, "/v1/participant/enrol", Nobody, Body::None).expect(405, "GET is not allowed on /v1/participant/enrol"),
        case("wrong method on an operator route", &Method::DELETE, format!("/v1/studies/{}", w.study), Operator, Body::None).expect(405, "DELETE is not allowed"),
    ];
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        cases.push(case(format!("POST {path}"), post, path, Nobody, Body::Json(b"{}".to_vec())).expect(405, "POST is not allowed"));
    }
    cases
}

async fn bad_input_matrix(db: &TestDb) {
    let w = World::new(db).await;
    let cases: Vec<Case> = [
        operator_route_cases(&w),
        operator_request_cases(&w),
        enrol_cases(&w),
        participant_route_cases(&w),
        message_cases(&w),
        unknown_route_cases(&w),
    ]
    .into_iter()
    .flatten()
    .collect();
    let total = cases.len();
    let mut failures = Vec::new();
    for c in cases {
        let before = db.store.state_fingerprint().await.unwrap();
        let r = send(&w.api, &c.method, &c.path, w.auth(c.who), c.body).await;
        let message = r.error();
        let after = db.store.state_fingerprint().await.unwrap();
        if r.status.as_u16() != c.status
            || message.is_empty()
            || !message.to_lowercase().contains(&c.needle.to_lowercase())
            || before != after
        {
            failures.push(format!(
                "{}: {} {} → {} {:?} (expected {} with {:?}){}",
                c.what,
                c.method,
                c.path,
                r.status,
                r.text(),
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
    assert_eq!(total, 221, "cases in the matrix");
    w.api.state.shutdown.cancel();
}
both_backends!(
    every_route_refuses_bad_input_and_changes_nothing,
    bad_input_matrix
);
