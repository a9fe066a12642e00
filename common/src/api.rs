//! HTTP wire types of the coordinator API, shared by the coordinator, the participant agent and the `confide` CLI.
//!
//! Pure serde types: control messages and configuration travel as JSON; bulk vectors (model weights, masked inputs)
//! travel as binary bodies and never appear here. Requests reject unknown fields so a typo is an error, not a default.

use serde::{Deserialize, Serialize};

use crate::dp::{AccountantKind, PrivacyEvent};
use crate::secagg::{IdentityPublicKey, ThreatModel};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Version of this wire format; bumped on any incompatible change.
pub const API_VERSION: u32 = 1;

mod metrics;
mod rounds;
mod run;
pub use metrics::{ModelEvaluation, StudyMetrics};
pub use rounds::*;
pub use run::{
    DEFAULT_MAX_RETRIES, MAX_PAUSE_SECS, MAX_RETRIES, RunState, RunStudyRequest, StopStudyRequest,
    StudyRun, StudySchedule,
};

/// Every 4xx/5xx answer carries this body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// What was wrong, for a human.
    pub error: String,
}

/// Record-level DP-SGD parameters every participant of a study trains with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DpParams {
    /// Poisson sampling rate q of a local batch, in (0, 1].
    pub sampling_rate: f64,
    /// Noise multiplier σ (> 0); the noise standard deviation is σ·clip_norm. In a study request it may be left
    /// out (or 0) when `target_epsilon` is given: the coordinator then calibrates it and stores it here.
    #[serde(default)]
    pub noise_multiplier: f64,
    /// Instead of `noise_multiplier`, in a study request: the ε (at `budget.delta`, ≤ `budget.epsilon`) that all the
    /// study's `rounds` together may spend per participant. The coordinator sets σ to the smallest value (on a
    /// 0.001 grid) whose R rounds of ⌈local_epochs / q⌉ DP-SGD steps stay within it under the PLD accountant, and
    /// keeps this target with the study to show where σ came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_epsilon: Option<f64>,
    /// Local epochs per round; a round is ceil(local_epochs / q) DP-SGD steps.
    pub local_epochs: u32,
    /// Per-example gradient clipping norm C (> 0).
    pub clip_norm: f64,
    /// The public constant every DP-SGD step divides its noisy clipped sum by (> 0): the study's expected batch
    /// size. A site never divides by its own q·N, because its record count N is private (under add/remove
    /// neighbouring it is exactly what must stay hidden) and would show in the update's noise scale.
    pub expected_batch_size: f64,
}

/// Neighbour graph of the secure aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GraphParams {
    /// Every pair of participants shares a mask (classic SecAgg).
    Complete,
    /// k-regular Harary graph (SecAgg+), degree derived from n and these rates.
    Sparse {
        /// Expected fraction of participants that drop out during a round.
        expected_dropout: f64,
        /// Tolerated fraction of corrupt participants.
        corrupt_fraction: f64,
    },
}

/// How a study asks for its updates to be quantised into the ring. Each round turns it into the protocol's
/// [`crate::secagg::QuantizationParams`] (levels fixed for the round's number of inputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuantisationConfig {
    /// Each update coordinate is clipped to [-clip_range, clip_range] before quantisation. Absent: derived at
    /// study creation from the DP-SGD parameters and the local optimiser (`confide_common::plan::update_bound`),
    /// and stored; the study's warnings say when a given range is below that bound (updates likely clamped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_range: Option<f64>,
    /// Ring size exponent k (Z_{2^k}, 2..=32); the levels per side are the finest for which the sum of the
    /// round's inputs cannot overflow.
    pub bits: u32,
    /// Largest weight (sample count) one participant may put in the weight coordinate.
    #[serde(default = "default_max_weight")]
    pub max_weight: u32,
}

/// The default largest weight one participant may put in the weight coordinate.
pub const DEFAULT_MAX_WEIGHT: u32 = 100_000;

fn default_max_weight() -> u32 {
    DEFAULT_MAX_WEIGHT
}

/// The secure aggregation a study asks for (threat model and quantisation). Each round derives the protocol's
/// [`crate::secagg::SecAggParams`] from it (participants, threshold, graph seed, vector length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecAggConfig {
    /// The coordinator the rounds must withstand: `malicious` (default: signed messages against the participants'
    /// registered identity keys, verifiable shares, share verification and consistency check; complete graph only)
    /// or `semi_honest` (the coordinator follows the protocol; four stages, no signatures).
    #[serde(default = "default_threat_model")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub threat_model: ThreatModel,
    /// Malicious rounds: the fraction of the selected participants that may collude with the coordinator, in
    /// [0, 0.5); n_c = ⌈fraction · n⌉ and the threshold is at least ⌊(n + n_c)/2⌋ + 1. (Sparse graphs, semi-honest
    /// only, carry their own in `graph`.)
    #[serde(default = "default_corrupt_fraction")]
    pub corrupt_fraction: f64,
    /// Shamir threshold t; derived from the graph when absent.
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Which pairs of participants share masks.
    pub graph: GraphParams,
    /// How updates are quantised into the ring.
    pub quantisation: QuantisationConfig,
}

/// Default threat model of a study: a coordinator that may deviate from the protocol.
pub const DEFAULT_THREAT_MODEL: ThreatModel = ThreatModel::Malicious;
/// Default tolerated corrupt fraction of a malicious-model study.
pub const DEFAULT_CORRUPT_FRACTION: f64 = 0.05;

fn default_threat_model() -> ThreatModel {
    DEFAULT_THREAT_MODEL
}
fn default_corrupt_fraction() -> f64 {
    DEFAULT_CORRUPT_FRACTION
}

/// Per-participant privacy budget of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BudgetParams {
    /// ε a participant may spend in this study, over all rounds.
    pub epsilon: f64,
    /// δ at which ε is computed.
    pub delta: f64,
}

/// How long each stage of a round may take before the coordinator closes it with whoever has answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageDeadlines {
    /// Seconds for local training plus AdvertiseKeys.
    pub advertise_keys_secs: u64,
    /// Seconds for ShareKeys.
    pub share_keys_secs: u64,
    /// Malicious rounds: acknowledging (or complaining about) the shares dealt.
    #[serde(default = "default_short_stage_secs")]
    pub share_verification_secs: u64,
    /// Seconds for MaskedInputCollection.
    pub masked_input_secs: u64,
    /// Malicious rounds: signing the survivor set.
    #[serde(default = "default_short_stage_secs")]
    pub consistency_check_secs: u64,
    /// Seconds for Unmasking.
    pub unmasking_secs: u64,
}

fn default_short_stage_secs() -> u64 {
    60
}

impl Default for StageDeadlines {
    fn default() -> Self {
        Self {
            advertise_keys_secs: 600,
            share_keys_secs: 60,
            share_verification_secs: 60,
            masked_input_secs: 600,
            consistency_check_secs: 60,
            unmasking_secs: 60,
        }
    }
}

/// Server-side optimiser applied to the securely summed, weighted mean update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerOptimizer {
    /// w ← w + η·Δ̄ (FedAvg with server learning rate η).
    FedAvg {
        /// The server learning rate η (> 0).
        learning_rate: f64,
    },
    /// FedAdam (Reddi et al. 2021) on the pseudo-gradient Δ̄.
    FedAdam {
        /// The server learning rate η (> 0).
        learning_rate: f64,
        /// Decay of the first moment, in [0, 1).
        beta1: f64,
        /// Decay of the second moment, in [0, 1).
        beta2: f64,
        /// Added to the second moment's root (> 0), for stability.
        epsilon: f64,
    },
}

impl Default for ServerOptimizer {
    fn default() -> Self {
        Self::FedAvg { learning_rate: 1.0 }
    }
}

/// The optimiser each participant uses for its local DP-SGD steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LocalOptimizer {
    /// SGD with (heavy-ball) momentum, torch's update rule.
    Sgd,
    /// Adam with torch's default betas and epsilon (`momentum` is ignored).
    Adam,
}

/// How participants train locally each round. It belongs to the study (not to each agent) so that every input
/// of the secure sum comes from the same procedure; the privacy cost does not depend on it (the noisy clipped
/// gradients are already private, the optimiser is post-processing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LocalTraining {
    /// The local optimiser (default: SGD).
    #[serde(default = "default_local_optimizer")]
    pub optimizer: LocalOptimizer,
    /// Step size (> 0).
    #[serde(default = "default_local_learning_rate")]
    pub learning_rate: f64,
    /// SGD momentum in [0, 1); the optimiser state starts at zero every round.
    #[serde(default = "default_local_momentum")]
    pub momentum: f64,
}

fn default_local_optimizer() -> LocalOptimizer {
    LocalOptimizer::Sgd
}
fn default_local_learning_rate() -> f64 {
    DEFAULT_LOCAL_LEARNING_RATE
}
fn default_local_momentum() -> f64 {
    DEFAULT_LOCAL_MOMENTUM
}

/// Default local SGD step size. Measured (participant/examples/local_optimizer_sweep.rs: 4 sites, FedAvg, ε = 1
/// per site, logistic regression on breast cancer) in two regimes, q = 0.2 × 5 rounds and q = 0.1 × 10 rounds:
/// SGD 0.1 with momentum 0.9 reached 0.972 and 0.970 mean test accuracy, among the best in both and the steadiest
/// (SGD 0.5 with momentum 0.9 fell to 0.959 and 0.939 as the noisier small batches made it overshoot).
pub const DEFAULT_LOCAL_LEARNING_RATE: f64 = 0.1;
/// Default local SGD momentum.
pub const DEFAULT_LOCAL_MOMENTUM: f64 = 0.9;

impl Default for LocalTraining {
    fn default() -> Self {
        Self {
            optimizer: default_local_optimizer(),
            learning_rate: DEFAULT_LOCAL_LEARNING_RATE,
            momentum: DEFAULT_LOCAL_MOMENTUM,
        }
    }
}

/// `POST /v1/studies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateStudyRequest {
    /// The study's name, unique on this coordinator.
    pub name: String,
    /// Model specification (the `confide_common::model::ModelSpec` JSON, e.g. `{"kind": "logistic_regression",
    /// "input_dim": 30, "num_classes": 2}`); checked at creation.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::model::ModelSpec))]
    pub model_spec: serde_json::Value,
    /// Seed for the initial weights when `initial_weights` is absent.
    #[serde(default)]
    pub initial_weights_seed: u64,
    /// Initial weights: a safetensors file (base64), e.g. to compare one step with another DP-SGD implementation.
    /// Its tensors must match `model_spec` (names, shapes, F32, finite); bounded by the coordinator's model-size
    /// limit. Not echoed back: the study's model version 0 is these weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_weights: Option<String>,
    /// The record-level DP-SGD parameters every participant trains with.
    pub dp: DpParams,
    /// The secure aggregation the rounds use (threat model, graph, quantisation).
    pub secagg: SecAggConfig,
    /// Each participant's privacy budget in this study.
    pub budget: BudgetParams,
    /// Number of rounds the study runs.
    pub rounds: u32,
    /// A round needs at least this many selected participants (≥ 3), and publishes only if at least
    /// max(min_participants, the secure-aggregation threshold, 3) inputs were aggregated; otherwise it aborts with
    /// the reason, publishing and charging nothing.
    pub min_participants: u32,
    /// How long each stage of a round may take (default: the API's deadlines).
    #[serde(default)]
    pub deadlines: StageDeadlines,
    /// How the coordinator applies the aggregate to the model (default: FedAvg, η = 1).
    #[serde(default)]
    pub server_optimizer: ServerOptimizer,
    /// The participants' local optimiser (default: SGD, learning rate 0.1, momentum 0.9).
    #[serde(default)]
    pub local_training: LocalTraining,
    /// Public per-feature ranges every agent scales its records by (no central data, no privacy cost). Absent:
    /// each agent needs a statistics file of its own (`--stats`) and declines rounds without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<crate::preprocessing::Preprocessing>,
    /// Federated evaluation: every site holds out part of its records (never trained on), and after published
    /// model versions (as `schedule` says) evaluation rounds release correct predictions, count and clamped loss
    /// of each site's held-out part with DP inside secure aggregation (`GET /v1/studies/{id}/metrics`). Absent:
    /// no hold-out, no evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<crate::evaluation::EvaluationConfig>,
}

/// `POST /v1/privacy/plan`: the noise a study needs for a target ε (the calibration the coordinator applies to a
/// study request that gives `dp.target_epsilon`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PrivacyPlanRequest {
    /// The ε not to exceed over all rounds, > 0.
    pub target_epsilon: f64,
    /// δ of the (ε, δ) guarantee, in (0, 1).
    pub delta: f64,
    /// Poisson sampling rate q, in (0, 1].
    pub sampling_rate: f64,
    /// DP-SGD steps per round (a study's ⌈local_epochs / q⌉), ≥ 1.
    pub steps_per_round: u64,
    /// Rounds, ≥ 1.
    pub rounds: u32,
}

/// The answer to [`PrivacyPlanRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrivacyPlanResponse {
    /// The smallest σ on a 0.001 grid whose rounds stay within the target.
    pub noise_multiplier: f64,
    /// ε of the rounds at that σ: the PLD's certified upper bound (what budgets enforce), ≤ the target.
    pub epsilon: f64,
    /// The PLD's certified lower bound of the same ε (how tight the upper one is).
    pub epsilon_lower: f64,
    /// The accountant that computed ε (PLD).
    pub accountant: AccountantKind,
    /// The request answered.
    pub request: PrivacyPlanRequest,
}

/// A study as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StudyInfo {
    /// The study's id.
    pub id: i64,
    /// The configuration as stored (σ calibrated when a target ε was given; initial weights not echoed).
    pub config: CreateStudyRequest,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// The newest published model version.
    pub latest_model_version: i64,
    /// Rounds that completed (published a model).
    pub rounds_completed: i64,
    /// The round in progress, if any.
    pub active_round: Option<i64>,
    /// What in the configuration is likely to hurt the study (e.g. a quantisation range that will clamp updates).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The DP statistics published by the study's statistics round, once it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<crate::statistics::PublishedStatistics>,
    /// How the study's rounds are started: by the operator (`manual`, until `POST /v1/studies/{id}/run`) or by the
    /// coordinator (`automatic`).
    #[serde(default)]
    pub schedule: StudySchedule,
    /// The study's latest run (`POST /v1/studies/{id}/run`), if it ever ran on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<StudyRun>,
}

/// `POST /v1/studies/{id}/enrolment-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateEnrolmentTokenRequest {
    /// Who the token is for (e.g. the hospital's name).
    pub label: String,
    /// Validity in seconds (default 7 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A freshly created one-time enrolment token; shown once, stored hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrolmentTokenResponse {
    /// The token's id, to list or revoke it (`POST /v1/studies/{study}/enrolment-tokens/{id}/revoke`).
    #[serde(default)]
    pub id: i64,
    /// The secret token (shown once; stored hashed).
    pub token: String,
    /// The study it enrols into.
    pub study_id: i64,
    /// After this (Unix ms) it no longer enrols anyone.
    pub expires_at_ms: i64,
}

/// An enrolment token as listed to the operator (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrolmentTokenInfo {
    /// The token's id (to revoke it).
    pub id: i64,
    /// The study it enrols into.
    pub study_id: i64,
    /// Who it is for (e.g. the hospital's name).
    pub label: String,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// After this (Unix ms) it no longer enrols anyone.
    pub expires_at_ms: i64,
    /// When it was spent, and by whom.
    pub used_at_ms: Option<i64>,
    /// The participant it enrolled, once used.
    pub participant_id: Option<i64>,
    /// When the operator revoked it (it can then no longer enrol anyone).
    pub revoked_at_ms: Option<i64>,
}

/// `POST /v1/participant/enrol` (no credential yet: the token authenticates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The one-time enrolment token the operator created for this site.
    pub token: String,
    /// The participant's display name, unique within the study.
    pub name: String,
    /// The participant's long-term Ed25519 identity public key (base64, 32 bytes), unique within the study. Malicious-
    /// model rounds select only participants that registered one; their peers pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub identity_key: Option<IdentityPublicKey>,
}

/// The participant's long-term credential; shown once, stored hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrolResponse {
    /// The participant's id in the study.
    pub participant_id: i64,
    /// The study it enrolled in.
    pub study_id: i64,
    /// The bearer credential of every later request; shown once (stored hashed).
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ParticipantInfo {
    /// The participant's id.
    pub id: i64,
    /// The study it is enrolled in.
    pub study_id: i64,
    /// Its display name, unique in the study.
    pub name: String,
    /// When it enrolled (Unix ms).
    pub enrolled_at_ms: i64,
    /// When the operator revoked its credential (every request with it is then refused, and it is not selected).
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
    /// Fingerprint of the identity key registered at enrolment (compare it with `confide-participant identity` at
    /// the site, out of band); absent if none was registered.
    #[serde(default)]
    pub identity_fingerprint: Option<String>,
    /// Whether the operator disabled it (it is no longer selected; its ledger stays).
    #[serde(default)]
    pub disabled: bool,
    /// When it last made an authenticated request (recorded at most once every 30 s per coordinator process, so
    /// up to 30 s old); absent if it made none since enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModelVersionInfo {
    /// The study.
    pub study_id: i64,
    /// The version number: 0 is the initial model, each completed round adds one.
    pub version: i64,
    /// The round that published it (absent for version 0).
    pub round_id: Option<i64>,
    /// sha256 (hex) of the safetensors bytes.
    pub sha256: String,
    /// Size of the safetensors bytes.
    pub size_bytes: i64,
    /// When it was published (Unix ms).
    pub created_at_ms: i64,
    /// The DP statistics the model's inputs are standardised with (from the study's statistics round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<crate::statistics::PublishedStatistics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ParticipantPrivacy {
    /// The participant.
    pub participant_id: i64,
    /// Its display name.
    pub name: String,
    /// ε of its whole ledger in this study (PLD, certified upper bound, at the report's δ).
    pub epsilon_spent: f64,
    /// Its ε budget in this study.
    pub epsilon_budget: f64,
    /// Completed rounds whose aggregate included it.
    pub rounds_charged: i64,
}

/// `GET /v1/studies/{id}/privacy`: ε by the PLD accountant over each participant's whole ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrivacyReport {
    /// The study.
    pub study_id: i64,
    /// δ at which every ε is given.
    pub delta: f64,
    /// The accountant that computed ε (PLD).
    pub accountant: AccountantKind,
    /// One entry per enrolled participant.
    pub participants: Vec<ParticipantPrivacy>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok` when the coordinator serves and reaches its database.
    pub status: String,
    /// The database kind (`sqlite` or `postgres`).
    pub database: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_sets_and_outcomes_keep_their_names() {
        let names: Vec<&str> = MemberSet::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "selected",
                "advertise_keys",
                "share_keys",
                "share_verification",
                "masked_input_collection",
                "consistency_check",
                "unmasking"
            ]
        );
        for set in MemberSet::ALL {
            assert_eq!(MemberSet::parse(set.as_str()), Some(set));
            // The serde name is the stored name.
            assert_eq!(
                serde_json::to_string(&set).unwrap(),
                format!("\"{}\"", set.as_str())
            );
        }
        assert_eq!(MemberSet::parse("nobody"), None);
        for outcome in RoundOutcome::ALL {
            assert_eq!(RoundOutcome::parse(outcome.as_str()), Some(outcome));
            assert_eq!(
                serde_json::to_string(&outcome).unwrap(),
                format!("\"{}\"", outcome.as_str())
            );
        }
        assert_eq!(RoundOutcome::parse("finished"), None);
        // Who may speak in a stage is who completed the one before, in the round's threat model.
        let (semi, mal) = (ThreatModel::SemiHonest, ThreatModel::Malicious);
        assert_eq!(
            MemberSet::eligible_in(RoundStage::ShareKeys, semi),
            MemberSet::completed(RoundStage::AdvertiseKeys)
        );
        assert_eq!(
            MemberSet::eligible_in(RoundStage::Unmasking, semi),
            MemberSet::completed(RoundStage::MaskedInputCollection)
        );
        assert_eq!(
            MemberSet::eligible_in(RoundStage::MaskedInputCollection, semi),
            MemberSet::SharedKeys
        );
        assert_eq!(
            MemberSet::eligible_in(RoundStage::MaskedInputCollection, mal),
            MemberSet::VerifiedShares
        );
        assert_eq!(
            MemberSet::eligible_in(RoundStage::ShareVerification, mal),
            MemberSet::SharedKeys
        );
        assert_eq!(
            MemberSet::eligible_in(RoundStage::Unmasking, mal),
            MemberSet::SignedSurvivors
        );
        assert_eq!(
            MemberSet::eligible_in(RoundStage::AdvertiseKeys, mal),
            MemberSet::Selected
        );
        for stage in RoundStage::ALL {
            assert_eq!(RoundStage::parse(stage.as_str()), Some(stage));
            if let Some(p) = stage.protocol() {
                assert_eq!(RoundStage::of_protocol(p), stage);
                assert_eq!(p.as_str(), stage.as_str(), "one name per stage");
            }
        }
        assert!(!RoundStage::ConsistencyCheck.in_model(semi));
        assert!(RoundStage::ConsistencyCheck.in_model(mal));
    }

    #[test]
    fn round_status_json_is_unchanged_by_the_typed_sets_and_outcome() {
        let json = r#"{"id":7,"study_id":1,"round_number":2,"stage":"finished","outcome":"completed","reason":null,"base_version":1,"started_at_ms":10,"finished_at_ms":20,"stage_deadline_ms":30,"sets":[{"stage":"selected","participants":[1,2,3]},{"stage":"masked_input_collection","participants":[1,3]}],"excluded":[]}"#;
        let info: RoundInfo = serde_json::from_str(json).unwrap();
        assert_eq!(info.outcome, Some(RoundOutcome::Completed));
        assert_eq!(info.members(MemberSet::SentMaskedInput), [1, 3]);
        assert!(info.members(MemberSet::Unmasked).is_empty());
        assert_eq!(serde_json::to_string(&info).unwrap(), json);
        let unknown = json.replace("\"completed\"", "\"done\"");
        assert!(serde_json::from_str::<RoundInfo>(&unknown).is_err());
    }
}
