//! Round wire types: stages and their member sets, a round's status and the requests that start, decline or abort
//! it, and the participant's task (what its long-poll answers).

use super::*;

/// Stage of a round as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoundStage {
    AdvertiseKeys,
    ShareKeys,
    /// Malicious rounds: holders acknowledge the shares they were dealt, or complain with proof.
    ShareVerification,
    MaskedInputCollection,
    /// Malicious rounds: survivors sign the survivor set U3.
    ConsistencyCheck,
    Unmasking,
    Finished,
}

impl RoundStage {
    /// Every stage, in protocol order.
    pub const ALL: [Self; 7] = [
        Self::AdvertiseKeys,
        Self::ShareKeys,
        Self::ShareVerification,
        Self::MaskedInputCollection,
        Self::ConsistencyCheck,
        Self::Unmasking,
        Self::Finished,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AdvertiseKeys => "advertise_keys",
            Self::ShareKeys => "share_keys",
            Self::ShareVerification => "share_verification",
            Self::MaskedInputCollection => "masked_input_collection",
            Self::ConsistencyCheck => "consistency_check",
            Self::Unmasking => "unmasking",
            Self::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The wire stage of a protocol stage (both terminal states are `Finished`).
    pub const fn of_protocol(s: crate::secagg::RoundStage) -> Self {
        use crate::secagg::RoundStage as P;
        match s {
            P::AdvertiseKeys => Self::AdvertiseKeys,
            P::ShareKeys => Self::ShareKeys,
            P::ShareVerification => Self::ShareVerification,
            P::MaskedInputCollection => Self::MaskedInputCollection,
            P::ConsistencyCheck => Self::ConsistencyCheck,
            P::Unmasking => Self::Unmasking,
            P::Completed | P::Aborted => Self::Finished,
        }
    }

    /// The protocol stage of a wire stage (`None` for `Finished`).
    pub const fn protocol(self) -> Option<crate::secagg::RoundStage> {
        use crate::secagg::RoundStage as P;
        Some(match self {
            Self::AdvertiseKeys => P::AdvertiseKeys,
            Self::ShareKeys => P::ShareKeys,
            Self::ShareVerification => P::ShareVerification,
            Self::MaskedInputCollection => P::MaskedInputCollection,
            Self::ConsistencyCheck => P::ConsistencyCheck,
            Self::Unmasking => P::Unmasking,
            Self::Finished => return None,
        })
    }

    /// Whether a round of `threat_model` goes through this stage (`Finished` always).
    pub fn in_model(self, threat_model: ThreatModel) -> bool {
        match self.protocol() {
            None => true,
            Some(p) => crate::secagg::RoundStage::sequence(threat_model).contains(&p),
        }
    }
}

/// What a round computes. Every kind runs the same secure aggregation; they differ in the vector each site sends
/// and in what the coordinator publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoundPurpose {
    /// DP-SGD: each site sends its model update; a new model version is published.
    #[default]
    Training,
    /// The study's statistics round: each site sends its clamped feature sums with DP noise
    /// ([`crate::statistics`]); the derived mean and std are published with a model version (same weights).
    Statistics,
    /// An evaluation round: each site sends its correct predictions, record count and clamped loss sum on its
    /// held-out records with DP noise ([`crate::evaluation`]); the coordinator stores the noisy metrics of the
    /// evaluated model version and publishes no new weights.
    Evaluation,
}

impl RoundPurpose {
    pub const ALL: [Self; 3] = [Self::Training, Self::Statistics, Self::Evaluation];

    pub fn is_training(&self) -> bool {
        *self == Self::Training
    }

    /// The name on the wire and in the database (`rounds.purpose`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Training => "training",
            Self::Statistics => "statistics",
            Self::Evaluation => "evaluation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How a finished round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    /// The model was published and the aggregated participants were charged.
    Completed,
    /// Nothing was published and nothing was charged (the round's `reason` says why).
    Aborted,
}

impl RoundOutcome {
    pub const ALL: [Self; 2] = [Self::Completed, Self::Aborted];

    /// The name on the wire, in the database (`rounds.outcome`) and in the `outcome` label of the metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// The sets of a round's members: who was selected, and who completed each stage (U1 … U4 of the protocol). A set
/// is named after the stage its members completed, on the wire and in the database (`round_members.stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum MemberSet {
    /// Chosen at the round's start (within budget).
    #[serde(rename = "selected")]
    Selected,
    /// U1: advertised their keys.
    #[serde(rename = "advertise_keys")]
    AdvertisedKeys,
    /// U2: shared their keys.
    #[serde(rename = "share_keys")]
    SharedKeys,
    /// Malicious rounds: members of U2 that acknowledged the shares they were dealt.
    #[serde(rename = "share_verification")]
    VerifiedShares,
    /// U3: sent their masked input.
    #[serde(rename = "masked_input_collection")]
    SentMaskedInput,
    /// Malicious rounds: members of U3 that signed it.
    #[serde(rename = "consistency_check")]
    SignedSurvivors,
    /// U4: answered the unmasking request.
    #[serde(rename = "unmasking")]
    Unmasked,
}

impl MemberSet {
    pub const ALL: [Self; 7] = [
        Self::Selected,
        Self::AdvertisedKeys,
        Self::SharedKeys,
        Self::VerifiedShares,
        Self::SentMaskedInput,
        Self::SignedSurvivors,
        Self::Unmasked,
    ];

    /// The name on the wire and in the database (the serde names above).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Selected => "selected",
            Self::AdvertisedKeys => "advertise_keys",
            Self::SharedKeys => "share_keys",
            Self::VerifiedShares => "share_verification",
            Self::SentMaskedInput => "masked_input_collection",
            Self::SignedSurvivors => "consistency_check",
            Self::Unmasked => "unmasking",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|set| set.as_str() == s)
    }

    /// The set of those who completed `stage`, recorded when it closes.
    pub const fn completed(stage: RoundStage) -> Self {
        match stage {
            RoundStage::AdvertiseKeys => Self::AdvertisedKeys,
            RoundStage::ShareKeys => Self::SharedKeys,
            RoundStage::ShareVerification => Self::VerifiedShares,
            RoundStage::MaskedInputCollection => Self::SentMaskedInput,
            RoundStage::ConsistencyCheck => Self::SignedSurvivors,
            RoundStage::Unmasking | RoundStage::Finished => Self::Unmasked,
        }
    }

    /// The set whose members may send a message in `stage` of a round of `threat_model`: those who completed the
    /// stage before it (the selected may advertise keys; semi-honest: U1 share keys, U2 mask, U3 unmask;
    /// malicious: U2 verify their shares, the verified mask, U3 signs, the signers unmask).
    pub fn eligible_in(stage: RoundStage, threat_model: ThreatModel) -> Self {
        let previous = stage.protocol().and_then(|p| {
            let seq = crate::secagg::RoundStage::sequence(threat_model);
            let i = seq.iter().position(|&s| s == p)?;
            i.checked_sub(1).map(|j| seq[j])
        });
        match (stage, previous) {
            (RoundStage::AdvertiseKeys, _) => Self::Selected,
            (_, Some(p)) => Self::completed(RoundStage::of_protocol(p)),
            // Finished, or a stage this model does not have: nobody may send.
            (_, None) => Self::Unmasked,
        }
    }
}

/// Who is in one of a round's member sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageSet {
    /// `selected`, or the stage whose message these participants sent.
    pub stage: MemberSet,
    /// Its members (participant ids).
    pub participants: Vec<i64>,
}

impl RoundInfo {
    /// The members of `set` (empty if nobody is in it yet).
    pub fn members(&self, set: MemberSet) -> &[i64] {
        self.sets
            .iter()
            .find(|s| s.stage == set)
            .map(|s| s.participants.as_slice())
            .unwrap_or_default()
    }
}

/// `POST /v1/studies/{id}/rounds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartRoundRequest {
    /// Restrict selection to these participants (default: every enrolled participant with budget left).
    #[serde(default)]
    pub participants: Option<Vec<i64>>,
}

/// `POST /v1/participant/rounds/{round_id}/decline`: a selected participant refuses a round (before advertising
/// keys), e.g. because its local privacy budget would be exceeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeclineRoundRequest {
    /// Why, for the operator (shown in the round status); 1..=1000 characters, no control characters.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AbortRoundRequest {
    /// Why the round is aborted (1..=500 characters), kept with the round.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RoundInfo {
    /// The round's id.
    pub id: i64,
    /// Its study.
    pub study_id: i64,
    /// Its number in the study (1, 2, …; aborted rounds count).
    pub round_number: i64,
    /// The stage it is in (`finished` once it ended).
    pub stage: RoundStage,
    /// Set once the round has finished.
    pub outcome: Option<RoundOutcome>,
    /// Why it aborted, if it did.
    pub reason: Option<String>,
    /// Model version the round trains from.
    pub base_version: i64,
    /// When it started (Unix ms).
    pub started_at_ms: i64,
    /// When it finished (Unix ms).
    pub finished_at_ms: Option<i64>,
    /// When the current stage closes with whoever has answered (Unix ms).
    pub stage_deadline_ms: i64,
    /// Who was selected and who completed each stage so far.
    pub sets: Vec<StageSet>,
    /// While the round runs: the participants of the current stage's eligible set that have already sent their
    /// message for it (empty once finished).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<i64>,
    /// Participants left out and why: at selection (e.g. the coordinator's budget check) or because they declined
    /// the round (reason starting with "declined: ").
    pub excluded: Vec<ExcludedParticipant>,
    /// What the round computes (absent: training).
    #[serde(default, skip_serializing_if = "RoundPurpose::is_training")]
    pub purpose: RoundPurpose,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExcludedParticipant {
    /// The participant left out.
    pub participant_id: i64,
    /// Why (e.g. its budget, disabled, declined: …).
    pub reason: String,
}

/// Answer of the participant's long-poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskResponse {
    /// Nothing to do yet; poll again.
    Idle,
    /// Take part in this round's current stage.
    Round(Box<RoundTask>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RoundTask {
    /// The round.
    pub round_id: i64,
    /// Its study.
    pub study_id: i64,
    /// Its number in the study.
    pub round_number: i64,
    /// The stage to answer.
    pub stage: RoundStage,
    /// Whether this participant already sent its message for `stage`.
    pub submitted: bool,
    /// When the stage closes (Unix ms).
    pub stage_deadline_ms: i64,
    /// The model version to train from.
    pub model_version: i64,
    /// sha256 (hex) of the model's safetensors bytes, to verify the download.
    pub model_sha256: String,
    /// The study's DP-SGD parameters.
    pub dp: DpParams,
    /// The study's local optimiser: every participant trains with it.
    pub local_training: LocalTraining,
    /// The study's secure-aggregation configuration.
    pub secagg: SecAggConfig,
    /// The privacy events this round will charge if the participant's input is aggregated.
    pub planned_events: Vec<PrivacyEvent>,
    /// Number of model parameters (length of the update vector before quantisation and the weight coordinate).
    pub num_parameters: i64,
    /// This participant's secure-aggregation id in the round.
    pub participant_index: u32,
    /// The coordinator's participant id of each secure-aggregation id (index i is `protocol.roster` entry i): what
    /// agents pin peers' identity keys under.
    #[serde(default)]
    pub participant_ids: Vec<i64>,
    /// The round's secure-aggregation parameters (round id, participants, threshold, graph, vector length, ring).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub protocol: crate::secagg::SecAggParams,
    /// How updates are quantised into the ring (the weight goes in the extra last coordinate).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub quantisation: crate::secagg::QuantizationParams,
    /// The study's public feature ranges, when it declares them: how the agent scales its records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<crate::preprocessing::Preprocessing>,
    /// What this round computes (default: training).
    #[serde(default)]
    pub purpose: RoundPurpose,
    /// The statistics published with the base model version, if the study ran its statistics round: the agent
    /// standardises with them instead of the ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<crate::statistics::PublishedStatistics>,
    /// The study's federated evaluation, if it declares one: which records the site holds out (never trained on)
    /// and, in evaluation rounds, what it releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<crate::evaluation::EvaluationConfig>,
}
