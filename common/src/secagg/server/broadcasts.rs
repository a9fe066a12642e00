//! What the server publishes when a stage opens.

use super::super::error::{Result, SecAggError};
use super::super::messages::{
    Broadcast, ConsistencyCheckRequest, KeyDirectory, MaskedInputRequest, RoutedCommitments,
    RoutedShare, RoutedShares, SignedSurvivors, UnmaskingRequest, WIRE_VERSION,
};
use super::super::{ParticipantId, RoundStage};
use super::record::contains;
use super::{SecAggServer, ServerState};

impl SecAggServer {
    /// The messages that open the current stage: one for everyone, or (when shares are routed) one per member of
    /// U2. Empty in AdvertiseKeys and once the round has ended.
    pub fn broadcasts(&self) -> Result<Vec<Broadcast>> {
        let everyone = |b: Option<Broadcast>| b.into_iter().collect();
        Ok(match &self.state {
            ServerState::AdvertiseKeys(_) | ServerState::Completed | ServerState::Aborted => {
                Vec::new()
            }
            ServerState::ShareKeys(_) => {
                everyone(self.key_directory().map(Broadcast::KeyDirectory))
            }
            ServerState::ShareVerification(_) => self.all_routed_shares()?,
            ServerState::MaskedInputCollection(_) if !self.round.malicious() => {
                self.all_routed_shares()?
            }
            ServerState::MaskedInputCollection(_) => everyone(
                self.masked_input_request()
                    .map(Broadcast::MaskedInputRequest),
            ),
            ServerState::ConsistencyCheck(_) => everyone(
                self.consistency_check_request()
                    .map(Broadcast::ConsistencyCheckRequest),
            ),
            ServerState::Unmasking(_) if self.round.malicious() => {
                everyone(self.signed_survivors().map(Broadcast::SignedSurvivors))
            }
            ServerState::Unmasking(_) => {
                everyone(self.unmasking_request().map(Broadcast::UnmaskingRequest))
            }
        })
    }

    fn all_routed_shares(&self) -> Result<Vec<Broadcast>> {
        self.round
            .record
            .u2
            .iter()
            .map(|&r| self.routed_shares(r).map(Broadcast::RoutedShares))
            .collect()
    }

    /// The ShareKeys broadcast: U1 with everyone's public keys and signatures (from stage ShareKeys on).
    pub fn key_directory(&self) -> Option<KeyDirectory> {
        let r = &self.round.record;
        if r.u1.is_empty() {
            return None;
        }
        Some(KeyDirectory {
            version: WIRE_VERSION,
            round_id: r.params.round_id,
            participants: r
                .u1
                .iter()
                .filter_map(|u| r.directory.get(u).cloned())
                .collect(),
        })
    }

    /// The stage in which shares are routed: ShareVerification (malicious) or MaskedInputCollection (semi-honest).
    fn routing_stage(&self) -> RoundStage {
        if self.round.malicious() {
            RoundStage::ShareVerification
        } else {
            RoundStage::MaskedInputCollection
        }
    }

    /// The ciphertexts (and, in malicious rounds, the commitments to the shares inside) that the neighbours in U2
    /// dealt to `recipient`; available while the routing stage is open.
    pub fn routed_shares(&self, recipient: ParticipantId) -> Result<RoutedShares> {
        let stage = self.routing_stage();
        if self.stage() != stage {
            return Err(SecAggError::WrongStage {
                current: self.stage(),
                got: stage,
            });
        }
        let r = &self.round.record;
        if !contains(&r.u2, recipient) {
            return Err(SecAggError::NotMember {
                participant: recipient,
                stage,
            });
        }
        let shares = r
            .dealings
            .iter()
            .filter_map(|(&sender, d)| {
                let commitments = match (d.commitments_for(recipient), d.dealing_digest()) {
                    (Some(c), Some(dealing_digest)) => Some(RoutedCommitments {
                        self_mask: c.self_mask,
                        mask_key: c.mask_key,
                        combined: c.combined,
                        dealing_digest,
                    }),
                    _ => None,
                };
                Some(RoutedShare {
                    sender,
                    ciphertext: d.ciphertext_for(recipient)?.to_vec(),
                    commitments,
                })
            })
            .collect();
        Ok(RoutedShares {
            version: WIRE_VERSION,
            round_id: r.params.round_id,
            recipient,
            shares,
        })
    }

    /// Malicious rounds: the go-ahead to send masked inputs, with the acknowledgements (while MaskedInputCollection
    /// is open).
    pub fn masked_input_request(&self) -> Option<MaskedInputRequest> {
        let ServerState::MaskedInputCollection(s) = &self.state else {
            return None;
        };
        self.round.malicious().then(|| MaskedInputRequest {
            version: WIRE_VERSION,
            round_id: self.params().round_id,
            acknowledgements: s.acknowledgements.clone(),
        })
    }

    /// Malicious rounds: U3 to be signed (from stage ConsistencyCheck on).
    pub fn consistency_check_request(&self) -> Option<ConsistencyCheckRequest> {
        let r = &self.round.record;
        (self.round.malicious() && !r.u3.is_empty()).then(|| ConsistencyCheckRequest {
            version: WIRE_VERSION,
            round_id: r.params.round_id,
            survivors: r.u3.clone(),
        })
    }

    /// Malicious rounds: U3 and the signatures over it (while Unmasking is open).
    pub fn signed_survivors(&self) -> Option<SignedSurvivors> {
        let ServerState::Unmasking(s) = &self.state else {
            return None;
        };
        let r = &self.round.record;
        self.round.malicious().then(|| SignedSurvivors {
            version: WIRE_VERSION,
            round_id: r.params.round_id,
            survivors: r.u3.clone(),
            signatures: s.signatures.clone(),
        })
    }

    /// Semi-honest rounds: the Unmasking broadcast, U3 (from stage Unmasking on).
    pub fn unmasking_request(&self) -> Option<UnmaskingRequest> {
        let r = &self.round.record;
        (!self.round.malicious() && !r.u3.is_empty()).then(|| UnmaskingRequest {
            version: WIRE_VERSION,
            round_id: r.params.round_id,
            survivors: r.u3.clone(),
        })
    }
}
