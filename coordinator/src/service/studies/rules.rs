//! The rules a study must satisfy, checked when it is created (each refusal says what to change), the model it
//! trains, and what in a valid study is still likely to hurt it (warnings, never refusals).

use base64::Engine;
use confide_common::api::{CreateStudyRequest, GraphParams, ServerOptimizer};
use confide_common::model::{
    ModelSpec, decode_safetensors, encode_safetensors, spec_from_safetensors,
};
use confide_common::plan::{planned_steps, update_bound};
use confide_common::secagg::ThreatModel;

use super::StudyError;
use crate::store::StudyRow;

/// Longest study or participant name.
pub const MAX_NAME_LEN: usize = 100;
/// Most rounds a study may declare.
pub const MAX_ROUNDS: u32 = 100_000;
/// Most participants a study may select for one round.
pub const MAX_PARTICIPANTS: u32 = 10_000;
/// No aggregate of fewer inputs is ever published: with two, each participant could subtract its own update and
/// read the other's.
pub const MIN_AGGREGATE: u32 = 3;

fn finite_positive(v: f64, what: &str) -> Result<(), StudyError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(StudyError::Invalid(format!(
            "{what} must be a finite number > 0, got {v}"
        )))
    }
}

/// Checks a name (study, participant, token label): non-empty, bounded, printable.
pub fn validate_name(name: &str, what: &str) -> Result<(), StudyError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(StudyError::Invalid(format!(
            "{what} must be 1..={MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(())
}

/// A validated study: the request plus what follows from it.
#[derive(Debug, Clone)]
pub struct Study {
    pub id: i64,
    pub config: CreateStudyRequest,
    pub spec: ModelSpec,
    pub num_parameters: usize,
}

/// A create-study request that passed validation, with what follows from it.
#[derive(Debug, Clone)]
pub struct ValidatedStudy {
    /// The configuration as stored: the quantisation range filled in, uploaded weights removed (they are version 0).
    pub config: CreateStudyRequest,
    pub spec: ModelSpec,
    /// The initial model (safetensors): the uploaded weights, or weights generated from the seed.
    pub weights: Vec<u8>,
}

impl Study {
    /// Parses a stored study (validated when it was created).
    pub fn from_row(row: &StudyRow) -> Result<Self, StudyError> {
        let config: CreateStudyRequest =
            serde_json::from_str(&row.config_json).map_err(StudyError::internal)?;
        let spec =
            ModelSpec::from_json(&config.model_spec.to_string()).map_err(StudyError::internal)?;
        let num_parameters = spec.num_parameters();
        Ok(Self {
            id: row.id,
            config,
            spec,
            num_parameters,
        })
    }

    /// The quantisation range of the study's updates (stored at creation; derived for a study stored without one).
    pub fn clip_range(&self) -> f64 {
        self.config
            .secagg
            .quantisation
            .clip_range
            .unwrap_or_else(|| update_bound(&self.config.dp, &self.config.local_training))
    }

    /// Fewest inputs a round of this study must aggregate to publish: max(min_participants, threshold, 3).
    pub fn min_aggregate(&self, threshold: u32) -> u32 {
        self.config
            .min_participants
            .max(threshold)
            .max(MIN_AGGREGATE)
    }
}

/// What in a (valid) configuration is likely to hurt the study; shown with the study, never a refusal.
pub fn warnings(config: &CreateStudyRequest) -> Vec<String> {
    let mut out = Vec::new();
    let bound = update_bound(&config.dp, &config.local_training);
    if let Some(range) = config.secagg.quantisation.clip_range
        && range < bound
    {
        out.push(format!(
            "secagg.quantisation.clip_range = {range} is below {bound:.4}, the largest update coordinate this \
             study's DP-SGD parameters allow (lr·(C·‖a‖₁ + 5·σC/B·‖a‖₂) for SGD with momentum weights a, \
             3.17·lr per step for Adam): coordinates beyond the range are clamped, which biases the aggregate; \
             omit clip_range to use the derived bound"
        ));
    }
    out
}

/// The fields ε depends on besides σ (sampling rate, local epochs and the steps they make, budget, rounds): checked
/// before σ is calibrated from a target ε, so that a bad one is refused by name rather than by the accountant.
pub fn check_accounting(req: &CreateStudyRequest) -> Result<(), StudyError> {
    let dp = &req.dp;
    if !(dp.sampling_rate > 0.0 && dp.sampling_rate <= 1.0) {
        return Err(StudyError::Invalid(format!(
            "dp.sampling_rate must be in (0, 1], got {}",
            dp.sampling_rate
        )));
    }
    finite_positive(dp.clip_norm, "dp.clip_norm")?;
    finite_positive(dp.expected_batch_size, "dp.expected_batch_size")?;
    if dp.local_epochs == 0 || dp.local_epochs > 1000 {
        return Err(StudyError::Invalid(
            "dp.local_epochs must be in 1..=1000".into(),
        ));
    }
    if planned_steps(dp) > 10_000_000 {
        return Err(StudyError::Invalid(
            "dp.local_epochs / dp.sampling_rate is too many steps per round".into(),
        ));
    }
    finite_positive(req.budget.epsilon, "budget.epsilon")?;
    if !(req.budget.delta > 0.0 && req.budget.delta < 1.0) {
        return Err(StudyError::Invalid(format!(
            "budget.delta must be in (0, 1), got {}",
            req.budget.delta
        )));
    }
    if req.rounds == 0 || req.rounds > MAX_ROUNDS {
        return Err(StudyError::Invalid(format!(
            "rounds must be in 1..={MAX_ROUNDS}"
        )));
    }
    Ok(())
}

/// Validates a create-study request (`max_model_bytes` bounds the model's size as f32 safetensors).
pub fn validate(
    req: &CreateStudyRequest,
    max_model_bytes: usize,
) -> Result<ValidatedStudy, StudyError> {
    validate_name(&req.name, "study name")?;
    let spec = ModelSpec::from_json(&req.model_spec.to_string())
        .map_err(|e| StudyError::Invalid(format!("invalid model_spec: {e}")))?;
    let model_bytes = spec.num_parameters().saturating_mul(4);
    if model_bytes > max_model_bytes {
        return Err(StudyError::Invalid(format!(
            "model_spec has {} parameters ({model_bytes} bytes as f32), over this coordinator's model-size limit \
             of {max_model_bytes} bytes (--max-model-bytes)",
            spec.num_parameters()
        )));
    }
    check_accounting(req)?;
    let dp = &req.dp;
    if dp.noise_multiplier == 0.0 && dp.target_epsilon.is_none() {
        return Err(StudyError::Invalid(
            "give dp.noise_multiplier (σ > 0) or dp.target_epsilon (the ε all rounds may spend; the coordinator \
             calibrates σ)"
                .into(),
        ));
    }
    finite_positive(dp.noise_multiplier, "dp.noise_multiplier")?;
    if req.min_participants < MIN_AGGREGATE || req.min_participants > MAX_PARTICIPANTS {
        return Err(StudyError::Invalid(format!(
            "min_participants must be in {MIN_AGGREGATE}..={MAX_PARTICIPANTS} (an aggregate of two inputs would let \
             each participant read the other's update)"
        )));
    }
    let sa = &req.secagg;
    if let Some(t) = sa.threshold
        && (t < 2 || t > req.min_participants)
    {
        return Err(StudyError::Invalid(format!(
            "secagg.threshold must be in 2..=min_participants ({}), got {t}",
            req.min_participants
        )));
    }
    if sa.threat_model == ThreatModel::Malicious && matches!(sa.graph, GraphParams::Sparse { .. }) {
        return Err(StudyError::Invalid(
            "secagg.graph sparse cannot be combined with secagg.threat_model malicious: against a coordinator that \
             may deviate, the sparse (SecAgg+) graph is refused (it could choose or grind the ring order and show \
             different graphs to different sites); use graph {\"kind\": \"complete\"}, or threat_model \
             \"semi_honest\" if the coordinator is trusted to follow the protocol"
                .into(),
        ));
    }
    if !(0.0..0.5).contains(&sa.corrupt_fraction) {
        return Err(StudyError::Invalid(format!(
            "secagg.corrupt_fraction must be in [0, 0.5), got {}",
            sa.corrupt_fraction
        )));
    }
    if let GraphParams::Sparse {
        expected_dropout,
        corrupt_fraction,
    } = sa.graph
    {
        for (v, what) in [
            (expected_dropout, "expected_dropout"),
            (corrupt_fraction, "corrupt_fraction"),
        ] {
            if !(0.0..0.5).contains(&v) {
                return Err(StudyError::Invalid(format!(
                    "secagg.graph.{what} must be in [0, 0.5), got {v}"
                )));
            }
        }
    }
    if let Some(range) = sa.quantisation.clip_range {
        finite_positive(range, "secagg.quantisation.clip_range")?;
    }
    if !(8..=32).contains(&sa.quantisation.bits) {
        return Err(StudyError::Invalid(
            "secagg.quantisation.bits must be in 8..=32".into(),
        ));
    }
    if sa.quantisation.max_weight == 0 {
        return Err(StudyError::Invalid(
            "secagg.quantisation.max_weight must be >= 1".into(),
        ));
    }
    let d = &req.deadlines;
    for (v, what) in [
        (d.advertise_keys_secs, "advertise_keys_secs"),
        (d.share_keys_secs, "share_keys_secs"),
        (d.share_verification_secs, "share_verification_secs"),
        (d.masked_input_secs, "masked_input_secs"),
        (d.consistency_check_secs, "consistency_check_secs"),
        (d.unmasking_secs, "unmasking_secs"),
    ] {
        if v == 0 || v > 7 * 86_400 {
            return Err(StudyError::Invalid(format!(
                "deadlines.{what} must be in 1..=604800 seconds"
            )));
        }
    }
    match req.server_optimizer {
        ServerOptimizer::FedAvg { learning_rate } => {
            finite_positive(learning_rate, "server_optimizer.learning_rate")?
        }
        ServerOptimizer::FedAdam {
            learning_rate,
            beta1,
            beta2,
            epsilon,
        } => {
            finite_positive(learning_rate, "server_optimizer.learning_rate")?;
            finite_positive(epsilon, "server_optimizer.epsilon")?;
            for (b, what) in [(beta1, "beta1"), (beta2, "beta2")] {
                if !(0.0..1.0).contains(&b) {
                    return Err(StudyError::Invalid(format!(
                        "server_optimizer.{what} must be in [0, 1)"
                    )));
                }
            }
        }
    }
    let lt = &req.local_training;
    finite_positive(lt.learning_rate, "local_training.learning_rate")?;
    if !(0.0..1.0).contains(&lt.momentum) {
        return Err(StudyError::Invalid(format!(
            "local_training.momentum must be in [0, 1), got {}",
            lt.momentum
        )));
    }
    if let Some(p) = &req.preprocessing {
        p.validate(spec.input_dim())
            .map_err(|e| StudyError::Invalid(e.to_string()))?;
    }
    if let Some(e) = &req.evaluation {
        e.validate(req.rounds)
            .map_err(|e| StudyError::Invalid(e.to_string()))?;
    }
    let weights = match &req.initial_weights {
        Some(b64) => initial_weights(&spec, b64, max_model_bytes)?,
        None => {
            let params = spec.initial_parameters(req.initial_weights_seed);
            encode_safetensors(&spec, &params).map_err(StudyError::internal)?
        }
    };
    let mut config = req.clone();
    config.initial_weights = None;
    let bound = update_bound(&config.dp, &config.local_training);
    if !(bound.is_finite() && bound > 0.0) {
        return Err(StudyError::Invalid(format!(
            "the DP-SGD parameters give no finite update bound ({bound}); give secagg.quantisation.clip_range"
        )));
    }
    config.secagg.quantisation.clip_range = Some(sa.quantisation.clip_range.unwrap_or(bound));
    Ok(ValidatedStudy {
        config,
        spec,
        weights,
    })
}

/// Decodes uploaded initial weights (base64 safetensors) and checks them against the study's model; returns them
/// re-encoded in the canonical layout with the spec in the metadata.
fn initial_weights(
    spec: &ModelSpec,
    b64: &str,
    max_model_bytes: usize,
) -> Result<Vec<u8>, StudyError> {
    // base64 is 4/3 of the bytes; refuse before decoding anything oversized.
    let limit = max_model_bytes.saturating_add(1 << 16);
    if b64.len() / 4 * 3 > limit {
        return Err(StudyError::Invalid(format!(
            "initial_weights is larger than this coordinator's model-size limit of {max_model_bytes} bytes"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| StudyError::Invalid(format!("initial_weights is not valid base64: {e}")))?;
    if let Some(theirs) = spec_from_safetensors(&bytes)
        .map_err(|e| StudyError::Invalid(format!("initial_weights: {e}")))?
        && &theirs != spec
    {
        return Err(StudyError::Invalid(
            "initial_weights carries a model spec in its metadata that differs from model_spec"
                .into(),
        ));
    }
    let params = decode_safetensors(spec, &bytes).map_err(|e| {
        StudyError::Invalid(format!(
            "initial_weights does not match model_spec: {e} (tensor names are '<layer>.weight|bias' in layer \
             order, F32, torch's shapes)"
        ))
    })?;
    encode_safetensors(spec, &params).map_err(StudyError::internal)
}
