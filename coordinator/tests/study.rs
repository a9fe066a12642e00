//! Study creation beyond the bad-input matrix: uploaded initial weights, the derived quantisation range and the
//! warnings a study carries — on SQLite and Postgres, over real HTTP.

mod support;

use base64::Engine;
use confide_common::api::{DpParams, LocalTraining};
use confide_common::model::{ModelSpec, decode_safetensors, encode_safetensors};
use confide_common::plan::update_bound;
use confide_coordinator::Limits;
use serde_json::{Value, json};
use support::{Served, TestDb, set, study_request, typed};

/// A study without a quantisation range (it is derived from the DP parameters).
fn request(name: &str) -> Value {
    set(
        study_request(name),
        &[
            ("/dp/sampling_rate", json!(0.1)),
            ("/dp/noise_multiplier", json!(1.5)),
            ("/secagg/quantisation", json!({"bits": 32})),
            ("/budget/epsilon", json!(5.0)),
            ("/rounds", json!(3)),
        ],
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn serve(db: &TestDb) -> Served {
    let limits = Limits {
        model_bytes: 4096,
        ..Limits::default()
    };
    Served::start(db, limits).await
}

async fn initial_weights(db: &TestDb) {
    let served = serve(db).await;
    let spec = ModelSpec::from_json(&request("x")["model_spec"].to_string()).unwrap();
    let weights: Vec<f32> = (0..spec.num_parameters())
        .map(|i| i as f32 * 0.25 - 1.0)
        .collect();
    let mut req = request("uploaded");
    req["initial_weights"] = json!(b64(&encode_safetensors(&spec, &weights).unwrap()));
    let study = served.op.create_study(&typed(&req)).await.unwrap();
    assert!(
        study.config.initial_weights.is_none(),
        "the upload is not echoed: {study:?}"
    );
    let sid = study.id;
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
        let err = served.op.create_study(&typed(&bad)).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    served.stop().await;
}
both_backends!(initial_weights_are_uploaded_and_checked, initial_weights);

async fn quantisation_range(db: &TestDb) {
    let served = serve(db).await;
    let dp: DpParams = serde_json::from_value(request("x")["dp"].clone()).unwrap();
    let bound = update_bound(&dp, &LocalTraining::default());
    // Omitted: derived from the DP parameters, stored, no warning.
    let study = served
        .op
        .create_study(&typed(&request("derived")))
        .await
        .unwrap();
    assert_eq!(study.config.secagg.quantisation.clip_range, Some(bound));
    assert!(study.warnings.is_empty(), "{study:?}");
    // Given below the bound: accepted, with a warning that says how it was decided, also when read back.
    let mut req = request("narrow");
    req["secagg"]["quantisation"]["clip_range"] = json!(bound / 4.0);
    let study = served.op.create_study(&typed(&req)).await.unwrap();
    let warning = study.warnings.first().cloned().unwrap_or_default();
    assert!(
        warning.contains("clip_range") && warning.contains("clamped"),
        "{study:?}"
    );
    let again = served.op.get_study(study.id).await.unwrap();
    assert_eq!(again.warnings, vec![warning]);
    served.stop().await;
}
both_backends!(
    quantisation_range_is_derived_or_warned_about,
    quantisation_range
);
