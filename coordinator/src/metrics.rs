//! Prometheus metrics of the coordinator. Gauges that describe stored state (ε spent and budgets, round counts) are
//! reloaded from the database at start-up, so a restart does not reset what Grafana shows.

use confide_common::api::{RoundOutcome, RoundStage};
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The stages whose dropouts `confide_participant_dropouts_total` counts.
pub const DROPOUT_STAGES: [RoundStage; 6] = [
    RoundStage::AdvertiseKeys,
    RoundStage::ShareKeys,
    RoundStage::ShareVerification,
    RoundStage::MaskedInputCollection,
    RoundStage::ConsistencyCheck,
    RoundStage::Unmasking,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub epsilon_spent: GaugeVec,
    pub epsilon_budget: GaugeVec,
    pub rounds_total: IntCounterVec,
    pub stage_duration: HistogramVec,
    pub round_participants: GaugeVec,
    pub dropouts_total: IntCounterVec,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration: HistogramVec,
    /// The latest federated evaluation of a study's model: accuracy and clamped loss (noisy, DP).
    pub model_accuracy: GaugeVec,
    pub model_loss: GaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let epsilon_spent = GaugeVec::new(
            Opts::new(
                "confide_privacy_epsilon_spent",
                "ε spent by a participant in a study (PLD accountant)",
            ),
            &["study", "participant"],
        )?;
        let epsilon_budget = GaugeVec::new(
            Opts::new(
                "confide_privacy_epsilon_budget",
                "ε budget of a participant in a study",
            ),
            &["study", "participant"],
        )?;
        let rounds_total = IntCounterVec::new(
            Opts::new("confide_rounds_total", "Finished rounds by outcome"),
            &["study", "outcome"],
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "confide_round_stage_duration_seconds",
                "Wall time of a round stage",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["stage"],
        )?;
        let round_participants = GaugeVec::new(
            Opts::new(
                "confide_round_participants",
                "Participants in the current round's set per stage",
            ),
            &["study", "stage"],
        )?;
        let dropouts_total = IntCounterVec::new(
            Opts::new(
                "confide_participant_dropouts_total",
                "Participants that dropped out, by stage",
            ),
            &["study", "stage"],
        )?;
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "confide_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "confide_http_request_duration_seconds",
                "HTTP request latency by route and status",
            ),
            &["route", "status"],
        )?;
        let model_accuracy = GaugeVec::new(
            Opts::new(
                "confide_model_accuracy",
                "Accuracy of a study's latest evaluated model on the sites' held-out records (federated, DP noise)",
            ),
            &["study"],
        )?;
        let model_loss = GaugeVec::new(
            Opts::new(
                "confide_model_loss",
                "Mean clamped cross-entropy loss of a study's latest evaluated model (federated, DP noise)",
            ),
            &["study"],
        )?;
        registry.register(Box::new(model_accuracy.clone()))?;
        registry.register(Box::new(model_loss.clone()))?;
        registry.register(Box::new(epsilon_spent.clone()))?;
        registry.register(Box::new(epsilon_budget.clone()))?;
        registry.register(Box::new(rounds_total.clone()))?;
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(round_participants.clone()))?;
        registry.register(Box::new(dropouts_total.clone()))?;
        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(http_request_duration.clone()))?;
        Ok(Self {
            registry,
            epsilon_spent,
            epsilon_budget,
            rounds_total,
            stage_duration,
            round_participants,
            dropouts_total,
            http_requests_total,
            http_request_duration,
            model_accuracy,
            model_loss,
        })
    }

    /// Adds collectors owned elsewhere (e.g. the store's transaction metrics) to what `/metrics` serves.
    pub fn register(&self, collectors: Vec<Box<dyn Collector>>) -> Result<(), prometheus::Error> {
        for c in collectors {
            self.registry.register(c)?;
        }
        Ok(())
    }

    /// Creates a study's round and dropout counters at 0 for every outcome and stage, so that dashboards show 0
    /// rather than no data before the first round ends or the first participant drops out. Idempotent.
    pub fn init_study(&self, study_id: i64) {
        let sid = study_id.to_string();
        for outcome in RoundOutcome::ALL {
            self.rounds_total
                .with_label_values(&[sid.as_str(), outcome.as_str()]);
        }
        for stage in DROPOUT_STAGES {
            self.dropouts_total
                .with_label_values(&[sid.as_str(), stage.as_str()]);
        }
    }

    /// Counts `n` finished rounds of a study with their outcome (`confide_rounds_total`).
    pub fn rounds_finished(&self, study_id: i64, outcome: RoundOutcome, n: u64) {
        self.rounds_total
            .with_label_values(&[study_id.to_string().as_str(), outcome.as_str()])
            .inc_by(n);
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}
