//! Metrics that describe stored state: round and dropout counters exist at 0 for every study from its creation,
//! after a restart, and in a process that did not create the study.

mod support;

use axum::http::{Method, StatusCode};
use confide_coordinator::Limits;
use support::TestDb;
use support::router::{Api, study_request};

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
    let s = api.create_study(study_request("counted")).await;
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
    let s2 = other.create_study(study_request("elsewhere")).await;
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
