//! What a round has established so far (sets, keys, dealings, why participants left) and the outcome types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::group::{self, Scalar};
use super::super::messages::{AdvertisedKeys, EncryptedShares, ShareCommitments};
use super::super::{ParticipantId, RoundId, RoundStage, SecAggParams};

/// Why a round ended without an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// A stage closed with fewer participants than the threshold.
    TooFewParticipants {
        stage: RoundStage,
        survivors: u32,
        threshold: u32,
    },
    /// Some participant's neighbourhood kept fewer than t members, so its secrets could not be rebuilt.
    NeighbourhoodTooSmall {
        stage: RoundStage,
        participant: ParticipantId,
        members: u32,
        threshold: u32,
    },
    /// A participant's secret rebuilt from shares did not match its commitment or public key (semi-honest rounds,
    /// where revealed shares cannot be checked one by one).
    InconsistentShares { participant: ParticipantId },
    /// Fewer than t of the shares revealed for a participant matched their commitments (malicious rounds).
    TooFewValidShares {
        participant: ParticipantId,
        valid: u32,
        threshold: u32,
    },
    /// Holders proved at share verification that these participants dealt shares inconsistent with their
    /// commitments (or undecryptable ones). Nobody has sent a masked input; the coordinator should exclude them.
    BadDealing { dealers: Vec<ParticipantId> },
    /// The coordinator aborted the round.
    Coordinator { reason: String },
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::TooFewParticipants {
                stage,
                survivors,
                threshold,
            } => write!(
                f,
                "stage {stage:?} closed with {survivors} participants, threshold is {threshold}"
            ),
            AbortReason::NeighbourhoodTooSmall {
                stage,
                participant,
                members,
                threshold,
            } => write!(
                f,
                "after stage {stage:?}, participant {participant}'s neighbourhood has {members} members, threshold is {threshold}"
            ),
            AbortReason::InconsistentShares { participant } => write!(
                f,
                "shares of participant {participant} do not rebuild its committed secret"
            ),
            AbortReason::TooFewValidShares {
                participant,
                valid,
                threshold,
            } => write!(
                f,
                "only {valid} valid shares of participant {participant} were revealed, threshold is {threshold}"
            ),
            AbortReason::BadDealing { dealers } => {
                write!(f, "participants {dealers:?} dealt inconsistent shares")
            }
            AbortReason::Coordinator { reason } => {
                write!(f, "aborted by the coordinator: {reason}")
            }
        }
    }
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// The exact sum (mod 2^bits) of the inputs of U3.
    Completed(Vec<u32>),
    /// No aggregate; nothing about any input is released.
    Aborted { reason: AbortReason },
}

/// Result of [`super::SecAggServer::close_stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageTransition {
    pub from: RoundStage,
    pub to: RoundStage,
}

/// Why a participant left the round (or, for `InvalidRevealedShare`, misbehaved in its last step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// It sent no (acceptable) message before the stage closed.
    NoResponse,
    /// Its commitments failed the degree test when ShareKeys closed: its dealing was dropped unseen, the round went
    /// on without it.
    BadCommitments,
    /// A holder proved it dealt bad shares (the round aborted).
    BadDealing,
    /// It complained with proof about a bad dealer, revealing its cipher key, and left the round.
    Complained,
    /// It complained about a dealer whose shares were fine (or with a key that is not its own): it is dropped and
    /// the round goes on.
    FalseComplaint,
    /// It revealed a share that does not match its commitment (ignored; reconstruction used valid shares only).
    InvalidRevealedShare,
}

/// The stage in which a participant left, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropout {
    pub stage: RoundStage,
    pub reason: DropReason,
}

/// Where one participant stands in the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// The last stage whose message the server accepted from it (`None`: nothing yet).
    pub reached: Option<RoundStage>,
    /// Why it left, if it did.
    pub dropped: Option<Dropout>,
}

/// A participant's dealing as the server keeps it: the commitment to β, (malicious) the commitments to every
/// holder's shares, and the ciphertexts until they have been routed and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dealing {
    /// β·B.
    pub(crate) self_mask_commitment: [u8; 32],
    /// Holders in ascending order (the recipients and the dealer): index i of the commitment lists is holders[i].
    pub(crate) holders: Vec<ParticipantId>,
    pub(crate) commitments: Option<ShareCommitments>,
    pub(crate) encrypted_shares: Vec<EncryptedShares>,
    /// Malicious rounds: the digest of the per-secret commitments γ is drawn from, computed once on arrival
    /// (routing needs it for every holder).
    pub(crate) dealing_digest: Option<[u8; 32]>,
}

/// One holder's commitments from a dealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HolderCommitments {
    pub(crate) self_mask: [u8; 32],
    pub(crate) mask_key: [u8; 32],
    pub(crate) combined: [u8; 32],
}

impl Dealing {
    /// The commitments to `holder`'s shares, if committed.
    pub(crate) fn commitments_for(&self, holder: ParticipantId) -> Option<HolderCommitments> {
        let c = self.commitments.as_ref()?;
        let i = self.holders.binary_search(&holder).ok()?;
        Some(HolderCommitments {
            self_mask: *c.self_mask.get(i)?,
            mask_key: *c.mask_key.get(i)?,
            combined: *c.combined.get(i)?,
        })
    }

    /// The digest γ is drawn from (`None` in semi-honest rounds).
    pub(crate) fn dealing_digest(&self) -> Option<[u8; 32]> {
        self.dealing_digest
    }

    /// γ of this dealing (`None` in semi-honest rounds).
    pub(crate) fn challenge(
        &self,
        params_digest: &[u8; 32],
        round: RoundId,
        dealer: ParticipantId,
    ) -> Option<Scalar> {
        Some(group::combination_challenge(
            params_digest,
            round,
            dealer,
            &self.dealing_digest()?,
        ))
    }

    /// The ciphertext addressed to `holder`.
    pub(crate) fn ciphertext_for(&self, holder: ParticipantId) -> Option<&[u8]> {
        let i = self
            .encrypted_shares
            .binary_search_by_key(&holder, |e| e.recipient)
            .ok()?;
        Some(&self.encrypted_shares[i].ciphertext)
    }
}

/// What the round has established, persisted with the stage state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) params: SecAggParams,
    /// U1 and their advertised keys.
    pub(crate) directory: BTreeMap<ParticipantId, AdvertisedKeys>,
    /// U2 and their dealings.
    pub(crate) dealings: BTreeMap<ParticipantId, Dealing>,
    pub(crate) u1: Vec<ParticipantId>,
    pub(crate) u2: Vec<ParticipantId>,
    /// Malicious rounds: the members of U2 that acknowledged their shares.
    pub(crate) verified: Vec<ParticipantId>,
    pub(crate) u3: Vec<ParticipantId>,
    /// Malicious rounds: the members of U3 that signed it.
    pub(crate) signers: Vec<ParticipantId>,
    pub(crate) u4: Vec<ParticipantId>,
    /// Participants that left (or misbehaved) for a reason other than silence.
    pub(crate) drops: BTreeMap<ParticipantId, Dropout>,
    pub(crate) abort_reason: Option<AbortReason>,
}

impl Record {
    pub(crate) fn new(params: SecAggParams) -> Self {
        Record {
            params,
            directory: BTreeMap::new(),
            dealings: BTreeMap::new(),
            u1: Vec::new(),
            u2: Vec::new(),
            verified: Vec::new(),
            u3: Vec::new(),
            signers: Vec::new(),
            u4: Vec::new(),
            drops: BTreeMap::new(),
            abort_reason: None,
        }
    }

    pub(crate) fn drop_participant(
        &mut self,
        p: ParticipantId,
        stage: RoundStage,
        reason: DropReason,
    ) {
        self.drops.entry(p).or_insert(Dropout { stage, reason });
    }
}

/// Whether `id` is in the sorted list.
pub(crate) fn contains(sorted: &[ParticipantId], id: ParticipantId) -> bool {
    sorted.binary_search(&id).is_ok()
}
