//! Secure aggregation (Bonawitz et al., CCS 2017) with optional SecAgg+ sparse graphs (Bell et al., CCS 2020).
//!
//! Sans-IO: [`SecAggClient`] and [`SecAggServer`] are state machines. The participant agent feeds the client the
//! server's broadcasts and sends back what it returns; the coordinator feeds the server each participant's message,
//! calls [`SecAggServer::close_stage`] when everyone has answered or the stage deadline passes, persists
//! [`SecAggServer::encode`] at every stage boundary, and publishes the broadcasts the server exposes.
//!
//! ```text
//! stage                  client → server              server → clients (after close_stage)
//! AdvertiseKeys          AdvertiseKeys (2 X25519 pks)  KeyDirectory (U1 and their keys)
//! ShareKeys              ShareKeys (encrypted shares)  RoutedShares per recipient (from U2 ∩ its neighbours)
//! MaskedInputCollection  MaskedInput (binary)          UnmaskingRequest (U3)
//! Unmasking              UnmaskingResponse (shares)    — outcome: Completed(sum) or Aborted{reason}
//! ```
//! Sets: U1 ⊇ U2 ⊇ U3 ⊇ U4 are those who answered AdvertiseKeys, ShareKeys, MaskedInputCollection and Unmasking.
//! This is the semi-honest-server variant (no signatures, so no ConsistencyCheck stage).

pub mod client;
pub mod crypto;
pub mod error;
pub mod graph;
pub mod group;
pub mod identity;
pub mod messages;
pub mod params;
pub mod quantize;
pub mod server;
pub mod shamir;

use serde::{Deserialize, Serialize};

pub use client::{ClientAbort, SecAggClient};
pub use error::SecAggError;
pub use graph::{GraphKind, NeighbourGraph, SecurityRequirements, derive_graph};
pub use identity::{IdentityKey, IdentityPublicKey, Roster, SignatureBytes};
pub use messages::{
    AdvertiseKeys, AdvertisedKeys, Broadcast, Complaint, ComplaintReason, ConsistencyCheckRequest,
    ConsistencySignature, EncryptedShares, KeyDirectory, MaskedInput, MaskedInputRequest,
    RevealedShare, RoutedShares, ShareKeys, ShareVerification, SignedSurvivors, UnmaskingRequest,
    UnmaskingResponse,
};
pub use params::{SecAggParams, ThreatModel, corrupt_count, malicious_threshold_bound};
pub use quantize::{DequantizedSum, QuantizationParams};
pub use server::{
    AbortReason, ClientStatus, DropReason, Dropout, RoundOutcome, SecAggServer, StageTransition,
};

/// A participant's index in the round, `0..participants`. The coordinator maps its own ids onto these.
pub type ParticipantId = u32;
/// The round identifier bound into every key derivation, ciphertext and masked input.
pub type RoundId = u64;

/// Largest vector length a round accepts (2^28 ring elements = 1 GiB).
pub const MAX_VECTOR_LEN: u32 = 1 << 28;
/// Largest number of participants in one round.
pub const MAX_PARTICIPANTS: u32 = 1 << 16;

/// The protocol stages, in order, plus the two terminal states. Semi-honest rounds skip ShareVerification and
/// ConsistencyCheck ([`RoundStage::sequence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundStage {
    /// Clients send their two public keys (signed in malicious rounds).
    AdvertiseKeys,
    /// Clients send their encrypted shares (with signed commitments in malicious rounds).
    ShareKeys,
    /// Malicious rounds: clients acknowledge the shares they were dealt, or complain with proof.
    ShareVerification,
    /// Clients send their masked inputs.
    MaskedInputCollection,
    /// Malicious rounds: clients sign the survivor set U3.
    ConsistencyCheck,
    /// Clients reveal the shares the server needs to remove the masks.
    Unmasking,
    /// The aggregate is available.
    Completed,
    /// The round ended without an aggregate.
    Aborted,
}

impl RoundStage {
    /// The stages a round of `threat_model` goes through, in order (terminal states excluded).
    pub fn sequence(threat_model: ThreatModel) -> &'static [RoundStage] {
        match threat_model {
            ThreatModel::SemiHonest => &[
                RoundStage::AdvertiseKeys,
                RoundStage::ShareKeys,
                RoundStage::MaskedInputCollection,
                RoundStage::Unmasking,
            ],
            ThreatModel::Malicious => &[
                RoundStage::AdvertiseKeys,
                RoundStage::ShareKeys,
                RoundStage::ShareVerification,
                RoundStage::MaskedInputCollection,
                RoundStage::ConsistencyCheck,
                RoundStage::Unmasking,
            ],
        }
    }

    /// The stage after this one in a round of `threat_model` (`Completed` after Unmasking; `None` once ended or for
    /// a stage the model does not have).
    pub fn next(self, threat_model: ThreatModel) -> Option<RoundStage> {
        let seq = Self::sequence(threat_model);
        let i = seq.iter().position(|&s| s == self)?;
        Some(seq.get(i + 1).copied().unwrap_or(RoundStage::Completed))
    }

    /// snake_case name (as in JSON).
    pub const fn as_str(self) -> &'static str {
        match self {
            RoundStage::AdvertiseKeys => "advertise_keys",
            RoundStage::ShareKeys => "share_keys",
            RoundStage::ShareVerification => "share_verification",
            RoundStage::MaskedInputCollection => "masked_input_collection",
            RoundStage::ConsistencyCheck => "consistency_check",
            RoundStage::Unmasking => "unmasking",
            RoundStage::Completed => "completed",
            RoundStage::Aborted => "aborted",
        }
    }
}
