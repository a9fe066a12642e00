//! Typed errors of the secure-aggregation protocol. A message rejected with any of these leaves the
//! receiving state machine exactly as it was, so the coordinator can map them to 4xx answers.

use super::{ParticipantId, RoundStage};

/// Everything that can go wrong while running or driving a secure-aggregation round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecAggError {
    /// Round parameters that cannot work (or would not be safe).
    #[error("invalid secure-aggregation parameters: {0}")]
    InvalidParams(String),
    /// A message arrived for a stage other than the current one.
    #[error("message for stage {got:?} arrived while the round is in stage {current:?}")]
    WrongStage {
        current: RoundStage,
        got: RoundStage,
    },
    /// A message names a different round.
    #[error("message for round {got} sent to round {expected}")]
    WrongRound { expected: u64, got: u64 },
    /// The sender already sent this stage's message.
    #[error("participant {0} already sent its message for this stage")]
    Duplicate(ParticipantId),
    /// The sender is not in the set allowed to speak in this stage (e.g. not in U2 during masked-input collection).
    #[error(
        "participant {participant} is not a member of the current stage's set (stage {stage:?})"
    )]
    NotMember {
        participant: ParticipantId,
        stage: RoundStage,
    },
    /// A masked input of the wrong length.
    #[error("vector has {got} elements, expected {expected}")]
    WrongVectorLength { expected: usize, got: usize },
    /// A ring element that is not below 2^bits.
    #[error("element {index} is not in Z_2^{bits}")]
    ValueOutOfRange { index: usize, bits: u32 },
    /// A message that does not parse or has an inconsistent structure.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A ChaCha20-Poly1305 ciphertext that fails authentication (tampered, misrouted or from a wrong key).
    #[error("ciphertext from participant {sender} failed authentication")]
    BadCiphertext { sender: ParticipantId },
    /// A revealed Shamir share that is invalid or of the wrong kind.
    #[error("bad share from participant {sender} for participant {owner}: {reason}")]
    BadShare {
        sender: ParticipantId,
        owner: ParticipantId,
        reason: String,
    },
    /// Fewer shares than the threshold: the secret cannot (and must not) be rebuilt.
    #[error("{got} shares given, threshold is {threshold}")]
    InsufficientShares { threshold: usize, got: usize },
    /// A rebuilt secret does not match its public commitment (a holder sent a wrong share).
    #[error("secret of participant {0} rebuilt from shares does not match its commitment")]
    InconsistentShares(ParticipantId),
    /// Too few participants remain for the threshold: the client refuses to go on.
    #[error("only {survivors} participants survive, threshold is {threshold}")]
    TooFewSurvivors { survivors: usize, threshold: usize },
    /// A key exchange produced a non-contributory (all-zero) shared secret.
    #[error("key agreement with participant {0} was not contributory (low-order public key)")]
    WeakKey(ParticipantId),
    /// The round has already ended (completed or aborted).
    #[error("the round has already ended")]
    RoundEnded,
    /// Quantisation parameters or inputs that could overflow the ring or are not finite.
    #[error("quantisation: {0}")]
    Quantization(String),
    /// A persisted server state that cannot be decoded.
    #[error("cannot decode persisted state: {0}")]
    Decode(String),
    /// A signature that is missing where the malicious-server protocol requires one.
    #[error("message from participant {participant} carries no signature")]
    MissingSignature { participant: ParticipantId },
    /// A signature that does not verify under the roster's identity key for `signer` (forged, foreign, replayed
    /// from another round or made over other parameters).
    #[error("signature of participant {signer} does not verify under its roster identity")]
    BadSignature { signer: ParticipantId },
    /// One identity key listed at two indices of the roster.
    #[error("roster index {0} repeats an identity key listed earlier")]
    DuplicateIdentity(ParticipantId),
    /// A dealing whose shares or commitments are not consistent (not on one polynomial of degree t − 1).
    #[error("participant {dealer} dealt shares inconsistent with its commitments: {reason}")]
    BadDealing {
        dealer: ParticipantId,
        reason: String,
    },
    /// The server showed this client a survivor set (or signatures) inconsistent with what it saw or signed.
    #[error("inconsistent survivor set: {0}")]
    InconsistentSurvivors(String),
    /// Fewer valid consistency-check signatures than the threshold.
    #[error("{got} valid signatures over the survivor set, threshold is {threshold}")]
    TooFewSignatures { got: usize, threshold: usize },
    /// A call that belongs to the other threat model (e.g. a semi-honest handler in a malicious round).
    #[error("this step is not part of the {0:?} protocol")]
    WrongThreatModel(super::ThreatModel),
}

/// Shorthand for results of this module.
pub type Result<T, E = SecAggError> = std::result::Result<T, E>;
