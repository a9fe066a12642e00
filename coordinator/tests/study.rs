//! Study creation beyond the bad-input matrix: uploaded initial weights, the derived quantisation range, the
//! warnings a study carries and its public feature ranges — on SQLite and Postgres, over real HTTP.

mod support;

use base64::Engine;
use confide_client::CoordinatorClient;
use confide_common::api::{DpParams, LocalTraining, TaskResponse};
use confide_common::model::{ModelSpec, decode_safetensors, encode_safetensors};
use confide_common::plan::update_bound;
use confide_common::preprocessing::Preprocessing;
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

/// `n` public feature ranges named f0, f1, …, each [0, 10].
fn ranges(n: usize) -> Value {
    let ranges: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("f{i}"), "min": 0.0, "max": 10.0}))
        .collect();
    json!({ "feature_ranges": ranges })
}

async fn feature_ranges(db: &TestDb) {
    let served = serve(db).await;
    // Declared: stored, shown with the study and handed to every participant with its round task.
    let mut req = request("ranged");
    req["preprocessing"] = ranges(3);
    let expected: Preprocessing = serde_json::from_value(ranges(3)).unwrap();
    let study = served.op.create_study(&typed(&req)).await.unwrap();
    assert_eq!(study.config.preprocessing.as_ref(), Some(&expected));
    let again = served.op.get_study(study.id).await.unwrap();
    assert_eq!(again.config.preprocessing.as_ref(), Some(&expected));
    let mut credentials = Vec::new();
    for name in ["a", "b", "c"] {
        credentials.push(served.enrol(study.id, name).await.1);
    }
    support::start_round(&served.op, study.id).await;
    let participant = CoordinatorClient::new(&served.url, &credentials[0]);
    match participant.poll_task(5).await.unwrap() {
        TaskResponse::Round(task) => assert_eq!(task.preprocessing.as_ref(), Some(&expected)),
        other => panic!("expected a round task, got {other:?}"),
    }
    // A study without ranges hands out none (its agents need a statistics file of their own).
    let plain = served
        .op
        .create_study(&typed(&request("plain")))
        .await
        .unwrap();
    assert_eq!(plain.config.preprocessing, None);

    // Unusable declarations: refused with what was wrong, nothing stored.
    let before = db.store.state_fingerprint().await.unwrap();
    let mut duplicate = ranges(3);
    duplicate["feature_ranges"][2]["name"] = json!("f0");
    let mut empty_range = ranges(3);
    empty_range["feature_ranges"][1]["max"] = json!(0.0);
    let mut blank = ranges(3);
    blank["feature_ranges"][0]["name"] = json!("  ");
    for (value, needle) in [
        (ranges(2), "declares 2 feature(s), the model has 3 inputs"),
        (ranges(0), "declares 0 feature(s)"),
        (duplicate, "'f0' is declared more than once"),
        (empty_range, "feature 'f1' has range [0, 0]"),
        (blank, "feature_ranges[0]: name"),
    ] {
        let mut bad = request("bad-ranges");
        bad["preprocessing"] = value;
        let err = served.op.create_study(&typed(&bad)).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert_eq!(before, db.store.state_fingerprint().await.unwrap());
    }
    served.stop().await;
}
both_backends!(
    feature_ranges_are_stored_checked_and_sent_with_tasks,
    feature_ranges
);
