//! What the server publishes to open each stage, and the [`Broadcast`] enum that wraps them for the coordinator.

use serde::{Deserialize, Serialize};

use super::super::identity::{self, SignatureBytes};
use super::super::{ParticipantId, RoundId};
use super::{ControlMessage, b64_array, b64_vec, wire_version};

/// One entry of the key directory: a participant's advertised keys and (malicious rounds) its signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedKeys {
    pub participant: ParticipantId,
    #[serde(with = "b64_array")]
    pub cipher_public_key: [u8; 32],
    #[serde(with = "b64_array")]
    pub mask_public_key: [u8; 32],
    /// Malicious rounds: the owner's signature (always serialised: the server snapshot keeps directory entries).
    #[serde(default)]
    pub signature: Option<SignatureBytes>,
}

impl AdvertisedKeys {
    /// The statement its owner signed (see [`super::AdvertiseKeys::statement`]).
    pub fn statement(&self, params_digest: &[u8; 32], round: RoundId) -> [u8; 32] {
        identity::advertise_statement(
            params_digest,
            round,
            self.participant,
            &self.cipher_public_key,
            &self.mask_public_key,
        )
    }
}

/// U1 and everyone's public keys (opens ShareKeys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirectory {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted by participant id.
    pub participants: Vec<AdvertisedKeys>,
}

/// The dealer's commitments to the shares routed with a ciphertext (malicious rounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedCommitments {
    /// Commitment to the recipient's share of the dealer's self-mask secret.
    #[serde(with = "b64_array")]
    pub self_mask: [u8; 32],
    /// Commitment to the recipient's share of the dealer's mask key.
    #[serde(with = "b64_array")]
    pub mask_key: [u8; 32],
    /// Commitment to the recipient's combined share b + γ·s (the one the server's degree test covers).
    #[serde(with = "b64_array")]
    pub combined: [u8; 32],
    /// The dealing's digest γ is drawn from ([`group::dealing_digest`](super::super::group::dealing_digest)).
    #[serde(with = "b64_array")]
    pub dealing_digest: [u8; 32],
}

/// A ciphertext addressed to the recipient of a [`RoutedShares`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedShare {
    pub sender: ParticipantId,
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitments: Option<RoutedCommitments>,
}

/// The ciphertexts addressed to one participant by its neighbours in U2 (opens MaskedInputCollection in semi-honest
/// rounds, ShareVerification in malicious ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedShares {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    pub recipient: ParticipantId,
    /// Sorted by sender.
    pub shares: Vec<RoutedShare>,
}

/// A holder's signed acknowledgement (its ShareVerification without complaints), forwarded by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub holder: ParticipantId,
    /// Signature over [`identity::acknowledgement_statement`].
    pub signature: SignatureBytes,
}

/// Share verification passed without a valid complaint: send the masked input (opens MaskedInputCollection in
/// malicious rounds). Carries the holders' acknowledgements: a client masks only after t of them, which proves
/// that at most n − t honest holders revealed their cipher key in a complaint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInputRequest {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted by holder.
    pub acknowledgements: Vec<Acknowledgement>,
}

/// U3, to be signed (opens ConsistencyCheck in malicious rounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyCheckRequest {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted participant ids.
    pub survivors: Vec<ParticipantId>,
}

/// One survivor's signature over U3, forwarded by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorSignature {
    pub signer: ParticipantId,
    pub signature: SignatureBytes,
}

/// U3 with the signatures the server collected over it (opens Unmasking in malicious rounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSurvivors {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted participant ids.
    pub survivors: Vec<ParticipantId>,
    /// Sorted by signer.
    pub signatures: Vec<SurvivorSignature>,
}

/// U3: who sent a masked input (opens Unmasking in semi-honest rounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskingRequest {
    #[serde(default = "wire_version")]
    pub version: u16,
    pub round_id: RoundId,
    /// Sorted participant ids.
    pub survivors: Vec<ParticipantId>,
}

/// A message the server publishes when a stage opens, for everyone or for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// Opens ShareKeys (everyone).
    KeyDirectory(KeyDirectory),
    /// Opens ShareVerification (malicious) or MaskedInputCollection (semi-honest); one per recipient.
    RoutedShares(RoutedShares),
    /// Opens MaskedInputCollection (malicious; everyone).
    MaskedInputRequest(MaskedInputRequest),
    /// Opens ConsistencyCheck (malicious; everyone).
    ConsistencyCheckRequest(ConsistencyCheckRequest),
    /// Opens Unmasking (malicious; everyone).
    SignedSurvivors(SignedSurvivors),
    /// Opens Unmasking (semi-honest; everyone).
    UnmaskingRequest(UnmaskingRequest),
}

impl Broadcast {
    /// The one participant this message is for, or `None` for everyone.
    pub fn recipient(&self) -> Option<ParticipantId> {
        match self {
            Broadcast::RoutedShares(r) => Some(r.recipient),
            _ => None,
        }
    }

    /// The message as JSON (parse it with the wrapped type's `from_json`).
    pub fn to_json(&self) -> String {
        match self {
            Broadcast::KeyDirectory(m) => m.to_json(),
            Broadcast::RoutedShares(m) => m.to_json(),
            Broadcast::MaskedInputRequest(m) => m.to_json(),
            Broadcast::ConsistencyCheckRequest(m) => m.to_json(),
            Broadcast::SignedSurvivors(m) => m.to_json(),
            Broadcast::UnmaskingRequest(m) => m.to_json(),
        }
    }
}
