//! Study configuration: validation at the boundary, the model it trains, and the privacy events a round charges.

use confide_common::api::{CreateStudyRequest, DpParams, GraphParams, ServerOptimizer};
use confide_common::model::{ModelSpec, encode_safetensors};

use crate::error::ApiError;

/// Longest study or participant name.
pub const MAX_NAME_LEN: usize = 100;
/// Most rounds a study may declare.
pub const MAX_ROUNDS: u32 = 100_000;
/// Most participants a study may select for one round.
pub const MAX_PARTICIPANTS: u32 = 10_000;

fn finite_positive(v: f64, what: &str) -> Result<(), ApiError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(format!(
            "{what} must be a finite number > 0, got {v}"
        )))
    }
}

/// Checks a name (study, participant, token label): non-empty, bounded, printable.
pub fn validate_name(name: &str, what: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
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

impl Study {
    /// Parses a stored study (validated when it was created).
    pub fn from_row(row: &crate::store::StudyRow) -> Result<Self, ApiError> {
        let config: CreateStudyRequest =
            serde_json::from_str(&row.config_json).map_err(ApiError::internal)?;
        let spec =
            ModelSpec::from_json(&config.model_spec.to_string()).map_err(ApiError::internal)?;
        let num_parameters = spec.num_parameters();
        Ok(Self {
            id: row.id,
            config,
            spec,
            num_parameters,
        })
    }
}

/// Validates a create-study request; returns the model spec and the initial weights (safetensors).
pub fn validate(req: &CreateStudyRequest) -> Result<(ModelSpec, Vec<u8>), ApiError> {
    validate_name(&req.name, "study name")?;
    let spec = ModelSpec::from_json(&req.model_spec.to_string())
        .map_err(|e| ApiError::Unprocessable(format!("invalid model_spec: {e}")))?;
    let dp = &req.dp;
    if !(dp.sampling_rate > 0.0 && dp.sampling_rate <= 1.0) {
        return Err(ApiError::Unprocessable(format!(
            "dp.sampling_rate must be in (0, 1], got {}",
            dp.sampling_rate
        )));
    }
    finite_positive(dp.noise_multiplier, "dp.noise_multiplier")?;
    finite_positive(dp.clip_norm, "dp.clip_norm")?;
    if dp.local_epochs == 0 || dp.local_epochs > 1000 {
        return Err(ApiError::Unprocessable(
            "dp.local_epochs must be in 1..=1000".into(),
        ));
    }
    if planned_steps(dp) > 10_000_000 {
        return Err(ApiError::Unprocessable(
            "dp.local_epochs / dp.sampling_rate is too many steps per round".into(),
        ));
    }
    finite_positive(req.budget.epsilon, "budget.epsilon")?;
    if !(req.budget.delta > 0.0 && req.budget.delta < 1.0) {
        return Err(ApiError::Unprocessable(format!(
            "budget.delta must be in (0, 1), got {}",
            req.budget.delta
        )));
    }
    if req.rounds == 0 || req.rounds > MAX_ROUNDS {
        return Err(ApiError::Unprocessable(format!(
            "rounds must be in 1..={MAX_ROUNDS}"
        )));
    }
    if req.min_participants < 2 || req.min_participants > MAX_PARTICIPANTS {
        return Err(ApiError::Unprocessable(format!(
            "min_participants must be in 2..={MAX_PARTICIPANTS} (secure aggregation needs at least two inputs)"
        )));
    }
    let sa = &req.secagg;
    if let Some(t) = sa.threshold
        && (t < 2 || t > req.min_participants)
    {
        return Err(ApiError::Unprocessable(format!(
            "secagg.threshold must be in 2..=min_participants ({}), got {t}",
            req.min_participants
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
                return Err(ApiError::Unprocessable(format!(
                    "secagg.graph.{what} must be in [0, 0.5), got {v}"
                )));
            }
        }
    }
    finite_positive(sa.quantisation.clip_range, "secagg.quantisation.clip_range")?;
    if !(8..=32).contains(&sa.quantisation.bits) {
        return Err(ApiError::Unprocessable(
            "secagg.quantisation.bits must be in 8..=32".into(),
        ));
    }
    if sa.quantisation.max_weight == 0 {
        return Err(ApiError::Unprocessable(
            "secagg.quantisation.max_weight must be >= 1".into(),
        ));
    }
    let d = &req.deadlines;
    for (v, what) in [
        (d.advertise_keys_secs, "advertise_keys_secs"),
        (d.share_keys_secs, "share_keys_secs"),
        (d.masked_input_secs, "masked_input_secs"),
        (d.unmasking_secs, "unmasking_secs"),
    ] {
        if v == 0 || v > 7 * 86_400 {
            return Err(ApiError::Unprocessable(format!(
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
                    return Err(ApiError::Unprocessable(format!(
                        "server_optimizer.{what} must be in [0, 1)"
                    )));
                }
            }
        }
    }
    let lt = &req.local_training;
    finite_positive(lt.learning_rate, "local_training.learning_rate")?;
    if !(0.0..1.0).contains(&lt.momentum) {
        return Err(ApiError::Unprocessable(format!(
            "local_training.momentum must be in [0, 1), got {}",
            lt.momentum
        )));
    }
    let params = spec.initial_parameters(req.initial_weights_seed);
    let weights = encode_safetensors(&spec, &params).map_err(ApiError::internal)?;
    Ok((spec, weights))
}

/// DP-SGD steps of one round: ceil(local_epochs / q) Poisson-sampled batches.
pub fn planned_steps(dp: &DpParams) -> u64 {
    (f64::from(dp.local_epochs) / dp.sampling_rate).ceil() as u64
}
