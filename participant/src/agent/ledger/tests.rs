use super::*;
use confide_common::dp::ledger::epsilon;

fn event(steps: u64) -> PrivacyEvent {
    PrivacyEvent::SubsampledGaussian {
        sampling_rate: 0.1,
        noise_multiplier: 1.5,
        steps,
    }
}

fn eps(events: &[PrivacyEvent]) -> f64 {
    epsilon(events, 1e-5, AccountantKind::Pld).unwrap()
}

fn key(study_id: i64, round_id: i64) -> ChargeKey {
    ChargeKey {
        coordinator_url: "http://c".into(),
        participant_id: 4,
        enrolled_at_ms: 1000,
        study_id,
        round_id,
        round_number: round_id,
    }
}

/// A budget between one and two rounds of `event(10)`.
fn one_round_budget() -> Budget {
    Budget {
        epsilon: (eps(&[event(10)]) + eps(&[event(10), event(10)])) / 2.0,
        delta: 1e-5,
    }
}

#[tokio::test]
async fn charges_once_per_round_and_refuses_over_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    let ledger = LocalLedger::open(&path, "ds").await.unwrap();
    let budget = one_round_budget();
    assert_eq!(
        ledger.register("f1", budget).await.unwrap(),
        Registration::New
    );
    let one = eps(&[event(10)]);
    let two = eps(&[event(10), event(10)]);
    assert_eq!(
        ledger
            .charge(&key(7, 1), &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::Charged { epsilon_after: one }
    );
    // A retry of the same round does not charge again.
    assert_eq!(
        ledger
            .charge(&key(7, 1), &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::AlreadyCharged { epsilon_after: one }
    );
    assert_eq!(ledger.epsilon_with(&[event(10)], 1e-5).await.unwrap(), two);
    assert_eq!(
        ledger
            .charge(&key(7, 2), &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::OverBudget { epsilon_after: two }
    );
    let summary = ledger.summary().await.unwrap();
    assert_eq!(summary.datasets.len(), 1);
    let d = &summary.datasets[0];
    assert_eq!(
        (d.dataset_id.as_str(), d.rounds_charged, d.studies),
        ("ds", 1, 1)
    );
    assert_eq!(d.fingerprint.as_deref(), Some("f1"));
    assert_eq!(d.epsilon_spent, Some(one));
    let remaining = d.epsilon_remaining.unwrap();
    assert!((remaining - (budget.epsilon - one)).abs() < 1e-12);
    assert_eq!(summary.studies.len(), 1);
    assert_eq!(summary.studies[0].study_id, 7);
    ledger.close().await;
    // Read without writing, the same numbers.
    assert_eq!(read_summary(&path).await.unwrap(), Some(summary));
    assert_eq!(read_summary(&dir.path().join("none")).await.unwrap(), None);
}

#[tokio::test]
async fn every_study_and_enrolment_spends_the_one_dataset_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalLedger::open(&dir.path().join(LEDGER_FILE), "ds")
        .await
        .unwrap();
    let budget = one_round_budget();
    ledger.register("f1", budget).await.unwrap();
    assert!(matches!(
        ledger
            .charge(&key(1, 1), &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::Charged { .. }
    ));
    // Another study on the same data starts from what study 1 spent.
    let two = eps(&[event(10), event(10)]);
    assert_eq!(ledger.epsilon_with(&[event(10)], 1e-5).await.unwrap(), two);
    assert_eq!(
        ledger
            .charge(&key(2, 1), &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::OverBudget { epsilon_after: two }
    );
    // A re-enrolment in a recreated study (same study and round ids, new enrolment) is not a retry.
    let reenrolled = ChargeKey {
        enrolled_at_ms: 2000,
        ..key(1, 1)
    };
    assert_eq!(
        ledger
            .charge(&reenrolled, &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::OverBudget { epsilon_after: two }
    );
    // Another dataset in the same file has its own budget.
    let other = LocalLedger::open(&dir.path().join(LEDGER_FILE), "other")
        .await
        .unwrap();
    other.register("f2", budget).await.unwrap();
    assert!(matches!(
        other
            .charge(&key(2, 1), &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::Charged { .. }
    ));
    let summary = ledger.summary().await.unwrap();
    let ids: Vec<&str> = summary
        .datasets
        .iter()
        .map(|d| d.dataset_id.as_str())
        .collect();
    assert_eq!(ids, ["ds", "other"]);
    assert!(summary.datasets.iter().all(|d| d.rounds_charged == 1));
}

#[tokio::test]
async fn content_is_bound_to_one_dataset_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    let budget = one_round_budget();
    let a = LocalLedger::open(&path, "a").await.unwrap();
    a.register("bytes-1", budget).await.unwrap();
    a.charge(&key(1, 1), &[event(10)], budget).await.unwrap();
    // The same bytes under another id: refused (it would get a fresh budget).
    let b = LocalLedger::open(&path, "b").await.unwrap();
    let e = b.register("bytes-1", budget).await.unwrap_err();
    assert!(
        matches!(e, LedgerError::FingerprintOfOtherDataset { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("'a'"), "{e}");
    // The same id with new bytes: accepted, flagged, and the past spend stands.
    assert_eq!(
        a.register("bytes-2", budget).await.unwrap(),
        Registration::ContentChanged {
            previous: "bytes-1".into()
        }
    );
    assert_eq!(a.events().await.unwrap(), vec![event(10)]);
    assert_eq!(
        a.register("bytes-2", budget).await.unwrap(),
        Registration::Known
    );
    // Both contents stay bound to "a".
    assert!(b.register("bytes-2", budget).await.is_err());
    assert_eq!(
        b.register("bytes-3", budget).await.unwrap(),
        Registration::New
    );
}

#[tokio::test]
async fn a_version_1_ledger_is_assigned_to_the_configured_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    {
        let pool = SqlitePoolOptions::new()
            .connect_with(connect_options(&path).unwrap().create_if_missing(true))
            .await
            .unwrap();
        for stmt in [
            "CREATE TABLE charges (study_id INTEGER NOT NULL, round_id INTEGER NOT NULL,
             round_number INTEGER NOT NULL, events_json TEXT NOT NULL, epsilon_after REAL NOT NULL,
             created_at INTEGER NOT NULL, PRIMARY KEY (study_id, round_id))",
            "CREATE TABLE budgets (study_id INTEGER PRIMARY KEY, epsilon REAL NOT NULL, delta REAL NOT NULL,
             updated_at INTEGER NOT NULL)",
        ] {
            sqlx::query(stmt).execute(&pool).await.unwrap();
        }
        let json = serde_json::to_string(&[event(10)]).unwrap();
        for (study, round) in [(1, 1), (1, 2), (3, 9)] {
            sqlx::query("INSERT INTO charges VALUES ($1, $2, $2, $3, 0.5, 0)")
                .bind(study)
                .bind(round)
                .bind(&json)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let e = read_summary(&path).await.unwrap_err();
    assert!(matches!(e, LedgerError::Legacy(_)), "{e}");
    let ledger = LocalLedger::open(&path, "ds").await.unwrap();
    assert_eq!(
        ledger.register("f1", one_round_budget()).await.unwrap(),
        Registration::Known
    );
    assert_eq!(ledger.events().await.unwrap(), vec![event(10); 3]);
    // Reopening does not migrate (or duplicate) again.
    ledger.close().await;
    let ledger = LocalLedger::open(&path, "ds").await.unwrap();
    let summary = ledger.summary().await.unwrap();
    assert_eq!(summary.datasets[0].rounds_charged, 3);
    assert_eq!(summary.datasets[0].studies, 2);
    assert_eq!(summary.studies.len(), 2);
    assert_eq!(summary.studies[0].coordinator_url, None);
    // The budget check counts the migrated spend.
    let all = eps(&[event(10); 4]);
    assert_eq!(ledger.epsilon_with(&[event(10)], 1e-5).await.unwrap(), all);
}

#[tokio::test]
async fn agents_sharing_a_ledger_file_are_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    let budget = one_round_budget();
    // Two agents (one per study) on the same data: two connections to one file, charging at once.
    let a = LocalLedger::open(&path, "ds").await.unwrap();
    let b = LocalLedger::open(&path, "ds").await.unwrap();
    a.register("f", budget).await.unwrap();
    b.register("f", budget).await.unwrap();
    let (ka, kb) = (key(1, 1), key(2, 1));
    let round = [event(10)];
    let (ra, rb) = tokio::join!(a.charge(&ka, &round, budget), b.charge(&kb, &round, budget));
    let outcomes = [ra.unwrap(), rb.unwrap()];
    let charged = outcomes
        .iter()
        .filter(|c| matches!(c, ChargeOutcome::Charged { .. }))
        .count();
    assert_eq!(charged, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|c| matches!(c, ChargeOutcome::OverBudget { .. }))
    );
}

#[tokio::test]
async fn training_and_evaluation_parts_compose_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalLedger::open(&dir.path().join(LEDGER_FILE), "ds")
        .await
        .unwrap();
    // Room for one round on each part, not for two on one.
    let budget = one_round_budget();
    ledger.register("f1", budget).await.unwrap();
    let one = eps(&[event(10)]);
    let two = eps(&[event(10), event(10)]);
    assert_eq!(
        ledger
            .charge_in(&key(7, 1), DataPartition::Training, &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::Charged { epsilon_after: one }
    );
    // The evaluation part's records were not in the training release: ε stays the larger part's, not the sum.
    assert_eq!(
        ledger
            .epsilon_with_in(DataPartition::Evaluation, &[event(10)], 1e-5)
            .await
            .unwrap(),
        one
    );
    assert_eq!(
        ledger
            .charge_in(&key(7, 2), DataPartition::Evaluation, &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::Charged { epsilon_after: one }
    );
    // A second training release composes with the first; a release of every record with both parts.
    assert_eq!(
        ledger
            .charge_in(&key(7, 3), DataPartition::Training, &[event(10)], budget)
            .await
            .unwrap(),
        ChargeOutcome::OverBudget { epsilon_after: two }
    );
    assert_eq!(
        ledger.epsilon_with(&[event(10)], 1e-5).await.unwrap(),
        two,
        "every record's release adds to both parts"
    );
    let parts: Vec<DataPartition> = ledger
        .partitioned_events()
        .await
        .unwrap()
        .iter()
        .map(|e| e.partition)
        .collect();
    assert_eq!(parts, [DataPartition::Training, DataPartition::Evaluation]);
    let summary = ledger.summary().await.unwrap();
    assert_eq!(summary.datasets[0].epsilon_spent, Some(one));
    assert_eq!(summary.studies[0].epsilon_spent, Some(one));
}

#[tokio::test]
async fn a_version_2_ledger_gets_partitions_and_its_charges_used_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    {
        let pool = SqlitePoolOptions::new()
            .connect_with(connect_options(&path).unwrap().create_if_missing(true))
            .await
            .unwrap();
        for stmt in [
            "CREATE TABLE datasets (dataset_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, epsilon REAL,
             delta REAL, registered_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)",
            "CREATE TABLE fingerprints (fingerprint TEXT PRIMARY KEY, dataset_id TEXT NOT NULL,
             first_seen_at INTEGER NOT NULL)",
            "CREATE TABLE charges (dataset_id TEXT NOT NULL, coordinator_url TEXT NOT NULL,
             participant_id INTEGER NOT NULL, enrolled_at_ms INTEGER NOT NULL, study_id INTEGER NOT NULL,
             round_id INTEGER NOT NULL, round_number INTEGER NOT NULL, events_json TEXT NOT NULL,
             epsilon_after REAL NOT NULL, created_at INTEGER NOT NULL,
             PRIMARY KEY (dataset_id, coordinator_url, participant_id, enrolled_at_ms, study_id, round_id))",
            "INSERT INTO datasets VALUES ('ds', 'f1', 1.0, 1e-5, 0, 0)",
            "PRAGMA user_version = 2",
        ] {
            sqlx::query(stmt).execute(&pool).await.unwrap();
        }
        let json = serde_json::to_string(&[event(10)]).unwrap();
        sqlx::query("INSERT INTO charges VALUES ('ds', 'http://c', 4, 1000, 7, 1, 1, $1, 0.5, 0)")
            .bind(&json)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    // Read-only, without migrating: the charge counts against both parts.
    let summary = read_summary(&path).await.unwrap().unwrap();
    assert_eq!(summary.datasets[0].epsilon_spent, Some(eps(&[event(10)])));
    let ledger = LocalLedger::open(&path, "ds").await.unwrap();
    assert_eq!(
        ledger.partitioned_events().await.unwrap(),
        [PartitionedEvent {
            partition: DataPartition::All,
            event: event(10)
        }]
    );
    assert_eq!(
        ledger
            .epsilon_with_in(DataPartition::Evaluation, &[event(10)], 1e-5)
            .await
            .unwrap(),
        eps(&[event(10), event(10)])
    );
    assert_eq!(ledger.summary().await.unwrap(), summary);
}
