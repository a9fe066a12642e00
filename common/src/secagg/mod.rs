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
pub mod messages;
pub mod quantize;
pub mod server;
pub mod shamir;

use serde::{Deserialize, Serialize};

pub use client::SecAggClient;
pub use error::SecAggError;
pub use graph::{GraphKind, NeighbourGraph, SecurityRequirements, derive_graph};
pub use messages::{
    AdvertiseKeys, AdvertisedKeys, EncryptedShares, KeyDirectory, MaskedInput, RevealedShare,
    RoutedShares, ShareKeys, UnmaskingRequest, UnmaskingResponse,
};
pub use quantize::{DequantizedSum, QuantizationParams};
pub use server::{AbortReason, RoundOutcome, SecAggServer, StageTransition};

/// A participant's index in the round, `0..participants`. The coordinator maps its own ids onto these.
pub type ParticipantId = u32;
/// The round identifier bound into every key derivation, ciphertext and masked input.
pub type RoundId = u64;

/// Largest vector length a round accepts (2^28 ring elements = 1 GiB).
pub const MAX_VECTOR_LEN: u32 = 1 << 28;
/// Largest number of participants in one round.
pub const MAX_PARTICIPANTS: u32 = 1 << 16;

/// The protocol stages, in order, plus the two terminal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundStage {
    /// Clients send their two public keys.
    AdvertiseKeys,
    /// Clients send their encrypted shares for their neighbours.
    ShareKeys,
    /// Clients send their masked inputs.
    MaskedInputCollection,
    /// Clients reveal the shares the server needs to remove the masks.
    Unmasking,
    /// The aggregate is available.
    Completed,
    /// The round ended without an aggregate.
    Aborted,
}

/// Parameters of one round, fixed when the round starts and known to every participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Round id, bound into every derived key and message.
    pub round_id: RoundId,
    /// Number of participants; their ids are `0..participants`.
    pub participants: u32,
    /// Shamir threshold t: shares needed to rebuild a secret; also the fewest survivors a stage may close with.
    pub threshold: u32,
    /// Neighbour graph.
    pub graph: GraphKind,
    /// Seed of the Harary ring order (should come from a fresh CSPRNG draw; ignored for the complete graph).
    #[serde(with = "messages::b64_array")]
    pub graph_seed: [u8; 32],
    /// Ring elements per input (including the weight coordinate when quantising with [`QuantizationParams`]).
    pub vector_len: u32,
    /// Ring Z_{2^bits}, 1 ≤ bits ≤ 32.
    pub bits: u32,
}

impl SecAggParams {
    /// Parameters derived from security requirements (graph and threshold via [`derive_graph`]).
    pub fn derive(
        round_id: RoundId,
        req: &SecurityRequirements,
        vector_len: u32,
        bits: u32,
        graph_seed: [u8; 32],
    ) -> Result<Self, SecAggError> {
        let (graph, threshold) = derive_graph(req)?;
        let p = SecAggParams {
            round_id,
            participants: req.participants,
            threshold,
            graph,
            graph_seed,
            vector_len,
            bits,
        };
        p.validate()?;
        Ok(p)
    }

    /// Size of a neighbourhood, self included: the holders of each participant's shares.
    pub fn neighbourhood_size(&self) -> u32 {
        match self.graph {
            GraphKind::Complete => self.participants,
            GraphKind::Harary { degree } => degree + 1,
        }
    }

    /// Checks every bound; the threshold must be a strict majority of a neighbourhood (so the server cannot
    /// collect both kinds of share for one client from two disjoint groups) and no larger than it.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let bad = |m: String| Err(SecAggError::InvalidParams(m));
        if !(2..=MAX_PARTICIPANTS).contains(&self.participants) {
            return bad(format!("participants must be in 2..={MAX_PARTICIPANTS}"));
        }
        if !(1..=32).contains(&self.bits) {
            return bad(format!("bits must be in 1..=32, got {}", self.bits));
        }
        if !(1..=MAX_VECTOR_LEN).contains(&self.vector_len) {
            return bad(format!("vector_len must be in 1..={MAX_VECTOR_LEN}"));
        }
        NeighbourGraph::new(self.participants, self.graph, &self.graph_seed)?;
        let size = self.neighbourhood_size();
        if self.threshold <= size / 2 || self.threshold > size {
            return bad(format!(
                "threshold {} must be a strict majority of the neighbourhood size {size} and at most {size}",
                self.threshold
            ));
        }
        Ok(())
    }

    /// The neighbour graph of these parameters.
    pub fn neighbour_graph(&self) -> Result<NeighbourGraph, SecAggError> {
        NeighbourGraph::new(self.participants, self.graph, &self.graph_seed)
    }
}
