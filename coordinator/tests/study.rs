//! Study creation beyond the bad-input matrix: uploaded initial weights, the derived quantisation range and the
//! warnings a study carries — on SQLite and Postgres, over real HTTP.

mod support;

use base64::Engine;
use confide_common::api::{DpParams, LocalTraining};
use confide_common::model::{ModelSpec, decode_safetensors, encode_safetensors};
use confide_common::plan::update_bound;
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::TestDb;
use support::sim::Http;

fn request(name: &str) -> Value {
    json!({
        "name": name,
        "model_spec": {"kind": "logistic_regression", "input_dim": 3, "num_classes": 2},
        "dp": {"sampling_rate": 0.1, "noise_multiplier": 1.5, "local_epochs": 1, "clip_norm": 1.0,
               "expected_batch_size": 8.0},
        "secagg": {"graph": {"kind": "complete"}, "quantisation": {"bits": 32}},
        "budget": {"epsilon": 5.0, "delta": 1e-5},
        "rounds": 3,
        "min_participants": 3
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn serve(db: &TestDb) -> (Http, String, tokio_util::sync::CancellationToken) {
    let limits = Limits {
        model_bytes: 4096,
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
    (Http::new(&format!("http://{addr}")), op, stop)
}

async fn initial_weights(db: &TestDb) {
    let (http, op, stop) = serve(db).await;
    let spec = ModelSpec::from_json(&request("x")["model_spec"].to_string()).unwrap();
    let weights: Vec<f32> = (0..spec.num_parameters())
        .map(|i| i as f32 * 0.25 - 1.0)
        .collect();
    let mut req = request("uploaded");
    req["initial_weights"] = json!(b64(&encode_safetensors(&spec, &weights).unwrap()));
    let (status, study) = http.post_json("/v1/studies", Some(&op), &req).await;
    assert_eq!(status, 201, "{study}");
    assert!(
        study["config"].get("initial_weights").is_none(),
        "the upload is not echoed: {study}"
    );
    let sid = study["id"].as_i64().unwrap();
    let (stored, _) = db.store.model_weights(sid, 0).await.unwrap();
    assert_eq!(decode_safetensors(&spec, &stored).unwrap(), weights);

    // Wrong model, not base64, non-finite values, over the size limit: refused with what was wrong, nothing stored.
    let other =
        ModelSpec::from_json(r#"{"kind":"logistic_regression","input_dim":4,"num_classes":2}"#)
            .unwrap();
    let before = db.store.state_fingerprint().await.unwrap();
    let mut nan = weights.clone();
    nan[1] = f32::NAN;
    for (value, needle) in [
        (
            b64(&encode_safetensors(&other, &other.initial_parameters(1)).unwrap()),
            "differs from model_spec",
        ),
        ("%%% not base64".to_string(), "not valid base64"),
        (b64(b"not safetensors"), "initial_weights"),
        (
            b64(&encode_safetensors(&spec, &nan).unwrap_or_default()),
            "initial_weights",
        ),
        (b64(&vec![0u8; 100_000]), "model-size limit"),
    ] {
        let mut bad = request("bad-upload");
        bad["initial_weights"] = json!(value);
        let (status, err) = http.post_json("/v1/studies", Some(&op), &bad).await;
        assert_eq!(status, 422, "{needle}: {err}");
        assert!(
            err["error"].as_str().unwrap_or_default().contains(needle),
            "{needle}: {err}"
        );
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    stop.cancel();
}
both_backends!(initial_weights_are_uploaded_and_checked, initial_weights);

async fn quantisation_range(db: &TestDb) {
    let (http, op, stop) = serve(db).await;
    let dp: DpParams = serde_json::from_value(request("x")["dp"].clone()).unwrap();
    let bound = update_bound(&dp, &LocalTraining::default());
    // Omitted: derived from the DP parameters, stored, no warning.
    let (status, study) = http
        .post_json("/v1/studies", Some(&op), &request("derived"))
        .await;
    assert_eq!(status, 201, "{study}");
    assert_eq!(
        study["config"]["secagg"]["quantisation"]["clip_range"].as_f64(),
        Some(bound)
    );
    assert_eq!(study["warnings"], json!([]));
    // Given below the bound: accepted, with a warning that says how it was decided, also when read back.
    let mut req = request("narrow");
    req["secagg"]["quantisation"]["clip_range"] = json!(bound / 4.0);
    let (status, study) = http.post_json("/v1/studies", Some(&op), &req).await;
    assert_eq!(status, 201, "{study}");
    let warning = study["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        warning.contains("clip_range") && warning.contains("clamped"),
        "{study}"
    );
    let (_, again) = http
        .get_json(&format!("/v1/studies/{}", study["id"]), &op)
        .await;
    assert_eq!(again["warnings"][0].as_str(), Some(warning.as_str()));
    stop.cancel();
}
both_backends!(
    quantisation_range_is_derived_or_warned_about,
    quantisation_range
);
